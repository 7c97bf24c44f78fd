//! Signals through the real `flowrt serve`: 1,000 runs each wait for ten signals, and 10,000
//! signals are sent to them over loopback HTTP (`POST /api/runs/{id}/signals/add`) by many
//! clients side by side. Each answer comes once the signal is committed (and, when the run was
//! waiting for it, once the run went on to its next wait).
//!
//! `cargo bench -p flow-runtime --bench signals` (`FLOW_BENCH_RUNS`, default 1,000;
//! `FLOW_BENCH_SIGNALS_PER_RUN`, default 10; `FLOW_BENCH_CLIENTS`, default 50). Printed:
//! signals per second and the latency of each request (p50, p99, max). Afterwards the database
//! must hold every signal received once and taken once, and every run completed with the sum
//! of what it was sent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{Served, env_number, percentile, request};

const FLOWRT: &str = env!("CARGO_BIN_EXE_flowrt");

fn program(per_run: usize) -> String {
    format!(
        r#"
workflow counter(n: Int) -> Int accepts add: Int from role("clerk") {{
  var total = 0
  var i = 0
  while i < {per_run} {{
    total = total + await signal add
    i = i + 1
  }}
  total
}}
"#
    )
}

fn main() {
    let runs = env_number("FLOW_BENCH_RUNS", 1_000usize).max(1);
    let per_run = env_number("FLOW_BENCH_SIGNALS_PER_RUN", 10usize).max(1);
    let clients = env_number("FLOW_BENCH_CLIENTS", 50usize).max(1);
    let mut served = Served::start(FLOWRT, &program(per_run), &[], &[]);
    let (addr, token) = (served.addr, served.token.clone());

    let started = Instant::now();
    let ids: Vec<String> = (0..runs)
        .map(|n| {
            let body = format!(r#"{{"workflow":"counter","input":{{"n":{n}}}}}"#);
            let (status, text) = request(addr, "POST", "/api/runs", &token, &body);
            assert_eq!(status, 201, "{text}");
            let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(json["status"], "waiting", "{text}");
            json["id"].as_str().expect("an id").to_string()
        })
        .collect();
    println!(
        "flowrt serve over loopback HTTP: {runs} runs started in {:.2} s, each waiting for {per_run} signals",
        started.elapsed().as_secs_f64()
    );

    // Signal k goes to run k % runs with the value k: every run gets `per_run` of them.
    let total = runs * per_run;
    let next = Arc::new(Mutex::new(0usize));
    let times = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let sending = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..clients {
            let (next, times, ids, token) = (Arc::clone(&next), Arc::clone(&times), &ids, &token);
            scope.spawn(move || {
                loop {
                    let k = {
                        let mut next = next.lock().expect("counter");
                        if *next >= total {
                            return;
                        }
                        *next += 1;
                        *next - 1
                    };
                    let path = format!("/api/runs/{}/signals/add", ids[k % runs]);
                    let body = format!(r#"{{"value":{k}}}"#);
                    let t = Instant::now();
                    let (status, text) = request(addr, "POST", &path, token, &body);
                    let took = t.elapsed();
                    assert_eq!(status, 200, "{text}");
                    times.lock().expect("times").push(took);
                }
            });
        }
    });
    let elapsed = sending.elapsed();
    let mut latencies = std::mem::take(&mut *times.lock().expect("times"));
    latencies.sort();
    let secs = elapsed.as_secs_f64();
    println!(
        "{clients} clients: {total} signals in {secs:.2} s = {:.0} signals/s; POST …/signals/add p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        total as f64 / secs,
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );

    // Runs still driven when the last answer came: give them a moment, then check.
    std::thread::sleep(Duration::from_millis(500));
    served.stop();
    let db = rusqlite::Connection::open(&served.db).expect("the database");
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).expect("count") };
    let received = count("SELECT count(*) FROM events WHERE kind = 'signal_received'");
    let taken = count("SELECT count(*) FROM events WHERE kind = 'signal_taken'");
    let distinct = count(
        "SELECT count(*) FROM (SELECT DISTINCT run, json_extract(data, '$.number') FROM events WHERE kind = 'signal_taken')",
    );
    let queued = count("SELECT count(*) FROM signals WHERE taken = 0");
    let completed = count("SELECT count(*) FROM runs WHERE status = 'completed'");
    assert_eq!(received, total as i64, "every signal received once");
    assert_eq!(taken, total as i64, "every signal taken once");
    assert_eq!(distinct, total as i64, "no signal taken twice");
    assert_eq!(queued, 0, "none left in the queue");
    assert_eq!(completed, runs as i64, "every run completed");
    // Run r got the values r, r + runs, r + 2·runs, …: their sum is its output.
    let mut wrong = 0;
    let mut statement = db
        .prepare("SELECT id, output FROM runs")
        .expect("a statement");
    let outputs: Vec<(String, String)> = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .map(|r| r.expect("a row"))
        .collect();
    for (index, id) in ids.iter().enumerate() {
        let expected: usize = (0..per_run).map(|j| index + j * runs).sum();
        let output = outputs
            .iter()
            .find(|(run, _)| run == id)
            .map(|(_, o)| o.as_str());
        if output != Some(expected.to_string().as_str()) {
            wrong += 1;
        }
    }
    assert_eq!(wrong, 0, "every run's sum is the sum of its signals");
    println!(
        "checked: {received} signals received, {taken} taken (each once), {completed} runs completed with the right sums"
    );
}
