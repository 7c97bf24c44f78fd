//! Tool bindings: how a tool call reaches the outside world. `exec` runs a local command;
//! `http` and `llm` come with their issue. Every call carries an idempotency key that stays
//! the same when a step is retried after a crash.

pub mod exec;

/// Why a tool call failed; becomes a catchable `Error` in the workflow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolFailure {
    /// One of the stdlib error kinds: `ToolError`, `InvalidOutput`, `Timeout`.
    pub kind: &'static str,
    pub message: String,
}

/// What a call needs besides its arguments.
#[derive(Clone, Debug)]
pub struct CallContext {
    pub run_id: String,
    pub idempotency_key: String,
    /// Milliseconds the call may take (from an enclosing `timeout`), if bounded.
    pub time_limit_ms: Option<u64>,
}
