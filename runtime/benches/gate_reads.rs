//! Reads of open gates with many runs waiting, through the real `flowrt serve` over HTTP and
//! the real `flowrt approvals`.
//!
//! `cargo bench -p flow-runtime --bench gate_reads` (10,000 waiting runs; set
//! `FLOW_BENCH_GATES` for another count, and `FLOW_BENCH_KEEP_DB=PATH` to keep a copy of the
//! database for looking into a figure).
//!
//! The runs are created first, through the engine, into the SQLite database the server then
//! opens: 99 in 100 wait at a `finance` approval, 1 in 100 at an `audit` one, so that the
//! auditor's inbox is a small part of all open gates, as a reviewer's usually is. Then, with
//! nothing else going on, each read is timed from request to the end of the response (one
//! connection per request): `GET /api/runs/{id}` of a waiting run (its gate view included),
//! `GET /api/decisions` as the auditor, `GET /metrics` (open gates counted), and
//! `flowrt approvals --as` the auditor (a process of its own, start-up included). Printed:
//! p50 and max of each, and the sizes of the answers as a check that they are whole.

use flow_compiler::bytecode;
use flow_compiler::sources::MemoryLoader;
use flow_runtime::config::Config;
use flow_runtime::engine::Engine;
use flow_runtime::store::sqlite::SqliteStore;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{env_number, free_addr, request, wait_for_listener};

const FLOWRT: &str = env!("CARGO_BIN_EXE_flowrt");

const PROGRAM: &str = r#"
workflow invoice(n: Int) -> Int {
  let d = await approval "invoice_ok" { approvers: role("finance"), prompt: "Pay invoice ${n}?", context: { n: n }, timeout: 48h }
  if d.approved { n } else { 0 }
}

workflow countercheck(n: Int) -> Int {
  let d = await approval "audit_ok" { approvers: role("audit"), prompt: "Audit invoice ${n}?", timeout: 48h }
  if d.approved { n } else { 0 }
}
"#;

const CONFIG: &str = "[users.ines]\nroles = [\"clerk\"]\n\n[users.fay]\nroles = [\"finance\"]\n\n[users.aldo]\nroles = [\"audit\"]\n";

/// Runs created per batch (each batch is driven to its gates before the next is started).
const CHUNK: usize = 1_000;

/// Times `read` `samples` times; prints p50 and max, and the size of the last answer.
fn measure(what: &str, samples: usize, mut read: impl FnMut(usize) -> usize) {
    let mut times = Vec::with_capacity(samples);
    let mut size = 0;
    for i in 0..samples {
        let started = Instant::now();
        size = read(i);
        times.push(started.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {what:<40} p50 {:>8.2} ms   max {:>8.2} ms   ({samples} samples, {size} bytes)",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
    );
}

fn main() {
    let gates = env_number("FLOW_BENCH_GATES", 10_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("reads.db");
    let config_path = dir.path().join("flow.toml");
    std::fs::write(&config_path, CONFIG).expect("writes the config");

    let loader = MemoryLoader::default().with("invoice.flow", PROGRAM);
    let program =
        flow_compiler::check_paths(&["invoice.flow".to_string()], &loader).expect("loads");
    assert_eq!(program.errors(), 0);
    let artifact = bytecode::encode(&flow_compiler::lower::lower(&program).expect("lowers"));
    let mut runs = Vec::with_capacity(gates);
    {
        let store = SqliteStore::open(&db).expect("opens");
        let mut engine = Engine::new(Box::new(store), "setup");
        engine.set_config(Config::parse(CONFIG, "flow.toml").expect("config"));
        let (version, _) = engine.deploy(&artifact).expect("deploys");
        let created = Instant::now();
        for start in (0..gates).step_by(CHUNK) {
            let mut chunk = Vec::with_capacity(CHUNK);
            for n in start..(start + CHUNK).min(gates) {
                let workflow = if n % 100 == 0 {
                    "countercheck"
                } else {
                    "invoice"
                };
                let input = serde_json::json!({ "n": n });
                chunk.push(
                    engine
                        .start(&version, workflow, &input, "ines")
                        .expect("starts"),
                );
            }
            engine.drive_batch(&chunk).expect("drives to the gates");
            runs.extend(chunk);
        }
        println!(
            "{gates} runs waiting at an approval ({} of them for the auditor), created in {:.1} s",
            gates.div_ceil(100),
            created.elapsed().as_secs_f64()
        );
    }
    if let Ok(keep) = std::env::var("FLOW_BENCH_KEEP_DB") {
        std::fs::copy(&db, &keep).expect("keeps a copy of the database");
    }
    let flowrt = |args: &[&str]| {
        Command::new(FLOWRT)
            .arg("--db")
            .arg(&db)
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .output()
            .expect("flowrt runs")
    };
    let token = |user: &str| {
        let output = flowrt(&["token", "create", user]);
        assert!(output.status.success(), "a token for {user}");
        String::from_utf8(output.stdout)
            .expect("UTF-8")
            .trim()
            .to_string()
    };
    let (starter, auditor) = (token("ines"), token("aldo"));

    let addr = free_addr();
    let mut server = Command::new(FLOWRT)
        .arg("--db")
        .arg(&db)
        .arg("--config")
        .arg(&config_path)
        .args(["serve", "--addr", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("flowrt serve starts");
    wait_for_listener(addr, Duration::from_secs(120));

    let step = (runs.len() / 50).max(1);
    measure("GET /api/runs/{id} (waiting at a gate)", 50, |i| {
        let run = &runs[(i * step + 1) % runs.len()];
        let (status, body) = request(addr, "GET", &format!("/api/runs/{run}"), &starter, "");
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("\"invoice_ok\"") || body.contains("\"audit_ok\""),
            "{body}"
        );
        body.len()
    });
    measure("GET /api/decisions (the auditor)", 10, |_| {
        let (status, body) = request(addr, "GET", "/api/decisions", &auditor, "");
        assert_eq!(status, 200, "{body}");
        let listed: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(listed.as_array().map(Vec::len), Some(gates.div_ceil(100)));
        body.len()
    });
    measure("GET /metrics", 10, |_| {
        let (status, body) = request(addr, "GET", "/metrics", &auditor, "");
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(&format!("flow_open_gates{{kind=\"approval\"}} {gates}\n")),
            "{body}"
        );
        body.len()
    });
    measure("flowrt approvals --as aldo (a process)", 5, |_| {
        let output = flowrt(&["approvals", "--as", "aldo"]);
        assert!(output.status.success(), "{output:?}");
        let lines = output.stdout.iter().filter(|b| **b == b'\n').count();
        assert_eq!(lines, gates.div_ceil(100));
        output.stdout.len()
    });

    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let stopped = server.wait().expect("the server exits");
    assert!(stopped.success(), "flowrt serve stops cleanly: {stopped:?}");
}
