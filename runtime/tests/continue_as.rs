//! `continue as` through `flowrt`, on both stores: a run ends as `continued` and its successor
//! (`RUN~2`, `~3`, …) goes on with a fresh history; `flowrt run` follows the chain; a parent
//! gets the result of the run its child's chain ends with; the successor's input keeps
//! secrets redacted; and a kill -9 storm over chains of continued runs starts every successor
//! exactly once and repeats no committed step.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, for_each_store, of_kind};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHAIN: &str = r#"tool step(n: Int) -> Int via exec "sh tools/step.sh"

/// One step per run: each run's history holds one tool call.
workflow chain(n: Int, total: Int, last: Int) -> Int {
  let t = total + step(n)
  if n < last { continue as chain(n + 1, t, last) }
  t
}

workflow parent(last: Int) -> Int {
  chain(1, 0, last) + 1
}
"#;

/// Logs `start KEY` and `done KEY` around its answer, `n * 10`.
const STEP_TOOL: &str = r#"#!/bin/sh
input=$(cat)
n=$(printf '%s' "$input" | sed 's/[^0-9]//g')
echo "start $FLOW_IDEMPOTENCY_KEY" >> effects.log
if [ -n "$STEP_DELAY" ]; then sleep "$STEP_DELAY"; fi
echo "done $FLOW_IDEMPOTENCY_KEY" >> effects.log
echo $((n * 10))
"#;

fn project(store: &common::Store) -> Project {
    let project = Project::new(store);
    project.write("tools/step.sh", STEP_TOOL);
    project.write("chain.flow", CHAIN);
    project
}

/// The ids of a chain that starts at `first` and has `length` runs.
fn chain_ids(first: &str, length: usize) -> Vec<String> {
    std::iter::once(first.to_string())
        .chain((2..=length).map(|k| format!("{first}~{k}")))
        .collect()
}

fn started_keys(project: &Project) -> Vec<String> {
    std::fs::read_to_string(project.path().join("effects.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("start ").map(str::to_string))
        .collect()
}

#[test]
fn flowrt_run_follows_a_chain_of_continued_runs_to_its_result() {
    for_each_store(|store| {
        let project = project(store);
        let out = project.flowrt(&[
            "run",
            "chain.flow",
            "--workflow",
            "chain",
            "--input",
            r#"{"n": 1, "total": 0, "last": 4}"#,
            "--json",
        ]);
        out.expect_code(0);
        let last = out.json();
        assert_eq!(last["status"], "completed", "{last}");
        assert_eq!(last["output"], 100);
        let last_id = last["id"].as_str().unwrap();
        let first = last_id
            .strip_suffix("~4")
            .expect("the fourth run of the chain");
        let ids = chain_ids(first, 4);

        let runs = project.runs();
        assert_eq!(runs.len(), 4, "{runs:?}");
        for (k, id) in ids.iter().enumerate() {
            let run = project.status(id);
            let history = project.history(id);
            // Each run's history is its own: one call, one start, one end.
            assert_eq!(of_kind(&history, "step_completed").len(), 1, "{id}");
            let started = &of_kind(&history, "run_started")[0];
            let started_data = &started["data"];
            assert_eq!(run["started_by"], "operator");
            if k == 0 {
                assert!(started_data.get("continued_from").is_none(), "{started}");
            } else {
                assert_eq!(
                    started_data["continued_from"],
                    ids[k - 1].as_str(),
                    "{started}"
                );
            }
            if k < 3 {
                assert_eq!(run["status"], "continued", "{run}");
                assert_eq!(run["continued_as"], ids[k + 1].as_str(), "{run}");
                assert!(run["output"].is_null());
                let continued = of_kind(&history, "run_continued");
                assert_eq!(continued.len(), 1, "{history:?}");
                assert_eq!(continued[0]["data"]["run"], ids[k + 1].as_str());
                assert_eq!(
                    continued[0]["data"]["input"],
                    serde_json::json!({ "n": k as i64 + 2, "total": (k as i64 + 1) * (k as i64 + 2) * 5, "last": 4 })
                );
            } else {
                assert!(run.get("continued_as").is_none(), "{run}");
            }
        }

        // A person reading the list sees where each run went.
        let text = project.flowrt(&["runs"]);
        text.expect_code(0)
            .expect_stdout(&format!("continued as {}", ids[1]));
        // Filtering by the new status works.
        let filtered = project.flowrt(&["runs", "--status", "continued", "--json"]);
        filtered.expect_code(0);
        assert_eq!(filtered.json().as_array().unwrap().len(), 3);
    });
}

#[test]
fn a_parent_under_a_worker_gets_the_result_of_its_childs_last_run() {
    for_each_store(|store| {
        let project = project(store);
        let started = project.flowrt(&[
            "start",
            "chain.flow",
            "--workflow",
            "parent",
            "--input",
            r#"{"last": 3}"#,
            "--json",
        ]);
        started.expect_code(0);
        let parent = started.json()["id"].as_str().unwrap().to_string();
        project.flowrt(&["worker", "--once"]).expect_code(0);
        let run = project.status(&parent);
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["output"], 61);
        // The child's chain: each run has the parent as its parent, the last one completed.
        let child_runs: Vec<serde_json::Value> = project
            .runs()
            .into_iter()
            .filter(|r| r["parent"] == parent.as_str())
            .collect();
        assert_eq!(child_runs.len(), 3, "{child_runs:?}");
        let history = project.history(&parent);
        let completed = of_kind(&history, "child_completed");
        assert_eq!(completed.len(), 1);
        let last_child = completed[0]["data"]["run"].as_str().unwrap();
        assert!(last_child.ends_with("~3"), "{last_child}");
        assert_eq!(project.status(last_child)["status"], "completed");
    });
}

#[test]
fn a_secret_passed_on_by_continue_as_is_redacted_in_every_record() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write(
            "keyed.flow",
            r#"tool use_key(k: Secret) -> Int via exec "sh -c 'cat >/dev/null; echo 1'"

workflow keyed(key: Secret, rounds: Int) -> Int {
  let n = use_key(key)
  if rounds > 0 { continue as keyed(key, rounds - 1) }
  n
}
"#,
        );
        let secret = "sk-continue-7f3a9b2c1d";
        let out = project.flowrt(&[
            "run",
            "keyed.flow",
            "--input",
            &format!(r#"{{"key": "{secret}", "rounds": 2}}"#),
            "--json",
        ]);
        out.expect_code(0);
        assert_eq!(out.json()["status"], "completed", "{}", out.all());
        assert!(!out.all().contains(secret));
        for run in project.runs() {
            let id = run["id"].as_str().unwrap();
            let history = project.flowrt(&["history", id, "--json"]);
            assert!(!history.all().contains(secret), "{id}: {}", history.all());
            let export = project.flowrt(&["audit", id]);
            assert!(!export.all().contains(secret), "{id}");
        }
        if let Some(file) = project.db().sqlite_path() {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                !common::contains(&bytes, secret),
                "the secret is in {file:?}"
            );
        } else {
            for table in ["runs", "events"] {
                let sql =
                    format!("SELECT count(*) FROM {table} WHERE CAST({table} AS TEXT) LIKE $1");
                let count = project.db().query_i64(&sql, &[&format!("%{secret}%")]);
                assert_eq!(count, Some(0), "the secret is in table {table}");
            }
        }
    });
}

fn kill9(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[test]
fn random_kills_over_chains_start_each_successor_once_and_repeat_no_committed_step() {
    for_each_store(|store| {
        const CHAINS: usize = 4;
        const LENGTH: usize = 10;
        let project = project(store).with_env("FLOW_LEASE_MS", "60");
        let mut firsts = Vec::new();
        for _ in 0..CHAINS {
            let out = project.flowrt(&[
                "start",
                "chain.flow",
                "--workflow",
                "chain",
                "--input",
                &format!(r#"{{"n": 1, "total": 0, "last": {LENGTH}}}"#),
                "--json",
            ]);
            out.expect_code(0);
            firsts.push(out.json()["id"].as_str().unwrap().to_string());
        }
        let done = |project: &Project| {
            project
                .runs()
                .iter()
                .filter(|r| r["status"] == "completed")
                .count()
                == CHAINS
        };
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut kills = 0;
        while !done(&project) {
            assert!(kills < 600, "the chains never completed");
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut worker = project
                .command(&["worker"])
                .env("STEP_DELAY", "0.05")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Shorter than a step and a start-up on average: most workers die mid-call or
            // mid-commit. The lives grow with the kills, so that a slow machine still finishes.
            std::thread::sleep(Duration::from_millis(20 + seed % 100 + kills / 4));
            kill9(&mut worker);
            kills += 1;
        }
        assert!(kills >= 10, "only {kills} kills: make the chains longer");

        let runs = project.runs();
        assert_eq!(
            runs.len(),
            CHAINS * LENGTH,
            "no successor was started twice"
        );
        let keys = started_keys(&project);
        for first in &firsts {
            let ids = chain_ids(first, LENGTH);
            for (k, id) in ids.iter().enumerate() {
                let run = project.status(id);
                let history = project.history(id);
                if k + 1 < LENGTH {
                    assert_eq!(run["status"], "continued", "{run}");
                    assert_eq!(of_kind(&history, "run_continued").len(), 1, "{id}");
                } else {
                    assert_eq!(run["status"], "completed", "{run}");
                    let sum: i64 = (1..=LENGTH as i64).map(|n| n * 10).sum();
                    assert_eq!(run["output"], sum, "{run}");
                }
                assert_eq!(of_kind(&history, "run_started").len(), 1, "{id}");
                assert_eq!(of_kind(&history, "step_completed").len(), 1, "{id}");
                // The run's one call ran under its own key; again only when it was in flight
                // at a kill (then the history says `step_resumed`).
                let key = format!("{id}:0");
                let starts = keys.iter().filter(|k| **k == key).count();
                let resumed = of_kind(&history, "step_resumed").len();
                assert!(
                    starts >= 1 && starts <= 1 + resumed,
                    "{id}: {starts} starts, {resumed} resumed"
                );
            }
        }
    });
}
