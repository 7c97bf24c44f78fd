//! Errors as values through the real `flowrt`: `try/catch` catches each error kind with its
//! fields, `timeout` stops a tool in flight, `retry` skips errors that are not retryable
//! unless they are listed with `on`, and an uncaught error fails the run at its source line.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, Store, for_each_store};
use std::time::Instant;

impl Project {
    /// Runs `workflow` as bob: its exit status, `--json` output and stderr.
    fn run(&self, workflow: &str) -> (Option<i32>, serde_json::Value, String) {
        let out = self.output(&[
            "--test-clock",
            "run",
            "faults.flow",
            "--workflow",
            workflow,
            "--as",
            "bob",
            "--json",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.status.code(), json, stderr)
    }
}

const PROGRAM: &str = r#"tool broken() -> Int via exec "sh fail.sh"
tool garbage() -> Int via exec "sh garbage.sh"
tool slow() -> Int via exec "sh slow.sh"
tool counted() -> Int via exec "sh count.sh"

workflow tool_error() -> String {
  try { broken(); "no" } catch e { "${e.kind} ${e.tool} ${e.attempt} ${e.retryable} ${e.message}" }
}

workflow invalid_output() -> String {
  try { garbage(); "no" } catch e { "${e.kind} ${e.retryable}" }
}

workflow timed_out() -> String {
  try { timeout 300ms { slow() }; "no" } catch e { "${e.kind} ${e.retryable}" }
}

workflow failed() -> String {
  try { fail "on purpose"; "no" } catch e { "${e.kind} ${e.retryable} ${e.message}" }
}

workflow approval_timeout() -> String {
  try {
    let d = await approval "gate" { approvers: role("ops"), timeout: 1h }
    "decided ${d.approved}"
  } catch e {
    "${e.kind} ${e.retryable}"
  }
}

workflow not_retried() -> Int {
  retry 3 { fail "never retried" }
}

workflow retried_when_listed() -> Int {
  retry 3 on Failed { counted() }
}

workflow uncaught() -> Int {
  let a = 1
  broken() + a
}
"#;

fn project(store: &Store) -> Project {
    let project = Project::new(store);
    project.write(
        "flow.toml",
        "[users.ana]\nroles = [\"ops\"]\n\n[users.bob]\nroles = []\n",
    );
    project.write("fail.sh", "cat > /dev/null; echo 'it broke' >&2; exit 3\n");
    project.write("garbage.sh", "cat > /dev/null; echo 'not json'\n");
    project.write("slow.sh", "cat > /dev/null; sleep 5; echo 1\n");
    project.write("count.sh", "cat > /dev/null; echo x >> calls; exit 1\n");
    project.write("faults.flow", PROGRAM);
    project
}

#[test]
fn try_catch_sees_each_error_kind_with_its_fields() {
    for_each_store(|store| {
        let project = project(store);
        let (code, run, _) = project.run("tool_error");
        assert_eq!(code, Some(0));
        let text = run["output"].as_str().unwrap();
        assert!(text.starts_with("ToolError broken 1 true "), "{text}");
        assert!(
            text.contains("exit status 3") && text.contains("it broke"),
            "{text}"
        );
        assert_eq!(
            project.run("invalid_output").1["output"],
            "InvalidOutput true"
        );
        assert_eq!(project.run("failed").1["output"], "Failed false on purpose");
    });
}

#[test]
fn timeout_stops_the_tool_in_flight() {
    for_each_store(|store| {
        let project = project(store);
        let started = Instant::now();
        let (code, run, stderr) = project.run("timed_out");
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(run["output"], "Timeout true");
        assert!(
            started.elapsed().as_secs() < 4,
            "the 5 s tool was stopped, not awaited"
        );
    });
}

#[test]
fn an_approval_time_out_is_caught_like_any_error() {
    for_each_store(|store| {
        let project = project(store);
        let (code, _, _) = project.run("approval_timeout");
        assert_eq!(code, Some(10));
        let advanced = project.output(&["clock", "advance", "2h"]);
        assert!(advanced.status.success());
        let out = project.output(&["runs", "--json"]);
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(runs[0]["output"], "ApprovalTimeout false", "{runs}");
    });
}

#[test]
fn retry_skips_errors_that_are_not_retryable_unless_listed() {
    for_each_store(|store| {
        let project = project(store);
        let (code, run, _) = project.run("not_retried");
        assert_eq!(code, Some(1));
        assert!(run["error"].as_str().unwrap().contains("never retried"));
        // `on Failed` retries even what is not retryable: three calls.
        let (code, _, _) = project.run("retried_when_listed");
        assert_eq!(code, Some(1));
        let calls = std::fs::read_to_string(project.path().join("calls")).unwrap();
        assert_eq!(
            calls.lines().count(),
            1,
            "ToolError is not listed: one call only"
        );
    });
}

#[test]
fn an_uncaught_error_fails_the_run_at_its_source_line() {
    for_each_store(|store| {
        let project = project(store);
        let (code, run, _) = project.run("uncaught");
        assert_eq!(code, Some(1));
        let error = run["error"].as_str().unwrap();
        let line = PROGRAM
            .lines()
            .position(|l| l.contains("broken() + a"))
            .unwrap()
            + 1;
        assert!(error.contains(&format!("faults.flow:{line}:3")), "{error}");
        assert!(error.starts_with("ToolError"), "{error}");
        let human = project.output(&["run", "faults.flow", "--workflow", "uncaught"]);
        let text = String::from_utf8_lossy(&human.stderr);
        assert!(
            text.contains("broken() + a") && text.contains("exit status 3"),
            "{text}"
        );
    });
}

/// Every exec call has a time limit, `[exec] timeout` when the tool has none of its own: a
/// tool that would hang forever (and a process it started) is stopped there.
const HANGING: &str = r#"tool hang() -> Int via exec "sh hang.sh"
tool own() -> Int via exec "sh hang.sh"

workflow global_limit() -> String {
  try { hang(); "no" } catch e { "${e.kind} ${e.message}" }
}

workflow own_limit() -> String {
  try { own(); "no" } catch e { "${e.kind} ${e.message}" }
}
"#;

#[test]
fn an_exec_tool_without_a_limit_of_its_own_gets_the_configured_one() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write("hang.flow", HANGING);
        // A shell that waits for a sleep of its own: both must go at the limit.
        project.write(
            "hang.sh",
            "cat > /dev/null; sleep 100000 & echo $! >> sleeps.pid; wait\n",
        );
        project.write(
            "flow.toml",
            "[users.bob]\nroles = []\n\n[exec]\ntimeout = \"700ms\"\n\n[tools.own]\ntimeout = \"300ms\"\n",
        );
        for (workflow, tool, limit) in [
            ("global_limit", "hang", "700ms"),
            ("own_limit", "own", "300ms"),
        ] {
            let mut child = project
                .command(&[
                    "run",
                    "hang.flow",
                    "--workflow",
                    workflow,
                    "--as",
                    "bob",
                    "--json",
                ])
                .spawn()
                .unwrap();
            // Without a limit the call would never end: give up (and fail) after a minute.
            let deadline = Instant::now() + std::time::Duration::from_secs(60);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("flowrt run {workflow} still waits for its tool after a minute");
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let text = run["output"].as_str().unwrap();
            assert!(
                text.starts_with(&format!(
                    "Timeout tool `{tool}` did not finish within its configured timeout of {limit}"
                )),
                "{text}"
            );
        }
        // The sleeps the tool started were killed with it.
        let pids = std::fs::read_to_string(project.path().join("sleeps.pid")).unwrap();
        assert_eq!(pids.lines().count(), 2, "{pids}");
        for pid in pids.lines() {
            let gone = (0..250).any(|_| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // Gone, or a zombie waiting for its reaper.
                let gone = stat.is_empty()
                    || stat
                        .rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().next())
                        == Some("Z");
                if !gone {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                gone
            });
            assert!(gone, "the sleep {pid} the tool started still runs");
        }
    });
}
