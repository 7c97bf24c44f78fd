//! Many runs waiting on approvals in one database: the runtime's memory, and how long it
//! takes from a decision to the run having gone on (approve-to-resume).
//!
//! `cargo bench -p flow-runtime --bench waiting_approvals` (100,000 runs; set
//! `FLOW_BENCH_WAITING` for another count).
//!
//! Waiting costs nothing: a waiting run is a row and a checkpoint in SQLite, not a thread or
//! an object in memory, so the process's resident memory should not grow with the number of
//! waiting runs. Approve-to-resume is measured through the engine's public API exactly as
//! `flowrt approve` does it (`decide_and_drive`): check and record the decision, then drive
//! the run to its end; every step committed with `synchronous=FULL`.

use flow_compiler::bytecode;
use flow_compiler::sources::MemoryLoader;
use flow_runtime::config::Config;
use flow_runtime::engine::Engine;
use flow_runtime::gates::{Action, Decided};
use flow_runtime::store::RunStatus;
use flow_runtime::store::sqlite::{Durability, SqliteStore};
use std::time::{Duration, Instant};

const PROGRAM: &str = r#"
workflow refund(n: Int) -> Int {
  let d = await approval "refund_ok" { approvers: role("finance"), prompt: "Refund ${n}?", timeout: 48h }
  if d.approved { n } else { 0 }
}
"#;

const CHUNK: usize = 1000;
const SAMPLES: usize = 1000;

fn main() {
    let total: usize = std::env::var("FLOW_BENCH_WAITING")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let loader = MemoryLoader::default().with("refund.flow", PROGRAM);
    let program = flow_compiler::check_paths(&["refund.flow".to_string()], &loader).expect("loads");
    assert_eq!(program.errors(), 0, "the benchmark program must compile");
    let artifact = bytecode::encode(&flow_compiler::lower::lower(&program).expect("lowers"));

    let dir = tempfile::tempdir().expect("a temporary directory");
    let store =
        SqliteStore::open_with(&dir.path().join("bench.db"), Durability::Full).expect("opens");
    let mut engine = Engine::new(Box::new(store), "bench");
    engine.set_config(
        Config::parse("[users.ana]\nroles = [\"finance\"]\n", "bench.toml").expect("config"),
    );
    let (version, _) = engine.deploy(&artifact).expect("deploys");

    println!("{total} runs waiting on an approval; SQLite WAL synchronous=FULL");
    let started = Instant::now();
    let mut runs = Vec::with_capacity(total);
    let checkpoints = [total / 10, total / 2, total];
    for chunk_start in (0..total).step_by(CHUNK) {
        let mut chunk = Vec::with_capacity(CHUNK);
        for n in chunk_start..(chunk_start + CHUNK).min(total) {
            let input = serde_json::json!({ "n": n });
            chunk.push(
                engine
                    .start(&version, "refund", &input, "bench")
                    .expect("starts"),
            );
        }
        engine.drive_batch(&chunk).expect("drives to the gate");
        runs.extend(chunk);
        if checkpoints.contains(&runs.len()) {
            println!(
                "  {:>7} runs waiting: resident memory {:>4} MiB ({:.1} s so far)",
                runs.len(),
                resident_kib() / 1024,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let waiting = engine
        .store()
        .runs(Some(RunStatus::Waiting))
        .expect("lists")
        .len();
    assert_eq!(waiting, total, "every run waits at its gate");

    let mut latencies = Vec::with_capacity(SAMPLES);
    let step = (total / SAMPLES).max(1);
    for run in runs.iter().step_by(step).take(SAMPLES) {
        let begun = Instant::now();
        let (decided, status) = engine
            .decide_and_drive(
                run,
                "refund_ok",
                "ana",
                Action::Approve {
                    comment: String::new(),
                },
                None,
            )
            .expect("decides and resumes");
        latencies.push(begun.elapsed());
        assert_eq!(decided, Decided::Closed);
        assert_eq!(status, RunStatus::Completed);
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    println!(
        "approve-to-resume over {} runs: p50 {}, p99 {}, max {}",
        latencies.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    );
    println!("resident memory at the end: {} MiB", resident_kib() / 1024);
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}
