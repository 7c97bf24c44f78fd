//! Durability, shown by killing `flowrt` with SIGKILL at the worst moments and resuming:
//! (a) while an `exec` tool runs, (b) while a run sleeps, (c) at random moments, 30+ times,
//! over a 20-step workflow. A side-effect log written by the tool shows that no step ran
//! again once its result was committed, and that a step in flight at a kill ran again only
//! with the same idempotency key.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, Store, for_each_store};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A project whose `flowrt` processes hold short claims, so a run whose process was killed
/// can be taken over quickly.
fn project(store: &Store) -> Project {
    Project::new(store).with_env("FLOW_LEASE_MS", "150")
}

impl Project {
    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().unwrap()
    }

    /// The tool's side-effect log: (`start` or `done`, idempotency key) per line.
    fn log(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.path().join("effects.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .collect()
    }

    fn only_run(&self) -> serde_json::Value {
        let runs = self.runs();
        assert_eq!(runs.len(), 1, "{runs:?}");
        runs[0].clone()
    }
}

/// A tool that logs `start KEY` and `done KEY`, and blocks while a `hold` file exists.
const STEP_TOOL: &str = r#"#!/bin/sh
input=$(cat)
n=$(printf '%s' "$input" | sed 's/[^0-9]//g')
echo "start $FLOW_IDEMPOTENCY_KEY" >> effects.log
while [ -e "hold-$n" ]; do sleep 0.02; done
if [ -n "$STEP_DELAY" ]; then sleep "$STEP_DELAY"; fi
echo "done $FLOW_IDEMPOTENCY_KEY" >> effects.log
echo $((n * 10))
"#;

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill9(child: &mut Child) {
    // SIGKILL: no destructor, no flush, no cleanup.
    unsafe_free_kill(child.id());
    let _ = child.wait();
}

fn unsafe_free_kill(pid: u32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success() || pid == 0);
}

fn keys_in_order(log: &[(String, String)], what: &str) -> Vec<String> {
    log.iter()
        .filter(|(w, _)| w == what)
        .map(|(_, k)| k.clone())
        .collect()
}

#[test]
fn a_kill_during_a_tool_call_reruns_that_step_once_with_the_same_key() {
    for_each_store(|store| {
        let project = project(store);
        project.write("tools/step.sh", STEP_TOOL);
        project.write(
            "three.flow",
            r#"tool step(n: Int) -> Int via exec "sh tools/step.sh"

workflow three() -> Int {
  let a = step(1)
  let b = step(2)
  let c = step(3)
  a + b + c
}
"#,
        );
        project.write("hold-2", "");
        let mut running = project.spawn(&["run", "three.flow"]);
        wait_until("step 2 to start", Duration::from_secs(30), || {
            keys_in_order(&project.log(), "start").len() == 2
        });
        kill9(&mut running);
        std::fs::remove_file(project.path().join("hold-2")).unwrap();
        std::thread::sleep(Duration::from_millis(300)); // the dead process's claim expires

        let resumed = project.output(&["worker", "--once"]);
        assert!(
            resumed.status.success(),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        let run = project.only_run();
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["output"], 60);

        let log = project.log();
        let starts = keys_in_order(&log, "start");
        let id = run["id"].as_str().unwrap();
        let key = |step: u32| format!("{id}:{step}");
        // Step 1 (key :0) ran once; step 2 (key :1) was in flight and ran again with the same
        // key; step 3 ran once.
        assert_eq!(starts, vec![key(0), key(1), key(1), key(2)]);
        // The killed process's tool child is not killed with it (nothing can clean up after
        // SIGKILL), so the first attempt of step 2 may still finish on its own: at-least-once.
        let done = keys_in_order(&log, "done");
        assert!(
            done.starts_with(&[key(0)]) && done.ends_with(&[key(2)]),
            "{done:?}"
        );
        assert!(
            (1..=2).contains(&done.iter().filter(|k| **k == key(1)).count()),
            "{done:?}"
        );
        let events: Vec<String> = project
            .history(id)
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        assert!(events.contains(&"step_resumed".to_string()), "{events:?}");
    });
}

#[test]
fn a_kill_while_a_run_sleeps_loses_nothing_and_repeats_nothing() {
    for_each_store(|store| {
        let project = project(store);
        project.write("tools/step.sh", STEP_TOOL);
        project.write(
            "nap.flow",
            r#"tool step(n: Int) -> Int via exec "sh tools/step.sh"

workflow nap() -> Int {
  let a = step(1)
  sleep 1s
  let b = step(2)
  a + b
}
"#,
        );
        let waiting = project.output(&["run", "nap.flow", "--max-wait", "0s"]);
        assert_eq!(
            waiting.status.code(),
            Some(10),
            "{}",
            String::from_utf8_lossy(&waiting.stderr)
        );
        // A worker that waits for the timer, killed while it waits.
        let mut worker = project.spawn(&["worker"]);
        std::thread::sleep(Duration::from_millis(300));
        kill9(&mut worker);
        assert_eq!(project.only_run()["status"], "waiting");

        std::thread::sleep(Duration::from_millis(900));
        let resumed = project.output(&["worker", "--once"]);
        assert!(resumed.status.success());
        let run = project.only_run();
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["output"], 30);
        assert_eq!(keys_in_order(&project.log(), "start").len(), 2);
    });
}

#[test]
fn thirty_random_kills_over_twenty_step_runs_never_repeat_a_committed_step() {
    for_each_store(|store| {
        const RUNS: usize = 10;
        let project = project(store);
        project.write("tools/step.sh", STEP_TOOL);
        project.write(
            "twenty.flow",
            r#"tool step(n: Int) -> Int via exec "sh tools/step.sh"

workflow twenty() -> Int {
  var total = 0
  var i = 1
  while i <= 20 {
    total = total + step(i)
    i = i + 1
  }
  total
}
"#,
        );
        for _ in 0..RUNS {
            let started = project.output(&["start", "twenty.flow"]);
            assert!(
                started.status.success(),
                "{}",
                String::from_utf8_lossy(&started.stderr)
            );
        }
        let all_runs = || project.runs();
        let unfinished = || {
            all_runs()
                .iter()
                .filter(|r| r["status"] != "completed")
                .count()
        };

        // A cheap deterministic "random" sequence of delays between 50 and 400 ms. Each step
        // takes about 100 ms and each run needs 20 of them one after the other (a worker makes
        // the runs' calls side by side, on its pool of threads), so this takes well over 30
        // workers, most of them killed with calls of several runs in flight.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut kills = 0;
        while unfinished() > 0 {
            assert!(kills < 1000, "the runs never completed");
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let delay = 50 + seed % 350;
            let mut worker = project.command(&["worker"]);
            let mut worker = worker
                .env("STEP_DELAY", "0.1")
                .env("FLOW_LEASE_MS", "60")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay));
            kill9(&mut worker);
            kills += 1;
        }
        assert!(kills >= 30, "only {kills} kills: make the runs longer");

        let runs = all_runs();
        assert_eq!(runs.len(), RUNS);
        let log = project.log();
        for run in &runs {
            assert_eq!(
                run["output"],
                (1..=20).map(|n| n * 10).sum::<i64>(),
                "{run}"
            );
            // The tool's own log for this run: keys only move forward; a key repeats only right
            // after itself (the step was in flight when a process died), never once a later
            // step has begun — so no step ran again once its result was committed.
            let id = run["id"].as_str().unwrap();
            let prefix = format!("{id}:");
            let starts: Vec<u64> = keys_in_order(&log, "start")
                .iter()
                .filter_map(|k| k.strip_prefix(&prefix)?.parse().ok())
                .collect();
            let mut last = 0;
            for &step in &starts {
                assert!(
                    step >= last,
                    "{id}: step {step} ran again after step {last} had begun: {starts:?}"
                );
                last = step;
            }
            let distinct: std::collections::BTreeSet<u64> = starts.iter().copied().collect();
            assert_eq!(distinct, (0..20).collect(), "{id}: {starts:?}");
        }
    });
}

#[test]
fn a_kill_right_after_a_decision_neither_loses_nor_repeats_it() {
    for_each_store(|store| {
        let project = project(store);
        project.write("tools/step.sh", STEP_TOOL);
        project.write(
            "flow.toml",
            "[users.ana]\nroles = [\"ops\"]\n\n[users.bob]\nroles = []\n",
        );
        project.write(
            "gated.flow",
            r#"tool step(n: Int) -> Int via exec "sh tools/step.sh"

workflow gated() -> Int {
  let d = await approval "go" { approvers: role("ops") }
  if !d.approved {
    return 0
  }
  step(1) + step(2)
}
"#,
        );
        let waiting = project.output(&["run", "gated.flow", "--as", "bob"]);
        assert_eq!(
            waiting.status.code(),
            Some(10),
            "{}",
            String::from_utf8_lossy(&waiting.stderr)
        );
        let id = project.only_run()["id"].as_str().unwrap().to_string();

        // The decision is committed, then the run moves on into step 1, which blocks: kill the
        // approving process there.
        project.write("hold-1", "");
        let mut approving = project.spawn(&["approve", &id, "go", "--as", "ana"]);
        wait_until("step 1 to start", Duration::from_secs(30), || {
            keys_in_order(&project.log(), "start").len() == 1
        });
        kill9(&mut approving);
        std::fs::remove_file(project.path().join("hold-1")).unwrap();

        // The decision stands: once the dead process's claim expires, deciding again is refused
        // as already decided, and a worker finishes the run.
        std::thread::sleep(Duration::from_millis(300));
        let again = project.output(&["approve", &id, "go", "--as", "ana"]);
        assert_eq!(
            again.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert!(String::from_utf8_lossy(&again.stderr).contains("already decided"));
        let resumed = project.output(&["worker", "--once"]);
        assert!(
            resumed.status.success(),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        let run = project.only_run();
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["output"], 30);
        let decided = project
            .history(&id)
            .iter()
            .filter(|e| e["kind"] == "gate_decided")
            .count();
        assert_eq!(decided, 1, "the decision is recorded exactly once");
    });
}

#[test]
fn retry_backoff_waits_durably_across_restarts_without_losing_or_repeating_attempts() {
    for_each_store(|store| {
        let project = project(store);
        // Fails on its first two calls, then answers; counts its calls in a file.
        project.write(
            "tools/flaky.sh",
            r#"#!/bin/sh
cat > /dev/null
n=$(cat calls 2>/dev/null || echo 0)
n=$((n + 1))
echo $n > calls
echo "start $FLOW_IDEMPOTENCY_KEY" >> effects.log
if [ $n -le 2 ]; then echo "busy" >&2; exit 1; fi
echo 7
"#,
        );
        project.write(
            "flaky.flow",
            r#"tool flaky() -> Int via exec "sh tools/flaky.sh"

workflow patient() -> Int {
  retry 5 backoff 1h max 4h { flaky() }
}
"#,
        );
        let created = project.output(&["--test-clock", "run", "flaky.flow"]);
        assert_eq!(
            created.status.code(),
            Some(10),
            "{}",
            String::from_utf8_lossy(&created.stderr)
        );
        // Each process only advances the clock and fires what is due: one attempt per wait.
        let advance = |by: &str| {
            let out = project.output(&["clock", "advance", by]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        advance("1h");
        assert_eq!(
            project.only_run()["status"],
            "waiting",
            "the second attempt failed too"
        );
        advance("2h");
        let run = project.only_run();
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["output"], 7);
        let id = run["id"].as_str().unwrap().to_string();
        let history = project.history(&id);
        let attempts: Vec<i64> = history
            .iter()
            .filter(|e| e["kind"] == "step_started")
            .map(|e| e["attempt"].as_i64().unwrap())
            .collect();
        assert_eq!(attempts, vec![1, 2, 3], "each attempt once, numbered");
        let failed = history
            .iter()
            .filter(|e| e["kind"] == "step_failed")
            .count();
        assert_eq!(failed, 2);
        assert_eq!(
            std::fs::read_to_string(project.path().join("calls"))
                .unwrap()
                .trim(),
            "3"
        );
    });
}

/// Workers started together share the ready runs: none stops because another took a run it
/// had let go of, and every run completes once.
#[test]
fn workers_started_together_share_the_runs_without_failing() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write("t.sh", "cat > /dev/null; echo '\"ok\"'\n");
        project.write(
            "w.flow",
            "tool t(n: Int) -> String via exec \"sh t.sh\"\nworkflow w(n: Int) -> String { t(n) }\n",
        );
        for n in 0..120 {
            project
                .flowrt(&["start", "w.flow", "--input", &format!("{{\"n\": {n}}}")])
                .expect_code(0);
        }
        let workers: Vec<_> = (0..4)
            .map(|_| {
                project
                    .command(&["worker", "--once"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for worker in workers {
            let output = worker.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "a worker failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let runs = project.runs();
        assert_eq!(runs.len(), 120);
        assert!(runs.iter().all(|r| r["status"] == "completed"), "{runs:?}");
        for run in &runs {
            let id = run["id"].as_str().unwrap();
            let history = project.history(id);
            let completed = history
                .iter()
                .filter(|e| e["kind"] == "run_completed")
                .count();
            assert_eq!(completed, 1, "run {id}");
        }
    });
}

/// After a durable `sleep`, code sees the time the run woke at: a `timeout` right after the
/// sleep bounds the tool from then on, instead of starting already expired.
#[test]
fn a_timeout_right_after_a_sleep_counts_from_the_wake_up() {
    for_each_store(|store| {
        let project = project(store);
        project.write("tools/quick.sh", "cat > /dev/null\necho 5\n");
        project.write(
            "nap.flow",
            r#"tool quick() -> Int via exec "sh tools/quick.sh"

workflow nap() -> Int {
  sleep 2s
  timeout 1500ms { quick() }
}
"#,
        );
        let waiting = project.output(&["run", "nap.flow", "--max-wait", "0s"]);
        assert_eq!(waiting.status.code(), Some(10));
        std::thread::sleep(Duration::from_millis(2_100));
        let resumed = project.output(&["worker", "--once"]);
        assert!(
            resumed.status.success(),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        let run = project.only_run();
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["output"], 5);
        let history = project.history(run["id"].as_str().unwrap());
        assert!(
            common::of_kind(&history, "step_timed_out").is_empty(),
            "{history:?}"
        );
    });
}

/// A call in flight at a crash inside `retry { timeout { … } }`, resumed after its deadline:
/// the history says it was resumed and timed out, and the retry's next attempt carries the
/// same idempotency key (the same request, as far as the tool can tell).
#[test]
fn a_call_resumed_after_its_deadline_keeps_its_key_for_the_retry() {
    for_each_store(|store| {
        let project = project(store);
        project.write("tools/step.sh", STEP_TOOL);
        project.write(
            "bounded.flow",
            r#"tool step(n: Int) -> Int via exec "sh tools/step.sh"

workflow bounded() -> Int {
  retry 3 { timeout 2s { step(4) } }
}
"#,
        );
        project.write("hold-4", "");
        let mut running = project.spawn(&["run", "bounded.flow"]);
        wait_until("the call to start", Duration::from_secs(30), || {
            keys_in_order(&project.log(), "start").len() == 1
        });
        kill9(&mut running);
        std::fs::remove_file(project.path().join("hold-4")).unwrap();
        // The call's 2 s limit passes while nobody drives the run.
        std::thread::sleep(Duration::from_millis(2_300));
        let resumed = project.output(&["worker", "--once"]);
        assert!(
            resumed.status.success(),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        let run = project.only_run();
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["output"], 40);
        let id = run["id"].as_str().unwrap();
        let history = project.history(id);
        let names = common::events(&history);
        let resumed_at = names.iter().position(|e| *e == "step_resumed");
        let timed_out_at = names.iter().position(|e| *e == "step_timed_out");
        assert!(
            resumed_at.is_some() && resumed_at < timed_out_at,
            "resumed, then timed out: {names:?}"
        );
        let keys: Vec<&str> = common::of_kind(&history, "step_started")
            .iter()
            .map(|e| e["data"]["idempotency_key"].as_str().unwrap())
            .collect();
        assert_eq!(keys.len(), 2, "{names:?}");
        assert_eq!(keys[0], keys[1], "the retry keeps the key: {history:?}");
        assert_eq!(
            common::of_kind(&history, "step_timed_out")[0]["data"]["idempotency_key"],
            keys[0]
        );
        let attempts: Vec<i64> = common::of_kind(&history, "step_started")
            .iter()
            .map(|e| e["attempt"].as_i64().unwrap())
            .collect();
        assert_eq!(attempts, vec![1, 2]);
        let starts = keys_in_order(&project.log(), "start");
        assert_eq!(starts, vec![keys[0].to_string(), keys[0].to_string()]);
    });
}
