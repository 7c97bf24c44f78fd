//! The one runner of the shell commands flowrt starts: `exec` tools and notification commands.
//!
//! In: a command line for `sh -c`, environment variables, the bytes for its standard input, a
//! time limit, and how much of standard output to keep (none: it goes to `/dev/null`). Out:
//! the exit status, the start of standard output and the end of standard error — or why the
//! command did not finish ([`Failure`]).
//!
//! The command runs in a process group of its own, so that everything it starts can be
//! stopped with it. It has finished when its shell has exited and its standard output (when
//! kept) is closed: a background process that still holds that output may still write to it,
//! so it is part of the call. At the deadline the whole group is killed — the shell, and every
//! process it started, even when the shell itself has already exited — and the result is
//! [`Failure::TimedOut`]. A process that only holds standard error once the command has
//! finished gets a short grace to let go of it, then its group is killed too, so that no
//! command leaves processes writing into flowrt's pipes behind. Standard input is written, and
//! both outputs are read, on threads of their own: a command that reads nothing or writes a
//! lot never blocks flowrt.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

/// At most this much of the end of standard error is kept.
pub const STDERR_TAIL: usize = 500;

/// How long a process left holding standard error after the command finished may keep it,
/// and how long the readers are waited for after a kill.
const GRACE: Duration = Duration::from_millis(200);

/// How often the runner looks at the command while it runs.
const POLL: Duration = Duration::from_millis(5);

/// One command to run.
pub struct Command<'a> {
    /// Given to `sh -c`.
    pub command: &'a str,
    pub env: &'a [(&'a str, &'a str)],
    pub stdin: &'a [u8],
    /// The whole group is killed when this has passed.
    pub limit: Duration,
    /// Keep up to this many bytes of standard output; `None` sends it to `/dev/null`.
    pub stdout_cap: Option<usize>,
}

/// A command that ran to its end (whatever its exit status).
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// The start of standard output, at most the cap.
    pub stdout: Vec<u8>,
    /// Standard output was longer than the cap (reading stopped there).
    pub stdout_overflowed: bool,
    /// The end of standard error, trimmed; starts with `…` when it was cut.
    pub stderr: String,
}

/// Why a command did not run to its end.
#[derive(Debug)]
pub enum Failure {
    /// `sh` could not be started.
    Start(std::io::Error),
    /// Waiting for the shell failed; the group was killed.
    Wait(std::io::Error),
    /// The time limit passed; the group was killed. `shell_exited`: the shell had exited
    /// already, but a process it started still held standard output.
    TimedOut { shell_exited: bool },
}

/// Runs the command to its end, or kills its group at the deadline.
pub fn run(command: &Command) -> Result<Finished, Failure> {
    let deadline = Instant::now() + command.limit;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(command.command)
        .envs(command.env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(if command.stdout_cap.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(Failure::Start)?;

    if let Some(mut stdin) = child.stdin.take() {
        let input = command.stdin.to_vec();
        std::thread::spawn(move || {
            // A command that does not read its input closes the pipe early: that is fine.
            let _ = stdin.write_all(&input);
        });
    }
    let stdout = match (child.stdout.take(), command.stdout_cap) {
        (Some(pipe), Some(cap)) => Some(read_on_thread(pipe, Keep::Head(cap))),
        _ => None,
    };
    let stderr = child
        .stderr
        .take()
        .map(|pipe| read_on_thread(pipe, Keep::Tail(STDERR_TAIL)));

    let (status, out) = match wait(&mut child, stdout.as_ref(), deadline) {
        Ok(done) => done,
        Err(failure) => {
            kill_group(&mut child);
            return Err(failure);
        }
    };
    let err = match stderr {
        None => Captured::default(),
        Some(rx) => match rx.recv_timeout(GRACE) {
            Ok(err) => err,
            Err(_) => {
                // Something the command started still holds standard error: stop it, and
                // take what it wrote if its reader sees the pipe close soon enough.
                kill_group(&mut child);
                rx.recv_timeout(GRACE).unwrap_or_default()
            }
        },
    };
    Ok(Finished {
        status,
        stdout: out.bytes,
        stdout_overflowed: out.cut,
        stderr: err.tail_text(),
    })
}

/// Waits until the shell has exited and standard output (when kept) is closed, or until the
/// deadline.
fn wait(
    child: &mut Child,
    stdout: Option<&Receiver<Captured>>,
    deadline: Instant,
) -> Result<(ExitStatus, Captured), Failure> {
    let mut status = None;
    let mut out = if stdout.is_none() {
        Some(Captured::default())
    } else {
        None
    };
    loop {
        if status.is_none() {
            status = child.try_wait().map_err(Failure::Wait)?;
        }
        if out.is_none()
            && let Some(rx) = stdout
        {
            match rx.try_recv() {
                Ok(captured) => out = Some(captured),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => out = Some(Captured::default()),
            }
        }
        (status, out) = match (status, out) {
            (Some(status), Some(out)) => return Ok((status, out)),
            waiting => waiting,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(Failure::TimedOut {
                shell_exited: status.is_some(),
            });
        }
        std::thread::sleep((deadline - now).min(POLL));
    }
}

/// Kills the command's whole process group (the shell is its leader, so the group's id is
/// the shell's pid; the group outlives the shell while anything it started runs), then reaps
/// the shell. `kill` through `sh`: flowrt forbids `unsafe`, and so a direct `killpg`.
pub fn kill_group(child: &mut Child) {
    let group = child.id();
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -KILL -{group} 2>/dev/null"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Which part of an output is kept.
#[derive(Clone, Copy)]
enum Keep {
    /// The first n bytes; reading stops after them.
    Head(usize),
    /// The last n bytes; everything is read.
    Tail(usize),
}

/// What was read from one pipe.
#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    /// Some of the output is not in `bytes`.
    cut: bool,
}

impl Captured {
    /// The kept end of the output as text: trimmed, `…` in front when it was cut.
    fn tail_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        // A cut may fall inside a character: drop its remains.
        let text = text.trim().trim_start_matches('\u{fffd}').trim_start();
        if self.cut && !text.is_empty() {
            format!("…{text}")
        } else {
            text.to_string()
        }
    }
}

/// Reads the pipe on a thread of its own until it closes (or, for a head, until the cap);
/// the receiver gets what was kept.
fn read_on_thread(mut pipe: impl Read + Send + 'static, keep: Keep) -> Receiver<Captured> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut captured = Captured::default();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => match keep {
                    Keep::Head(cap) => {
                        let room = cap.saturating_sub(captured.bytes.len());
                        captured.bytes.extend_from_slice(&buf[..n.min(room)]);
                        if n > room {
                            captured.cut = true;
                            break;
                        }
                    }
                    Keep::Tail(cap) => {
                        captured.bytes.extend_from_slice(&buf[..n]);
                        if captured.bytes.len() > 2 * cap {
                            let excess = captured.bytes.len() - cap;
                            captured.bytes.drain(..excess);
                            captured.cut = true;
                        }
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if let Keep::Tail(cap) = keep
            && captured.bytes.len() > cap
        {
            let excess = captured.bytes.len() - cap;
            captured.bytes.drain(..excess);
            captured.cut = true;
        }
        let _ = tx.send(captured);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_sh(command: &str, limit_ms: u64) -> Result<Finished, Failure> {
        run(&Command {
            command,
            env: &[("FLOW_TEST_VAR", "v1")],
            stdin: b"{\"a\":1}",
            limit: Duration::from_millis(limit_ms),
            stdout_cap: Some(1 << 20),
        })
    }

    /// Whether the process is gone: no such pid, or a zombie waiting for its reaper.
    fn gone(pid: &str) -> bool {
        let alive = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("kill -0 {pid} 2>/dev/null"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    == Some("Z")
            })
            .unwrap_or(false);
        !alive || zombie
    }

    /// Waits up to 5 s for the process whose pid is in `file` to be gone.
    fn becomes_gone(file: &std::path::Path) -> bool {
        let pid = std::fs::read_to_string(file).expect("the command wrote its pid");
        let pid = pid.trim();
        assert!(
            !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()),
            "{pid}"
        );
        (0..250).any(|_| {
            let gone = gone(pid);
            if !gone {
                std::thread::sleep(Duration::from_millis(20));
            }
            gone
        })
    }

    #[test]
    fn passes_stdin_and_environment_and_keeps_stdout_and_status() {
        let done = run_sh(
            r#"read input; printf '%s %s' "$input" "$FLOW_TEST_VAR"; exit 4"#,
            5000,
        )
        .expect("it finishes");
        assert_eq!(done.status.code(), Some(4));
        assert_eq!(String::from_utf8_lossy(&done.stdout), r#"{"a":1} v1"#);
        assert!(!done.stdout_overflowed);
        assert_eq!(done.stderr, "");
    }

    #[test]
    fn at_the_deadline_the_whole_group_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid = dir.path().join("pid");
        let command = format!("sleep 30 & echo $! > '{}'; wait", pid.display());
        let failure = run_sh(&command, 300).expect_err("it times out");
        assert!(
            matches!(
                failure,
                Failure::TimedOut {
                    shell_exited: false
                }
            ),
            "{failure:?}"
        );
        assert!(becomes_gone(&pid), "the sleep the shell started still runs");
    }

    #[test]
    fn a_background_process_holding_stdout_times_out_at_the_deadline_and_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid = dir.path().join("pid");
        let command = format!("sleep 30 & echo $! > '{}'; echo 42", pid.display());
        let started = Instant::now();
        let failure = run_sh(&command, 500).expect_err("it times out");
        assert!(
            matches!(failure, Failure::TimedOut { shell_exited: true }),
            "{failure:?}"
        );
        // Not the 30 s of the sleep.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(becomes_gone(&pid), "the background sleep still runs");
    }

    #[test]
    fn a_background_process_holding_only_stderr_is_killed_after_a_grace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid = dir.path().join("pid");
        let command = format!(
            "sleep 30 > /dev/null & echo $! > '{}'; echo late >&2; echo 42",
            pid.display()
        );
        let done = run_sh(&command, 20_000).expect("the shell's work is done");
        assert!(done.status.success());
        assert_eq!(String::from_utf8_lossy(&done.stdout), "42\n");
        assert_eq!(done.stderr, "late");
        assert!(becomes_gone(&pid), "the background sleep still runs");
    }

    #[test]
    fn stdout_is_kept_up_to_its_cap() {
        let done = run(&Command {
            command: "i=0; while [ $i -lt 2000 ]; do echo 0123456789; i=$((i+1)); done",
            env: &[],
            stdin: b"",
            limit: Duration::from_secs(20),
            stdout_cap: Some(1000),
        })
        .expect("it finishes");
        assert_eq!(done.stdout.len(), 1000);
        assert!(done.stdout_overflowed);
    }

    #[test]
    fn stderr_keeps_its_end() {
        let done = run_sh(
            "i=0; while [ $i -lt 300 ]; do echo line-$i >&2; i=$((i+1)); done; echo LAST >&2",
            20_000,
        )
        .expect("it finishes");
        assert!(done.stderr.starts_with('…'), "{}", done.stderr);
        assert!(done.stderr.ends_with("line-299\nLAST"), "{}", done.stderr);
        assert!(done.stderr.len() <= STDERR_TAIL + '…'.len_utf8());
    }

    #[test]
    fn a_command_that_ignores_a_large_input_does_not_block() {
        let input = vec![b'x'; 4 << 20];
        let done = run(&Command {
            command: "exit 0",
            env: &[],
            stdin: &input,
            limit: Duration::from_secs(20),
            stdout_cap: None,
        })
        .expect("it finishes");
        assert!(done.status.success());
        assert!(done.stdout.is_empty());
    }
}
