//! The gate index (table `gates`), on both stores: the store keeps it in the transaction of
//! the commits that open, change and close gates (and of `cancel`); through the real
//! `flowrt`, what `flowrt approvals --json` lists agrees with what the runs' histories say
//! after every kind of change (open, escalate, partial quorum, decide, input, time-out,
//! cancel) and after `kill -9` right after an opening or a decision; a database from before
//! the index (schema 8) gets its open gates indexed once, when `flowrt` first opens it.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, Store, for_each_store};
use flow_runtime::store::{Approval, GateChange, GateCounts, GateRow, RunStatus, StepCommit};
use flow_runtime::{gates::GateKind, store};
use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

use common::STORE_OWNER as OWNER;

fn row(run: &str, name: &str, opened_at: i64) -> GateRow {
    GateRow {
        run: run.into(),
        name: name.into(),
        kind: GateKind::Approval,
        workflow: "w".into(),
        version: "v1".into(),
        started_by: "ines".into(),
        opened_at,
        approvers: "role finance".into(),
        approvers_json: serde_json::json!({ "kind": "role", "name": "finance" }),
        escalate_to: Some("role ops".into()),
        escalate_json: Some(serde_json::json!({ "kind": "role", "name": "ops" })),
        escalate_at: Some(opened_at + 10),
        escalated: false,
        deadline: Some(opened_at + 20),
        outer_deadline: Some(opened_at + 15),
        quorum: 2,
        allow_self: false,
        prompt: Some("Pay?".into()),
        context: serde_json::json!({ "amount": 5, "note": "ünïcode" }),
        shown_sha256: "abc".into(),
        input_schema: None,
        context_schema: Some(serde_json::json!({
            "type": "object",
            "properties": { "note": { "type": "string" }, "amount": { "type": "integer" } },
            "x-order": ["note", "amount"],
        })),
        timeout_caught: true,
        options: serde_json::json!({ "approvers": "role finance", "quorum": 2 }),
        approvals: vec![],
        remind_every: Some(86_400_000),
        reminded: 2,
    }
}

fn step(run: &str, waiting_on: Option<&str>, gate: Option<GateChange>, now: i64) -> StepCommit {
    StepCommit {
        run: run.into(),
        owner: OWNER.into(),
        checkpoint: None,
        events: vec![],
        status: if waiting_on.is_some() {
            RunStatus::Waiting
        } else {
            RunStatus::Runnable
        },
        output: None,
        error: None,
        waiting_on: waiting_on.map(str::to_string),
        wake_at: None,
        now,
        gate,
        outbox: Default::default(),
        takes_signal: None,
    }
}

use common::create_claimed_run as create;

/// A fresh store in `dir` with version `v1` deployed and claimed runs `r1`, `r2`, `r3`.
fn store_with_three_runs(
    kind: &Store,
    dir: &std::path::Path,
) -> (common::TestDb, Box<dyn store::Store>) {
    let db = common::TestDb::create(kind, dir);
    let mut store = store::open(db.spec()).unwrap();
    store.deploy("v1", b"artifact", 0).unwrap();
    for id in ["r1", "r2", "r3"] {
        create(store.as_mut(), id);
    }
    (db, store)
}

#[test]
fn the_store_writes_the_gate_index_in_the_commits_that_change_it() {
    for_each_store(|kind| {
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut store) = store_with_three_runs(kind, dir.path());
        assert_eq!(store.gate_counts().unwrap(), GateCounts::default());

        // Opening: the row reads back whole, by gate, by run and in the listing.
        let opened = row("r1", "g", 100);
        let open = GateChange::Open(opened.clone());
        store
            .commit(&[step("r1", Some("approval g"), Some(open), 100)])
            .unwrap();
        assert_eq!(store.gate("r1", "g").unwrap().as_ref(), Some(&opened));
        assert_eq!(
            store.gates(Some("r1")).unwrap(),
            std::slice::from_ref(&opened)
        );
        assert_eq!(store.gates(Some("r2")).unwrap(), []);
        let counts = store.gate_counts().unwrap();
        assert_eq!((counts.approvals, counts.inputs), (1, 0));
        assert_eq!(counts.oldest_opened_at, Some(100));

        // An input gate of another run, opened earlier: listed first, counted apart.
        let mut input = row("r2", "details", 50);
        input.kind = GateKind::Input;
        input.input_schema = Some(serde_json::json!({ "type": "object" }));
        store
            .commit(&[step(
                "r2",
                Some("input details"),
                Some(GateChange::Open(input.clone())),
                50,
            )])
            .unwrap();
        let all: Vec<String> = store
            .gates(None)
            .unwrap()
            .iter()
            .map(|g| format!("{} {}", g.run, g.name))
            .collect();
        assert_eq!(all, ["r2 details", "r1 g"]);
        let counts = store.gate_counts().unwrap();
        assert_eq!((counts.approvals, counts.inputs), (1, 1));
        assert_eq!(counts.oldest_opened_at, Some(50));

        // A reviewer's gates are found by who they name, escalation only once it fired.
        let found = |store: &mut Box<dyn store::Store>, user: &str, roles: &[&str]| {
            let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
            let gates = store.gates_for(user, &roles).unwrap();
            gates
                .iter()
                .map(|g| format!("{} {}", g.run, g.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            found(&mut store, "ana", &["finance"]),
            ["r2 details", "r1 g"]
        );
        assert_eq!(
            found(&mut store, "omar", &["ops", "fin"]),
            Vec::<String>::new()
        );
        assert_eq!(
            found(&mut store, "finance", &[]),
            Vec::<String>::new(),
            "a user, not the role"
        );

        // An approval of a quorum and an escalation replace the row.
        let mut approved = opened.clone();
        approved.approvals.push(Approval {
            by: "fay".into(),
            at: 120,
            comment: "fine".into(),
        });
        approved.escalated = true;
        store
            .commit(&[step(
                "r1",
                Some("approval g"),
                Some(GateChange::Update(approved.clone())),
                120,
            )])
            .unwrap();
        assert_eq!(store.gate("r1", "g").unwrap(), Some(approved.clone()));
        assert_eq!(found(&mut store, "omar", &["ops"]), ["r1 g"], "escalated");
        // A commit that keeps the run at the gate keeps the row (a notification recorded).
        store
            .commit(&[step("r1", Some("approval g"), None, 130)])
            .unwrap();
        assert_eq!(store.gate("r1", "g").unwrap(), Some(approved.clone()));

        // A change that would make the index disagree with the run is refused, and the
        // whole group commit with it.
        for (waiting, change) in [
            (
                Some("approval other"),
                GateChange::Open(row("r1", "g", 140)),
            ),
            (Some("timer"), GateChange::Update(approved.clone())),
            (Some("approval g"), GateChange::Open(row("r2", "g", 140))),
            (Some("approval g"), GateChange::Close("g".into())),
        ] {
            let refused = store.commit(&[
                step("r3", Some("timer"), None, 140),
                step("r1", waiting, Some(change.clone()), 140),
            ]);
            let error = refused.expect_err("refused").to_string();
            assert!(error.contains("run r1"), "{error}");
            assert_eq!(store.gate("r1", "g").unwrap(), Some(approved.clone()));
            let r3 = store.run("r3").unwrap().unwrap();
            assert_eq!(r3.waiting_on, None, "nothing of the group is committed");
        }

        // Deciding closes the gate; so does any commit that takes the run elsewhere.
        store
            .commit(&[step("r1", None, Some(GateChange::Close("g".into())), 150)])
            .unwrap();
        assert_eq!(store.gate("r1", "g").unwrap(), None);
        store
            .commit(&[step(
                "r1",
                Some("approval g"),
                Some(GateChange::Open(opened.clone())),
                160,
            )])
            .unwrap();
        store
            .commit(&[step("r1", Some("timer"), None, 170)])
            .unwrap();
        assert_eq!(store.gates(Some("r1")).unwrap(), []);
        // A gate opened again in a loop replaces the old row.
        store
            .commit(&[step(
                "r1",
                Some("approval g"),
                Some(GateChange::Open(approved)),
                180,
            )])
            .unwrap();
        store
            .commit(&[step(
                "r1",
                Some("approval g"),
                Some(GateChange::Open(opened.clone())),
                190,
            )])
            .unwrap();
        assert_eq!(
            store.gates(Some("r1")).unwrap(),
            std::slice::from_ref(&opened)
        );

        // Cancelling takes the run's gates out of the index.
        assert!(
            store
                .cancel("r2", &flow_runtime::engine::cancel_event("ops", 200))
                .unwrap()
        );
        assert_eq!(store.gates(Some("r2")).unwrap(), []);

        // The backfill writes a row only for a run still waiting at that gate, and only once.
        store
            .commit(&[step("r1", Some("timer"), None, 210)])
            .unwrap();
        assert!(!store.index_gate(&opened).unwrap(), "r1 waits on a timer");
        store
            .commit(&[step("r3", Some("approval g"), None, 220)])
            .unwrap();
        let backfilled = row("r3", "g", 10);
        assert!(store.index_gate(&backfilled).unwrap());
        assert!(
            !store.index_gate(&row("r3", "g", 11)).unwrap(),
            "already there"
        );
        assert_eq!(store.gate("r3", "g").unwrap(), Some(backfilled));
        assert!(
            !store.index_gate(&row("r2", "details", 0)).unwrap(),
            "cancelled"
        );
        assert_eq!(store.gate_counts().unwrap().approvals, 1);
    });
}

// ---------------------------------------------------------------------------------------------
// Through `flowrt`: the index agrees with the history
// ---------------------------------------------------------------------------------------------

const USERS: &str = r#"[users.alice]
roles = ["customs"]

[users.bob]
roles = ["customs"]

[users.omar]
roles = ["ops_manager"]

[users.ines]
roles = ["clerk"]
"#;

const PROGRAM: &str = r#"type Shipment = { id: String, value: Int }

workflow release(s: Shipment) -> String {
  let d = await approval "release_signoff" {
    approvers: role("customs"),
    prompt: "Release ${s.id} worth ${s.value}?",
    context: s,
    timeout: 48h,
    escalate: role("ops_manager") after 24h,
  }
  if d.approved { "released by ${d.by}" } else { "held by ${d.by}" }
}

workflow two(s: Shipment) -> String {
  let d = await approval "double_check" { approvers: role("customs"), quorum: 2 }
  "approved=${d.approved} by ${d.by}"
}

workflow patient(s: Shipment) -> String {
  let d = try {
    await approval "slow_signoff" { approvers: role("customs"), timeout: 48h }
  } catch e {
    return "gave up: ${e.kind}"
  }
  "approved=${d.approved}"
}

workflow bounded(s: Shipment) -> String {
  let d = try {
    timeout 30h {
      await approval "bounded_signoff" { approvers: role("customs") }
    }
  } catch e {
    return "withdrawn: ${e.kind}"
  }
  "approved=${d.approved}"
}

workflow ask(id: String) -> String {
  let s = await input<Shipment> "shipment_details" { from: user("alice"), prompt: "Details for ${id}?" }
  "${s.id} is worth ${s.value}"
}

workflow steps(s: Shipment) -> String {
  let first = await approval "first" { approvers: role("customs") }
  let second = await approval "second" { approvers: role("customs") }
  "first=${first.approved} second=${second.approved}"
}
"#;

const SHIPMENT: &str = r#"{"s": {"id": "S1", "value": 5}}"#;

fn gate_project(store: &Store) -> Project {
    let project = Project::new(store);
    project.write("flow.toml", USERS);
    project.write("gate.flow", PROGRAM);
    project
}

impl Project {
    fn start(&self, workflow: &str, input: &str) -> String {
        let out = self.flowrt(&[
            "--test-clock",
            "run",
            "gate.flow",
            "--workflow",
            workflow,
            "--as",
            "ines",
            "--input",
            input,
            "--json",
        ]);
        out.expect_code(10);
        out.json()["id"].as_str().unwrap().to_string()
    }

    /// `approvals --json` (every open gate), by run and gate.
    fn listed(&self) -> BTreeMap<(String, String), serde_json::Value> {
        let out = self.flowrt(&["approvals", "--json"]);
        out.expect_code(0);
        out.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let key = (
                    g["run"].as_str().unwrap().to_string(),
                    g["gate"].as_str().unwrap().to_string(),
                );
                (key, g.clone())
            })
            .collect()
    }
}

/// What a run's history says of its open gate: the `gate_opened` of a gate that nothing
/// closed since, with the approvals and the escalation recorded after it.
struct FromHistory {
    opened: serde_json::Value,
    approvals: i64,
    escalated: bool,
}

fn open_gate_in(history: &[serde_json::Value]) -> Option<FromHistory> {
    let opened = history.iter().rposition(|e| e["kind"] == "gate_opened")?;
    let name = &history[opened]["step"];
    let mut state = FromHistory {
        opened: history[opened].clone(),
        approvals: 0,
        escalated: false,
    };
    for e in &history[opened + 1..] {
        let here = &e["step"] == name;
        match e["kind"].as_str().unwrap() {
            "approval_recorded" if here => state.approvals += 1,
            "gate_escalated" if here => state.escalated = true,
            "gate_decided" | "gate_timed_out" | "gate_withdrawn" if here => return None,
            "run_completed" | "run_failed" | "run_cancelled" => return None,
            _ => {}
        }
    }
    Some(state)
}

/// Asserts that the open gates `flowrt approvals --json` lists (from the index) are exactly
/// those the histories leave open, each as its history describes it, and that the index
/// holds no other row. Returns how many are open.
fn index_agrees_with_history(project: &Project) -> usize {
    let listed = project.listed();
    let mut expected = BTreeMap::new();
    for run in project.runs() {
        let id = run["id"].as_str().unwrap().to_string();
        if let Some(state) = open_gate_in(&project.history(&id)) {
            let gate = state.opened["step"].as_str().unwrap().to_string();
            assert_eq!(
                run["waiting_on"]
                    .as_str()
                    .map(|w| w.ends_with(&format!(" {gate}"))),
                Some(true),
                "{run}"
            );
            expected.insert((id, gate), state);
        }
    }
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the index lists the gates the histories leave open"
    );
    for (key, state) in &expected {
        let gate = &listed[key];
        let data = &state.opened["data"];
        assert_eq!(gate["opened_at"], state.opened["at"], "{key:?}");
        assert_eq!(gate["view_hash"], data["shown_sha256"], "{key:?}");
        // The listing's times are milliseconds; the event's data keeps its RFC 3339 text.
        assert_eq!(
            gate["deadline"].as_i64(),
            data["deadline"]
                .as_str()
                .map(|t| flow_runtime::vm::value::parse_time(t).expect("an RFC 3339 time")),
            "{key:?}"
        );
        assert_eq!(gate["kind"], data["kind"], "{key:?}");
        assert_eq!(gate["prompt"], data["prompt"], "{key:?}");
        assert_eq!(gate["context"], data["context"], "{key:?}");
        let quorum = data["quorum"].as_i64().unwrap();
        assert_eq!(gate["remaining"], quorum - state.approvals, "{key:?}");
        let approvers = gate["approvers"].as_str().unwrap();
        assert!(
            approvers.starts_with(data["approvers"].as_str().unwrap()),
            "{key:?}"
        );
        assert_eq!(
            approvers.contains("or, escalated,"),
            state.escalated,
            "{key:?}: {approvers}"
        );
    }
    let rows = project.db().query_i64("SELECT COUNT(*) FROM gates", &[]);
    assert_eq!(
        rows,
        Some(expected.len() as i64),
        "no stale row in the index"
    );
    expected.len()
}

#[test]
fn the_index_agrees_with_the_history_after_every_kind_of_change() {
    for_each_store(|store| {
        let project = gate_project(store);
        let escalating = project.start("release", SHIPMENT);
        let cancelled = project.start("release", SHIPMENT);
        let quorum = project.start("two", SHIPMENT);
        let patient = project.start("patient", SHIPMENT);
        let bounded = project.start("bounded", SHIPMENT);
        let input = project.start("ask", r#"{"id": "S9"}"#);
        let steps = project.start("steps", SHIPMENT);
        assert_eq!(index_agrees_with_history(&project), 7, "opened");

        // Escalation (after 24h) of both `release` runs.
        project.flowrt(&["clock", "advance", "25h"]).expect_code(0);
        assert_eq!(index_agrees_with_history(&project), 7, "escalated");
        let listed = project.listed();
        let of = |run: &str, gate: &str| listed[&(run.to_string(), gate.to_string())].clone();
        assert!(
            of(&escalating, "release_signoff")["approvers"]
                .as_str()
                .unwrap()
                .contains("or, escalated, role ops_manager")
        );

        // One approval of two; a gate decided and the next one opened; an input given.
        project
            .flowrt(&["approve", &quorum, "double_check", "--as", "alice"])
            .expect_code(0);
        assert_eq!(of(&quorum, "double_check")["remaining"], 2);
        assert_eq!(
            project.listed()[&(quorum.clone(), "double_check".into())]["remaining"],
            1
        );
        project
            .flowrt(&["approve", &steps, "first", "--as", "bob"])
            .expect_code(0);
        project
            .flowrt(&[
                "input",
                &input,
                "shipment_details",
                "--as",
                "alice",
                "--value",
                r#"{"id": "S9", "value": 3}"#,
            ])
            .expect_code(0);
        project
            .flowrt(&["cancel", &cancelled, "--as", "ines"])
            .expect_code(0);
        assert_eq!(
            index_agrees_with_history(&project),
            5,
            "recorded, decided, cancelled"
        );
        assert!(
            project
                .listed()
                .contains_key(&(steps.clone(), "second".into()))
        );

        // The `timeout` around `bounded` withdraws its gate at 30h; at 48h `patient` times
        // out (caught) and the escalated `release` too (not caught: the run fails).
        project.flowrt(&["clock", "advance", "6h"]).expect_code(0);
        assert_eq!(index_agrees_with_history(&project), 4, "withdrawn");
        assert_eq!(project.status(&bounded)["output"], "withdrawn: Timeout");
        project.flowrt(&["clock", "advance", "18h"]).expect_code(0);
        assert_eq!(index_agrees_with_history(&project), 2, "timed out");
        assert_eq!(
            project.status(&patient)["output"],
            "gave up: ApprovalTimeout"
        );
        assert_eq!(project.status(&escalating)["status"], "failed");

        // The quorum completes; the last gate is decided.
        project
            .flowrt(&["approve", &quorum, "double_check", "--as", "bob"])
            .expect_code(0);
        project
            .flowrt(&[
                "reject",
                &steps,
                "second",
                "--as",
                "alice",
                "--comment",
                "no",
            ])
            .expect_code(0);
        assert_eq!(index_agrees_with_history(&project), 0, "all closed");
        assert_eq!(
            project.status(&quorum)["output"],
            "approved=true by alice, bob"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// kill -9
// ---------------------------------------------------------------------------------------------

/// A notification hook that blocks while `hold-notify` exists, and a tool that blocks while
/// `hold-step` exists: places to kill `flowrt` right after it committed an opening or a
/// decision.
const NOTIFY: &str =
    "#!/bin/sh\ncat > /dev/null\ntouch notifying\nwhile [ -e hold-notify ]; do sleep 0.02; done\n";
const STEP: &str = "#!/bin/sh\ncat > /dev/null\ntouch stepping\nwhile [ -e hold-step ]; do sleep 0.02; done\necho 7\n";

const KILLED: &str = r#"tool step(n: Int) -> Int via exec "sh tools/step.sh"

workflow gated() -> Int {
  let d = await approval "go" { approvers: role("customs"), quorum: 2, prompt: "Go?" }
  if !d.approved {
    return 0
  }
  step(1)
}
"#;

fn wait_for_file(project: &Project, name: &str) {
    let start = Instant::now();
    while !project.path().join(name).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waiting for {name}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill9(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = child.wait();
}

#[test]
fn a_kill_right_after_an_opening_or_a_decision_leaves_index_and_history_agreeing() {
    for_each_store(|store| {
        let project = Project::new(store).with_env("FLOW_LEASE_MS", "150");
        project.write(
            "flow.toml",
            &format!("{USERS}\n[[notify]]\ncommand = \"sh tools/notify.sh\"\n"),
        );
        project.write("tools/notify.sh", NOTIFY);
        project.write("tools/step.sh", STEP);
        project.write("gated.flow", KILLED);

        // Killed while notifying of the gate it just opened.
        project.write("hold-notify", "");
        let mut running = project
            .command(&["run", "gated.flow", "--as", "ines"])
            .spawn()
            .unwrap();
        wait_for_file(&project, "notifying");
        kill9(&mut running);
        std::fs::remove_file(project.path().join("hold-notify")).unwrap();
        assert_eq!(index_agrees_with_history(&project), 1, "after the opening");
        let run = project.runs()[0]["id"].as_str().unwrap().to_string();

        // One approval of two, then the second, after which the run goes into the step and
        // is killed there.
        std::thread::sleep(Duration::from_millis(300));
        project
            .flowrt(&["approve", &run, "go", "--as", "alice"])
            .expect_code(0);
        assert_eq!(index_agrees_with_history(&project), 1, "after one approval");
        project.write("hold-step", "");
        let mut approving = project
            .command(&["approve", &run, "go", "--as", "bob"])
            .spawn()
            .unwrap();
        wait_for_file(&project, "stepping");
        kill9(&mut approving);
        std::fs::remove_file(project.path().join("hold-step")).unwrap();
        assert_eq!(index_agrees_with_history(&project), 0, "after the decision");

        // Resumed: the decision stands, the run completes, the index stays empty.
        std::thread::sleep(Duration::from_millis(300));
        project
            .flowrt(&["approve", &run, "go", "--as", "bob"])
            .expect_code(3)
            .expect_stderr("already decided");
        project.flowrt(&["worker", "--once"]).expect_code(0);
        assert_eq!(project.status(&run)["status"], "completed");
        assert_eq!(index_agrees_with_history(&project), 0, "after resuming");
    });
}

// ---------------------------------------------------------------------------------------------
// A database from before the index
// ---------------------------------------------------------------------------------------------

/// Takes the database back to schema 8, the one before the gate index: the table and the
/// setting that says its backfill is done are gone, the runs keep waiting at their gates.
fn make_schema_8(project: &Project) {
    let db = project.db();
    db.execute("DROP TABLE gates", &[]);
    // Migration 20's column of `runs` (the gates' columns went with the table).
    db.execute("DROP INDEX IF EXISTS runs_needing_attention", &[]);
    db.execute("ALTER TABLE runs DROP COLUMN attention", &[]);
    db.execute(
        "DELETE FROM settings WHERE key = 'gate_index_complete'",
        &[],
    );
    if db.is_postgres() {
        db.execute("UPDATE flow_schema SET version = 8", &[]);
    } else {
        db.execute("PRAGMA user_version = 8", &[]);
    }
}

#[test]
fn a_database_from_before_the_index_has_its_open_gates_indexed_once() {
    for_each_store(|store| {
        let project = gate_project(store);
        let escalated = project.start("release", SHIPMENT);
        let quorum = project.start("two", SHIPMENT);
        let input = project.start("ask", r#"{"id": "S9"}"#);
        let done = project.start("release", SHIPMENT);
        project.flowrt(&["clock", "advance", "25h"]).expect_code(0);
        project
            .flowrt(&["approve", &quorum, "double_check", "--as", "alice"])
            .expect_code(0);
        project
            .flowrt(&["approve", &done, "release_signoff", "--as", "bob"])
            .expect_code(0);
        let before = project.listed();
        assert_eq!(before.len(), 3);
        let context =
            &before[&(escalated.clone(), "release_signoff".to_string())]["context_schema"];
        assert_eq!(
            context["x-order"],
            serde_json::json!(["id", "value"]),
            "{context}"
        );
        make_schema_8(&project);

        // The first `flowrt` to open the database migrates it and indexes the three gates
        // from the runs' checkpoints and histories, exactly as they were.
        let after = project.listed();
        assert_eq!(after, before);
        assert_eq!(index_agrees_with_history(&project), 3);
        let marked = project.db().query_text(
            "SELECT value FROM settings WHERE key = 'gate_index_complete'",
            &[],
        );
        assert!(marked.is_some(), "the backfill is recorded as done");

        // Once: a row the backfill would write again is not written again.
        project
            .db()
            .execute("DELETE FROM gates WHERE run = $1", &[&input]);
        assert_eq!(project.listed().len(), 2, "the backfill does not run again");

        // Deciding still works on a backfilled gate, with its escalation and its quorum.
        project
            .flowrt(&["approve", &escalated, "release_signoff", "--as", "omar"])
            .expect_code(0);
        project
            .flowrt(&["approve", &quorum, "double_check", "--as", "alice"])
            .expect_code(3)
            .expect_stderr("already approved");
        project
            .flowrt(&["approve", &quorum, "double_check", "--as", "bob"])
            .expect_code(0);
        assert_eq!(project.status(&escalated)["output"], "released by omar");
        assert_eq!(
            project.status(&quorum)["output"],
            "approved=true by alice, bob"
        );
    });
}

/// Migration 13 adds the schema of a gate's context to the gate index: a gate opened before
/// keeps its row, with no such schema (the inbox shows its context as it did) and the same
/// view hash, and is decided as before; a gate opened after has one.
#[test]
fn a_gate_indexed_before_migration_13_keeps_its_row_and_gates_after_it_get_a_context_schema() {
    for_each_store(|store| {
        let project = gate_project(store);
        let old = project.start("release", SHIPMENT);
        let key = (old.clone(), "release_signoff".to_string());
        let opened = project.listed()[&key].clone();
        assert_eq!(opened["context_schema"]["title"], "Shipment", "{opened}");

        // Taken back to 12: the column is gone and the row was written without it.
        let db = project.db();
        db.execute("ALTER TABLE gates DROP COLUMN context_schema", &[]);
        db.drop_columns_added_after(12);
        if db.is_postgres() {
            db.execute("UPDATE flow_schema SET version = 12", &[]);
        } else {
            db.execute("PRAGMA user_version = 12", &[]);
        }
        let migrated = project.listed()[&key].clone();
        assert!(migrated["context_schema"].is_null(), "{migrated}");
        assert_eq!(migrated["view_hash"], opened["view_hash"]);
        assert_eq!(migrated["context"], opened["context"]);

        let new = project.start("release", SHIPMENT);
        let listed = project.listed();
        assert_eq!(
            listed[&(new, "release_signoff".to_string())]["context_schema"],
            opened["context_schema"]
        );
        project
            .flowrt(&["approve", &old, "release_signoff", "--as", "alice"])
            .expect_code(0);
        assert_eq!(project.status(&old)["output"], "released by alice");
    });
}

/// A run pinned to an artifact of bytecode format 3 (before gate contexts were recorded)
/// still opens its gate, with no context schema; the same program built today shows the
/// context's fields in the order written. The context and the view hash are the same.
#[test]
fn a_format_3_artifact_opens_its_gate_without_a_context_schema() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write_bytes(
            "old.flowb",
            include_bytes!("../../compiler/tests/fixtures/format3.flowb"),
        );
        project.write(
            "new.flow",
            include_str!("../../compiler/tests/fixtures/format3.flow"),
        );
        let input = r#"{"c": {"claimant": "Ana", "amount": 40}, "round": 1}"#;
        let mut gates = Vec::new();
        for program in ["old.flowb", "new.flow"] {
            let out = project.flowrt(&[
                "run",
                program,
                "--workflow",
                "settle",
                "--as",
                "ines",
                "--input",
                input,
                "--json",
            ]);
            out.expect_code(10);
            let run = out.json()["id"].as_str().unwrap().to_string();
            gates.push(project.listed()[&(run, "payout".to_string())].clone());
        }
        let (old, new) = (&gates[0], &gates[1]);
        assert!(old["context_schema"].is_null(), "{old}");
        assert_eq!(
            new["context_schema"]["x-order"],
            serde_json::json!(["zeta", "alpha", "claim"]),
            "{new}"
        );
        assert_eq!(
            new["context_schema"]["properties"]["claim"]["x-order"],
            serde_json::json!(["claimant", "amount"]),
            "{new}"
        );
        assert_eq!(old["context"], new["context"]);
        assert_eq!(old["view_hash"], new["view_hash"]);
    });
}

// ---------------------------------------------------------------------------------------------
// A database from before the deciders' index and the running counts (schema 13)
// ---------------------------------------------------------------------------------------------

#[test]
fn a_database_at_schema_13_gains_who_may_decide_and_the_running_counts() {
    for_each_store(|kind| {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut store) = store_with_three_runs(kind, dir.path());
        let mut escalated = row("r1", "g", 100);
        escalated.escalated = true;
        store
            .commit(&[
                step(
                    "r1",
                    Some("approval g"),
                    Some(GateChange::Open(escalated)),
                    100,
                ),
                step(
                    "r2",
                    Some("approval g"),
                    Some(GateChange::Open(row("r2", "g", 101))),
                    101,
                ),
            ])
            .unwrap();
        drop(store);

        // Taken back to 13: no deciders' table, no counts, no triggers keeping them.
        if db.is_postgres() {
            db.execute("DROP FUNCTION flow_count_runs() CASCADE", &[]);
            db.execute("DROP FUNCTION flow_count_gates() CASCADE", &[]);
        } else {
            for trigger in ["runs_counted_in", "runs_counted_moved", "runs_counted_out"] {
                db.execute(&format!("DROP TRIGGER {trigger}"), &[]);
            }
            for trigger in [
                "gates_counted_in",
                "gates_counted_moved",
                "gates_counted_out",
            ] {
                db.execute(&format!("DROP TRIGGER {trigger}"), &[]);
            }
        }
        for table in ["gate_deciders", "run_counts", "gate_counts"] {
            db.execute(&format!("DROP TABLE {table}"), &[]);
        }
        db.drop_columns_added_after(13);
        if db.is_postgres() {
            db.execute("UPDATE flow_schema SET version = 13", &[]);
        } else {
            db.execute("PRAGMA user_version = 13", &[]);
        }

        // Opened again: the open gates' deciders and the counts are filled from the rows.
        let mut store = store::open(db.spec()).unwrap();
        let found = |store: &mut Box<dyn store::Store>, user: &str, role: &str| {
            let gates = store.gates_for(user, &[role.to_string()]).unwrap();
            gates.iter().map(|g| g.run.clone()).collect::<Vec<_>>()
        };
        assert_eq!(
            found(&mut store, "omar", "ops"),
            ["r1"],
            "the escalation fired at r1"
        );
        assert_eq!(found(&mut store, "ana", "finance"), ["r1", "r2"]);
        let mut counts = store.count_runs().unwrap();
        counts.sort_by_key(|(_, status, _)| status.as_str());
        assert_eq!(
            counts,
            [
                ("w".into(), RunStatus::Runnable, 1),
                ("w".into(), RunStatus::Waiting, 2)
            ]
        );
        assert_eq!(store.gate_counts().unwrap().approvals, 2);

        // And kept from then on.
        store.commit(&[step("r2", None, None, 110)]).unwrap();
        assert_eq!(found(&mut store, "ana", "finance"), ["r1"]);
        assert_eq!(store.gate_counts().unwrap().approvals, 1);
        let waiting = store.count_runs().unwrap();
        assert!(
            waiting.contains(&("w".into(), RunStatus::Waiting, 1)),
            "{waiting:?}"
        );
    });
}
