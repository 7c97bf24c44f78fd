//! Claims and their leases through real `flowrt worker` processes: a tool call longer than
//! the lease runs once, because a worker's heartbeat keeps its claims alive whatever its
//! engine is doing; a worker killed with SIGKILL in the middle of the call stops renewing, and
//! another worker takes the run over once the lease has passed — and makes the call again
//! with the same idempotency key.
//!
//! The tool logs every start (`start RUN KEY`) to `starts.log` and takes 6 s; the lease is 2 s.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, Store, for_each_store, of_kind};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const LEASE_MS: &str = "2000";

const PROGRAM: &str = r#"tool slow(n: Int) -> Int via exec "sh slow.sh"

workflow long(n: Int) -> Int {
  let a = slow(n)
  a + 1
}
"#;

const TOOL: &str = r#"cat > /dev/null
echo "start $FLOW_RUN_ID $FLOW_IDEMPOTENCY_KEY" >> starts.log
sleep 6
echo 42
"#;

/// The worker processes of a test, killed when it ends (whether it passes or not).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.0 {
            kill9(worker);
        }
    }
}

fn kill9(child: &mut Child) {
    let _ = child.kill(); // SIGKILL (Ok if it had exited)
    let _ = child.wait();
}

fn project(store: &Store) -> Project {
    let project = Project::new(store);
    project.write("long.flow", PROGRAM);
    project.write("slow.sh", TOOL);
    // No time limit for the tool: the default one (5 minutes) is far longer than the lease.
    project.write("flow.toml", "[users.operator]\nroles = []\n");
    project
}

/// `flowrt start` of one run; its id.
fn start(project: &Project) -> String {
    let out = project.flowrt(&["start", "long.flow", "--input", r#"{"n": 1}"#, "--json"]);
    out.expect_code(0);
    out.json()["id"].as_str().unwrap().to_string()
}

/// A `flowrt worker` with a 2 s lease; its stderr goes to `worker-N.log`.
fn spawn_worker(project: &Project, index: usize) -> Child {
    let log = std::fs::File::create(project.path().join(format!("worker-{index}.log"))).unwrap();
    project
        .command(&["worker"])
        .env("FLOW_LEASE_MS", LEASE_MS)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The starts the tool logged, as (run, key).
fn starts(project: &Project) -> Vec<(String, String)> {
    std::fs::read_to_string(project.path().join("starts.log"))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 3, "a start line: {line:?}");
            (fields[1].to_string(), fields[2].to_string())
        })
        .collect()
}

/// What the workers said, for failure messages.
fn worker_logs(project: &Project, workers: usize) -> String {
    (0..workers)
        .map(|i| {
            let log = std::fs::read_to_string(project.path().join(format!("worker-{i}.log")))
                .unwrap_or_default();
            format!("worker {i}:\n{log}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until the run has finished (or fails the test after a minute: far longer than the
/// 6 s call plus a lease, far shorter than the 5 minutes of the default time limit).
fn finished(project: &Project, run: &str, workers: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = project.status(run);
        if matches!(
            status["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish: {status}\nstarts: {:?}\n{}",
            starts(project),
            worker_logs(project, workers)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the tool has logged `n` starts.
fn wait_for_starts(project: &Project, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while starts(project).len() < n {
        assert!(
            Instant::now() < deadline,
            "the tool was not started: {}",
            worker_logs(project, 1)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_call_longer_than_the_lease_runs_once_with_two_workers() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project);
        let workers = Workers(vec![spawn_worker(&project, 0), spawn_worker(&project, 1)]);

        let status = finished(&project, &run, 2);
        drop(workers);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], 43, "{status}");
        let starts = starts(&project);
        let history = project.history(&run);
        let started = of_kind(&history, "step_started");
        assert_eq!(started.len(), 1, "{history:#?}");
        let key = started[0]["data"]["idempotency_key"].as_str().unwrap();
        assert_eq!(
            starts,
            vec![(run.clone(), key.to_string())],
            "the 6 s call was made once, through three leases"
        );
        assert_eq!(of_kind(&history, "step_resumed").len(), 0, "{history:#?}");
        assert_eq!(of_kind(&history, "step_completed").len(), 1, "{history:#?}");
    });
}

#[test]
fn a_worker_killed_during_the_call_is_taken_over_after_the_lease() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project);
        // The first worker alone takes the run and starts the call; it is killed, and two
        // others compete for the run (and would each repeat the call at every lapsed lease
        // if the one driving it did not keep its claim alive).
        let mut workers = Workers(vec![spawn_worker(&project, 0)]);
        wait_for_starts(&project, 1);
        kill9(&mut workers.0[0]);
        workers.0.push(spawn_worker(&project, 1));
        workers.0.push(spawn_worker(&project, 2));

        let status = finished(&project, &run, 3);
        drop(workers);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], 43, "{status}");
        // The dead worker's call never committed, so one other worker made it again: two
        // starts, no more.
        let starts = starts(&project);
        assert_eq!(starts.len(), 2, "{starts:?}\n{}", worker_logs(&project, 3));
        let history = project.history(&run);
        let key = of_kind(&history, "step_started")[0]["data"]["idempotency_key"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            starts.iter().all(|(r, k)| *r == run && *k == key),
            "every start has the call's one idempotency key {key}: {starts:?}"
        );
        assert_eq!(of_kind(&history, "step_completed").len(), 1, "{history:#?}");
        assert_eq!(
            of_kind(&history, "step_started").len(),
            starts.len(),
            "{history:#?}"
        );
        let resumed = of_kind(&history, "step_resumed");
        assert_eq!(resumed.len(), starts.len() - 1, "{history:#?}");
        for event in resumed {
            assert_eq!(event["data"]["idempotency_key"], key.as_str());
        }
    });
}

#[test]
fn flowrt_run_keeps_its_claim_through_a_long_call_beside_a_worker() {
    for_each_store(|store| {
        let project = project(store);
        let mut run = project
            .command(&["run", "long.flow", "--input", r#"{"n": 1}"#, "--json"])
            .env("FLOW_LEASE_MS", LEASE_MS)
            .spawn()
            .unwrap();
        wait_for_starts(&project, 1);
        // A worker that looks for runs whose claim lapsed, all through the call.
        let workers = Workers(vec![spawn_worker(&project, 0)]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while run.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                kill9(&mut run);
                panic!("flowrt run did not finish: {:?}", starts(&project));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = run.wait_with_output().unwrap();
        drop(workers);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(record["output"], 43, "{record}");
        assert_eq!(starts(&project).len(), 1, "{:?}", starts(&project));
    });
}

#[test]
fn renew_claims_extends_the_owners_live_claims_only() {
    for_each_store(|store| {
        let project = project(store);
        let (mine, theirs, long) = (start(&project), start(&project), start(&project));
        let mut db = flow_runtime::store::open(project.db().spec()).unwrap();
        let now = 1_000_000;
        assert!(db.claim(&mine, "me", now + 1_000, now).unwrap());
        assert!(db.claim(&theirs, "them", now + 1_000, now).unwrap());
        assert!(db.claim(&long, "me", now + 900_000, now).unwrap());
        let lease = |run: &str| {
            project
                .db()
                .query_i64("SELECT lease_until FROM runs WHERE id = $1", &[run])
        };

        // Mine is extended; theirs is not; a longer claim of mine is not shortened.
        assert_eq!(db.renew_claims("me", now + 5_000).unwrap(), 1);
        assert_eq!(lease(&mine), Some(now + 5_000));
        assert_eq!(lease(&theirs), Some(now + 1_000));
        assert_eq!(lease(&long), Some(now + 900_000));

        // A released claim stays released; a finished run's claim is left as it is.
        db.release(&mine, "me").unwrap();
        assert!(
            db.cancel(&long, &flow_runtime::engine::cancel_event("operator", now))
                .unwrap()
        );
        project.db().execute(
            &format!(
                "UPDATE runs SET owner = 'me', lease_until = {} WHERE id = $1",
                now + 1_000
            ),
            &[&long],
        );
        assert_eq!(db.renew_claims("me", now + 1_000_000).unwrap(), 0);
        assert_eq!(lease(&mine), None);
        assert_eq!(lease(&long), Some(now + 1_000));
    });
}

#[test]
fn flowrt_serve_keeps_its_claim_through_a_long_call_beside_a_worker() {
    for_each_store(|store| {
        let project = project(store);
        let run = start(&project);
        // The server's engine picks the runnable run up by itself and makes the call.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .to_string();
        let log = std::fs::File::create(project.path().join("worker-0.log")).unwrap();
        let serve = project
            .command(&["serve", "--addr", &addr])
            .env("FLOW_LEASE_MS", LEASE_MS)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut processes = Workers(vec![serve]);
        wait_for_starts(&project, 1);
        processes.0.push(spawn_worker(&project, 1));

        let status = finished(&project, &run, 2);
        drop(processes);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], 43, "{status}");
        assert_eq!(
            starts(&project).len(),
            1,
            "{:?}\n{}",
            starts(&project),
            worker_logs(&project, 2)
        );
    });
}
