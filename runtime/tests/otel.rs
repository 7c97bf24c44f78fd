//! Observability through the `flowrt` binary: OpenTelemetry export over OTLP/HTTP to a real
//! receiver on 127.0.0.1 (a small HTTP server in this test that decodes the protobuf
//! requests with the OpenTelemetry protobuf definitions), and structured logs on stderr.
//!
//! The main scenario: a run calls a tool, sleeps (`flowrt run` exits 10), and a second
//! process (`flowrt worker --once`) finishes it after the timer. Both processes' spans must
//! arrive under one trace id, the second one's linked to the run's root span.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, Store, contains, for_each_store};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A value passed to the tool: it must never be exported or logged, although it is a
/// plain `String` (spans carry no argument values at all).
const PRIVATE: &str = "IBAN-DE89-3704-0044-0532-0130-00";
/// A `Secret` passed to a tool: never exported or logged either.
const TOKEN: &str = "tok-5up3r-53cr3t-0042";

const WORKFLOW: &str = r#"
tool check(account: String) -> String via exec "flowrt:echo"
tool sign(token: Secret) -> Secret via exec "flowrt:echo"

workflow pay(account: String, token: Secret) -> String {
  let first = check(account)
  sleep 1s
  let second = check(account)
  let signed = sign(token)
  second
}
"#;

fn input() -> String {
    format!(r#"{{"account": "{PRIVATE}", "token": "{TOKEN}"}}"#)
}

/// One span as received.
#[derive(Clone, Debug)]
struct Received {
    /// Which export request it came in (0, 1, …).
    request: usize,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
    events: Vec<String>,
    /// The span status code: 0 unset, 1 ok, 2 error.
    status: i32,
    service: String,
    /// Start and end, nanoseconds since the Unix epoch.
    start: u64,
    end: u64,
}

/// What the receiver saw besides the spans.
#[derive(Default)]
struct Seen {
    spans: Vec<Received>,
    /// `METHOD /path content-type` of every request.
    requests: Vec<String>,
    /// Every request body, raw.
    bodies: Vec<Vec<u8>>,
    errors: Vec<String>,
}

/// An OTLP/HTTP receiver on 127.0.0.1: accepts `POST /v1/traces` with a protobuf body and
/// answers 200. It stops when dropped (and by itself after a minute).
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Err(e) = serve(stream, &seen) {
                                seen.lock().unwrap().errors.push(e);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Receiver {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Received> {
        self.seen.lock().unwrap().spans.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one HTTP/1.1 request, decodes its body as an `ExportTraceServiceRequest`, answers.
fn serve(stream: TcpStream, seen: &Mutex<Seen>) -> Result<(), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut request_line = String::new();
    reader
        .read_line(&mut request_line)
        .map_err(|e| e.to_string())?;
    let mut length = 0usize;
    let mut content_type = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or(format!("bad header {line:?}"))?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().map_err(|_| "bad length")?,
            "content-type" => content_type = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let decoded = ExportTraceServiceRequest::decode(body.as_slice())
        .map_err(|e| format!("the body is not an ExportTraceServiceRequest: {e}"))?;
    {
        let mut seen = seen.lock().unwrap();
        let request = seen.requests.len();
        seen.requests
            .push(format!("{method} {path} {content_type}"));
        seen.bodies.push(body);
        for resource_spans in decoded.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .map(|r| attributes(&r.attributes))
                .and_then(|a| a.get("service.name").cloned())
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    seen.spans.push(Received {
                        request,
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: attributes(&span.attributes),
                        events: span.events.into_iter().map(|e| e.name).collect(),
                        status: span.status.map(|s| s.code).unwrap_or(0),
                        service: service.clone(),
                        start: span.start_time_unix_nano,
                        end: span.end_time_unix_nano,
                    });
                }
            }
        }
    }
    let mut stream = stream;
    stream
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .map_err(|e| e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// A project with the workflow above as `pay.flow`.
fn project(store: &Store) -> Project {
    let project = Project::new(store);
    project.write("pay.flow", WORKFLOW);
    project
}

impl Project {
    fn exporting(&self, receiver: &Receiver, args: &[&str]) -> Output {
        self.command(args)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
            .output()
            .unwrap()
    }

    fn start(&self, receiver: &Receiver) -> String {
        let out = self.exporting(
            receiver,
            &[
                "run",
                "pay.flow",
                "--max-wait",
                "0s",
                "--input",
                &input(),
                "--json",
            ],
        );
        assert_eq!(out.status.code(), Some(10), "{}", show(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["id"].as_str().unwrap().to_string()
    }
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The spans of a kind: their name is the kind and what it is about (`run pay`, `step check`,
/// `tool check`, `decide signoff approved`).
fn named<'a>(spans: &'a [Received], kind: &str) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| s.name.split(' ').next() == Some(kind))
        .collect()
}

#[test]
fn a_run_paused_and_resumed_in_two_processes_is_one_trace() {
    for_each_store(|store| {
        let receiver = Receiver::start();
        let project = project(store);

        // First process: the root span, the first tool call, the sleep. The process flushes its
        // spans before it exits.
        let run = project.start(&receiver);
        let first = receiver.spans();
        let summary = |spans: &[Received]| {
            spans
                .iter()
                .map(|s| {
                    format!(
                        "{} {} parent={} {:?}",
                        s.name, s.span_id, s.parent_span_id, s.attributes
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let roots = named(&first, "run");
        assert_eq!(roots.len(), 1, "one root span:\n{}", summary(&first));
        let root = roots[0].clone();
        assert_eq!(root.parent_span_id, "", "the run span is the trace's root");
        assert_eq!(
            root.name, "run pay",
            "a span is named after what it is about"
        );
        assert_eq!(root.attributes["flow.run_id"], run);
        assert_eq!(root.attributes["flow.workflow"], "pay");
        assert_eq!(
            root.attributes["flow.version"].len(),
            64,
            "{:?}",
            root.attributes
        );
        assert_eq!(root.service, "flowrt");
        let tools: Vec<_> = named(&first, "tool");
        assert_eq!(tools.len(), 1, "{}", summary(&first));
        assert_eq!(tools[0].attributes["flow.tool"], "check");
        assert_eq!(tools[0].name, "tool check");
        assert_eq!(tools[0].attributes["flow.binding"], "exec");
        assert_eq!(tools[0].attributes["flow.attempt"], "1");
        let steps = named(&first, "step");
        assert!(
            steps.iter().any(|s| s.attributes["flow.step"] == "check"
                && s.attributes["flow.step_kind"] == "tool"
                && s.attributes["flow.line"] == "6"
                && s.span_id == tools[0].parent_span_id),
            "the tool span is a child of its step:\n{}",
            summary(&first)
        );
        assert!(
            steps
                .iter()
                .any(|s| s.attributes["flow.step_kind"] == "sleep"
                    && s.events.iter().any(|e| e == "timer_set")),
            "{}",
            summary(&first)
        );
        for step in &steps {
            assert_eq!(
                step.parent_span_id, root.span_id,
                "steps are children of the run"
            );
        }

        // The run stores its trace context.
        let stored = project
            .db()
            .query_text("SELECT trace FROM runs WHERE id = $1", &[&run])
            .unwrap();
        assert_eq!(
            stored,
            format!("00-{}-{}-01", root.trace_id, root.span_id),
            "the root span's context is stored with the run"
        );

        // Second process, after the timer: a worker finishes the run.
        std::thread::sleep(Duration::from_millis(1100));
        let out = project.exporting(&receiver, &["worker", "--once"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        // The receiver answers after it has recorded the spans, and flowrt waits for that
        // answer before it exits: everything has arrived.
        let all = receiver.spans();
        let later: Vec<Received> = all
            .iter()
            .filter(|s| s.request >= first.iter().map(|s| s.request + 1).max().unwrap_or(0))
            .cloned()
            .collect();
        assert!(!later.is_empty(), "the worker exported spans");

        // One trace id across both processes.
        for span in &all {
            assert_eq!(span.trace_id, root.trace_id, "{}", summary(&all));
        }
        // The worker's spans hang under the run's root span.
        let resumes = named(&later, "resume");
        assert_eq!(resumes.len(), 1, "{}", summary(&later));
        let resume = resumes[0];
        assert_eq!(
            resume.parent_span_id, root.span_id,
            "linked to the root span"
        );
        assert_eq!(resume.attributes["flow.run_id"], run);
        assert!(named(&later, "run").is_empty(), "no second root");
        let tools = named(&later, "tool");
        let mut names: Vec<&str> = tools
            .iter()
            .map(|t| t.attributes["flow.tool"].as_str())
            .collect();
        names.sort();
        assert_eq!(names, ["check", "sign"], "{}", summary(&later));
        for (tool, line) in [("check", "8"), ("sign", "9")] {
            let call = tools
                .iter()
                .find(|t| t.attributes["flow.tool"] == tool)
                .unwrap();
            let step = later
                .iter()
                .find(|s| s.span_id == call.parent_span_id)
                .expect("the tool's step");
            assert_eq!(step.name, format!("step {tool}"));
            assert_eq!(step.attributes["flow.step"], tool);
            assert_eq!(step.attributes["flow.line"], line);
            assert_eq!(step.parent_span_id, resume.span_id);
        }
        assert!(
            resume
                .events
                .iter()
                .chain(later.iter().flat_map(|s| &s.events))
                .any(|e| e == "run_completed"),
            "{}",
            summary(&later)
        );

        // What was exported: protobuf over HTTP to /v1/traces, never the tool's argument.
        let seen = receiver.seen.lock().unwrap();
        assert!(seen.errors.is_empty(), "{:?}", seen.errors);
        for request in &seen.requests {
            assert_eq!(request, "POST /v1/traces application/x-protobuf");
        }
        for body in &seen.bodies {
            assert!(!contains(body, PRIVATE), "a tool argument was exported");
            assert!(!contains(body, TOKEN), "a secret was exported");
        }
    });
}

#[test]
fn json_logs_carry_the_run_id_and_never_arguments() {
    for_each_store(|store| {
        let project = project(store);
        let input = input();
        let out = project
            .command(&[
                "--log-format",
                "json",
                "run",
                "pay.flow",
                "--max-wait",
                "0s",
                "--input",
                &input,
                "--json",
            ])
            .env("FLOW_LOG", "info")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(10), "{}", show(&out));
        let run = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let stderr = String::from_utf8(out.stderr.clone()).unwrap();
        assert!(
            !stderr.contains(PRIVATE),
            "an argument was logged:\n{stderr}"
        );
        let lines: Vec<serde_json::Value> = stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let messages: Vec<&str> = lines
            .iter()
            .filter_map(|l| l["fields"]["message"].as_str())
            .collect();
        for expected in ["run_started", "step_started", "step_completed", "timer_set"] {
            assert!(messages.contains(&expected), "{expected} in {messages:?}");
        }
        for line in &lines {
            assert_eq!(line["fields"]["flow.run_id"], run.as_str(), "{line}");
        }
        let completed = lines
            .iter()
            .find(|l| l["fields"]["message"] == "step_completed")
            .unwrap();
        assert_eq!(completed["span"]["name"], "step");
        assert_eq!(completed["span"]["flow.step"], "check");
        assert_eq!(completed["spans"][0]["name"], "run");
        assert_eq!(completed["spans"][0]["flow.run_id"], run.as_str());
    });
}

#[test]
fn logs_are_off_by_default_and_human_when_asked() {
    for_each_store(|store| {
        let project = project(store);
        let input = input();
        let out = project
            .command(&["run", "pay.flow", "--max-wait", "0s", "--input", &input])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(10), "{}", show(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "no logs unless asked"
        );

        let out = project
            .command(&["worker", "--once"])
            .env("FLOW_LOG", "info")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The timer may not be due yet: then the worker has nothing to log.
        assert!(
            !stderr.contains(PRIVATE) && !stderr.contains(TOKEN),
            "{stderr}"
        );
        assert!(
            !stderr.trim_start().starts_with('{'),
            "human, not JSON: {stderr}"
        );

        let out = project
            .command(&["runs"])
            .env("FLOW_LOG", "flow_runtime=chatty")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("FLOW_LOG=flow_runtime=chatty"),
            "{}",
            show(&out)
        );
        let out = project
            .command(&["--log-format", "xml", "runs"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    });
}

#[test]
fn an_unreachable_collector_does_not_fail_the_run() {
    for_each_store(|store| {
        // A port nobody listens on: every export is refused.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let project = project(store);
        let input = input();
        let started = Instant::now();
        let out = project
            .command(&["run", "pay.flow", "--max-wait", "0s", "--input", &input])
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(10), "{}", show(&out));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );

        let out = project
            .command(&["runs"])
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "ftp://collector.example:4318",
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("must be an http:// or https:// URL"),
            "{}",
            show(&out)
        );
    });
}

const GATED: &str = r#"
tool flaky(n: Int) -> Int via exec "sh flaky.sh"

workflow gated(n: Int) -> Int {
  let a = retry 3 { flaky(n) }
  let d = await approval "signoff" {
    approvers: role("customs"),
    prompt: "Go on?",
  }
  if !d.approved { return 0 }
  a
}
"#;

/// Fails once (a retryable `ToolError`), then answers 1.
const FLAKY: &str =
    "cat > /dev/null\nif [ -f tried ]; then echo 1; else touch tried; echo boom >&2; exit 1; fi\n";

#[cfg(unix)]
#[test]
fn retries_failures_gates_and_decisions_are_in_the_run_trace() {
    for_each_store(|store| {
        let receiver = Receiver::start();
        let project = project(store);
        std::fs::write(project.path().join("gated.flow"), GATED).unwrap();
        std::fs::write(project.path().join("flaky.sh"), FLAKY).unwrap();
        std::fs::write(
            project.path().join("flow.toml"),
            "[users.ines]\nroles = [\"clerk\"]\n\n[users.alice]\nroles = [\"customs\"]\n",
        )
        .unwrap();
        let out = project.exporting(
            &receiver,
            &[
                "run",
                "gated.flow",
                "--input",
                r#"{"n": 7}"#,
                "--as",
                "ines",
                "--json",
            ],
        );
        assert_eq!(out.status.code(), Some(10), "{}", show(&out));
        let run = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let first = receiver.spans();
        let root = named(&first, "run")[0].clone();
        let steps = named(&first, "step");
        let flaky: Vec<_> = steps
            .iter()
            .filter(|s| s.attributes["flow.step"] == "flaky")
            .collect();
        assert_eq!(flaky.len(), 2, "two attempts: {first:?}");
        let failed = flaky
            .iter()
            .find(|s| s.attributes["flow.attempt"] == "1")
            .unwrap();
        assert!(
            failed.events.iter().any(|e| e == "step_failed"),
            "{failed:?}"
        );
        let retried = flaky
            .iter()
            .find(|s| s.attributes["flow.attempt"] == "2")
            .unwrap();
        assert!(retried.events.iter().any(|e| e == "retry"), "{retried:?}");
        assert!(
            retried.events.iter().any(|e| e == "step_completed"),
            "{retried:?}"
        );
        let failed_call = named(&first, "tool")
            .into_iter()
            .find(|t| t.parent_span_id == failed.span_id)
            .unwrap();
        assert_eq!(failed_call.status, 2, "a failed call is an error span");
        assert_eq!(failed_call.attributes["flow.error_kind"], "ToolError");
        let gate = steps
            .iter()
            .find(|s| s.attributes["flow.step"] == "signoff")
            .unwrap();
        assert_eq!(gate.attributes["flow.step_kind"], "approval");
        assert!(gate.events.iter().any(|e| e == "gate_opened"), "{gate:?}");

        // Another process decides; the decision and the rest of the run join the run's trace.
        let out = project.exporting(&receiver, &["approve", &run, "signoff", "--as", "alice"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let all = receiver.spans();
        let later = &all[first.len()..];
        for span in &all {
            assert_eq!(span.trace_id, root.trace_id);
        }
        let decide = named(later, "decide");
        assert_eq!(decide.len(), 1, "{later:?}");
        assert_eq!(decide[0].parent_span_id, root.span_id);
        assert_eq!(decide[0].attributes["flow.step"], "signoff");
        assert_eq!(decide[0].attributes["flow.user"], "alice");
        assert_eq!(decide[0].name, "decide signoff approved");
        assert!(decide[0].events.iter().any(|e| e == "gate_decided"));
        let resume = named(later, "resume");
        assert_eq!(resume.len(), 1, "{later:?}");
        assert_eq!(resume[0].parent_span_id, root.span_id);
        assert!(resume[0].events.iter().any(|e| e == "run_completed"));
        assert_eq!(resume[0].status, 0, "a run that completes is no error");
    });
}

/// A run that fails without a tool error — a `fail`, an approval that times out — has an
/// error status on its span (and the step's), with `flow.error_kind`; a refused decision has
/// one on its `decide` span.
#[test]
fn failures_that_are_not_tool_errors_are_error_spans() {
    for_each_store(|store| {
        let receiver = Receiver::start();
        let project = project(store);
        std::fs::write(
            project.path().join("flow.toml"),
            "[users.ines]\nroles = [\"clerk\"]\n\n[users.alice]\nroles = [\"customs\"]\n",
        )
        .unwrap();
        std::fs::write(
            project.path().join("ends.flow"),
            r#"workflow closed(n: Int) -> Int {
  if n > 0 { fail "the ledger is closed" }
  n
}

workflow late() -> Bool {
  let d = await approval "signoff" { approvers: role("customs"), timeout: 1s }
  d.approved
}
"#,
        )
        .unwrap();
        let out = project.exporting(
            &receiver,
            &[
                "run",
                "ends.flow",
                "--workflow",
                "closed",
                "--input",
                r#"{"n": 1}"#,
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let spans = receiver.spans();
        let root = named(&spans, "run")[0].clone();
        assert_eq!(root.name, "run closed");
        assert_eq!(root.status, 2, "the failed run is an error span: {root:?}");
        assert_eq!(root.attributes["flow.error_kind"], "Failed");

        let out = project.exporting(
            &receiver,
            &[
                "run",
                "ends.flow",
                "--workflow",
                "late",
                "--as",
                "ines",
                "--json",
            ],
        );
        assert_eq!(out.status.code(), Some(10), "{}", show(&out));
        let run = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        // A decision by someone without the role is refused: an error span.
        let before = receiver.spans().len();
        let out = project.exporting(&receiver, &["approve", &run, "signoff", "--as", "ines"]);
        assert_eq!(out.status.code(), Some(3), "{}", show(&out));
        let refused = receiver.spans()[before..].to_vec();
        let decide = named(&refused, "decide");
        assert_eq!(decide.len(), 1, "{refused:?}");
        assert_eq!(decide[0].status, 2);
        assert_eq!(decide[0].attributes["flow.error_kind"], "Refused");
        // The gate times out: the run fails, its span says so with the kind.
        std::thread::sleep(Duration::from_millis(1_200));
        let before = receiver.spans().len();
        let out = project.exporting(&receiver, &["worker", "--once"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let later = receiver.spans()[before..].to_vec();
        let resume = named(&later, "resume");
        assert_eq!(resume.len(), 1, "{later:?}");
        assert_eq!(resume[0].name, "resume late");
        assert_eq!(resume[0].status, 2, "{:?}", resume[0]);
        assert_eq!(resume[0].attributes["flow.error_kind"], "ApprovalTimeout");
    });
}

/// On a database whose clock was moved (`--test-clock`, `flowrt clock advance 30d`), the
/// history keeps the engine's clock — 30 days ahead — while spans carry wall-clock time: a
/// trace is read beside other systems' traces and logs, which know nothing of that offset.
#[test]
fn spans_are_wall_clock_time_on_a_test_clock_database() {
    for_each_store(|store| {
        let receiver = Receiver::start();
        let project = project(store);
        project.write(
            "quick.flow",
            "tool check(account: String) -> String via exec \"flowrt:echo\"\n\nworkflow quick(account: String) -> String {\n  check(account)\n}\n",
        );
        let moved = project.output(&["--test-clock", "clock", "advance", "30d"]);
        assert_eq!(moved.status.code(), Some(0), "{}", show(&moved));
        let wall = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
        };
        let before = wall();
        let out = project.exporting(
            &receiver,
            &[
                "--test-clock",
                "run",
                "quick.flow",
                "--input",
                r#"{"account": "A-1"}"#,
                "--json",
            ],
        );
        let after = wall();
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let run = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        // The history is on the engine's clock: 30 days after the wall clock.
        let history = project.history(&run);
        let started = history[0]["at"].as_i64().expect("a time in milliseconds");
        assert!(
            (started / 86_400_000) as u64 >= before.as_secs() / 86_400 + 30,
            "history at {started} ms is not 30 days ahead"
        );
        let spans = receiver.spans();
        assert!(!named(&spans, "run").is_empty(), "{spans:?}");
        assert!(!named(&spans, "tool").is_empty(), "{spans:?}");
        let (low, high) = (before.as_nanos() as u64, after.as_nanos() as u64);
        for span in &spans {
            assert!(
                low <= span.start && span.start <= span.end && span.end <= high,
                "span `{}` runs from {} to {}, outside the wall-clock time of the process ({low} to {high})",
                span.name,
                span.start,
                span.end
            );
        }
    });
}
