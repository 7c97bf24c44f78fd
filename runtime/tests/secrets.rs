//! A `Secret` input never appears in clear in the database file (nor its WAL), the history,
//! the exported audit trail or the logs — yet the tool that needs it receives it, also after
//! the run paused and resumed in another process.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

const FLOWRT: &str = env!("CARGO_BIN_EXE_flowrt");
const SECRET: &str = "hunter2-0123456789-very-secret";

fn flowrt(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(FLOWRT)
        .args(args)
        .current_dir(dir)
        .env("FLOW_DB", dir.join("flow.db"))
        .env("FLOW_LOG", "debug")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn a_secret_reaches_its_tool_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    std::fs::write(
        path.join("tool.sh"),
        "cat >> received.json; echo '\"signed in\"'\n",
    )
    .unwrap();
    std::fs::write(
        path.join("s.flow"),
        r#"tool sign_in(user: String, token: Secret) -> String via exec "sh tool.sh"

workflow w(user: String, token: Secret) -> String {
  let first = sign_in(user, token)
  sleep 1s
  let again = sign_in(user, token)
  audit "signed_in" { user: user }
  "${first} ${again}"
}
"#,
    )
    .unwrap();
    let input = format!(r#"{{"user": "ana", "token": "{SECRET}"}}"#);
    let mut logs = Vec::new();
    let first = flowrt(path, &["run", "s.flow", "--input", &input]);
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
    let second = flowrt(path, &["worker", "--once"]);
    assert!(second.status.success());
    logs.extend(second.stdout);
    logs.extend(second.stderr);

    let received = std::fs::read_to_string(path.join("received.json")).unwrap();
    assert_eq!(
        received.matches(SECRET).count(),
        2,
        "the tool got the token twice: {received}"
    );

    let runs = flowrt(path, &["runs", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(list[0]["status"], "completed", "{list}");
    let id = list[0]["run"].as_str().unwrap();
    let history = flowrt(path, &["history", id, "--json"]);
    let export = flowrt(path, &["audit", "export"]);
    let status = flowrt(path, &["status", id, "--json"]);
    for (what, bytes) in [
        ("history", &history.stdout),
        ("audit export", &export.stdout),
        ("status", &status.stdout),
        ("logs", &logs),
    ] {
        assert!(!contains(bytes, SECRET), "the secret appears in the {what}");
    }
    assert!(contains(&history.stdout, "[redacted]"));
    for file in ["flow.db", "flow.db-wal", "flow.db-shm"] {
        if let Ok(bytes) = std::fs::read(path.join(file)) {
            assert!(
                !contains(&bytes, SECRET),
                "the secret appears in clear in {file}"
            );
        }
    }
}
