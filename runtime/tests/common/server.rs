//! A real `flowrt serve` for tests: a project directory with a program and a `flow.toml`, a
//! database on the store under test, the server on a free port of 127.0.0.1, raw HTTP/1.1
//! requests to it, and tokens made with `flowrt token create`.

use super::{FLOWRT, Store, TestDb};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A served project; the server is killed when dropped.
pub struct Served {
    // Dropped after the server is stopped, before the directory it may live in.
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub addr: SocketAddr,
    /// Arguments given to `flowrt serve` besides the address and the program.
    pub serve_args: Vec<String>,
    /// Environment variables of every `flowrt` the project runs (`FLOW_LEASE_MS`, …).
    pub env: Vec<(String, String)>,
}

impl Served {
    /// Writes `program.flow` and `flow.toml`, then starts the server.
    pub fn start(store: &Store, program: &str, config: &str, serve_args: &[&str]) -> Served {
        Served::start_with_env(store, program, config, serve_args, &[])
    }

    /// [`Served::start`] with environment variables for `flowrt`.
    pub fn start_with_env(
        store: &Store,
        program: &str,
        config: &str,
        serve_args: &[&str],
        env: &[(&str, &str)],
    ) -> Served {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = TestDb::create(store, dir.path());
        std::fs::write(dir.path().join("flow.toml"), config).expect("config");
        std::fs::write(dir.path().join("program.flow"), program).expect("program");
        let mut served = Served {
            db,
            dir,
            child: None,
            addr: free_addr(),
            serve_args: serve_args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        served.spawn();
        served
    }

    /// `flowrt` in the project, on its database and configuration.
    pub fn flowrt(&self) -> Command {
        let mut command = Command::new(FLOWRT);
        self.db.apply(&mut command);
        command
            .current_dir(self.dir.path())
            .arg("--db")
            .arg(self.db.spec())
            .arg("--config")
            .arg(self.dir.path().join("flow.toml"))
            .env_remove("FLOW_DB")
            .env_remove("FLOW_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Starts the server and waits for `/health`.
    pub fn spawn(&mut self) {
        let child = self
            .flowrt()
            .args(["serve", "--addr", &self.addr.to_string()])
            .args(&self.serve_args)
            .arg("program.flow")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("flowrt serve starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((200, _)) = self.try_request("GET", "/health", None, None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("flowrt serve did not answer /health within 30 s");
    }

    /// `flowrt token create USER EXTRA…`: the token it printed.
    pub fn token(&self, user: &str, extra: &[&str]) -> String {
        let mut args = vec![user];
        args.extend_from_slice(extra);
        self.create_token(&args)
    }

    /// `flowrt token create ARGS`: the token it printed.
    pub fn create_token(&self, args: &[&str]) -> String {
        let output = self
            .flowrt()
            .args(["token", "create"])
            .args(args)
            .output()
            .expect("flowrt token create runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let token = String::from_utf8(output.stdout)
            .expect("UTF-8")
            .trim()
            .to_string();
        assert!(token.starts_with("flow_"), "{token}");
        token
    }

    /// One request on a connection of its own: the status and the body.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.unwrap_or("");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// A request that must get `expected`; returns the JSON body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        expected: u16,
    ) -> Value {
        let body = body.map(|b| b.to_string());
        let (status, text) = self
            .try_request(method, path, token, body.as_deref())
            .expect("the server answers");
        assert_eq!(status, expected, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    /// The kinds of a run's history (`GET /api/runs/{id}/history`), in order.
    pub fn history_kinds(&self, token: &str, run: &str) -> Vec<String> {
        let history = self.call(
            "GET",
            &format!("/api/runs/{run}/history"),
            Some(token),
            None,
            200,
        );
        history
            .as_array()
            .expect("a history is a list")
            .iter()
            .map(|e| e["kind"].as_str().expect("an event kind").to_string())
            .collect()
    }

    /// Polls `GET /api/runs/{id}` until the run's status is `status` (within `within`).
    pub fn wait_for_status(&self, token: &str, run: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let shown = self.call("GET", &format!("/api/runs/{run}"), Some(token), None, 200);
            if shown["status"] == status {
                return shown;
            }
            assert!(
                Instant::now() < deadline,
                "run {run} is not {status} after {within:?}: {shown}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        child.wait().expect("flowrt serve exits")
    }

    /// Kills the server at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}
