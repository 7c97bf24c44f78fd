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
        let first = flowrt(
            &project,
            &["run", "s.flow", "--max-wait", "0s", "--input", &input],
        );
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
        let id = list[0]["id"].as_str().unwrap();
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
        assert_not_at_rest(&project, SECRET);
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
        let first = flowrt(
            &project,
            &["run", "s.flow", "--max-wait", "0s", "--input", &input],
        );
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

/// The secret is nowhere in the store. In a SQLite store the file itself and its WAL are
/// searched, byte by byte; in a PostgreSQL store every text and byte column that holds a
/// run's data.
fn assert_not_at_rest(project: &Project, secret: &str) {
    let path = project.path();
    match project.db().sqlite_path() {
        Some(db) => {
            let name = db.file_name().unwrap().to_string_lossy().into_owned();
            for file in [name.clone(), format!("{name}-wal"), format!("{name}-shm")] {
                if let Ok(bytes) = std::fs::read(path.join(&file)) {
                    assert!(
                        !contains(&bytes, secret),
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
                let found = project.db().query_i64(sql, &[secret]);
                assert_eq!(found, Some(0), "the secret appears in clear in {what}");
            }
        }
    }
}

/// What every reader of a run shows: its history, status, the exported trail.
fn assert_not_shown(project: &Project, id: &str, logs: &[u8], secret: &str) {
    let history = flowrt(project, &["history", id, "--json"]);
    let export = flowrt(project, &["audit", "export"]);
    let status = flowrt(project, &["status", id, "--json"]);
    let runs = flowrt(project, &["runs", "--json"]);
    for (what, bytes) in [
        ("history", &history.stdout),
        ("audit export", &export.stdout),
        ("status", &status.stdout),
        ("runs", &runs.stdout),
        ("logs", &logs.to_vec()),
    ] {
        assert!(
            !contains(bytes, secret),
            "the secret appears in the {what}: {}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// An HTTP server on 127.0.0.1 that answers every request with a 500 whose body is the
/// request it got (a server that puts the request in its error page). Returns its base URL.
fn echoing_server() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the body its Content-Length announces.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let body = String::from_utf8_lossy(&request).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// Tools that echo what they get — on stdout as their result, on stderr as they fail, and a
/// server that returns the request body in its 500 page — do not put the run's secret in the
/// record: every value the runtime records from outside is scrubbed of the secrets it holds.
#[test]
fn what_tools_echo_is_scrubbed_of_the_runs_secrets() {
    for_each_store(|store| {
        let project = Project::new(store);
        // The token's value, out of its JSON input, without a JSON parser.
        let token = r#"t=$(printf '%s' "$input" | sed 's/.*"token":"\([^"]*\)".*/\1/')"#;
        project.write(
            "echo.sh",
            &format!("input=$(cat)\n{token}\nprintf '{{\"echo\": \"got %s\", \"%s\": 1}}' \"$t\" \"$t\"\n"),
        );
        project.write(
            "loud.sh",
            "input=$(cat)\necho \"rejected: $input\" >&2\nexit 3\n",
        );
        let url = echoing_server();
        project.write(
            "flow.toml",
            &format!("[tools.post_it]\nbase_url = \"{url}\"\ntimeout = \"5s\"\n"),
        );
        project.write(
            "s.flow",
            r#"type Reply = { echo: String }
tool echo_out(token: Secret) -> Json via exec "sh echo.sh"
tool fail_loud(token: Secret) -> Int via exec "sh loud.sh"
tool post_it(token: Secret) -> Int via http post "/echo"

workflow w(token: Secret) -> String {
  let reply = echo_out(token)
  let echoed = "${reply}"
  let failed = try { fail_loud(token) } catch e {
    audit "refused" { why: e.message }
    0
  }
  let posted = try { post_it(token) } catch e {
    audit "posted" { why: e.message }
    0
  }
  echoed
}
"#,
        );
        let input = format!(r#"{{"token": "{SECRET}"}}"#);
        let run = flowrt(
            &project,
            &["run", "s.flow", "--max-wait", "0s", "--input", &input],
        );
        assert_eq!(
            run.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let mut logs = run.stdout.clone();
        logs.extend(&run.stderr);
        assert!(
            !contains(&run.stdout, SECRET),
            "the output shows the secret: {}",
            String::from_utf8_lossy(&run.stdout)
        );
        assert!(contains(&run.stdout, "got [redacted]"));
        let runs = project.runs();
        let id = runs[0]["id"].as_str().unwrap().to_string();
        assert_not_shown(&project, &id, &logs, SECRET);
        assert_not_at_rest(&project, SECRET);
        // Each echo was recorded — scrubbed, not dropped.
        let history = project.history(&id);
        let failed = common::of_kind(&history, "step_failed");
        assert!(
            failed.iter().any(|e| e["data"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("rejected: {\"token\":\"[redacted]\"}"))),
            "{failed:?}"
        );
        assert!(
            failed
                .iter()
                .any(|e| e["step"] == "post_it" && e.to_string().contains("[redacted]")),
            "{failed:?}"
        );
    });
}

/// Text that becomes a `Secret` (`let s: Secret = "…"`, or text passed for a `Secret`
/// parameter) is a secret at run time: sealed in the checkpoint, redacted in the history, and
/// equal to the same secret read from a tool.
#[test]
fn text_made_into_a_secret_is_one() {
    for_each_store(|store| {
        let project = Project::new(store);
        let (head, tail) = SECRET.split_at(8);
        project.write(
            "fetch.sh",
            &format!("cat > /dev/null; echo '\"{SECRET}\"'\n"),
        );
        project.write("use.sh", "cat >> received.json; echo 1\n");
        project.write(
            "s.flow",
            r#"tool fetch() -> Secret via exec "sh fetch.sh"
tool use_it(token: Secret) -> Int via exec "sh use.sh"

workflow w(head: String, tail: String) -> Bool {
  let mine: Secret = "${head}${tail}"
  sleep 1s
  let theirs = fetch()
  use_it("${head}${tail}")
  use_it(mine)
  mine == theirs
}
"#,
        );
        let input = format!(r#"{{"head": "{head}", "tail": "{tail}"}}"#);
        let first = flowrt(
            &project,
            &["run", "s.flow", "--max-wait", "0s", "--input", &input],
        );
        assert_eq!(
            first.status.code(),
            Some(10),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        // Asleep: the checkpoint holds the secret made from text — sealed.
        assert_not_at_rest(&project, SECRET);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let second = flowrt(&project, &["worker", "--once"]);
        assert!(second.status.success());
        let runs = project.runs();
        assert_eq!(runs[0]["status"], "completed", "{runs:?}");
        assert_eq!(runs[0]["output"], true, "the two secrets are equal");
        let id = runs[0]["id"].as_str().unwrap().to_string();
        let received = std::fs::read_to_string(project.path().join("received.json")).unwrap();
        assert_eq!(received.matches(SECRET).count(), 2, "{received}");
        let mut logs = first.stderr.clone();
        logs.extend(&second.stderr);
        assert_not_shown(&project, &id, &logs, SECRET);
        assert_not_at_rest(&project, SECRET);
        let history = project.history(&id);
        for started in common::of_kind(&history, "step_started") {
            if started["step"] == "use_it" {
                assert_eq!(started["data"]["input"]["token"], "[redacted]", "{started}");
            }
        }
    });
}
