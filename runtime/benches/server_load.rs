//! Load on `flowrt serve`: 50 concurrent clients deciding 10,000 open gates over loopback.
//!
//! `cargo bench -p flow-runtime --bench server_load` (set `FLOW_BENCH_GATES` and
//! `FLOW_BENCH_CLIENTS` for other sizes).
//!
//! The runs are created first (through the engine, into the database the server then opens),
//! each waiting at an approval. Every client has its own token and user, takes its share of
//! the gates and approves each over HTTP (one connection per request), and every 100th gate
//! also gets a second, duplicate approval that must be refused with 409. Afterwards the
//! database must show every run completed with exactly one decision, and the audit chains
//! verify. Printed: decision latency (p50, p99, max), throughput, and the server's memory.

use flow_compiler::bytecode;
use flow_compiler::sources::MemoryLoader;
use flow_runtime::config::Config;
use flow_runtime::engine::Engine;
use flow_runtime::store::sqlite::SqliteStore;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{env_number, percentile, request};

const FLOWRT: &str = env!("CARGO_BIN_EXE_flowrt");

const PROGRAM: &str = r#"
workflow invoice(n: Int) -> Int {
  let d = await approval "invoice_ok" { approvers: role("finance"), prompt: "Pay invoice ${n}?" }
  if d.approved { n } else { 0 }
}
"#;

fn config_text(clients: usize) -> String {
    let mut text = String::from("[users.ines]\nroles = [\"clerk\"]\n");
    for i in 0..clients {
        text.push_str(&format!("\n[users.reviewer{i}]\nroles = [\"finance\"]\n"));
    }
    text
}

fn memory_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    let gates = env_number("FLOW_BENCH_GATES", 10_000);
    let clients = env_number("FLOW_BENCH_CLIENTS", 50).max(1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("load.db");
    let config_path = dir.path().join("flow.toml");
    std::fs::write(&config_path, config_text(clients)).expect("writes the config");

    // The open gates, created through the engine into the server's database.
    let loader = MemoryLoader::default().with("invoice.flow", PROGRAM);
    let program =
        flow_compiler::check_paths(&["invoice.flow".to_string()], &loader).expect("loads");
    assert_eq!(program.errors(), 0);
    let artifact = bytecode::encode(&flow_compiler::lower::lower(&program).expect("lowers"));
    let mut runs = Vec::with_capacity(gates);
    {
        // The keys `flowrt` uses for this database (made beside it on first use), so that the
        // records written here are signed as the server's are.
        let key = flow_runtime::secrets::SecretKey::for_store(&db.to_string_lossy())
            .expect("the database's secret key");
        flow_runtime::audit::key::install(flow_runtime::audit::AuditKey::derive(&key));
        flow_runtime::secrets::install(key);
        let store = SqliteStore::open(&db).expect("opens");
        let mut engine = Engine::new(Box::new(store), "setup");
        engine.set_config(Config::parse(&config_text(clients), "flow.toml").expect("config"));
        let (version, _) = engine.deploy(&artifact).expect("deploys");
        let created = Instant::now();
        for n in 0..gates {
            let input = serde_json::json!({ "n": n });
            let run = engine
                .start(&version, "invoice", &input, "ines")
                .expect("starts");
            runs.push(run);
        }
        engine.work_once().expect("drives every run to its gate");
        println!(
            "{gates} runs waiting at an approval, created in {:.1} s",
            created.elapsed().as_secs_f64()
        );
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
    let tokens: Vec<String> = (0..clients)
        .map(|i| {
            let output = flowrt(&["token", "create", &format!("reviewer{i}")]);
            String::from_utf8(output.stdout)
                .expect("UTF-8")
                .trim()
                .to_string()
        })
        .collect();

    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
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
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss_before = memory_kib(server.id(), "VmRSS:");

    let started = Instant::now();
    let shares: Vec<Vec<String>> = (0..clients)
        .map(|c| runs.iter().skip(c).step_by(clients).cloned().collect())
        .collect();
    let workers: Vec<_> = shares
        .into_iter()
        .zip(tokens)
        .map(|(share, token)| {
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(share.len());
                let mut refused_duplicates = 0usize;
                for (i, run) in share.iter().enumerate() {
                    let path = format!("/api/runs/{run}/gates/invoice_ok/approve");
                    let sent = Instant::now();
                    let (status, body) = request(addr, "POST", &path, &token, "{}");
                    latencies.push(sent.elapsed());
                    assert_eq!(status, 200, "{path}: {body}");
                    if i % 100 == 0 {
                        let (status, body) = request(addr, "POST", &path, &token, "{}");
                        assert_eq!(status, 409, "a duplicate decision is refused: {body}");
                        refused_duplicates += 1;
                    }
                }
                (latencies, refused_duplicates)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(gates);
    let mut duplicates = 0;
    for worker in workers {
        let (mine, refused) = worker.join().expect("a client thread");
        latencies.extend(mine);
        duplicates += refused;
    }
    let elapsed = started.elapsed();
    let rss_after = memory_kib(server.id(), "VmRSS:");
    let peak = memory_kib(server.id(), "VmHWM:");
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let stopped = server.wait().expect("the server exits");
    assert!(stopped.success(), "flowrt serve stops cleanly: {stopped:?}");

    latencies.sort();
    println!(
        "{clients} clients decided {gates} gates in {:.2} s: {:.0} decisions/s (plus {duplicates} duplicates, each refused with 409)",
        elapsed.as_secs_f64(),
        gates as f64 / elapsed.as_secs_f64()
    );
    println!(
        "decision latency (request to response, the run driven to its end): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "server memory: RSS {} MiB before, {} MiB after, peak {} MiB",
        rss_before.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        rss_after.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        peak.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
    );

    // Exactly once: every run completed, with one decision each; the trails verify.
    let mut store = SqliteStore::open(&db).expect("reopens");
    use flow_runtime::store::{History, RunStatus, Runs};
    let all = store.runs(None).expect("lists");
    assert_eq!(all.len(), gates);
    assert!(all.iter().all(|r| r.status == RunStatus::Completed));
    for run in &all {
        let history = store.history(&run.id).expect("history");
        let decided = history
            .iter()
            .filter(|e| e.kind == flow_runtime::store::EventKind::GateDecided)
            .count();
        assert_eq!(decided, 1, "run {} was decided {decided} times", run.id);
    }
    let verify = flowrt(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "the audit chains verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    println!(
        "checked: {gates} runs completed, each decided exactly once; every audit chain verifies"
    );
}
