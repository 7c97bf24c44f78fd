//! `parallel for` through the real `flowrt run` on SQLite: one run fans out into 1,000
//! branches with at most 100 open at once, each an in-process branch (a child run that
//! computes and returns), and collects their results in order.
//!
//! `cargo bench -p flow-runtime --bench parallel` (`FLOW_BENCH_BRANCHES`, default 1,000;
//! `FLOW_BENCH_MAX`, default 100; `FLOW_BENCH_ROUNDS`, default 5). Printed per round: the
//! whole `flowrt run` (process start, deploy, the run) and the `parallel` itself (from its
//! `parallel_started` to its `parallel_completed` in the run's history); then the medians.
//! Each round checks the result and that the history has every branch once.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::env_number;

const FLOWRT: &str = env!("CARGO_BIN_EXE_flowrt");

fn program(max: usize) -> String {
    format!(
        r#"
workflow fan(items: List<Int>) -> Int {{
  let doubled = parallel for x in items max {max} {{ x * 2 }}
  var total = 0
  for d in doubled {{
    total = total + d
  }}
  total
}}
"#
    )
}

fn flowrt(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(FLOWRT)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("flowrt runs");
    assert!(
        out.status.success(),
        "flowrt {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn main() {
    let branches = env_number("FLOW_BENCH_BRANCHES", 1_000usize).max(1);
    let max = env_number("FLOW_BENCH_MAX", 100usize).max(1);
    let rounds = env_number("FLOW_BENCH_ROUNDS", 5usize).max(1);
    let items: Vec<usize> = (0..branches).collect();
    let input = serde_json::json!({ "items": items }).to_string();
    let expected: usize = items.iter().map(|x| x * 2).sum();
    let (mut whole, mut fan) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("fan.flow"), program(max)).expect("writes");
        let started = Instant::now();
        let out = flowrt(dir.path(), &["run", "fan.flow", "--input", &input]);
        let elapsed = started.elapsed();
        assert!(out.contains(&expected.to_string()), "{out}");
        let run = out
            .split_whitespace()
            .nth(1)
            .expect("`run ID completed`")
            .to_string();
        let history: Vec<serde_json::Value> =
            serde_json::from_str(&flowrt(dir.path(), &["history", &run, "--json"]))
                .expect("history JSON");
        let at = |kind: &str| {
            history
                .iter()
                .filter(|e| e["kind"] == kind)
                .map(|e| e["at"].as_i64().expect("`at` in milliseconds"))
                .collect::<Vec<_>>()
        };
        assert_eq!(at("branch_completed").len(), branches, "every branch once");
        let span = at("parallel_completed")[0] - at("parallel_started")[0];
        let span = Duration::from_millis(span.max(0) as u64);
        println!(
            "round {round}: {branches} branches, max {max}: flowrt run {:.3} s, the parallel {:.3} s",
            elapsed.as_secs_f64(),
            span.as_secs_f64()
        );
        whole.push(elapsed);
        fan.push(span);
    }
    whole.sort();
    fan.sort();
    println!(
        "median of {rounds}: flowrt run {:.3} s, the parallel {:.3} s ({:.0} branches/s)",
        whole[rounds / 2].as_secs_f64(),
        fan[rounds / 2].as_secs_f64(),
        branches as f64 / fan[rounds / 2].as_secs_f64().max(1e-9)
    );
}
