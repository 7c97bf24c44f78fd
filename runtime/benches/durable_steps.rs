//! Durable steps per second, measured end to end: compile, deploy, start runs, drive them,
//! with every step committed (checkpoint + history) to SQLite with `synchronous=FULL` before
//! the run goes on. The tool runs in process (`via exec "flowrt:echo"`), so the figure
//! measures the engine and the store, not process start-up.
//!
//! `cargo bench -p flow-runtime --bench durable_steps`
//!
//! Printed: steps per second from the first start to the last completion, and of the
//! draining alone (the runs already enqueued, as the worker's target counts).
//!
//! 1. 1,000 runs of 10 steps, driven one run at a time (one commit per step).
//! 2. The same with 200 runs in flight at once: one transaction commits a step of each of
//!    them (group commit).

use flow_compiler::bytecode;
use flow_compiler::sources::MemoryLoader;
use flow_runtime::engine::Engine;
use flow_runtime::store::sqlite::{Durability, SqliteStore};
use std::time::Instant;

const RUNS: usize = 1000;
const STEPS: usize = 10;
const IN_FLIGHT: usize = 200;

const PROGRAM: &str = r#"
tool echo(n: Int) -> Int via exec "flowrt:echo"

workflow ten(n: Int) -> Int {
  var total = 0
  var i = 0
  while i < 10 {
    total = total + echo(n + i)
    i = i + 1
  }
  total
}
"#;

fn main() {
    let loader = MemoryLoader::default().with("bench.flow", PROGRAM);
    let program = flow_compiler::check_paths(&["bench.flow".to_string()], &loader).expect("loads");
    assert_eq!(program.errors(), 0, "the benchmark program must compile");
    let artifact = bytecode::encode(&flow_compiler::lower::lower(&program).expect("lowers"));

    println!("{RUNS} runs x {STEPS} durable steps, in-process tool, SQLite WAL synchronous=FULL");
    measure("one run at a time", &artifact, 1);
    measure(
        &format!("{IN_FLIGHT} runs in flight (group commit)"),
        &artifact,
        IN_FLIGHT,
    );
    println!(
        "peak resident memory of this process: {} MiB",
        peak_rss_kib() / 1024
    );
}

fn measure(label: &str, artifact: &[u8], in_flight: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store =
        SqliteStore::open_with(&dir.path().join("bench.db"), Durability::Full).expect("opens");
    let mut engine = Engine::new(Box::new(store), "bench");
    let (version, _) = engine.deploy(artifact).expect("deploys");

    let started = Instant::now();
    let mut runs = Vec::with_capacity(RUNS);
    for n in 0..RUNS {
        let input = serde_json::json!({ "n": n });
        runs.push(
            engine
                .start(&version, "ten", &input, "bench")
                .expect("starts"),
        );
    }
    let created = started.elapsed();
    let mut completed = 0;
    for batch in runs.chunks(in_flight) {
        completed += if in_flight == 1 {
            usize::from(engine.drive(&batch[0]).expect("drives").is_final())
        } else {
            engine.drive_batch(batch).expect("drives")
        };
    }
    let elapsed = started.elapsed();
    assert_eq!(completed, RUNS, "every run completes");
    let seconds = elapsed.as_secs_f64();
    // The worker's target counts the draining of runs already enqueued, so that part is
    // printed on its own too (each start is a durable commit of its own).
    let draining = (elapsed - created).as_secs_f64();
    println!(
        "{label:<36} {:>7.0} steps/s {:>6.0} runs/s  ({:.2} s; starting the runs took {:.2} s; draining them {:.0} steps/s)",
        (RUNS * STEPS) as f64 / seconds,
        RUNS as f64 / seconds,
        seconds,
        created.as_secs_f64(),
        (RUNS * STEPS) as f64 / draining,
    );
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}
