//! `flowrt` driven the way an operator drives it: the real binary, in a temporary project
//! directory, with exec tools written next to the workflow. Covers running `.flow` and
//! `.flowb` files, failures rendered at the source line, waiting on approvals and timers,
//! child workflows, the recorded history, and every kind of bad input (artifacts, input JSON,
//! databases, tool output), each of which must give a clear message and the right exit code,
//! never a panic and never a half-created run.
#![cfg(unix)]

mod common;

use common::{Out, Project, Store, events, for_each_store};
use std::path::Path;
use std::time::{Duration, Instant};

const EXIT_COMPLETED: i32 = 0;
const EXIT_FAILED: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_WAITING: i32 = 10;

impl Project {
    /// Compiles `source` (relative to the project) into a `.flowb` artifact with the compiler
    /// library, as `flowc build` does.
    fn build(&self, source: &str, artifact: &str) {
        struct InProject<'a>(&'a Path);
        impl flow_compiler::sources::SourceLoader for InProject<'_> {
            fn read(&self, path: &str) -> Result<Vec<u8>, String> {
                std::fs::read(self.0.join(path)).map_err(|e| e.to_string())
            }
        }
        let program = flow_compiler::check_paths(&[source.to_string()], &InProject(self.path()))
            .expect("the source can be read");
        assert_eq!(program.errors(), 0, "{source} compiles");
        let module = flow_compiler::lower::lower(&program).expect("the program lowers");
        self.write_bytes(artifact, &flow_compiler::bytecode::encode(&module));
    }
}

/// The run id from `run --json`, or from the text output's first line (`run ID …`).
fn run_id(out: &Out) -> String {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(out.stdout.trim()) {
        return value["id"].as_str().expect("a run id").to_string();
    }
    let first = out.stdout.lines().next().unwrap_or_default();
    let mut words = first.split_whitespace();
    assert_eq!(words.next(), Some("run"), "no run id in {:?}", out.stdout);
    words.next().expect("a run id").to_string()
}

/// Doubles `n`, and reports the environment the runtime gave it.
const DOUBLE_TOOL: &str = r#"#!/bin/sh
input=$(cat)
n=$(printf '%s' "$input" | sed 's/[^0-9]//g')
printf '{"value": %s, "run": "%s", "key": "%s"}\n' $((n * 2)) "$FLOW_RUN_ID" "$FLOW_IDEMPOTENCY_KEY"
"#;

const PROGRAM: &str = r#"type Doubled = { value: Int, run: String, key: String }
type Receipt = { id: String }

tool double(n: Int) -> Doubled via exec "sh tools/double.sh"
tool missing(n: Int) -> Int via exec "./tools/no-such-tool"
tool garbage(n: Int) -> Int via exec "echo this is not json"
tool shape(n: Int) -> Receipt via exec "echo '{\"id\": 5}'"
tool boom(n: Int) -> Int via exec "echo kaboom >&2; exit 3"

workflow twice(x: Int) -> Int {
  let a = double(x)
  audit "doubled" { input: x, value: a.value }
  let b = double(a.value)
  b.value + 1
}

workflow ids(x: Int) -> Doubled {
  double(x)
}

workflow limit(x: Int) -> Int {
  if x > 3 {
    fail "too big: ${x}"
  }
  x
}

workflow uses_missing() -> Int { missing(1) }
workflow uses_garbage() -> Int { garbage(1) }
workflow uses_shape() -> String { shape(1).id }
workflow uses_boom() -> Int { boom(1) }

workflow gate(n: Int) -> Int {
  let d = await approval "sign_off" {
    approvers: role("finance"),
    prompt: "Pay ${n}?",
  }
  if d.approved { n } else { 0 }
}
"#;

/// The line of `PROGRAM` (1-based) holding `needle`.
fn line_of(needle: &str) -> usize {
    PROGRAM
        .lines()
        .position(|l| l.contains(needle))
        .expect("the needle is in the program")
        + 1
}

fn project(store: &Store) -> Project {
    let project = Project::new(store);
    project.write("tools/double.sh", DOUBLE_TOOL);
    project.write("prog.flow", PROGRAM);
    project
}

// ---------------------------------------------------------------------------------------------
// run: completed, failed, waiting
// ---------------------------------------------------------------------------------------------

#[test]
fn run_prints_the_output_and_json_prints_one_object() {
    for_each_store(|store| {
        let project = project(store);
        let out = project.flowrt(&[
            "run",
            "prog.flow",
            "--workflow",
            "twice",
            "--input",
            r#"{"x": 5}"#,
        ]);
        out.expect_code(EXIT_COMPLETED).expect_stdout("completed");
        let id = run_id(&out);
        assert_eq!(
            out.stdout.lines().nth(1).map(str::trim),
            Some("21"),
            "{}",
            out.stdout
        );

        let out = project.flowrt(&[
            "run",
            "prog.flow",
            "--workflow",
            "ids",
            "--input",
            r#"{"x": 4}"#,
            "--json",
        ]);
        out.expect_code(EXIT_COMPLETED);
        assert_eq!(out.stdout.trim().lines().count(), 1, "{}", out.stdout);
        let object = out.json();
        let other = object["id"].as_str().expect("run");
        assert_ne!(other, id);
        assert_eq!(object["status"], "completed");
        assert_eq!(object["workflow"], "ids");
        // The tool saw the run id and an idempotency key of the run and step.
        assert_eq!(object["output"]["value"], 8);
        assert_eq!(object["output"]["run"], other);
        assert_eq!(object["output"]["key"], format!("{other}:0"));

        let runs = project.runs();
        assert_eq!(runs.len(), 2);
        assert!(runs.iter().all(|r| r["status"] == "completed"));
    });
}

#[test]
fn start_enqueues_and_a_worker_drives_it() {
    for_each_store(|store| {
        let project = project(store);
        let out = project.flowrt(&[
            "start",
            "prog.flow",
            "--workflow",
            "twice",
            "--input",
            r#"{"x": 1}"#,
            "--as",
            "alice",
            "--json",
        ]);
        out.expect_code(EXIT_COMPLETED);
        let id = run_id(&out);
        assert_eq!(out.json()["status"], "runnable");
        assert_eq!(project.status(&id)["status"], "runnable");

        project
            .flowrt(&["worker", "--once"])
            .expect_code(EXIT_COMPLETED);
        let status = project.status(&id);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], 5);
        assert_eq!(status["started_by"], "alice");
    });
}

#[test]
fn a_fail_statement_fails_the_run_at_its_source_line() {
    for_each_store(|store| {
        let project = project(store);
        let out = project.flowrt(&[
            "run",
            "prog.flow",
            "--workflow",
            "limit",
            "--input",
            r#"{"x": 9}"#,
        ]);
        out.expect_code(EXIT_FAILED).expect_stdout("failed");
        let id = run_id(&out);
        let line = line_of("fail \"too big");
        let at = format!("prog.flow:{line}:5");
        // A diagnostic like a compile error: the location, the source line, the message.
        out.expect_stderr(&at)
            .expect_stderr(r#"fail "too big: ${x}""#)
            .expect_stderr("too big: 9")
            .expect_stderr(&format!("flowrt history {id}"));

        let status = project.status(&id);
        assert_eq!(status["status"], "failed");
        let error = status["error"].as_str().expect("an error");
        assert!(
            error.contains("too big: 9") && error.contains(&at),
            "{error}"
        );

        // The same as one JSON object.
        let out = project.flowrt(&[
            "run",
            "prog.flow",
            "--workflow",
            "limit",
            "--input",
            r#"{"x": 7}"#,
            "--json",
        ]);
        out.expect_code(EXIT_FAILED);
        let object = out.json();
        assert_eq!(object["status"], "failed");
        assert!(
            object["error"]
                .as_str()
                .is_some_and(|e| e.contains("too big: 7") && e.contains(&at)),
            "{object}"
        );

        // A run that does not reach the `fail` completes.
        project
            .flowrt(&[
                "run",
                "prog.flow",
                "--workflow",
                "limit",
                "--input",
                r#"{"x": 2}"#,
            ])
            .expect_code(EXIT_COMPLETED);
    });
}

#[test]
fn an_uncaught_tool_error_fails_the_run_at_the_call() {
    for_each_store(|store| {
        let project = project(store);
        let out = project.flowrt(&["run", "prog.flow", "--workflow", "uses_boom"]);
        out.expect_code(EXIT_FAILED).expect_stdout("failed");
        let line = line_of("workflow uses_boom");
        out.expect_stderr(&format!("prog.flow:{line}:"))
            .expect_stderr("workflow uses_boom() -> Int { boom(1) }")
            .expect_stderr("`boom`")
            .expect_stderr("exit status 3")
            // The end of the tool's standard error is in the message.
            .expect_stderr("kaboom");

        let id = run_id(&out);
        let history = project.history(&id);
        let failed = history
            .iter()
            .find(|e| e["kind"] == "step_failed")
            .expect("a step_failed event");
        assert_eq!(failed["step"], "boom");
        assert_eq!(failed["data"]["kind"], "ToolError");
        assert_eq!(events(&history).last(), Some(&"run_failed"));
    });
}

#[test]
fn a_run_that_reaches_an_approval_waits_and_is_listed() {
    for_each_store(|store| {
        let project = project(store);
        let out = project.flowrt(&[
            "run",
            "prog.flow",
            "--workflow",
            "gate",
            "--input",
            r#"{"n": 3}"#,
        ]);
        out.expect_code(EXIT_WAITING)
            .expect_stdout("waiting")
            .expect_stdout("approval sign_off");
        let id = run_id(&out);

        let listed = project.flowrt(&["runs", "--status", "waiting"]);
        listed.expect_code(EXIT_COMPLETED);
        let row = listed
            .stdout
            .lines()
            .find(|l| l.contains(&id))
            .unwrap_or_else(|| panic!("{id} is not listed:\n{}", listed.stdout));
        assert!(
            row.contains("waiting") && row.contains("gate") && row.contains("approval sign_off"),
            "{row}"
        );
        let none = project.flowrt(&["runs", "--status", "completed", "--json"]);
        none.expect_code(EXIT_COMPLETED);
        assert_eq!(none.json(), serde_json::json!([]));

        let status = project.status(&id);
        assert_eq!(status["status"], "waiting");
        assert_eq!(status["waiting_on"], "approval sign_off");

        // A worker leaves it waiting: only a decision moves it on.
        project
            .flowrt(&["worker", "--once"])
            .expect_code(EXIT_COMPLETED);
        assert_eq!(project.status(&id)["status"], "waiting");
    });
}

#[test]
fn cancelling_a_waiting_run_ends_it_once() {
    for_each_store(|store| {
        let project = project(store);
        let out = project.flowrt(&[
            "run",
            "prog.flow",
            "--workflow",
            "gate",
            "--input",
            r#"{"n": 3}"#,
        ]);
        out.expect_code(EXIT_WAITING);
        let id = run_id(&out);

        project
            .flowrt(&["cancel", &id, "--as", "bob"])
            .expect_code(EXIT_COMPLETED)
            .expect_stdout("cancelled");
        let text = project.flowrt(&["status", &id]);
        text.expect_code(EXIT_COMPLETED).expect_stdout("cancelled");
        assert_eq!(project.status(&id)["status"], "cancelled");
        let history = project.history(&id);
        assert_eq!(events(&history).last(), Some(&"run_cancelled"));

        // Cancelling again is refused: it has already finished.
        project
            .flowrt(&["cancel", &id])
            .expect_code(EXIT_USAGE)
            .expect_stderr("already finished");
        assert!(
            project
                .flowrt(&["runs", "--status", "waiting", "--json"])
                .json()
                == serde_json::json!([])
        );
    });
}

// ---------------------------------------------------------------------------------------------
// .flowb artifacts
// ---------------------------------------------------------------------------------------------

#[test]
fn a_built_artifact_runs_like_its_source() {
    for_each_store(|store| {
        let project = project(store);
        project.build("prog.flow", "prog.flowb");

        let out = project.flowrt(&[
            "run",
            "prog.flowb",
            "--workflow",
            "twice",
            "--input",
            r#"{"x": 5}"#,
            "--json",
        ]);
        out.expect_code(EXIT_COMPLETED);
        let from_artifact = out.json();
        assert_eq!(from_artifact["output"], 21);

        // The same program from source is the same deployed version.
        let out = project.flowrt(&[
            "run",
            "prog.flow",
            "--workflow",
            "twice",
            "--input",
            r#"{"x": 5}"#,
            "--json",
        ]);
        out.expect_code(EXIT_COMPLETED);
        assert_eq!(out.json()["version"], from_artifact["version"]);

        // A failure still names the source location from the debug info, without the source.
        let out = project.flowrt(&[
            "run",
            "prog.flowb",
            "--workflow",
            "limit",
            "--input",
            r#"{"x": 9}"#,
        ]);
        out.expect_code(EXIT_FAILED)
            .expect_stdout("failed")
            .expect_stderr(&format!("prog.flow:{}:5", line_of("fail \"too big")))
            .expect_stderr("too big: 9");
    });
}

#[test]
fn bad_artifacts_are_refused_with_a_clear_message() {
    for_each_store(|store| {
        let project = project(store);
        project.build("prog.flow", "good.flowb");
        let good = std::fs::read(project.path().join("good.flowb")).expect("the artifact");

        let mut flipped = good.clone();
        let middle = good.len() / 2;
        flipped[middle] ^= 0xff;
        project.write_bytes("flipped.flowb", &flipped);
        project.write_bytes("truncated.flowb", &good[..good.len() - 40]);
        project.write_bytes("header_only.flowb", &good[..10]);
        let mut newer = good.clone();
        newer[8] = newer[8].wrapping_add(1);
        project.write_bytes("newer.flowb", &newer);
        project.write("text.flowb", "workflow w() -> Int { 1 }\n");
        project.write_bytes("empty.flowb", b"");

        let supported = format!("reads format {}", flow_compiler::bytecode::FORMAT_VERSION);
        let cases: &[(&str, &[&str])] = &[
            ("flipped.flowb", &["flipped.flowb", "checksum"]),
            ("truncated.flowb", &["truncated.flowb", "truncated"]),
            ("header_only.flowb", &["header_only.flowb", "truncated"]),
            (
                "newer.flowb",
                &["newer.flowb", &supported, "upgrade flowrt"],
            ),
            ("text.flowb", &["text.flowb", "not a Flow bytecode file"]),
            ("empty.flowb", &["empty.flowb", "not a Flow bytecode file"]),
            ("absent.flowb", &["absent.flowb", "no such file"]),
        ];
        for (file, needles) in cases {
            let out =
                project.flowrt(&["run", file, "--workflow", "twice", "--input", r#"{"x": 1}"#]);
            out.expect_code(EXIT_USAGE);
            for needle in *needles {
                out.expect_stderr(needle);
            }
        }
        assert_eq!(project.runs(), Vec::<serde_json::Value>::new());
    });
}

#[test]
fn a_program_that_does_not_compile_is_refused_and_records_nothing() {
    for_each_store(|store| {
        let project = project(store);
        project.write(
            "broken.flow",
            "workflow broken() -> Int {\n  let s = \"text\"\n  s\n}\n",
        );
        let out = project.flowrt(&["run", "broken.flow"]);
        out.expect_code(EXIT_USAGE)
            .expect_stderr("broken.flow:3:3")
            .expect_stderr("expected `Int`, found `String`")
            .expect_stderr("does not compile");
        let out = project.flowrt(&["run", "missing.flow"]);
        out.expect_code(EXIT_USAGE)
            .expect_stderr("missing.flow")
            .expect_stderr("no such file");
        let out = project.flowrt(&["run", "tools"]);
        out.expect_code(EXIT_USAGE).expect_stderr("directory");
        assert_eq!(project.runs(), Vec::<serde_json::Value>::new());
    });
}

// ---------------------------------------------------------------------------------------------
// Input and workflow selection
// ---------------------------------------------------------------------------------------------

const SHIPPING: &str = r#"type Doc = { kind: String, pages: Int }
type Request = { order_id: String, amount_eur: Int, docs: List<Doc>, note: String? }

workflow review(request: Request) -> Int {
  request.amount_eur
}
"#;

#[test]
fn wrong_input_is_refused_before_a_run_is_created() {
    for_each_store(|store| {
        let project = project(store);
        project.write("ship.flow", SHIPPING);
        project.write("bad.json", r#"{"request": "#);
        project.write(
            "good.json",
            r#"{"request": {"order_id": "A-1", "amount_eur": 90, "docs": []}}"#,
        );
        let cases: &[(&str, &str)] = &[
            ("this is not json", "--input is not valid JSON"),
            (
                r#"{"request": {"order_id": "A-1", "amount_eur": "90", "docs": []}}"#,
                r#"$.request.amount_eur: expected Int, found the string "90""#,
            ),
            (
                r#"{"request": {"order_id": "A-1", "amount_eur": 1, "docs": [{"kind": "a", "pages": 1}, {"kind": "b", "pages": 2}, {"kind": 3, "pages": 1}]}}"#,
                "$.request.docs[2].kind: expected String",
            ),
            (
                r#"{"request": {"order_id": "A-1", "docs": []}}"#,
                "$.request.amount_eur: expected Int, found nothing",
            ),
            ("{}", "$.request"),
            (
                r#"{"request": {"order_id": "A-1", "amount_eur": 1, "docs": []}, "extra": 1}"#,
                "$.extra: the workflow has no parameter `extra`",
            ),
            (
                r#"{"request": {"order_id": "A-1", "amount_eur": 1.5, "docs": []}}"#,
                "$.request.amount_eur: expected Int",
            ),
            ("[1, 2]", "$: expected an object"),
            ("@missing.json", "--input: cannot read missing.json"),
            ("@bad.json", "--input @bad.json is not valid JSON"),
        ];
        for (input, message) in cases {
            let out = project.flowrt(&["run", "ship.flow", "--input", input]);
            out.expect_code(EXIT_USAGE).expect_stderr(message);
            let out = project.flowrt(&["start", "ship.flow", "--input", input]);
            out.expect_code(EXIT_USAGE).expect_stderr(message);
        }
        // Nothing was created by any of them.
        let runs = project.flowrt(&["runs", "--json"]);
        runs.expect_code(EXIT_COMPLETED);
        assert_eq!(runs.stdout.trim(), "[]");

        // The same input from a file is fine.
        let out = project.flowrt(&["run", "ship.flow", "--input", "@good.json"]);
        out.expect_code(EXIT_COMPLETED);
        assert_eq!(out.stdout.lines().nth(1), Some("90"), "{}", out.stdout);
    });
}

#[test]
fn an_out_of_range_integer_input_says_so() {
    for_each_store(|store| {
        let project = project(store);
        let out = project.flowrt(&[
            "run",
            "prog.flow",
            "--workflow",
            "twice",
            "--input",
            r#"{"x": 99999999999999999999}"#,
        ]);
        out.expect_code(EXIT_USAGE).expect_stderr("$.x");
        // "expected Int (a whole number), found a number" is wrong for a whole number: the
        // message should say that it does not fit.
        assert!(
            out.stderr.contains("range") || out.stderr.contains("too large"),
            "{}",
            out.stderr
        );
        assert_eq!(project.runs(), Vec::<serde_json::Value>::new());
    });
}

#[test]
fn the_workflow_must_be_named_when_it_is_not_the_only_one() {
    for_each_store(|store| {
        let project = project(store);
        let out = project.flowrt(&["run", "prog.flow", "--workflow", "nope"]);
        out.expect_code(EXIT_USAGE)
            .expect_stderr("no workflow named `nope`")
            .expect_stderr("twice")
            .expect_stderr("gate");
        let out = project.flowrt(&["run", "prog.flow", "--input", r#"{"x": 1}"#]);
        out.expect_code(EXIT_USAGE)
            .expect_stderr("several workflows")
            .expect_stderr("--workflow")
            .expect_stderr("twice, ids, limit");
        assert_eq!(project.runs(), Vec::<serde_json::Value>::new());
    });
}

// ---------------------------------------------------------------------------------------------
// The database
// ---------------------------------------------------------------------------------------------

#[test]
fn a_database_from_a_newer_schema_is_refused_and_left_alone() {
    for_each_store(|store| {
        let project = project(store);
        project
            .flowrt(&[
                "run",
                "prog.flow",
                "--workflow",
                "twice",
                "--input",
                r#"{"x": 1}"#,
            ])
            .expect_code(EXIT_COMPLETED);
        // The schema version is `PRAGMA user_version` in SQLite, a table in PostgreSQL.
        let schema = match project.store() {
            Store::Sqlite => "PRAGMA user_version",
            Store::Postgres { .. } => "SELECT version FROM flow_schema",
        };
        match project.store() {
            Store::Sqlite => project.db().execute("PRAGMA user_version = 999", &[]),
            Store::Postgres { .. } => project
                .db()
                .execute("UPDATE flow_schema SET version = 999", &[]),
        };
        for args in [
            &["runs"][..],
            &[
                "run",
                "prog.flow",
                "--workflow",
                "twice",
                "--input",
                r#"{"x": 1}"#,
            ][..],
            &["worker", "--once"][..],
        ] {
            project
                .flowrt(args)
                .expect_code(EXIT_USAGE)
                .expect_stderr("newer")
                .expect_stderr("999");
        }
        let version = project.db().query_i64(schema, &[]);
        assert_eq!(version, Some(999), "flowrt must not touch a newer database");
        let runs = project
            .db()
            .query_i64("SELECT count(*) FROM runs", &[])
            .expect("the runs table");
        assert_eq!(runs, 1, "nothing already recorded is lost");
    });
}

#[test]
fn a_database_locked_by_a_live_process_gives_a_busy_error_soon() {
    // SQLite only: one writer at a time and a busy timeout are SQLite's; PostgreSQL writers
    // lock rows, not the database.
    let project = project(&Store::Sqlite);
    let first = project.flowrt(&[
        "run",
        "prog.flow",
        "--workflow",
        "twice",
        "--input",
        r#"{"x": 1}"#,
    ]);
    first.expect_code(EXIT_COMPLETED);
    let id = run_id(&first);

    let holder = rusqlite::Connection::open(project.db().sqlite_file()).expect("open the database");
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");

    let started = Instant::now();
    let out = project.flowrt(&[
        "run",
        "prog.flow",
        "--workflow",
        "twice",
        "--input",
        r#"{"x": 2}"#,
    ]);
    let took = started.elapsed();
    out.expect_code(EXIT_USAGE);
    assert!(
        out.stderr.contains("busy") || out.stderr.contains("locked"),
        "{}",
        out.stderr
    );
    assert!(took < Duration::from_secs(15), "flowrt took {took:?}");

    // Reading still works while another process writes (WAL), and shows what was recorded.
    let listed = project.flowrt(&["runs", "--json"]);
    listed.expect_code(EXIT_COMPLETED);
    let runs = listed.json();
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    assert_eq!(runs[0]["id"], id.as_str());

    holder.execute_batch("ROLLBACK").expect("release the lock");
    drop(holder);
    project
        .flowrt(&[
            "run",
            "prog.flow",
            "--workflow",
            "twice",
            "--input",
            r#"{"x": 2}"#,
        ])
        .expect_code(EXIT_COMPLETED);
    assert_eq!(project.runs().len(), 2);
}

#[test]
fn a_new_database_locked_before_flowrt_set_it_up_gives_a_busy_error() {
    // SQLite only: about a database file locked by another process before flowrt set it up.
    let project = project(&Store::Sqlite);
    let holder =
        rusqlite::Connection::open(project.db().sqlite_file()).expect("create the database");
    holder
        .execute_batch("CREATE TABLE other (x); BEGIN IMMEDIATE; INSERT INTO other VALUES (1);")
        .expect("take the write lock");
    let started = Instant::now();
    let out = project.flowrt(&["runs"]);
    out.expect_code(EXIT_USAGE);
    assert!(
        out.stderr.contains("busy") || out.stderr.contains("locked"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    holder.execute_batch("ROLLBACK").expect("release the lock");
}

#[test]
fn a_database_path_that_is_not_a_database_is_refused() {
    // SQLite only: about files that are not SQLite databases (for PostgreSQL, see the next test).
    let project = project(&Store::Sqlite);
    project.write(
        "notes.db",
        "These are notes, not a database. They are long enough to fill a header.\n",
    );
    let out = project.flowrt(&["--db", "notes.db", "runs"]);
    out.expect_code(EXIT_USAGE)
        .expect_stderr("notes.db")
        .expect_stderr("not a database");
    let notes = std::fs::read_to_string(project.path().join("notes.db")).expect("the notes");
    assert!(notes.starts_with("These are notes"), "the file was changed");
    let out = project.flowrt(&["--db", "tools", "runs"]);
    out.expect_code(EXIT_USAGE).expect_stderr("tools");
}

#[test]
fn a_postgres_database_that_cannot_be_reached_is_refused_without_its_password() {
    let project = project(&Store::Sqlite);
    let nowhere = "postgres://flow:pa55word@127.0.0.1:1/flow";
    let out = project
        .command(&["--db", nowhere, "runs"])
        .env("FLOW_SECRET_KEY", common::SECRET_KEY)
        .output()
        .expect("flowrt starts");
    let out = Out::from_output(&["runs"], &out);
    out.expect_code(EXIT_USAGE)
        .expect_stderr("postgres://flow@127.0.0.1:1/flow");
    assert!(!out.all().contains("pa55word"), "{}", out.all());
    // A server that is there, and a database that is not.
    if let Some(admin) = common::postgres_admin() {
        let missing = common::database_url(&admin, "flow_no_such_database");
        let out = project
            .command(&["--db", &missing, "runs"])
            .env("FLOW_SECRET_KEY", common::SECRET_KEY)
            .output()
            .expect("flowrt starts");
        let out = Out::from_output(&["runs"], &out);
        out.expect_code(EXIT_USAGE)
            .expect_stderr("flow_no_such_database")
            .expect_stderr("does not exist");
    }
}

// ---------------------------------------------------------------------------------------------
// Tools that misbehave
// ---------------------------------------------------------------------------------------------

/// Runs `workflow`, expects it to fail, and returns the run's recorded error.
fn failed_run(project: &Project, workflow: &str, needles: &[&str]) -> String {
    let out = project.flowrt(&["run", "prog.flow", "--workflow", workflow]);
    out.expect_code(EXIT_FAILED).expect_stdout("failed");
    for needle in needles {
        out.expect_stderr(needle);
    }
    let status = project.status(&run_id(&out));
    status["error"].as_str().expect("an error").to_string()
}

#[test]
fn a_missing_tool_command_fails_the_run_naming_the_tool() {
    for_each_store(|store| {
        let project = project(store);
        let error = failed_run(
            &project,
            "uses_missing",
            &["command not found", "`missing`", "./tools/no-such-tool"],
        );
        assert!(error.starts_with("ToolError"), "{error}");
        assert!(
            error.contains(&format!("prog.flow:{}:", line_of("workflow uses_missing"))),
            "{error}"
        );
    });
}

#[test]
fn a_tool_printing_garbage_fails_with_invalid_output() {
    for_each_store(|store| {
        let project = project(store);
        let error = failed_run(
            &project,
            "uses_garbage",
            &["`garbage`", "not JSON", "this is not json"],
        );
        assert!(error.starts_with("InvalidOutput"), "{error}");
    });
}

#[test]
fn a_tool_printing_the_wrong_shape_fails_naming_the_json_path() {
    for_each_store(|store| {
        let project = project(store);
        let error = failed_run(
            &project,
            "uses_shape",
            &["`shape`", "Receipt", "$.id: expected String"],
        );
        assert!(error.starts_with("InvalidOutput"), "{error}");
    });
}

// ---------------------------------------------------------------------------------------------
// Usage errors on runs
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_runs_and_statuses_are_usage_errors() {
    for_each_store(|store| {
        let project = project(store);
        for command in ["status", "history", "cancel"] {
            project
                .flowrt(&[command, "r-no-such-run"])
                .expect_code(EXIT_USAGE)
                .expect_stderr("no run with id r-no-such-run");
        }
        project
            .flowrt(&["runs", "--status", "bogus"])
            .expect_code(EXIT_USAGE)
            .expect_stderr("--status bogus")
            .expect_stderr("waiting");
        project.flowrt(&["frobnicate"]).expect_code(EXIT_USAGE);
        project.flowrt(&["run"]).expect_code(EXIT_USAGE);
    });
}

// ---------------------------------------------------------------------------------------------
// The recorded history
// ---------------------------------------------------------------------------------------------

#[test]
fn history_records_every_step_in_order() {
    for_each_store(|store| {
        let project = project(store);
        let out = project.flowrt(&[
            "run",
            "prog.flow",
            "--workflow",
            "twice",
            "--input",
            r#"{"x": 3}"#,
            "--as",
            "carol",
        ]);
        out.expect_code(EXIT_COMPLETED);
        let id = run_id(&out);
        let history = project.history(&id);
        assert_eq!(
            events(&history),
            [
                "run_started",
                "step_started",
                "step_completed",
                "audit",
                "step_started",
                "step_completed",
                "run_completed"
            ]
        );
        // Times in milliseconds since the epoch, as the API shows them.
        let created = project.status(&id)["created_at"]
            .as_i64()
            .expect("created_at in ms");
        for (i, event) in history.iter().enumerate() {
            assert_eq!(event["seq"], i as u64 + 1, "{event}");
            assert!(
                event["at"].as_i64().is_some_and(|at| at >= created),
                "{event}"
            );
        }
        let started = &history[0];
        assert_eq!(started["data"]["input"], serde_json::json!({"x": 3}));
        assert_eq!(started["data"]["by"], "carol");
        assert_eq!(started["data"]["version"], project.status(&id)["version"]);

        let first_call = line_of("let a = double(x)") as u64;
        let second_call = line_of("let b = double(a.value)") as u64;
        let mut steps = Vec::new();
        for (index, line, input, output) in [(1, first_call, 3, 6), (4, second_call, 6, 12)] {
            let (begin, end) = (&history[index], &history[index + 1]);
            let step = begin["data"]["step_number"]
                .as_u64()
                .expect("a step number");
            steps.push(step);
            for e in [begin, end] {
                assert_eq!(e["step"], "double", "{e}");
                assert_eq!(e["line"], line, "{e}");
                assert_eq!(e["data"]["step_number"], step, "{e}");
            }
            assert_eq!(begin["data"]["input"], serde_json::json!({ "n": input }));
            // The key the tool was given: run id and step number.
            assert_eq!(
                begin["data"]["idempotency_key"],
                format!("{id}:{step}"),
                "{begin}"
            );
            assert_eq!(end["data"]["output"]["value"], output, "{end}");
            assert!(end["duration_ms"].as_u64().is_some(), "{end}");
        }
        assert!(steps[0] < steps[1], "{steps:?}");
        let audit = &history[3];
        assert_eq!(audit["step"], "doubled");
        assert_eq!(audit["line"], line_of("audit \"doubled\"") as u64);
        assert_eq!(audit["data"], serde_json::json!({ "input": 3, "value": 6 }));
        assert_eq!(history[6]["data"]["output"], 13);

        // The text timeline has the same events, with durations.
        let text = project.flowrt(&["history", &id]);
        text.expect_code(EXIT_COMPLETED)
            .expect_stdout("seq")
            .expect_stdout("step_completed")
            .expect_stdout("doubled")
            .expect_stdout(" ms");
        assert_eq!(
            text.stdout.lines().count(),
            1 + history.len(),
            "{}",
            text.stdout
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Durable sleep and now()
// ---------------------------------------------------------------------------------------------

#[test]
fn sleep_waits_without_a_process_and_now_is_recorded() {
    for_each_store(|store| {
        let project = project(store);
        project.write(
            "nap.flow",
            r#"workflow nap() -> Bool {
  let t = now()
  sleep 2s
  let u = now()
  (u - t) >= 2s
}
"#,
        );
        // The timer is set at the commit, between these two instants: before `started` + 2 s
        // it is surely not due, after `returned` + 2 s it surely is (a first process on a
        // fresh PostgreSQL database spends a while creating the schema).
        let started = Instant::now();
        let out = project.flowrt(&["run", "nap.flow", "--max-wait", "0s"]);
        let returned = Instant::now();
        out.expect_code(EXIT_WAITING).expect_stdout("timer");
        let id = run_id(&out);
        let status = project.status(&id);
        assert_eq!(status["status"], "waiting");
        assert_eq!(status["waiting_on"], "timer");
        assert!(status["wake_at"].is_i64(), "{status}");

        // Too early: the worker drives nothing and the run still waits.
        project
            .flowrt(&["worker", "--once"])
            .expect_code(EXIT_COMPLETED);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the machine is too slow for this test"
        );
        assert_eq!(project.status(&id)["status"], "waiting");

        // Once the timer is due, a worker finishes the run.
        let due = Duration::from_millis(2100);
        std::thread::sleep(due.saturating_sub(returned.elapsed()));
        project
            .flowrt(&["worker", "--once"])
            .expect_code(EXIT_COMPLETED);
        let status = project.status(&id);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], true);

        let history = project.history(&id);
        assert_eq!(
            events(&history),
            [
                "run_started",
                "clock_read",
                "timer_set",
                "timer_fired",
                "clock_read",
                "run_completed"
            ]
        );
        // Each now() was read once and recorded; resuming replayed the first instead of
        // reading the clock again.
        let reads: Vec<&serde_json::Value> = history
            .iter()
            .filter(|e| e["kind"] == "clock_read")
            .collect();
        assert_eq!(reads.len(), 2);
        assert_ne!(reads[0]["data"]["time"], reads[1]["data"]["time"]);
    });
}

// ---------------------------------------------------------------------------------------------
// Child workflows
// ---------------------------------------------------------------------------------------------

#[test]
fn a_child_workflow_completes_with_its_result() {
    for_each_store(|store| {
        let project = project(store);
        project.write(
            "family.flow",
            r#"workflow inner(n: Int) -> Int {
  n * 3
}

workflow outer(n: Int) -> Int {
  let r = inner(n + 1)
  r + 1
}
"#,
        );
        let out = project.flowrt(&[
            "run",
            "family.flow",
            "--workflow",
            "outer",
            "--input",
            r#"{"n": 2}"#,
            "--json",
        ]);
        out.expect_code(EXIT_COMPLETED);
        let parent = out.json();
        assert_eq!(parent["status"], "completed");
        assert_eq!(parent["output"], 10);
        let parent_id = parent["id"].as_str().expect("a run id");

        let runs = project.runs();
        assert_eq!(runs.len(), 2, "{runs:?}");
        let child = runs
            .iter()
            .find(|r| r["workflow"] == "inner")
            .expect("the child run");
        let child = project.status(child["id"].as_str().expect("a run id"));
        assert_eq!(child["parent"], parent_id);
        assert_eq!(child["status"], "completed");
        assert_eq!(child["output"], 9);
        assert_eq!(project.status(parent_id)["parent"], serde_json::Value::Null);

        let history = project.history(parent_id);
        let names = events(&history);
        assert!(
            names.contains(&"child_started") && names.contains(&"child_completed"),
            "{names:?}"
        );
    });
}

const FAMILY: &str = r#"workflow inner(n: Int) -> Int {
  if n > 5 {
    fail "child says no to ${n}"
  }
  n * 3
}

workflow outer(n: Int) -> Int {
  let r = inner(n + 1)
  r + 1
}

workflow gate(n: Int) -> Int {
  let d = await approval "sign_off" { approvers: role("finance"), prompt: "ok?" }
  if d.approved { n } else { 0 }
}

workflow waits(n: Int) -> Int {
  gate(n) + 1
}
"#;

#[test]
fn a_worker_drives_a_child_workflow_and_its_parent() {
    for_each_store(|store| {
        let project = project(store);
        project.write("family.flow", FAMILY);
        let ok = project.flowrt(&[
            "start",
            "family.flow",
            "--workflow",
            "outer",
            "--input",
            r#"{"n": 2}"#,
        ]);
        ok.expect_code(EXIT_COMPLETED);
        let ok = run_id(&ok);
        let failing = project.flowrt(&[
            "start",
            "family.flow",
            "--workflow",
            "outer",
            "--input",
            r#"{"n": 7}"#,
        ]);
        failing.expect_code(EXIT_COMPLETED);
        let failing = run_id(&failing);
        project
            .flowrt(&["worker", "--once"])
            .expect_code(EXIT_COMPLETED);

        let parent = project.status(&ok);
        assert_eq!(parent["status"], "completed", "{parent}");
        assert_eq!(parent["output"], 10);
        let parent = project.status(&failing);
        assert_eq!(parent["status"], "failed", "{parent}");
        let error = parent["error"].as_str().expect("an error");
        assert!(
            error.contains("inner") && error.contains("child says no to 8"),
            "{error}"
        );

        let runs = project.runs();
        assert_eq!(runs.len(), 4, "{runs:?}");
        for (parent, status) in [(&ok, "completed"), (&failing, "failed")] {
            let children: Vec<&serde_json::Value> = runs
                .iter()
                .filter(|r| r["parent"] == parent.as_str())
                .collect();
            assert_eq!(children.len(), 1, "{runs:?}");
            assert_eq!(children[0]["workflow"], "inner");
            assert_eq!(children[0]["status"], status);
        }
        let history = project.history(&failing);
        assert!(events(&history).contains(&"child_failed"), "{history:?}");
    });
}

#[test]
fn a_failing_child_workflow_fails_the_run() {
    for_each_store(|store| {
        let project = project(store);
        project.write("family.flow", FAMILY);
        let out = project.flowrt(&[
            "run",
            "family.flow",
            "--workflow",
            "outer",
            "--input",
            r#"{"n": 7}"#,
        ]);
        out.expect_code(EXIT_FAILED)
            .expect_stdout("failed")
            .expect_stderr("child says no to 8");
    });
}

#[test]
fn a_parent_waits_while_its_child_waits() {
    for_each_store(|store| {
        let project = project(store);
        project.write("family.flow", FAMILY);
        let out = project.flowrt(&[
            "run",
            "family.flow",
            "--workflow",
            "waits",
            "--input",
            r#"{"n": 2}"#,
        ]);
        out.expect_code(EXIT_WAITING);
        let parent = run_id(&out);
        let runs = project.runs();
        let child = runs
            .iter()
            .find(|r| r["workflow"] == "gate")
            .expect("the child run");
        let child = child["id"].as_str().expect("a run id").to_string();
        assert_eq!(project.status(&child)["parent"], parent.as_str());
        assert_eq!(project.status(&child)["waiting_on"], "approval sign_off");
        let status = project.status(&parent);
        assert_eq!(status["status"], "waiting");
        assert_eq!(status["waiting_on"], format!("child {child}"));
    });
}

/// Starts `waits`, which waits on its child `gate`, cancels the child, and returns the
/// parent's id.
fn cancel_a_waited_on_child(project: &Project) -> String {
    project.write("family.flow", FAMILY);
    let out = project.flowrt(&[
        "run",
        "family.flow",
        "--workflow",
        "waits",
        "--input",
        r#"{"n": 2}"#,
    ]);
    out.expect_code(EXIT_WAITING);
    let parent = run_id(&out);
    let child = format!("{parent}.0");
    let runs = project.runs();
    assert!(runs.iter().any(|r| r["id"] == child.as_str()), "{runs:?}");
    project
        .flowrt(&["cancel", &child])
        .expect_code(EXIT_COMPLETED);
    parent
}

/// The parent sees the child's end: an uncaught child failure fails it.
fn assert_failed_by_cancelled_child(project: &Project, parent: &str) {
    let status = project.status(parent);
    assert_eq!(status["status"], "failed", "{status}");
    assert!(
        status["error"]
            .as_str()
            .is_some_and(|e| e.contains("gate") && e.contains("cancelled")),
        "{status}"
    );
    let history = project.history(parent);
    assert!(events(&history).contains(&"child_failed"), "{history:?}");
}

#[test]
fn a_parent_learns_of_its_cancelled_child_at_the_next_recheck() {
    for_each_store(|store| {
        let project = project(store);
        let parent = cancel_a_waited_on_child(&project);
        // A waiting parent rechecks its child every 5 s.
        std::thread::sleep(Duration::from_millis(5300));
        project
            .flowrt(&["worker", "--once"])
            .expect_code(EXIT_COMPLETED);
        assert_failed_by_cancelled_child(&project, &parent);
    });
}

#[test]
fn cancelling_a_child_wakes_its_parent_at_once() {
    for_each_store(|store| {
        let project = project(store);
        let parent = cancel_a_waited_on_child(&project);
        project
            .flowrt(&["worker", "--once"])
            .expect_code(EXIT_COMPLETED);
        assert_failed_by_cancelled_child(&project, &parent);
    });
}

#[test]
fn history_numbers_the_attempts_of_a_retried_step() {
    for_each_store(|store| {
        let project = project(store);
        project.write(
            "retry.flow",
            r#"tool boom(n: Int) -> Int via exec "echo kaboom >&2; exit 3"

workflow again() -> Int {
  retry 3 { boom(1) }
}
"#,
        );
        let out = project.flowrt(&["run", "retry.flow"]);
        out.expect_code(EXIT_FAILED).expect_stderr("kaboom");
        let history = project.history(&run_id(&out));
        let attempts: Vec<&serde_json::Value> = history
            .iter()
            .filter(|e| e["kind"] == "step_started")
            .map(|e| &e["attempt"])
            .collect();
        assert_eq!(attempts, [1, 2, 3], "{history:?}");
        let failures = history
            .iter()
            .filter(|e| e["kind"] == "step_failed")
            .count();
        assert_eq!(failures, 3);
    });
}

#[test]
fn without_flow_db_the_database_is_dot_flow_in_the_current_directory() {
    // SQLite only: the default database is a SQLite file.
    let project = project(&Store::Sqlite);
    let run = |args: &[&str]| {
        let output = project
            .command(args)
            .env_remove("FLOW_DB")
            .output()
            .expect("flowrt starts");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    run(&[
        "run",
        "prog.flow",
        "--workflow",
        "twice",
        "--input",
        r#"{"x": 1}"#,
    ]);
    assert!(project.path().join(".flow/flow.db").is_file());
    assert!(run(&["runs"]).contains("completed"));
    assert!(!project.db().sqlite_file().exists(), "FLOW_DB was not set");
}

#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    for_each_store(|store| {
        let project = project(store);
        for x in 1..=3 {
            project
                .flowrt(&[
                    "run",
                    "prog.flow",
                    "--workflow",
                    "twice",
                    "--input",
                    &format!(r#"{{"x": {x}}}"#),
                ])
                .expect_code(EXIT_COMPLETED);
        }
        let id = run_id(&project.flowrt(&[
            "run",
            "prog.flow",
            "--workflow",
            "limit",
            "--input",
            r#"{"x": 1}"#,
        ]));
        // `flowrt runs | head -0`: the reader is gone before flowrt prints.
        for args in [
            &["runs"][..],
            &["runs", "--json"][..],
            &["history", &id][..],
            &["status", &id][..],
        ] {
            let mut child = project.command(args).spawn().expect("flowrt starts");
            drop(child.stdout.take());
            let output = child.wait_with_output().expect("flowrt ends");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                !stderr.contains("panicked") && output.status.code() != Some(101),
                "flowrt {args:?} into a closed pipe: {:?}\n{stderr}",
                output.status
            );
        }
    });
}

/// `flowrt run` waits through timers due soon (a retry's back-off, a short `sleep`, also in a
/// child run), saying so on stderr, and stops only at a person or a longer timer.
#[test]
fn run_waits_through_short_timers_and_stops_at_long_ones() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write(
            "flaky.sh",
            "cat > /dev/null\nn=$(cat calls 2>/dev/null || echo 0); n=$((n + 1)); echo $n > calls\n\
             if [ $n -le 2 ]; then echo busy >&2; exit 1; fi\necho 7\n",
        );
        project.write(
            "timers.flow",
            r#"tool flaky() -> Int via exec "sh flaky.sh"

workflow patient() -> Int {
  retry 5 backoff 100ms { flaky() }
}

workflow nap(d: Duration) -> Int {
  sleep d
  3
}

workflow parent() -> Int {
  nap(300ms) + 1
}
"#,
        );
        let started = Instant::now();
        let out = project.flowrt(&["run", "timers.flow", "--workflow", "patient"]);
        out.expect_code(0)
            .expect_stdout("7")
            .expect_stderr("waits")
            .expect_stderr("for a timer");
        assert!(started.elapsed() < Duration::from_secs(30));
        project
            .flowrt(&["run", "timers.flow", "--workflow", "parent"])
            .expect_code(0)
            .expect_stdout("4");
        // A timer beyond --max-wait (or any with 0s): the run waits in the database.
        let out = project.flowrt(&[
            "run",
            "timers.flow",
            "--workflow",
            "nap",
            "--input",
            r#"{"d": "2m"}"#,
        ]);
        out.expect_code(10).expect_stdout("waiting (timer)");
        project
            .flowrt(&[
                "run",
                "timers.flow",
                "--workflow",
                "nap",
                "--max-wait",
                "0s",
                "--input",
                r#"{"d": "100ms"}"#,
            ])
            .expect_code(10);
        project
            .flowrt(&[
                "run",
                "timers.flow",
                "--workflow",
                "nap",
                "--max-wait",
                "soon",
            ])
            .expect_code(2)
            .expect_stderr("--max-wait: `soon` is not a duration");
    });
}

/// The human timeline says what happened, not only that something did: the decision and its
/// comment, the error of a failed step, a step's output, when a timer is due, and a retry's
/// back-off by that name.
#[test]
fn history_shows_decisions_errors_outputs_and_back_offs() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write(
            "flow.toml",
            "[users.ana]\nroles = [\"clerk\"]\n\n[users.bob]\nroles = [\"finance\"]\n",
        );
        project.write(
            "flaky.sh",
            "cat > /dev/null\nn=$(cat calls 2>/dev/null || echo 0); n=$((n + 1)); echo $n > calls\n\
             if [ $n -le 1 ]; then echo 'ledger busy' >&2; exit 1; fi\necho 42\n",
        );
        project.write(
            "pay.flow",
            r#"tool book() -> Int via exec "sh flaky.sh"

workflow pay() -> Int {
  let d = await approval "signoff" { approvers: role("finance"), timeout: 48h }
  if !d.approved { return 0 }
  retry 3 backoff 50ms { book() }
}
"#,
        );
        let out = project.flowrt(&["run", "pay.flow", "--as", "ana"]);
        out.expect_code(10);
        let id = run_id(&out);
        project
            .flowrt(&[
                "approve",
                &id,
                "signoff",
                "--as",
                "bob",
                "--comment",
                "budget ok",
            ])
            .expect_code(0);
        // The approval's drive stops at the back-off; a worker goes on once it is due.
        std::thread::sleep(Duration::from_millis(100));
        project.flowrt(&["worker", "--once"]).expect_code(0);
        assert_eq!(project.status(&id)["status"], "completed");
        let shown = project.flowrt(&["history", &id]);
        shown.expect_code(0);
        let row = |event: &str| {
            shown
                .stdout
                .lines()
                .find(|l| l.contains(event))
                .unwrap_or_else(|| panic!("no {event} row:\n{}", shown.stdout))
                .to_string()
        };
        assert!(
            shown
                .stdout
                .lines()
                .next()
                .expect("a header")
                .ends_with("details")
        );
        let decided = row("gate_decided");
        assert!(decided.contains("approved: \"budget ok\""), "{decided}");
        let failed = row("step_failed");
        assert!(
            failed.contains("ToolError: ") && failed.contains("ledger busy"),
            "{failed}"
        );
        let timer = row("timer_set");
        assert!(
            timer.contains("retry backoff") && timer.contains("until 20"),
            "{timer}"
        );
        assert!(row("step_completed").contains("→ 42"));
        assert!(row("gate_opened").contains("for role finance, deadline 20"));
    });
}

/// `flowrt key generate` prints a fresh key that a store accepts; a PostgreSQL store without
/// one says how to make it; `flowrt completions SHELL` prints a script the shell accepts.
#[test]
fn keys_and_completions_need_no_database() {
    let dir = tempfile::tempdir().expect("a folder");
    let flowrt = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = std::process::Command::new(common::FLOWRT);
        command
            .args(args)
            .current_dir(dir.path())
            .env_remove("FLOW_SECRET_KEY")
            .env_remove("FLOW_DB");
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().expect("flowrt runs");
        Out::from_output(args, &output)
    };
    let first = flowrt(&["key", "generate"], &[]);
    first.expect_code(0);
    let key = first.stdout.trim().to_string();
    assert!(
        key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()),
        "{key}"
    );
    assert_ne!(flowrt(&["key", "generate"], &[]).stdout.trim(), key);
    assert!(!dir.path().join(".flow").exists(), "no database was made");
    // The key opens a store (SQLite here: FLOW_SECRET_KEY is used instead of a key file).
    flowrt(&["runs"], &[("FLOW_SECRET_KEY", &key)]).expect_code(0);
    assert!(!dir.path().join(".flow/flow.db.key").exists());
    if let Some(admin) = common::postgres_admin() {
        // A database of its own: the shared one may be another flowrt's, at another schema.
        let db = common::TestDb::create(&common::Store::Postgres { admin }, dir.path());
        flowrt(&["--db", db.spec(), "runs"], &[])
            .expect_code(2)
            .expect_stderr("flowrt key generate");
    }
    for shell in ["bash", "zsh", "fish"] {
        let script = flowrt(&["completions", shell], &[]);
        script.expect_code(0).expect_stdout("approve");
    }
    let bash = flowrt(&["completions", "bash"], &[]).stdout;
    let checked = std::process::Command::new("bash")
        .args(["-n", "-c", &bash])
        .status()
        .expect("bash runs");
    assert!(checked.success(), "the bash completion script parses");
    flowrt(&["completions", "tcsh-ish"], &[]).expect_code(2);
}

#[test]
fn completions_into_a_pipe_that_closes_early_do_not_panic() {
    let piped = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("{} completions fish | head -n 1", common::FLOWRT),
        ])
        .output()
        .expect("sh runs");
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!piped.stdout.is_empty());
}

/// With `--as`, `flowrt run`, `start` and `cancel` apply the API's rules: the workflow's
/// `starters`, and only who started a run (or may start its workflow) cancels it. Without
/// `--as` the command acts as the operator.
#[test]
fn the_cli_applies_the_apis_rules_to_who_starts_and_cancels() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write(
            "flow.toml",
            "[users.ines]\nroles = [\"clerk\"]\n\n[users.bob]\nroles = [\"finance\"]\n\n\
             [workflows.wait]\nstarters = [\"clerk\"]\n",
        );
        project.write(
            "w.flow",
            r#"workflow wait() -> Bool {
  let d = await approval "ok" { approvers: role("finance") }
  d.approved
}
"#,
        );
        for command in ["run", "start"] {
            project
                .flowrt(&[command, "w.flow", "--as", "bob"])
                .expect_code(3)
                .expect_stderr("refused: bob may not start `wait`: it needs role clerk");
        }
        assert!(project.runs().is_empty(), "nothing was started");
        let out = project.flowrt(&["run", "w.flow", "--as", "ines"]);
        out.expect_code(10);
        let id = run_id(&out);
        project
            .flowrt(&["cancel", &id, "--as", "bob"])
            .expect_code(3)
            .expect_stderr("only who started run");
        assert_eq!(project.status(&id)["status"], "waiting");
        let history = project.history(&id);
        let refused = common::of_kind(&history, "request_refused");
        assert_eq!(refused.len(), 1, "{history:?}");
        assert_eq!(refused[0]["data"]["by"], "bob");
        project
            .flowrt(&["cancel", &id, "--as", "nobody"])
            .expect_code(2)
            .expect_stderr("unknown user `nobody`");
        project
            .flowrt(&["cancel", &id, "--as", "ines"])
            .expect_code(0);
        // The operator (no --as) may start and cancel anything.
        let out = project.flowrt(&["run", "w.flow"]);
        out.expect_code(10);
        project.flowrt(&["cancel", &run_id(&out)]).expect_code(0);
    });
}

/// `flowrt runs` has a header, filters by workflow, age and count, and says how each run came
/// out: the variant of an enum result, the error, what it waits for.
#[test]
fn runs_lists_outcomes_with_filters() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write(
            "r.flow",
            r#"enum Verdict { Released(receipt: String), Held }

workflow release(ok: Bool) -> Verdict {
  if ok { return Released("R-1") }
  Held
}

workflow boom() -> Int {
  fail "the ledger is closed"
}

workflow count() -> Int {
  41 + 1
}
"#,
        );
        for (workflow, input) in [
            ("release", r#"{"ok": true}"#),
            ("release", r#"{"ok": false}"#),
            ("boom", "{}"),
            ("count", "{}"),
        ] {
            project.flowrt(&["run", "r.flow", "--workflow", workflow, "--input", input]);
        }
        let all = project.flowrt(&["runs"]);
        all.expect_code(0);
        let lines: Vec<&str> = all.stdout.lines().collect();
        assert!(
            lines[0].starts_with("run") && lines[0].contains("outcome"),
            "{}",
            all.stdout
        );
        assert_eq!(lines.len(), 5, "{}", all.stdout);
        assert!(all.stdout.contains("Released") && all.stdout.contains("Held"));
        assert!(all.stdout.contains("the ledger is closed"));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("count") && l.ends_with("42"))
        );
        let released = project
            .flowrt(&["runs", "--workflow", "release", "--json"])
            .json();
        assert_eq!(released.as_array().map(Vec::len), Some(2), "{released}");
        let newest = project.flowrt(&["runs", "--limit", "1", "--json"]).json();
        assert_eq!(newest[0]["workflow"], "count", "newest first: {newest}");
        let recent = project.flowrt(&["runs", "--since", "1h", "--json"]).json();
        assert_eq!(recent.as_array().map(Vec::len), Some(4));
        project
            .flowrt(&["runs", "--since", "2999-01-01T00:00:00Z"])
            .expect_code(0)
            .expect_stdout("no runs");
        project
            .flowrt(&["runs", "--since", "yesterday"])
            .expect_code(2)
            .expect_stderr("--since yesterday: expected a duration");
    });
}

/// A `[tools.NAME]` that names no deployed tool is a warning at deploy; `flowrt config check`
/// lists every likely mistake; read-only commands work while flow.toml has an error.
#[test]
fn configuration_mistakes_are_pointed_out() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write(
            "docs.flow",
            r#"tool check_docs(id: String) -> Bool via http post "/check"

workflow review(id: String) -> Bool {
  let d = await approval "ok" { approvers: role("customs") }
  d.approved
}
"#,
        );
        project.write(
            "flow.toml",
            "[users.ana]\nroles = [\"customs\", \"florist\"]\n\n[users.ghost]\nroles = []\n\n\
             [tools.chek_docs]\nbase_url = \"http://127.0.0.1:9\"\n\
             headers = { Authorization = \"Bearer ${env:FLOW_TEST_UNSET_TOKEN}\" }\n\n\
             [workflows.reveiw]\nstarters = [\"customs\"]\n",
        );
        project
            .flowrt(&["deploy", "docs.flow"])
            .expect_code(0)
            .expect_stderr("warning: flow.toml: [tools.chek_docs] names no tool of the deployed programs (did you mean `check_docs`?)")
            .expect_stderr("[workflows.reveiw] names no workflow");
        let check = project.flowrt(&["config", "check"]);
        check
            .expect_code(1)
            .expect_stdout("[tools.chek_docs]")
            .expect_stdout("${env:FLOW_TEST_UNSET_TOKEN}, which is not set")
            .expect_stdout("user `ghost` holds no roles")
            .expect_stdout("role `florist` is held by users but no deployed program");
        assert!(!check.stdout.contains("role `customs`"), "{}", check.stdout);
        // `run` of one file under a project's flow.toml (tools of other programs configured
        // too) says only what is surely a typo.
        project.write(
            "flow.toml",
            "[users.ana]\nroles = [\"customs\"]\n\n[tools.chek_docs]\nbase_url = \"http://127.0.0.1:9\"\n\n\
             [tools.send_invoice]\nbase_url = \"http://127.0.0.1:9\"\n",
        );
        let run = project.flowrt(&["run", "docs.flow", "--input", r#"{"id": "D-0"}"#]);
        run.expect_code(10).expect_stderr(
            "[tools.chek_docs] names no tool of the deployed programs (did you mean `check_docs`?)",
        );
        assert!(!run.stderr.contains("send_invoice"), "{}", run.stderr);
        // Fixed, it is clean.
        project.write(
            "flow.toml",
            "[users.ana]\nroles = [\"customs\"]\n\n[tools.check_docs]\nbase_url = \"http://127.0.0.1:9\"\n",
        );
        project
            .flowrt(&["config", "check"])
            .expect_code(0)
            .expect_stdout("no problems found (1 program(s) checked)");
        // A broken file: what only reads goes on, with a warning; the rest refuses.
        let out = project.flowrt(&["run", "docs.flow", "--input", r#"{"id": "D-1"}"#]);
        out.expect_code(10);
        let id = run_id(&out);
        project.write("flow.toml", "[users.ana\nroles = 3\n");
        for args in [vec!["runs"], vec!["status", &id], vec!["history", &id]] {
            project
                .flowrt(&args)
                .expect_code(0)
                .expect_stderr("warning: flow.toml")
                .expect_stderr("goes on without the configuration");
        }
        project
            .flowrt(&["approve", &id, "ok", "--as", "ana"])
            .expect_code(2)
            .expect_stderr("flow.toml");
        project.flowrt(&["config", "check"]).expect_code(1);
    });
}

/// `run_id()` is the run's own id — the same after a wait and a restart, a branch's its own —
/// and records nothing in the history.
#[test]
fn run_id_is_the_runs_own_id_on_every_resume() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write(
            "ids.flow",
            r#"tool note(text: String) -> Bool via exec "cat >> notes.log; echo >> notes.log; echo true"

workflow ids(n: Int) -> String {
  let first = run_id()
  note("before ${first}")
  sleep 50ms
  let parts = parallel for i in [1, 2] {
    run_id()
  }
  "${first} ${run_id()} ${join(parts, ",")}"
}
"#,
        );
        let out = project.flowrt(&["run", "ids.flow", "--input", r#"{"n": 1}"#, "--json"]);
        out.expect_code(EXIT_COMPLETED);
        let run = run_id(&out);
        let output = out.json()["output"]
            .as_str()
            .expect("a text result")
            .to_string();
        let parts: Vec<&str> = output.split(' ').collect();
        assert_eq!(parts[0], run, "{output}");
        assert_eq!(parts[1], run, "the same after the sleep: {output}");
        let branches: Vec<&str> = parts[2].split(',').collect();
        assert_eq!(branches.len(), 2, "{output}");
        for (i, branch) in branches.iter().enumerate() {
            assert!(
                branch.starts_with(&format!("{run}.")) && branch.ends_with(&format!(".{i}")),
                "a branch's own id, RUN.STEP.i: {output}"
            );
        }
        let notes =
            std::fs::read_to_string(project.path().join("notes.log")).expect("the tool ran");
        assert!(notes.contains(&format!("before {run}")), "{notes}");
        let history = project.history(&run);
        let steps = history
            .iter()
            .filter(|e| e["step"].as_str() == Some("run_id"))
            .count();
        assert_eq!(steps, 0, "run_id() records nothing: {history:#?}");
    });
}
