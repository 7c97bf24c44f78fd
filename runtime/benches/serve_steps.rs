//! Durable steps through the real `flowrt serve`: workflows of 10 in-process steps started
//! over loopback HTTP, each answered (201) once the run has completed and every step is
//! committed — first by one client at a time, then by many side by side.
//!
//! `cargo bench -p flow-runtime --bench serve_steps` (`FLOW_BENCH_RUNS`, default 1,000 per
//! phase; `FLOW_BENCH_CLIENTS`, default 200). Printed per phase: workflows and durable steps
//! per second, and the latency of each `POST /api/runs` (p50, p99, max). Afterwards the
//! database must hold every run completed with its 10 `step_completed` events.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{Served, env_number, percentile, request};

const FLOWRT: &str = env!("CARGO_BIN_EXE_flowrt");
const STEPS: usize = 10;

const PROGRAM: &str = r#"
tool check(n: Int) -> Int via exec "flowrt:echo"

workflow ten(n: Int) -> Int {
  var total = 0
  var i = 0
  while i < 10 {
    total = total + check(n + i)
    i = i + 1
  }
  total
}
"#;

fn main() {
    let runs = env_number("FLOW_BENCH_RUNS", 1_000usize).max(1);
    let clients = env_number("FLOW_BENCH_CLIENTS", 200usize).max(1);
    let mut served = Served::start(FLOWRT, PROGRAM, &[], &[]);
    let (addr, token) = (served.addr, served.token.clone());
    let start = |n: usize| {
        let body = format!(r#"{{"workflow":"ten","input":{{"n":{n}}}}}"#);
        let t = Instant::now();
        let (status, text) = request(addr, "POST", "/api/runs", &token, &body);
        let took = t.elapsed();
        assert_eq!(status, 201, "{text}");
        assert!(text.contains("\"completed\""), "{text}");
        took
    };

    // Warm up: the server's first requests pay for loading the program.
    for n in 0..20 {
        start(n);
    }

    println!(
        "flowrt serve over loopback HTTP, workflows of {STEPS} in-process steps, each answered once completed and committed"
    );
    let one = Instant::now();
    let mut latencies: Vec<Duration> = (0..runs).map(start).collect();
    report("1 client", runs, one.elapsed(), &mut latencies);

    let next = Arc::new(Mutex::new(0usize));
    let times = Arc::new(Mutex::new(Vec::with_capacity(runs)));
    let many = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..clients {
            let (next, times) = (Arc::clone(&next), Arc::clone(&times));
            let start = &start;
            scope.spawn(move || {
                loop {
                    let n = {
                        let mut next = next.lock().expect("counter");
                        if *next >= runs {
                            return;
                        }
                        *next += 1;
                        *next
                    };
                    let took = start(n);
                    times.lock().expect("times").push(took);
                }
            });
        }
    });
    let elapsed = many.elapsed();
    let mut latencies = std::mem::take(&mut *times.lock().expect("times"));
    report(&format!("{clients} clients"), runs, elapsed, &mut latencies);

    served.stop();
    let db = rusqlite::Connection::open(&served.db).expect("the database");
    let completed: i64 = db
        .query_row(
            "SELECT count(*) FROM runs WHERE status = 'completed'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    let steps: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE kind = 'step_completed'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    let expected = (2 * runs + 20) as i64;
    assert_eq!(completed, expected, "every run completed");
    assert_eq!(steps, expected * STEPS as i64, "every step recorded");
    println!("checked: {completed} runs completed, {steps} steps recorded");
}

fn report(what: &str, runs: usize, elapsed: Duration, latencies: &mut [Duration]) {
    latencies.sort();
    let secs = elapsed.as_secs_f64();
    println!(
        "{what}: {runs} workflows in {:.2} s = {:.0} workflows/s, {:.0} durable steps/s; POST /api/runs p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        secs,
        runs as f64 / secs,
        (runs * STEPS) as f64 / secs,
        percentile(latencies, 0.5).as_secs_f64() * 1e3,
        percentile(latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}
