//! Runs started by requests that reach `flowrt serve` together are driven together (one
//! transaction per round of their steps): on both stores, 60 concurrent `POST /api/runs` of
//! a workflow that completes, fails, waits at a gate or calls an outside tool each get the
//! answer a run started alone gets, and each run's history has the same events, in the same
//! order, as the same run started alone.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::for_each_store;
use common::server::Served;
use serde_json::{Value, json};

const PROGRAM: &str = r#"tool check(n: Int) -> Int via exec "flowrt:echo"
tool outside(n: Int) -> Int via exec "sh -c 'cat >/dev/null; echo 7'"

workflow mix(n: Int) -> Int {
  var total = 0
  var i = 0
  while i < 5 {
    total = total + check(n + i)
    i = i + 1
  }
  if n % 4 == 1 { fail "odd one ${n}" }
  if n % 4 == 2 {
    let d = await approval "ok" { approvers: role("ops"), prompt: "ok ${n}?" }
    if !d.approved { return 0 }
  }
  if n % 4 == 3 { total = total + outside(n) }
  total
}
"#;

const CONFIG: &str = "[users.ines]\nroles = [\"clerk\"]\n\n[users.olga]\nroles = [\"ops\"]\n";

fn expected_status(n: i64) -> &'static str {
    match n % 4 {
        1 => "failed",
        2 => "waiting",
        _ => "completed",
    }
}

#[test]
fn runs_started_together_end_as_runs_started_alone() {
    for_each_store(|store| {
        let served = Served::start(store, PROGRAM, CONFIG, &[]);
        let token = served.token("ines", &[]);
        let start = |n: i64| -> Value {
            served.call(
                "POST",
                "/api/runs",
                Some(&token),
                Some(json!({ "workflow": "mix", "input": { "n": n } })),
                201,
            )
        };
        // Alone, one after the other: the reference.
        let answered = |n: i64, answer: &Value| {
            // An outside call goes to the pool: the answer may come while it is in progress.
            let status = answer["status"].as_str().unwrap();
            if n % 4 == 3 {
                assert!(["completed", "waiting"].contains(&status), "{n}: {answer}");
            } else {
                assert_eq!(status, expected_status(n), "{n}: {answer}");
            }
        };
        let alone: Vec<(i64, String)> = (0..4)
            .map(|n| {
                let answer = start(n);
                answered(n, &answer);
                let id = answer["id"].as_str().unwrap().to_string();
                served.wait_for_status(
                    &token,
                    &id,
                    expected_status(n),
                    std::time::Duration::from_secs(30),
                );
                (n, id)
            })
            .collect();
        // Together: 60 requests at once.
        let together: Vec<(i64, Value)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (100..160)
                .map(|n| {
                    let start = &start;
                    scope.spawn(move || (n, start(n)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (n, answer) in &together {
            answered(*n, answer);
        }
        for (n, answer) in &together {
            let run = answer["id"].as_str().unwrap();
            let shown = served.wait_for_status(
                &token,
                run,
                expected_status(*n),
                std::time::Duration::from_secs(30),
            );
            let reference = &alone[(*n % 4) as usize].1;
            assert_eq!(
                served.history_kinds(&token, run),
                served.history_kinds(&token, reference),
                "run {run} (n = {n}) started together: {shown}"
            );
        }
        // The gates opened together are decided like any other.
        let olga = served.token("olga", &[]);
        let waiting = together.iter().find(|(n, _)| n % 4 == 2).unwrap();
        let run = waiting.1["id"].as_str().unwrap();
        served.call(
            "POST",
            &format!("/api/runs/{run}/gates/ok/approve"),
            Some(&olga),
            Some(json!({})),
            200,
        );
        served.wait_for_status(&token, run, "completed", std::time::Duration::from_secs(30));
    });
}
