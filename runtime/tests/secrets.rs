//! A `Secret` input never appears in clear in the store (a SQLite file and its WAL, or a
//! PostgreSQL database's tables), the history, the exported audit trail or the logs — yet the
//! tool that needs it receives it, also after the run paused and resumed in another process.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, contains, for_each_store};
use std::process::Output;

const SECRET: &str = "hunter2-0123456789-very-secret";

/// `flowrt ARGS` with debug logs on, so that the logs can be searched too.
fn flowrt(project: &Project, args: &[&str]) -> Output {
    project
        .command(args)
        .env("FLOW_LOG", "debug")
        .output()
        .unwrap()
}

#[test]
fn a_secret_reaches_its_tool_and_nothing_else() {
    for_each_store(|store| {
        let project = Project::new(store);
        let path = project.path();
        project.write("tool.sh", "cat >> received.json; echo '\"signed in\"'\n");
        project.write(
            "s.flow",
            r#"tool sign_in(user: String, token: Secret) -> String via exec "sh tool.sh"

workflow w(user: String, token: Secret) -> String {
  let first = sign_in(user, token)
  sleep 1s
  let again = sign_in(user, token)
  audit "signed_in" { user: user }
  "${first} ${again}"
}
"#,
        );
        let input = format!(r#"{{"user": "ana", "token": "{SECRET}"}}"#);
        let mut logs = Vec::new();
        let first = flowrt(&project, &["run", "s.flow", "--input", &input]);
        assert_eq!(
            first.status.code(),
            Some(10),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        logs.extend(first.stdout);
        logs.extend(first.stderr);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        // Another process resumes the run: it opens the sealed secret with the database's key.
        let second = flowrt(&project, &["worker", "--once"]);
        assert!(second.status.success());
        logs.extend(second.stdout);
        logs.extend(second.stderr);

        let received = std::fs::read_to_string(path.join("received.json")).unwrap();
        assert_eq!(
            received.matches(SECRET).count(),
            2,
            "the tool got the token twice: {received}"
        );

        let runs = flowrt(&project, &["runs", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
        assert_eq!(list[0]["status"], "completed", "{list}");
        let id = list[0]["run"].as_str().unwrap();
        let history = flowrt(&project, &["history", id, "--json"]);
        let export = flowrt(&project, &["audit", "export"]);
        let status = flowrt(&project, &["status", id, "--json"]);
        for (what, bytes) in [
            ("history", &history.stdout),
            ("audit export", &export.stdout),
            ("status", &status.stdout),
            ("logs", &logs),
        ] {
            assert!(!contains(bytes, SECRET), "the secret appears in the {what}");
        }
        assert!(contains(&history.stdout, "[redacted]"));
        // At rest. In a SQLite store the file itself and its WAL are searched, byte by byte;
        // in a PostgreSQL store every text and byte column that holds a run's data.
        match project.db().sqlite_path() {
            Some(db) => {
                let name = db.file_name().unwrap().to_string_lossy().into_owned();
                for file in [name.clone(), format!("{name}-wal"), format!("{name}-shm")] {
                    if let Ok(bytes) = std::fs::read(path.join(&file)) {
                        assert!(
                            !contains(&bytes, SECRET),
                            "the secret appears in clear in {file}"
                        );
                    }
                }
            }
            None => {
                for (what, sql) in [
                    (
                        "runs",
                        "SELECT COUNT(*) FROM runs WHERE strpos(concat_ws(' ', input, output, error, waiting_on), $1) > 0",
                    ),
                    (
                        "events",
                        "SELECT COUNT(*) FROM events WHERE strpos(data, $1) > 0",
                    ),
                    (
                        "checkpoints",
                        "SELECT COUNT(*) FROM checkpoints WHERE position(convert_to($1, 'UTF8') IN state) > 0",
                    ),
                ] {
                    let found = project.db().query_i64(sql, &[SECRET]);
                    assert_eq!(found, Some(0), "the secret appears in clear in {what}");
                }
            }
        }
    });
}

/// A worker given another key must not resume a run with wrong values: it refuses, and the
/// run waits intact for a worker with the right key.
#[test]
fn a_worker_with_another_key_refuses_to_resume() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write("tool.sh", "cat >> received.json; echo '\"ok\"'\n");
        project.write(
            "s.flow",
            r#"tool sign_in(token: Secret) -> String via exec "sh tool.sh"

workflow w(token: Secret) -> String {
  sleep 1s
  sign_in(token)
}
"#,
        );
        let input = format!(r#"{{"token": "{SECRET}"}}"#);
        let first = flowrt(&project, &["run", "s.flow", "--input", &input]);
        assert_eq!(first.status.code(), Some(10));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let wrong = project
            .command(&["worker", "--once"])
            .env("FLOW_SECRET_KEY", "ab".repeat(32))
            .output()
            .unwrap();
        assert!(
            !wrong.status.success(),
            "a worker with another key must not go on"
        );
        let stderr = String::from_utf8_lossy(&wrong.stderr);
        assert!(stderr.contains("cannot open a secret"), "{stderr}");
        assert!(
            !project.path().join("received.json").exists(),
            "the tool was never called with a wrong value"
        );
        // The right key resumes it.
        let right = flowrt(&project, &["worker", "--once"]);
        assert!(
            right.status.success(),
            "{}",
            String::from_utf8_lossy(&right.stderr)
        );
        let received = std::fs::read_to_string(project.path().join("received.json")).unwrap();
        assert!(received.contains(SECRET), "{received}");
    });
}
