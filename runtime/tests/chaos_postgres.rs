//! Chaos on PostgreSQL: four `flowrt worker` processes share one database and drive 2,000
//! runs (an `exec` tool that fails once for some runs under `retry`, a durable sleep, an
//! approval gate for a quarter of them) while the test kills workers with SIGKILL at random
//! and starts them again, restarts PostgreSQL once in the middle, and approves or rejects the
//! gates with `flowrt approve` / `flowrt reject` meanwhile.
//!
//! At the end every run has completed exactly once with the output its input predicts, no
//! committed step is recorded twice, every audit chain verifies, and the tool's own log shows
//! a call repeated only where the history says the call was in flight when its process or
//! its database went away — and always with the same idempotency key.
//!
//! Needs `FLOW_TEST_POSTGRES`, an admin URL (`postgres://postgres:pw@127.0.0.1:5432/postgres`):
//! the test creates a database of its own and drops it afterwards. Without it the test is
//! skipped with a note, except under CI (`CI` set), where it fails. `FLOW_CHAOS_RUNS` changes
//! the number of runs (default 2,000). The PostgreSQL restart needs root and a local cluster
//! managed by `pg_ctlcluster` on the URL's port; otherwise it is skipped with a note.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use flow_compiler::bytecode;
use flow_compiler::sources::MemoryLoader;
use flow_runtime::engine::Engine;
use flow_runtime::store::{Event, RunStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const FLOWRT: &str = env!("CARGO_BIN_EXE_flowrt");
/// The key every process seals secrets with (a PostgreSQL store requires one, shared).
const SECRET_KEY: &str = "6368616f732d746573742d6b65792d6f662d666c6f772d72756e74696d652121";
const LEASE_MS: &str = "2000";
const WORKERS: usize = 4;
/// The runs must all have ended within this long after the workers start.
const LIMIT: Duration = Duration::from_secs(300);

const PROGRAM: &str = r#"tool work(n: Int, part: Int) -> Int via exec "sh tools/work.sh"

workflow chaos(n: Int, gated: Bool) -> Int {
  let a = retry 3 backoff 100ms { work(n, 1) }
  sleep 200ms
  if gated {
    let d = await approval "go" { approvers: role("ops"), prompt: "Go on with ${n}?" }
    if !d.approved {
      return -1
    }
  }
  let b = retry 3 backoff 100ms { work(n, 2) }
  a + b
}
"#;

/// Logs `RUN N PART KEY`; fails its first call for part 1 of every third run and part 2 of
/// every fourth (a marker file per run and part makes that deterministic); answers 10n+part.
/// Part 1 of every 200th run takes 2.5 s, longer than the lease: the worker's heartbeat must
/// keep the run with it meanwhile (unless it is killed). Otherwise pure shell, no
/// other process: 2,000 runs make thousands of calls on two cores.
const TOOL: &str = r#"#!/bin/sh
IFS= read -r input || true
n=${input#*\"n\":}
n=${n%%[,\}]*}
p=${input#*\"part\":}
p=${p%%[,\}]*}
echo "$FLOW_RUN_ID $n $p $FLOW_IDEMPOTENCY_KEY" >> calls.log
if [ "$p" = 1 ] && [ $((n % 200)) -eq 7 ]; then sleep 2.5; fi
flaky=0
if [ "$p" = 1 ] && [ $((n % 3)) -eq 0 ]; then flaky=1; fi
if [ "$p" = 2 ] && [ $((n % 4)) -eq 1 ]; then flaky=1; fi
if [ $flaky = 1 ] && [ ! -e "marks/$n-$p" ]; then
  : > "marks/$n-$p"
  echo "busy, try again" >&2
  exit 1
fi
echo $((n * 10 + p))
"#;

fn gated(n: i64) -> bool {
    n % 4 == 0
}

fn rejected(n: i64) -> bool {
    n % 20 == 0
}

fn expected_output(n: i64) -> i64 {
    if gated(n) && rejected(n) {
        -1
    } else {
        (10 * n + 1) + (10 * n + 2)
    }
}

/// A small deterministic generator (xorshift), so a failure can be replayed with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The admin URL with another database name.
fn with_database(url: &str, database: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}/{database}{query}", &base[..host_end])
}

/// The host and port of a URL (`postgres://u:p@host:port/db`).
fn host_and_port(url: &str) -> (String, u16) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    match host_port.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(5432)),
        None => (host_port.to_string(), 5432),
    }
}

/// A connection for the test's own queries, re-opened after PostgreSQL restarts.
struct Db {
    url: String,
    client: Option<postgres::Client>,
}

impl Db {
    fn new(url: &str) -> Db {
        Db {
            url: url.to_string(),
            client: None,
        }
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, String> {
        if self.client.as_ref().is_none_or(postgres::Client::is_closed) {
            self.client = Some(
                postgres::Client::connect(&self.url, postgres::NoTls).map_err(|e| e.to_string())?,
            );
        }
        let result = self.client.as_mut().unwrap().query(sql, params);
        result.map_err(|e| {
            self.client = None;
            e.to_string()
        })
    }
}

/// The fresh database of this test, dropped at the end (also when the test fails).
struct TestDatabase {
    admin: String,
    name: String,
}

impl TestDatabase {
    fn create(admin: &str) -> TestDatabase {
        let name = format!(
            "flow_chaos_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        );
        let mut client = postgres::Client::connect(admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to FLOW_TEST_POSTGRES: {e}"));
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        TestDatabase {
            admin: admin.to_string(),
            name,
        }
    }

    fn url(&self) -> String {
        with_database(&self.admin, &self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // PostgreSQL may still be coming back from the restart: try for a while.
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
        eprintln!("note: could not drop the test database {}", self.name);
    }
}

/// A `flowrt` command on the test's database, in the project directory.
fn flowrt(dir: &Path, url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(FLOWRT);
    command
        .arg("--db")
        .arg(url)
        .args(args)
        .current_dir(dir)
        .env("FLOW_SECRET_KEY", SECRET_KEY)
        .env("FLOW_LEASE_MS", LEASE_MS)
        .env_remove("FLOW_LOG")
        .env_remove("RUST_LOG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env("NO_COLOR", "1");
    command
}

fn spawn_worker(dir: &Path, url: &str, index: usize) -> Child {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("worker-{index}.log")))
        .unwrap();
    flowrt(
        dir,
        url,
        &["worker", "--tool-threads", &TOOL_THREADS.to_string()],
    )
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .unwrap()
}

/// The tool calls each worker makes at once (`flowrt worker --tool-threads`).
const TOOL_THREADS: usize = 4;

/// The worker processes, killed when the test ends (whether it passes or not).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.0 {
            kill9(worker);
        }
    }
}

/// SIGKILL: no destructor, no flush, no cleanup, no rollback but PostgreSQL's own.
fn kill9(child: &mut Child) {
    let _ = child.kill(); // SIGKILL on Unix (Ok if it had exited)
    let _ = child.wait();
}

/// The `pg_ctlcluster VERSION NAME` of the local cluster on `port`, when this process may
/// restart it (root, a Debian-style cluster); otherwise why not.
fn restartable_cluster(url: &str) -> Result<(String, String), String> {
    let (host, port) = host_and_port(url);
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1" | "[::1]") {
        return Err(format!("PostgreSQL is on {host}, not on this machine"));
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if uid != "0" {
        return Err("the test does not run as root".into());
    }
    let listed = Command::new("pg_lsclusters")
        .arg("--no-header")
        .output()
        .map_err(|e| format!("pg_lsclusters: {e}"))?;
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[2] == port.to_string())
        .map(|f| (f[0].to_string(), f[1].to_string()))
        .ok_or_else(|| format!("no pg_ctlcluster cluster listens on port {port}"))
}

/// Decides the gates of the runs waiting at one, with `flowrt approve` (or `reject` for
/// every fifth gated run), half of them leaving the driving to the workers (`--no-drive`).
/// Returns how many decisions it made; failed attempts (the database restarting, the run
/// claimed) are tried again on the next pass.
fn approver(dir: &Path, url: &str, stop: &AtomicBool, decided: &AtomicUsize) -> Approvals {
    let mut db = Db::new(url);
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut killed: BTreeSet<String> = BTreeSet::new();
    let mut failed_attempts = 0;
    while !stop.load(Ordering::Relaxed) {
        let waiting = match db.query(
            "SELECT id, input FROM runs WHERE status = 'waiting' AND waiting_on = 'approval go'
             ORDER BY created_at, n",
            &[],
        ) {
            Ok(rows) => rows,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        for row in waiting {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let id: String = row.get(0);
            if done.contains(&id) {
                continue;
            }
            let input: serde_json::Value = serde_json::from_str(&row.get::<_, String>(1)).unwrap();
            let n = input["n"].as_i64().unwrap();
            let mut args = if rejected(n) {
                vec![
                    "reject",
                    &id,
                    "go",
                    "--as",
                    "ana",
                    "--comment",
                    "not this one",
                ]
            } else {
                vec!["approve", &id, "go", "--as", "ana"]
            };
            if n % 8 == 0 {
                args.push("--no-drive");
            }
            // Every fourth gated run: the first decision's process is killed a moment after
            // it starts (before, while or after it records the decision, or while it drives
            // the run on); the gate is then decided again, or found decided.
            if n % 16 == 4 && killed.insert(id.clone()) {
                let mut child = flowrt(dir, url, &args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                std::thread::sleep(Duration::from_millis((n as u64 * 7) % 60));
                kill9(&mut child);
                continue;
            }
            let out = flowrt(dir, url, &args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                Some(0) => {
                    done.insert(id);
                    decided.fetch_add(1, Ordering::Relaxed);
                }
                // Decided before (by an attempt whose answer was lost in a restart).
                Some(3) if stderr.contains("already decided") => {
                    done.insert(id);
                }
                Some(3) => panic!("{id}: the decision was refused: {stderr}"),
                _ => failed_attempts += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Approvals {
        failed_attempts,
        killed: killed.len(),
    }
}

/// What the approving thread did besides deciding.
struct Approvals {
    /// Attempts that failed (the database restarting, the run busy) and were made again.
    failed_attempts: usize,
    /// `flowrt approve` / `reject` processes killed with SIGKILL.
    killed: usize,
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A call the tool logged: `FLOW_RUN_ID` and the input's fields (none when the input never
/// arrived).
#[derive(Debug)]
struct Call {
    run: String,
    n: Option<i64>,
    part: Option<i64>,
}

fn data(event: &Event) -> serde_json::Value {
    serde_json::from_str(&event.data).unwrap()
}

#[test]
fn four_workers_survive_kills_and_a_postgres_restart_with_every_run_ending_once() {
    let Ok(admin) = std::env::var("FLOW_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "FLOW_TEST_POSTGRES must be set in CI (an admin URL of a PostgreSQL server)"
        );
        eprintln!(
            "note: chaos_postgres skipped: set FLOW_TEST_POSTGRES=postgres://user:pw@host/db (an admin URL) to run it"
        );
        return;
    };
    let total: i64 = std::env::var("FLOW_CHAOS_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("FLOW_CHAOS_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let database = TestDatabase::create(&admin);
    let url = database.url();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::create_dir_all(dir.join("tools")).unwrap();
    std::fs::create_dir_all(dir.join("marks")).unwrap();
    std::fs::write(dir.join("tools/work.sh"), TOOL).unwrap();
    std::fs::write(dir.join("chaos.flow"), PROGRAM).unwrap();
    // A call longer than the lease keeps its run through the worker's heartbeat; the time
    // limit bounds it.
    std::fs::write(
        dir.join("flow.toml"),
        "[users.ana]\nroles = [\"ops\"]\n\n[tools.work]\ntimeout = \"5s\"\n",
    )
    .unwrap();
    let test_started = Instant::now();

    // Deploy and start the runs from this process (2,000 `flowrt start` processes would take
    // longer than the chaos itself).
    flow_runtime::secrets::install(flow_runtime::secrets::SecretKey::from_hex(SECRET_KEY).unwrap());
    let loader = MemoryLoader::default().with("chaos.flow", PROGRAM);
    let program = flow_compiler::check_paths(&["chaos.flow".to_string()], &loader).unwrap();
    assert_eq!(program.errors(), 0, "the chaos program must compile");
    let artifact = bytecode::encode(&flow_compiler::lower::lower(&program).unwrap());
    let mut engine = Engine::new(flow_runtime::store::open(&url).unwrap(), "chaos-test");
    let (version, _) = engine.deploy(&artifact).unwrap();
    let mut runs: BTreeMap<String, i64> = BTreeMap::new();
    for n in 1..=total {
        let input = serde_json::json!({ "n": n, "gated": gated(n) });
        let id = engine.start(&version, "chaos", &input, "chaos").unwrap();
        runs.insert(id, n);
    }
    let started_runs = test_started.elapsed();

    // The chaos.
    let chaos_started = Instant::now();
    let mut rng = Rng(seed);
    let mut workers = Workers((0..WORKERS).map(|i| spawn_worker(dir, &url, i)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let decided = Arc::new(AtomicUsize::new(0));
    let approving = {
        let (dir, url, stop, decided) = (
            dir.to_path_buf(),
            url.clone(),
            stop.clone(),
            decided.clone(),
        );
        std::thread::spawn(move || approver(&dir, &url, &stop, &decided))
    };
    let cluster = restartable_cluster(&admin);
    let mut restarted: Option<Duration> = None;
    if let Err(why) = &cluster {
        eprintln!("note: PostgreSQL will not be restarted during the chaos: {why}");
    }
    let mut monitor = Db::new(&url);
    let mut kills = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(300 + rng.below(1200));
    let mut finished = 0;
    let mut last_report = Instant::now();
    loop {
        if let Ok(rows) = monitor.query(
            "SELECT COUNT(*) FROM runs WHERE status IN ('completed', 'failed', 'cancelled')",
            &[],
        ) {
            finished = rows[0].get::<_, i64>(0);
        }
        if finished == total || approving.is_finished() {
            break;
        }
        // A worker never gives up by itself, not even while PostgreSQL restarts.
        for (i, worker) in workers.0.iter_mut().enumerate() {
            if let Some(status) = worker.try_wait().unwrap() {
                stop.store(true, Ordering::Relaxed);
                panic!(
                    "worker {i} exited by itself ({status}):\n{}",
                    tail(&dir.join(format!("worker-{i}.log")), 20)
                );
            }
        }
        if chaos_started.elapsed() > LIMIT {
            stop.store(true, Ordering::Relaxed);
            drop(workers);
            let statuses = monitor
                .query(
                    "SELECT status, COALESCE(waiting_on, ''), COUNT(*) FROM runs GROUP BY 1, 2",
                    &[],
                )
                .map(|rows| {
                    rows.iter()
                        .map(|r| {
                            format!(
                                "{} {}: {}",
                                r.get::<_, String>(0),
                                r.get::<_, String>(1),
                                r.get::<_, i64>(2)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            panic!(
                "only {finished} of {total} runs ended within {LIMIT:?} ({statuses}); worker 0 said:\n{}",
                tail(&dir.join("worker-0.log"), 20)
            );
        }
        if Instant::now() >= next_kill {
            let victim = rng.below(WORKERS as u64) as usize;
            kill9(&mut workers.0[victim]);
            kills += 1;
            std::thread::sleep(Duration::from_millis(rng.below(300)));
            workers.0[victim] = spawn_worker(dir, &url, victim);
            next_kill = Instant::now() + Duration::from_millis(300 + rng.below(1700));
        }
        if restarted.is_none()
            && finished * 5 >= total * 2
            && let Ok((version, name)) = &cluster
        {
            let began = Instant::now();
            let status = Command::new("pg_ctlcluster")
                .args([version.as_str(), name.as_str(), "restart"])
                .status()
                .unwrap();
            assert!(
                status.success(),
                "pg_ctlcluster {version} {name} restart failed"
            );
            restarted = Some(chaos_started.elapsed());
            eprintln!(
                "chaos: PostgreSQL {version}/{name} restarted at {:.1} s ({finished} of {total} runs ended), in {:.1} s",
                chaos_started.elapsed().as_secs_f64(),
                began.elapsed().as_secs_f64()
            );
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            eprintln!(
                "chaos: {:.0} s, {finished} of {total} runs ended, {kills} workers killed, {} gates decided",
                chaos_started.elapsed().as_secs_f64(),
                decided.load(Ordering::Relaxed)
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let chaos_took = chaos_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    drop(workers);
    let approvals = approving.join().unwrap();

    // Every run completed once, with the output its input predicts; no committed step twice.
    let verify_started = Instant::now();
    // The tool's log, by idempotency key: (run id, n, part) of each call. A worker killed
    // after starting the tool but before writing its input leaves a call with no input (the
    // tool ran, saw end of file, logged empty fields): the key still says which call it was.
    let mut calls: BTreeMap<String, Vec<Call>> = BTreeMap::new();
    for line in std::fs::read_to_string(dir.join("calls.log"))
        .unwrap()
        .lines()
    {
        let fields: Vec<&str> = line.split(' ').collect();
        let [run, n, part, key] = fields[..] else {
            panic!("a torn line in the tool's log: {line:?}");
        };
        let number = |text: &str| {
            (!text.is_empty()).then(|| {
                text.parse::<i64>()
                    .unwrap_or_else(|_| panic!("a torn line in the tool's log: {line:?}"))
            })
        };
        calls.entry(key.to_string()).or_default().push(Call {
            run: run.to_string(),
            n: number(n),
            part: number(part),
        });
    }
    // A new connection: the test's first one did not live through the restart.
    drop(engine);
    let mut store = flow_runtime::store::open(&url).unwrap();
    let (mut resumed_total, mut repeated_calls, mut retried, mut lost_inputs) = (0, 0, 0, 0);
    // Resumptions a killed approving process may explain: part 2 of a run it was deciding.
    let mut resumed_after_approver = 0;
    for (id, &n) in &runs {
        let record = store.run(id).unwrap().unwrap();
        assert_eq!(
            record.status,
            RunStatus::Completed,
            "{id} (n = {n}): {record:?}"
        );
        let output: i64 = record.output.as_deref().unwrap().parse().unwrap();
        assert_eq!(output, expected_output(n), "{id} (n = {n})");

        let history = store.history(id).unwrap();
        let count = |kind: &str| history.iter().filter(|e| e.kind.as_str() == kind).count();
        assert_eq!(count("run_completed"), 1, "{id}: {history:#?}");
        assert_eq!(count("run_started"), 1, "{id}");
        assert_eq!(
            count("gate_decided"),
            usize::from(gated(n)),
            "{id}: one decision per gated run"
        );
        // Each step (numbered by the interpreter) completes at most once.
        let mut completed_steps = BTreeSet::new();
        for e in history
            .iter()
            .filter(|e| e.kind.as_str() == "step_completed")
        {
            let step = data(e)["step_number"].as_u64().unwrap();
            assert!(
                completed_steps.insert(step),
                "{id}: step {step} recorded as completed twice"
            );
        }
        // Per call site (part 1, part 2): the calls recorded, the calls resumed after a crash,
        // and the calls the tool itself saw.
        let mut part_of_step: BTreeMap<u64, i64> = BTreeMap::new();
        let mut first_key: BTreeMap<i64, String> = BTreeMap::new();
        for e in history.iter().filter(|e| e.kind.as_str() == "step_started") {
            let d = data(e);
            let part = d["input"]["part"].as_i64().unwrap();
            let step = d["step_number"].as_u64().unwrap();
            part_of_step.insert(step, part);
            let key = d["idempotency_key"].as_str().unwrap();
            // RUN:STEP, where STEP is the step number of the site's first attempt.
            first_key.entry(part).or_insert_with(|| {
                assert_eq!(
                    key,
                    format!("{id}:{step}"),
                    "{id}: the key of a first attempt"
                );
                key.to_string()
            });
        }
        for part in [1, 2] {
            let of_part = |kind: &str| {
                history
                    .iter()
                    .filter(|e| {
                        e.kind.as_str() == kind
                            && part_of_step.get(&data(e)["step_number"].as_u64().unwrap())
                                == Some(&part)
                    })
                    .count()
            };
            let (done, failed, resumed) = (
                of_part("step_completed"),
                of_part("step_failed"),
                of_part("step_resumed"),
            );
            let reached = part == 1 || !(gated(n) && rejected(n));
            assert_eq!(done, usize::from(reached), "{id} part {part}: {history:#?}");
            let flaky = (part == 1 && n % 3 == 0) || (part == 2 && n % 4 == 1);
            assert!(
                failed <= usize::from(flaky),
                "{id} part {part} failed {failed} times"
            );
            retried += failed;
            resumed_total += resumed;
            if part == 2 && n % 16 == 4 {
                resumed_after_approver += resumed.min(1);
            }
            // The calls the tool saw for this site, by the site's key: the run id and the
            // step number of its first attempt (every attempt of the `retry` and every call
            // made again after a crash carries it).
            let seen = match first_key.get(&part) {
                Some(key) => calls.remove(key).unwrap_or_default(),
                None => Vec::new(),
            };
            for call in &seen {
                assert_eq!(&call.run, id, "FLOW_RUN_ID of a call of {id}");
                assert!(call.n.is_none_or(|x| x == n), "{id}: a call for {call:?}");
                assert!(
                    call.part.is_none_or(|x| x == part),
                    "{id}: {call:?} under the key of part {part}"
                );
                lost_inputs += usize::from(call.n.is_none());
            }
            // Every recorded call was made; a call was made again only after the history
            // says it was in flight (`step_resumed`).
            assert!(
                (done + failed..=done + failed + resumed).contains(&seen.len()),
                "{id} part {part}: the tool saw {} call(s) for {done} completed, {failed} failed and {resumed} resumed",
                seen.len()
            );
            repeated_calls += seen.len() - done - failed;
        }
    }
    // A call is abandoned in flight only by a process that died (a worker killed, with at
    // most its pool's calls in flight; an approving process killed, at most one call) or lost
    // its database (the restart: as many again) — never taken from a live worker.
    let abandonable = kills * TOOL_THREADS + restarted.map_or(0, |_| WORKERS * TOOL_THREADS + 1);
    assert!(
        resumed_total - resumed_after_approver <= abandonable,
        "{resumed_total} calls resumed ({resumed_after_approver} after a killed approving process), but only {abandonable} could have been abandoned by workers"
    );
    assert!(
        calls.is_empty(),
        "the tool was called with keys no history records: {:?}",
        calls.iter().take(5).collect::<Vec<_>>()
    );
    let audit = flowrt(dir, &url, &["audit", "verify"]).output().unwrap();
    assert!(
        audit.status.success(),
        "flowrt audit verify: {}{}",
        String::from_utf8_lossy(&audit.stdout)
            .lines()
            .filter(|l| l.starts_with("BROKEN"))
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&audit.stderr)
    );
    let intact = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .filter(|l| l.ends_with("chain intact"))
        .count();
    assert_eq!(intact, runs.len(), "every run's trail verifies");
    // What the workers retried after (a database error), by kind: the message without its
    // run ids and database name.
    let mut worker_errors: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..WORKERS {
        for line in std::fs::read_to_string(dir.join(format!("worker-{i}.log")))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("retrying in 1 s"))
        {
            let kind: String = line
                .split_whitespace()
                .filter(|w| !w.starts_with('r') || !w.chars().any(|c| c.is_ascii_digit()))
                .filter(|w| !w.contains("flow_chaos_"))
                .collect::<Vec<_>>()
                .join(" ");
            *worker_errors.entry(kind).or_default() += 1;
        }
    }
    let retries_after_db_loss: usize = worker_errors.values().sum();
    for (kind, count) in &worker_errors {
        eprintln!("chaos: {count} x {kind}");
    }
    assert!(kills >= 3, "only {kills} kills: the chaos was too short");
    eprintln!(
        "chaos_postgres: {total} runs ({} gated) started in {:.1} s; chaos {:.1} s with {WORKERS} workers, {kills} SIGKILLs, PostgreSQL restart {}; {} decisions ({} approving processes killed, {} attempts failed and were repeated); {retried} tool failures retried, {resumed_total} calls resumed after a crash, {repeated_calls} calls repeated with the same key ({lost_inputs} of them never got their input: the worker died first), {retries_after_db_loss} worker retries after a database error; verified in {:.1} s; {:.1} s in all",
        runs.values().filter(|n| gated(**n)).count(),
        started_runs.as_secs_f64(),
        chaos_took.as_secs_f64(),
        restarted.map_or("skipped".to_string(), |at| format!(
            "at {:.1} s",
            at.as_secs_f64()
        )),
        decided.load(Ordering::Relaxed),
        approvals.killed,
        approvals.failed_attempts,
        verify_started.elapsed().as_secs_f64(),
        test_started.elapsed().as_secs_f64()
    );
}
