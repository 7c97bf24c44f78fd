//! `flowrt serve` against hostile clients, over real TCP on 127.0.0.1: refused requests that
//! try to fill the disk (long paths, a thousand of them), slow headers, idle and kept-alive
//! connections, oversized headers, more connections than the file-descriptor limit allows,
//! bodies that are not JSON, and users reading runs that are not theirs (403, recorded) —
//! next to the starter, a gate's decider, a `readers` role and an auditor, who may.
#![cfg(unix)]

mod common;

use common::{FLOWRT, Store, TestDb, for_each_store};
use serde_json::{Value, json};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"[users.ines]
roles = ["clerk"]

[users.alice]
roles = ["customs"]

[users.bob]
roles = ["customs"]

[users.rita]
roles = ["compliance"]

[users.dave]
roles = ["auditor"]

[users.nora]
roles = []

[workflows.release]
starters = ["clerk"]
readers = ["compliance"]
"#;

const PROGRAM: &str = r#"type Shipment = { id: String, value: Int }

/// Keeps the engine thread busy for a few seconds: a request that starts it is being handled
/// all that time (tool calls no longer hold a request: they are made off the engine thread).
workflow spin(n: Int) -> Int {
  var i = 0
  while i < n { i = i + 1 }
  i
}

workflow inner(n: Int) -> Int { n * 3 }

workflow outer(n: Int) -> Int {
  let r = inner(n + 1)
  r + 1
}

workflow release(s: Shipment) -> String {
  let d = await approval "release_signoff" {
    approvers: role("customs"),
    prompt: "Release ${s.id}?",
    context: s,
  }
  if d.approved { "released ${s.id}" } else { "held ${s.id}" }
}
"#;

/// A served database in a temporary directory; the server is stopped when dropped.
struct Server {
    db: TestDb,
    dir: tempfile::TempDir,
    child: Option<Child>,
    addr: SocketAddr,
    /// What the server said when it started (its limits).
    banner: String,
}

impl Server {
    /// `flowrt serve` with `flags`, under the shell's `ulimit -n` when `fd_limit` is given.
    fn start(store: &Store, flags: &[&str], fd_limit: Option<u32>) -> Server {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = TestDb::create(store, dir.path());
        std::fs::write(dir.path().join("flow.toml"), CONFIG).expect("config");
        std::fs::write(dir.path().join("program.flow"), PROGRAM).expect("program");
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let mut server = Server {
            db,
            dir,
            child: None,
            addr,
            banner: String::new(),
        };
        let mut command = match fd_limit {
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                    FLOWRT,
                ]);
                sh
            }
            None => Command::new(FLOWRT),
        };
        server.configure(&mut command);
        let mut child = command
            .args(["serve", "--addr", &addr.to_string(), "program.flow"])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flowrt serve starts");
        // The first line says where it listens and with which limits.
        let mut stderr = child.stderr.take().expect("stderr");
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stderr.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        server.banner = String::from_utf8_lossy(&line).into_owned();
        // Keep draining it so that the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        server.child = Some(child);
        assert!(
            server.banner.contains("listening on"),
            "flowrt serve did not start: {}",
            server.banner
        );
        let (status, _) = server.request("GET", "/health", None, None, "");
        assert_eq!(status, 200);
        server
    }

    fn configure(&self, command: &mut Command) {
        self.db.apply(command);
        command
            .current_dir(self.dir.path())
            .arg("--db")
            .arg(self.db.spec())
            .arg("--config")
            .arg(self.dir.path().join("flow.toml"))
            .env_remove("FLOW_DB")
            .env_remove("FLOW_CONFIG");
    }

    fn flowrt(&self, args: &[&str]) -> String {
        let mut command = Command::new(FLOWRT);
        self.configure(&mut command);
        let output = command.args(args).output().expect("flowrt runs");
        assert!(
            output.status.success(),
            "flowrt {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn token(&self, user: &str) -> String {
        self.flowrt(&["token", "create", user]).trim().to_string()
    }

    /// One request on a new connection (`Connection: close`): the status and the body.
    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a read timeout");
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(kind) = content_type {
            head.push_str(&format!("Content-Type: {kind}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let _ = stream.write_all(head.as_bytes());
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// A JSON request that must get `expected`.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
        expected: u16,
    ) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, text) =
            self.request(method, path, Some(token), Some("application/json"), &body);
        assert_eq!(status, expected, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    /// Stops the server with SIGTERM; it must exit 0.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        let status = child.wait().expect("flowrt serve exits");
        assert!(status.success(), "flowrt serve exited with {status:?}");
    }

    /// The bytes the store holds: the SQLite file (and its journal), or PostgreSQL's
    /// refusal table.
    /// What the store holds on disk. For SQLite: the file, its WAL and shared memory, after
    /// the WAL was written back and truncated — the WAL is a fixed-size scratch area that
    /// SQLite reuses (its size depends only on when the last checkpoint ran), not growth.
    fn stored_bytes(&self) -> i64 {
        match self.db.sqlite_path() {
            Some(path) => {
                self.db.query_i64("PRAGMA wal_checkpoint(TRUNCATE)", &[]);
                ["", "-wal", "-shm"]
                    .iter()
                    .filter_map(|suffix| {
                        std::fs::metadata(format!("{}{suffix}", path.display())).ok()
                    })
                    .map(|m| m.len() as i64)
                    .sum()
            }
            // What the rows hold: the versions that 1,000 updates of one counted row leave
            // behind are reclaimed by autovacuum (when it gets to run, which a loaded machine
            // may delay past the test), so they are reclaimed here first.
            None => {
                self.db.execute("VACUUM FULL refusals", &[]);
                self.db
                    .query_i64("SELECT pg_total_relation_size('refusals')", &[])
                    .expect("the size of the refusal table")
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether the server closed `stream` (EOF or reset) within `within`; the bytes it sent.
fn closed_within(stream: &mut TcpStream, within: Duration) -> (bool, String) {
    stream
        .set_read_timeout(Some(within))
        .expect("a read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (true, String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (false, String::from_utf8_lossy(&got).into_owned());
            }
            Err(_) => return (true, String::from_utf8_lossy(&got).into_owned()),
        }
        if Instant::now() > deadline {
            return (false, String::from_utf8_lossy(&got).into_owned());
        }
    }
}

/// Whether the server has closed `stream` (EOF or reset), without waiting.
fn is_closed(mut stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 64];
    let closed = match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).expect("blocking");
    closed
}

/// The `[N times` counts of the refusal log's lines that contain `needle` (1 for a line
/// without one).
fn counted(log: &str, needle: &str) -> i64 {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(|l| {
            l.split_once(" [")
                .and_then(|(_, rest)| rest.split_once(" times"))
                .and_then(|(n, _)| n.parse::<i64>().ok())
                .unwrap_or(1)
        })
        .sum()
}

#[test]
fn refused_requests_cannot_fill_the_disk() {
    for_each_store(|store| {
        let mut server = Server::start(store, &[], None);
        let before = server.stored_bytes();
        // Paths longer than the headers may be: refused before any handler (431).
        let huge = format!("/api/runs/{}", "a".repeat(60_000));
        for _ in 0..1_000 {
            let (status, _) = server.request("GET", &huge, None, None, "");
            assert_eq!(status, 431);
        }
        // Long paths within the bound, with no token: 401, recorded, cut and counted.
        let long = format!("/api/runs/{}", "b".repeat(12_000));
        for _ in 0..1_000 {
            let (status, _) = server.request("GET", &long, None, None, "");
            assert_eq!(status, 401);
        }
        server.stop();
        let grown = server.stored_bytes() - before;
        assert!(
            grown < 256 * 1024,
            "the store grew by {grown} bytes for 2,000 refused requests"
        );
        let log = server.flowrt(&["audit", "refusals"]);
        assert_eq!(
            counted(&log, "401 no token GET /api/runs/bbb"),
            1_000,
            "every refusal is counted:\n{log}"
        );
        assert!(log.contains("times from 127.0.0.1"), "{log}");
        assert!(
            log.lines().all(|l| l.len() < 1_200),
            "the log keeps the paths whole:\n{}",
            &log[..log.len().min(2_000)]
        );
        assert!(!log.contains("aaaa"), "431s are not recorded");
    });
}

#[test]
fn slow_idle_and_oversized_requests_are_cut_off() {
    for_each_store(|store| {
        let server = Server::start(store, &["--header-timeout", "1s"], None);
        assert!(
            server.banner.contains("headers within 1000 ms"),
            "{}",
            server.banner
        );

        // Headers that never finish.
        let mut slow = TcpStream::connect(server.addr).expect("connects");
        slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .expect("sends");
        // A connection that sends nothing.
        let mut idle = TcpStream::connect(server.addr).expect("connects");
        // A kept-alive connection, idle after its first request.
        let mut kept = TcpStream::connect(server.addr).expect("connects");
        kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("sends");
        let mut first = [0u8; 12];
        kept.read_exact(&mut first).expect("the first answer");
        assert_eq!(&first, b"HTTP/1.1 200");
        // A body that never comes.
        let token = server.token("ines");
        let mut stalled = TcpStream::connect(server.addr).expect("connects");
        write!(
            stalled,
            "POST /api/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        )
        .expect("sends");

        for (name, stream) in [
            ("slow headers", &mut slow),
            ("an idle connection", &mut idle),
            ("a kept-alive connection", &mut kept),
        ] {
            let (closed, _) = closed_within(stream, Duration::from_secs(10));
            assert!(
                closed,
                "{name} is still open 10 s after a 1 s header time-out"
            );
        }
        let (closed, answer) = closed_within(&mut stalled, Duration::from_secs(10));
        assert!(closed, "a stalled body keeps its connection");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

        // Headers beyond the bound: 431, and the connection is closed.
        let mut big = TcpStream::connect(server.addr).expect("connects");
        let padding = "p".repeat(200 * 1024);
        let _ = write!(
            big,
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: {padding}\r\n\r\n"
        );
        let (closed, answer) = closed_within(&mut big, Duration::from_secs(10));
        assert!(closed && answer.starts_with("HTTP/1.1 431"), "{answer}");
        assert_eq!(server.request("GET", "/health", None, None, "").0, 200);
    });
}

#[test]
fn more_connections_than_descriptors_do_not_starve_health() {
    for_each_store(|store| {
        // 256 descriptors, as in the report: the cap is lowered to fit them.
        let server = Server::start(store, &["--header-timeout", "60s"], Some(256));
        assert!(
            server.banner.contains("at most 192 connections"),
            "{}",
            server.banner
        );
        let idle: Vec<TcpStream> = (0..300)
            .map(|_| TcpStream::connect(server.addr).expect("connects"))
            .collect();
        // /health answers at once: the longest idle connections made room.
        let mut health = TcpStream::connect(server.addr).expect("connects");
        health
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("sends");
        let (closed, answer) = closed_within(&mut health, Duration::from_secs(10));
        assert!(closed && answer.starts_with("HTTP/1.1 200"), "{answer}");
        std::thread::sleep(Duration::from_millis(200));
        let shut = idle.iter().filter(|s| is_closed(s)).count();
        assert!(
            shut >= 300 - 192,
            "{shut} of 300 idle connections were closed; at most 192 may stay open"
        );
        assert!(
            shut < 300,
            "every idle connection was closed: the cap is not 192"
        );
        // The server still works after, and the longest idle were the ones closed: most of
        // the closed connections are among the first that came (the accept order under load
        // may differ a little from the connect order).
        let early = idle[..150].iter().filter(|s| is_closed(s)).count();
        assert!(early * 2 > shut, "{early} of {shut} closed ones came first");
        assert_eq!(server.request("GET", "/health", None, None, "").0, 200);
    });
}

#[test]
fn when_every_connection_is_busy_a_newcomer_is_turned_away() {
    for_each_store(|store| {
        let server = Server::start(store, &["--max-connections", "2"], None);
        assert!(
            server.banner.contains("at most 2 connections"),
            "{}",
            server.banner
        );
        let ines = server.token("ines");
        // Two requests whose handlers wait for the engine, busy with a long computation.
        let busy: Vec<std::thread::JoinHandle<u16>> = (0..2)
            .map(|_| {
                let (addr, token) = (server.addr, ines.clone());
                std::thread::spawn(move || {
                    let mut stream = TcpStream::connect(addr).expect("connects");
                    let body = r#"{"workflow":"spin","input":{"n":1500000}}"#;
                    write!(
                        stream,
                        "POST /api/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .expect("sends");
                    let mut text = String::new();
                    let _ = stream.read_to_string(&mut text);
                    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        let mut third = TcpStream::connect(server.addr).expect("connects");
        let (closed, answer) = closed_within(&mut third, Duration::from_secs(2));
        assert!(closed, "a third connection stays open beside two busy ones");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("\"code\":\"unavailable\""), "{answer}");
        for handle in busy {
            assert_eq!(
                handle.join().expect("a client"),
                201,
                "a busy request was cut off"
            );
        }
        assert_eq!(server.request("GET", "/health", None, None, "").0, 200);
    });
}

#[test]
fn post_bodies_must_be_json() {
    for_each_store(|store| {
        let server = Server::start(store, &[], None);
        let ines = server.token("ines");
        let body = json!({ "workflow": "release", "input": { "s": { "id": "S-1", "value": 1 } } })
            .to_string();
        for kind in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let (status, text) = server.request("POST", "/api/runs", Some(&ines), kind, &body);
            assert_eq!(status, 415, "{kind:?}: {text}");
            let error: Value = serde_json::from_str(&text).expect("a JSON error");
            assert_eq!(error["error"]["code"], "unsupported_media_type", "{text}");
            assert!(
                error["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("Content-Type: application/json"),
                "{text}"
            );
        }
        let listed = server.call("GET", "/api/runs", &ines, None, 200);
        assert_eq!(listed, json!([]), "a refused body started nothing");
        let (status, text) = server.request(
            "POST",
            "/api/runs",
            Some(&ines),
            Some("application/json; charset=utf-8"),
            &body,
        );
        assert_eq!(status, 201, "{text}");
        // A POST without a body needs no type, but a declared one must be JSON.
        let id = serde_json::from_str::<Value>(&text).expect("JSON")["id"]
            .as_str()
            .expect("an id")
            .to_string();
        let cancel = format!("/api/runs/{id}/cancel");
        assert_eq!(
            server
                .request("POST", &cancel, Some(&ines), Some("text/plain"), "")
                .0,
            415
        );
        assert_eq!(
            server.request("POST", &cancel, Some(&ines), None, "").0,
            200
        );
        // The OpenAPI document says so.
        let document = server.call("GET", "/openapi.json", &ines, None, 200);
        for path in [
            "/api/runs",
            "/api/runs/{id}/cancel",
            "/api/runs/{id}/gates/{gate}/approve",
            "/api/runs/{id}/gates/{gate}/reject",
            "/api/runs/{id}/gates/{gate}/input",
        ] {
            let responses = &document["paths"][path]["post"]["responses"];
            assert!(responses["415"].is_object(), "POST {path}: {responses}");
        }
    });
}

#[test]
fn only_who_may_read_a_run_reads_it() {
    for_each_store(|store| {
        let mut server = Server::start(store, &[], None);
        let [ines, alice, bob, rita, dave, nora] =
            ["ines", "alice", "bob", "rita", "dave", "nora"].map(|u| server.token(u));
        let started = server.call(
            "POST",
            "/api/runs",
            &ines,
            Some(json!({ "workflow": "release", "input": { "s": { "id": "S-9", "value": 7 } } })),
            201,
        );
        let run = started["id"].as_str().expect("an id").to_string();
        let paths = [
            format!("/api/runs/{run}"),
            format!("/api/runs/{run}/history"),
            format!("/api/runs/{run}/audit"),
        ];

        // nora holds no role: refused everywhere, the run is not listed, no gate offered.
        for path in &paths {
            let body = server.call("GET", path, &nora, None, 403);
            assert_eq!(body["error"]["code"], "forbidden");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(&format!("nora may not read run {run}"))
                    && message.contains("role compliance (readers of `release`)")
                    && message.contains("role auditor"),
                "{message}"
            );
            assert!(
                !body.to_string().contains("S-9"),
                "a refusal shows the run: {body}"
            );
        }
        assert_eq!(server.call("GET", "/api/runs", &nora, None, 200), json!([]));
        assert_eq!(
            server.call("GET", "/api/decisions", &nora, None, 200),
            json!([])
        );

        // The starter, a decider of its gate (before and after deciding), a reader role and
        // an auditor read it, and see it listed.
        for (who, token) in [
            ("ines", &ines),
            ("alice", &alice),
            ("rita", &rita),
            ("dave", &dave),
        ] {
            for path in &paths {
                server.call("GET", path, token, None, 200);
            }
            let listed = server.call("GET", "/api/runs", token, None, 200);
            assert_eq!(
                listed[0]["id"],
                run.as_str(),
                "{who} does not see the run listed"
            );
        }
        let shown = server.call("GET", &paths[0], &rita, None, 200);
        assert_eq!(shown["input"]["s"]["id"], "S-9");
        server.call(
            "POST",
            &format!("/api/runs/{run}/gates/release_signoff/approve"),
            &alice,
            Some(json!({ "comment": "ok" })),
            200,
        );
        // bob holds the approvers' role though alice decided: he may still read it.
        let done = server.call("GET", &paths[0], &bob, None, 200);
        assert_eq!(done["output"], "released S-9");
        server.call("GET", &paths[0], &nora, None, 403);

        // The refusals are in the run's trail, at most five of one user a minute; the others
        // are counted in the refusal log.
        for _ in 0..40 {
            server.call("GET", &paths[1], &nora, None, 403);
        }
        let history = server.call("GET", &paths[1], &ines, None, 200);
        let refused: Vec<&Value> = history
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == "request_refused")
            .collect();
        assert_eq!(refused.len(), 5, "{refused:?}");
        assert!(
            refused
                .iter()
                .all(|e| e["data"]["by"] == "nora" && e["data"]["status"] == 403)
        );
        assert_eq!(
            refused[0]["data"]["request"],
            format!("GET /api/runs/{run}")
        );
        let audit = server.call("GET", &paths[2], &dave, None, 200);
        assert_eq!(audit["verified"], true);
        // A child run is read by whoever may read its parent.
        server.call(
            "POST",
            "/api/runs",
            &ines,
            Some(json!({ "workflow": "outer", "input": { "n": 2 } })),
            201,
        );
        let children = server.call("GET", "/api/runs?workflow=inner", &dave, None, 200);
        let child = children[0]["id"]
            .as_str()
            .expect("the child run")
            .to_string();
        assert_eq!(children[0]["started_by"], "workflow");
        let seen = server.call("GET", &format!("/api/runs/{child}"), &ines, None, 200);
        assert_eq!(seen["output"], 9);
        let listed = server.call("GET", "/api/runs?workflow=inner", &ines, None, 200);
        assert_eq!(listed[0]["id"], child.as_str());
        server.call("GET", &format!("/api/runs/{child}"), &nora, None, 403);
        assert_eq!(
            server.call("GET", "/api/runs?workflow=inner", &nora, None, 200),
            json!([])
        );

        let document = server.call("GET", "/openapi.json", &nora, None, 200);
        for path in [
            "/api/runs/{id}",
            "/api/runs/{id}/history",
            "/api/runs/{id}/audit",
        ] {
            let responses = &document["paths"][path]["get"]["responses"];
            assert!(responses["403"].is_object(), "GET {path}: {responses}");
        }
        server.stop();
        let log = server.flowrt(&["audit", "refusals"]);
        assert_eq!(
            counted(&log, "403 nora GET /api/runs/"),
            3 + 1 + 40 - 5,
            "{log}"
        );
    });
}
