//! `parallel` branches through the real binaries on both stores: three approvals open at
//! once and decided in any order; the first failure of a branch cancelling the others (their
//! gates withdrawn) and raised at the `parallel`, caught or not; `collect` keeping every
//! branch's value or error; a `timeout` around a `parallel`; `kill -9` of the worker again
//! and again over a `parallel for … max 3` of tool calls; and the branch workflows the
//! compiler makes (`w#1`, `w#1.field`), which nobody may start by name.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::server::Served;
use common::{Project, Store, events, for_each_store, kill9, of_kind, wait_until};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EXIT_OK: i32 = 0;
const EXIT_FAILED: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_REFUSED: i32 = 3;
const EXIT_WAITING: i32 = 10;

/// One approver per team, and ines, a clerk who starts the runs and decides nothing.
const USERS: &str = r#"[users.lena]
roles = ["legal"]

[users.finn]
roles = ["finance"]

[users.sara]
roles = ["security"]

[users.ines]
roles = ["clerk"]
"#;

/// A record of three approvals, each in a branch of its own.
const DEAL: &str = r#"type Deal = { id: String, amount: Int }

workflow signoff(d: Deal) -> String {
  let r = parallel {
    legal: await approval "legal" { approvers: role("legal"), prompt: "Legal review of ${d.id}" },
    finance: await approval "finance" { approvers: role("finance"), prompt: "Pay ${d.amount}?" },
    security: await approval "security" { approvers: role("security") },
  }
  "legal=${r.legal.approved} by ${r.legal.by} (${r.legal.comment}); finance=${r.finance.approved} by ${r.finance.by}; security=${r.security.approved} by ${r.security.by} (${r.security.comment})"
}
"#;

/// A screening tool that blocks while a `hold` file exists and fails for a bad owner.
const SCREEN: &str = r#"#!/bin/sh
owner=$(cat)
while [ -e hold ]; do sleep 0.02; done
case "$owner" in
  *bad*) echo "sanctions list hit" >&2; exit 3 ;;
esac
echo '"clear"'
"#;

const ONBOARD: &str = r#"tool screen(owner: String) -> String via exec "sh tools/screen.sh"

workflow onboard(owner: String) -> String {
  let r = parallel {
    docs: await approval "docs" { approvers: role("legal") },
    screening: screen(owner),
  }
  "docs=${r.docs.approved}, screening=${r.screening}"
}

workflow signoffs(teams: List<String>) -> String {
  try {
    let by = parallel for team in teams {
      let d = await approval "signoff" { approvers: role(team), prompt: "Sign-off for ${team}" }
      if !d.approved { fail "${team} said no: ${d.comment}" }
      d.by
    }
    "signed by ${by[0]} and ${by[1]}"
  } catch e {
    "stopped: ${e.kind}: ${e.message}"
  }
}
"#;

fn project(store: &Store) -> Project {
    let project = Project::new(store);
    project.write("flow.toml", USERS);
    project
}

impl Project {
    /// `run FILE --workflow W --as USER --input INPUT --json` (plus `extra`), which must stop
    /// waiting: the run's id.
    fn start_waiting(
        &self,
        file: &str,
        workflow: &str,
        user: &str,
        input: &str,
        extra: &[&str],
    ) -> String {
        let mut args = vec![
            "run",
            file,
            "--workflow",
            workflow,
            "--as",
            user,
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
        let out = self.flowrt(&["approvals", "--json"]);
        out.expect_code(EXIT_OK);
        let mut gates: Vec<(String, String)> = out
            .json()
            .as_array()
            .unwrap()
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

    /// The runs a `runs --json` lists whose parent is `parent`, by id.
    fn branches_of(&self, parent: &str) -> BTreeMap<String, Value> {
        self.runs()
            .into_iter()
            .filter(|r| r["parent"] == parent)
            .map(|r| (r["id"].as_str().unwrap().to_string(), r))
            .collect()
    }
}

fn gate(run: &str, name: &str) -> (String, String) {
    (run.to_string(), name.to_string())
}

/// The parent's events about its `parallel`, in order, without `run_started` and the end.
fn parallel_events(history: &[Value]) -> Vec<&str> {
    events(history)
        .into_iter()
        .filter(|k| k.starts_with("parallel_") || k.starts_with("branch"))
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn three_approvals_in_parallel_are_open_at_once_and_decided_in_any_order() {
    for_each_store(|store| {
        let project = project(store);
        project.write("deal.flow", DEAL);
        let run = project.start_waiting(
            "deal.flow",
            "signoff",
            "ines",
            r#"{"d": {"id": "D-7", "amount": 900}}"#,
            &[],
        );
        let status = project.status(&run);
        assert_eq!(status["status"], "waiting", "{status}");
        assert_eq!(status["waiting_on"], "branches 3 of 3", "{status}");
        // The branches are runs `RUN.0.i` of the branch workflows, fields in order, and all
        // three gates are in the inbox together.
        let [legal, finance, security] = [0, 1, 2].map(|i| format!("{run}.0.{i}"));
        let branches = project.branches_of(&run);
        assert_eq!(
            branches.keys().cloned().collect::<Vec<_>>(),
            [legal.clone(), finance.clone(), security.clone()]
        );
        for (id, field) in [
            (&legal, "legal"),
            (&finance, "finance"),
            (&security, "security"),
        ] {
            let branch = &branches[id];
            assert_eq!(branch["workflow"], format!("signoff#1.{field}"), "{branch}");
            assert_eq!(branch["status"], "waiting", "{branch}");
            assert_eq!(
                branch["waiting_on"],
                format!("approval {field}"),
                "{branch}"
            );
        }
        assert_eq!(
            project.open_gates(),
            [
                gate(&legal, "legal"),
                gate(&finance, "finance"),
                gate(&security, "security")
            ]
        );
        let listed = project.flowrt(&["approvals", "--json"]).json();
        let prompts: BTreeSet<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| g["prompt"].as_str())
            .collect();
        assert_eq!(
            prompts,
            BTreeSet::from(["Legal review of D-7", "Pay 900?"]),
            "the prompts are evaluated with the parent's values: {listed}"
        );

        // A branch's gate keeps its rules: finance may not decide the legal review.
        project
            .flowrt(&["approve", &legal, "legal", "--as", "finn"])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("needs role legal");
        // Last first; a rejection is a decision like any other, not a failure of the branch.
        project
            .flowrt(&[
                "approve",
                &security,
                "security",
                "--as",
                "sara",
                "--comment",
                "pen test ok",
            ])
            .expect_code(EXIT_OK);
        assert_eq!(project.status(&run)["waiting_on"], "branches 2 of 3");
        project
            .flowrt(&[
                "reject",
                &legal,
                "legal",
                "--as",
                "lena",
                "--comment",
                "needs a DPA",
            ])
            .expect_code(EXIT_OK);
        assert_eq!(project.status(&run)["waiting_on"], "branches 1 of 3");
        assert_eq!(project.open_gates(), [gate(&finance, "finance")]);
        project
            .flowrt(&["approve", &finance, "finance", "--as", "finn"])
            .expect_code(EXIT_OK);

        let status = project.status(&run);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(
            status["output"],
            "legal=false by lena (needs a DPA); finance=true by finn; security=true by sara (pen test ok)"
        );
        assert!(project.open_gates().is_empty());
        let history = project.history(&run);
        assert_eq!(
            parallel_events(&history),
            [
                "parallel_started",
                "branch_started",
                "branch_started",
                "branch_started",
                "branch_completed",
                "branch_completed",
                "branch_completed",
                "parallel_completed"
            ],
            "{history:?}"
        );
        assert_eq!(events(&history).first(), Some(&"run_started"));
        assert_eq!(events(&history).last(), Some(&"run_completed"));
        let started: Vec<(&Value, &Value)> = of_kind(&history, "branch_started")
            .iter()
            .map(|e| (&e["data"]["name"], &e["data"]["run"]))
            .collect();
        assert_eq!(
            started,
            [
                (&json!("legal"), &json!(legal)),
                (&json!("finance"), &json!(finance)),
                (&json!("security"), &json!(security))
            ]
        );
        // Completed in the order decided, each with its decision.
        let completed: Vec<(&Value, &Value)> = of_kind(&history, "branch_completed")
            .iter()
            .map(|e| (&e["data"]["branch"], &e["data"]["output"]["by"]))
            .collect();
        assert_eq!(
            completed,
            [
                (&json!(2), &json!("sara")),
                (&json!(0), &json!("lena")),
                (&json!(1), &json!("finn"))
            ]
        );
        for id in [&legal, &finance, &security] {
            let branch = project.history(id);
            assert_eq!(of_kind(&branch, "gate_decided").len(), 1, "{branch:?}");
            assert_eq!(of_kind(&branch, "run_completed").len(), 1, "{branch:?}");
        }
    });
}

#[test]
fn a_failing_tool_in_one_branch_fails_the_run_and_withdraws_the_waiting_siblings_gate() {
    for_each_store(|store| {
        let project = project(store);
        project.write("tools/screen.sh", SCREEN);
        project.write("onboard.flow", ONBOARD);
        project.write("hold", "");
        let running = project
            .command(&[
                "run",
                "onboard.flow",
                "--workflow",
                "onboard",
                "--as",
                "ines",
                "--input",
                r#"{"owner": "bad corp"}"#,
                "--json",
            ])
            .spawn()
            .unwrap();
        // The documents wait for legal while the screening call is under way.
        // A loaded machine (the whole suite side by side) can take long to get there; a run
        // that ended instead is a failure at once, with what it said.
        let mut running = running;
        wait_until("the docs gate to open", Duration::from_secs(90), || {
            if let Ok(Some(status)) = running.try_wait() {
                panic!("`flowrt run` ended ({status}) before the docs gate opened");
            }
            project.open_gates().len() == 1
        });
        let runs = project.runs();
        let run = runs.iter().find(|r| r["parent"].is_null()).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let (docs, screening) = (format!("{run}.0.0"), format!("{run}.0.1"));
        assert_eq!(project.open_gates(), [gate(&docs, "docs")]);
        assert_eq!(project.status(&screening)["status"], "runnable");
        let parent = project.status(&run);
        assert!(
            ["runnable", "waiting"].contains(&parent["status"].as_str().unwrap()),
            "the parent goes on: {parent}"
        );

        std::fs::remove_file(project.path().join("hold")).unwrap();
        let output = running.wait_with_output().unwrap();
        let out = common::Out::from_output(&["run"], &output);
        out.expect_code(EXIT_FAILED);
        let status = project.status(&run);
        assert_eq!(status["status"], "failed", "{status}");
        let error = status["error"].as_str().unwrap();
        assert!(
            error.starts_with(
                "ToolError: branch 1 of the `parallel` failed: tool `screen` failed with exit status 3: sanctions list hit"
            ),
            "{error}"
        );
        assert_eq!(project.status(&screening)["status"], "failed");
        assert_eq!(project.status(&docs)["status"], "cancelled");
        // The sibling's gate left the inbox with it, and it takes no decision any more.
        assert!(project.open_gates().is_empty());
        project
            .flowrt(&["approve", &docs, "docs", "--as", "lena"])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("cancelled");
        let history = project.history(&run);
        assert_eq!(
            parallel_events(&history),
            [
                "parallel_started",
                "branch_started",
                "branch_started",
                "branch_failed",
                "branches_cancelled"
            ],
            "{history:?}"
        );
        assert_eq!(events(&history).last(), Some(&"run_failed"));
        let failed = of_kind(&history, "branch_failed");
        assert_eq!(failed[0]["data"]["branch"], 1);
        assert_eq!(failed[0]["data"]["name"], "screening");
        assert_eq!(
            of_kind(&history, "branches_cancelled")[0]["data"]["runs"],
            json!([docs])
        );
        let run_failed = of_kind(&history, "run_failed");
        assert_eq!(run_failed[0]["data"]["kind"], "ToolError");
    });
}

#[test]
fn a_rejection_failing_one_branch_is_caught_around_the_parallel_and_cancels_the_other() {
    for_each_store(|store| {
        let project = project(store);
        project.write("tools/screen.sh", SCREEN);
        project.write("onboard.flow", ONBOARD);
        let run = project.start_waiting(
            "onboard.flow",
            "signoffs",
            "ines",
            r#"{"teams": ["legal", "finance"]}"#,
            &[],
        );
        assert_eq!(project.status(&run)["waiting_on"], "branches 2 of 2");
        let (legal, finance) = (format!("{run}.0.0"), format!("{run}.0.1"));
        assert_eq!(
            project.open_gates(),
            [gate(&legal, "signoff"), gate(&finance, "signoff")]
        );
        assert_eq!(project.branches_of(&run)[&legal]["workflow"], "signoffs#1");
        project
            .flowrt(&[
                "reject",
                &finance,
                "signoff",
                "--as",
                "finn",
                "--comment",
                "too pricey",
            ])
            .expect_code(EXIT_OK);
        let status = project.status(&run);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(
            status["output"],
            "stopped: Failed: branch 1 of the `parallel` failed: finance said no: too pricey"
        );
        assert_eq!(project.status(&legal)["status"], "cancelled");
        assert!(project.open_gates().is_empty());
        project
            .flowrt(&["approve", &legal, "signoff", "--as", "lena"])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("cancelled");
        let history = project.history(&run);
        assert_eq!(
            parallel_events(&history),
            [
                "parallel_started",
                "branch_started",
                "branch_started",
                "branch_failed",
                "branches_cancelled"
            ],
            "{history:?}"
        );
        assert_eq!(events(&history).last(), Some(&"run_completed"));
        assert_eq!(
            of_kind(&history, "branches_cancelled")[0]["data"]["runs"],
            json!([legal])
        );
        // The cancelled branch's own history says who cancelled it.
        let cancelled = project.history(&legal);
        assert_eq!(events(&cancelled).last(), Some(&"run_cancelled"));
    });
}

/// A tool that answers the length of a photo's name and fails for a `.raw` one.
const ANALYSE: &str = r#"#!/bin/sh
p=$(cat | sed 's/.*"p":"\([^"]*\)".*/\1/')
case "$p" in
  *.raw) echo "cannot decode $p" >&2; exit 2 ;;
esac
echo ${#p}
"#;

#[test]
fn collect_keeps_every_branchs_value_or_error_in_order() {
    for_each_store(|store| {
        let project = project(store);
        project.write("tools/analyse.sh", ANALYSE);
        project.write(
            "photos.flow",
            r#"tool analyse(p: String) -> Int via exec "sh tools/analyse.sh"

type Result = { value: Int?, error: Error? }

workflow album(photos: List<String>) -> List<Result> {
  parallel for p in photos max 2 collect { analyse(p) }
}

workflow summary(photos: List<String>) -> String {
  let all = parallel for p in photos collect { analyse(p) }
  var text = ""
  for r in all {
    let e = r.error
    if e != none { text = text + "[${e.kind}]" } else { text = text + "[${r.value ?? -1}]" }
  }
  text
}
"#,
        );
        let input = r#"{"photos": ["a.jpg", "bb.raw", "ccc.png", "dddd.raw"]}"#;
        let out = project.flowrt(&[
            "run",
            "photos.flow",
            "--workflow",
            "album",
            "--input",
            input,
            "--json",
        ]);
        out.expect_code(EXIT_OK);
        let run = out.json();
        assert_eq!(run["status"], "completed", "{run}");
        let output = run["output"].as_array().unwrap();
        assert_eq!(output.len(), 4, "{run}");
        assert_eq!(output[0], json!({"value": 5, "error": null}));
        assert_eq!(output[2], json!({"value": 7, "error": null}));
        for (i, name) in [(1, "bb.raw"), (3, "dddd.raw")] {
            assert_eq!(output[i]["value"], Value::Null, "{run}");
            let error = &output[i]["error"];
            assert_eq!(error["kind"], "ToolError", "{error}");
            assert_eq!(
                error["message"],
                format!(
                    "branch {i} of the `parallel` failed: tool `analyse` failed with exit status 2: cannot decode {name}"
                ),
                "{error}"
            );
        }
        let id = run["id"].as_str().unwrap();
        let history = project.history(id);
        let kinds = parallel_events(&history);
        assert_eq!(kinds.iter().filter(|k| **k == "branch_failed").count(), 2);
        assert_eq!(
            kinds.iter().filter(|k| **k == "branch_completed").count(),
            2
        );
        assert!(!kinds.contains(&"branches_cancelled"), "{kinds:?}");
        assert_eq!(kinds.last(), Some(&"parallel_completed"));
        assert_open_at_most(&history, 2);
        let failed: Vec<&Value> = of_kind(&history, "branch_failed")
            .iter()
            .map(|e| &e["data"]["branch"])
            .collect();
        assert_eq!(failed, [&json!(1), &json!(3)]);

        // The workflow reads the results like any record.
        let out = project.flowrt(&[
            "run",
            "photos.flow",
            "--workflow",
            "summary",
            "--input",
            input,
            "--json",
        ]);
        out.expect_code(EXIT_OK);
        assert_eq!(out.json()["output"], "[5][ToolError][7][ToolError]");
    });
}

/// At every point of the parent's history, at most `max` branches have started and not
/// ended.
fn assert_open_at_most(history: &[Value], max: usize) {
    let mut open: i64 = 0;
    for kind in events(history) {
        match kind {
            "branch_started" => open += 1,
            "branch_completed" | "branch_failed" => open -= 1,
            _ => {}
        }
        assert!(
            (0..=max as i64).contains(&open),
            "{open} branches open at once: {:?}",
            events(history)
        );
    }
}

#[test]
fn a_timeout_around_a_parallel_cancels_the_branches_still_waiting() {
    for_each_store(|store| {
        let project = project(store);
        project.write(
            "quick.flow",
            r#"workflow quick(id: String) -> String {
  try {
    let by = timeout 2h {
      parallel for team in ["legal", "finance", "security"] {
        let d = await approval "signoff" { approvers: role(team) }
        d.by
      }
    }
    "signed by ${by[0]}, ${by[1]} and ${by[2]}"
  } catch e {
    "not signed in time: ${e.kind}"
  }
}
"#,
        );
        let run = project.start_waiting(
            "quick.flow",
            "quick",
            "ines",
            r#"{"id": "Q1"}"#,
            &["--test-clock"],
        );
        let [legal, finance, security] = [0, 1, 2].map(|i| format!("{run}.0.{i}"));
        project
            .flowrt(&["approve", &legal, "signoff", "--as", "lena"])
            .expect_code(EXIT_OK);
        project.flowrt(&["clock", "advance", "119m"]).expect_code(0);
        let status = project.status(&run);
        assert_eq!(status["waiting_on"], "branches 2 of 3", "{status}");
        assert_eq!(project.open_gates().len(), 2);
        project.flowrt(&["clock", "advance", "2m"]).expect_code(0);
        let status = project.status(&run);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], "not signed in time: Timeout");
        assert_eq!(project.status(&legal)["status"], "completed");
        assert_eq!(project.status(&finance)["status"], "cancelled");
        assert_eq!(project.status(&security)["status"], "cancelled");
        assert!(project.open_gates().is_empty());
        let history = project.history(&run);
        let cancelled = of_kind(&history, "branches_cancelled");
        assert_eq!(cancelled.len(), 1, "{history:?}");
        assert_eq!(cancelled[0]["data"]["runs"], json!([finance, security]));
        assert!(of_kind(&history, "parallel_completed").is_empty());
        assert_eq!(of_kind(&history, "step_timed_out").len(), 1);
    });
}

/// Logs `start KEY ITEM MS` and `done KEY ITEM MS` around a short sleep.
const EXTRACT: &str = r#"#!/bin/sh
item=$(cat | sed 's/.*"item":"\([^"]*\)".*/\1/')
echo "start $FLOW_IDEMPOTENCY_KEY $item $(date +%s%3N)" >> effects.log
sleep 0.2
echo "done $FLOW_IDEMPOTENCY_KEY $item $(date +%s%3N)" >> effects.log
echo "\"seen $item\""
"#;

/// One line of the tool's log.
struct Effect {
    what: String,
    key: String,
    item: String,
    at: i64,
}

fn effects(project: &Project) -> Vec<Effect> {
    let text = std::fs::read_to_string(project.path().join("effects.log")).unwrap_or_default();
    text.lines()
        .map(|l| {
            // The item is empty when the worker died before it wrote the tool's input.
            let parts: Vec<&str> = l.split(' ').collect();
            assert_eq!(parts.len(), 4, "a log line: {l:?}");
            Effect {
                what: parts[0].to_string(),
                key: parts[1].to_string(),
                item: parts[2].to_string(),
                at: parts[3].parse().unwrap(),
            }
        })
        .collect()
}

/// Twelve branches, three at a time, each a 200 ms tool call; the worker is killed with
/// SIGKILL every 300–700 ms and a new one started, until the run completes. The result is
/// whole and in order; no branch started twice or ended twice; and a call ran again only
/// when a worker died while it was in flight, with the same idempotency key, never once its
/// result was committed.
#[test]
fn a_worker_killed_again_and_again_repeats_no_completed_branch_step() {
    for_each_store(|store| {
        const ITEMS: usize = 12;
        const MOST_KILLS: usize = 14;
        let project = Project::new(store).with_env("FLOW_LEASE_MS", "150");
        project.write("tools/extract.sh", EXTRACT);
        project.write(
            "batch.flow",
            r#"tool extract(item: String) -> String via exec "sh tools/extract.sh"

workflow batch(items: List<String>) -> List<String> {
  let found = parallel for item in items max 3 { extract(item) }
  found
}
"#,
        );
        let items: Vec<String> = (0..ITEMS).map(|i| format!("doc-{i:02}")).collect();
        let input = json!({ "items": items }).to_string();
        project
            .flowrt(&["start", "batch.flow", "--input", &input])
            .expect_code(EXIT_OK);
        let run = project.runs()[0]["id"].as_str().unwrap().to_string();

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
            if kills.len() == MOST_KILLS {
                // Enough: the last worker finishes the run.
                wait_until("the run to complete", Duration::from_secs(30), || {
                    project.status(&run)["status"] == "completed"
                });
                kill9(&mut worker);
                break;
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(300 + seed % 400));
            let before = now_ms();
            kill9(&mut worker);
            kills.push((before, now_ms()));
            let status = project.status(&run);
            if status["status"] == "completed" {
                break;
            }
            // Waiting for its branches, or killed while it drove them.
            assert!(
                ["waiting", "runnable"].contains(&status["status"].as_str().unwrap()),
                "{status}"
            );
            assert!(began.elapsed() < Duration::from_secs(40), "never completed");
        }
        assert!(kills.len() >= 2, "only {} kills", kills.len());

        let expected: Vec<String> = items.iter().map(|i| format!("seen {i}")).collect();
        assert_eq!(project.status(&run)["output"], json!(expected));

        // Every branch ran to its end once: twelve runs `RUN.0.i`, each started and
        // completed once, and the parent recorded each once.
        let ids: Vec<String> = (0..ITEMS).map(|i| format!("{run}.0.{i}")).collect();
        let branches = project.branches_of(&run);
        assert_eq!(
            branches.keys().cloned().collect::<BTreeSet<_>>(),
            ids.iter().cloned().collect::<BTreeSet<_>>()
        );
        assert_eq!(project.runs().len(), ITEMS + 1);
        let history = project.history(&run);
        for (kind, count) in [
            ("parallel_started", 1),
            ("branch_started", ITEMS),
            ("branch_completed", ITEMS),
            ("branch_failed", 0),
            ("branches_cancelled", 0),
            ("parallel_completed", 1),
            ("run_completed", 1),
        ] {
            assert_eq!(of_kind(&history, kind).len(), count, "{kind}: {history:?}");
        }
        for kind in ["branch_started", "branch_completed"] {
            let indices: BTreeSet<u64> = of_kind(&history, kind)
                .iter()
                .map(|e| e["data"]["branch"].as_u64().unwrap())
                .collect();
            assert_eq!(indices, (0..ITEMS as u64).collect(), "{kind}");
        }
        for e in of_kind(&history, "branch_completed") {
            let i = e["data"]["branch"].as_u64().unwrap() as usize;
            assert_eq!(e["data"]["output"], expected[i]);
        }
        assert_open_at_most(&history, 3);

        let log = effects(&project);
        let mut resumes_after_kill = vec![0; kills.len()];
        for (i, id) in ids.iter().enumerate() {
            let branch = &branches[id];
            assert_eq!(branch["status"], "completed", "{branch}");
            let h = project.history(id);
            assert_eq!(of_kind(&h, "run_started").len(), 1, "{id}");
            assert_eq!(of_kind(&h, "run_completed").len(), 1, "{id}");
            // Its one step: started, then (resumed after a crash, started again) as often as
            // a worker died with the call in flight, then completed once.
            let steps: Vec<&Value> = h
                .iter()
                .filter(|e| e["kind"].as_str().unwrap().starts_with("step_"))
                .collect();
            let kinds: Vec<&str> = steps.iter().map(|e| e["kind"].as_str().unwrap()).collect();
            assert_eq!(kinds.first(), Some(&"step_started"), "{id}: {kinds:?}");
            assert_eq!(kinds.last(), Some(&"step_completed"), "{id}: {kinds:?}");
            for pair in kinds[1..kinds.len() - 1].chunks(2) {
                assert_eq!(pair, ["step_resumed", "step_started"], "{id}: {kinds:?}");
            }
            let key = format!("{id}:0");
            for e in &steps[..steps.len() - 1] {
                assert_eq!(e["data"]["idempotency_key"], key, "{id}: {e}");
            }
            // The worker that began the call died at the first kill after it began.
            let resumed_calls = steps
                .windows(2)
                .filter(|w| w[1]["kind"] == "step_resumed")
                .map(|w| (w[0]["at"].as_i64().unwrap(), w[1]["at"].as_i64().unwrap()));
            for (at, resumed) in resumed_calls {
                let kill = kills
                    .iter()
                    .position(|&(before, after)| at <= after && before <= resumed);
                let Some(kill) = kill else {
                    panic!(
                        "{id}: resumed at {resumed} with no kill since it began at {at}: {kills:?}"
                    )
                };
                resumes_after_kill[kill] += 1;
            }
            // The tool saw the branch's item with the step's key, once per attempt at most,
            // and never after the step's result was committed.
            let committed = steps.last().unwrap()["at"].as_i64().unwrap();
            let starts: Vec<&Effect> = log
                .iter()
                .filter(|e| e.what == "start" && e.key == key)
                .collect();
            let attempts = kinds.iter().filter(|k| **k == "step_started").count();
            assert!(
                (1..=attempts).contains(&starts.len()),
                "{id}: {} calls for {attempts} attempts",
                starts.len()
            );
            for start in &starts {
                assert!(
                    start.item == items[i] || start.item.is_empty(),
                    "{id}: called for {:?}",
                    start.item
                );
                assert!(
                    start.at <= committed,
                    "{id}: called at {} after its result was committed at {committed}",
                    start.at
                );
            }
            assert!(
                log.iter()
                    .any(|e| e.what == "done" && e.key == key && e.item == items[i]),
                "{id}: no call finished"
            );
        }
        // A kill stops at most the three calls of the branches open then.
        assert!(
            resumes_after_kill.iter().all(|n| *n <= 3),
            "{resumes_after_kill:?}"
        );
        assert!(
            resumes_after_kill.iter().sum::<usize>() >= 1,
            "no kill landed during a call: {kills:?}"
        );
        let keys: BTreeSet<&str> = log.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys.len(),
            ITEMS,
            "calls only for the branches' steps: {keys:?}"
        );
    });
}

#[test]
fn a_branch_workflow_cannot_be_started_by_name() {
    for_each_store(|store| {
        let project = project(store);
        project.write("deal.flow", DEAL);
        project.write("tools/screen.sh", SCREEN);
        project.write("onboard.flow", ONBOARD);
        let input = r#"{"d": {"id": "D-1", "amount": 1}}"#;
        for (file, workflow, input, available) in [
            ("deal.flow", "signoff#1.legal", input, "signoff"),
            ("deal.flow", "signoff#1.finance", "{}", "signoff"),
            (
                "onboard.flow",
                "signoffs#1",
                r#"{"team": "legal"}"#,
                "onboard, signoffs",
            ),
            (
                "onboard.flow",
                "onboard#1.screening",
                r#"{"owner": "x"}"#,
                "onboard, signoffs",
            ),
        ] {
            for command in ["run", "start"] {
                project
                    .flowrt(&[command, file, "--workflow", workflow, "--input", input])
                    .expect_code(EXIT_USAGE)
                    .expect_stderr(&format!(
                        "no workflow named `{workflow}` (the program has: {available})"
                    ));
            }
        }
        assert!(project.runs().is_empty(), "nothing was started");
        // A program with one workflow of its own still needs no `--workflow`.
        project
            .flowrt(&["run", "deal.flow", "--as", "ines", "--input", input])
            .expect_code(EXIT_WAITING)
            .expect_stdout("branches 3 of 3");
        project
            .flowrt(&["deploy", "onboard.flow"])
            .expect_code(EXIT_OK)
            .expect_stdout(": onboard, signoffs");
    });
}

#[test]
fn the_api_neither_lists_nor_starts_a_branch_workflow() {
    for_each_store(|store| {
        let served = Served::start(store, DEAL, USERS, &[]);
        let ines = served.token("ines", &[]);
        let listed = served.call("GET", "/api/workflows", Some(&ines), None, 200);
        let names: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["signoff"]);
        for workflow in ["signoff#1.legal", "signoff#1.security"] {
            served.call(
                "POST",
                "/api/runs",
                Some(&ines),
                Some(json!({ "workflow": workflow, "input": {} })),
                404,
            );
        }
        let runs = served.call("GET", "/api/runs", Some(&ines), None, 200);
        assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs}");
    });
}

/// Cancelling a run that waits on its branches must cancel them too: otherwise their gates
/// stay in everyone's inbox for a run that is over, and deciding them drives orphan runs.
#[test]
fn cancelling_the_parent_cancels_its_branches_and_withdraws_their_gates() {
    for_each_store(|store| {
        let project = project(store);
        project.write("deal.flow", DEAL);
        let run = project.start_waiting(
            "deal.flow",
            "signoff",
            "ines",
            r#"{"d": {"id": "D-3", "amount": 5}}"#,
            &[],
        );
        assert_eq!(project.open_gates().len(), 3);
        project
            .flowrt(&["cancel", &run, "--as", "ines"])
            .expect_code(EXIT_OK);
        assert_eq!(project.status(&run)["status"], "cancelled");
        for i in 0..3 {
            let branch = project.status(&format!("{run}.0.{i}"));
            assert_eq!(branch["status"], "cancelled", "{branch}");
        }
        assert!(
            project.open_gates().is_empty(),
            "{:?}",
            project.open_gates()
        );
    });
}

/// Four-eyes: the user who started a run may not approve its gates. A gate in a branch is a
/// gate of the run she started.
#[test]
fn the_starter_may_not_approve_a_gate_in_a_branch_of_her_run() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write("flow.toml", "[users.lena]\nroles = [\"legal\"]\n");
        project.write("deal.flow", DEAL);
        let run = project.start_waiting(
            "deal.flow",
            "signoff",
            "lena",
            r#"{"d": {"id": "D-4", "amount": 5}}"#,
            &[],
        );
        project
            .flowrt(&["approve", &format!("{run}.0.0"), "legal", "--as", "lena"])
            .expect_code(EXIT_REFUSED)
            .expect_stderr("four-eyes");
    });
}
