//! Tool calls off the engine thread, through a real `flowrt serve` on both stores: while runs
//! are inside calls that do not return, the server answers `/health`, shows the runs as
//! waiting on their tools, and takes decisions; a call that returns is recorded and its run
//! goes on; a server killed with SIGKILL in the middle of calls leaves them to the next
//! server, which makes each again under the same idempotency key once the lease has passed,
//! and records each exactly once.
//!
//! The tool logs its start (`start RUN KEY`) to `starts.log`, then waits until the test
//! creates the file `go`: what the test observes is order, not time. A notification hook that
//! hangs the same way keeps nobody waiting either, and its delivery is recorded when it ends.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::server::Served;
use common::{Store, for_each_store};
use serde_json::json;
use std::time::{Duration, Instant};

const PROGRAM: &str = r#"tool slow(n: Int) -> Int via exec "sh slow.sh"

workflow long(n: Int) -> Int {
  let a = slow(n)
  a + n
}

workflow ask(n: Int) -> Bool {
  let d = await approval "ok" { approvers: role("ops"), prompt: "ok ${n}?" }
  d.approved
}
"#;

const TOOL: &str = r#"cat > /dev/null
echo "start $FLOW_RUN_ID $FLOW_IDEMPOTENCY_KEY" >> starts.log
while [ ! -f go ]; do sleep 0.05; done
echo 40
"#;

const CONFIG: &str = r#"[users.olga]
roles = ["ops"]

[users.sam]
roles = ["starter"]
"#;

fn serve(store: &Store) -> Served {
    let served = Served::start(store, PROGRAM, CONFIG, &["--tool-threads", "8"]);
    std::fs::write(served.dir.path().join("slow.sh"), TOOL).unwrap();
    served
}

fn starts(served: &Served) -> Vec<(String, String)> {
    std::fs::read_to_string(served.dir.path().join("starts.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace().skip(1);
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

fn wait_for_starts(served: &Served, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while starts(served).len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} calls started: {:?}",
            starts(served).len(),
            starts(served)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_long(served: &Served, token: &str, n: i64) -> String {
    let started = served.call(
        "POST",
        "/api/runs",
        Some(token),
        Some(json!({ "workflow": "long", "input": { "n": n } })),
        201,
    );
    // The answer comes once the call's start is durable, not when the call returns.
    assert_eq!(started["status"], "waiting", "{started}");
    started["id"].as_str().unwrap().to_string()
}

#[test]
fn the_server_answers_while_runs_are_inside_tool_calls() {
    for_each_store(|store| {
        let served = serve(store);
        let sam = served.token("sam", &[]);
        let olga = served.token("olga", &[]);
        let runs: Vec<String> = (1..=5).map(|n| start_long(&served, &sam, n)).collect();
        wait_for_starts(&served, 5);

        // Every call is in progress and none can return: the engine thread is free.
        served.call("GET", "/health", None, None, 200);
        for run in &runs {
            let shown = served.call("GET", &format!("/api/runs/{run}"), Some(&sam), None, 200);
            assert_eq!(shown["status"], "waiting", "{shown}");
            assert_eq!(shown["waiting_on"], "tool slow", "{shown}");
        }
        // A run that needs a person starts, waits and is decided meanwhile.
        let asked = served.call(
            "POST",
            "/api/runs",
            Some(&sam),
            Some(json!({ "workflow": "ask", "input": { "n": 1 } })),
            201,
        );
        let asked = asked["id"].as_str().unwrap();
        let decided = served.call(
            "POST",
            &format!("/api/runs/{asked}/gates/ok/approve"),
            Some(&olga),
            Some(json!({ "comment": "fine" })),
            200,
        );
        assert_eq!(decided["run_status"], "completed", "{decided}");
        served.call("GET", "/metrics", Some(&olga), None, 200);

        // The calls return: each is recorded once and its run completes.
        std::fs::write(served.dir.path().join("go"), "").unwrap();
        for (n, run) in runs.iter().enumerate() {
            let done = served.wait_for_status(&sam, run, "completed", Duration::from_secs(30));
            assert_eq!(done["outcome"], json!(null), "{done}");
            let kinds = served.history_kinds(&sam, run);
            let count = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
            assert_eq!(count("step_started"), 1, "{kinds:?}");
            assert_eq!(count("step_completed"), 1, "{kinds:?}");
            assert_eq!(count("step_resumed"), 0, "{kinds:?}");
            let output = served
                .db
                .query_text("SELECT output FROM runs WHERE id = $1", &[run]);
            assert_eq!(output.as_deref(), Some(&*format!("{}", 40 + n as i64 + 1)));
        }
        assert_eq!(starts(&served).len(), 5);
    });
}

#[test]
fn calls_in_flight_at_a_kill_are_made_again_under_their_keys_and_recorded_once() {
    for_each_store(|store| {
        // A short lease, so that the next server takes the runs over soon after the kill.
        let mut served = Served::start_with_env(
            store,
            PROGRAM,
            CONFIG,
            &["--tool-threads", "4"],
            &[("FLOW_LEASE_MS", "1500")],
        );
        std::fs::write(served.dir.path().join("slow.sh"), TOOL).unwrap();
        let sam = served.token("sam", &[]);
        let runs: Vec<String> = (1..=3).map(|n| start_long(&served, &sam, n)).collect();
        wait_for_starts(&served, 3);

        served.kill();
        served.spawn();
        // The new server makes every call again once the dead one's lease has run out.
        wait_for_starts(&served, 6);
        std::fs::write(served.dir.path().join("go"), "").unwrap();
        for run in &runs {
            served.wait_for_status(&sam, run, "completed", Duration::from_secs(30));
            let kinds = served.history_kinds(&sam, run);
            let count = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
            assert_eq!(count("step_completed"), 1, "{kinds:?}");
            assert_eq!(count("step_resumed"), 1, "{kinds:?}");
            let keys: Vec<String> = starts(&served)
                .into_iter()
                .filter(|(r, _)| r == run)
                .map(|(_, key)| key)
                .collect();
            assert_eq!(keys.len(), 2, "{keys:?}");
            assert_eq!(keys[0], keys[1], "the same idempotency key both times");
        }
    });
}

#[test]
fn a_hook_that_hangs_keeps_nobody_waiting_and_its_delivery_is_recorded() {
    for_each_store(|store| {
        let config = format!(
            "{CONFIG}\n[[notify]]\ncommand = \"cat > announced.json; while [ ! -f go ]; do sleep 0.05; done\"\n"
        );
        let served = Served::start(store, PROGRAM, &config, &[]);
        let sam = served.token("sam", &[]);
        let olga = served.token("olga", &[]);
        let asked = served.call(
            "POST",
            "/api/runs",
            Some(&sam),
            Some(json!({ "workflow": "ask", "input": { "n": 7 } })),
            201,
        );
        assert_eq!(asked["status"], "waiting", "{asked}");
        let asked = asked["id"].as_str().unwrap().to_string();
        let announced = served.dir.path().join("announced.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !announced.exists() {
            assert!(Instant::now() < deadline, "the hook never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The hook is running and cannot finish: the server answers all the same.
        served.call("GET", "/health", None, None, 200);
        served.call("GET", &format!("/api/runs/{asked}"), Some(&sam), None, 200);
        std::fs::write(served.dir.path().join("go"), "").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !served
            .history_kinds(&sam, &asked)
            .contains(&"notified".to_string())
        {
            assert!(Instant::now() < deadline, "the delivery was never recorded");
            std::thread::sleep(Duration::from_millis(50));
        }
        let decided = served.call(
            "POST",
            &format!("/api/runs/{asked}/gates/ok/approve"),
            Some(&olga),
            Some(json!({ "comment": "fine" })),
            200,
        );
        assert_eq!(decided["run_status"], "completed", "{decided}");
    });
}
