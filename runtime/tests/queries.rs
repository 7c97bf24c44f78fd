//! Queries (`query name -> T { … }`, spec/statements.md, "Queries") through the real
//! binaries on both stores: `flowrt query` and `GET /api/runs/{id}/queries/{name}` read a
//! running run's state at its last durable point and change nothing; who may read the run
//! may query it; a query the run has not reached, a finished run and a failing query are
//! refused with the reason.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::server::Served;
use common::{Project, for_each_store};

const PROGRAM: &str = r#"workflow tally(customer: String) -> Int
  accepts add: Int from role("ops"),
    stop from role("ops")
{
  var total = 0
  var items: List<Int> = []
  query summary -> String { "${customer}: ${total} over ${len(items)}" }
  query largest -> Int {
    var best = 0
    for n in items { if n > best { best = n } }
    best
  }
  query third -> Int { items[2] }
  var going = true
  while going {
    select {
      signal add as n => {
        total = total + n
        items = items + [n]
      },
      signal stop => { going = false },
    }
  }
  let d = await approval "close" { approvers: role("ops"), prompt: "Close ${customer}?" }
  query closing -> Bool { d.approved }
  total
}
"#;

const CONFIG: &str = "[users.ops]\nroles = [\"ops\"]\n\n[users.ines]\nroles = [\"clerk\"]\n";

#[test]
fn flowrt_query_reads_a_running_runs_state_and_changes_nothing() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write("flow.toml", CONFIG);
        project.write("tally.flow", PROGRAM);
        project
            .flowrt(&["run", "tally.flow", "--input", r#"{"customer": "C-1"}"#])
            .expect_code(10);
        let run = project.runs()[0]["id"].as_str().unwrap().to_string();
        project
            .flowrt(&["query", &run, "summary"])
            .expect_code(0)
            .expect_stdout("\"C-1: 0 over 0\"");
        for n in ["5", "12", "7"] {
            project
                .flowrt(&["signal", &run, "add", "--value", n, "--as", "ops"])
                .expect_code(0);
        }
        let before = project.history(&run).len();
        project
            .flowrt(&["query", &run, "summary"])
            .expect_code(0)
            .expect_stdout("\"C-1: 24 over 3\"");
        let largest = project.flowrt(&["query", &run, "largest", "--json"]);
        largest.expect_code(0);
        let view = largest.json();
        assert_eq!(view["value"], 12, "{view}");
        assert_eq!(view["query"], "largest");
        assert_eq!(
            project.history(&run).len(),
            before,
            "a query records nothing"
        );
        // A query that fails says why; one the run has not reached yet is refused.
        project
            .flowrt(&["signal", &run, "stop", "--as", "ops"])
            .expect_code(0);
        project
            .flowrt(&["query", &run, "third"])
            .expect_code(0)
            .expect_stdout("7");
        project
            .flowrt(&["query", &run, "closing"])
            .expect_code(3)
            .expect_stderr("has not reached query `closing` yet");
        project
            .flowrt(&["query", &run, "median"])
            .expect_code(3)
            .expect_stderr("it has `summary`, `largest`, `third`, `closing`");
        project
            .flowrt(&["approve", &run, "close", "--as", "ops"])
            .expect_code(0);
        project
            .flowrt(&["query", &run, "summary"])
            .expect_code(3)
            .expect_stderr("has completed: a query reads a running run's state");
    });
}

#[test]
fn a_query_that_fails_is_refused_with_its_error() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write("flow.toml", CONFIG);
        project.write("tally.flow", PROGRAM);
        project
            .flowrt(&["run", "tally.flow", "--input", r#"{"customer": "C-2"}"#])
            .expect_code(10);
        let run = project.runs()[0]["id"].as_str().unwrap().to_string();
        // No third item yet: the index is out of range.
        project
            .flowrt(&["query", &run, "third"])
            .expect_code(3)
            .expect_stderr("query `third` failed");
        assert_eq!(project.status(&run)["status"], "waiting");
    });
}

#[test]
fn over_the_api_who_may_read_the_run_may_query_it() {
    for_each_store(|store| {
        let served = Served::start(
            store,
            PROGRAM,
            "[users.ops]\nroles = [\"ops\"]\n\n[users.ines]\nroles = [\"clerk\"]\n\n[users.sam]\nroles = [\"support\"]\n",
            &[],
        );
        let ines = served.token("ines", &[]);
        let sam = served.token("sam", &[]);
        let (code, body) = served
            .try_request(
                "POST",
                "/api/runs",
                Some(&ines),
                Some(r#"{"workflow": "tally", "input": {"customer": "C-3"}}"#),
            )
            .unwrap();
        assert_eq!(code, 201, "{body}");
        let run = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let path = format!("/api/runs/{run}/queries/summary");
        let (code, body) = served.try_request("GET", &path, Some(&ines), None).unwrap();
        assert_eq!(code, 200, "{body}");
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(view["value"], "C-3: 0 over 0", "{view}");
        // sam may not read the run: nor query it.
        let (code, body) = served.try_request("GET", &path, Some(&sam), None).unwrap();
        assert_eq!(code, 403, "{body}");
        let (code, _) = served
            .try_request(
                "GET",
                &format!("/api/runs/{run}/queries/nope"),
                Some(&ines),
                None,
            )
            .unwrap();
        assert_eq!(code, 404);
        let (code, body) = served
            .try_request(
                "GET",
                &format!("/api/runs/{run}/queries/closing"),
                Some(&ines),
                None,
            )
            .unwrap();
        assert_eq!(code, 409, "{body}");
    });
}
