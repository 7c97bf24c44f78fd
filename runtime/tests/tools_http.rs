//! The `http` and `llm` tool bindings through the real `flowrt` binary, against real HTTP
//! servers on 127.0.0.1 started by the tests (threads with a `TcpListener`, speaking
//! HTTP/1.1 by hand): a server that fails with 503 before it recovers (inside `retry`), one
//! that refuses with 400, one that hangs (inside `timeout`), one that answers the wrong shape,
//! one that closes the connection, a GET with query parameters, headers from `flow.toml` with a
//! secret from the environment, a `kill -9` of `flowrt` while the server holds the request,
//! and an OpenAI-compatible model stub answering the wrong shape, then text, then a valid
//! object. Every case checks what the server received, what the history recorded, and that
//! secrets appear nowhere.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Out, Project, Store, for_each_store, of_kind};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const EXIT_COMPLETED: i32 = 0;
const EXIT_FAILED: i32 = 1;

// ---------------------------------------------------------------------------------------------
// A scripted HTTP server
// ---------------------------------------------------------------------------------------------

/// What the server does with one request.
#[derive(Clone, Debug)]
enum Reply {
    /// A response with this status and body (JSON content type).
    Status(u16, &'static str),
    /// A 200 with this JSON body.
    Json(String),
    /// Reads the request, answers nothing, and waits (up to a minute) for the client to
    /// close the connection; reports on the `closed` channel how long that took.
    Hang,
    /// Reads the request and closes the connection without a response.
    Close,
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the request body is not JSON ({e}): {}", self.body))
    }
}

struct Server {
    port: u16,
    seen: Receiver<Seen>,
    /// For each `Hang`: how long after the request the client closed the connection.
    closed: Receiver<Duration>,
}

impl Server {
    /// A server answering the n-th request with `script[n]`, and every later one with the
    /// script's last reply. Each connection is served on its own thread, so a hanging reply
    /// does not hold up the next request.
    fn start(script: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (seen_tx, seen) = mpsc::channel();
        let (closed_tx, closed) = mpsc::channel();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let reply = script
                    .get(n)
                    .or(script.last())
                    .cloned()
                    .unwrap_or(Reply::Close);
                let seen_tx = seen_tx.clone();
                let closed_tx = closed_tx.clone();
                std::thread::spawn(move || serve(stream, reply, seen_tx, closed_tx));
            }
        });
        Server { port, seen, closed }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next request the server received (waiting a little for it).
    fn next(&self) -> Seen {
        self.seen
            .recv_timeout(Duration::from_secs(10))
            .expect("the server received a request")
    }

    /// Every request received so far.
    fn all(&self) -> Vec<Seen> {
        self.seen.try_iter().collect()
    }
}

fn serve(
    stream: TcpStream,
    reply: Reply,
    seen: mpsc::Sender<Seen>,
    closed: mpsc::Sender<Duration>,
) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let _ = seen.send(Seen {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let mut stream = reader.into_inner();
    let respond = |stream: &mut TcpStream, status: u16, body: &str| {
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            429 => "Too Many Requests",
            503 => "Service Unavailable",
            _ => "Status",
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    match reply {
        Reply::Status(status, body) => respond(&mut stream, status, body),
        Reply::Json(body) => respond(&mut stream, 200, &body),
        Reply::Close => {}
        Reply::Hang => {
            let started = Instant::now();
            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
            let mut buf = [0u8; 64];
            // The client closing (or resetting) the connection ends the read.
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = closed.send(started.elapsed());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A project driven through flowrt
// ---------------------------------------------------------------------------------------------

/// A project with `program` as `prog.flow` and `config` as `flow.toml`.
fn project_with(store: &Store, program: &str, config: &str) -> Project {
    let project = Project::new(store);
    project.write("prog.flow", program);
    project.write("flow.toml", config);
    project
}

impl Project {
    /// `flowrt run prog.flow --json [--workflow W] --input INPUT`.
    fn run(&self, workflow: &str, input: &str) -> Out {
        self.flowrt(&[
            "run",
            "prog.flow",
            "--json",
            "--workflow",
            workflow,
            "--input",
            input,
        ])
    }

    fn history_text(&self, run: &str) -> String {
        let out = self.flowrt(&["history", run, "--json"]);
        out.expect_code(EXIT_COMPLETED);
        out.stdout
    }

    fn only_run(&self) -> String {
        let out = self.flowrt(&["runs", "--json"]);
        let runs = out.json();
        let runs = runs.as_array().unwrap();
        assert_eq!(runs.len(), 1, "{runs:?}");
        runs[0]["id"]
            .as_str()
            .or(runs[0]["id"].as_str())
            .unwrap()
            .to_string()
    }
}

fn run_id(out: &Out) -> String {
    out.json()["id"].as_str().unwrap().to_string()
}

fn tool_config(tool: &str, server: &Server) -> String {
    format!("[tools.{tool}]\nbase_url = \"{}\"\n", server.url())
}

const TYPES: &str = r#"type Report = { ok: Bool, anomalies: List<String> }
"#;

// ---------------------------------------------------------------------------------------------
// http
// ---------------------------------------------------------------------------------------------

#[test]
fn a_server_that_fails_three_times_then_recovers_is_retried_with_one_idempotency_key() {
    for_each_store(|store| {
        let server = Server::start(vec![
            Reply::Status(503, r#"{"error": "busy"}"#),
            Reply::Status(503, r#"{"error": "busy"}"#),
            Reply::Status(503, r#"{"error": "busy"}"#),
            Reply::Json(r#"{"ok": true, "anomalies": ["seal"]}"#.into()),
        ]);
        let program = format!(
            "{TYPES}tool check(id: String, docs: List<String>) -> Report via http post \"/customs/check\"\n\n\
             workflow release(id: String) -> Report {{\n  retry 4 {{ check(id, [\"invoice\", \"bill\"]) }}\n}}\n"
        );
        let project = project_with(store, &program, &tool_config("check", &server));
        let out = project.run("release", r#"{"id": "S1"}"#);
        out.expect_code(EXIT_COMPLETED);
        assert_eq!(
            out.json()["output"],
            serde_json::json!({ "ok": true, "anomalies": ["seal"] })
        );

        let requests: Vec<Seen> = (0..4).map(|_| server.next()).collect();
        for seen in &requests {
            assert_eq!(seen.method, "POST");
            assert_eq!(seen.target, "/customs/check");
            assert_eq!(
                seen.json(),
                serde_json::json!({ "id": "S1", "docs": ["invoice", "bill"] })
            );
            assert_eq!(seen.header("Content-Type"), Some("application/json"));
            assert_eq!(seen.header("Accept"), Some("application/json"));
        }
        let keys: Vec<&str> = requests
            .iter()
            .map(|s| {
                s.header("Idempotency-Key")
                    .expect("an Idempotency-Key header")
            })
            .collect();
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");

        let run = run_id(&out);
        assert!(keys[0].starts_with(&run), "{} is not from {run}", keys[0]);
        let history = project.history(&run);
        let started = of_kind(&history, "step_started");
        let attempts: Vec<&serde_json::Value> = started.iter().map(|e| &e["attempt"]).collect();
        assert_eq!(attempts, [1, 2, 3, 4], "{history:#?}");
        for e in &started {
            assert_eq!(e["data"]["idempotency_key"], keys[0], "{e}");
        }
        let failed = of_kind(&history, "step_failed");
        assert_eq!(failed.len(), 3, "{history:#?}");
        for e in &failed {
            assert_eq!(e["data"]["kind"], "ToolError");
            assert_eq!(e["data"]["retryable"], true);
            assert_eq!(e["data"]["status"], 503);
            assert_eq!(e["data"]["request"]["method"], "POST");
            let message = e["data"]["message"].as_str().unwrap();
            assert!(
                message.contains("503 Service Unavailable") && message.contains("busy"),
                "{message}"
            );
        }
        let completed = of_kind(&history, "step_completed");
        assert_eq!(completed.len(), 1);
        assert_eq!(completed[0]["attempt"], 4);
        assert_eq!(completed[0]["data"]["status"], 200);
        assert_eq!(
            completed[0]["data"]["request"]["url"],
            format!("{}/customs/check", server.url())
        );
    });
}

#[test]
fn a_400_is_not_retried_unless_the_retry_names_tool_error() {
    for_each_store(|store| {
        let server = Server::start(vec![Reply::Status(400, r#"{"error": "unknown shipment"}"#)]);
        let program = format!(
            "{TYPES}tool check(id: String) -> Report via http post \"/check\"\n\n\
             workflow plain(id: String) -> Report {{\n  retry 4 {{ check(id) }}\n}}\n\n\
             workflow insist(id: String) -> Report {{\n  retry 3 on ToolError {{ check(id) }}\n}}\n\n\
             workflow caught(id: String) -> String {{\n  try {{\n    check(id)\n    \"ok\"\n  }} catch e {{ \"${{e.kind}} retryable=${{e.retryable}} tool=${{e.tool}}\" }}\n}}\n"
        );
        let project = project_with(store, &program, &tool_config("check", &server));

        let out = project.run("plain", r#"{"id": "S404"}"#);
        out.expect_code(EXIT_FAILED);
        assert!(out.all().contains("400 Bad Request"), "{}", out.all());
        assert!(out.all().contains("unknown shipment"), "{}", out.all());
        assert_eq!(server.all().len(), 1, "a 400 is not retried");
        let history = project.history(&run_id(&out));
        let failed = of_kind(&history, "step_failed");
        assert_eq!(failed.len(), 1, "{history:#?}");
        assert_eq!(failed[0]["data"]["retryable"], false);
        assert_eq!(failed[0]["data"]["status"], 400);

        let out = project.run("insist", r#"{"id": "S404"}"#);
        out.expect_code(EXIT_FAILED);
        assert_eq!(server.all().len(), 3, "`on ToolError` retries even a 400");

        let out = project.run("caught", r#"{"id": "S404"}"#);
        out.expect_code(EXIT_COMPLETED);
        assert_eq!(out.json()["output"], "ToolError retryable=false tool=check");
    });
}

#[test]
fn a_hanging_server_is_cut_off_by_timeout_and_the_request_aborted() {
    for_each_store(|store| {
        let server = Server::start(vec![Reply::Hang]);
        let program = format!(
            "{TYPES}tool check(id: String) -> Report via http post \"/check\"\n\n\
             workflow bounded(id: String) -> Report {{\n  timeout 1s {{ check(id) }}\n}}\n\n\
             workflow caught(id: String) -> String {{\n  try {{\n    timeout 500ms {{ check(id) }}\n    \"ok\"\n  }} catch e {{ e.kind }}\n}}\n"
        );
        let project = project_with(store, &program, &tool_config("check", &server));

        let started = Instant::now();
        let out = project.run("bounded", r#"{"id": "S1"}"#);
        let took = started.elapsed();
        out.expect_code(EXIT_FAILED);
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(out.all().contains("Timeout"), "{}", out.all());
        server.next();
        // flowrt closed the connection: the server's read ended about when the limit passed.
        let closed = server
            .closed
            .recv_timeout(Duration::from_secs(5))
            .expect("flowrt closed the connection");
        assert!(closed < Duration::from_secs(3), "closed after {closed:?}");
        let history = project.history(&run_id(&out));
        let failed = of_kind(&history, "step_failed");
        assert_eq!(failed.len(), 1, "{history:#?}");
        assert_eq!(failed[0]["data"]["kind"], "Timeout");
        let message = failed[0]["data"]["message"].as_str().unwrap();
        assert!(message.contains("aborted"), "{message}");

        let out = project.run("caught", r#"{"id": "S1"}"#);
        out.expect_code(EXIT_COMPLETED);
        assert_eq!(out.json()["output"], "Timeout");
    });
}

#[test]
fn a_configured_timeout_bounds_a_call_without_a_timeout_block() {
    for_each_store(|store| {
        let server = Server::start(vec![Reply::Hang]);
        let program = format!(
            "{TYPES}tool check(id: String) -> Report via http post \"/check\"\n\n\
             workflow w(id: String) -> Report {{ check(id) }}\n"
        );
        let project = project_with(
            store,
            &program,
            &format!("{}timeout = \"300ms\"\n", tool_config("check", &server)),
        );
        let started = Instant::now();
        let out = project.run("w", r#"{"id": "S1"}"#);
        out.expect_code(EXIT_FAILED);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(out.all().contains("Timeout"), "{}", out.all());
        assert!(out.all().contains("300ms"), "{}", out.all());
    });
}

#[test]
fn json_of_the_wrong_shape_is_invalid_output_naming_the_path() {
    for_each_store(|store| {
        let server = Server::start(vec![
            Reply::Json(r#"{"ok": "yes", "anomalies": []}"#.into()),
            Reply::Json(r#"{"ok": true, "anomalies": ["a", 7]}"#.into()),
            Reply::Status(200, "<html>maintenance</html>"),
        ]);
        let program = format!(
            "{TYPES}tool check(id: String) -> Report via http post \"/check\"\n\n\
             workflow w(id: String) -> Report {{ check(id) }}\n"
        );
        let project = project_with(store, &program, &tool_config("check", &server));
        for needle in ["$.ok", "$.anomalies[1]", "not JSON"] {
            let out = project.run("w", r#"{"id": "S1"}"#);
            out.expect_code(EXIT_FAILED);
            assert!(out.all().contains("InvalidOutput"), "{}", out.all());
            assert!(out.all().contains(needle), "{needle}: {}", out.all());
            let history = project.history(&run_id(&out));
            let failed = of_kind(&history, "step_failed");
            assert_eq!(failed[0]["data"]["kind"], "InvalidOutput");
            assert_eq!(failed[0]["data"]["retryable"], true);
        }
    });
}

#[test]
fn a_server_closing_the_connection_is_a_retryable_tool_error() {
    for_each_store(|store| {
        let server = Server::start(vec![Reply::Close]);
        let program = format!(
            "{TYPES}tool check(id: String) -> Report via http post \"/check\"\n\n\
             workflow w(id: String) -> Report {{ check(id) }}\n"
        );
        let project = project_with(store, &program, &tool_config("check", &server));
        let out = project.run("w", r#"{"id": "S1"}"#);
        out.expect_code(EXIT_FAILED);
        assert!(out.all().contains("ToolError"), "{}", out.all());
        assert!(
            out.all()
                .contains("closed the connection without a response"),
            "{}",
            out.all()
        );
        let history = project.history(&run_id(&out));
        assert_eq!(
            of_kind(&history, "step_failed")[0]["data"]["retryable"],
            true
        );
    });
}

#[test]
fn a_refused_connection_is_a_tool_error() {
    for_each_store(|store| {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let program = format!(
            "{TYPES}tool check(id: String) -> Report via http post \"http://127.0.0.1:{port}/check\"\n\n\
             workflow w(id: String) -> Report {{ check(id) }}\n"
        );
        let project = project_with(store, &program, "");
        let out = project.run("w", r#"{"id": "S1"}"#);
        out.expect_code(EXIT_FAILED);
        assert!(out.all().contains("ToolError"), "{}", out.all());
        assert!(out.all().contains("cannot connect"), "{}", out.all());
    });
}

#[test]
fn get_sends_the_arguments_as_query_parameters() {
    for_each_store(|store| {
        let server = Server::start(vec![Reply::Json(r#"{"ok": true, "anomalies": []}"#.into())]);
        let program = format!(
            "{TYPES}tool find(customer: String, limit: Int, tags: List<String>, since: String?) -> Report via http get \"/crm/history?v=2\"\n\n\
             workflow w(c: String) -> Bool {{ find(c, 5, [\"vip\"], none).ok }}\n"
        );
        let project = project_with(store, &program, &tool_config("find", &server));
        project
            .run("w", r#"{"c": "Zoë & Co"}"#)
            .expect_code(EXIT_COMPLETED);
        let seen = server.next();
        assert_eq!(seen.method, "GET");
        assert_eq!(
            seen.target,
            "/crm/history?v=2&customer=Zo%C3%AB%20%26%20Co&limit=5&tags=%5B%22vip%22%5D"
        );
        assert_eq!(seen.body, "");
        assert_eq!(seen.header("Content-Type"), None);
        assert!(seen.header("Idempotency-Key").is_some());
    });
}

#[test]
fn configured_headers_arrive_and_their_secrets_are_never_shown() {
    for_each_store(|store| {
        const SECRET: &str = "tok-9f8e7d6c5b4a";
        let server = Server::start(vec![
            Reply::Json(r#"{"ok": true, "anomalies": []}"#.into()),
            // A server that echoes the credential in its error.
            Reply::Status(401, r#"{"error": "token tok-9f8e7d6c5b4a is expired"}"#),
        ]);
        let program = format!(
            "{TYPES}tool check(id: String) -> Report via http post \"/check\"\n\n\
             workflow w(id: String) -> Report {{ check(id) }}\n"
        );
        let config = format!(
            "{}headers = {{ Authorization = \"Bearer ${{env:FLOW_TEST_CUSTOMS_TOKEN}}\", X-Client = \"flow-tests\" }}\n",
            tool_config("check", &server)
        );
        let project =
            project_with(store, &program, &config).with_env("FLOW_TEST_CUSTOMS_TOKEN", SECRET);

        let ok = project.run("w", r#"{"id": "S1"}"#);
        ok.expect_code(EXIT_COMPLETED);
        let seen = server.next();
        assert_eq!(
            seen.header("Authorization"),
            Some(format!("Bearer {SECRET}").as_str())
        );
        assert_eq!(seen.header("X-Client"), Some("flow-tests"));

        let refused = project.run("w", r#"{"id": "S2"}"#);
        refused.expect_code(EXIT_FAILED);
        assert!(
            refused.all().contains("401 Unauthorized"),
            "{}",
            refused.all()
        );
        assert!(refused.all().contains("[redacted]"), "{}", refused.all());
        for run in [run_id(&ok), run_id(&refused)] {
            let history = project.history_text(&run);
            assert!(
                !history.contains(SECRET),
                "the secret is in the history:\n{history}"
            );
            let status = project.flowrt(&["status", &run, "--json"]);
            assert!(!status.all().contains(SECRET), "{}", status.all());
        }
        assert!(!ok.all().contains(SECRET) && !refused.all().contains(SECRET));
        let runs = project.flowrt(&["runs", "--json"]);
        assert!(!runs.all().contains(SECRET));

        // Without the variable, the call fails naming the tool and the variable.
        let unset = project_with(store, &program, &config);
        let out = unset.run("w", r#"{"id": "S3"}"#);
        out.expect_code(EXIT_FAILED);
        assert!(
            out.all().contains("FLOW_TEST_CUSTOMS_TOKEN") && out.all().contains("`check`"),
            "{}",
            out.all()
        );
        let history = unset.history(&run_id(&out));
        assert_eq!(
            of_kind(&history, "step_failed")[0]["data"]["retryable"],
            false
        );
    });
}

#[test]
fn a_tool_without_a_base_url_or_with_another_scheme_is_refused_clearly() {
    for_each_store(|store| {
        let program = format!(
            "{TYPES}tool check(id: String) -> Report via http post \"/check\"\n\n\
             workflow w(id: String) -> Report {{ check(id) }}\n"
        );
        let project = project_with(store, &program, "");
        let out = project.run("w", r#"{"id": "S1"}"#);
        out.expect_code(EXIT_FAILED);
        assert!(
            out.all().contains("[tools.check]") && out.all().contains("base_url"),
            "{}",
            out.all()
        );

        // A base URL that is neither http nor https is refused when flow.toml is read, at
        // its line.
        let bad = project_with(
            store,
            &program,
            "[tools.check]\nbase_url = \"ftp://customs.example.com\"\n",
        );
        let out = bad.run("w", r#"{"id": "S1"}"#);
        assert_eq!(out.code, 2, "{}", out.all());
        assert!(out.stderr.contains("flow.toml:2:12"), "{}", out.stderr);
        assert!(
            out.stderr.contains("must be an http:// or https:// URL"),
            "{}",
            out.stderr
        );
    });
}

#[test]
fn kill_9_during_the_call_then_a_worker_repeats_it_with_the_same_key() {
    for_each_store(|store| {
        // The first request is held until flowrt is killed; the second is answered.
        let server = Server::start(vec![
            Reply::Hang,
            Reply::Json(r#"{"ok": true, "anomalies": []}"#.into()),
        ]);
        let program = format!(
            "{TYPES}tool check(id: String) -> Report via http post \"/check\"\n\n\
             workflow w(id: String) -> Bool {{\n  let r = check(id)\n  r.ok\n}}\n"
        );
        // The process's heartbeat keeps the run claimed during the call; once the process is
        // dead, the claim lapses at the end of its lease (here 1.5 s), not at the end of the
        // call's time limit (10 s).
        let project = project_with(
            store,
            &program,
            &format!("{}timeout = \"10s\"\n", tool_config("check", &server)),
        );
        let mut child: Child = project
            .command(&["run", "prog.flow", "--json", "--input", r#"{"id": "S1"}"#])
            .env("FLOW_LEASE_MS", "1500")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let first = server.next();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let run = project.only_run();

        // Not before the lease has passed (its last renewal was at most half a second before
        // the kill): a worker leaves the run alone.
        project
            .flowrt(&["worker", "--once"])
            .expect_code(EXIT_COMPLETED);
        assert!(
            server.seen.try_recv().is_err(),
            "the run was taken over too early"
        );
        // Once the dead process's claim has expired, a worker takes the run over.
        std::thread::sleep(Duration::from_millis(1600));
        let deadline = Instant::now() + Duration::from_secs(20);
        let second = loop {
            project
                .flowrt(&["worker", "--once"])
                .expect_code(EXIT_COMPLETED);
            if let Ok(seen) = server.seen.try_recv() {
                break seen;
            }
            assert!(Instant::now() < deadline, "no worker took the run over");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(
            first.header("Idempotency-Key"),
            second.header("Idempotency-Key"),
            "the repeated call carries the same key"
        );
        assert_eq!(first.body, second.body);

        let status = project.flowrt(&["status", &run, "--json"]);
        assert_eq!(status.json()["status"], "completed", "{}", status.all());
        let history = project.history(&run);
        let resumed = of_kind(&history, "step_resumed");
        assert_eq!(resumed.len(), 1, "{history:#?}");
        assert_eq!(
            resumed[0]["data"]["idempotency_key"].as_str(),
            first.header("Idempotency-Key")
        );
        assert_eq!(of_kind(&history, "step_started").len(), 2);
        assert_eq!(of_kind(&history, "step_completed").len(), 1);
    });
}

// ---------------------------------------------------------------------------------------------
// llm
// ---------------------------------------------------------------------------------------------

/// A chat completion whose message content is `content`.
fn completion(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "mistral-small",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59 },
    })
    .to_string()
}

const INVOICE_PROGRAM: &str = r#"type Doc = { name: String, text: String }
type Invoice = { number: String, total_eur: Int, due: String? }

tool extract(doc: Doc, lang: String) -> Invoice via llm "mistral-small" prompt "Extract the invoice fields of ${doc.name}, written in ${lang}:\n${doc.text}"

workflow read(doc: Doc) -> Invoice {
  retry 3 { extract(doc, "French") }
}
"#;

#[test]
fn a_model_answering_garbage_is_asked_again_until_the_answer_fits() {
    for_each_store(|store| {
        const KEY: &str = "sk-test-0123456789";
        let server = Server::start(vec![
            Reply::Json(completion(r#"{"number": "F-7", "total_eur": "forty"}"#)),
            Reply::Json(completion(
                "Sure! The invoice number is F-7 and the total is 40 EUR.",
            )),
            Reply::Json(completion(
                "```json\n{\"number\": \"F-7\", \"total_eur\": 40, \"due\": null}\n```",
            )),
        ]);
        let config = format!(
            "[llm]\nbase_url = \"{}/v1\"\napi_key = \"${{env:FLOW_TEST_LLM_KEY}}\"\n",
            server.url()
        );
        let project =
            project_with(store, INVOICE_PROGRAM, &config).with_env("FLOW_TEST_LLM_KEY", KEY);
        let out = project.run(
            "read",
            r#"{"doc": {"name": "facture-7.pdf", "text": "Facture F-7, total 40 EUR"}}"#,
        );
        out.expect_code(EXIT_COMPLETED);
        assert_eq!(
            out.json()["output"],
            serde_json::json!({ "number": "F-7", "total_eur": 40, "due": null })
        );

        // What the model was asked.
        let requests: Vec<Seen> = (0..3).map(|_| server.next()).collect();
        for seen in &requests {
            assert_eq!(seen.method, "POST");
            assert_eq!(seen.target, "/v1/chat/completions");
            assert_eq!(
                seen.header("Authorization"),
                Some(format!("Bearer {KEY}").as_str())
            );
            let body = seen.json();
            assert_eq!(body["model"], "mistral-small");
            assert_eq!(body["messages"][0]["role"], "system");
            assert_eq!(body["messages"][1]["role"], "user");
            assert_eq!(
                body["messages"][1]["content"],
                "Extract the invoice fields of facture-7.pdf, written in French:\nFacture F-7, total 40 EUR"
            );
            let format = &body["response_format"];
            assert_eq!(format["type"], "json_schema");
            assert_eq!(format["json_schema"]["name"], "extract");
            assert_eq!(format["json_schema"]["strict"], false);
            assert_eq!(
                format["json_schema"]["schema"],
                serde_json::json!({
                    "type": "object",
                    "properties": {
                        "number": { "type": "string" },
                        "total_eur": { "type": "integer" },
                        "due": { "anyOf": [{ "type": "string" }, { "type": "null" }] },
                    },
                    "required": ["number", "total_eur"],
                    "additionalProperties": false,
                })
            );
            let system = body["messages"][0]["content"].as_str().unwrap();
            assert!(
                system.contains("JSON") && system.contains("\"total_eur\""),
                "{system}"
            );
        }

        // What the history says: each attempt, the rejected replies verbatim, the final one.
        let run = run_id(&out);
        let text = project.history_text(&run);
        assert!(!text.contains(KEY), "the API key is in the history");
        let history = project.history(&run);
        let started = of_kind(&history, "step_started");
        assert_eq!(
            started.iter().map(|e| &e["attempt"]).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let failed = of_kind(&history, "step_failed");
        assert_eq!(failed.len(), 2, "{history:#?}");
        assert_eq!(failed[0]["data"]["kind"], "InvalidOutput");
        assert_eq!(failed[0]["data"]["retryable"], true);
        assert!(
            failed[0]["data"]["message"]
                .as_str()
                .unwrap()
                .contains("$.total_eur"),
            "{}",
            failed[0]
        );
        assert_eq!(
            failed[0]["data"]["llm"]["reply"],
            r#"{"number": "F-7", "total_eur": "forty"}"#
        );
        assert_eq!(failed[1]["data"]["kind"], "InvalidOutput");
        assert!(
            failed[1]["data"]["message"]
                .as_str()
                .unwrap()
                .contains("not JSON"),
            "{}",
            failed[1]
        );
        assert_eq!(
            failed[1]["data"]["llm"]["reply"],
            "Sure! The invoice number is F-7 and the total is 40 EUR."
        );
        let completed = of_kind(&history, "step_completed");
        assert_eq!(completed.len(), 1);
        let llm = &completed[0]["data"]["llm"];
        assert_eq!(llm["model"], "mistral-small");
        assert_eq!(
            llm["prompt"],
            "Extract the invoice fields of facture-7.pdf, written in French:\nFacture F-7, total 40 EUR"
        );
        assert!(
            llm["reply"].as_str().unwrap().starts_with("```json"),
            "{llm}"
        );
        assert_eq!(llm["usage"]["total_tokens"], 59);
        assert_eq!(
            completed[0]["data"]["output"],
            serde_json::json!({ "number": "F-7", "total_eur": 40, "due": null })
        );
    });
}

const RATING_PROGRAM: &str = r#"type Rating = { score: Float in 0.0..1.0, label: String matching "^(good|bad)$", tags: List<String> nonempty }

tool rate(text: String) -> Rating via llm "mistral-small" prompt "Rate: ${text}"

workflow review(text: String) -> Rating {
  retry 3 on InvalidOutput { rate(text) }
}
"#;

/// A model is asked for refined data through the JSON Schema (`minimum`, `maximum`,
/// `pattern`, `minItems`), and an answer that breaks a rule anyway is an `InvalidOutput`
/// naming the path and the rule, asked again.
#[test]
fn a_model_is_given_the_refinements_and_an_answer_that_breaks_one_is_asked_again() {
    for_each_store(|store| {
        let server = Server::start(vec![
            Reply::Json(completion(
                r#"{"score": 7, "label": "good", "tags": ["x"]}"#,
            )),
            Reply::Json(completion(
                r#"{"score": 0.5, "label": "fine", "tags": ["x"]}"#,
            )),
            Reply::Json(completion(
                r#"{"score": 0.5, "label": "good", "tags": ["x"]}"#,
            )),
        ]);
        let config = format!(
            "[llm]\nbase_url = \"{}/v1\"\napi_key = \"sk-test\"\n",
            server.url()
        );
        let project = project_with(store, RATING_PROGRAM, &config);
        let out = project.run("review", r#"{"text": "a fine day"}"#);
        out.expect_code(EXIT_COMPLETED);
        assert_eq!(
            out.json()["output"],
            serde_json::json!({ "score": 0.5, "label": "good", "tags": ["x"] })
        );
        let body = server.next().json();
        assert_eq!(
            body["response_format"]["json_schema"]["schema"],
            serde_json::json!({
                "type": "object",
                "properties": {
                    "score": { "type": "number", "minimum": 0.0, "maximum": 1.0 },
                    "label": { "type": "string", "pattern": "^(?:^(good|bad)$)$" },
                    "tags": { "type": "array", "items": { "type": "string" }, "minItems": 1 },
                },
                "required": ["score", "label", "tags"],
                "additionalProperties": false,
            })
        );
        let run = run_id(&out);
        let failed: Vec<String> = of_kind(&project.history(&run), "step_failed")
            .iter()
            .map(|e| e["data"]["message"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(
            failed[0].contains("$.score: expected Float in 0.0..1.0, found 7.0"),
            "{}",
            failed[0]
        );
        assert!(
            failed[1].contains(
                r#"$.label: expected String matching "^(good|bad)$", found the string "fine""#
            ),
            "{}",
            failed[1]
        );
    });
}

#[test]
fn a_model_that_never_fits_fails_the_run_after_the_last_attempt() {
    for_each_store(|store| {
        let server = Server::start(vec![Reply::Json(completion("I cannot help with that."))]);
        let config = format!("[llm]\nbase_url = \"{}/v1\"\n", server.url());
        let project = project_with(store, INVOICE_PROGRAM, &config);
        let out = project.run("read", r#"{"doc": {"name": "a", "text": "b"}}"#);
        out.expect_code(EXIT_FAILED);
        assert!(out.all().contains("InvalidOutput"), "{}", out.all());
        let requests = server.all();
        assert_eq!(requests.len(), 3);
        // A retry wants a new answer: no idempotency key that a provider could replay by.
        assert!(
            requests
                .iter()
                .all(|r| r.header("Idempotency-Key").is_none())
        );
    });
}

/// A chat completion in which the model declines to answer.
fn refusal(reason: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "model": "mistral-small",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": null, "refusal": reason }, "finish_reason": "stop" }],
    })
    .to_string()
}

/// `raises Refused on refusal`: a model's refusal is the named error, its `reason` the
/// model's words, not retried; without the declaration it stays an `InvalidOutput`.
#[test]
fn a_model_refusal_is_the_named_error_the_tool_declares() {
    for_each_store(|store| {
        let server = Server::start(vec![
            Reply::Json(refusal("I can't help with that request.")),
            Reply::Json(completion(r#"{"number": "F-1", "total_eur": 100}"#)),
        ]);
        let config = format!("[llm]\nbase_url = \"{}/v1\"\n", server.url());
        let program = INVOICE_PROGRAM.replace(
            "prompt \"Extract the invoice fields of ${doc.name}, written in ${lang}:\\n${doc.text}\"",
            "prompt \"Extract the invoice fields of ${doc.name}, written in ${lang}:\\n${doc.text}\" raises Refused on refusal",
        );
        assert_ne!(program, INVOICE_PROGRAM, "the tool declares the refusal");
        let program = format!(
            "error Refused(reason: String)\n\n{program}\n\
             workflow careful(doc: Doc) -> String {{\n  try {{\n    extract(doc, \"en\").number\n  }} catch Refused(e) {{\n    \"refused: ${{e.reason}} (${{e.kind}})\"\n  }}\n}}\n"
        );
        let project = project_with(store, &program, &config);
        let out = project.run("careful", r#"{"doc": {"name": "a", "text": "b"}}"#);
        out.expect_code(EXIT_COMPLETED);
        assert_eq!(
            out.json()["output"],
            "refused: I can't help with that request. (Refused)",
            "{}",
            out.all()
        );
        assert_eq!(
            server.all().len(),
            1,
            "a refusal caught by name is not retried"
        );
        let history = project.history(&run_id(&out));
        let failed = of_kind(&history, "step_failed");
        assert_eq!(failed.len(), 1, "{history:#?}");
        assert_eq!(failed[0]["data"]["kind"], "Refused");
    });
}

#[test]
fn an_llm_endpoint_error_is_classified_like_http() {
    for_each_store(|store| {
        let server = Server::start(vec![
            Reply::Status(429, r#"{"message": "rate limited"}"#),
            Reply::Status(401, r#"{"message": "bad key"}"#),
        ]);
        let config = format!("[llm]\nbase_url = \"{}/v1\"\n", server.url());
        let project = project_with(store, INVOICE_PROGRAM, &config);
        let out = project.run("read", r#"{"doc": {"name": "a", "text": "b"}}"#);
        out.expect_code(EXIT_FAILED);
        // 429 is retried; the 401 that follows is not.
        assert_eq!(server.all().len(), 2);
        let history = project.history(&run_id(&out));
        let failed = of_kind(&history, "step_failed");
        assert_eq!(failed.len(), 2, "{history:#?}");
        assert_eq!(failed[0]["data"]["retryable"], true);
        assert_eq!(failed[1]["data"]["retryable"], false);
        assert_eq!(
            failed[1]["data"]["llm"]["reply"],
            r#"{"message": "bad key"}"#
        );
    });
}

/// `raises NotFound on 404`: the tool's answer with that status is the named error, its
/// fields read from the body; a 429 the tool declares as `RateLimited` is retried by name.
#[test]
fn declared_answers_are_named_errors_with_fields_from_the_body() {
    for_each_store(|store| {
        let server = Server::start(vec![
            Reply::Status(404, r#"{"id": "S-7", "note": "never shipped"}"#),
            Reply::Status(429, r#"{"retry_after": "1ms"}"#),
            Reply::Json(r#"{"ok": true, "anomalies": []}"#.into()),
            Reply::Status(404, r#"{"note": "no id in this body"}"#),
        ]);
        let program = format!(
            "{TYPES}error NotFound(id: String)\nerror RateLimited(retry_after: Duration)\n\n\
             tool check(id: String) -> Report via http post \"/check\" raises NotFound on 404, RateLimited on 429\n\n\
             workflow find(id: String) -> String {{\n  try {{\n    let r = check(id)\n    \"ok ${{to_string(r.ok)}}\"\n  }} catch NotFound(e) {{ \"no ${{e.id}} (${{e.kind}}, attempt ${{to_string(e.attempt)}})\" }}\n}}\n\n\
             workflow patient(id: String) -> Bool {{\n  let r = retry 3 on RateLimited {{ check(id) }}\n  r.ok\n}}\n"
        );
        let project = project_with(store, &program, &tool_config("check", &server));

        let out = project.run("find", r#"{"id": "S-7"}"#);
        out.expect_code(EXIT_COMPLETED);
        assert_eq!(out.json()["output"], "no S-7 (NotFound, attempt 1)");

        let out = project.run("patient", r#"{"id": "S-8"}"#);
        out.expect_code(EXIT_COMPLETED);
        assert_eq!(out.json()["output"], true);
        let history = project.history(&run_id(&out));
        let failed = of_kind(&history, "step_failed");
        assert_eq!(failed.len(), 1, "{history:#?}");
        assert_eq!(failed[0]["data"]["status"], 429);

        // A 404 whose body lacks the error's field is no `NotFound`: a plain ToolError that
        // says why, never a value with a hole in it.
        let out = project.run("find", r#"{"id": "S-9"}"#);
        out.expect_code(EXIT_FAILED);
        assert!(
            out.all().contains("the answer is not a `NotFound`"),
            "{}",
            out.all()
        );
    });
}
