//! `select` arms that wait for a gate or a call (spec/statements.md, "select"), through the
//! real binaries on both stores: two approvals and a signal side by side, the one decided
//! first winning and the other's gate withdrawn; a signal winning; an `after` winning on the
//! test clock, with the gate of a child workflow's arm withdrawn too; a failing tool arm
//! raising its error at the `select`, caught or not; `kill -9` of the worker again and again
//! over eight rounds of a `select` whose gate wins some rounds and whose child workflow wins
//! the others; and cancelling the run while it waits at such a `select`.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, Store, events, for_each_store, kill9, of_kind};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EXIT_OK: i32 = 0;
const EXIT_FAILED: i32 = 1;
const EXIT_REFUSED: i32 = 3;
const EXIT_WAITING: i32 = 10;

/// Two approvers of finance, one of legal, ines the clerk (who starts the runs and decides
/// nothing), and ops.
const USERS: &str = r#"[users.finn]
roles = ["finance"]

[users.lena]
roles = ["legal"]

[users.ines]
roles = ["clerk"]

[users.ops]
roles = ["ops"]
"#;

/// `sign`: two approvals and a signal (and a deadline) side by side; `review`: an input, a
/// child workflow that waits at a gate of its own, a signal and a deadline.
const SIGN: &str = r#"workflow second_opinion(doc: String) -> String {
  let d = await approval "opinion" { approvers: role("legal"), prompt: "Opinion on ${doc}?" }
  d.comment
}

workflow sign(doc: String) -> String accepts withdraw: String from role("clerk") {
  select {
    signal withdraw as why => "withdrawn: ${why}",
    approval "sign" { approvers: role("finance"), prompt: "Sign ${doc}?" } as d => {
      if d.approved { "signed by ${d.by}" } else { "refused by ${d.by}" }
    },
    approval "legal" { approvers: role("legal"), prompt: "Legal review of ${doc}?" } as l => {
      if l.approved { "legal ok by ${l.by}: ${l.comment}" } else { "legal refused" }
    },
    after 2d => "expired",
  }
}

workflow review(doc: String) -> String accepts withdraw: String from role("clerk") {
  select {
    signal withdraw as why => "withdrawn: ${why}",
    input<Int> "score" { from: role("finance") } as n => "scored ${to_string(n)}",
    second_opinion(doc) as o => "second opinion: ${o}",
    after 2d => "expired",
  }
}
"#;

fn project(store: &Store) -> Project {
    let project = Project::new(store);
    project.write("flow.toml", USERS);
    project.write("sign.flow", SIGN);
    project
}

impl Project {
    /// `run FILE --workflow W --as ines --input INPUT --json` (plus `extra`), which must stop
    /// waiting: the run's id.
    fn start_waiting(&self, file: &str, workflow: &str, input: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "run",
            file,
            "--workflow",
            workflow,
            "--as",
            "ines",
            "--input",
            input,
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = self.flowrt(&args);
        out.expect_code(EXIT_WAITING);
        out.json()["id"].as_str().unwrap().to_string()
    }

    /// The open gates, as (run, gate) pairs, from `approvals --json`.
    fn open_gates(&self) -> Vec<(String, String)> {
        let mut gates: Vec<(String, String)> = self
            .gates_listed()
            .iter()
            .map(|g| {
                (
                    g["run"].as_str().unwrap().to_string(),
                    g["gate"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        gates.sort();
        gates
    }

    /// `approvals --json`, as listed.
    fn gates_listed(&self) -> Vec<Value> {
        let out = self.flowrt(&["approvals", "--json"]);
        out.expect_code(EXIT_OK);
        out.json().as_array().unwrap().clone()
    }

    /// Every run of `runs --json`, by id.
    fn runs_by_id(&self) -> BTreeMap<String, Value> {
        self.runs()
            .into_iter()
            .map(|r| (r["id"].as_str().unwrap().to_string(), r))
            .collect()
    }

    fn status_of(&self, run: &str) -> String {
        self.status(run)["status"].as_str().unwrap().to_string()
    }
}

fn gate(run: &str, name: &str) -> (String, String) {
    (run.to_string(), name.to_string())
}

/// The parent's events about the branches of its `select` and how it ended, in order.
fn select_events(history: &[Value]) -> Vec<&str> {
    events(history)
        .into_iter()
        .filter(|k| {
            k.starts_with("branch")
                || ["signal_taken", "timer_fired", "run_completed", "run_failed"].contains(k)
        })
        .collect()
}

/// The `until` of a `waiting_on` of `select … until T branches N`.
fn select_until(waiting_on: &str) -> &str {
    let rest = waiting_on.split(" until ").nth(1).unwrap_or("");
    rest.split(' ').next().unwrap_or("")
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` as milliseconds since 1970 (UTC).
fn iso_ms(text: &str) -> i64 {
    let n = |range: std::ops::Range<usize>| -> i64 {
        text.get(range)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("not a time: {text:?}"))
    };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days since 1970-01-01 of a date of the proleptic Gregorian calendar.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000 + n(17..19) * 1000 + n(20..23)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn two_gate_arms_wait_side_by_side_and_the_first_decided_wins() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start_waiting("sign.flow", "sign", r#"{"doc": "D-7"}"#, &[]);
        // The `after`'s clock read is step 0; the `select` is step 1; arms 1 and 2 wait.
        let (sign, legal) = (format!("{run}.1.1"), format!("{run}.1.2"));
        let status = project.status(&run);
        assert_eq!(status["status"], "waiting", "{status}");
        let waiting_on = status["waiting_on"].as_str().unwrap();
        assert!(
            waiting_on.starts_with("select withdraw until ") && waiting_on.ends_with(" branches 2"),
            "{status}"
        );
        // Both gates are in the inbox at once, with prompts made from the parent's values.
        assert_eq!(
            project.open_gates(),
            [gate(&sign, "sign"), gate(&legal, "legal")]
        );
        let prompts: BTreeSet<String> = project
            .gates_listed()
            .iter()
            .map(|g| g["prompt"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            prompts,
            BTreeSet::from(["Sign D-7?".to_string(), "Legal review of D-7?".to_string()])
        );
        let runs = project.runs_by_id();
        for (id, workflow) in [(&sign, "sign#1.1"), (&legal, "sign#1.2")] {
            let branch = &runs[id];
            assert_eq!(branch["parent"], run.as_str(), "{branch}");
            assert_eq!(branch["workflow"], workflow, "{branch}");
            assert_eq!(branch["status"], "waiting", "{branch}");
            // A branch is started by its run's starter.
            assert_eq!(branch["started_by"], "ines", "{branch}");
        }
        assert_eq!(runs.len(), 3, "{runs:?}");
        // The deadline is the `after`'s: two days after the clock read the history holds.
        let history = project.history(&run);
        let read = of_kind(&history, "clock_read")[0]["data"]["time"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            iso_ms(select_until(waiting_on)) - iso_ms(&read),
            2 * 86_400_000,
            "{waiting_on} vs {read}"
        );
        // A gate keeps its rules in a branch: finance may not decide the legal review.
        project
            .flowrt(&["approve", &legal, "legal", "--as", "finn"])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("needs role legal");
        assert_eq!(project.status_of(&run), "waiting");

        project
            .flowrt(&[
                "approve",
                &legal,
                "legal",
                "--as",
                "lena",
                "--comment",
                "fine",
            ])
            .expect_code(EXIT_OK);
        let status = project.status(&run);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], "legal ok by lena: fine");
        assert_eq!(project.status_of(&legal), "completed");
        assert_eq!(project.status_of(&sign), "cancelled");
        assert!(
            project.open_gates().is_empty(),
            "{:?}",
            project.open_gates()
        );
        // The withdrawn gate takes no decision any more.
        project
            .flowrt(&["approve", &sign, "sign", "--as", "finn"])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("cancelled");
        assert_eq!(project.status(&run)["output"], "legal ok by lena: fine");

        let history = project.history(&run);
        assert_eq!(
            select_events(&history),
            [
                "branch_started",
                "branch_started",
                "branch_completed",
                "branches_cancelled",
                "run_completed"
            ],
            "{history:?}"
        );
        let started: Vec<(&Value, &Value)> = of_kind(&history, "branch_started")
            .iter()
            .map(|e| (&e["data"]["select_arm"], &e["data"]["run"]))
            .collect();
        assert_eq!(
            started,
            [(&json!(1), &json!(sign)), (&json!(2), &json!(legal))]
        );
        let completed = of_kind(&history, "branch_completed");
        assert_eq!(completed[0]["data"]["select_arm"], 2);
        assert_eq!(completed[0]["data"]["output"]["by"], "lena");
        assert_eq!(
            of_kind(&history, "branches_cancelled")[0]["data"]["runs"],
            json!([sign])
        );
        let cancelled = project.history(&sign);
        assert_eq!(events(&cancelled).last(), Some(&"run_cancelled"));
        assert!(
            of_kind(&cancelled, "gate_decided").is_empty(),
            "{cancelled:?}"
        );
        // No timer of the `select` is left behind.
        assert!(project.status(&run)["wake_at"].is_null());
    });
}

#[test]
fn a_signal_first_wins_and_withdraws_both_gates() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start_waiting("sign.flow", "sign", r#"{"doc": "D-8"}"#, &[]);
        let (sign, legal) = (format!("{run}.1.1"), format!("{run}.1.2"));
        assert_eq!(project.open_gates().len(), 2);
        // A sender the workflow does not name changes nothing.
        project
            .flowrt(&[
                "signal", &run, "withdraw", "--value", r#""no""#, "--as", "finn",
            ])
            .expect_code(EXIT_REFUSED);
        assert_eq!(project.open_gates().len(), 2);
        project
            .flowrt(&[
                "signal",
                &run,
                "withdraw",
                "--value",
                r#""sent by mistake""#,
                "--as",
                "ines",
            ])
            .expect_code(EXIT_OK)
            .expect_stdout("is now completed");
        let status = project.status(&run);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], "withdrawn: sent by mistake");
        for id in [&sign, &legal] {
            assert_eq!(project.status_of(id), "cancelled", "{id}");
        }
        assert!(
            project.open_gates().is_empty(),
            "{:?}",
            project.open_gates()
        );
        project
            .flowrt(&["approve", &legal, "legal", "--as", "lena"])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("cancelled");
        let history = project.history(&run);
        assert_eq!(
            select_events(&history),
            [
                "branch_started",
                "branch_started",
                "branches_cancelled",
                "signal_taken",
                "run_completed"
            ],
            "{history:?}"
        );
        let taken = of_kind(&history, "signal_taken");
        assert_eq!(taken[0]["data"]["select_arm"], 0);
        assert_eq!(taken[0]["data"]["by"], "ines");
        assert_eq!(
            of_kind(&history, "branches_cancelled")[0]["data"]["runs"],
            json!([sign, legal])
        );
        assert!(of_kind(&history, "branch_completed").is_empty());
    });
}

#[test]
fn an_after_wins_on_the_test_clock_and_withdraws_the_gates_of_the_other_arms() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start_waiting(
            "sign.flow",
            "review",
            r#"{"doc": "D-9"}"#,
            &["--test-clock"],
        );
        // Arm 1 waits for an input; arm 2 for a child workflow (the branch's step 0), which
        // waits at a gate of its own.
        let (score, opinion) = (format!("{run}.1.1"), format!("{run}.1.2"));
        let child = format!("{opinion}.0");
        assert_eq!(
            project.open_gates(),
            [gate(&score, "score"), gate(&child, "opinion")]
        );
        let status = project.status(&run);
        assert!(
            status["waiting_on"]
                .as_str()
                .unwrap()
                .ends_with(" branches 2"),
            "{status}"
        );
        assert_eq!(project.status(&child)["parent"], opinion.as_str());

        project.flowrt(&["clock", "advance", "47h"]).expect_code(0);
        assert_eq!(project.status_of(&run), "waiting");
        assert_eq!(project.open_gates().len(), 2);
        project.flowrt(&["clock", "advance", "2h"]).expect_code(0);
        let status = project.status(&run);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], "expired");
        for id in [&score, &opinion, &child] {
            assert_eq!(project.status_of(id), "cancelled", "{id}");
        }
        assert!(
            project.open_gates().is_empty(),
            "{:?}",
            project.open_gates()
        );
        project
            .flowrt(&["input", &score, "score", "--as", "finn", "--value", "3"])
            .expect_code(EXIT_REFUSED);
        project
            .flowrt(&["approve", &child, "opinion", "--as", "lena"])
            .expect_code(EXIT_REFUSED);
        let history = project.history(&run);
        assert_eq!(
            select_events(&history),
            [
                "branch_started",
                "branch_started",
                "branches_cancelled",
                "timer_fired",
                "run_completed"
            ],
            "{history:?}"
        );
        assert_eq!(of_kind(&history, "timer_fired")[0]["data"]["select_arm"], 3);
        assert_eq!(
            of_kind(&history, "branches_cancelled")[0]["data"]["runs"],
            json!([score, opinion])
        );
        // The child's cancellation is in its own history.
        assert_eq!(
            events(&project.history(&child)).last(),
            Some(&"run_cancelled")
        );
    });
}

/// A screening tool that fails for a bad owner.
const SCREEN: &str = r#"#!/bin/sh
doc=$(cat)
case "$doc" in
  *bad*) echo "sanctions list hit" >&2; exit 3 ;;
esac
echo '"clear"'
"#;

const CHECK: &str = r#"tool screen(doc: String) -> String via exec "sh tools/screen.sh"

workflow check(doc: String) -> String {
  select {
    screen(doc) as s => "screened: ${s}",
    approval "waive" { approvers: role("legal") } as d => "waived by ${d.by}",
    after 1h => "late",
  }
}

workflow careful(doc: String) -> String {
  try {
    select {
      screen(doc) as s => "screened: ${s}",
      approval "waive" { approvers: role("legal") } as d => "waived by ${d.by}",
      after 1h => "late",
    }
  } catch e {
    "caught ${e.kind}: ${e.message}"
  }
}
"#;

#[test]
fn a_failing_call_arm_raises_its_error_at_the_select() {
    for_each_store(|store| {
        let project = project(store);
        project.write("tools/screen.sh", SCREEN);
        project.write("check.flow", CHECK);
        let run = |workflow: &str, doc: &str, code: i32| -> Value {
            let input = json!({ "doc": doc }).to_string();
            let out = project.flowrt(&[
                "run",
                "check.flow",
                "--workflow",
                workflow,
                "--as",
                "ines",
                "--input",
                &input,
                "--json",
            ]);
            out.expect_code(code);
            out.json()
        };
        // The call answers: its arm wins, and the gate of the other is withdrawn.
        let good = run("check", "fine corp", EXIT_OK);
        assert_eq!(good["output"], "screened: clear", "{good}");
        let id = good["id"].as_str().unwrap();
        assert_eq!(project.status_of(&format!("{id}.1.0")), "completed");
        assert_eq!(project.status_of(&format!("{id}.1.1")), "cancelled");
        assert!(project.open_gates().is_empty());

        // The call fails: the error is raised at the `select`, nothing catches it.
        let bad = run("check", "bad corp", EXIT_FAILED);
        assert_eq!(bad["status"], "failed", "{bad}");
        let id = bad["id"].as_str().unwrap().to_string();
        let error = bad["error"].as_str().unwrap();
        assert!(error.starts_with("ToolError: "), "{error}");
        assert!(
            error.contains("tool `screen` failed with exit status 3: sanctions list hit"),
            "{error}"
        );
        let (call, waive) = (format!("{id}.1.0"), format!("{id}.1.1"));
        assert_eq!(project.status_of(&call), "failed");
        assert_eq!(project.status_of(&waive), "cancelled");
        assert!(
            project.open_gates().is_empty(),
            "{:?}",
            project.open_gates()
        );
        project
            .flowrt(&["approve", &waive, "waive", "--as", "lena"])
            .expect_code(EXIT_REFUSED);
        let history = project.history(&id);
        assert_eq!(
            select_events(&history),
            [
                "branch_started",
                "branch_started",
                "branch_failed",
                "branches_cancelled",
                "run_failed"
            ],
            "{history:?}"
        );
        assert_eq!(
            of_kind(&history, "branch_failed")[0]["data"]["select_arm"],
            0
        );
        assert_eq!(
            of_kind(&history, "run_failed")[0]["data"]["kind"],
            "ToolError"
        );

        // A `try` around the `select` catches it like any other error.
        let caught = run("careful", "bad corp", EXIT_OK);
        assert_eq!(caught["status"], "completed", "{caught}");
        let output = caught["output"].as_str().unwrap();
        assert!(output.starts_with("caught ToolError: "), "{output}");
        assert!(
            output.contains("tool `screen` failed with exit status 3: sanctions list hit"),
            "{output}"
        );
        let id = caught["id"].as_str().unwrap().to_string();
        assert_eq!(project.status_of(&format!("{id}.1.1")), "cancelled");
        assert!(
            project.open_gates().is_empty(),
            "{:?}",
            project.open_gates()
        );
        let history = project.history(&id);
        assert!(
            select_events(&history).ends_with(&[
                "branch_failed",
                "branches_cancelled",
                "run_completed"
            ]),
            "{history:?}"
        );
    });
}

#[test]
fn cancelling_the_run_at_a_select_cancels_its_branches_and_withdraws_their_gates() {
    for_each_store(|store| {
        let project = project(store);
        let run = project.start_waiting("sign.flow", "review", r#"{"doc": "D-10"}"#, &[]);
        let (score, opinion) = (format!("{run}.1.1"), format!("{run}.1.2"));
        let child = format!("{opinion}.0");
        assert_eq!(
            project.open_gates(),
            [gate(&score, "score"), gate(&child, "opinion")]
        );
        project
            .flowrt(&["cancel", &run, "--as", "ines"])
            .expect_code(EXIT_OK);
        assert_eq!(project.status_of(&run), "cancelled");
        for id in [&score, &opinion, &child] {
            assert_eq!(project.status_of(id), "cancelled", "{id}");
        }
        assert!(
            project.open_gates().is_empty(),
            "{:?}",
            project.open_gates()
        );
        // Nothing of it goes on: no decision, no signal, and a worker finds nothing to do.
        project
            .flowrt(&["approve", &child, "opinion", "--as", "lena"])
            .expect_code(EXIT_REFUSED);
        project
            .flowrt(&["input", &score, "score", "--as", "finn", "--value", "1"])
            .expect_code(EXIT_REFUSED);
        project
            .flowrt(&[
                "signal", &run, "withdraw", "--value", r#""x""#, "--as", "ines",
            ])
            .expect_code(EXIT_REFUSED);
        project.flowrt(&["worker", "--once"]).expect_code(EXIT_OK);
        for (id, r) in project.runs_by_id() {
            assert_eq!(r["status"], "cancelled", "{id}: {r}");
        }
        assert_eq!(
            events(&project.history(&run)).last(),
            Some(&"run_cancelled")
        );
    });
}

/// Logs `start KEY ROUND MS` and `done KEY ROUND MS` around the call; blocks while a file
/// `hold-ROUND` exists, then sleeps 200 ms; answers the round.
const WORK: &str = r#"#!/bin/sh
round=$(cat | sed 's/[^0-9]//g')
echo "start $FLOW_IDEMPOTENCY_KEY $round $(date +%s%3N)" >> effects.log
while [ -e "hold-$round" ]; do sleep 0.02; done
sleep 0.2
echo "done $FLOW_IDEMPOTENCY_KEY $round $(date +%s%3N)" >> effects.log
echo "$round"
"#;

const ROUNDS: &str = r#"tool work(round: Int) -> Int via exec "sh tools/work.sh"

workflow helper(round: Int) -> String {
  let n = work(round)
  "child ${n}"
}

workflow rounds(n: Int) -> List<String> {
  var outcomes: List<String> = []
  var i = 0
  while i < n {
    let r = select {
      approval "ok" { approvers: role("ops"), prompt: "Round ${i}?" } as d => "gate ${i} by ${d.by}",
      helper(i) as h => h,
      after 1h => "timed out ${i}",
    }
    outcomes = outcomes + [r]
    i = i + 1
  }
  outcomes
}
"#;

/// One line of the tool's log.
struct Effect {
    what: String,
    key: String,
    round: String,
    at: i64,
}

fn effects(project: &Project) -> Vec<Effect> {
    let text = std::fs::read_to_string(project.path().join("effects.log")).unwrap_or_default();
    text.lines()
        .map(|l| {
            // The round is empty when the worker died before it wrote the tool's input.
            let parts: Vec<&str> = l.split(' ').collect();
            assert_eq!(parts.len(), 4, "a log line: {l:?}");
            Effect {
                what: parts[0].to_string(),
                key: parts[1].to_string(),
                round: parts[2].to_string(),
                at: parts[3].parse().unwrap(),
            }
        })
        .collect()
}

/// What the test does between kills: approves the gate of an even round as soon as it is
/// open (that round's call blocks meanwhile, so the gate wins), and lets that call go once
/// the gate's branch has ended. Odd rounds are left to the child workflow.
fn tend(project: &Project, run: &str, approved: &mut BTreeMap<u64, String>) {
    for g in project.gates_listed() {
        let id = g["run"].as_str().unwrap();
        let prompt = g["prompt"].as_str().unwrap_or("");
        let round: u64 = prompt
            .trim_start_matches("Round ")
            .trim_end_matches('?')
            .parse()
            .unwrap_or_else(|_| panic!("a gate of another kind: {g}"));
        assert!(id.starts_with(&format!("{run}.")), "{g}");
        if round.is_multiple_of(2) && !approved.contains_key(&round) {
            project
                .flowrt(&["approve", id, "ok", "--as", "ops", "--no-drive"])
                .expect_code(EXIT_OK);
            approved.insert(round, id.to_string());
        }
    }
    for (round, id) in approved.iter() {
        let hold = project.path().join(format!("hold-{round}"));
        if hold.exists() && project.status_of(id) == "completed" {
            std::fs::remove_file(hold).unwrap();
        }
    }
}

/// Eight rounds, each a `select` of a gate, a child workflow whose one step is a 200 ms tool
/// call, and an hour's `after`; the worker is killed with SIGKILL every 200–600 ms and a new
/// one started, while the test approves the gate of every even round (whose call is held
/// until the gate's branch has ended) and leaves the odd rounds to the child. The run
/// completes with each round's outcome; each `select` had exactly one winner, and the arm
/// it should; no branch started twice; every loser was cancelled (and named by the parent's
/// `branches_cancelled`, even when a kill came between the two; its child cancelled with
/// it) or ended later and was ignored; no gate is left open; and the tool ran a call again
/// only when a worker died with it in flight, with the same idempotency key, never once its
/// result was committed.
#[test]
fn a_worker_killed_again_and_again_over_selects_keeps_one_winner_per_round() {
    for_each_store(|store| {
        const N: u64 = 8;
        const MOST_KILLS: usize = 18;
        let project = Project::new(store).with_env("FLOW_LEASE_MS", "150");
        project.write("flow.toml", USERS);
        project.write("tools/work.sh", WORK);
        project.write("rounds.flow", ROUNDS);
        for round in (0..N).step_by(2) {
            project.write(&format!("hold-{round}"), "");
        }
        let input = json!({ "n": N }).to_string();
        project
            .flowrt(&[
                "start",
                "rounds.flow",
                "--workflow",
                "rounds",
                "--as",
                "ines",
                "--input",
                &input,
            ])
            .expect_code(EXIT_OK);
        let run = project.runs()[0]["id"].as_str().unwrap().to_string();

        let mut approved: BTreeMap<u64, String> = BTreeMap::new();
        // (before, after) each kill, on the clock the runtime stamps events with.
        let mut kills: Vec<(i64, i64)> = Vec::new();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let began = Instant::now();
        loop {
            let mut worker = project
                .command(&["worker"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let last = kills.len() == MOST_KILLS;
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let life = if last {
                Duration::from_secs(40)
            } else {
                Duration::from_millis(200 + seed % 400)
            };
            let born = Instant::now();
            let mut completed = false;
            while born.elapsed() < life {
                tend(&project, &run, &mut approved);
                if project.status_of(&run) == "completed" {
                    completed = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let before = now_ms();
            kill9(&mut worker);
            kills.push((before, now_ms()));
            if completed || project.status_of(&run) == "completed" {
                break;
            }
            assert!(!last, "the run never completed: {}", project.status(&run));
            let status = project.status_of(&run);
            assert!(
                ["waiting", "runnable"].contains(&status.as_str()),
                "{status}"
            );
            assert!(began.elapsed() < Duration::from_secs(50), "never completed");
        }
        assert!(kills.len() >= 3, "only {} kills", kills.len());

        let expected: Vec<String> = (0..N)
            .map(|i| {
                if i.is_multiple_of(2) {
                    format!("gate {i} by ops")
                } else {
                    format!("child {i}")
                }
            })
            .collect();
        assert_eq!(project.status(&run)["output"], json!(expected));
        assert_eq!(approved.len(), (N / 2) as usize, "{approved:?}");
        assert!(
            project.open_gates().is_empty(),
            "{:?}",
            project.open_gates()
        );

        // The `select`s by step, in order; each started its two branches once.
        let history = project.history(&run);
        let step_of = |e: &Value| -> u64 {
            let id = e["data"]["run"].as_str().unwrap();
            let rest = id.strip_prefix(&format!("{run}.")).unwrap();
            rest.split('.').next().unwrap().parse().unwrap()
        };
        let mut started: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for e in of_kind(&history, "branch_started") {
            started
                .entry(step_of(e))
                .or_default()
                .push(e["data"]["select_arm"].as_u64().unwrap());
        }
        assert_eq!(started.len(), N as usize, "{started:?}");
        for (step, arms) in &started {
            assert_eq!(arms, &[0, 1], "step {step}: {history:?}");
        }
        let steps: Vec<u64> = started.keys().copied().collect();
        // Exactly one winner per `select`: a branch's end (no signal, no timer here).
        assert!(of_kind(&history, "signal_taken").is_empty());
        assert!(of_kind(&history, "timer_fired").is_empty());
        assert!(of_kind(&history, "branch_failed").is_empty(), "{history:?}");
        let mut winners: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for e in of_kind(&history, "branch_completed") {
            winners
                .entry(step_of(e))
                .or_default()
                .push(e["data"]["select_arm"].as_u64().unwrap());
        }
        let runs = project.runs_by_id();
        for (round, step) in steps.iter().enumerate() {
            let won = if round.is_multiple_of(2) { 0 } else { 1 };
            assert_eq!(
                winners.get(step),
                Some(&vec![won]),
                "round {round} (step {step}): {winners:?}"
            );
            let winner = format!("{run}.{step}.{won}");
            let loser = format!("{run}.{step}.{}", 1 - won);
            assert_eq!(runs[&winner]["status"], "completed", "{winner}");
            // The loser was cancelled, or ended after the winner and was ignored.
            let lost = &runs[&loser];
            match lost["status"].as_str().unwrap() {
                "cancelled" => {
                    let named = of_kind(&history, "branches_cancelled").iter().any(|e| {
                        e["data"]["runs"]
                            .as_array()
                            .unwrap()
                            .contains(&json!(loser))
                    });
                    assert!(
                        named,
                        "{loser} was cancelled but no branches_cancelled names it: parent {:?}; loser {:?}; kills {kills:?}",
                        history
                            .iter()
                            .map(|e| format!("{} {} {}", e["kind"], e["at"], e["data"]))
                            .collect::<Vec<_>>(),
                        project.history(&loser)
                    );
                }
                "completed" => assert!(
                    lost["updated_at"].as_i64() > runs[&winner]["updated_at"].as_i64(),
                    "{loser} ended first but lost: {lost} vs {}",
                    runs[&winner]
                ),
                other => panic!("{loser} is {other}: {lost}"),
            }
            if round.is_multiple_of(2) {
                assert_eq!(approved[&(round as u64)], winner);
            }
        }
        // A `branches_cancelled` names only the losers of its `select`.
        for e in of_kind(&history, "branches_cancelled") {
            for id in e["data"]["runs"].as_array().unwrap() {
                let id = id.as_str().unwrap();
                let (prefix, arm) = id.rsplit_once('.').unwrap();
                let step: u64 = prefix.rsplit_once('.').unwrap().1.parse().unwrap();
                let round = steps.iter().position(|s| *s == step).unwrap();
                assert_eq!(arm, if round.is_multiple_of(2) { "1" } else { "0" }, "{e}");
                assert_eq!(runs[id]["status"], "cancelled", "{id}");
            }
        }

        // The runs: the parent, two branches per round, and each child workflow the second
        // arm started (at the branch's step 0) — each run started once.
        for (id, r) in &runs {
            if id == &run {
                continue;
            }
            let rest = id.strip_prefix(&format!("{run}.")).unwrap();
            let parts: Vec<&str> = rest.split('.').collect();
            let step: u64 = parts[0].parse().unwrap();
            assert!(steps.contains(&step), "{id}");
            match parts[1..] {
                ["0"] | ["1"] => assert_eq!(r["parent"], run.as_str(), "{id}"),
                ["1", "0"] => {
                    assert_eq!(r["parent"], format!("{run}.{step}.1"), "{id}");
                    assert_eq!(r["workflow"], "helper", "{id}");
                    // A branch cancelled takes its child with it: the child was cancelled
                    // too, or had ended before.
                    let branch = &runs[&format!("{run}.{step}.1")];
                    if branch["status"] == "cancelled" {
                        assert!(
                            r["status"] == "cancelled"
                                || r["updated_at"].as_i64() <= branch["updated_at"].as_i64(),
                            "{id} outlived its cancelled branch: {r} vs {branch}"
                        );
                    }
                }
                _ => panic!("an unexpected run {id}"),
            }
            let h = project.history(id);
            assert_eq!(of_kind(&h, "run_started").len(), 1, "{id}: {h:?}");
            // Nothing starts in a run once it was cancelled.
            if let Some(at) = events(&h).iter().position(|k| *k == "run_cancelled") {
                for k in &events(&h)[at + 1..] {
                    assert!(
                        ["step_completed", "step_failed"].contains(k),
                        "{id}: {k} after run_cancelled: {:?}",
                        events(&h)
                    );
                }
            }
        }
        // Every run of the test has ended.
        for (id, r) in &runs {
            assert!(
                ["completed", "cancelled"].contains(&r["status"].as_str().unwrap()),
                "{id}: {r}"
            );
        }

        // The tool's log against the children's histories.
        let log = effects(&project);
        let mut keys = BTreeSet::new();
        for (round, step) in steps.iter().enumerate() {
            let child = format!("{run}.{step}.1.0");
            let Some(record) = runs.get(&child) else {
                assert!(
                    round.is_multiple_of(2),
                    "round {round}: the child never started"
                );
                continue;
            };
            let key = format!("{child}:0");
            keys.insert(key.clone());
            let h = project.history(&child);
            let steps_of: Vec<&Value> = h
                .iter()
                .filter(|e| e["kind"].as_str().unwrap().starts_with("step_"))
                .collect();
            let kinds: Vec<&str> = steps_of
                .iter()
                .map(|e| e["kind"].as_str().unwrap())
                .collect();
            // Started, then (resumed after a crash, started again) as often as a worker
            // died with the call in flight, then completed — unless it was cancelled first.
            let open = match kinds.last() {
                Some(&"step_completed") => &kinds[..kinds.len() - 1],
                _ => &kinds[..],
            };
            if record["status"] == "completed" {
                assert_eq!(kinds.last(), Some(&"step_completed"), "{child}: {kinds:?}");
            }
            if !open.is_empty() {
                assert_eq!(open[0], "step_started", "{child}: {kinds:?}");
                for pair in open[1..].chunks(2) {
                    assert_eq!(pair, ["step_resumed", "step_started"], "{child}: {kinds:?}");
                }
            }
            for e in &steps_of {
                if e["kind"] != "step_completed" {
                    assert_eq!(e["data"]["idempotency_key"], key, "{child}: {e}");
                }
            }
            // Each resume follows a kill that came after the attempt it resumes began.
            for w in steps_of.windows(2) {
                if w[1]["kind"] == "step_resumed" {
                    let (at, resumed) =
                        (w[0]["at"].as_i64().unwrap(), w[1]["at"].as_i64().unwrap());
                    assert!(
                        kills
                            .iter()
                            .any(|&(before, after)| at <= after && before <= resumed),
                        "{child}: resumed at {resumed} with no kill since {at}: {kills:?}"
                    );
                }
            }
            let attempts = kinds.iter().filter(|k| **k == "step_started").count();
            let starts: Vec<&Effect> = log
                .iter()
                .filter(|e| e.what == "start" && e.key == key)
                .collect();
            assert!(
                starts.len() <= attempts,
                "{child}: {} calls for {attempts} attempts",
                starts.len()
            );
            for start in &starts {
                assert!(
                    start.round == round.to_string() || start.round.is_empty(),
                    "{child}: called for round {:?}",
                    start.round
                );
            }
            if let Some(done) = steps_of.iter().find(|e| e["kind"] == "step_completed") {
                let committed = done["at"].as_i64().unwrap();
                for start in &starts {
                    assert!(
                        start.at <= committed,
                        "{child}: called at {} after its result was committed at {committed}",
                        start.at
                    );
                }
            }
            if round % 2 == 1 {
                assert!(!starts.is_empty(), "{child}: the winning call never ran");
                assert!(
                    log.iter()
                        .any(|e| e.what == "done" && e.key == key && e.round == round.to_string()),
                    "{child}: no call finished"
                );
            }
        }
        let logged: BTreeSet<String> = log.iter().map(|e| e.key.clone()).collect();
        assert!(
            logged.is_subset(&keys),
            "calls only for the children's steps: {logged:?} vs {keys:?}"
        );
    });
}
