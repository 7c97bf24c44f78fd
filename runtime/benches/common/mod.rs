//! What the benchmarks that drive a real `flowrt serve` share: a number from the environment,
//! a free port, waiting for the server to listen, and one HTTP/1.1 request on a fresh
//! connection.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// `name` from the environment, or `default` when unset or not a number.
pub fn env_number<N: std::str::FromStr>(name: &str, default: N) -> N {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Waits until something listens on `addr` (panics after `within`).
pub fn wait_for_listener(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request on a fresh connection: (status, body).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connects");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The `p` quantile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A project served by the real `flowrt serve` for a benchmark: `program.flow` and a
/// `flow.toml` with the clerk `ines` in a temporary directory, the database beside them, a
/// token for `ines`, and the server on a free port (killed when dropped).
pub struct Served {
    pub dir: tempfile::TempDir,
    pub db: std::path::PathBuf,
    pub addr: SocketAddr,
    pub token: String,
    server: std::process::Child,
}

impl Served {
    /// `files` are written into the project first (a tool script, …); `serve_args` go to
    /// `flowrt serve` before the program.
    pub fn start(
        flowrt: &str,
        program: &str,
        files: &[(&str, String)],
        serve_args: &[&str],
    ) -> Served {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("program.flow"), program).expect("program");
        std::fs::write(
            dir.path().join("flow.toml"),
            "[users.ines]\nroles = [\"clerk\"]\n",
        )
        .expect("config");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("a project file");
        }
        let db = dir.path().join("flow.db");
        let command = || {
            let mut command = Command::new(flowrt);
            command
                .current_dir(dir.path())
                .arg("--db")
                .arg(&db)
                .arg("--config")
                .arg(dir.path().join("flow.toml"));
            command
        };
        let created = command()
            .args(["token", "create", "ines"])
            .output()
            .expect("flowrt token create");
        let token = String::from_utf8(created.stdout)
            .expect("UTF-8")
            .trim()
            .to_string();
        let addr = free_addr();
        let server = command()
            .args(["serve", "--addr", &addr.to_string()])
            .args(serve_args)
            .arg("program.flow")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("flowrt serve");
        wait_for_listener(addr, Duration::from_secs(60));
        Served {
            dir,
            db,
            addr,
            token,
            server,
        }
    }

    /// Stops the server (SIGKILL: what it committed is on disk).
    pub fn stop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
    }
}
