//! Delivering a notification when a human step opens or escalates: one attempt at a time.
//!
//! In: a hook of `flow.toml` ([`NotifyHook`]) and the JSON message of a row of the outbox
//! (`store::outbox`). Out: whether the attempt delivered it, or why not, never a panic. A
//! webhook gets an HTTP/1.1 POST through the runtime's one client ([`crate::http_client`]:
//! `http://` or `https://`, with the entry's CA file and client certificate); a command is run
//! with `sh -c` (by [`crate::process`], in a process group of its own) and gets the message on
//! standard input. Each attempt ends by its time limit. Retrying is the outbox's: the
//! [`RetryPolicy`] says how many attempts a row gets and how long it waits between them, and
//! the wait is a durable `next_attempt_at`, so retries survive a restart.

use std::time::{Duration, Instant};

use crate::config::NotifyHook;
use crate::http_client::{self, HttpUrl, Request, SendError, TlsFiles, show};
use crate::process::Failure;

/// How hard to try each hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per hook, at least 1.
    pub attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further failure.
    pub first_backoff: Duration,
    /// The limit on one attempt: connecting, sending and reading the status line and headers, or running
    /// the command (which is killed when it is reached).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, 200 ms then 400 ms backoff, 2 s per attempt.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The longest the attempts of one hook take with this policy, backoffs included.
    pub fn worst_case(&self) -> Duration {
        let attempts = self.attempts.max(1);
        let mut total = self.timeout * attempts;
        for i in 1..attempts {
            total += backoff(self.first_backoff, i);
        }
        total
    }

    /// After `attempts` attempts, the last of which failed: how long to wait before the next
    /// one, or `None` when none is left.
    pub fn after_failure(&self, attempts: u32) -> Option<Duration> {
        (attempts < self.attempts.max(1)).then(|| backoff(self.first_backoff, attempts))
    }
}

fn backoff(first: Duration, failures: u32) -> Duration {
    first.saturating_mul(1u32 << (failures.saturating_sub(1)).min(20))
}

/// One attempt to deliver `message` to `hook`, within `timeout`.
pub fn attempt(
    hook: &NotifyHook,
    message: &serde_json::Value,
    timeout: Duration,
) -> Result<(), String> {
    let body =
        serde_json::to_vec(message).map_err(|e| format!("cannot encode the message: {e}"))?;
    match hook {
        NotifyHook::Webhook { url, tls } => post(url, tls, &body, timeout),
        NotifyHook::Command { command } => run_command(command, &body, timeout),
    }
}

/// One attempt for each (hook, message), in parallel: returns within about `timeout`
/// however many there are. The outcomes are in the order of `jobs`.
pub fn attempt_all(
    jobs: &[(&NotifyHook, &serde_json::Value)],
    timeout: Duration,
) -> Vec<Result<(), String>> {
    match jobs {
        [] => Vec::new(),
        [(hook, message)] => vec![attempt(hook, message, timeout)],
        _ => std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|(hook, message)| scope.spawn(move || attempt(hook, message, timeout)))
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err("the delivery thread failed".to_string()))
                })
                .collect()
        }),
    }
}

/// One POST attempt; `Ok` on a 2xx status line (the body is not read).
fn post(url: &str, tls: &TlsFiles, body: &[u8], timeout: Duration) -> Result<(), String> {
    let url = HttpUrl::parse(url)?;
    let headers = [
        ("Content-Type".to_string(), "application/json".to_string()),
        (
            "User-Agent".to_string(),
            format!("flowrt/{}", env!("CARGO_PKG_VERSION")),
        ),
    ];
    let sent = http_client::send(&Request {
        method: "POST",
        url: &url,
        headers: &headers,
        body: Some(body),
        deadline: Instant::now() + timeout,
        tls,
        read_body: false,
    });
    match sent {
        Ok(response) if (200..300).contains(&response.status) => Ok(()),
        Ok(response) => Err(response.status_line()),
        Err(SendError::Timeout(_)) => Err(format!("no response within {}", show(timeout))),
        Err(other) => Err(other.message().to_string()),
    }
}

/// One run of `sh -c command` (through [`crate::process`]); `Ok` on exit status 0.
fn run_command(command: &str, body: &[u8], timeout: Duration) -> Result<(), String> {
    let ran = crate::process::run(&crate::process::Command {
        command,
        env: &[("FLOW_NOTIFY", "1")],
        stdin: body,
        limit: timeout,
        stdout_cap: None,
    });
    match ran {
        Ok(done) if done.status.success() => Ok(()),
        Ok(done) if done.stderr.is_empty() => Err(done.status.to_string()),
        Ok(done) => Err(format!("{}; stderr: {}", done.status, done.stderr)),
        Err(Failure::Start(e)) => Err(format!("cannot start sh: {e}")),
        Err(Failure::Wait(e)) => Err(format!("cannot wait for the command: {e}")),
        Err(Failure::TimedOut { .. }) => Err(format!("timed out after {}; killed", show(timeout))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::STDERR_TAIL;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc::{self, Receiver};

    /// What the test server saw in one request.
    struct Received {
        head: String,
        body: Vec<u8>,
    }

    /// How the test server answers one connection.
    #[derive(Clone, Copy)]
    enum Answer {
        Status(u16),
        Never,
    }

    /// A real HTTP server on 127.0.0.1 answering the connections in turn as `answers` says, then
    /// stopping. Returns its URL and the requests it received.
    fn server(answers: Vec<Answer>) -> (String, Receiver<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for answer in answers {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i;
                    }
                    let n = stream.read(&mut buf).expect("read head");
                    assert!(n > 0, "connection closed before the end of the head");
                    data.extend_from_slice(&buf[..n]);
                };
                let head = String::from_utf8(data[..head_end].to_vec()).expect("utf8 head");
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().expect("length"))
                    })
                    .expect("a Content-Length header");
                let mut body = data[head_end + 4..].to_vec();
                while body.len() < length {
                    let n = stream.read(&mut buf).expect("read body");
                    assert!(n > 0, "connection closed before the end of the body");
                    body.extend_from_slice(&buf[..n]);
                }
                let _ = tx.send(Received { head, body });
                match answer {
                    Answer::Status(code) => {
                        let reason = if code == 200 {
                            "OK"
                        } else {
                            "Internal Server Error"
                        };
                        let text = format!(
                            "HTTP/1.1 {code} {reason}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        );
                        let _ = stream.write_all(text.as_bytes());
                    }
                    Answer::Never => held.push(stream),
                }
            }
            // Keep unanswered connections open a while, then stop.
            std::thread::sleep(Duration::from_secs(3));
            drop(held);
        });
        (format!("http://127.0.0.1:{port}/hook?gate=release"), rx)
    }

    fn message() -> serde_json::Value {
        serde_json::json!({
            "id": "n1",
            "event": "gate_opened",
            "run": "r-1",
            "gate": "release_signoff",
            "prompt": "Release MSCU1234567? ✓",
            "approvers": ["role:customs"],
        })
    }

    fn webhook(url: &str) -> NotifyHook {
        NotifyHook::Webhook {
            url: url.to_string(),
            tls: TlsFiles::NONE,
        }
    }

    fn command(command: &str) -> NotifyHook {
        NotifyHook::Command {
            command: command.to_string(),
        }
    }

    const LONG: Duration = Duration::from_secs(5);

    #[test]
    fn webhook_posts_the_message_as_json() {
        let (url, rx) = server(vec![Answer::Status(200)]);
        let msg = message();
        assert_eq!(attempt(&webhook(&url), &msg, LONG), Ok(()));
        let got = rx.recv_timeout(Duration::from_secs(5)).expect("a request");
        let body: serde_json::Value = serde_json::from_slice(&got.body).expect("JSON body");
        assert_eq!(body, msg);
        let mut lines = got.head.lines();
        assert_eq!(lines.next(), Some("POST /hook?gate=release HTTP/1.1"));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header");
                (n.to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("content-type"), Some("application/json"));
        assert_eq!(
            header("content-length"),
            Some(got.body.len().to_string().as_str())
        );
        let port = url
            .trim_start_matches("http://127.0.0.1:")
            .split('/')
            .next()
            .expect("port");
        assert_eq!(header("host"), Some(format!("127.0.0.1:{port}").as_str()));
    }

    #[test]
    fn a_webhook_that_answers_500_failed_and_says_the_status_line() {
        let (url, rx) = server(vec![Answer::Status(500)]);
        assert_eq!(
            attempt(&webhook(&url), &message(), LONG),
            Err("HTTP/1.1 500 Internal Server Error".to_string())
        );
        let got = rx.recv_timeout(Duration::from_secs(5)).expect("a request");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&got.body).expect("json"),
            message()
        );
    }

    #[test]
    fn webhook_that_never_answers_times_out() {
        let (url, rx) = server(vec![Answer::Never]);
        let start = Instant::now();
        let out = attempt(&webhook(&url), &message(), Duration::from_millis(300));
        let took = start.elapsed();
        assert_eq!(out, Err("no response within 300ms".to_string()));
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(1800), "{took:?}");
        // The message did arrive; only the answer was missing.
        rx.recv_timeout(Duration::from_secs(1)).expect("a request");
    }

    #[test]
    fn refused_connection_is_reported() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let url = format!("http://127.0.0.1:{port}/hook");
        let error = attempt(&webhook(&url), &message(), LONG).expect_err("refused");
        assert!(
            error.starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
            "{error}"
        );
        assert!(error.to_lowercase().contains("refused"), "{error}");
    }

    #[test]
    fn command_gets_the_message_on_stdin_and_flow_notify() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out_file = dir.path().join("message.json");
        let env_file = dir.path().join("env");
        let cmd = format!(
            "cat > '{}'; printf %s \"$FLOW_NOTIFY\" > '{}'",
            out_file.display(),
            env_file.display()
        );
        assert_eq!(attempt(&command(&cmd), &message(), LONG), Ok(()));
        let written = std::fs::read(&out_file).expect("message written");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&written).expect("json"),
            message()
        );
        assert_eq!(std::fs::read_to_string(&env_file).expect("env"), "1");
    }

    #[test]
    fn failing_command_reports_status_and_stderr() {
        let cmd = "echo 'lots of noise' >&2; echo 'mailer: no route' >&2; exit 3";
        assert_eq!(
            attempt(&command(cmd), &message(), LONG),
            Err("exit status: 3; stderr: lots of noise\nmailer: no route".to_string())
        );
        assert_eq!(
            attempt(&command("exit 2"), &message(), LONG),
            Err("exit status: 2".to_string())
        );
    }

    #[test]
    fn long_stderr_is_cut_to_its_end() {
        let error = attempt(
            &command(
                "i=0; while [ $i -lt 300 ]; do echo line-$i >&2; i=$((i+1)); done; echo LAST >&2; exit 1",
            ),
            &message(),
            LONG,
        )
        .expect_err("it fails");
        assert!(error.ends_with("LAST"), "{error}");
        assert!(error.contains("stderr: …"), "{error}");
        assert!(error.len() < STDERR_TAIL + 100, "{}", error.len());
    }

    #[test]
    fn hanging_command_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        // The shell starts a grandchild that would outlive a kill of the shell alone.
        let cmd = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
        let start = Instant::now();
        let out = attempt(&command(&cmd), &message(), Duration::from_millis(300));
        let took = start.elapsed();
        assert_eq!(out, Err("timed out after 300ms; killed".to_string()));
        assert!(took < Duration::from_millis(1800), "{took:?}");
        let pid = std::fs::read_to_string(&pid_file).expect("pid");
        let stat = format!("/proc/{}/stat", pid.trim());
        let gone = (0..100).any(|_| {
            let alive = std::fs::read_to_string(&stat)
                .map(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
                .unwrap_or(false);
            if alive {
                std::thread::sleep(Duration::from_millis(20));
            }
            !alive
        });
        assert!(gone, "the sleep started by the command is still running");
    }

    #[test]
    fn command_that_ignores_a_large_message_does_not_block() {
        let big = serde_json::json!({ "context": "x".repeat(1 << 20) });
        assert_eq!(attempt(&command("exit 0"), &big, LONG), Ok(()));
    }

    #[test]
    fn attempts_are_made_in_parallel_and_in_order() {
        let (url, rx) = server(vec![Answer::Status(200)]);
        let hooks = [
            command("sleep 5"),
            webhook(&url),
            command("sleep 5"),
            command("true"),
            command("sleep 5"),
            command("sleep 5"),
        ];
        let msg = message();
        let jobs: Vec<(&NotifyHook, &serde_json::Value)> =
            hooks.iter().map(|h| (h, &msg)).collect();
        let start = Instant::now();
        let out = attempt_all(&jobs, Duration::from_millis(500));
        let took = start.elapsed();
        // One after the other, the four hung commands would take at least 2 s.
        assert!(took < Duration::from_millis(1500), "{took:?}");
        let delivered: Vec<bool> = out.iter().map(Result::is_ok).collect();
        assert_eq!(delivered, [false, true, false, true, false, false]);
        rx.recv_timeout(Duration::from_secs(1)).expect("a request");
        assert!(attempt_all(&[], LONG).is_empty());
    }

    #[test]
    fn the_policy_says_how_long_to_wait_and_when_to_stop() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.attempts, 3);
        assert_eq!(policy.first_backoff, Duration::from_millis(200));
        assert_eq!(policy.timeout, Duration::from_secs(2));
        assert_eq!(policy.worst_case(), Duration::from_millis(6000 + 200 + 400));
        assert_eq!(policy.after_failure(1), Some(Duration::from_millis(200)));
        assert_eq!(policy.after_failure(2), Some(Duration::from_millis(400)));
        assert_eq!(policy.after_failure(3), None);
        // An attempt interrupted by a crash is counted: a row can come back past the last.
        assert_eq!(policy.after_failure(4), None);
        let once = RetryPolicy {
            attempts: 0,
            ..policy
        };
        assert_eq!(once.after_failure(1), None);
    }

    #[test]
    fn unresolvable_host_is_an_error_not_a_panic() {
        let out = attempt(
            &webhook("http://no-such-host.invalid/hook"),
            &message(),
            Duration::from_millis(500),
        );
        assert!(out.is_err());
    }
}
