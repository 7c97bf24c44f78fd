//! The audit trail through the real `flowrt`: automatic records for a run with tools, a retry,
//! an approval and an `audit`; export as JSON lines; and tamper evidence — a changed byte, a
//! deleted record and two swapped records are each found and named by `audit verify`.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, Store, for_each_store};

/// A completed run with a tool, a retried tool, an approval by another user and an `audit`.
fn completed_run(store: &Store) -> (Project, String) {
    let project = Project::new(store);
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
    let out = project.output(&[
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
        serde_json::from_slice(&project.output(&["runs", "--json"]).stdout).unwrap();
    let run = runs[0]["id"].as_str().unwrap().to_string();
    let approved = project.output(&["approve", &run, "sign", "--as", "ana", "--comment", "fine"]);
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    (project, run)
}

fn verify(project: &Project, run: &str) -> (Option<i32>, String) {
    let out = project.output(&["audit", "verify", run]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_export_holds_every_automatic_record_with_actor_and_version() {
    for_each_store(|store| {
        let (project, run) = completed_run(store);
        let out = project.output(&["audit", "export"]);
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
    });
}

#[test]
fn a_changed_byte_is_found_and_named() {
    for_each_store(|store| {
        let (project, run) = completed_run(store);
        project.db().execute(
            "UPDATE events SET data = replace(data, 'fine', 'fino') WHERE run = $1 AND kind = 'gate_decided'",
            &[&run],
        );
        let seq = project
            .db()
            .query_i64(
                "SELECT seq FROM events WHERE run = $1 AND kind = 'gate_decided'",
                &[&run],
            )
            .unwrap();
        let (code, text) = verify(&project, &run);
        assert_eq!(code, Some(1), "{text}");
        assert!(
            text.contains(&format!("record {seq}")) && text.contains("altered"),
            "{text}"
        );
    });
}

#[test]
fn a_deleted_record_is_found_and_named() {
    for_each_store(|store| {
        let (project, run) = completed_run(store);
        project
            .db()
            .execute("DELETE FROM events WHERE run = $1 AND seq = 3", &[&run]);
        let (code, text) = verify(&project, &run);
        assert_eq!(code, Some(1), "{text}");
        assert!(
            text.contains("record 3") && text.contains("missing"),
            "{text}"
        );
    });
}

#[test]
fn swapped_records_are_found_and_named() {
    for_each_store(|store| {
        let (project, run) = completed_run(store);
        let db = project.db();
        for (from, to) in [(4, -1), (5, 4), (-1, 5)] {
            db.execute(
                &format!("UPDATE events SET seq = {to} WHERE run = $1 AND seq = {from}"),
                &[&run],
            );
        }
        let (code, text) = verify(&project, &run);
        assert_eq!(code, Some(1), "{text}");
        assert!(
            text.contains("record 4") && text.contains("does not follow"),
            "{text}"
        );
        // Verifying every run reports the broken one too.
        let all = project.output(&["audit", "verify"]);
        assert_eq!(all.status.code(), Some(1));
    });
}

/// A waived approval is in the exported trail: the tools, the reason, its context, who
/// started the run; and the trail still verifies. The path with an anomaly records none.
#[test]
fn a_waived_approval_is_an_audit_record_with_its_reason() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write(
            "flow.toml",
            "[users.ana]\nroles = [\"customs\"]\n\n[users.bob]\nroles = []\n",
        );
        project.write("check.sh", "read input; case \"$input\" in *C-2*) echo '{\"anomalies\": 3}' ;; *) echo '{\"anomalies\": 0}' ;; esac\n");
        project.write(
            "cargo.flow",
            r#"type Report = { anomalies: Int }
tool check(id: String) -> Report via exec "sh check.sh"
sensitive tool release(id: String) -> String via exec "cat > /dev/null; echo '\"R-1\"'"

workflow cargo(id: String) -> String {
  let report = check(id)
  if report.anomalies > 0 {
    let d = await approval "customs" { approvers: role("customs") }
    if !d.approved { fail "held by customs" }
  } else {
    waive approval for release because "no anomaly found" { anomalies: report.anomalies, id }
  }
  release(id)
}
"#,
        );
        let run = |id: &str| {
            let out = project.output(&[
                "run",
                "cargo.flow",
                "--as",
                "bob",
                "--input",
                &format!(r#"{{"id": "{id}"}}"#),
                "--json",
            ]);
            let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            (out.status.code(), shown["id"].as_str().unwrap().to_string())
        };
        let (code, waived) = run("C-1");
        assert_eq!(code, Some(0), "released at once");
        let (code, held) = run("C-2");
        assert_eq!(code, Some(10), "waits for customs");

        let out = project.output(&["audit", "export"]);
        assert!(out.status.success());
        let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let waivers: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| r["event"] == "audit" && r["step"] == "approval_waived")
            .collect();
        assert_eq!(waivers.len(), 1, "{records:#?}");
        let waiver = waivers[0];
        assert_eq!(waiver["run"], serde_json::json!(waived), "{waiver}");
        let started = records
            .iter()
            .find(|r| r["run"] == serde_json::json!(waived) && r["event"] == "run_started")
            .unwrap();
        assert_eq!(started["data"]["by"], "bob", "who: {started}");
        let data = &waiver["data"];
        assert_eq!(data["tools"], serde_json::json!(["release"]), "{waiver}");
        assert_eq!(data["because"], "no anomaly found");
        assert_eq!(
            data["context"],
            serde_json::json!({ "anomalies": 0, "id": "C-1" })
        );
        assert!(
            !records
                .iter()
                .any(|r| r["run"] == serde_json::json!(held) && r["step"] == "approval_waived"),
            "the held run waived nothing"
        );
        let (code, text) = verify(&project, &waived);
        assert_eq!(code, Some(0), "{text}");
    });
}
