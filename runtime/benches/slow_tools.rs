//! `flowrt serve` while runs are inside slow tool calls: how fast it still answers.
//!
//! `cargo bench -p flow-runtime --bench slow_tools` (`FLOW_BENCH_RUNS`, default 50;
//! `FLOW_BENCH_CALL_S`, default 10).
//!
//! Starts the real server on a fresh SQLite database, starts that many runs over HTTP, each of
//! whose one tool call is an `exec` that sleeps for the call time, then — while every call is
//! in progress — times `GET /health` and `GET /api/runs/{id}` (one connection per request,
//! one after the other), and finally waits for every run to complete. Printed: the latency of
//! each kind of request (p50, p99, max), how long starting the runs took, and how long until
//! the last run completed (about one call time when the calls are made side by side).

use std::time::{Duration, Instant};

mod common;
use common::{Served, env_number, percentile, request};

const FLOWRT: &str = env!("CARGO_BIN_EXE_flowrt");

const PROGRAM: &str = r#"tool slow(n: Int) -> Int via exec "sh slow.sh"

workflow wait_for_it(n: Int) -> Int {
  let a = slow(n)
  a + n
}
"#;

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |p: f64| percentile(&times, p);
    println!(
        "{name}: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
}

fn main() {
    let runs = env_number("FLOW_BENCH_RUNS", 50);
    let call_s = env_number("FLOW_BENCH_CALL_S", 10);
    let threads = runs.to_string();
    let tool = (
        "slow.sh",
        format!("cat > /dev/null; sleep {call_s}; echo 1\n"),
    );
    let served = Served::start(FLOWRT, PROGRAM, &[tool], &["--tool-threads", &threads]);
    let (addr, token) = (served.addr, served.token.clone());

    let started = Instant::now();
    let ids: Vec<String> = (0..runs)
        .map(|n| {
            let body = format!(r#"{{"workflow":"wait_for_it","input":{{"n":{n}}}}}"#);
            let (status, text) = request(addr, "POST", "/api/runs", &token, &body);
            assert_eq!(status, 201, "{text}");
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            value["id"].as_str().expect("an id").to_string()
        })
        .collect();
    let starting = started.elapsed();

    let mut health = Vec::new();
    let mut reads = Vec::new();
    // Half the call time, so that every call is still in progress throughout.
    let until = started + Duration::from_secs(call_s) / 2;
    let mut i = 0;
    while Instant::now() < until {
        let t = Instant::now();
        assert_eq!(request(addr, "GET", "/health", &token, "").0, 200);
        health.push(t.elapsed());
        let t = Instant::now();
        let path = format!("/api/runs/{}", ids[i % ids.len()]);
        let (status, text) = request(addr, "GET", &path, &token, "");
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"tool slow\""), "{text}");
        reads.push(t.elapsed());
        i += 1;
    }

    let deadline = started + Duration::from_secs(call_s * 3 + 30);
    for id in &ids {
        loop {
            let (_, text) = request(addr, "GET", &format!("/api/runs/{id}"), &token, "");
            if text.contains("\"completed\"") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never completed: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let all_done = started.elapsed();
    drop(served);

    println!("{runs} runs inside {call_s} s tool calls, flowrt serve over loopback HTTP");
    println!(
        "starting them: {:.1} ms in all ({:.2} ms per POST /api/runs)",
        starting.as_secs_f64() * 1e3,
        starting.as_secs_f64() * 1e3 / runs as f64
    );
    summary("GET /health during the calls", health);
    summary("GET /api/runs/{id} during the calls", reads);
    println!(
        "every run completed {:.1} s after the first start",
        all_done.as_secs_f64()
    );
}
