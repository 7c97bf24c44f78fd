//! The `exec` binding: `tool t(…) -> T via exec "command"`.
//!
//! The command runs through `sh -c` in flowrt's working directory, with the arguments as
//! one JSON object on standard input (`{"param": value, …}`) and the environment variables
//! `FLOW_RUN_ID` and `FLOW_IDEMPOTENCY_KEY`. It must print its result as JSON on standard
//! output and exit 0. A non-zero exit is a retryable `ToolError` carrying the end of standard
//! error; a command that is not found (exit status 127) is not retryable.
//!
//! Every call has a time limit: the enclosing `timeout` block's, the configured one
//! (`[tools.NAME] timeout`, else `[exec] timeout`), or [`DEFAULT_TIMEOUT_MS`], whichever is
//! shortest. The command runs in a process group of its own ([`crate::process`]); at the
//! limit the whole group is killed and the call fails with a retryable `Timeout`.

use super::{AnswerCode, CallContext, ToolFailure};
use crate::process::{self, Failure};
use std::time::Duration;

/// The time limit of one call when neither a `timeout` block nor `flow.toml` gives one.
pub const DEFAULT_TIMEOUT_MS: u64 = 5 * 60_000;

/// The most of a tool's standard output flowrt reads.
const MAX_OUTPUT: usize = 16 << 20;

/// Makes one call. `configured_ms` is the time limit `flow.toml` gives the tool, if any.
pub fn call(
    tool: &str,
    command: &str,
    input: &str,
    context: &CallContext,
    configured_ms: Option<u64>,
) -> Result<String, ToolFailure> {
    let limit = super::http::time_limit(context, configured_ms, DEFAULT_TIMEOUT_MS);
    let ran = process::run(&process::Command {
        command,
        env: &[
            ("FLOW_RUN_ID", &context.run_id),
            ("FLOW_IDEMPOTENCY_KEY", &context.idempotency_key),
        ],
        stdin: input.as_bytes(),
        limit: Duration::from_millis(limit.0),
        stdout_cap: Some(MAX_OUTPUT),
    });
    let done = match ran {
        Ok(done) => done,
        Err(Failure::Start(e)) => {
            return Err(ToolFailure::tool_error(
                format!("tool `{tool}`: cannot start `sh -c {command}`: {e}"),
                true,
            ));
        }
        Err(Failure::Wait(e)) => {
            return Err(ToolFailure::tool_error(
                format!("tool `{tool}`: waiting for it failed: {e}; it was stopped"),
                true,
            ));
        }
        Err(Failure::TimedOut { shell_exited }) => {
            let why = if shell_exited {
                " (its shell had exited, but a process it started in the background still \
                 held its standard output: redirect that process's output, like `cmd > /dev/null 2>&1 &`)"
            } else {
                ""
            };
            return Err(timed_out(tool, &limit.1, why));
        }
    };

    if !done.status.success() {
        let detail = with_detail(&done.stderr);
        if done.status.code() == Some(127) {
            return Err(ToolFailure::tool_error(
                format!("tool `{tool}`: command not found: `{command}`{detail}"),
                false,
            ));
        }
        let failure = exited(tool, done.status.code(), &done.stderr);
        return Err(match done.status.code() {
            Some(code) => {
                let body = serde_json::from_slice::<serde_json::Value>(&done.stdout).ok();
                failure.answered(AnswerCode::Exit(i64::from(code)), body)
            }
            None => failure,
        });
    }
    if done.stdout_overflowed {
        return Err(ToolFailure::invalid_output(format!(
            "tool `{tool}` printed more than the {MAX_OUTPUT} bytes of output flowrt reads"
        )));
    }
    String::from_utf8(done.stdout).map_err(|_| {
        ToolFailure::invalid_output(format!("tool `{tool}` printed output that is not UTF-8"))
    })
}

/// A command that exited with `code` (none: killed by a signal), its standard error as the
/// detail: a retryable `ToolError`.
pub(crate) fn exited(tool: &str, code: Option<i32>, stderr: &str) -> ToolFailure {
    let code = code
        .map(|c| format!("exit status {c}"))
        .unwrap_or_else(|| "killed by a signal".to_string());
    ToolFailure::tool_error(
        format!("tool `{tool}` failed with {code}{}", with_detail(stderr)),
        true,
    )
}

/// A command still running at its time limit (`limit` says which one).
pub(crate) fn timed_out(tool: &str, limit: &str, why: &str) -> ToolFailure {
    ToolFailure::timeout(format!(
        "tool `{tool}` did not finish within {limit}{why}; it was stopped with every process it started"
    ))
}

/// A command whose standard output is not JSON.
pub(crate) fn not_json(tool: &str, error: &str, output: &str) -> ToolFailure {
    let output = output.trim();
    let cut: String = output.chars().take(200).collect();
    let shown = if cut.len() < output.len() {
        format!("{cut}…")
    } else {
        cut
    };
    ToolFailure::invalid_output(format!(
        "tool `{tool}` printed output that is not JSON ({error}): {shown}"
    ))
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
            None,
        );
        assert_eq!(out.as_deref(), Ok(r#"{"in":{"a":1},"key":"run-1:3"}"#));
    }

    #[test]
    fn failures_name_the_tool_and_keep_stderr() {
        let err = call(
            "release",
            "echo boom >&2; exit 3",
            "{}",
            &context(None),
            None,
        )
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
        let missing = call("t", "./no-such-tool-here", "{}", &context(None), None)
            .expect_err("the call fails");
        assert!(
            missing.message.contains("command not found"),
            "{}",
            missing.message
        );
        assert!(!missing.retryable);
    }

    #[test]
    fn a_time_limit_stops_the_tool() {
        let err =
            call("slow", "sleep 5", "{}", &context(Some(100)), None).expect_err("the call fails");
        assert_eq!(err.kind, "Timeout");
        assert!(err.retryable);
        assert!(
            err.message
                .contains("the time left in its `timeout` block (100ms)"),
            "{}",
            err.message
        );
        // The configured limit applies when it is the shorter one, and says so.
        let err = call("slow", "sleep 5", "{}", &context(Some(60_000)), Some(150))
            .expect_err("the call fails");
        assert_eq!(err.kind, "Timeout");
        assert!(
            err.message.contains("its configured timeout of 150ms"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_background_process_holding_stdout_ends_in_a_timeout_at_the_limit() {
        let started = std::time::Instant::now();
        let err = call("bg", "sleep 30 & echo 42", "{}", &context(None), Some(300))
            .expect_err("the call fails");
        assert_eq!(err.kind, "Timeout", "{}", err.message);
        assert!(err.message.contains("in the background"), "{}", err.message);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
