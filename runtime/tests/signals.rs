//! Signals into running runs (spec/statements.md, "Signals"), through the real binaries on
//! both stores: queued from the start of the run and taken in order, who may send them
//! checked and refusals kept in the trail, values validated, a `timeout` around the wait, the
//! HTTP API with user and system tokens, and `kill -9` of the worker while signals arrive.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::server::Served;
use common::{Project, for_each_store, of_kind};
use serde_json::json;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[users.sam]
roles = ["support"]

[users.ann]
roles = ["finance"]
"#;

const SUBSCRIPTION: &str = r#"type Customer = { id: String, plan: String }

workflow subscription(c: Customer) -> String
  accepts cancel: String from role("support") or system("billing"),
    renewed: Int from system("billing"),
    note: String from user("ann")
{
  let months = await signal renewed
  let first = await signal note
  let second = await signal note
  let why = await signal cancel
  "${c.id}: ${months} months, ${first}/${second}, cancelled: ${why}"
}
"#;

fn project(store: &common::Store) -> Project {
    let project = Project::new(store);
    project.write("flow.toml", CONFIG);
    project.write("sub.flow", SUBSCRIPTION);
    project
}

/// Starts a subscription run as sam; it waits for `renewed`.
fn start(project: &Project) -> String {
    let out = project.flowrt(&[
        "run",
        "sub.flow",
        "--as",
        "sam",
        "--input",
        r#"{"c": {"id": "c1", "plan": "pro"}}"#,
    ]);
    out.expect_code(10)
        .expect_stdout("waiting (signal renewed)");
    project.runs()[0]["id"].as_str().unwrap().to_string()
}

fn numbers(history: &[serde_json::Value], kind: &str) -> Vec<(String, i64)> {
    of_kind(history, kind)
        .iter()
        .map(|e| {
            (
                e["data"]["signal"].as_str().unwrap().to_string(),
                e["data"]["number"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn signals_sent_before_the_run_waits_are_queued_and_taken_in_the_order_sent() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project);
        // None of these is awaited yet: they are queued, not lost.
        project
            .flowrt(&[
                "signal",
                &run,
                "cancel",
                "--value",
                r#""too expensive""#,
                "--as",
                "sam",
            ])
            .expect_code(0)
            .expect_stdout("#1 queued");
        project
            .flowrt(&["signal", &run, "note", "--value", r#""one""#, "--as", "ann"])
            .expect_code(0);
        project
            .flowrt(&["signal", &run, "note", "--value", r#""two""#, "--as", "ann"])
            .expect_code(0);
        assert_eq!(project.status(&run)["status"], "waiting");
        // The one it waits for wakes it; it then takes the queued ones in order.
        project
            .flowrt(&[
                "signal", &run, "renewed", "--value", "12", "--system", "billing",
            ])
            .expect_code(0)
            .expect_stdout("is now completed");
        let status = project.status(&run);
        assert_eq!(
            status["output"], "c1: 12 months, one/two, cancelled: too expensive",
            "{status}"
        );
        let history = project.history(&run);
        assert_eq!(
            numbers(&history, "signal_received"),
            [
                ("cancel".into(), 1),
                ("note".into(), 2),
                ("note".into(), 3),
                ("renewed".into(), 4)
            ]
        );
        assert_eq!(
            numbers(&history, "signal_taken"),
            [
                ("renewed".into(), 4),
                ("note".into(), 2),
                ("note".into(), 3),
                ("cancel".into(), 1)
            ]
        );
        let senders: Vec<&str> = of_kind(&history, "signal_received")
            .iter()
            .map(|e| e["data"]["by"].as_str().unwrap())
            .collect();
        assert_eq!(senders, ["sam", "ann", "ann", "system:billing"]);
        // Every signal is in the audit trail too, and the trail verifies.
        let audit = project.flowrt(&["audit", "verify"]);
        audit.expect_code(0);
        let export = project.flowrt(&["audit", "export"]);
        export.expect_code(0);
        assert_eq!(
            export.all().matches("signal_received").count(),
            4,
            "{}",
            export.all()
        );
        // A finished run takes no more signals, and nothing is recorded.
        project
            .flowrt(&[
                "signal",
                &run,
                "cancel",
                "--value",
                r#""again""#,
                "--as",
                "sam",
            ])
            .expect_code(3)
            .expect_stderr("has already completed");
        assert_eq!(of_kind(&project.history(&run), "signal_received").len(), 4);
    });
}

#[test]
fn a_sender_the_workflow_does_not_name_is_refused_and_the_refusal_is_in_the_trail() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project);
        // ann holds no role `support`; sam is not system billing nor ann.
        project
            .flowrt(&["signal", &run, "cancel", "--value", r#""x""#, "--as", "ann"])
            .expect_code(3)
            .expect_stderr("only role(\"support\") or system(\"billing\") may");
        project
            .flowrt(&["signal", &run, "renewed", "--value", "1", "--as", "sam"])
            .expect_code(3);
        project
            .flowrt(&[
                "signal", &run, "note", "--value", r#""x""#, "--system", "billing",
            ])
            .expect_code(3);
        // A value that does not fit, a signal the workflow does not accept, an unknown user.
        project
            .flowrt(&[
                "signal",
                &run,
                "renewed",
                "--value",
                r#""soon""#,
                "--system",
                "billing",
            ])
            .expect_code(3)
            .expect_stderr("does not fit Int: $: expected Int");
        project
            .flowrt(&["signal", &run, "pause", "--as", "sam"])
            .expect_code(3)
            .expect_stderr("it accepts `cancel`, `renewed`, `note`");
        project
            .flowrt(&[
                "signal", &run, "cancel", "--value", r#""x""#, "--as", "mallory",
            ])
            .expect_code(2)
            .expect_stderr("unknown user `mallory`");
        project
            .flowrt(&["signal", &run, "cancel", "--value", "{", "--as", "sam"])
            .expect_code(2);
        project
            .flowrt(&["signal", "no-such-run", "cancel", "--as", "sam"])
            .expect_code(2)
            .expect_stderr("no run with id no-such-run");
        let history = project.history(&run);
        assert!(
            of_kind(&history, "signal_received").is_empty(),
            "{history:?}"
        );
        let refused = of_kind(&history, "request_refused");
        assert_eq!(refused.len(), 3, "{history:?}");
        assert_eq!(refused[0]["data"]["by"], "ann");
        assert_eq!(refused[2]["data"]["by"], "system:billing");
        assert_eq!(project.status(&run)["status"], "waiting");
    });
}

#[test]
fn a_timeout_around_await_signal_ends_the_wait_at_its_deadline() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write(
            "wait.flow",
            r#"workflow wait_for_go() -> String accepts go from role("ops") {
  try {
    timeout 1h {
      await signal go
    }
    "went"
  } catch e {
    "gave up: ${e.kind}"
  }
}
"#,
        );
        project
            .flowrt(&["run", "wait.flow", "--test-clock"])
            .expect_code(10)
            .expect_stdout("(signal go)");
        let run = project.runs()[0]["id"].as_str().unwrap().to_string();
        project.flowrt(&["clock", "advance", "59m"]).expect_code(0);
        assert_eq!(project.status(&run)["status"], "waiting");
        project.flowrt(&["clock", "advance", "2m"]).expect_code(0);
        let status = project.status(&run);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], "gave up: Timeout");
        // A signal without a value (`Unit`), sent now, is refused: the run has finished.
        project
            .flowrt(&["signal", &run, "go", "--as", "ops"])
            .expect_code(3);
    });
}

#[test]
fn over_the_api_users_and_systems_send_signals_and_a_system_token_does_nothing_else() {
    for_each_store(|store| {
        let served = Served::start(store, SUBSCRIPTION, CONFIG, &[]);
        let sam = served.token("sam", &[]);
        let billing = served.create_token(&["--system", "billing"]);
        let (code, body) = served
            .try_request(
                "POST",
                "/api/runs",
                Some(&sam),
                Some(
                    r#"{"workflow": "subscription", "input": {"c": {"id": "c9", "plan": "pro"}}}"#,
                ),
            )
            .unwrap();
        assert_eq!(code, 201, "{body}");
        let run = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let post = |token: &str, name: &str, body: &str| {
            served
                .try_request(
                    "POST",
                    &format!("/api/runs/{run}/signals/{name}"),
                    Some(token),
                    Some(body),
                )
                .unwrap()
        };
        // Queued while the run waits for another signal.
        let (code, body) = post(&sam, "cancel", r#"{"value": "moving"}"#);
        assert_eq!(code, 200, "{body}");
        let sent: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(sent["number"], 1);
        assert_eq!(sent["taken_now"], false);
        // Refused: the wrong sender (403), a value of the wrong type (422), no such signal
        // (404), a body that is not JSON (400).
        let (code, body) = post(&sam, "renewed", r#"{"value": 3}"#);
        assert_eq!(code, 403, "{body}");
        let (code, body) = post(&billing, "renewed", r#"{"value": "three"}"#);
        assert_eq!(code, 422, "{body}");
        assert!(body.contains("expected Int"), "{body}");
        let (code, _) = post(&billing, "pause", "{}");
        assert_eq!(code, 404);
        let (code, _) = post(&billing, "renewed", "{\"value\": ");
        assert_eq!(code, 400);
        // A system token sends signals and nothing else.
        for (method, path) in [
            ("GET", "/api/runs".to_string()),
            ("GET", format!("/api/runs/{run}")),
            ("POST", format!("/api/runs/{run}/cancel")),
            ("GET", "/api/decisions".to_string()),
        ] {
            let (code, body) = served
                .try_request(method, &path, Some(&billing), Some("{}"))
                .unwrap();
            assert_eq!(code, 403, "{method} {path}: {body}");
            assert!(body.contains("only sends signals"), "{body}");
        }
        // The one the run waits for: taken at once, and the run goes on to the next wait.
        let (code, body) = post(&billing, "renewed", r#"{"value": 3}"#);
        assert_eq!(code, 200, "{body}");
        let sent: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(sent["taken_now"], true, "{sent}");
        assert_eq!(sent["run_status"], "waiting", "{sent}");
        let history = served
            .flowrt()
            .args(["history", &run, "--json"])
            .output()
            .unwrap();
        let history: Vec<serde_json::Value> = serde_json::from_slice(&history.stdout).unwrap();
        assert_eq!(numbers(&history, "signal_received").len(), 2);
        let refused = of_kind(&history, "request_refused");
        assert_eq!(refused.len(), 2, "{history:?}");
        assert_eq!(refused[0]["data"]["status"], 403);
        assert_eq!(refused[1]["data"]["status"], 422);
        let waiting = served
            .flowrt()
            .args(["status", &run, "--json"])
            .output()
            .unwrap();
        let waiting: serde_json::Value = serde_json::from_slice(&waiting.stdout).unwrap();
        assert_eq!(waiting["waiting_on"], "signal note", "{waiting}");
    });
}

/// `while` over twenty signals, with a tool call after each; the worker is killed with
/// SIGKILL again and again while the signals arrive. Every signal is taken exactly once, in
/// order, and the sum is right.
#[test]
fn a_worker_killed_again_and_again_while_signals_arrive_takes_each_exactly_once() {
    for_each_store(|store| {
        let project = Project::new(store).with_env("FLOW_LEASE_MS", "200");
        project.write("flow.toml", "[users.ops]\nroles = [\"ops\"]\n");
        project.write(
            "tools/double.sh",
            "#!/bin/sh\nn=$(cat | sed 's/[^0-9]//g')\nsleep 0.05\necho $((n * 2))\n",
        );
        project.write(
            "sum.flow",
            r#"tool double(n: Int) -> Int via exec "sh tools/double.sh"

workflow sum() -> Int accepts add: Int from role("ops") {
  var total = 0
  var count = 0
  while count < 20 {
    let n = await signal add
    total = total + double(n)
    count = count + 1
  }
  total
}
"#,
        );
        project.flowrt(&["run", "sum.flow"]).expect_code(10);
        let run = project.runs()[0]["id"].as_str().unwrap().to_string();
        let (worker, kills) =
            add_signals_while_killing_workers(&project, &run, 20, 3, |n| 20 + (n * 37) % 90);
        assert!(kills >= 6);
        drive_to_completion(&project, &run, worker);
        assert_eq!(
            project.status(&run)["output"],
            json!((1..=20).sum::<i64>() * 2)
        );
        let history = project.history(&run);
        let taken: Vec<i64> = numbers(&history, "signal_taken")
            .iter()
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(taken, (1..=20).collect::<Vec<_>>());
        assert_eq!(numbers(&history, "signal_received").len(), 20);
    });
}

/// Sends `add` signals 1, 2, … `count` to `run` (queued, `--no-drive`) while a `flowrt
/// worker` drives it, pausing `pause_ms(n)` after signal `n` and killing the worker with
/// SIGKILL after every `kill_every`-th (a new one starts before the next signal). Returns the
/// worker still running, if any, and how many were killed.
fn add_signals_while_killing_workers(
    project: &Project,
    run: &str,
    count: u64,
    kill_every: u64,
    pause_ms: impl Fn(u64) -> u64,
) -> (Option<Child>, usize) {
    let mut worker: Option<Child> = None;
    let mut kills = 0;
    for n in 1..=count {
        if worker.is_none() {
            worker = Some(project.command(&["worker"]).spawn().unwrap());
        }
        let value = n.to_string();
        project
            .flowrt(&[
                "signal",
                run,
                "add",
                "--value",
                &value,
                "--as",
                "ops",
                "--no-drive",
            ])
            .expect_code(0);
        std::thread::sleep(Duration::from_millis(pause_ms(n)));
        if n % kill_every == 0 {
            kill9(&mut worker.take().unwrap());
            kills += 1;
        }
    }
    (worker, kills)
}

/// Starts workers as needed until `run` has completed (within a minute), then kills the last.
fn drive_to_completion(project: &Project, run: &str, mut worker: Option<Child>) {
    let start = Instant::now();
    loop {
        if worker.is_none() {
            worker = Some(project.command(&["worker"]).spawn().unwrap());
        }
        if project.status(run)["status"] == "completed" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(mut child) = worker.take() {
        kill9(&mut child);
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

/// `select` in a loop — a signal adds, another stops, a 150 ms `after` ticks meanwhile — with
/// the worker killed with SIGKILL again and again while the signals arrive: every signal is
/// taken once, in order, by the arm of its name, and the ticks go on between them.
#[test]
fn a_select_in_a_loop_survives_kill_9_and_takes_each_signal_once() {
    for_each_store(|store| {
        let project = Project::new(store).with_env("FLOW_LEASE_MS", "200");
        project.write("flow.toml", "[users.ops]\nroles = [\"ops\"]\n");
        project.write(
            "poll.flow",
            r#"workflow poll() -> Int
  accepts add: Int from role("ops"),
    stop from role("ops")
{
  var total = 0
  var ticks = 0
  var going = true
  while going {
    select {
      signal add as n => { total = total + n },
      signal stop => { going = false },
      after 150ms => { ticks = ticks + 1 },
    }
  }
  audit "ticked" { ticks }
  total
}
"#,
        );
        project
            .flowrt(&["run", "poll.flow", "--max-wait", "0s"])
            .expect_code(10);
        let run = project.runs()[0]["id"].as_str().unwrap().to_string();
        let (worker, _) =
            add_signals_while_killing_workers(&project, &run, 15, 4, |n| 30 + (n * 53) % 120);
        // Nothing for a while: the `after` arm fires, more than once.
        std::thread::sleep(Duration::from_millis(700));
        project
            .flowrt(&["signal", &run, "stop", "--as", "ops", "--no-drive"])
            .expect_code(0);
        drive_to_completion(&project, &run, worker);
        assert_eq!(project.status(&run)["output"], json!((1..=15).sum::<i64>()));
        let history = project.history(&run);
        let taken: Vec<(String, i64)> = numbers(&history, "signal_taken");
        let mut expected: Vec<(String, i64)> = (1..=15).map(|n| ("add".to_string(), n)).collect();
        expected.push(("stop".to_string(), 16));
        assert_eq!(taken, expected);
        // The timer arm fired while nothing came (a select waited 150 ms for nothing).
        let ticked = of_kind(&history, "audit");
        assert!(
            ticked[0]["data"]["ticks"].as_i64().unwrap() >= 1,
            "{ticked:?}"
        );
        assert!(!of_kind(&history, "timer_fired").is_empty());
    });
}

#[test]
fn a_select_waits_for_the_first_of_its_arms_on_the_test_clock() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write("flow.toml", "[users.ops]\nroles = [\"ops\"]\n");
        project.write(
            "first.flow",
            r#"workflow first() -> String accepts go: String from role("ops") {
  select {
    signal go as who => "go from ${who}",
    after 2h => "the later deadline",
    after 1h => "the earlier deadline",
  }
}
"#,
        );
        // Nothing comes: the earlier `after` wins, though it is written second.
        project
            .flowrt(&["run", "first.flow", "--test-clock"])
            .expect_code(10)
            .expect_stdout("(select go until ");
        project.flowrt(&["clock", "advance", "59m"]).expect_code(0);
        let run = project.runs()[0]["id"].as_str().unwrap().to_string();
        assert_eq!(project.status(&run)["status"], "waiting");
        project.flowrt(&["clock", "advance", "2m"]).expect_code(0);
        assert_eq!(project.status(&run)["output"], "the earlier deadline");
        // A signal before the deadline wins.
        project.flowrt(&["start", "first.flow"]).expect_code(0);
        let second = project.runs()[0]["id"].as_str().unwrap().to_string();
        project.flowrt(&["worker", "--once"]).expect_code(0);
        project
            .flowrt(&[
                "signal", &second, "go", "--value", r#""ops""#, "--as", "ops",
            ])
            .expect_code(0)
            .expect_stdout("is now completed");
        assert_eq!(project.status(&second)["output"], "go from ops");
        // The deadlines the signal beat leave no timer behind.
        project.flowrt(&["clock", "advance", "3h"]).expect_code(0);
        assert_eq!(project.status(&second)["output"], "go from ops");
    });
}
