//! Tool bindings: how a tool call reaches the outside world. `exec` runs a local command,
//! `http` calls a JSON API, `llm` asks an OpenAI-compatible chat-completions endpoint for a
//! typed answer. Every call carries an idempotency key that stays the same when a step is
//! retried, after a failure or after a crash.
//!
//! A binding returns JSON; the engine validates it against the tool's declared return type.
//! A failure is a [`ToolFailure`]: its kind (`ToolError`, `InvalidOutput`, `Timeout`) and
//! whether trying again may help ([`ToolFailure::retryable`]), which `retry` honours.

use crate::vm::Value;

pub mod exec;
pub mod http;
pub mod llm;

/// Why a tool call failed; becomes a catchable `Error` in the workflow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolFailure {
    /// One of the stdlib error kinds: `ToolError`, `InvalidOutput`, `Timeout`.
    pub kind: &'static str,
    pub message: String,
    /// Whether trying again may succeed: a connection error, a 429 or 5xx status, invalid
    /// output or a time-out may pass; a 4xx or a missing configuration will not.
    pub retryable: bool,
    /// The answer the failure is, when there was one: the HTTP status or exit status and the
    /// body — what a tool's `raises NotFound on 404` turns into a named error.
    pub answer: Option<Answer>,
}

/// A tool's answer that was a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub code: AnswerCode,
    /// The body (HTTP) or standard output (exec) as JSON, when it was JSON; an HTTP
    /// `Retry-After` header is added to it as `retry_after` (a duration) unless it names one.
    pub body: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerCode {
    Status(i64),
    Exit(i64),
    /// An `llm` tool's model declined to answer; the body is `{"reason": …}`.
    Refusal,
}

impl ToolFailure {
    /// A `ToolError`.
    pub fn tool_error(message: impl Into<String>, retryable: bool) -> ToolFailure {
        ToolFailure {
            kind: "ToolError",
            message: message.into(),
            retryable,
            answer: None,
        }
    }

    /// An `InvalidOutput` (retryable: a second answer may be valid).
    pub fn invalid_output(message: impl Into<String>) -> ToolFailure {
        ToolFailure {
            kind: "InvalidOutput",
            message: message.into(),
            retryable: true,
            answer: None,
        }
    }

    /// A `Timeout` (retryable).
    pub fn timeout(message: impl Into<String>) -> ToolFailure {
        ToolFailure {
            kind: "Timeout",
            message: message.into(),
            retryable: true,
            answer: None,
        }
    }

    /// The same failure, with the answer it was.
    pub fn answered(mut self, code: AnswerCode, body: Option<serde_json::Value>) -> ToolFailure {
        self.answer = Some(Answer { code, body });
        self
    }
}

/// What a call needs besides its arguments.
#[derive(Clone, Debug)]
pub struct CallContext {
    pub run_id: String,
    pub idempotency_key: String,
    /// Milliseconds the call may take (from an enclosing `timeout`), if bounded.
    pub time_limit_ms: Option<u64>,
}

/// The outcome of an `http` or `llm` call: the JSON it returned (not yet validated against
/// the declared type), and what the history should record about the call besides its input
/// and output (the request line and status; the model, prompt and raw reply). The record is
/// already free of secrets.
#[derive(Clone, Debug)]
pub struct Called {
    pub result: Result<serde_json::Value, ToolFailure>,
    pub record: serde_json::Map<String, serde_json::Value>,
}

/// Values that must never be recorded or shown: resolved header values, API keys and the
/// environment variables they were read from.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    values: Vec<String>,
}

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Shorter values are not redacted: replacing every `fr` or `1` in a message would make it
/// unreadable, and a credential is never that short.
const SHORTEST_SECRET: usize = 4;

impl Secrets {
    pub fn add(&mut self, value: &str) {
        let value = value.trim();
        if value.chars().count() >= SHORTEST_SECRET && !self.values.iter().any(|v| v == value) {
            self.values.push(value.to_string());
            // Longest first, so that a secret containing another is replaced whole.
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// `text` with every secret replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for value in &self.values {
            if text.contains(value.as_str()) {
                text = text.replace(value.as_str(), REDACTED);
            }
        }
        text
    }

    /// The `Secret` values a run holds: everything on its stack and in its local slots
    /// (a secret it received, read from a tool, or made from text).
    pub fn held_by(machine: &crate::vm::Machine) -> Secrets {
        let mut secrets = Secrets::default();
        let fiber = &machine.fiber;
        for value in fiber.stack.iter().chain(&fiber.locals) {
            secrets.add_held(value);
        }
        secrets
    }

    fn add_held(&mut self, value: &Value) {
        match value {
            Value::Secret(clear) => self.add(clear),
            Value::List(items) => items.iter().for_each(|v| self.add_held(v)),
            Value::Record(fields) => fields.values().for_each(|v| self.add_held(v)),
            Value::Variant { fields, .. } => fields.iter().for_each(|(_, v)| self.add_held(v)),
            Value::None
            | Value::Bool(_)
            | Value::Int(_)
            | Value::Float(_)
            | Value::Str(_)
            | Value::Duration(_)
            | Value::Time(_) => {}
        }
    }

    /// Every secret `config` resolves now: the header values of its tools and the `[llm]` API
    /// key, with the environment variables they read. For what no run's state can tell
    /// (a notification's failure recorded after a restart).
    pub fn of_config(config: &crate::config::Config) -> Secrets {
        let mut secrets = Secrets::default();
        let templates = config
            .tools
            .values()
            .flat_map(|tool| tool.headers.iter().map(|(_, value)| value))
            .chain(config.llm.iter().filter_map(|llm| llm.api_key.as_ref()));
        for template in templates {
            // A variable that is not set holds no secret to hide.
            if let Ok(resolved) = template.resolve(|var| std::env::var(var).ok()) {
                resolved.from_env.iter().for_each(|v| secrets.add(v));
                secrets.add(&resolved.value);
            }
        }
        secrets
    }

    pub fn extend(&mut self, other: &Secrets) {
        for value in &other.values {
            self.add(value);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Every text in `value` redacted (field names and map keys too) — but `Secret`s, which
    /// stay what they are: sealed in checkpoints, shown as `[redacted]` everywhere else.
    pub fn redact_value(&self, value: &mut Value) {
        if self.values.is_empty() {
            return;
        }
        match value {
            Value::Str(text) => {
                if self.values.iter().any(|v| text.contains(v.as_str())) {
                    *text = self.redact(text);
                }
            }
            Value::List(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            Value::Record(fields) => {
                let redacted = std::mem::take(fields)
                    .into_iter()
                    .map(|(key, mut v)| {
                        self.redact_value(&mut v);
                        (self.redact(&key), v)
                    })
                    .collect();
                *fields = redacted;
            }
            Value::Variant { fields, .. } => {
                fields.iter_mut().for_each(|(_, v)| self.redact_value(v))
            }
            Value::None
            | Value::Bool(_)
            | Value::Int(_)
            | Value::Float(_)
            | Value::Duration(_)
            | Value::Time(_)
            | Value::Secret(_) => {}
        }
    }

    /// A call's outcome with every secret redacted: in the JSON it returned, or in the
    /// failure's message.
    pub fn redact_result(
        &self,
        result: Result<serde_json::Value, ToolFailure>,
    ) -> Result<serde_json::Value, ToolFailure> {
        result
            .map(|mut json| {
                self.redact_json(&mut json);
                json
            })
            .map_err(|mut failure| {
                failure.message = self.redact(&failure.message);
                failure
            })
    }

    /// Every string in `json` redacted.
    pub fn redact_json(&self, json: &mut serde_json::Value) {
        if self.values.is_empty() {
            return;
        }
        match json {
            serde_json::Value::String(s) => *s = self.redact(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| self.redact_json(i)),
            serde_json::Value::Object(fields) => {
                let redacted = std::mem::take(fields)
                    .into_iter()
                    .map(|(key, mut v)| {
                        self.redact_json(&mut v);
                        (self.redact(&key), v)
                    })
                    .collect();
                *fields = redacted;
            }
            _ => {}
        }
    }
}

/// At most `max` bytes of `text` (cut at a character boundary), with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_longest_first() {
        let mut secrets = Secrets::default();
        secrets.add("s3cret");
        secrets.add("Bearer s3cret");
        secrets.add("fr");
        assert_eq!(
            secrets.redact("sent Bearer s3cret, then s3cret, in fr"),
            "sent [redacted], then [redacted], in fr"
        );
        let mut json = serde_json::json!({ "a": ["x s3cret"], "b": 3 });
        secrets.redact_json(&mut json);
        assert_eq!(json, serde_json::json!({ "a": ["x [redacted]"], "b": 3 }));
    }

    #[test]
    fn truncate_cuts_at_a_character_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é… (6 bytes in all)");
    }
}
