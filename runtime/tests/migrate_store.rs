//! `flowrt migrate-store` from a live SQLite installation into PostgreSQL, through the real
//! binary: completed, rejected and cancelled runs, runs waiting at approval gates (one of them
//! a child run its parent waits on), a run sleeping on the test clock with a sealed secret in
//! its checkpoint, API tokens (one revoked) and their history. After the move the PostgreSQL
//! store shows the same runs, gates, histories, audit export and tokens; the audit chains
//! verify; approving a gate completes its run (and a child's parent); a token still
//! authenticates; the timer fires after `flowrt clock advance` and the resumed run opens its
//! secret with the key of the SQLite installation. A target that already holds runs is refused
//! (exit 2) and left as it was; a bad `--to` or `--from` is a clear error.
//!
//! PostgreSQL only: it needs `FLOW_TEST_POSTGRES` (see tests/common). Without it the test
//! fails in CI (where `CI` is set and `.ci/run` starts a server) and is skipped with a note
//! elsewhere.
#![cfg(unix)]

mod common;

use common::{Out, Project, Store, TestDb};
use serde_json::Value;

const EXIT_OK: i32 = 0;
const EXIT_USAGE: i32 = 2;
const EXIT_WAITING: i32 = 10;

const USERS: &str = r#"[users.alice]
roles = ["customs"]

[users.bob]
roles = ["customs"]

[users.ines]
roles = ["clerk"]
"#;

const PROGRAM: &str = r#"type Shipment = { id: String, value: Int }

tool check(s: Shipment) -> Int via exec "sh check.sh"
tool deliver(id: String, token: Secret) -> String via exec "sh deliver.sh"

workflow release(s: Shipment) -> String {
  let anomalies = check(s)
  audit "checked" { id: s.id, anomalies: anomalies }
  let d = await approval "release_signoff" {
    approvers: role("customs"),
    prompt: "Release ${s.id} worth ${s.value}?",
    context: s,
    timeout: 48h,
  }
  if d.approved { "released ${s.id} by ${d.by}" } else { "held ${s.id}: ${d.comment}" }
}

workflow sign(id: String) -> String {
  let d = await approval "sign" { approvers: role("customs") }
  "signed ${id}: ${d.approved}"
}

workflow batch(id: String) -> String {
  let r = sign(id)
  "batch ${r}"
}

workflow nap(id: String, token: Secret) -> String {
  sleep 2h
  deliver(id, token)
}
"#;

/// Sealed in the sleeping run's checkpoint; only the tool may see it.
const SECRET: &str = "s3cr3t-d3l1very-t0ken-4711";

/// The PostgreSQL server to migrate into, or `None` (with a note) when there is none here.
fn postgres() -> Option<String> {
    if let Some(admin) = common::postgres_admin() {
        return Some(admin);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "FLOW_TEST_POSTGRES is not set: in CI the migration test needs a PostgreSQL server \
         (.ci/run starts one and sets FLOW_TEST_POSTGRES)"
    );
    eprintln!(
        "note: migrate_store skipped: set FLOW_TEST_POSTGRES=postgres://USER:PASSWORD@HOST/DB \
         (a server where the tests may create databases) to run it"
    );
    None
}

/// A SQLite installation and the PostgreSQL database it moves to.
struct Move {
    project: Project,
    target: TestDb,
}

impl Move {
    /// `flowrt ARGS` on the SQLite installation (test clock, key file beside the database).
    fn sqlite(&self, args: &[&str]) -> Out {
        self.project.flowrt(args)
    }

    /// `flowrt ARGS` on the PostgreSQL store, with the SQLite installation's key as
    /// `FLOW_SECRET_KEY` (what `migrate-store` tells the operator to do).
    fn pg(&self, args: &[&str]) -> Out {
        let output = self
            .project
            .command(args)
            .env("FLOW_DB", self.target.spec())
            .env("FLOW_SECRET_KEY", self.key())
            .output()
            .expect("flowrt starts");
        Out::from_output(args, &output)
    }

    fn key(&self) -> String {
        let mut path = self.project.db().sqlite_file().into_os_string();
        path.push(".key");
        std::fs::read_to_string(path)
            .expect("the SQLite installation's key file")
            .trim()
            .to_string()
    }

    /// `flowrt migrate-store` from the project's SQLite file to `to`.
    fn migrate(&self, to: &str) -> Out {
        let from = format!("sqlite:{}", self.project.db().spec());
        self.project
            .flowrt(&["migrate-store", "--from", &from, "--to", to])
    }

    fn start(&self, workflow: &str, input: &str) -> String {
        let out = self.sqlite(&[
            "--test-clock",
            "run",
            "ship.flow",
            "--workflow",
            workflow,
            "--as",
            "ines",
            "--input",
            input,
            "--json",
        ]);
        out.expect_code(EXIT_WAITING);
        out.json()["id"].as_str().expect("a run id").to_string()
    }
}

/// `flowrt ARGS --json` of both stores must print the same thing.
fn same(migration: &Move, args: &[&str]) -> Value {
    let before = migration.sqlite(args);
    before.expect_code(EXIT_OK);
    let after = migration.pg(args);
    after.expect_code(EXIT_OK);
    assert_eq!(
        before.stdout, after.stdout,
        "flowrt {args:?} differs after the move"
    );
    if args.contains(&"--json") {
        before.json()
    } else {
        Value::Null
    }
}

/// The admin URL with a user that does not exist: `postgres://flow_nobody:n0pe@HOST/postgres`.
fn as_nobody(admin: &str) -> String {
    let url = common::database_url(admin, "postgres");
    let scheme = url.find("://").map_or(0, |i| i + 3);
    let host = url[scheme..]
        .rfind('@')
        .map_or(scheme, |at| scheme + at + 1);
    format!("{}flow_nobody:n0pe@{}", &url[..scheme], &url[host..])
}

fn output_of(out: &Out) -> Value {
    out.expect_code(EXIT_OK);
    out.json()["output"].clone()
}

#[test]
fn a_live_sqlite_installation_moves_to_postgres_and_carries_on_there() {
    let Some(admin) = postgres() else {
        return;
    };
    let store = Store::Postgres { admin };
    let project = Project::new(&Store::Sqlite);
    let target = TestDb::create(&store, project.path());
    project.write("flow.toml", USERS);
    project.write("ship.flow", PROGRAM);
    project.write("check.sh", "cat > /dev/null; echo 0\n");
    project.write(
        "deliver.sh",
        "cat >> delivered.json; echo '\"delivered\"'\n",
    );
    let migration = Move { project, target };

    // --- A SQLite installation in use --------------------------------------------------------
    let shipment = |id: &str| format!(r#"{{"s": {{"id": "{id}", "value": 5}}}}"#);
    let approved = migration.start("release", &shipment("S1"));
    migration
        .sqlite(&[
            "approve",
            &approved,
            "release_signoff",
            "--as",
            "alice",
            "--comment",
            "fine",
        ])
        .expect_code(EXIT_OK);
    let rejected = migration.start("release", &shipment("S2"));
    migration
        .sqlite(&[
            "reject",
            &rejected,
            "release_signoff",
            "--as",
            "bob",
            "--comment",
            "papers missing",
        ])
        .expect_code(EXIT_OK);
    let cancelled = migration.start("release", &shipment("S5"));
    migration
        .sqlite(&["cancel", &cancelled, "--as", "alice"])
        .expect_code(EXIT_OK);
    let waiting = migration.start("release", &shipment("S3"));
    let still_waiting = migration.start("release", &shipment("S4"));
    let parent = migration.start("batch", r#"{"id": "B1"}"#);
    let child = format!("{parent}.0");
    let sleeping = migration.start("nap", &format!(r#"{{"id": "N1", "token": "{SECRET}"}}"#));
    let token = migration.sqlite(&["token", "create", "alice", "--name", "ci"]);
    token.expect_code(EXIT_OK);
    let token = token.stdout.trim().to_string();
    let old = migration.sqlite(&["token", "create", "bob", "--name", "old"]);
    old.expect_code(EXIT_OK);
    let tokens = migration.sqlite(&["token", "list", "--json"]).json();
    let old_id = tokens
        .as_array()
        .and_then(|all| all.iter().find(|t| t["name"] == "old"))
        .and_then(|t| t["id"].as_str())
        .expect("the old token's id")
        .to_string();
    migration
        .sqlite(&["token", "revoke", &old_id])
        .expect_code(EXIT_OK);
    migration
        .sqlite(&["clock", "advance", "30m"])
        .expect_code(EXIT_OK);

    // Two notifications of the waiting gate still to deliver: one due later after two
    // attempts, one claimed by a worker that died.
    let db = migration.project.db();
    db.execute(
        "INSERT INTO outbox (id, slot, hook, run, gate, opened_at, what, message, created_at,
                             attempts, next_attempt_at, owner, lease_until)
         VALUES ('n-moved', 0, 'command true', $1, 'release_signoff', 5, 'gate_opened',
                 '{\"id\":\"n-moved\"}', 5, 2, 900, NULL, NULL),
                ('n-moved', 1, 'command false', $1, 'release_signoff', 5, 'gate_opened',
                 '{\"id\":\"n-moved\"}', 5, 1, 5, 'dead-worker', 50)",
        &[&waiting],
    );

    // --- The move ------------------------------------------------------------------------------
    let moved = migration.migrate(migration.target.spec());
    moved
        .expect_code(EXIT_OK)
        .expect_stdout("moved 8 run(s)")
        .expect_stdout("3 open gate(s)")
        .expect_stdout("every audit chain verifies")
        .expect_stderr("FLOW_SECRET_KEY");
    // The gate index is copied (not rebuilt by the target's first flowrt): its rows are
    // there before any flowrt opens the target.
    assert_eq!(
        migration
            .target
            .query_i64("SELECT COUNT(*) FROM gates", &[]),
        Some(3)
    );
    // The notifications still to deliver are copied with their attempts and due times,
    // unclaimed; then taken out, so that no worker below delivers them.
    assert_eq!(
        migration.target.query_text(
            "SELECT string_agg(concat_ws(':', slot, hook, run, attempts, next_attempt_at,
                                         coalesce(owner, '-'), coalesce(lease_until, -1), message),
                               ',' ORDER BY slot)
             FROM outbox WHERE id = 'n-moved'",
            &[]
        ),
        Some(format!(
            "0:command true:{waiting}:2:900:-:-1:{{\"id\":\"n-moved\"}},\
             1:command false:{waiting}:1:5:-:-1:{{\"id\":\"n-moved\"}}"
        ))
    );
    migration.target.execute("DELETE FROM outbox", &[]);
    assert!(
        !moved.all().contains(":flow@") && !moved.all().contains("flow@127"),
        "the password is not printed:\n{}",
        moved.all()
    );

    // --- Everything is there, the same -------------------------------------------------------
    let runs = same(&migration, &["runs", "--json"]);
    assert_eq!(runs.as_array().map(Vec::len), Some(8), "{runs}");
    let gates = same(&migration, &["approvals", "--json"]);
    let mut listed: Vec<(&str, &str)> = gates
        .as_array()
        .expect("approvals --json is an array")
        .iter()
        .map(|g| {
            (
                g["run"].as_str().unwrap_or_default(),
                g["gate"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    listed.sort();
    let mut expected = vec![
        (waiting.as_str(), "release_signoff"),
        (still_waiting.as_str(), "release_signoff"),
        (child.as_str(), "sign"),
    ];
    expected.sort();
    assert_eq!(listed, expected, "{gates}");
    same(&migration, &["approvals", "--as", "alice", "--json"]);
    same(&migration, &["token", "list", "--json"]);
    same(&migration, &["audit", "export"]);
    // The test clock (its offset from the real one) and every other setting of the database.
    let settings = migration.project.db().query_text(
        "SELECT group_concat(key || '=' || value, ',') FROM (SELECT * FROM settings ORDER BY key)",
        &[],
    );
    assert!(
        settings.as_deref().is_some_and(|s| s.contains("=on")),
        "{settings:?}"
    );
    assert_eq!(
        migration.target.query_text(
            "SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM settings",
            &[]
        ),
        settings
    );
    for run in [
        &approved, &rejected, &cancelled, &waiting, &parent, &child, &sleeping,
    ] {
        same(&migration, &["history", run, "--json"]);
        same(&migration, &["status", run, "--json"]);
    }
    migration
        .pg(&["audit", "verify"])
        .expect_code(EXIT_OK)
        .expect_stdout("intact");

    // The tokens authenticate (or not) as before.
    let mut pg = flow_runtime::store::open(migration.target.spec()).expect("the PostgreSQL store");
    let alice =
        flow_runtime::tokens::authenticate(pg.as_mut(), Some(&token), 0).expect("reads the tokens");
    assert_eq!(alice.map(|t| t.user), Ok("alice".to_string()));
    let old = old.stdout.trim();
    let refused =
        flow_runtime::tokens::authenticate(pg.as_mut(), Some(old), 0).expect("reads the tokens");
    assert!(
        matches!(
            refused,
            Err(flow_runtime::tokens::AuthError::Revoked { .. })
        ),
        "{refused:?}"
    );
    drop(pg);

    // --- And it carries on there ---------------------------------------------------------------
    migration
        .pg(&[
            "approve",
            &waiting,
            "release_signoff",
            "--as",
            "alice",
            "--comment",
            "after the move",
        ])
        .expect_code(EXIT_OK);
    assert_eq!(
        output_of(&migration.pg(&["status", &waiting, "--json"])),
        "released S3 by alice"
    );
    migration
        .pg(&["approve", &child, "sign", "--as", "bob"])
        .expect_code(EXIT_OK);
    migration.pg(&["worker", "--once"]).expect_code(EXIT_OK);
    assert_eq!(
        output_of(&migration.pg(&["status", &parent, "--json"])),
        "batch signed B1: true"
    );
    let sleeping_status = migration.pg(&["status", &sleeping, "--json"]).json();
    assert_eq!(sleeping_status["status"], "waiting", "{sleeping_status}");
    migration
        .pg(&["clock", "advance", "2h"])
        .expect_code(EXIT_OK);
    assert_eq!(
        output_of(&migration.pg(&["status", &sleeping, "--json"])),
        "delivered"
    );
    let delivered = std::fs::read_to_string(migration.project.path().join("delivered.json"))
        .expect("the tool ran");
    assert!(
        delivered.contains(SECRET),
        "the tool got the secret: {delivered}"
    );
    let left = migration.pg(&["approvals", "--json"]).json();
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    assert_eq!(left[0]["run"], still_waiting.as_str());
    migration.pg(&["audit", "verify"]).expect_code(EXIT_OK);

    // --- A second move into the same database is refused and changes nothing ----------------
    let before = migration.pg(&["audit", "export"]);
    let again = migration.migrate(migration.target.spec());
    again
        .expect_code(EXIT_USAGE)
        .expect_stderr("already holds")
        .expect_stderr("changed nothing");
    let after = migration.pg(&["audit", "export"]);
    assert_eq!(before.stdout, after.stdout, "the target was changed");
    let tokens = migration.pg(&["token", "list", "--json"]).json();
    assert_eq!(tokens.as_array().map(Vec::len), Some(2), "{tokens}");
}

#[test]
fn bad_migration_arguments_are_clear_errors() {
    let Some(admin) = postgres() else {
        return;
    };
    let project = Project::new(&Store::Sqlite);
    project.write("one.flow", "workflow one() -> Int { 1 }\n");
    project.flowrt(&["run", "one.flow"]).expect_code(EXIT_OK);
    let from = format!("sqlite:{}", project.db().spec());
    let migrate =
        |from: &str, to: &str| project.flowrt(&["migrate-store", "--from", from, "--to", to]);

    // Not PostgreSQL at all.
    migrate(&from, "mysql://root@127.0.0.1/flow")
        .expect_code(EXIT_USAGE)
        .expect_stderr("expected a PostgreSQL URL");
    migrate(&from, project.db().spec())
        .expect_code(EXIT_USAGE)
        .expect_stderr("expected a PostgreSQL URL");
    // Nobody listening.
    let out = migrate(&from, "postgres://flow:pa55word@127.0.0.1:1/flow");
    out.expect_code(EXIT_USAGE)
        .expect_stderr("postgres://flow@127.0.0.1:1/flow");
    assert!(!out.all().contains("pa55word"), "{}", out.all());
    // The server is there; the password is wrong, or the database does not exist.
    let out = migrate(&from, &as_nobody(&admin));
    out.expect_code(EXIT_USAGE);
    assert!(!out.all().contains("n0pe"), "{}", out.all());
    assert!(
        out.stderr.contains("authentication") || out.stderr.contains("flow_nobody"),
        "{}",
        out.stderr
    );
    migrate(
        &from,
        &common::database_url(&admin, "flow_no_such_database"),
    )
    .expect_code(EXIT_USAGE)
    .expect_stderr("flow_no_such_database")
    .expect_stderr("does not exist");
    // The source must be a SQLite file.
    let target = TestDb::create(&Store::Postgres { admin }, project.path());
    migrate("sqlite:no-such.db", target.spec())
        .expect_code(EXIT_USAGE)
        .expect_stderr("no-such.db");
    migrate(target.spec(), target.spec())
        .expect_code(EXIT_USAGE)
        .expect_stderr("--from");
    assert!(
        !project.path().join("no-such.db").exists(),
        "a missing source is not created"
    );
    // And after all that the target is still empty: a good move goes through.
    migrate(&from, target.spec())
        .expect_code(EXIT_OK)
        .expect_stdout("moved 1 run(s)");
}
