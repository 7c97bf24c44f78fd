//! What the runtime's integration tests share: the stores they run on, a temporary project
//! with its own database, and `flowrt` invocations in it.
//!
//! **One matrix.** Every store-agnostic test runs its body once per store with
//! [`for_each_store`]: SQLite always, PostgreSQL when `FLOW_TEST_POSTGRES` holds the URL of a
//! server where the tests may create databases (an admin URL such as
//! `postgres://postgres:flow@127.0.0.1:5432/postgres`; `.ci/run` starts one and sets it).
//! Each body gets a fresh database — a file in its project's temporary directory, or a
//! PostgreSQL database of its own (`flow_t_PID_N`, dropped afterwards) — and a failure names
//! the store it happened on. `FLOW_TEST_STORES=postgres` (or `sqlite`) narrows the matrix
//! while iterating on one store. Databases left behind by a killed test process are dropped
//! by the next one.
#![allow(dead_code)]

pub mod server;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const FLOWRT: &str = env!("CARGO_BIN_EXE_flowrt");

/// The secret key the PostgreSQL runs of the tests seal secrets with (a shared store takes its
/// key from `FLOW_SECRET_KEY`; a SQLite one uses the key file next to the database).
pub const SECRET_KEY: &str = "8f3a61c2d94b07e5a1c6f0b3d28e9a47c5b1e6f0a93d2c847b6e1f05a3c9d2e8";

/// A kind of store a test runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    /// A PostgreSQL server, by the URL of a database where the tests may create databases.
    Postgres {
        admin: String,
    },
}

impl Store {
    pub fn name(&self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres { .. } => "postgres",
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Store::Postgres { .. })
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The admin URL of the PostgreSQL server the tests may use, from `FLOW_TEST_POSTGRES`.
pub fn postgres_admin() -> Option<String> {
    std::env::var("FLOW_TEST_POSTGRES")
        .ok()
        .map(|url| url.trim().to_string())
        .filter(|url| !url.is_empty())
}

/// The stores to run on: SQLite, and PostgreSQL when `FLOW_TEST_POSTGRES` is set.
pub fn stores() -> Vec<Store> {
    let mut stores = vec![Store::Sqlite];
    if let Some(admin) = postgres_admin() {
        stores.push(Store::Postgres { admin });
    }
    if let Ok(only) = std::env::var("FLOW_TEST_STORES") {
        let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
        stores.retain(|s| wanted.contains(&s.name()));
    }
    stores
}

/// Runs `body` once per store ([`stores`]); a failure says which store it happened on.
pub fn for_each_store(mut body: impl FnMut(&Store)) {
    for store in stores() {
        let result = catch_unwind(AssertUnwindSafe(|| body(&store)));
        if let Err(payload) = result {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(a panic without a message)");
            panic!("on the {store} store: {message}");
        }
    }
}

static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// A database of one test: a SQLite file, or a PostgreSQL database of its own that is
/// dropped when this is.
pub struct TestDb {
    store: Store,
    /// What `--db` (or `FLOW_DB`) takes.
    spec: String,
    /// PostgreSQL: the database's name.
    name: Option<String>,
}

impl TestDb {
    /// A new, empty database: `dir/flow.db` for SQLite, a fresh database for PostgreSQL.
    pub fn create(store: &Store, dir: &Path) -> TestDb {
        Self::create_named(store, dir, "flow.db")
    }

    /// Like [`TestDb::create`], with the SQLite file named `file` in `dir`.
    pub fn create_named(store: &Store, dir: &Path, file: &str) -> TestDb {
        match store {
            Store::Sqlite => TestDb {
                store: store.clone(),
                spec: dir.join(file).to_string_lossy().into_owned(),
                name: None,
            },
            Store::Postgres { admin } => {
                let name = format!(
                    "flow_t_{}_{}",
                    std::process::id(),
                    DATABASES.fetch_add(1, Ordering::SeqCst)
                );
                let mut client = admin_client(admin);
                static SWEPT: std::sync::Once = std::sync::Once::new();
                SWEPT.call_once(|| drop_leftovers(&mut client));
                // A database of a killed earlier run whose process id was the same.
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .unwrap_or_else(|e| panic!("dropping a stale {name}: {}", pg_message(&e)));
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .unwrap_or_else(|e| {
                        panic!("creating the test database {name}: {}", pg_message(&e))
                    });
                TestDb {
                    store: store.clone(),
                    spec: database_url(admin, &name),
                    name: Some(name),
                }
            }
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn is_postgres(&self) -> bool {
        self.store.is_postgres()
    }

    /// The `--db` value: the SQLite file's path or the PostgreSQL URL.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The SQLite file, for the tests that are about the file itself.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match self.store {
            Store::Sqlite => Some(PathBuf::from(&self.spec)),
            Store::Postgres { .. } => None,
        }
    }

    /// The SQLite file of a test that runs on SQLite only.
    pub fn sqlite_file(&self) -> PathBuf {
        self.sqlite_path()
            .expect("a SQLite-only test runs on a SQLite store")
    }

    /// Points a `flowrt` (or a script that runs it) at this database: `FLOW_DB`, and the
    /// secret key a PostgreSQL store needs (`FLOW_SECRET_KEY`; removed for SQLite, which
    /// uses its key file).
    pub fn apply(&self, command: &mut Command) {
        command.env("FLOW_DB", &self.spec);
        match self.store {
            Store::Sqlite => command.env_remove("FLOW_SECRET_KEY"),
            Store::Postgres { .. } => command.env("FLOW_SECRET_KEY", SECRET_KEY),
        };
    }

    /// Drops the columns that migrations after `version` add with `ALTER TABLE … ADD
    /// COLUMN` (which cannot be applied twice), and the indexes on them, for a test that
    /// takes a database back to an older schema. The columns of migrations 8 and 13 are
    /// dropped by the tests that go back past them, each saying why.
    pub fn drop_columns_added_after(&self, version: i64) {
        const ADDED: &[(i64, &str, &str, Option<&str>)] = &[
            (18, "gates", "remind_every", None),
            (18, "gates", "reminded", None),
            (20, "runs", "attention", Some("runs_needing_attention")),
        ];
        for (migration, table, column, index) in ADDED {
            if *migration > version {
                if let Some(index) = index {
                    self.execute(&format!("DROP INDEX IF EXISTS {index}"), &[]);
                }
                self.execute(&format!("ALTER TABLE {table} DROP COLUMN {column}"), &[]);
            }
        }
    }

    /// Executes one SQL statement on the store behind flowrt's back (to tamper with it);
    /// `$1`, `$2`, … are bound to `params` as text. Returns the rows changed.
    pub fn execute(&self, sql: &str, params: &[&str]) -> u64 {
        match self.store {
            Store::Sqlite => {
                let db = rusqlite::Connection::open(&self.spec).expect("open the SQLite file");
                let changed = db
                    .execute(
                        &sqlite_placeholders(sql),
                        rusqlite::params_from_iter(params),
                    )
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                changed as u64
            }
            Store::Postgres { .. } => {
                let mut client = self.client();
                let params: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                client
                    .execute(sql, &params)
                    .unwrap_or_else(|e| panic!("{sql}: {}", pg_message(&e)))
            }
        }
    }

    /// The first column of the first row of a query whose value is an integer (or NULL).
    pub fn query_i64(&self, sql: &str, params: &[&str]) -> Option<i64> {
        match self.store {
            Store::Sqlite => {
                let db = rusqlite::Connection::open(&self.spec).expect("open the SQLite file");
                db.query_row(
                    &sqlite_placeholders(sql),
                    rusqlite::params_from_iter(params),
                    |r| r.get(0),
                )
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Store::Postgres { .. } => self.pg_first(sql, params).and_then(|r| r.get(0)),
        }
    }

    /// The first column of the first row of a query whose value is text (or NULL).
    pub fn query_text(&self, sql: &str, params: &[&str]) -> Option<String> {
        match self.store {
            Store::Sqlite => {
                let db = rusqlite::Connection::open(&self.spec).expect("open the SQLite file");
                db.query_row(
                    &sqlite_placeholders(sql),
                    rusqlite::params_from_iter(params),
                    |r| r.get(0),
                )
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Store::Postgres { .. } => self.pg_first(sql, params).and_then(|r| r.get(0)),
        }
    }

    fn pg_first(&self, sql: &str, params: &[&str]) -> Option<postgres::Row> {
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn postgres::types::ToSql + Sync))
            .collect();
        self.client()
            .query_opt(sql, &params)
            .unwrap_or_else(|e| panic!("{sql}: {}", pg_message(&e)))
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.spec, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to the test database: {}", pg_message(&e)))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let (Store::Postgres { admin }, Some(name)) = (&self.store, &self.name) {
            // WITH (FORCE): a server or worker the test killed may still hold a connection.
            if let Ok(mut client) = postgres::Client::connect(admin, postgres::NoTls) {
                let _ =
                    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// Drops the test databases of test processes that are gone (killed before they could drop
/// their own): `flow_t_PID_N` whose PID is not a live process of this machine.
fn drop_leftovers(client: &mut postgres::Client) {
    let Ok(rows) = client.query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'flow\\_t\\_%'",
        &[],
    ) else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

fn admin_client(admin: &str) -> postgres::Client {
    postgres::Client::connect(admin, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "FLOW_TEST_POSTGRES={}: cannot connect: {}",
            flow_runtime::store::postgres::without_password(admin),
            pg_message(&e)
        )
    })
}

/// PostgreSQL's own message when there is one (`db error` alone says nothing).
pub fn pg_message(e: &postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// The URL of database `name` on the server of `admin` (its path replaced).
pub fn database_url(admin: &str, name: &str) -> String {
    let authority = admin.find("://").map_or(0, |i| i + 3);
    let path = admin[authority..]
        .find(['/', '?'])
        .map_or(admin.len(), |i| authority + i);
    let query = admin[path..].find('?').map(|i| &admin[path + i..]);
    format!("{}/{name}{}", &admin[..path], query.unwrap_or(""))
}

/// `$1` → `?1`: SQLite's spelling of numbered parameters.
fn sqlite_placeholders(sql: &str) -> String {
    sql.replace('$', "?")
}

/// One `flowrt` invocation's result.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn from_output(args: &[&str], output: &Output) -> Out {
        let out = Out {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert!(
            !out.stderr.contains("panicked") && !out.stdout.contains("panicked"),
            "flowrt {args:?} panicked:\n{}",
            out.stderr
        );
        assert!(
            output.status.code().is_some(),
            "flowrt {args:?} was killed by a signal:\n{}",
            out.stderr
        );
        out
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON value ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts the exit code, showing everything printed when it differs.
    pub fn expect_code(&self, code: i32) -> &Out {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn expect_stderr(&self, needle: &str) -> &Out {
        assert!(
            self.stderr.contains(needle),
            "stderr does not contain {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    pub fn expect_stdout(&self, needle: &str) -> &Out {
        assert!(
            self.stdout.contains(needle),
            "stdout does not contain {needle:?}:\n{}",
            self.stdout
        );
        self
    }

    /// Both streams, for messages.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A temporary project directory with a database of its own on one store.
pub struct Project {
    // Dropped in this order: the database, then the directory it may live in.
    db: TestDb,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Project {
    pub fn new(store: &Store) -> Project {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = TestDb::create(store, dir.path());
        Project {
            db,
            dir,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for every `flowrt` of the project.
    pub fn with_env(mut self, name: &str, value: &str) -> Project {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db(&self) -> &TestDb {
        &self.db
    }

    pub fn store(&self) -> &Store {
        self.db.store()
    }

    pub fn write(&self, name: &str, text: &str) {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("a project folder");
        }
        std::fs::write(path, text).expect("write a project file");
    }

    pub fn write_bytes(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path().join(name), bytes).expect("write a project file");
    }

    /// `flowrt ARGS` in the project, on its database, with piped output, no colours, user
    /// `operator`, and none of the caller's logging, export, lease or config settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(FLOWRT);
        command
            .args(args)
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env("USER", "operator")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in [
            "FLOW_LEASE_MS",
            "FLOW_CONFIG",
            "FLOW_LOG",
            "RUST_LOG",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_SERVICE_NAME",
            "OTEL_SDK_DISABLED",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ] {
            command.env_remove(var);
        }
        self.db.apply(&mut command);
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// Runs `flowrt ARGS`; it must exit by itself and never panic.
    pub fn flowrt(&self, args: &[&str]) -> Out {
        let output = self.command(args).output().expect("flowrt starts");
        Out::from_output(args, &output)
    }

    /// Runs `flowrt ARGS` and returns what it did, as is.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("flowrt starts")
    }

    /// `runs --json`.
    pub fn runs(&self) -> Vec<serde_json::Value> {
        let out = self.flowrt(&["runs", "--json"]);
        out.expect_code(0);
        out.json()
            .as_array()
            .cloned()
            .expect("runs --json is an array")
    }

    /// `status RUN --json`.
    pub fn status(&self, run: &str) -> serde_json::Value {
        let out = self.flowrt(&["status", run, "--json"]);
        out.expect_code(0);
        out.json()
    }

    /// `history RUN --json`.
    pub fn history(&self, run: &str) -> Vec<serde_json::Value> {
        let out = self.flowrt(&["history", run, "--json"]);
        out.expect_code(0);
        out.json()
            .as_array()
            .cloned()
            .expect("history --json is an array")
    }
}

/// The event names of a `history --json`, in order.
pub fn events(history: &[serde_json::Value]) -> Vec<&str> {
    history
        .iter()
        .map(|e| e["kind"].as_str().expect("an event name"))
        .collect()
}

/// The events of `kind` in a `history --json`.
pub fn of_kind<'a>(history: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    history.iter().filter(|e| e["kind"] == kind).collect()
}

/// Whether `haystack` holds the bytes of `needle`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The owner the store-level tests claim runs as.
pub const STORE_OWNER: &str = "me";

/// A run `id` of workflow `w` at version `v1`, claimed by [`STORE_OWNER`] for good, with a
/// one-byte checkpoint: for tests that drive the store directly.
pub fn create_claimed_run(store: &mut dyn flow_runtime::store::Store, id: &str) {
    let run = flow_runtime::store::NewRun {
        id: id.into(),
        workflow: "w".into(),
        version: "v1".into(),
        input: "{}".into(),
        started_by: "ines".into(),
        parent: None,
    };
    let checkpoint = flow_runtime::store::Checkpoint {
        format_version: 1,
        program_hash: "v1".into(),
        state: vec![1],
        calls: None,
    };
    store
        .create_run(&run, &checkpoint, &[], Some(STORE_OWNER), i64::MAX, 1)
        .expect("the run is created");
}

/// SIGKILL (`Child::kill` sends it on Unix): no destructor, no flush, no cleanup; waits for the
/// process so it leaves no zombie.
pub fn kill9(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `done` until it holds, failing the test with `what` after `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
