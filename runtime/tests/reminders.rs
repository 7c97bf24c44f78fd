//! Reminders on open gates (`remind: D`, spec/runtime.md, "Human steps"), through the real
//! `flowrt` on both stores and a real notification hook (a child process): the approvers
//! are notified again every `D` while the gate is open — also after it escalated, naming the
//! escalation — each reminder recorded as `gate_reminded`; they stop once it is decided, and
//! a clock that jumps sends one reminder, not a burst.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, for_each_store, of_kind};

const CONFIG: &str = r#"
[users.ana]
roles = ["finance"]

[users.omar]
roles = ["ops"]

[users.ines]
roles = ["clerk"]

# Each message in a file of its own: hooks may run side by side.
[[notify]]
command = "cat > \"$(mktemp received.XXXXXX)\""
"#;

const PROGRAM: &str = r#"workflow pay(amount: Int) -> String {
  let d = await approval "pay" {
    approvers: role("finance"),
    prompt: "Pay ${amount}?",
    remind: 1d,
    escalate: role("ops") after 2d,
    timeout: 10d,
  }
  if d.approved { "paid by ${d.by}" } else { "held" }
}
"#;

fn project(store: &common::Store) -> Project {
    let project = Project::new(store);
    project.write("flow.toml", CONFIG);
    project.write("pay.flow", PROGRAM);
    project
}

fn start(project: &Project) -> String {
    project
        .flowrt(&[
            "run",
            "pay.flow",
            "--test-clock",
            "--as",
            "ines",
            "--input",
            r#"{"amount": 120}"#,
        ])
        .expect_code(10);
    project.runs()[0]["id"].as_str().unwrap().to_string()
}

/// The messages the hook received (a file each), the opening first.
fn received(project: &Project) -> Vec<serde_json::Value> {
    let mut messages: Vec<serde_json::Value> = std::fs::read_dir(project.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("received."))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    // The opening first (the others' order is the hooks' own).
    messages.sort_by_key(|m| m["event"] != "gate_opened");
    messages
}

fn reminders(project: &Project, run: &str) -> Vec<serde_json::Value> {
    of_kind(&project.history(run), "gate_reminded")
        .into_iter()
        .cloned()
        .collect()
}

#[test]
fn an_open_gate_reminds_its_approvers_every_interval_until_it_is_decided() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project);
        assert_eq!(received(&project).len(), 1, "the opening is announced");
        assert!(reminders(&project, &run).is_empty());

        project.flowrt(&["clock", "advance", "1d"]).expect_code(0);
        let sent = reminders(&project, &run);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["data"]["to"], "role finance");
        assert_eq!(sent[0]["data"]["reminder"], 1);
        let messages = received(&project);
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(messages[1]["event"], "gate_reminded", "{}", messages[1]);
        assert_eq!(messages[1]["gate"], "pay");
        assert_eq!(messages[1]["prompt"], "Pay 120?");

        // Day 2: the escalation and the second reminder, which names the escalation too.
        project.flowrt(&["clock", "advance", "1d"]).expect_code(0);
        let sent = reminders(&project, &run);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(
            sent[1]["data"]["to"],
            "role finance or, escalated, role ops"
        );
        let history = project.history(&run);
        assert_eq!(of_kind(&history, "gate_escalated").len(), 1);
        let mut events: Vec<String> = received(&project)
            .iter()
            .map(|m| m["event"].as_str().unwrap().to_string())
            .collect();
        // Hooks run side by side: what matters is that each was announced once.
        events.sort();
        assert_eq!(
            events,
            [
                "gate_escalated",
                "gate_opened",
                "gate_reminded",
                "gate_reminded"
            ]
        );

        // Decided: no more reminders.
        project
            .flowrt(&["approve", &run, "pay", "--as", "ana"])
            .expect_code(0);
        project.flowrt(&["clock", "advance", "3d"]).expect_code(0);
        assert_eq!(reminders(&project, &run).len(), 2);
        assert_eq!(received(&project).len(), 4);
        assert_eq!(project.status(&run)["output"], "paid by ana");
    });
}

#[test]
fn a_clock_that_jumps_sends_one_reminder_not_a_burst() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project);
        project.flowrt(&["clock", "advance", "1h"]).expect_code(0);
        assert!(reminders(&project, &run).is_empty(), "not due yet");
        // Four days pass while nothing drives the run: one reminder, numbered for the
        // intervals that passed, then the next a day later.
        project.flowrt(&["clock", "advance", "4d"]).expect_code(0);
        let sent = reminders(&project, &run);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["data"]["reminder"], 4);
        project.flowrt(&["clock", "advance", "1d"]).expect_code(0);
        let sent = reminders(&project, &run);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[1]["data"]["reminder"], 5);
        assert_eq!(project.status(&run)["status"], "waiting");
    });
}

#[test]
fn a_first_reminder_can_come_sooner_than_the_interval() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write("flow.toml", CONFIG);
        project.write(
            "pay.flow",
            &PROGRAM.replace("remind: 1d,", "remind: 1d after 4h,"),
        );
        let run = start(&project);
        project.flowrt(&["clock", "advance", "3h"]).expect_code(0);
        assert!(reminders(&project, &run).is_empty(), "not due before 4 h");
        project.flowrt(&["clock", "advance", "1h"]).expect_code(0);
        let sent = reminders(&project, &run);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["data"]["reminder"], 1);
        // Then every day from there: at 28 h, not at 24 h.
        project.flowrt(&["clock", "advance", "20h"]).expect_code(0);
        assert_eq!(reminders(&project, &run).len(), 1);
        project.flowrt(&["clock", "advance", "4h"]).expect_code(0);
        let sent = reminders(&project, &run);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[1]["data"]["reminder"], 2);
    });
}
