//! Human steps through the real `flowrt` binary: `await approval` and `await input` gates,
//! who may decide them (roles, four-eyes, `allow_self`, quorum, `any(…)`), decisions on
//! finished runs, escalation and time-outs on a test-clock database, the `approvals` listing,
//! the recorded history, notifications to a real webhook on 127.0.0.1 and to a command, and a
//! malformed `flow.toml`. Every refusal must exit 3 with the reason; usage and config errors
//! exit 2; nothing may panic.
#![cfg(unix)]

mod common;

use common::{Out, Project, Store, events, for_each_store, of_kind};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

const EXIT_OK: i32 = 0;
const EXIT_USAGE: i32 = 2;
const EXIT_REFUSED: i32 = 3;
const EXIT_WAITING: i32 = 10;

const HOUR_MS: i64 = 3_600_000;

/// alice, bob and carl hold `customs`; omar `ops_manager` (the escalation role); ines is a
/// clerk who starts runs she may not decide; dave is an auditor.
const USERS: &str = r#"[users.alice]
roles = ["customs"]

[users.bob]
roles = ["customs"]

[users.carl]
roles = ["customs"]

[users.omar]
roles = ["ops_manager"]

[users.ines]
roles = ["clerk"]

[users.dave]
roles = ["auditor"]
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
  if d.approved { "released by ${d.by}: ${d.comment}" } else { "held by ${d.by}: ${d.comment}" }
}

workflow own(s: Shipment) -> String {
  let d = await approval "own_signoff" {
    approvers: role("customs"),
    allow_self: true,
  }
  "approved=${d.approved} by ${d.by}"
}

workflow two(s: Shipment) -> String {
  let d = await approval "double_check" {
    approvers: role("customs"),
    prompt: "Two of you: release ${s.id}?",
    quorum: 2,
  }
  "approved=${d.approved} by ${d.by}: ${d.comment}"
}

workflow three(s: Shipment) -> String {
  let d = await approval "triple_check" {
    approvers: role("customs"),
    quorum: 3,
  }
  "approved=${d.approved} by ${d.by}"
}

workflow patient(s: Shipment) -> String {
  let d = try {
    await approval "slow_signoff" {
      approvers: role("customs"),
      timeout: 48h,
    }
  } catch e {
    return "gave up: ${e.kind}"
  }
  "approved=${d.approved} by ${d.by}"
}

workflow ask(id: String) -> String {
  let s = await input<Shipment> "shipment_details" {
    from: user("alice"),
    prompt: "Details for ${id}?",
  }
  "${s.id} is worth ${s.value}"
}

workflow steps(s: Shipment) -> String {
  let first = await approval "first" { approvers: role("customs") }
  let second = await approval "second" { approvers: role("customs") }
  "first=${first.approved} by ${first.by}; second=${second.approved} by ${second.by}"
}
"#;

/// `any(…)` approvers, in a file of their own so that the other tests do not depend on it.
const ANY_PROGRAM: &str = r#"type Shipment = { id: String, value: Int }

workflow either(s: Shipment) -> String {
  let d = await approval "audit_signoff" {
    approvers: any(role("auditor"), user("ines")),
  }
  "approved=${d.approved} by ${d.by}"
}
"#;

const SHIPMENT: &str = r#"{"s": {"id": "S1", "value": 5}}"#;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A project with the users above, the gate programs, and no notification hooks.
fn project(store: &Store) -> Project {
    project_with(store, USERS)
}

fn project_with(store: &Store, config: &str) -> Project {
    let project = Project::new(store);
    project.write("flow.toml", config);
    project.write("gate.flow", PROGRAM);
    project.write("any.flow", ANY_PROGRAM);
    project
}

impl Project {
    /// Starts `workflow` of `file` as `user` on a test-clock database, drives it to its first
    /// gate (exit 10) and returns the run id.
    fn start_in(&self, file: &str, workflow: &str, user: &str, input: &str) -> String {
        let out = self.flowrt(&[
            "--test-clock",
            "run",
            file,
            "--workflow",
            workflow,
            "--as",
            user,
            "--input",
            input,
            "--json",
        ]);
        out.expect_code(EXIT_WAITING);
        let run = out.json()["id"]
            .as_str()
            .expect("run --json names the run")
            .to_string();
        assert_eq!(self.status(&run)["status"], "waiting");
        run
    }

    fn start(&self, workflow: &str, user: &str) -> String {
        let input = if workflow == "ask" {
            r#"{"id": "S9"}"#
        } else {
            SHIPMENT
        };
        self.start_in("gate.flow", workflow, user, input)
    }

    fn approve(&self, run: &str, gate: &str, user: &str, extra: &[&str]) -> Out {
        let mut args = vec!["approve", run, gate, "--as", user];
        args.extend_from_slice(extra);
        self.flowrt(&args)
    }

    fn reject(&self, run: &str, gate: &str, user: &str, comment: &str) -> Out {
        self.flowrt(&["reject", run, gate, "--as", user, "--comment", comment])
    }

    fn input(&self, run: &str, name: &str, user: &str, value: &str) -> Out {
        self.flowrt(&["input", run, name, "--as", user, "--value", value])
    }

    /// `approvals --json`, for everyone or as `user`.
    fn approvals(&self, user: Option<&str>) -> Vec<serde_json::Value> {
        let mut args = vec!["approvals", "--json"];
        if let Some(user) = user {
            args.extend(["--as", user]);
        }
        let out = self.flowrt(&args);
        out.expect_code(EXIT_OK);
        out.json()
            .as_array()
            .cloned()
            .expect("approvals --json is an array")
    }

    /// The gates of `run` that `approvals --as user` lists.
    fn listed_for(&self, user: &str, run: &str) -> Vec<serde_json::Value> {
        self.approvals(Some(user))
            .into_iter()
            .filter(|p| p["run"] == run)
            .collect()
    }

    fn advance(&self, by: &str) {
        self.flowrt(&["clock", "advance", by])
            .expect_code(EXIT_OK)
            .expect_stdout("the clock is now");
    }

    /// Asserts the run completed with this output.
    fn expect_output(&self, run: &str, output: &str) {
        let status = self.status(run);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], output, "{status}");
    }

    fn expect_waiting_on(&self, run: &str, waiting_on: &str) {
        let status = self.status(run);
        assert_eq!(status["status"], "waiting", "{status}");
        assert_eq!(status["waiting_on"], waiting_on, "{status}");
    }
}

/// The one event of `kind` in a history.
fn one_of<'a>(history: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    let found = of_kind(history, kind);
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} event in {:?}",
        events(history)
    );
    found[0]
}

/// Milliseconds since the epoch of a time printed as `2026-11-24T00:21:49.799Z`.
fn parse_time(text: &str) -> i64 {
    let t = text.strip_suffix('Z').expect("a time ends with Z");
    let (date, clock) = t.split_once('T').expect("a time has a T");
    let num = |s: &str| s.parse::<i64>().expect("a time is made of numbers");
    let d: Vec<i64> = date.split('-').map(num).collect();
    let (hms, ms) = clock.split_once('.').unwrap_or((clock, "0"));
    let c: Vec<i64> = hms.split(':').map(num).collect();
    assert!(d.len() == 3 && c.len() == 3, "not a time: {text:?}");
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + c[0]) * 60 + c[1]) * 60_000 + c[2] * 1000 + num(ms)
}

/// A webhook receiver on 127.0.0.1: passes on (request line, JSON body) of every request
/// as soon as it has read it, then answers `200 OK` after `delay`.
fn webhook_server(delay: Duration) -> (u16, Receiver<(String, serde_json::Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener
        .local_addr()
        .expect("the listener's address")
        .port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            let header_end = loop {
                if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
            };
            let Some(header_end) = header_end else {
                continue;
            };
            let head = String::from_utf8_lossy(&data[..header_end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while data.len() < header_end + length {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
            }
            let body = &data[header_end..data.len().min(header_end + length)];
            let json = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
            let request_line = head.lines().next().unwrap_or_default().to_string();
            let _ = tx.send((request_line, json));
            std::thread::sleep(delay);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, rx)
}

fn received(rx: &Receiver<(String, serde_json::Value)>) -> (String, serde_json::Value) {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the webhook received a POST")
}

// ---------------------------------------------------------------------------------------------
// Who may decide
// ---------------------------------------------------------------------------------------------

#[test]
fn a_user_without_the_role_is_refused_naming_the_role() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        project
            .approve(&run, "release_signoff", "omar", &[])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("omar may not decide `release_signoff`")
            .expect_stderr("role customs");
        project
            .reject(&run, "release_signoff", "ines", "not mine")
            .expect_code(EXIT_REFUSED)
            .expect_stderr("role customs");
        // Nothing was recorded: the gate is still open and the run still waits there.
        project.expect_waiting_on(&run, "approval release_signoff");
        let history = project.history(&run);
        assert!(of_kind(&history, "gate_decided").is_empty(), "{history:?}");
        assert_eq!(project.listed_for("alice", &run).len(), 1);
    });
}

#[test]
fn the_initiator_may_not_approve_their_own_run() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        project
            .approve(&run, "release_signoff", "bob", &["--comment", "mine"])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("four-eyes")
            .expect_stderr("allow_self");
        project.expect_waiting_on(&run, "approval release_signoff");
        // Another holder of the role may.
        project
            .approve(
                &run,
                "release_signoff",
                "alice",
                &["--comment", "looks fine"],
            )
            .expect_code(EXIT_OK);
        project.expect_output(&run, "released by alice: looks fine");
    });
}

#[test]
fn allow_self_lets_the_initiator_approve() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("own", "bob");
        assert_eq!(
            project.listed_for("bob", &run).len(),
            1,
            "allow_self: the initiator may decide, so it is listed for them"
        );
        project
            .approve(&run, "own_signoff", "bob", &[])
            .expect_code(EXIT_OK);
        project.expect_output(&run, "approved=true by bob");
    });
}

#[test]
fn an_unknown_user_is_refused() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        project
            .approve(&run, "release_signoff", "zed", &[])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("unknown user `zed`");
        project
            .reject(&run, "release_signoff", "zed", "no")
            .expect_code(EXIT_REFUSED)
            .expect_stderr("unknown user `zed`");
        let ask = project.start("ask", "bob");
        project
            .input(
                &ask,
                "shipment_details",
                "zed",
                r#"{"id": "S9", "value": 3}"#,
            )
            .expect_code(EXIT_REFUSED)
            .expect_stderr("unknown user `zed`");
        project
            .flowrt(&["approvals", "--as", "zed"])
            .expect_code(EXIT_USAGE)
            .expect_stderr("unknown user `zed`");
        project.expect_waiting_on(&run, "approval release_signoff");
        project.expect_waiting_on(&ask, "input shipment_details");
    });
}

#[test]
fn an_unknown_user_may_not_start_or_cancel_runs() {
    for_each_store(|store| {
        let project = project(store);
        let out = project.flowrt(&[
            "--test-clock",
            "run",
            "gate.flow",
            "--workflow",
            "release",
            "--as",
            "zed",
            "--input",
            SHIPMENT,
        ]);
        assert!(
            out.code == EXIT_USAGE || out.code == EXIT_REFUSED,
            "run --as zed: exit {}\n{}{}",
            out.code,
            out.stdout,
            out.stderr
        );
        out.expect_stderr("unknown user `zed`");
        assert!(project.approvals(None).is_empty(), "no run was started");

        let run = project.start("release", "bob");
        let out = project.flowrt(&["cancel", &run, "--as", "zed"]);
        assert!(
            out.code == EXIT_USAGE || out.code == EXIT_REFUSED,
            "cancel --as zed: exit {}\n{}{}",
            out.code,
            out.stdout,
            out.stderr
        );
        out.expect_stderr("unknown user `zed`");
        project.expect_waiting_on(&run, "approval release_signoff");
    });
}

#[test]
fn reject_needs_a_comment() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        project
            .flowrt(&["reject", &run, "release_signoff", "--as", "alice"])
            .expect_code(EXIT_USAGE)
            .expect_stderr("--comment");
        project
            .reject(&run, "release_signoff", "alice", "   ")
            .expect_code(EXIT_USAGE)
            .expect_stderr("--comment");
        project.expect_waiting_on(&run, "approval release_signoff");
    });
}

#[test]
fn a_decision_at_the_wrong_gate_is_refused() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        project
            .approve(&run, "no_such_gate", "alice", &[])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("release_signoff");
        project
            .input(&run, "release_signoff", "alice", "1")
            .expect_code(EXIT_REFUSED);
        let ask = project.start("ask", "bob");
        project
            .approve(&ask, "shipment_details", "alice", &[])
            .expect_code(EXIT_REFUSED);
        project
            .approve("r-no-such-run", "release_signoff", "alice", &[])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("r-no-such-run");
        project.expect_waiting_on(&run, "approval release_signoff");
        project.expect_waiting_on(&ask, "input shipment_details");
    });
}

// ---------------------------------------------------------------------------------------------
// Decisions: approve, reject, repeats, finished runs, --no-drive
// ---------------------------------------------------------------------------------------------

#[test]
fn approve_drives_the_run_to_its_end_with_the_decision() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        project
            .approve(
                &run,
                "release_signoff",
                "alice",
                &["--comment", "papers ok"],
            )
            .expect_code(EXIT_OK)
            .expect_stdout("completed");
        project.expect_output(&run, "released by alice: papers ok");
        assert!(
            project.approvals(None).is_empty(),
            "a decided gate is no longer pending"
        );
    });
}

#[test]
fn reject_takes_the_rejected_path() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        project
            .reject(&run, "release_signoff", "carl", "seal is broken")
            .expect_code(EXIT_OK);
        project.expect_output(&run, "held by carl: seal is broken");
        let history = project.history(&run);
        let decided = one_of(&history, "gate_decided");
        assert_eq!(decided["data"]["approved"], false);
        assert_eq!(decided["data"]["by"], "carl");
        assert_eq!(decided["data"]["comment"], "seal is broken");
    });
}

#[test]
fn the_initiator_may_reject_their_own_run() {
    for_each_store(|store| {
        // Four-eyes guards approvals only: withdrawing one's own request is allowed.
        let project = project(store);
        let run = project.start("release", "bob");
        project
            .reject(&run, "release_signoff", "bob", "sent by mistake")
            .expect_code(EXIT_OK);
        project.expect_output(&run, "held by bob: sent by mistake");
    });
}

#[test]
fn no_drive_leaves_the_run_for_a_worker_and_a_second_decision_is_refused() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        project
            .approve(
                &run,
                "release_signoff",
                "alice",
                &["--comment", "ok", "--no-drive"],
            )
            .expect_code(EXIT_OK)
            .expect_stdout("worker");
        let status = project.status(&run);
        assert_eq!(status["status"], "runnable", "{status}");
        // The gate is decided: a second decision, either way, is refused and names the first.
        project
            .reject(&run, "release_signoff", "carl", "too late")
            .expect_code(EXIT_REFUSED)
            .expect_stderr("already decided by alice")
            .expect_stderr("first decision stands");
        project
            .approve(&run, "release_signoff", "carl", &[])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("already decided by alice");
        project.flowrt(&["worker", "--once"]).expect_code(EXIT_OK);
        project.expect_output(&run, "released by alice: ok");
        let history = project.history(&run);
        one_of(&history, "gate_decided");
    });
}

#[test]
fn a_second_decision_on_a_decided_gate_is_refused_while_the_run_waits_on() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("steps", "bob");
        project
            .approve(&run, "first", "alice", &[])
            .expect_code(EXIT_OK);
        project.expect_waiting_on(&run, "approval second");
        project
            .reject(&run, "first", "carl", "I disagree")
            .expect_code(EXIT_REFUSED)
            .expect_stderr("`first`");
        project
            .approve(&run, "second", "carl", &[])
            .expect_code(EXIT_OK);
        project.expect_output(&run, "first=true by alice; second=true by carl");
        let history = project.history(&run);
        assert_eq!(of_kind(&history, "gate_decided").len(), 2, "{history:?}");
    });
}

#[test]
fn a_repeated_decision_names_the_first_even_when_the_run_has_moved_on() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("steps", "bob");
        project
            .approve(&run, "first", "alice", &[])
            .expect_code(EXIT_OK);
        project.expect_waiting_on(&run, "approval second");
        project
            .reject(&run, "first", "carl", "I disagree")
            .expect_code(EXIT_REFUSED)
            .expect_stderr("already decided by alice")
            .expect_stderr("first decision stands");
    });
}

#[test]
fn racing_decisions_on_one_gate_apply_exactly_one() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "ines");
        let racers: Vec<_> = ["alice", "bob", "carl"]
            .into_iter()
            .map(|user| {
                let child = project
                    .command(&[
                        "approve",
                        &run,
                        "release_signoff",
                        "--as",
                        user,
                        "--comment",
                        user,
                    ])
                    .spawn()
                    .expect("flowrt starts");
                (user, child)
            })
            .collect();
        let mut winners = Vec::new();
        for (user, child) in racers {
            let output = child.wait_with_output().expect("flowrt ends");
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(!stderr.contains("panicked"), "{stderr}");
            match output.status.code() {
                Some(EXIT_OK) => winners.push(user),
                Some(EXIT_REFUSED) => {}
                other => panic!("{user}: unexpected exit {other:?}: {stderr}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one decision wins: {winners:?}");
        let winner = winners[0];
        project.expect_output(&run, &format!("released by {winner}: {winner}"));
        let history = project.history(&run);
        assert_eq!(one_of(&history, "gate_decided")["data"]["by"], winner);
    });
}

#[test]
fn simultaneous_approvals_on_a_quorum_gate_all_count() {
    for_each_store(|store| {
        let project = project(store);
        for _ in 0..5 {
            let run = project.start("three", "ines");
            let approvers: Vec<_> = ["alice", "bob", "carl"]
                .into_iter()
                .map(|user| {
                    project
                        .command(&["approve", &run, "triple_check", "--as", user])
                        .spawn()
                        .expect("flowrt starts")
                })
                .collect();
            for child in approvers {
                let output = child.wait_with_output().expect("flowrt ends");
                assert_eq!(
                    output.status.code(),
                    Some(EXIT_OK),
                    "{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let status = project.status(&run);
            assert_eq!(status["status"], "completed", "{status}");
            let by = status["output"].as_str().expect("a String output");
            assert!(
                by.contains("alice") && by.contains("bob") && by.contains("carl"),
                "{by}"
            );
        }
    });
}

#[test]
fn decisions_on_a_completed_run_are_refused() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        project
            .approve(&run, "release_signoff", "alice", &[])
            .expect_code(EXIT_OK);
        project
            .approve(&run, "release_signoff", "carl", &[])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("completed");
        project
            .reject(&run, "release_signoff", "carl", "no")
            .expect_code(EXIT_REFUSED)
            .expect_stderr("completed");
        project.expect_output(&run, "released by alice: ");
    });
}

#[test]
fn decisions_on_a_cancelled_run_are_refused() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        project
            .flowrt(&["cancel", &run, "--as", "bob"])
            .expect_code(EXIT_OK);
        project
            .approve(&run, "release_signoff", "alice", &[])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("cancelled");
        let ask = project.start("ask", "bob");
        project
            .flowrt(&["cancel", &ask, "--as", "bob"])
            .expect_code(EXIT_OK);
        project
            .input(
                &ask,
                "shipment_details",
                "alice",
                r#"{"id": "S9", "value": 3}"#,
            )
            .expect_code(EXIT_REFUSED)
            .expect_stderr("cancelled");
        assert_eq!(project.status(&run)["status"], "cancelled");
        assert!(project.approvals(None).is_empty());
    });
}

// ---------------------------------------------------------------------------------------------
// await input<T>
// ---------------------------------------------------------------------------------------------

#[test]
fn input_of_the_wrong_type_is_refused_with_the_json_path() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("ask", "bob");
        project
            .input(
                &run,
                "shipment_details",
                "alice",
                r#"{"id": "S9", "value": "five"}"#,
            )
            .expect_code(EXIT_REFUSED)
            .expect_stderr("$.value")
            .expect_stderr("Int");
        project
            .input(&run, "shipment_details", "alice", r#"{"id": "S9"}"#)
            .expect_code(EXIT_REFUSED)
            .expect_stderr("$.value");
        project
            .input(&run, "shipment_details", "alice", "[1, 2]")
            .expect_code(EXIT_REFUSED)
            .expect_stderr("Shipment");
        // Not JSON at all is a usage error, not a refusal.
        project
            .input(&run, "shipment_details", "alice", "{oops")
            .expect_code(EXIT_USAGE)
            .expect_stderr("not valid JSON");
        project.expect_waiting_on(&run, "input shipment_details");
        let history = project.history(&run);
        assert!(of_kind(&history, "gate_decided").is_empty(), "{history:?}");
    });
}

#[test]
fn from_restricts_who_may_supply_an_input() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("ask", "bob");
        project
            .input(
                &run,
                "shipment_details",
                "bob",
                r#"{"id": "S9", "value": 3}"#,
            )
            .expect_code(EXIT_REFUSED)
            .expect_stderr("user alice");
        assert!(project.listed_for("bob", &run).is_empty());
        let listed = project.listed_for("alice", &run);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["kind"], "input");
        assert_eq!(listed[0]["gate"], "shipment_details");
        assert_eq!(listed[0]["prompt"], "Details for S9?");
        project.expect_waiting_on(&run, "input shipment_details");
    });
}

#[test]
fn a_correct_input_resumes_the_run_with_it() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("ask", "bob");
        project.write("value.json", r#"{"id": "S9", "value": 1200}"#);
        project
            .input(&run, "shipment_details", "alice", "@value.json")
            .expect_code(EXIT_OK);
        project.expect_output(&run, "S9 is worth 1200");
        let history = project.history(&run);
        let decided = one_of(&history, "gate_decided");
        assert_eq!(decided["data"]["by"], "alice");
        assert_eq!(
            decided["data"]["value"],
            serde_json::json!({"id": "S9", "value": 1200})
        );
        // The input was given; a second one is refused.
        project
            .input(
                &run,
                "shipment_details",
                "alice",
                r#"{"id": "S9", "value": 1}"#,
            )
            .expect_code(EXIT_REFUSED);
    });
}

// ---------------------------------------------------------------------------------------------
// Quorum
// ---------------------------------------------------------------------------------------------

#[test]
fn quorum_needs_distinct_approvers_and_by_lists_them_all() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("two", "ines");
        let listed = project.listed_for("alice", &run);
        assert_eq!(listed[0]["remaining"], 2, "{listed:?}");

        project
            .approve(
                &run,
                "double_check",
                "alice",
                &["--comment", "first look ok"],
            )
            .expect_code(EXIT_OK)
            .expect_stdout("1 more");
        project.expect_waiting_on(&run, "approval double_check");
        let listed = project.listed_for("bob", &run);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["remaining"], 1, "{listed:?}");
        assert!(
            project.listed_for("alice", &run).is_empty(),
            "alice has approved already; nothing is left for her to decide"
        );

        // The same approver twice is refused and changes nothing.
        project
            .approve(&run, "double_check", "alice", &[])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("already approved");
        assert_eq!(project.listed_for("bob", &run)[0]["remaining"], 1);

        project
            .approve(&run, "double_check", "bob", &["--comment", "agreed"])
            .expect_code(EXIT_OK);
        let output = project.status(&run)["output"]
            .as_str()
            .expect("the run completed with a String")
            .to_string();
        assert!(
            output.starts_with("approved=true by ")
                && output.contains("alice")
                && output.contains("bob"),
            "d.by lists both approvers: {output}"
        );
        let history = project.history(&run);
        let recorded = one_of(&history, "approval_recorded");
        assert_eq!(recorded["data"]["by"], "alice");
        assert_eq!(recorded["data"]["remaining"], 1);
        assert_eq!(recorded["data"]["comment"], "first look ok");
        assert_eq!(recorded["data"]["gate"], "double_check");
        assert_eq!(recorded["data"]["run"], run.as_str());
        assert_eq!(recorded["data"]["workflow"], "two");
        assert_eq!(
            recorded["data"]["version"],
            project.status(&run)["version"],
            "the approval names the run's version"
        );
        let decided = one_of(&history, "gate_decided");
        assert_eq!(decided["data"]["approved"], true);
    });
}

#[test]
fn one_rejection_closes_a_quorum_gate() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("two", "ines");
        project
            .approve(&run, "double_check", "alice", &[])
            .expect_code(EXIT_OK);
        project
            .reject(&run, "double_check", "bob", "wrong weight")
            .expect_code(EXIT_OK);
        project.expect_output(&run, "approved=false by bob: wrong weight");
        project
            .approve(&run, "double_check", "carl", &[])
            .expect_code(EXIT_REFUSED);
    });
}

#[test]
fn quorum_still_enforces_four_eyes() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("two", "bob");
        project
            .approve(&run, "double_check", "alice", &[])
            .expect_code(EXIT_OK);
        project
            .approve(&run, "double_check", "bob", &[])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("four-eyes");
        project.expect_waiting_on(&run, "approval double_check");
    });
}

// ---------------------------------------------------------------------------------------------
// any(…) approvers
// ---------------------------------------------------------------------------------------------

#[test]
fn any_approvers_admit_the_role_or_the_user() {
    for_each_store(|store| {
        let project = project(store);
        let by_role = project.start_in("any.flow", "either", "bob", SHIPMENT);
        let by_user = project.start_in("any.flow", "either", "bob", SHIPMENT);
        project
            .approve(&by_role, "audit_signoff", "alice", &[])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("role auditor")
            .expect_stderr("user ines");
        assert!(project.listed_for("alice", &by_role).is_empty());
        assert_eq!(project.listed_for("dave", &by_role).len(), 1);
        assert_eq!(project.listed_for("ines", &by_user).len(), 1);
        project
            .approve(&by_role, "audit_signoff", "dave", &[])
            .expect_code(EXIT_OK);
        project.expect_output(&by_role, "approved=true by dave");
        project
            .approve(&by_user, "audit_signoff", "ines", &[])
            .expect_code(EXIT_OK);
        project.expect_output(&by_user, "approved=true by ines");
    });
}

// ---------------------------------------------------------------------------------------------
// Escalation and time-outs on the test clock
// ---------------------------------------------------------------------------------------------

#[test]
fn escalation_lets_the_escalation_role_decide() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        assert!(project.listed_for("omar", &run).is_empty());
        project
            .approve(&run, "release_signoff", "omar", &[])
            .expect_code(EXIT_REFUSED);

        project.advance("23h");
        let history = project.history(&run);
        assert!(
            of_kind(&history, "gate_escalated").is_empty(),
            "not escalated before 24h: {:?}",
            events(&history)
        );

        project.advance("2h");
        let history = project.history(&run);
        let escalated = one_of(&history, "gate_escalated");
        assert_eq!(escalated["step"], "release_signoff");
        assert!(
            escalated["data"]["to"]
                .as_str()
                .is_some_and(|to| to.contains("ops_manager")),
            "{escalated}"
        );
        project.expect_waiting_on(&run, "approval release_signoff");
        let listed = project.listed_for("omar", &run);
        assert_eq!(listed.len(), 1, "escalated to omar's role: {listed:?}");
        assert!(
            listed[0]["approvers"]
                .as_str()
                .is_some_and(|a| a.contains("ops_manager")),
            "{listed:?}"
        );
        // Advancing again does not escalate twice.
        project.advance("1h");
        one_of(&project.history(&run), "gate_escalated");

        project
            .approve(&run, "release_signoff", "omar", &["--comment", "urgent"])
            .expect_code(EXIT_OK);
        project.expect_output(&run, "released by omar: urgent");
    });
}

#[test]
fn an_uncaught_timeout_fails_the_run_with_approval_timeout() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        project.advance("25h");
        project.expect_waiting_on(&run, "approval release_signoff");
        project.advance("24h");
        let status = project.status(&run);
        assert_eq!(status["status"], "failed", "{status}");
        assert!(
            status["error"]
                .as_str()
                .is_some_and(|e| e.contains("ApprovalTimeout")),
            "{status}"
        );
        let history = project.history(&run);
        let kinds = events(&history);
        let escalated = kinds.iter().position(|k| *k == "gate_escalated");
        let timed_out = kinds.iter().position(|k| *k == "gate_timed_out");
        assert!(
            escalated.is_some() && timed_out.is_some() && escalated < timed_out,
            "escalated, then timed out: {kinds:?}"
        );
        assert_eq!(kinds.last(), Some(&"run_failed"), "{kinds:?}");
        assert!(project.approvals(None).is_empty());
        // A failed run takes no more decisions.
        project
            .approve(&run, "release_signoff", "alice", &[])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("failed");
    });
}

#[test]
fn a_caught_timeout_runs_the_handler() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("patient", "bob");
        project.advance("47h");
        project.expect_waiting_on(&run, "approval slow_signoff");
        project.advance("2h");
        project.expect_output(&run, "gave up: ApprovalTimeout");
        let history = project.history(&run);
        one_of(&history, "gate_timed_out");
        assert_eq!(events(&history).last(), Some(&"run_completed"));
        project
            .approve(&run, "slow_signoff", "alice", &[])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("completed");
    });
}

#[test]
fn a_decision_before_the_timeout_cancels_it() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("patient", "bob");
        project.advance("47h");
        project
            .approve(&run, "slow_signoff", "alice", &[])
            .expect_code(EXIT_OK);
        project.advance("2d");
        project.expect_output(&run, "approved=true by alice");
        assert!(of_kind(&project.history(&run), "gate_timed_out").is_empty());
    });
}

#[test]
fn the_clock_only_moves_on_a_test_clock_database() {
    for_each_store(|store| {
        let project = project(store);
        project
            .flowrt(&[
                "run",
                "gate.flow",
                "--workflow",
                "release",
                "--as",
                "bob",
                "--input",
                SHIPMENT,
            ])
            .expect_code(EXIT_WAITING);
        project
            .flowrt(&["clock", "advance", "25h"])
            .expect_code(EXIT_USAGE)
            .expect_stderr("--test-clock");
        // And a database with runs on the real clock cannot be switched over.
        project
            .flowrt(&["--test-clock", "clock", "show"])
            .expect_code(EXIT_USAGE);

        let test = crate::project(store);
        test.start("release", "bob");
        test.flowrt(&["clock", "advance", "soon"])
            .expect_code(EXIT_USAGE)
            .expect_stderr("not a duration");
    });
}

#[test]
fn the_test_clock_persists_across_processes() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        let before = project.flowrt(&["clock", "show"]);
        before.expect_code(EXIT_OK);
        project.advance("10h");
        let after = project.flowrt(&["clock", "show"]);
        after.expect_code(EXIT_OK);
        let moved = parse_time(after.stdout.trim()) - parse_time(before.stdout.trim());
        assert!(
            (10 * HOUR_MS..11 * HOUR_MS).contains(&moved),
            "the clock moved {moved} ms, not 10h"
        );
        project.expect_waiting_on(&run, "approval release_signoff");
    });
}

// ---------------------------------------------------------------------------------------------
// The approvals listing
// ---------------------------------------------------------------------------------------------

#[test]
fn approvals_json_describes_each_pending_gate() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        let all = project.approvals(None);
        assert_eq!(all.len(), 1, "{all:?}");
        let p = &all[0];
        assert_eq!(p["run"], run.as_str());
        assert_eq!(p["workflow"], "release");
        assert_eq!(p["gate"], "release_signoff");
        assert_eq!(p["kind"], "approval");
        assert_eq!(p["prompt"], "Release S1 worth 5?");
        assert_eq!(p["context"], serde_json::json!({"id": "S1", "value": 5}));
        assert_eq!(p["approvers"], "role customs");
        assert_eq!(p["started_by"], "bob");
        // Times in milliseconds since the epoch, as the API shows them.
        let opened = p["opened_at"].as_i64().expect("opened_at is a time in ms");
        let deadline = p["deadline"].as_i64().expect("deadline is a time in ms");
        assert_eq!(deadline - opened, 48 * HOUR_MS, "{p}");

        // The text form says the same.
        project
            .flowrt(&["approvals", "--as", "alice"])
            .expect_code(EXIT_OK)
            .expect_stdout(&run)
            .expect_stdout("release_signoff")
            .expect_stdout("Release S1 worth 5?")
            .expect_stdout("started by bob");
    });
}

#[test]
fn approvals_as_a_user_lists_only_what_they_may_decide() {
    for_each_store(|store| {
        let project = project(store);
        let release = project.start("release", "bob");
        let ask = project.start("ask", "ines");
        let gates = |user: &str| -> Vec<String> {
            let mut gates: Vec<String> = project
                .approvals(Some(user))
                .iter()
                .map(|p| p["gate"].as_str().expect("a gate name").to_string())
                .collect();
            gates.sort();
            gates
        };
        assert_eq!(gates("alice"), ["release_signoff", "shipment_details"]);
        assert_eq!(gates("carl"), ["release_signoff"]);
        assert!(gates("bob").is_empty(), "bob started the release run");
        assert!(gates("omar").is_empty(), "not escalated yet");
        assert!(gates("ines").is_empty());
        assert_eq!(project.approvals(None).len(), 2);
        project
            .flowrt(&["approvals", "--as", "bob"])
            .expect_code(EXIT_OK)
            .expect_stdout("nothing is waiting");
        let _ = (release, ask);
    });
}

// ---------------------------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------------------------

#[test]
fn history_records_the_gate_and_the_decision_with_its_context() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        let pending = project.approvals(Some("alice"));
        project.advance("25h");
        project
            .approve(
                &run,
                "release_signoff",
                "alice",
                &["--comment", "papers ok"],
            )
            .expect_code(EXIT_OK);
        let version = project.status(&run)["version"]
            .as_str()
            .expect("the run's version")
            .to_string();
        let history = project.history(&run);
        let kinds = events(&history);
        let at = |kind: &str| {
            kinds
                .iter()
                .position(|k| *k == kind)
                .unwrap_or_else(|| panic!("no {kind} in {kinds:?}"))
        };
        assert!(
            at("run_started") < at("gate_opened")
                && at("gate_opened") < at("gate_escalated")
                && at("gate_escalated") < at("gate_decided")
                && at("gate_decided") < at("run_completed"),
            "{kinds:?}"
        );

        let opened = one_of(&history, "gate_opened");
        assert_eq!(opened["step"], "release_signoff");
        let data = &opened["data"];
        assert_eq!(data["prompt"], "Release S1 worth 5?");
        assert_eq!(data["context"], serde_json::json!({"id": "S1", "value": 5}));
        assert_eq!(data["approvers"], "role customs");
        assert_eq!(data["version"], version.as_str());
        assert!(data["deadline"].is_string(), "{data}");

        one_of(&history, "gate_escalated");

        let decided = one_of(&history, "gate_decided");
        let d = &decided["data"];
        assert_eq!(d["by"], "alice");
        assert_eq!(d["approved"], true);
        assert_eq!(d["comment"], "papers ok");
        assert_eq!(d["gate"], "release_signoff");
        assert_eq!(d["run"], run.as_str());
        assert_eq!(d["workflow"], "release");
        assert_eq!(d["version"], version.as_str());
        let shown = d["shown_sha256"]
            .as_str()
            .expect("the hash of what was shown");
        assert_eq!(shown.len(), 64, "{shown}");
        assert_eq!(
            data["shown_sha256"], shown,
            "the decision is bound to the opened gate"
        );
        assert_eq!(
            pending[0]["view_hash"], shown,
            "approvals shows the same hash"
        );
        assert!(decided["at"].is_i64(), "{decided}");
    });
}

#[test]
fn a_decision_on_a_stale_view_is_refused() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start("release", "bob");
        let pending = project.approvals(Some("alice"));
        let hash = pending[0]["view_hash"]
            .as_str()
            .expect("approvals --json shows the hash of what it shows")
            .to_string();
        let stale = "0".repeat(64);
        project
            .approve(&run, "release_signoff", "alice", &["--expect-hash", &stale])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("changed");
        project.expect_waiting_on(&run, "approval release_signoff");
        project
            .approve(&run, "release_signoff", "alice", &["--expect-hash", &hash])
            .expect_code(EXIT_OK);
        project.expect_output(&run, "released by alice: ");
    });
}

// ---------------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------------

#[test]
fn opening_and_escalating_a_gate_posts_to_the_webhook() {
    for_each_store(|store| {
        let (port, rx) = webhook_server(Duration::ZERO);
        let project = project_with(
            store,
            &format!("{USERS}\n[[notify]]\nwebhook = \"http://127.0.0.1:{port}/hook\"\n"),
        );
        let run = project.start("release", "bob");

        let (request_line, message) = received(&rx);
        assert!(request_line.starts_with("POST /hook "), "{request_line}");
        assert_eq!(message["run"], run.as_str(), "{message}");
        assert_eq!(message["workflow"], "release", "{message}");
        assert_eq!(message["gate"], "release_signoff", "{message}");
        assert_eq!(message["prompt"], "Release S1 worth 5?", "{message}");
        assert_eq!(
            message["context"],
            serde_json::json!({"id": "S1", "value": 5}),
            "{message}"
        );
        assert_eq!(message["approvers"], "role customs", "{message}");
        assert!(message["deadline"].is_string(), "{message}");
        let command = message["command"].as_str().expect("the approve command");
        assert!(
            command.contains(&format!("flowrt approve {run} release_signoff")),
            "{command}"
        );

        let history = project.history(&run);
        let notified = one_of(&history, "notified");
        assert_eq!(notified["step"], "release_signoff");

        // Escalating notifies again, now naming the escalation role.
        project.advance("25h");
        let (_, escalated) = received(&rx);
        assert_eq!(escalated["run"], run.as_str(), "{escalated}");
        assert!(
            escalated["approvers"]
                .as_str()
                .is_some_and(|a| a.contains("ops_manager")),
            "{escalated}"
        );
        assert_eq!(of_kind(&project.history(&run), "notified").len(), 2);

        project
            .approve(&run, "release_signoff", "omar", &[])
            .expect_code(EXIT_OK);
        project.expect_output(&run, "released by omar: ");
    });
}

#[test]
fn an_input_request_notifies_with_the_input_command() {
    for_each_store(|store| {
        let (port, rx) = webhook_server(Duration::ZERO);
        let project = project_with(
            store,
            &format!("{USERS}\n[[notify]]\nwebhook = \"http://127.0.0.1:{port}/hook\"\n"),
        );
        let run = project.start("ask", "bob");
        let (_, message) = received(&rx);
        assert_eq!(message["gate"], "shipment_details", "{message}");
        assert_eq!(message["prompt"], "Details for S9?", "{message}");
        assert!(
            message["command"]
                .as_str()
                .is_some_and(|c| c.contains(&format!("flowrt input {run} shipment_details"))),
            "{message}"
        );
    });
}

#[test]
fn a_slow_webhook_does_not_block_the_gate() {
    for_each_store(|store| {
        let (port, rx) = webhook_server(Duration::from_millis(1500));
        let project = project_with(
            store,
            &format!("{USERS}\n[[notify]]\nwebhook = \"http://127.0.0.1:{port}/hook\"\n"),
        );
        let runner = project
            .command(&[
                "--test-clock",
                "run",
                "gate.flow",
                "--workflow",
                "release",
                "--as",
                "bob",
                "--input",
                SHIPMENT,
            ])
            .spawn()
            .expect("flowrt starts");
        // The gate is open (it is committed before the notification goes out) and the webhook
        // has the message, but has not answered yet.
        let (_, message) = received(&rx);
        let run = message["run"].as_str().expect("the message names the run");
        project.expect_waiting_on(run, "approval release_signoff");
        let decision = project.approve(run, "release_signoff", "alice", &["--comment", "ok"]);
        let runner = runner.wait_with_output().expect("flowrt run ends");
        assert!(runner.status.code().is_some());
        decision.expect_code(EXIT_OK);
        project.expect_output(run, "released by alice: ok");
    });
}

#[test]
fn a_failing_webhook_is_recorded_and_the_gate_still_works() {
    for_each_store(|store| {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            listener
                .local_addr()
                .expect("the listener's address")
                .port()
        };
        let project = project_with(
            store,
            &format!("{USERS}\n[[notify]]\nwebhook = \"http://127.0.0.1:{port}/hook\"\n"),
        );
        let run = project.start("release", "bob");
        let history = project.history(&run);
        let failed = one_of(&history, "notify_failed");
        assert_eq!(failed["step"], "release_signoff");
        assert!(
            failed["data"]["error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "the failure says why: {failed}"
        );
        assert!(
            failed["data"]["attempts"].as_i64().is_some_and(|n| n > 1),
            "the delivery was retried: {failed}"
        );
        assert!(of_kind(&history, "notified").is_empty());
        assert_eq!(project.listed_for("alice", &run).len(), 1);
        project
            .approve(&run, "release_signoff", "alice", &[])
            .expect_code(EXIT_OK);
        project.expect_output(&run, "released by alice: ");
    });
}

#[test]
fn a_command_hook_gets_the_message_on_stdin() {
    for_each_store(|store| {
        let project = project_with(
            store,
            &format!("{USERS}\n[[notify]]\ncommand = \"sh hook.sh\"\n"),
        );
        project.write("hook.sh", "cat > received.json\n");
        let run = project.start("release", "bob");
        let text = std::fs::read_to_string(project.path().join("received.json"))
            .expect("the hook wrote what it received");
        let message: serde_json::Value =
            serde_json::from_str(&text).expect("the hook received one JSON message");
        assert_eq!(message["run"], run.as_str(), "{message}");
        assert_eq!(message["gate"], "release_signoff", "{message}");
        assert_eq!(message["workflow"], "release", "{message}");
        assert_eq!(message["approvers"], "role customs", "{message}");
        one_of(&project.history(&run), "notified");
    });
}

#[test]
fn a_failing_command_hook_is_recorded() {
    for_each_store(|store| {
        let project = project_with(
            store,
            &format!("{USERS}\n[[notify]]\ncommand = \"echo no route to pager >&2; exit 4\"\n"),
        );
        let run = project.start("release", "bob");
        let history = project.history(&run);
        let failed = one_of(&history, "notify_failed");
        assert!(
            failed["data"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("no route to pager")),
            "{failed}"
        );
        project
            .approve(&run, "release_signoff", "alice", &[])
            .expect_code(EXIT_OK);
    });
}

// ---------------------------------------------------------------------------------------------
// flow.toml
// ---------------------------------------------------------------------------------------------

#[test]
fn a_malformed_config_names_the_file_and_line() {
    for_each_store(|store| {
        let project = project_with(store, "[users.alice]\nroles = \"customs\"\n");
        project
            .flowrt(&["approvals"])
            .expect_code(EXIT_USAGE)
            .expect_stderr("flow.toml:2")
            .expect_stderr("roles");
        project
            .flowrt(&[
                "--test-clock",
                "run",
                "gate.flow",
                "--workflow",
                "release",
                "--as",
                "bob",
                "--input",
                SHIPMENT,
            ])
            .expect_code(EXIT_USAGE)
            .expect_stderr("flow.toml:2");

        let typo = project_with(store, "[users.alice]\nrole = [\"customs\"]\n");
        typo.flowrt(&["approvals"])
            .expect_code(EXIT_USAGE)
            .expect_stderr("flow.toml:2")
            .expect_stderr("roles");

        let broken = project_with(store, "[users.alice\nroles = []\n");
        broken
            .flowrt(&["approvals"])
            .expect_code(EXIT_USAGE)
            .expect_stderr("flow.toml:1");
    });
}

#[test]
fn a_missing_config_given_with_config_is_an_error() {
    for_each_store(|store| {
        let project = project(store);
        project
            .flowrt(&["--config", "nowhere.toml", "approvals"])
            .expect_code(EXIT_USAGE)
            .expect_stderr("nowhere.toml");
    });
}

// ---------------------------------------------------------------------------------------------
// A `timeout` around a gate
// ---------------------------------------------------------------------------------------------

const BOUNDED: &str = r#"workflow close_case(id: String) -> String {
  try {
    timeout 7d {
      let d = await approval "review" { approvers: role("customs"), prompt: "Review ${id}", timeout: 30d }
      if d.approved { "approved" } else { "rejected" }
    }
  } catch e {
    "closed: ${e.kind}"
  }
}
"#;

#[test]
fn a_timeout_around_a_gate_withdraws_it_at_the_deadline() {
    for_each_store(|store| {
        let project = project(store);
        project.write("bounded.flow", BOUNDED);
        let run = project.start_in("bounded.flow", "close_case", "ines", r#"{"id": "C-7"}"#);
        assert_eq!(project.listed_for("alice", &run).len(), 1);

        // The gate's own deadline is 30 days away; the block's, 7 days: the run wakes at 7.
        project.advance("6d");
        project.expect_waiting_on(&run, "approval review");
        project.advance("1d");
        project.expect_output(&run, "closed: Timeout");

        let history = project.history(&run);
        let withdrawn = one_of(&history, "gate_withdrawn");
        assert_eq!(withdrawn["step"], "review");
        assert_eq!(withdrawn["data"]["why"], "the `timeout` around it expired");
        let timed_out = one_of(&history, "step_timed_out");
        assert_eq!(timed_out["step"], "review");
        assert!(of_kind(&history, "gate_timed_out").is_empty());
        // Withdrawn from every inbox, and no decision lands on it any more.
        assert!(project.listed_for("alice", &run).is_empty());
        project
            .approve(&run, "review", "alice", &[])
            .expect_code(EXIT_REFUSED);
    });
}
