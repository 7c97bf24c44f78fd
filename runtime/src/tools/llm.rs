//! The `llm` binding: `tool t(…) -> T via llm "model" prompt "template with ${param}"`.
//!
//! A call renders the prompt — each `${param}` (or `${param.field}`) replaced by the argument
//! (a string as it is, anything else as JSON; arguments the template does not mention are
//! listed after it) — and sends an OpenAI-compatible chat completion to
//! `{base_url}/chat/completions` (`[llm]` in `flow.toml`; Mistral's API is one such endpoint):
//!
//! ```json
//! { "model": "…",
//!   "messages": [ { "role": "system", "content": "Answer with JSON only … <schema>" },
//!                 { "role": "user", "content": "<the rendered prompt>" } ],
//!   "response_format": { "type": "json_schema",
//!                        "json_schema": { "name": "<tool>", "schema": <schema>, "strict": false } } }
//! ```
//!
//! where the schema is the JSON Schema of the declared return type. The answer's
//! `choices[0].message.content` (without a ```` ```json ```` fence) must be JSON; the engine
//! validates it against the type. Text that is not JSON, or JSON of the wrong shape, is a
//! retryable `InvalidOutput`, so a `retry` around the call asks again. HTTP failures are
//! classified as for `http` tools. The model, the rendered prompt and the raw reply (cut to
//! 4 KB) are recorded in the history of every attempt.
//!
//! No `Idempotency-Key` header is sent: a retry after a bad answer wants a new answer, and
//! a provider that replays answers by key would give the same one again.

use super::http::{classify, header_value, time_limit};
use super::{CallContext, Called, Secrets, ToolFailure, truncate};
use crate::config::LlmConfig;
use crate::http_client::{self, HttpUrl, Request};
use std::time::{Duration, Instant};

/// The time limit of one call when neither a `timeout` block nor `[llm] timeout` gives one.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// The most of a reply recorded in the history.
const RECORDED_REPLY: usize = 4096;
/// The most of a reply quoted in an error message.
const EXCERPT: usize = 300;

/// `template` with `${param}` and `${param.field…}` replaced by the arguments in `input`
/// (a JSON object); arguments not mentioned are appended, one per line.
pub fn render_prompt(template: &str, input: &serde_json::Value) -> String {
    let empty = serde_json::Map::new();
    let args = input.as_object().unwrap_or(&empty);
    let mut used: Vec<&str> = Vec::new();
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let reference = after[..end].trim();
        let mut path = reference.split('.');
        let root = path.next().unwrap_or_default();
        let value = args.get_key_value(root).and_then(|(name, value)| {
            path.try_fold(value, |v, field| v.get(field))
                .map(|v| (name, v))
        });
        match value {
            Some((name, value)) => {
                if !used.contains(&name.as_str()) {
                    used.push(name.as_str());
                }
                out.push_str(&text_of(value));
            }
            // Not an argument: left as written.
            None => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    let unused: Vec<String> = args
        .iter()
        .filter(|(name, _)| !used.contains(&name.as_str()))
        .map(|(name, value)| format!("{name}: {}", text_of(value)))
        .collect();
    if !unused.is_empty() {
        out.push_str("\n\n");
        out.push_str(&unused.join("\n"));
    }
    out
}

fn text_of(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The system message: answer with JSON matching `schema`, nothing else.
pub fn instructions(schema: &serde_json::Value) -> String {
    format!(
        "Answer with a single JSON value and nothing else: no explanation, no Markdown, no code fence. \
         The JSON must match this JSON Schema:\n{schema}"
    )
}

/// The text of a reply without a surrounding ```` ```json … ``` ```` fence.
pub fn strip_fence(text: &str) -> &str {
    let text = text.trim();
    let Some(inner) = text.strip_prefix("```") else {
        return text;
    };
    // Drop the info string (`json`) on the opening line, and the closing fence.
    let inner = match inner.find('\n') {
        Some(newline) => &inner[newline + 1..],
        None => inner,
    };
    inner.trim_end().strip_suffix("```").unwrap_or(inner).trim()
}

/// Calls an `llm` tool: the model and prompt template from its binding, the `[llm]`
/// settings, its arguments as one JSON object and the JSON Schema of its return type.
pub fn call(
    tool: &str,
    model: &str,
    template: &str,
    config: Option<&LlmConfig>,
    input: &serde_json::Value,
    schema: &serde_json::Value,
    context: &CallContext,
) -> Called {
    let prompt = render_prompt(template, input);
    let mut record = serde_json::Map::new();
    let mut secrets = Secrets::default();
    let result = attempt(
        tool,
        model,
        &prompt,
        config,
        schema,
        context,
        &mut secrets,
        &mut record,
    );
    // The configured credentials never come back, whatever the server echoes.
    let result = secrets.redact_result(result);
    let mut details = serde_json::json!({ "model": model, "prompt": prompt });
    if let Some(details) = details.as_object_mut() {
        details.extend(record);
    }
    secrets.redact_json(&mut details);
    let mut record = serde_json::Map::new();
    record.insert("llm".into(), details);
    Called { result, record }
}

#[allow(clippy::too_many_arguments)]
fn attempt(
    tool: &str,
    model: &str,
    prompt: &str,
    config: Option<&LlmConfig>,
    schema: &serde_json::Value,
    context: &CallContext,
    secrets: &mut Secrets,
    record: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value, ToolFailure> {
    let Some(base) = config.and_then(|c| c.base_url.as_deref()) else {
        return Err(ToolFailure::tool_error(
            format!(
                "tool `{tool}` asks the model `{model}`, but flow.toml has no LLM endpoint: add [llm] with base_url = \"http://…/v1\" (an OpenAI-compatible API)"
            ),
            false,
        ));
    };
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("Accept".to_string(), "application/json".to_string()),
        (
            "User-Agent".to_string(),
            format!("flowrt/{}", env!("CARGO_PKG_VERSION")),
        ),
    ];
    if let Some(key) = config.and_then(|c| c.api_key.as_ref()) {
        let key = header_value(tool, "[llm]", "api_key", key, secrets)?;
        secrets.add(&format!("Bearer {key}"));
        headers.push(("Authorization".to_string(), format!("Bearer {key}")));
    }
    let url = endpoint(base);
    let parsed = HttpUrl::parse_as(&url, &format!("tool `{tool}`: the [llm] URL"))
        .map_err(|why| ToolFailure::tool_error(why, false))?;
    let body = serde_json::json!({
        "model": model,
        "messages": [
            { "role": "system", "content": instructions(schema) },
            { "role": "user", "content": prompt },
        ],
        "response_format": {
            "type": "json_schema",
            // Not `strict`: strict structured outputs refuse optional properties and a
            // top-level schema that is not an object, both of which Flow types need. The
            // reply is validated against the type anyway.
            "json_schema": { "name": tool, "schema": schema, "strict": false },
        },
    })
    .to_string();

    let limit = time_limit(
        context,
        config.and_then(|c| c.timeout_ms),
        DEFAULT_TIMEOUT_MS,
    );
    let deadline = Instant::now() + Duration::from_millis(limit.0);
    let what = request_name(tool, model, &url);
    let tls = config.map_or(&http_client::TlsFiles::NONE, |c| &c.tls);
    let sent = http_client::send(&Request {
        method: "POST",
        url: &parsed,
        headers: &headers,
        body: Some(body.as_bytes()),
        deadline,
        tls,
        read_body: true,
    });
    if let Ok(response) = &sent {
        record.insert("status".into(), response.status.into());
        if !(200..300).contains(&response.status) {
            record.insert(
                "reply".into(),
                truncate(&String::from_utf8_lossy(&response.body), RECORDED_REPLY).into(),
            );
        }
    }
    let response = classify(&what, "[llm]", sent, &limit)?;
    let text = String::from_utf8_lossy(&response.body).into_owned();
    let completion: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| {
        record.insert("reply".into(), truncate(&text, RECORDED_REPLY).into());
        ToolFailure::tool_error(
            format!(
                "{what} answered with a body that is not a chat completion ({e}): {}",
                truncate(text.trim(), EXCERPT)
            ),
            true,
        )
    })?;
    if let Some(usage) = completion.get("usage") {
        record.insert("usage".into(), usage.clone());
    }
    let message = &completion["choices"][0]["message"];
    // A model that declines says so in `refusal` (or ends with a content filter): an answer
    // a tool's `raises Refused on refusal` names, else invalid output.
    let refusal = match message["refusal"].as_str() {
        Some(text) if !text.trim().is_empty() => Some(text.to_string()),
        _ if completion["choices"][0]["finish_reason"] == "content_filter" => {
            Some("the answer was withheld by a content filter".to_string())
        }
        _ => None,
    };
    if let Some(reason) = refusal {
        record.insert("reply".into(), truncate(&text, RECORDED_REPLY).into());
        return Err(ToolFailure::invalid_output(format!(
            "{what} refused to answer: {}",
            truncate(&reason, EXCERPT)
        ))
        .answered(
            super::AnswerCode::Refusal,
            Some(serde_json::json!({ "reason": truncate(&reason, EXCERPT) })),
        ));
    }
    let content = match &message["content"] {
        serde_json::Value::String(s) => s.clone(),
        // Some endpoints answer with a list of parts: [{"type": "text", "text": "…"}].
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
            .collect(),
        _ => {
            record.insert("reply".into(), truncate(&text, RECORDED_REPLY).into());
            return Err(ToolFailure::tool_error(
                format!(
                    "{what} answered without choices[0].message.content: {}",
                    truncate(text.trim(), EXCERPT)
                ),
                true,
            ));
        }
    };
    record.insert("reply".into(), truncate(&content, RECORDED_REPLY).into());
    serde_json::from_str(strip_fence(&content))
        .map_err(|e| not_json(&what, &e.to_string(), &content))
}

/// The URL of the chat completions endpoint under `base` (the `[llm]` base_url).
pub(crate) fn endpoint(base: &str) -> String {
    format!("{}/chat/completions", base.trim_end_matches('/'))
}

/// How a failure names the request: `tool `x`: model `m` at http://…`.
pub(crate) fn request_name(tool: &str, model: &str, url: &str) -> String {
    format!("tool `{tool}`: model `{model}` at {url}")
}

/// A model's answer that is not JSON.
pub(crate) fn not_json(what: &str, error: &str, content: &str) -> ToolFailure {
    ToolFailure::invalid_output(format!(
        "{what} answered with text that is not JSON ({error}): {}",
        truncate(content.trim(), EXCERPT)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompts_substitute_arguments() {
        let input = json!({ "doc": { "title": "Invoice 7", "pages": 2 }, "lang": "fr", "n": 3 });
        assert_eq!(
            render_prompt("Read ${doc.title} (${doc.pages} pages) in ${lang}", &input),
            "Read Invoice 7 (2 pages) in fr\n\nn: 3"
        );
        assert_eq!(
            render_prompt("All: ${doc}; ${n}; ${lang}", &input),
            r#"All: {"pages":2,"title":"Invoice 7"}; 3; fr"#
        );
        assert_eq!(
            render_prompt("Unknown ${nope} and ${doc.nope} stay; ${open", &json!({})),
            "Unknown ${nope} and ${doc.nope} stay; ${open"
        );
        assert_eq!(
            render_prompt("Extract the fields", &json!({ "doc": "text" })),
            "Extract the fields\n\ndoc: text"
        );
    }

    #[test]
    fn fences_are_stripped() {
        assert_eq!(strip_fence("```json\n{\"a\": 1}\n```"), "{\"a\": 1}");
        assert_eq!(strip_fence("  ```\n[1]\n```  "), "[1]");
        assert_eq!(strip_fence("{\"a\": 1}"), "{\"a\": 1}");
    }

    #[test]
    fn without_an_endpoint_the_call_is_refused_and_not_retried() {
        let context = CallContext {
            run_id: "r".into(),
            idempotency_key: "r:1".into(),
            time_limit_ms: None,
        };
        let called = call(
            "extract",
            "m",
            "p ${x}",
            None,
            &json!({ "x": 1 }),
            &json!({}),
            &context,
        );
        let e = called.result.expect_err("no endpoint");
        assert!(!e.retryable);
        assert!(e.message.contains("[llm]"), "{}", e.message);
        assert_eq!(called.record["llm"]["prompt"], "p 1");
        assert_eq!(called.record["llm"]["model"], "m");
    }
}
