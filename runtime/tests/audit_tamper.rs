//! Attacks on the audit trail through the database, behind flowrt's back, and what the real
//! `flowrt audit verify` says about each: removed last records, a removed trail, a deleted
//! run, a changed status or output, a chain recomputed without the audit key, a forged
//! record — and, with an anchor kept elsewhere, a rollback to an older copy. Forged and
//! malformed anchors are refused. A database from before the audit key still opens, verifies
//! as unkeyed, and goes on keyed.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Out, Project, Store, for_each_store};
use flow_runtime::audit::{self, AuditKey, Record};
use flow_runtime::store::Event;

const PROGRAM: &str = r#"tool ok() -> Int via exec "sh ok.sh"

workflow done(n: Int) -> Int {
  let a = ok()
  audit "counted" { n: n }
  a + n
}

workflow gated(n: Int) -> Int {
  let a = ok()
  let d = await approval "sign" { approvers: role("ops") }
  a + n
}
"#;

fn project(store: &Store) -> Project {
    let project = Project::new(store);
    project.write(
        "flow.toml",
        "[users.ana]\nroles = [\"ops\"]\n\n[users.bob]\nroles = []\n",
    );
    project.write("ok.sh", "cat > /dev/null; echo 5\n");
    project.write("trail.flow", PROGRAM);
    project
}

/// Runs `workflow` to its end (or its gate) and returns the run's id.
fn start(project: &Project, workflow: &str, n: i64) -> String {
    let input = format!(r#"{{"n": {n}}}"#);
    let out = project.flowrt(&[
        "run",
        "trail.flow",
        "--workflow",
        workflow,
        "--as",
        "bob",
        "--input",
        &input,
    ]);
    assert!(out.code == 0 || out.code == 10, "{}", out.all());
    project.runs()[0]["id"].as_str().unwrap().to_string()
}

fn history(project: &Project, run: &str) -> Vec<Event> {
    let mut store = flow_runtime::store::open(project.db().spec()).unwrap();
    store.history(run).unwrap()
}

fn length(project: &Project, run: &str) -> i64 {
    history(project, run).len() as i64
}

/// `audit verify ARGS`, which must find a break: exit 1 and a BROKEN line holding every one
/// of `needles`.
fn broken(project: &Project, args: &[&str], needles: &[&str]) -> Out {
    let mut all = vec!["audit", "verify"];
    all.extend(args);
    let out = project.flowrt(&all);
    out.expect_code(1);
    let found = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("BROKEN"))
        .any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(found, "no BROKEN line with {needles:?}:\n{}", out.all());
    out
}

fn intact(project: &Project, args: &[&str]) -> Out {
    let mut all = vec!["audit", "verify"];
    all.extend(args);
    let out = project.flowrt(&all);
    out.expect_code(0);
    assert!(!out.stdout.contains("BROKEN"), "{}", out.stdout);
    out
}

fn record<'a>(run: &'a str, event: &'a Event) -> Record<'a> {
    Record {
        run,
        seq: event.seq,
        at: event.at,
        kind: event.kind.as_str(),
        step: event.step.as_deref(),
        attempt: event.attempt,
        line: event.line,
        duration_ms: event.duration_ms,
        data: &event.data,
    }
}

/// What someone without the audit key can do: recompute the chain of `run` from record
/// `from` on, with `hash` (plain SHA-256, or an HMAC under a key of their own).
fn rehash(project: &Project, run: &str, from: i64, hash: impl Fn(&Record, &str) -> String) {
    let events = history(project, run);
    let mut previous = audit::GENESIS.to_string();
    for event in &events {
        if event.seq >= from {
            let new = hash(&record(run, event), &previous);
            project.db().execute(
                &format!(
                    "UPDATE events SET prev_hash = $2, hash = $3 WHERE run = $1 AND seq = {}",
                    event.seq
                ),
                &[run, &previous, &new],
            );
            previous = new;
        } else {
            previous = event.hash.clone();
        }
    }
}

/// Deletes every row of `run`, and its audit head when `with_head`.
fn delete_run(project: &Project, run: &str, with_head: bool) {
    let db = project.db();
    for table in ["events", "checkpoints"] {
        db.execute(&format!("DELETE FROM {table} WHERE run = $1"), &[run]);
    }
    assert_eq!(db.execute("DELETE FROM runs WHERE id = $1", &[run]), 1);
    if with_head {
        db.execute("DELETE FROM audit_heads WHERE run = $1", &[run]);
    }
}

#[test]
fn an_untouched_installation_verifies_keyed() {
    for_each_store(|store| {
        let project = project(store);
        let done = start(&project, "done", 1);
        let waiting = start(&project, "gated", 2);
        let out = intact(&project, &[]);
        out.expect_stdout("installation: 2 run(s) numbered, none missing");
        out.expect_stdout(&format!("run {done}: "));
        out.expect_stdout(&format!("run {waiting}: "));
        assert!(!out.stdout.contains("unkeyed"), "{}", out.stdout);
        // The final record seals the run's state; it is exported.
        let export = project.flowrt(&["audit", done.as_str(), "--json"]);
        let last: serde_json::Value =
            serde_json::from_str(export.stdout.lines().last().unwrap()).unwrap();
        assert_eq!(last["event"], "run_completed");
        assert_eq!(last["seal"]["status"], "completed");
        // Going on (an approval) and cancelling keep it intact.
        project
            .flowrt(&["approve", &waiting, "sign", "--as", "ana"])
            .expect_code(0);
        let third = start(&project, "gated", 3);
        project
            .flowrt(&["cancel", &third, "--as", "ana"])
            .expect_code(0);
        intact(&project, &[]).expect_stdout("installation: 3 run(s) numbered");
    });
}

#[test]
fn removed_last_records_are_found() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project, "done", 1);
        let n = length(&project, &run);
        project.db().execute(
            &format!("DELETE FROM events WHERE run = $1 AND seq > {}", n - 2),
            &[&run],
        );
        broken(
            &project,
            &[&run],
            &[
                &format!("run {run}: record {}", n - 1),
                "missing",
                "removed from its end",
            ],
        );
        // A waiting run's last record alone, too (no final record to miss).
        let waiting = start(&project, "gated", 2);
        let n = length(&project, &waiting);
        project.db().execute(
            &format!("DELETE FROM events WHERE run = $1 AND seq = {n}"),
            &[&waiting],
        );
        broken(
            &project,
            &[],
            &[&format!("run {waiting}: record {n}"), "missing"],
        );
    });
}

#[test]
fn a_removed_trail_is_found() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project, "done", 1);
        let n = length(&project, &run);
        project
            .db()
            .execute("DELETE FROM events WHERE run = $1", &[&run]);
        broken(
            &project,
            &[&run],
            &[
                &format!("run {run}: record 1"),
                "whole trail was removed",
                &format!("{n} record(s)"),
            ],
        );
    });
}

#[test]
fn a_deleted_run_is_found_and_named() {
    for_each_store(|store| {
        let project = project(store);
        let first = start(&project, "done", 1);
        let middle = start(&project, "done", 2);
        let last = start(&project, "gated", 3);
        // Everything of the middle run, its head included: the next run's head names it.
        delete_run(&project, &middle, true);
        broken(
            &project,
            &[],
            &[&format!("run {middle}"), "deleted", "number 2 of 3"],
        );
        // The newest run: the installation head names it.
        delete_run(&project, &last, true);
        broken(
            &project,
            &[],
            &[&format!("run {last}"), "deleted", "number 3 of 3"],
        );
        // A run whose head was left behind is named by it, also when asked for by id.
        delete_run(&project, &first, false);
        broken(
            &project,
            &[&first],
            &[&format!("run {first}"), "deleted", "its head remains"],
        );
    });
}

#[test]
fn a_changed_status_or_output_is_found() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project, "done", 1);
        let n = length(&project, &run);
        project.db().execute(
            "UPDATE runs SET status = 'failed', error = 'it broke' WHERE id = $1",
            &[&run],
        );
        broken(
            &project,
            &[&run],
            &[
                &format!("run {run}: record {n}"),
                "status was changed from `completed` to `failed`",
            ],
        );
        project.db().execute(
            "UPDATE runs SET status = 'completed', error = NULL, output = '1000' WHERE id = $1",
            &[&run],
        );
        assert_eq!(project.status(&run)["output"], 1000, "what status shows");
        broken(
            &project,
            &[&run],
            &[&format!("run {run}: record {n}"), "output was changed"],
        );
        // Made to look unfinished, to be driven again.
        project.db().execute(
            "UPDATE runs SET status = 'runnable', output = NULL WHERE id = $1",
            &[&run],
        );
        broken(
            &project,
            &[&run],
            &[
                &format!("run {run}: record {n}"),
                "from `completed` to `runnable`",
            ],
        );
        // A waiting run made to look completed: no final record seals that.
        let waiting = start(&project, "gated", 2);
        let n = length(&project, &waiting);
        project.db().execute(
            "UPDATE runs SET status = 'completed', output = '7', waiting_on = NULL WHERE id = $1",
            &[&waiting],
        );
        broken(
            &project,
            &[&waiting],
            &[
                &format!("run {waiting}: record {n}"),
                "is `completed` in the runs table and no final record seals that",
            ],
        );
    });
}

#[test]
fn a_chain_recomputed_without_the_key_is_found() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project, "done", 1);
        let seq = project
            .db()
            .query_i64(
                "SELECT seq FROM events WHERE run = $1 AND kind = 'audit'",
                &[&run],
            )
            .unwrap();
        project.db().execute(
            "UPDATE events SET data = replace(data, '1', '9') WHERE run = $1 AND kind = 'audit'",
            &[&run],
        );
        // The old scheme: plain SHA-256, from the changed record on.
        rehash(&project, &run, seq, audit::hash);
        broken(
            &project,
            &[&run],
            &[
                &format!("run {run}: record {seq}"),
                "altered",
                "without the audit key",
            ],
        );
        // An HMAC under a key of the attacker's own.
        let theirs = AuditKey::from_hex(&"ab".repeat(32)).unwrap();
        rehash(&project, &run, seq, |record, previous| {
            audit::keyed_hash(&theirs, record, previous, None)
        });
        broken(
            &project,
            &[&run],
            &[&format!("run {run}: record {seq}"), "altered"],
        );
    });
}

#[test]
fn a_forged_record_is_found() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project, "done", 1);
        let events = history(&project, &run);
        let last = events.last().unwrap();
        let forged = Event {
            seq: last.seq + 1,
            kind: flow_runtime::store::EventKind::Audit,
            data: r#"{"approved_by":"mallory"}"#.to_string(),
            prev_hash: last.hash.clone(),
            seal: None,
            ..last.clone()
        };
        let hash = audit::hash(&record(&run, &forged), &forged.prev_hash);
        project.db().execute(
            &format!(
                "INSERT INTO events (run, seq, at, kind, data, prev_hash, hash)
                 VALUES ($1, {}, {}, 'audit', $2, $3, $4)",
                forged.seq, forged.at
            ),
            &[&run, &forged.data, &forged.prev_hash, &hash],
        );
        broken(
            &project,
            &[&run],
            &[&format!("run {run}: record {}", forged.seq), "forged"],
        );
        // Moving the head along does not help without the key.
        project.db().execute(
            &format!(
                "UPDATE audit_heads SET seq = {}, hash = $2 WHERE run = $1",
                forged.seq
            ),
            &[&run, &hash],
        );
        broken(
            &project,
            &[&run],
            &[&format!("run {run}"), "head", "altered"],
        );
    });
}

/// A run's rows as they were: the attacker's copy for a rollback.
struct Saved {
    status: String,
    waiting_on: Option<String>,
    head_seq: i64,
    head_hash: String,
    head_mac: String,
    length: i64,
}

fn save(project: &Project, run: &str) -> Saved {
    let db = project.db();
    let text = |sql: &str| db.query_text(sql, &[run]);
    Saved {
        status: text("SELECT status FROM runs WHERE id = $1").unwrap(),
        waiting_on: text("SELECT waiting_on FROM runs WHERE id = $1"),
        head_seq: db
            .query_i64("SELECT seq FROM audit_heads WHERE run = $1", &[run])
            .unwrap(),
        head_hash: text("SELECT hash FROM audit_heads WHERE run = $1").unwrap(),
        head_mac: text("SELECT mac FROM audit_heads WHERE run = $1").unwrap(),
        length: length(project, run),
    }
}

fn roll_back(project: &Project, run: &str, saved: &Saved) {
    let db = project.db();
    db.execute(
        &format!(
            "DELETE FROM events WHERE run = $1 AND seq > {}",
            saved.length
        ),
        &[run],
    );
    db.execute(
        "UPDATE runs SET status = $2, waiting_on = $3, output = NULL WHERE id = $1",
        &[
            run,
            &saved.status,
            saved.waiting_on.as_deref().unwrap_or(""),
        ],
    );
    db.execute(
        &format!(
            "UPDATE audit_heads SET seq = {}, hash = $2, mac = $3 WHERE run = $1",
            saved.head_seq
        ),
        &[run, &saved.head_hash, &saved.head_mac],
    );
}

#[test]
fn an_anchor_proves_what_a_rollback_removed() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project, "gated", 1);
        let other = start(&project, "done", 2);
        let before = save(&project, &run);
        project
            .flowrt(&["approve", &run, "sign", "--as", "ana"])
            .expect_code(0);
        let anchor = project.flowrt(&["audit", "anchor"]);
        anchor.expect_code(0);
        let json = anchor.json();
        assert_eq!(json["runs"], 2, "{json}");
        assert_eq!(json["heads"].as_array().unwrap().len(), 2);
        assert_eq!(json["signature"].as_str().unwrap().len(), 64);
        project.write("anchor.json", &anchor.stdout);
        intact(&project, &["--anchor", "anchor.json"]).expect_stdout("unchanged");

        // The approval and the run's end are rolled back to the attacker's copy: inside the
        // database, that is consistent.
        roll_back(&project, &run, &before);
        intact(&project, &[]);
        broken(
            &project,
            &["--anchor", "anchor.json"],
            &[
                &format!("run {run}: record {}", before.length + 1),
                "missing",
                "anchor of",
            ],
        );
        broken(
            &project,
            &[&run, "--anchor", "anchor.json"],
            &[&format!("run {run}: record {}", before.length + 1)],
        );
        // A run deleted with its head: the anchor names it too.
        delete_run(&project, &other, true);
        broken(
            &project,
            &["--anchor", "anchor.json"],
            &[&format!("run {other}"), "deleted", "anchor of"],
        );
    });
}

#[test]
fn changed_forged_and_malformed_anchors_are_refused() {
    for_each_store(|store| {
        let project = project(store);
        start(&project, "done", 1);
        let anchor = project.flowrt(&["audit", "anchor"]);
        anchor.expect_code(0);
        // One run fewer: it would hide a deleted run.
        let mut json = anchor.json();
        json["heads"].as_array_mut().unwrap().clear();
        json["records"] = 0.into();
        project.write("fewer.json", &json.to_string());
        project
            .flowrt(&["audit", "verify", "--anchor", "fewer.json"])
            .expect_code(2)
            .expect_stderr("the anchor fewer.json: its signature does not match");
        // Signed with another audit key: another installation's anchor.
        let elsewhere = self::project(store).with_env("FLOW_AUDIT_KEY", &"cd".repeat(32));
        start(&elsewhere, "done", 1);
        let theirs = elsewhere.flowrt(&["audit", "anchor"]);
        theirs.expect_code(0);
        project.write("theirs.json", &theirs.stdout);
        project
            .flowrt(&["audit", "verify", "--anchor", "theirs.json"])
            .expect_code(2)
            .expect_stderr("signed with another audit key");
        // And this installation verified with another key: every keyed record fails, and
        // the message says the key may be the cause.
        let mut wrong = project.command(&["audit", "verify"]);
        wrong.env("FLOW_AUDIT_KEY", "cd".repeat(32));
        let wrong = Out::from_output(&["audit", "verify"], &wrong.output().unwrap());
        wrong
            .expect_code(1)
            .expect_stdout("is not the one the installation was written with");
        for (name, text) in [("torn.json", "{\"anchor\": "), ("empty.json", "{}")] {
            project.write(name, text);
            project
                .flowrt(&["audit", "verify", "--anchor", name])
                .expect_code(2)
                .expect_stderr(&format!("the anchor {name}: it is not an audit anchor"));
        }
        project
            .flowrt(&["audit", "verify", "--anchor", "missing.json"])
            .expect_code(2)
            .expect_stderr("cannot read the anchor missing.json");
        project
            .with_env("FLOW_AUDIT_KEY", "xyz")
            .flowrt(&["audit", "verify"])
            .expect_code(2)
            .expect_stderr("FLOW_AUDIT_KEY must be 64 hexadecimal digits");
    });
}

#[test]
fn no_anchor_is_given_for_a_broken_trail() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project, "done", 1);
        project
            .db()
            .execute("UPDATE runs SET output = '1' WHERE id = $1", &[&run]);
        let out = project.flowrt(&["audit", "anchor"]);
        out.expect_code(1)
            .expect_stderr(&format!("BROKEN run {run}"))
            .expect_stderr("refusing to anchor");
        assert!(out.stdout.trim().is_empty(), "{}", out.stdout);
    });
}

/// Turns the database into one written before the audit key: schema 5, plain SHA-256 (the
/// later migrations undone).
fn make_legacy(project: &Project) {
    let mut store = flow_runtime::store::open(project.db().spec()).unwrap();
    let runs: Vec<String> = store
        .runs(None)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    drop(store);
    for run in &runs {
        rehash(project, run, 1, audit::hash);
    }
    let db = project.db();
    db.execute("DROP TABLE audit_heads", &[]);
    db.execute("DROP TABLE audit_installation", &[]);
    db.execute("ALTER TABLE events DROP COLUMN seal", &[]);
    // Migration 7 (the bounded refusal log) came after the audit key too.
    db.execute("DROP INDEX refusals_by_client", &[]);
    for column in ["client", "count", "last_at"] {
        db.execute(&format!("ALTER TABLE refusals DROP COLUMN {column}"), &[]);
    }
    // Migration 8 (the calls a checkpoint keeps) too, and 13 (the schema of a gate's context
    // in the gate index, whose table migration 9 keeps when it is there).
    db.execute("ALTER TABLE checkpoints DROP COLUMN calls", &[]);
    db.execute("ALTER TABLE gates DROP COLUMN context_schema", &[]);
    db.drop_columns_added_after(5);
    if db.is_postgres() {
        db.execute("UPDATE flow_schema SET version = 5", &[]);
    } else {
        db.execute("PRAGMA user_version = 5", &[]);
    }
}

#[test]
fn a_database_from_before_the_audit_key_opens_verifies_and_goes_on_keyed() {
    for_each_store(|store| {
        let project = project(store);
        let done = start(&project, "done", 1);
        let waiting = start(&project, "gated", 2);
        let old = length(&project, &waiting);
        make_legacy(&project);

        let out = intact(&project, &[]);
        out.expect_stdout(&format!(
            "run {done}: {} record(s), chain intact (unkeyed: written before the audit key)",
            length(&project, &done)
        ));
        out.expect_stdout("installation: 0 run(s) numbered");
        // Tampering with old records is still found, as before.
        project.db().execute(
            "UPDATE events SET data = replace(data, '1', '8') WHERE run = $1 AND kind = 'audit'",
            &[&done],
        );
        broken(
            &project,
            &[&done],
            &[&format!("run {done}: record"), "altered"],
        );
        rehash(&project, &done, 1, audit::hash);

        // The waiting run goes on: numbered now, keyed from its next record on.
        project
            .flowrt(&["approve", &waiting, "sign", "--as", "ana"])
            .expect_code(0);
        let new = start(&project, "done", 3);
        let out = intact(&project, &[]);
        out.expect_stdout(&format!(
            "run {waiting}: {} record(s), chain intact ({old} unkeyed record(s) from before the audit key)",
            length(&project, &waiting)
        ));
        out.expect_stdout("installation: 2 run(s) numbered, none missing");
        assert!(
            !out.stdout
                .lines()
                .any(|l| l.starts_with(&format!("run {new}")) && l.contains("unkeyed")),
            "{}",
            out.stdout
        );
        // Its old records are pinned by its keyed head now: a rewrite of them is found.
        project.db().execute(
            "UPDATE events SET data = replace(data, '2', '4') WHERE run = $1 AND seq = 1",
            &[&waiting],
        );
        rehash(&project, &waiting, 1, audit::hash);
        broken(&project, &[&waiting], &[&format!("run {waiting}: record")]);
    });
}
