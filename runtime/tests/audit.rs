//! The audit trail through the real `flowrt`: automatic records for a run with tools, a retry,
//! an approval and an `audit`; export as JSON lines; and tamper evidence — a changed byte, a
//! deleted record and two swapped records are each found and named by `audit verify`.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

const FLOWRT: &str = env!("CARGO_BIN_EXE_flowrt");

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).unwrap();
    }

    fn flowrt(&self, args: &[&str]) -> Output {
        Command::new(FLOWRT)
            .args(args)
            .current_dir(self.path())
            .env("FLOW_DB", self.path().join("flow.db"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path().join("flow.db")).unwrap()
    }
}

/// A completed run with a tool, a retried tool, an approval by another user and an `audit`.
fn completed_run() -> (Project, String) {
    let project = Project {
        dir: tempfile::tempdir().unwrap(),
    };
    project.write(
        "flow.toml",
        "[users.ana]\nroles = [\"ops\"]\n\n[users.bob]\nroles = []\n",
    );
    project.write("ok.sh", "cat > /dev/null; echo 5\n");
    project.write(
        "flaky.sh",
        "cat > /dev/null; if [ -e tried ]; then echo 2; else touch tried; exit 1; fi\n",
    );
    project.write(
        "trail.flow",
        r#"tool ok() -> Int via exec "sh ok.sh"
tool flaky() -> Int via exec "sh flaky.sh"

workflow trail(order: String) -> Int {
  let a = ok()
  let b = retry 2 { flaky() }
  let d = await approval "sign" { approvers: role("ops") }
  audit "signed" { order: order, by: d.by }
  a + b
}
"#,
    );
    let out = project.flowrt(&[
        "run",
        "trail.flow",
        "--as",
        "bob",
        "--input",
        r#"{"order": "O-1"}"#,
    ]);
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: serde_json::Value =
        serde_json::from_slice(&project.flowrt(&["runs", "--json"]).stdout).unwrap();
    let run = runs[0]["run"].as_str().unwrap().to_string();
    let approved = project.flowrt(&["approve", &run, "sign", "--as", "ana", "--comment", "fine"]);
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    (project, run)
}

fn verify(project: &Project, run: &str) -> (Option<i32>, String) {
    let out = project.flowrt(&["audit", "verify", run]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_export_holds_every_automatic_record_with_actor_and_version() {
    let (project, run) = completed_run();
    let out = project.flowrt(&["audit", "export"]);
    assert!(out.status.success());
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    for expected in [
        "run_started",
        "step_started",
        "step_completed",
        "step_failed",
        "gate_opened",
        "gate_decided",
        "audit",
        "run_completed",
    ] {
        assert!(
            kinds.contains(&expected),
            "{expected} missing from {kinds:?}"
        );
    }
    let version = records[0]["version"].as_str().unwrap();
    assert_eq!(version.len(), 64, "the version is the artifact's SHA-256");
    assert!(
        records
            .iter()
            .all(|r| r["run"] == run.as_str() && r["version"] == version)
    );
    let started = records
        .iter()
        .find(|r| r["event"] == "run_started")
        .unwrap();
    assert_eq!(started["data"]["by"], "bob");
    assert_eq!(started["data"]["input"]["order"], "O-1");
    let decided = records
        .iter()
        .find(|r| r["event"] == "gate_decided")
        .unwrap();
    assert_eq!(decided["data"]["by"], "ana");
    assert_eq!(decided["data"]["comment"], "fine");
    let failed = records
        .iter()
        .find(|r| r["event"] == "step_failed")
        .unwrap();
    assert_eq!(failed["attempt"], 1);
    let audit = records.iter().find(|r| r["event"] == "audit").unwrap();
    assert_eq!(audit["data"]["order"], "O-1");
    // Each record chains to the one before it.
    for pair in records.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    let (code, text) = verify(&project, &run);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("chain intact"), "{text}");
}

#[test]
fn a_changed_byte_is_found_and_named() {
    let (project, run) = completed_run();
    project
        .db()
        .execute(
            "UPDATE events SET data = replace(data, 'fine', 'fino') WHERE run = ?1 AND kind = 'gate_decided'",
            [&run],
        )
        .unwrap();
    let seq: i64 = project
        .db()
        .query_row(
            "SELECT seq FROM events WHERE run = ?1 AND kind = 'gate_decided'",
            [&run],
            |r| r.get(0),
        )
        .unwrap();
    let (code, text) = verify(&project, &run);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("record {seq}")) && text.contains("altered"),
        "{text}"
    );
}

#[test]
fn a_deleted_record_is_found_and_named() {
    let (project, run) = completed_run();
    project
        .db()
        .execute("DELETE FROM events WHERE run = ?1 AND seq = 3", [&run])
        .unwrap();
    let (code, text) = verify(&project, &run);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("record 3") && text.contains("missing"),
        "{text}"
    );
}

#[test]
fn swapped_records_are_found_and_named() {
    let (project, run) = completed_run();
    let db = project.db();
    db.execute(
        "UPDATE events SET seq = -1 WHERE run = ?1 AND seq = 4",
        [&run],
    )
    .unwrap();
    db.execute(
        "UPDATE events SET seq = 4 WHERE run = ?1 AND seq = 5",
        [&run],
    )
    .unwrap();
    db.execute(
        "UPDATE events SET seq = 5 WHERE run = ?1 AND seq = -1",
        [&run],
    )
    .unwrap();
    let (code, text) = verify(&project, &run);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("record 4") && text.contains("does not follow"),
        "{text}"
    );
    // Verifying every run reports the broken one too.
    let all = project.flowrt(&["audit", "verify"]);
    assert_eq!(all.status.code(), Some(1));
}
