//! The `http` binding: `tool t(…) -> T via http post "/path"` (or get, put, patch, delete).
//!
//! - **URL**: the tool's `base_url` from `flow.toml` (`[tools.t]`) followed by the path; a
//!   path that is already a full `http://` or `https://` URL is used as it is.
//! - **Arguments**: one JSON object `{"param": value, …}` as the request body; for `get`,
//!   query parameters instead (strings as they are, other values as JSON, URL-encoded; `none`
//!   left out).
//! - **Headers**: `Content-Type: application/json` (with a body), `Accept: application/json`,
//!   `Idempotency-Key: <run id>:<step number>` — the same on every attempt of a step, after a
//!   failure or a crash — and the tool's `headers` from `flow.toml`, whose `${env:VAR}`
//!   references are read when the call is made.
//! - **Answer**: a 2xx body must be JSON (an empty body is `null`); the engine validates it
//!   against the declared return type (`InvalidOutput` naming the JSON path).
//! - **Failures**: a refused, reset or closed connection, a 429 or a 5xx are retryable
//!   `ToolError`s; any other 4xx (and a 3xx: redirects are not followed) is a `ToolError` that
//!   is not retryable; no answer within the time limit (the enclosing `timeout`, else the
//!   tool's `timeout`, else 30 s) is a `Timeout`, and the request is aborted by closing the
//!   connection.
//! - **Secrets**: the configured header values and what they read from the environment never
//!   appear in an error message or in the recorded call (they are replaced by `[redacted]`,
//!   also where a server echoes them).
//!
//! - **TLS**: `https://` URLs are checked against the system's root certificates and the
//!   tool's `ca_file`; `client_cert` and `client_key` answer a server that asks for a client
//!   certificate. A certificate that is expired, for another host or from an unknown
//!   authority is a `ToolError` that says so and is not retryable.
//!
//! Requests go through the runtime's one client, [`crate::http_client`].

use super::{AnswerCode, CallContext, Called, Secrets, ToolFailure, truncate};
use crate::config::ToolConfig;
use crate::http_client::{self, HttpUrl, Request, Response, SendError};
use std::time::{Duration, Instant};

/// The time limit of one call when neither a `timeout` block nor `flow.toml` gives one.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The most of a response body quoted in an error message.
const EXCERPT: usize = 500;

/// `text` with everything but unreserved characters percent-encoded.
pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query string of a GET: `a=1&b=text`, `none` left out.
fn query(input: &serde_json::Value) -> String {
    let serde_json::Value::Object(fields) = input else {
        return String::new();
    };
    fields
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let value = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{}={}", url_encode(k), url_encode(&value))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether `path` is a full URL rather than a path under the base URL.
fn is_absolute(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// A configured header's value, with its environment variables read; their values (and the
/// whole value) are added to `secrets`.
pub(crate) fn header_value(
    tool: &str,
    section: &str,
    name: &str,
    template: &crate::config::EnvTemplate,
    secrets: &mut Secrets,
) -> Result<String, ToolFailure> {
    let resolved = template
        .resolve(|var| std::env::var(var).ok())
        .map_err(|var| {
            ToolFailure::tool_error(
                format!(
                    "tool `{tool}`: the environment variable {var} is not set ({section} {name} in flow.toml reads it)"
                ),
                false,
            )
        })?;
    for value in &resolved.from_env {
        secrets.add(value);
    }
    secrets.add(&resolved.value);
    if resolved.value.contains(['\r', '\n']) {
        return Err(ToolFailure::tool_error(
            format!(
                "tool `{tool}`: {section} {name} has a line break once its environment variables are read"
            ),
            false,
        ));
    }
    Ok(resolved.value)
}

/// The time limit of a call: the enclosing `timeout` block's, or the configured one, or
/// `default_ms`, whichever is shortest; and a phrase saying which one it was.
pub(crate) fn time_limit(
    context: &CallContext,
    configured_ms: Option<u64>,
    default_ms: u64,
) -> (u64, String) {
    let (own, own_text) = match configured_ms {
        Some(ms) => (ms, format!("its configured timeout of {}", show_ms(ms))),
        None => (default_ms, format!("the default {}", show_ms(default_ms))),
    };
    match context.time_limit_ms {
        Some(ms) if ms < own => (
            ms,
            format!("the time left in its `timeout` block ({})", show_ms(ms)),
        ),
        _ => (own, own_text),
    }
}

pub(crate) fn show_ms(ms: u64) -> String {
    crate::vm::value::format_duration(ms.min(i64::MAX as u64) as i64)
}

/// Classifies a response or a failure to get one; `what` names the request in messages
/// (`tool `x`: POST http://…`), `section` its settings (`[tools.x]`). A 2xx gives its body.
pub(crate) fn classify(
    what: &str,
    section: &str,
    sent: Result<Response, SendError>,
    limit: &(u64, String),
) -> Result<Response, ToolFailure> {
    match sent {
        Ok(response) if (200..300).contains(&response.status) => Ok(response),
        Ok(response) => {
            let status = format!("{} {}", response.status, response.reason)
                .trim()
                .to_string();
            let body = String::from_utf8_lossy(&response.body);
            let body = body.trim();
            let detail = if body.is_empty() {
                String::new()
            } else {
                format!(": {}", truncate(body, EXCERPT))
            };
            let (retryable, why) = match response.status {
                429 => (true, " (retryable: too many requests)"),
                500..=599 => (true, " (retryable: a server error)"),
                400..=499 => (false, " (not retryable: the request was refused)"),
                300..=399 => (false, " (not retryable: redirects are not followed)"),
                _ => (false, " (not retryable)"),
            };
            let mut json = serde_json::from_slice::<serde_json::Value>(&response.body).ok();
            let retry_after = response
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
                .and_then(|(_, value)| value.trim().parse::<u64>().ok());
            if let Some(seconds) = retry_after {
                let object = json.get_or_insert_with(|| serde_json::json!({}));
                if let Some(fields) = object.as_object_mut() {
                    fields
                        .entry("retry_after")
                        .or_insert_with(|| serde_json::Value::String(format!("{seconds}s")));
                }
            }
            Err(ToolFailure::tool_error(
                format!("{what} answered {status}{why}{detail}"),
                retryable,
            )
            .answered(AnswerCode::Status(i64::from(response.status)), json))
        }
        Err(SendError::Timeout(during)) => Err(ToolFailure::timeout(format!(
            "{what} did not finish within {} ({during}); the request was aborted",
            limit.1
        ))),
        Err(SendError::Tls(why)) => Err(ToolFailure::tool_error(
            format!(
                "{what} failed: {why} (not retryable; the TLS settings are ca_file, client_cert and client_key in {section})"
            ),
            false,
        )),
        Err(SendError::Connection(why) | SendError::Protocol(why) | SendError::TooLarge(why)) => {
            Err(ToolFailure::tool_error(
                format!("{what} failed: {why} (retryable)"),
                true,
            ))
        }
    }
}

/// The URL a call goes to: `base` (the tool's `base_url`) and the binding's path, with the
/// arguments as the query of a `GET`. `None` for a relative path without a base.
pub(crate) fn request_url(
    base: Option<&str>,
    method: &str,
    path: &str,
    input: &serde_json::Value,
) -> Option<String> {
    let mut url = if is_absolute(path) {
        path.to_string()
    } else {
        let base = base?.trim_end_matches('/');
        if path.starts_with('/') {
            format!("{base}{path}")
        } else {
            format!("{base}/{path}")
        }
    };
    if method == "GET" {
        let query = query(input);
        if !query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&query);
        }
    }
    Some(url)
}

/// How a failure names the request: `tool `x`: POST http://…`.
pub(crate) fn request_name(tool: &str, method: &str, url: &str) -> String {
    format!("tool `{tool}`: {method} {url}")
}

/// A 2xx body that is not JSON.
pub(crate) fn not_json(what: &str, error: &str, text: &str) -> ToolFailure {
    ToolFailure::invalid_output(format!(
        "{what} answered with a body that is not JSON ({error}): {}",
        truncate(text.trim(), EXCERPT)
    ))
}

/// Parses a 2xx body as JSON (an empty body is `null`).
pub(crate) fn json_body(what: &str, body: &[u8]) -> Result<serde_json::Value, ToolFailure> {
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text.trim()).map_err(|e| not_json(what, &e.to_string(), &text))
}

/// Calls an `http` tool: `method` (upper case) and `path` from its binding, its `flow.toml`
/// settings, and its arguments as one JSON object.
pub fn call(
    tool: &str,
    method: &str,
    path: &str,
    config: Option<&ToolConfig>,
    input: &serde_json::Value,
    context: &CallContext,
) -> Called {
    let mut record = serde_json::Map::new();
    let mut secrets = Secrets::default();
    let result = attempt(
        tool,
        method,
        path,
        config,
        input,
        context,
        &mut secrets,
        &mut record,
    );
    // The configured credentials never come back, whatever the server echoes.
    let result = secrets.redact_result(result);
    let mut record = serde_json::Value::Object(record);
    secrets.redact_json(&mut record);
    Called {
        result,
        record: match record {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn attempt(
    tool: &str,
    method: &str,
    path: &str,
    config: Option<&ToolConfig>,
    input: &serde_json::Value,
    context: &CallContext,
    secrets: &mut Secrets,
    record: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value, ToolFailure> {
    let method = method.to_ascii_uppercase();
    let mut headers = Vec::new();
    for (name, template) in config.map(|c| c.headers.as_slice()).unwrap_or_default() {
        let value = header_value(
            tool,
            &format!("[tools.{tool}] header"),
            name,
            template,
            secrets,
        )?;
        headers.push((name.clone(), value));
    }

    let url = request_url(config.and_then(|c| c.base_url.as_deref()), &method, path, input)
        .ok_or_else(|| {
            ToolFailure::tool_error(
                format!(
                    "tool `{tool}` calls the path `{path}` but has no base URL: add [tools.{tool}] with base_url = \"http://…\" to flow.toml"
                ),
                false,
            )
        })?;
    let body = if method == "GET" {
        None
    } else {
        Some(input.to_string().into_bytes())
    };
    record.insert(
        "request".into(),
        serde_json::json!({ "method": method, "url": url }),
    );
    let parsed = HttpUrl::parse_as(&url, &format!("tool `{tool}`: the URL"))
        .map_err(|why| ToolFailure::tool_error(why, false))?;

    let mut defaults = vec![
        ("Accept".to_string(), "application/json".to_string()),
        (
            "Idempotency-Key".to_string(),
            context.idempotency_key.clone(),
        ),
        (
            "User-Agent".to_string(),
            format!("flowrt/{}", env!("CARGO_PKG_VERSION")),
        ),
    ];
    if body.is_some() {
        defaults.insert(
            0,
            ("Content-Type".to_string(), "application/json".to_string()),
        );
    }
    defaults.retain(|(name, _)| !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)));
    defaults.extend(headers);

    let limit = time_limit(
        context,
        config.and_then(|c| c.timeout_ms),
        DEFAULT_TIMEOUT_MS,
    );
    let deadline = Instant::now() + Duration::from_millis(limit.0);
    let what = request_name(tool, &method, &url);
    let tls = config.map_or(&http_client::TlsFiles::NONE, |c| &c.tls);
    let sent = http_client::send(&Request {
        method: &method,
        url: &parsed,
        headers: &defaults,
        body: body.as_deref(),
        deadline,
        tls,
        read_body: true,
    });
    if let Ok(response) = &sent {
        record.insert("status".into(), response.status.into());
    }
    let response = classify(&what, &format!("[tools.{tool}]"), sent, &limit)?;
    json_body(&what, &response.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Read, Write};
    use std::net::TcpListener;

    /// A server answering each connection with the next of `answers` (raw bytes; `None`
    /// closes without answering), returning what it received.
    fn server(answers: Vec<Option<&'static str>>) -> (String, std::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = std::io::BufReader::new(stream);
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                head.push_str(&String::from_utf8_lossy(&body));
                let _ = tx.send(head);
                let mut stream = reader.into_inner();
                if let Some(answer) = answer {
                    let _ = stream.write_all(answer.as_bytes());
                }
            }
        });
        (format!("http://{addr}"), rx)
    }

    fn context(limit: Option<u64>) -> CallContext {
        CallContext {
            run_id: "r1".into(),
            idempotency_key: "r1:4".into(),
            time_limit_ms: limit,
        }
    }

    fn tool(base: &str) -> ToolConfig {
        ToolConfig {
            base_url: Some(base.to_string()),
            headers: vec![(
                "X-Api-Key".to_string(),
                crate::config::EnvTemplate::parse("key-${env:HOME}").expect("template"),
            )],
            timeout_ms: None,
            tls: http_client::TlsFiles::NONE,
        }
    }

    #[test]
    fn posts_json_and_reads_a_content_length_body() {
        let (base, rx) = server(vec![Some(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
        )]);
        let called = call(
            "check",
            "post",
            "/check",
            Some(&tool(&base)),
            &serde_json::json!({ "id": "S1", "n": 2 }),
            &context(None),
        );
        assert_eq!(called.result, Ok(serde_json::json!({ "ok": true })));
        assert_eq!(called.record["status"], 200);
        assert_eq!(called.record["request"]["method"], "POST");
        let seen = rx.recv().expect("a request");
        assert!(seen.starts_with("POST /check HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains("Idempotency-Key: r1:4\r\n"), "{seen}");
        assert!(
            seen.contains("Content-Type: application/json\r\n"),
            "{seen}"
        );
        assert!(seen.contains("X-Api-Key: key-"), "{seen}");
        assert!(seen.ends_with(r#"{"id":"S1","n":2}"#), "{seen}");
    }

    #[test]
    fn get_sends_query_parameters_and_reads_a_chunked_body() {
        let (base, rx) = server(vec![Some(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[1, \r\n3\r\n2]\n\r\n0\r\n\r\n",
        )]);
        let called = call(
            "find",
            "GET",
            "/find?x=1",
            Some(&tool(&base)),
            &serde_json::json!({ "q": "a b&c", "n": 3, "none": null }),
            &context(None),
        );
        assert_eq!(called.result, Ok(serde_json::json!([1, 2])));
        let seen = rx.recv().expect("a request");
        assert!(
            seen.starts_with("GET /find?x=1&n=3&q=a%20b%26c HTTP/1.1\r\n"),
            "{seen}"
        );
        assert!(!seen.contains("Content-Type"), "{seen}");
    }

    #[test]
    fn statuses_are_classified() {
        let (base, _rx) = server(vec![
            Some("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"),
            Some("HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n"),
            Some("HTTP/1.1 404 Not Found\r\nContent-Length: 7\r\n\r\nmissing"),
            Some("HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n"),
            None,
            Some("HTTP/1.1 200 OK\r\n\r\nnot json"),
            Some("HTTP/1.1 204 No Content\r\n\r\n"),
            Some("garbage\r\n\r\n"),
        ]);
        let config = tool(&base);
        let next = || {
            call(
                "t",
                "POST",
                "/x",
                Some(&config),
                &serde_json::json!({}),
                &context(None),
            )
            .result
        };
        let e = next().expect_err("503");
        assert_eq!((e.kind, e.retryable), ("ToolError", true));
        assert!(
            e.message.contains("answered 503 Service Unavailable") && e.message.contains("busy"),
            "{}",
            e.message
        );
        let e = next().expect_err("429");
        assert_eq!((e.kind, e.retryable), ("ToolError", true));
        let e = next().expect_err("404");
        assert_eq!((e.kind, e.retryable), ("ToolError", false));
        assert!(
            e.message.contains("404 Not Found") && e.message.contains("missing"),
            "{}",
            e.message
        );
        let e = next().expect_err("302");
        assert_eq!((e.kind, e.retryable), ("ToolError", false));
        let e = next().expect_err("closed");
        assert_eq!((e.kind, e.retryable), ("ToolError", true));
        assert!(
            e.message
                .contains("closed the connection without a response"),
            "{}",
            e.message
        );
        let e = next().expect_err("not json");
        assert_eq!((e.kind, e.retryable), ("InvalidOutput", true));
        assert!(
            e.message.contains("not JSON") && e.message.contains("not json"),
            "{}",
            e.message
        );
        assert_eq!(next(), Ok(serde_json::Value::Null));
        let e = next().expect_err("garbage");
        assert!(e.message.contains("not an HTTP response"), "{}", e.message);
    }

    #[test]
    fn a_refused_connection_is_a_retryable_tool_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let e = call(
            "t",
            "POST",
            &format!("http://127.0.0.1:{port}/x"),
            None,
            &serde_json::json!({}),
            &context(None),
        )
        .result
        .expect_err("refused");
        assert_eq!((e.kind, e.retryable), ("ToolError", true));
        assert!(e.message.contains("cannot connect"), "{}", e.message);
    }

    #[test]
    fn a_server_that_hangs_is_a_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let started = Instant::now();
        let e = call(
            "slow",
            "POST",
            "/x",
            Some(&tool(&base)),
            &serde_json::json!({}),
            &context(Some(200)),
        )
        .result
        .expect_err("times out");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!((e.kind, e.retryable), ("Timeout", true));
        assert!(e.message.contains("`timeout` block"), "{}", e.message);
        let config = ToolConfig {
            timeout_ms: Some(150),
            ..tool(&base)
        };
        let e = call(
            "slow",
            "POST",
            "/x",
            Some(&config),
            &serde_json::json!({}),
            &context(None),
        )
        .result
        .expect_err("times out");
        assert!(
            e.message.contains("configured timeout of 150ms"),
            "{}",
            e.message
        );
        drop(listener);
    }

    #[test]
    fn configuration_mistakes_are_not_retryable() {
        let e = call(
            "t",
            "POST",
            "/x",
            None,
            &serde_json::json!({}),
            &context(None),
        )
        .result
        .expect_err("no base url");
        assert!(!e.retryable);
        assert!(e.message.contains("[tools.t]"), "{}", e.message);
        let config = ToolConfig {
            headers: vec![(
                "Authorization".to_string(),
                crate::config::EnvTemplate::parse("Bearer ${env:FLOW_TEST_SURELY_UNSET_VAR}")
                    .expect("template"),
            )],
            ..tool("http://127.0.0.1:9")
        };
        let e = call(
            "t",
            "POST",
            "/x",
            Some(&config),
            &serde_json::json!({}),
            &context(None),
        )
        .result
        .expect_err("missing variable");
        assert!(!e.retryable);
        assert!(
            e.message.contains("FLOW_TEST_SURELY_UNSET_VAR") && e.message.contains("tool `t`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn echoed_secrets_are_redacted() {
        let (base, _rx) = server(vec![Some(
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 30\r\n\r\nbad key: key-0123456789abcdefg",
        )]);
        let config = ToolConfig {
            headers: vec![(
                "X-Api-Key".to_string(),
                crate::config::EnvTemplate::parse("key-0123456789abcdefg").expect("template"),
            )],
            ..tool(&base)
        };
        let e = call(
            "t",
            "POST",
            "/x",
            Some(&config),
            &serde_json::json!({}),
            &context(None),
        )
        .result
        .expect_err("401");
        assert!(!e.message.contains("0123456789"), "{}", e.message);
        assert!(e.message.contains("[redacted]"), "{}", e.message);
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("a-z_0.9~"), "a-z_0.9~");
        assert_eq!(url_encode("é /?"), "%C3%A9%20%2F%3F");
    }
}
