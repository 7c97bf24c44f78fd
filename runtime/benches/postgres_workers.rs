//! Many workers on one PostgreSQL database: durable steps per second with 1, 2 and 4
//! `flowrt worker` processes, the same workload on SQLite for comparison, and
//! approve-to-resume latency on both stores.
//!
//! `FLOW_BENCH_POSTGRES=postgres://postgres:pw@127.0.0.1:5432/postgres cargo bench -p flow-runtime --bench postgres_workers`
//!
//! The URL is an admin URL: each measurement gets a database of its own, dropped afterwards.
//! Without it the benchmark says so and does nothing. `FLOW_BENCH_RUNS` changes the number
//! of runs (default 1,000 runs of 10 steps), `FLOW_BENCH_REPEAT` the number of measurements
//! of each configuration (default 3, taken in turns; the best and the median are shown).
//!
//! 1. Throughput: the runs are started (not timed), then N `flowrt worker --once` processes
//!    are started together and the clock stops when the last one has exited, which is when
//!    no run is left to drive (the processes' start-up is inside the figure). Every step
//!    calls an in-process tool (`via exec "flowrt:echo"`), so the figure measures the engine,
//!    the store and the database, not the start-up of a tool's process; every step's
//!    checkpoint and history are committed before the run goes on (PostgreSQL:
//!    `synchronous_commit` as the server has it, `on` by default; SQLite: WAL,
//!    `synchronous=FULL`). The same runs are also driven in this process, one at a time
//!    (`Engine::drive`, a commit per step) and 200 in flight with one transaction per round of
//!    steps (`Engine::drive_batch`, group commit), which `flowrt worker` does not use.
//! 2. Approve-to-resume: runs waiting at an approval gate, decided one after another through
//!    the engine exactly as `flowrt approve` does it (`decide_and_drive`: check the decision,
//!    record it, drive the run to its end); each sample is the time of that call.

use flow_compiler::bytecode;
use flow_compiler::sources::MemoryLoader;
use flow_runtime::config::Config;
use flow_runtime::engine::Engine;
use flow_runtime::gates::{Action, Decided};
use flow_runtime::store::RunStatus;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FLOWRT: &str = env!("CARGO_BIN_EXE_flowrt");
/// Every process seals secrets with the same key (a PostgreSQL store requires one).
const SECRET_KEY: &str = "62656e63682d6b65792d6f662d666c6f772d706f7374677265732d776f726b65";
const STEPS: usize = 10;
const IN_FLIGHT: usize = 200;
const WAITING: usize = 2000;
const SAMPLES: usize = 1000;

const STEPS_PROGRAM: &str = r#"
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

const GATE_PROGRAM: &str = r#"
workflow refund(n: Int) -> Int {
  let d = await approval "refund_ok" { approvers: role("finance"), prompt: "Refund ${n}?", timeout: 48h }
  if d.approved { n } else { 0 }
}
"#;

/// How the runs are driven.
#[derive(Clone, Copy)]
enum Driver {
    /// N `flowrt worker --once` processes.
    Workers(usize),
    /// This process: `Engine::drive`, one run at a time.
    OneAtATime,
    /// This process: `Engine::drive_batch`, so many runs at a time.
    GroupCommit(usize),
}

impl Driver {
    fn describe(self) -> String {
        match self {
            Driver::Workers(1) => "1 `flowrt worker` process".to_string(),
            Driver::Workers(n) => format!("{n} `flowrt worker` processes"),
            Driver::OneAtATime => "this process, one run at a time".to_string(),
            Driver::GroupCommit(n) => {
                format!("this process, {n} runs in flight (group commit)")
            }
        }
    }
}

fn main() {
    let Ok(admin) = std::env::var("FLOW_BENCH_POSTGRES") else {
        println!(
            "postgres_workers: skipped; set FLOW_BENCH_POSTGRES=postgres://user:pw@host/db (an admin URL: the benchmark creates and drops databases of its own)"
        );
        return;
    };
    let setting = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let runs = setting("FLOW_BENCH_RUNS", 1000);
    let repeat = setting("FLOW_BENCH_REPEAT", 3).max(1);
    flow_runtime::secrets::install(
        flow_runtime::secrets::SecretKey::from_hex(SECRET_KEY).expect("a key"),
    );
    let steps = compile("bench.flow", STEPS_PROGRAM);
    let gate = compile("refund.flow", GATE_PROGRAM);
    describe_server(&admin);
    println!(
        "{runs} runs x {STEPS} durable steps (FLOW_BENCH_RUNS), in-process tool; each figure the best and the median of {repeat} (FLOW_BENCH_REPEAT), measured in turns"
    );
    let modes = [
        ("postgres", Driver::Workers(1)),
        ("postgres", Driver::Workers(2)),
        ("postgres", Driver::Workers(4)),
        ("postgres", Driver::OneAtATime),
        ("postgres", Driver::GroupCommit(16)),
        ("postgres", Driver::GroupCommit(IN_FLIGHT)),
        ("sqlite", Driver::Workers(1)),
        ("sqlite", Driver::OneAtATime),
        ("sqlite", Driver::GroupCommit(16)),
        ("sqlite", Driver::GroupCommit(IN_FLIGHT)),
    ];
    // (Not two workers on SQLite: it has one writer at a time, so they gain nothing, and
    // one may starve behind the other past its 5 s busy timeout.)
    // In turns, so that a burst of load from elsewhere on the machine does not land on one
    // configuration only.
    let mut times: Vec<Vec<Timed>> = vec![Vec::new(); modes.len()];
    for _ in 0..repeat {
        for (i, (store, driver)) in modes.iter().enumerate() {
            times[i].push(measure(&admin, store, *driver, &steps, runs));
        }
    }
    println!(
        "{:<9} {:<52} {:>14} {:>14} {:>9}",
        "store", "driven by", "steps/s best", "steps/s median", "CPU busy"
    );
    for ((store, driver), times) in modes.iter().zip(&mut times) {
        times.sort_by_key(|t| t.elapsed);
        let rate = |t: &Timed| (runs * STEPS) as f64 / t.elapsed.as_secs_f64();
        println!(
            "{store:<9} {:<52} {:>14.0} {:>14.0} {:>9}",
            driver.describe(),
            rate(&times[0]),
            rate(&times[times.len() / 2]),
            times[0]
                .busy
                .map_or("?".to_string(), |b| format!("{:.0}%", b * 100.0))
        );
    }

    println!();
    println!(
        "approve-to-resume: {WAITING} runs waiting at a gate, {SAMPLES} decided one after another"
    );
    {
        let db = TestDatabase::create(&admin);
        approve_to_resume("postgres", &db.url(), &gate);
    }
    {
        let dir = tempfile::tempdir().expect("a temporary directory");
        approve_to_resume(
            "sqlite",
            &dir.path().join("bench.db").to_string_lossy(),
            &gate,
        );
    }
}

/// One measurement on a new database.
fn measure(admin: &str, store: &str, driver: Driver, artifact: &[u8], runs: usize) -> Timed {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database = (store == "postgres").then(|| TestDatabase::create(admin));
    let spec = match &database {
        Some(db) => db.url(),
        None => dir.path().join("bench.db").to_string_lossy().into_owned(),
    };
    match driver {
        Driver::Workers(n) => with_workers(&spec, artifact, runs, n),
        Driver::OneAtATime => in_process(&spec, artifact, runs, 1),
        Driver::GroupCommit(n) => in_process(&spec, artifact, runs, n),
    }
}

/// How long a measurement took, and how busy the machine's CPUs were meanwhile (all
/// processes: the workers, PostgreSQL, anything else running).
#[derive(Clone, Copy)]
struct Timed {
    elapsed: Duration,
    busy: Option<f64>,
}

struct Clock {
    began: Instant,
    ticks: Option<(u64, u64)>,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            began: Instant::now(),
            ticks: cpu_ticks(),
        }
    }

    fn stop(self) -> Timed {
        let elapsed = self.began.elapsed();
        let busy = match (self.ticks, cpu_ticks()) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                Some((busy1 - busy0) as f64 / (total1 - total0) as f64)
            }
            _ => None,
        };
        Timed { elapsed, busy }
    }
}

/// The machine's busy and total CPU time so far (`/proc/stat`), in ticks.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

fn compile(name: &str, text: &str) -> Vec<u8> {
    let loader = MemoryLoader::default().with(name, text);
    let program = flow_compiler::check_paths(&[name.to_string()], &loader).expect("loads");
    assert_eq!(program.errors(), 0, "the benchmark program must compile");
    bytecode::encode(&flow_compiler::lower::lower(&program).expect("lowers"))
}

fn engine(spec: &str) -> Engine {
    let store = flow_runtime::store::open(spec).expect("the database opens");
    Engine::new(store, "bench")
}

/// Deploys `artifact` and starts `count` runs of its `ten` workflow; returns their ids.
fn start_runs(engine: &mut Engine, artifact: &[u8], count: usize) -> Vec<String> {
    let (version, _) = engine.deploy(artifact).expect("deploys");
    (0..count)
        .map(|n| {
            engine
                .start(&version, "ten", &serde_json::json!({ "n": n }), "bench")
                .expect("starts")
        })
        .collect()
}

fn completed(engine: &mut Engine) -> usize {
    engine
        .store()
        .runs(Some(RunStatus::Completed))
        .expect("lists")
        .len()
}

/// Starts the runs, then times `workers` `flowrt worker --once` processes driving them all.
fn with_workers(spec: &str, artifact: &[u8], runs: usize, workers: usize) -> Timed {
    let mut engine = engine(spec);
    start_runs(&mut engine, artifact, runs);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Clock::start();
    let children: Vec<_> = (0..workers)
        .map(|_| {
            Command::new(FLOWRT)
                .args(["--db", spec, "worker", "--once"])
                .current_dir(dir.path())
                .env("FLOW_SECRET_KEY", SECRET_KEY)
                .env_remove("FLOW_LOG")
                .env_remove("RUST_LOG")
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("flowrt starts")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("flowrt ends");
        assert!(
            out.status.success(),
            "flowrt worker: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let timed = clock.stop();
    assert_eq!(completed(&mut engine), runs, "every run completes");
    timed
}

/// Starts the runs and drives them in this process, `in_flight` at a time (1: `drive`, one
/// commit per step; more: `drive_batch`, one commit per round of steps).
fn in_process(spec: &str, artifact: &[u8], runs: usize, in_flight: usize) -> Timed {
    let mut engine = engine(spec);
    let ids = start_runs(&mut engine, artifact, runs);
    let clock = Clock::start();
    let mut done = 0;
    for batch in ids.chunks(in_flight) {
        done += if in_flight == 1 {
            usize::from(engine.drive(&batch[0]).expect("drives").is_final())
        } else {
            engine.drive_batch(batch).expect("drives")
        };
    }
    let timed = clock.stop();
    assert_eq!(done, runs, "every run completes");
    timed
}

fn approve_to_resume(store: &str, spec: &str, artifact: &[u8]) {
    let mut engine = engine(spec);
    engine.set_config(
        Config::parse("[users.ana]\nroles = [\"finance\"]\n", "bench.toml").expect("config"),
    );
    let (version, _) = engine.deploy(artifact).expect("deploys");
    let mut runs = Vec::with_capacity(WAITING);
    for chunk in 0..WAITING.div_ceil(IN_FLIGHT) {
        let ids: Vec<String> = (chunk * IN_FLIGHT..((chunk + 1) * IN_FLIGHT).min(WAITING))
            .map(|n| {
                engine
                    .start(&version, "refund", &serde_json::json!({ "n": n }), "bench")
                    .expect("starts")
            })
            .collect();
        engine.drive_batch(&ids).expect("drives to the gate");
        runs.extend(ids);
    }
    let mut latencies = Vec::with_capacity(SAMPLES);
    for run in runs
        .iter()
        .step_by((WAITING / SAMPLES).max(1))
        .take(SAMPLES)
    {
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
        "{store:<10} p50 {}, p99 {}, max {}",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    );
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The server's version and the settings that decide what a commit costs.
fn describe_server(admin: &str) {
    let Ok(mut client) = postgres::Client::connect(admin, postgres::NoTls) else {
        panic!("cannot connect to FLOW_BENCH_POSTGRES");
    };
    let show = |client: &mut postgres::Client, what: &str| -> String {
        client
            .query_one(&format!("SHOW {what}"), &[])
            .map(|row| row.get::<_, String>(0))
            .unwrap_or_else(|_| "?".into())
    };
    println!(
        "PostgreSQL {} (fsync {}, synchronous_commit {}, wal_sync_method {}, commit_delay {}); {} CPU(s)",
        show(&mut client, "server_version"),
        show(&mut client, "fsync"),
        show(&mut client, "synchronous_commit"),
        show(&mut client, "wal_sync_method"),
        show(&mut client, "commit_delay"),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

/// A database of its own for one measurement, dropped afterwards.
struct TestDatabase {
    admin: String,
    name: String,
}

impl TestDatabase {
    fn create(admin: &str) -> TestDatabase {
        let name = format!(
            "flow_bench_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let mut client = postgres::Client::connect(admin, postgres::NoTls)
            .expect("FLOW_BENCH_POSTGRES connects");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("creates a database");
        TestDatabase {
            admin: admin.to_string(),
            name,
        }
    }

    /// The admin URL with this database's name.
    fn url(&self) -> String {
        let url = self.admin.as_str();
        let after_scheme = url.find("://").map_or(0, |i| i + 3);
        let (base, query) = match url.find('?') {
            Some(q) => (&url[..q], &url[q..]),
            None => (url, ""),
        };
        let host_end = base[after_scheme..]
            .find('/')
            .map_or(base.len(), |i| after_scheme + i);
        format!("{}/{}{query}", &base[..host_end], self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // PostgreSQL may be restarting (a test elsewhere): try for a while.
        for _ in 0..50 {
            if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls)
                && client
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        self.name
                    ))
                    .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("note: could not drop the database {}", self.name);
    }
}
