//! The `exec` binding: `tool t(…) -> T via exec "command"`.
//!
//! The command runs through `sh -c` in flowrt's working directory, with the arguments as
//! one JSON object on standard input (`{"param": value, …}`) and the environment variables
//! `FLOW_RUN_ID` and `FLOW_IDEMPOTENCY_KEY`. It must print its result as JSON on standard
//! output and exit 0. A non-zero exit is a retryable `ToolError` carrying the end of standard
//! error; a command that is not found (exit status 127) is not retryable.

use super::{CallContext, ToolFailure};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The most of a tool's output that is kept in a message.
const EXCERPT: usize = 500;

pub fn call(
    tool: &str,
    command: &str,
    input: &str,
    context: &CallContext,
) -> Result<String, ToolFailure> {
    let failure = |kind, message: String| ToolFailure {
        kind,
        message,
        retryable: true,
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("FLOW_RUN_ID", &context.run_id)
        .env("FLOW_IDEMPOTENCY_KEY", &context.idempotency_key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            failure(
                "ToolError",
                format!("tool `{tool}`: cannot start `sh -c {command}`: {e}"),
            )
        })?;

    // Feed stdin and drain stdout/stderr on threads, so a chatty tool never blocks on a
    // full pipe while we wait for it.
    let mut stdin = child.stdin.take();
    let input = input.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            // A tool that does not read its input closes the pipe early; that is fine.
            let _ = stdin.write_all(&input);
        }
    });
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || read_all(stdout));
    let err_reader = std::thread::spawn(move || read_all(stderr));

    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                return Err(failure(
                    "ToolError",
                    format!("tool `{tool}`: waiting for it failed: {e}"),
                ));
            }
        }
        if let Some(limit) = context.time_limit_ms
            && started.elapsed() >= Duration::from_millis(limit)
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failure(
                "Timeout",
                format!("tool `{tool}` did not finish within {limit} ms and was stopped"),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = writer.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();

    if !status.success() {
        let detail = excerpt(&stderr);
        let code = status
            .code()
            .map(|c| format!("exit status {c}"))
            .unwrap_or_else(|| "killed by a signal".to_string());
        if status.code() == Some(127) {
            return Err(ToolFailure::tool_error(
                format!(
                    "tool `{tool}`: command not found: `{command}`{}",
                    with_detail(&detail)
                ),
                false,
            ));
        }
        return Err(failure(
            "ToolError",
            format!("tool `{tool}` failed with {code}{}", with_detail(&detail)),
        ));
    }
    String::from_utf8(stdout).map_err(|_| {
        failure(
            "InvalidOutput",
            format!("tool `{tool}` printed output that is not UTF-8"),
        )
    })
}

fn read_all(pipe: Option<impl Read>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut out);
    }
    out
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.chars().count() <= EXCERPT {
        return text.to_string();
    }
    let tail: String = text
        .chars()
        .rev()
        .take(EXCERPT)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

fn with_detail(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(limit: Option<u64>) -> CallContext {
        CallContext {
            run_id: "run-1".into(),
            idempotency_key: "run-1:3".into(),
            time_limit_ms: limit,
        }
    }

    #[test]
    fn passes_input_and_environment_and_returns_stdout() {
        let out = call(
            "t",
            r#"read input; printf '{"in":%s,"key":"%s"}' "$input" "$FLOW_IDEMPOTENCY_KEY""#,
            r#"{"a":1}"#,
            &context(None),
        );
        assert_eq!(out.as_deref(), Ok(r#"{"in":{"a":1},"key":"run-1:3"}"#));
    }

    #[test]
    fn failures_name_the_tool_and_keep_stderr() {
        let err = call("release", "echo boom >&2; exit 3", "{}", &context(None))
            .expect_err("the call fails");
        assert_eq!(err.kind, "ToolError");
        assert!(err.retryable);
        assert!(
            err.message.contains("`release`")
                && err.message.contains("exit status 3")
                && err.message.contains("boom"),
            "{}",
            err.message
        );
        let missing =
            call("t", "./no-such-tool-here", "{}", &context(None)).expect_err("the call fails");
        assert!(
            missing.message.contains("command not found"),
            "{}",
            missing.message
        );
        assert!(!missing.retryable);
    }

    #[test]
    fn a_time_limit_stops_the_tool() {
        let err = call("slow", "sleep 5", "{}", &context(Some(100))).expect_err("the call fails");
        assert_eq!(err.kind, "Timeout");
        assert!(err.retryable);
    }
}
