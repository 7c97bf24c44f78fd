//! Observability: `tracing` spans for run → step → tool call, an event for every history
//! event the engine records, logs on stderr (`flowrt --log-format human|json`, levels from
//! `FLOW_LOG` or `RUST_LOG`) and OpenTelemetry export over OTLP/HTTP (protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. See `spec/runtime.md#observability`.
//!
//! - **Spans**: `run` (the run's root span) or `resume` (a later process driving the same
//!   run), `decide` (a person's decision at a gate), `step` (one durable point: a tool call,
//!   a gate, a sleep, an `audit`, `now()`, a child workflow) and `tool` (the call itself).
//!   Attributes are names, ids, kinds, attempts and source lines — never an argument, an
//!   output, a prompt, a comment or an error message, which may hold secrets or personal
//!   data (`Secret` values included).
//! - **One trace per run**: the first process that drives a run stores its root span's
//!   context with the run ([`Runs::set_trace`](crate::store::Runs::set_trace)); every later process (a worker after a
//!   timer, an approval, a restart after a crash) creates its spans as children of that
//!   stored remote context, so all of them share the run's trace id.
//! - **Export**: a batch span processor on its own thread sends protobuf over HTTP through
//!   the runtime's one blocking client ([`crate::http_client`], plugged in as
//!   [`StdHttpClient`]): no async runtime. An `https://` collector is checked against the
//!   system's roots and `OTEL_EXPORTER_OTLP_CERTIFICATE`; `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`
//!   and `OTEL_EXPORTER_OTLP_CLIENT_KEY` give a client certificate (the `…_TRACES_…` forms
//!   win). The CLI shuts the provider down before it exits, which flushes the spans still
//!   queued.

use crate::http_client::{self, HttpUrl, TlsFiles};
use crate::store::{EventKind, NewEvent, RunRecord, Store};
use crate::vm::Request;
use flow_compiler::bytecode::{Binding, Module, ToolInfo};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry_http::{Bytes, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{Level, Span, field};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;

/// Whether spans are exported (an OpenTelemetry layer is installed): only then are trace
/// contexts read from and written to the store.
static EXPORTING: AtomicBool = AtomicBool::new(false);

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// How logs are written on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event, with the spans it happened in.
    #[default]
    Human,
    /// One JSON object per line (timestamp, level, fields, the current span and its parents).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format `{other}`: use human or json")),
        }
    }
}

/// What [`init`] reads from the environment (passed in, so tests need not set variables).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub format: LogFormat,
    /// `FLOW_LOG`, else `RUST_LOG`: `info`, `warn`, `flow_runtime=debug,warn`, …
    /// (`target=level` directives separated by commas; a bare level is the default).
    pub filter: Option<(String, String)>,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is) or `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (`/v1/traces` appended): the variable's name and value.
    pub endpoint: Option<(String, String)>,
    /// `OTEL_SERVICE_NAME` (default `flowrt`).
    pub service_name: Option<String>,
    /// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds
    /// (default 10 000): how long one export request may take.
    pub timeout_ms: Option<u64>,
    /// `OTEL_EXPORTER_OTLP[_TRACES]_CERTIFICATE`, `…_CLIENT_CERTIFICATE`, `…_CLIENT_KEY`: the
    /// variable's name and value (a PEM file's path), for an `https://` collector.
    pub certificate: Option<(String, String)>,
    pub client_certificate: Option<(String, String)>,
    pub client_key: Option<(String, String)>,
}

impl Settings {
    /// The settings from the process environment; empty variables count as unset.
    pub fn from_env(format: LogFormat) -> Settings {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name.to_string(), v))
        };
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|(_, v)| v.trim() == "true");
        Settings {
            format,
            filter: var("FLOW_LOG").or_else(|| var("RUST_LOG")),
            endpoint: (!disabled)
                .then(|| {
                    var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                        .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
                })
                .flatten(),
            service_name: var("OTEL_SERVICE_NAME").map(|(_, v)| v),
            timeout_ms: var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
                .or_else(|| var("OTEL_EXPORTER_OTLP_TIMEOUT"))
                .and_then(|(_, v)| v.trim().parse().ok()),
            certificate: var("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
                .or_else(|| var("OTEL_EXPORTER_OTLP_CERTIFICATE")),
            client_certificate: var("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE")
                .or_else(|| var("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")),
            client_key: var("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY")
                .or_else(|| var("OTEL_EXPORTER_OTLP_CLIENT_KEY")),
        }
    }

    /// The exporter's TLS files, each read and checked; the error names the variable.
    fn tls(&self) -> Result<TlsFiles, String> {
        let path = |setting: &Option<(String, String)>| {
            setting.as_ref().map(|(_, value)| value.trim().into())
        };
        let files = TlsFiles {
            ca_file: path(&self.certificate),
            client_cert: path(&self.client_certificate),
            client_key: path(&self.client_key),
        };
        http_client::check_tls_files(&files).map_err(|e| {
            let setting = match e.key {
                "ca_file" => &self.certificate,
                "client_cert" => &self.client_certificate,
                _ => &self.client_key,
            };
            let name = setting.as_ref().map_or("OTEL_EXPORTER_OTLP_…", |(n, _)| n);
            // `client_cert `…`: …` reads as the variable's file.
            let message = e
                .message
                .replacen(e.key, "the file", 1)
                .replace("(client_cert)", "(OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE)")
                .replace("(client_key)", "(OTEL_EXPORTER_OTLP_CLIENT_KEY)");
            format!("{name}: {message}")
        })?;
        Ok(files)
    }
}

/// Keeps the exporter alive; [`Telemetry::shutdown`] (or dropping it) flushes the spans.
#[must_use = "dropping the guard shuts the exporter down at once"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// No logs, no export.
    pub fn none() -> Telemetry {
        Telemetry { provider: None }
    }

    /// Whether spans are being exported.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is still queued and stops the exporter's thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // An unreachable collector must not turn a finished command into a failure.
            let _ = provider.shutdown();
            EXPORTING.store(false, Ordering::Relaxed);
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The default export time limit (the OpenTelemetry default).
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Installs the process's subscriber: logs on stderr when a filter is set, OTLP export when
/// an endpoint is set, nothing otherwise. The error says which setting is wrong.
pub fn init(settings: &Settings) -> Result<Telemetry, String> {
    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;
    let mut layers: Vec<Boxed> = Vec::new();

    if let Some((name, text)) = &settings.filter {
        let filter = Targets::from_str(text.trim()).map_err(|e| {
            format!("{name}={text}: {e} (expected e.g. `info` or `flow_runtime=debug,warn`)")
        })?;
        let layer: Boxed = match settings.format {
            LogFormat::Human => tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter)
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .with_filter(filter)
                .boxed(),
        };
        layers.push(layer);
    }

    let mut provider = None;
    if let Some((name, endpoint)) = &settings.endpoint {
        let traces_url = if name == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" {
            endpoint.trim().to_string()
        } else {
            format!("{}/v1/traces", endpoint.trim().trim_end_matches('/'))
        };
        HttpUrl::parse_as(&traces_url, name)?;
        let tls = settings.tls()?;
        let timeout = Duration::from_millis(settings.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces_url)
            .with_timeout(timeout)
            .with_http_client(StdHttpClient { timeout, tls })
            .build()
            .map_err(|e| format!("{name}={endpoint}: cannot set up the OTLP exporter: {e}"))?;
        let service = settings
            .service_name
            .clone()
            .unwrap_or_else(|| "flowrt".to_string());
        let resource = Resource::builder()
            .with_service_name(service)
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let sdk = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = sdk.tracer("flowrt");
        // Only the runtime's own spans, whatever the log filter says.
        let spans = Targets::new().with_target("flow_runtime", Level::INFO);
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_filter(spans)
                .boxed(),
        );
        provider = Some(sdk);
    }

    if layers.is_empty() {
        return Ok(Telemetry::none());
    }
    let subscriber = tracing_subscriber::registry().with(layers);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry { provider })
}

/// The OTLP exporter's HTTP client: the runtime's one blocking client
/// ([`http_client::send`]), with a deadline on every request and the exporter's TLS files. The SDK calls it from the batch
/// processor's own thread (under a minimal executor), so blocking there is fine and no async
/// runtime is needed.
#[derive(Debug)]
pub struct StdHttpClient {
    timeout: Duration,
    tls: TlsFiles,
}

#[async_trait::async_trait]
impl HttpClient for StdHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let url = HttpUrl::parse_as(&request.uri().to_string(), "the OTLP endpoint")?;
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
            })
            .collect();
        let method = request.method().as_str().to_string();
        let body = request.into_body();
        let response = http_client::send(&http_client::Request {
            method: &method,
            url: &url,
            headers: &headers,
            body: Some(body.as_ref()),
            deadline: Instant::now() + self.timeout,
            tls: &self.tls,
            read_body: true,
        })
        .map_err(|e| HttpError::from(e.message().to_string()))?;
        Ok(http::Response::builder()
            .status(response.status)
            .body(Bytes::from(response.body))?)
    }
}

/// A stored trace context: `00-<trace id>-<span id>-<flags>` (W3C `traceparent`).
fn traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

fn parse_traceparent(text: &str) -> Option<SpanContext> {
    let mut parts = text.trim().split('-');
    let (Some("00"), Some(trace), Some(span), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// The context of the run's root span, when spans are exported and the run has one.
fn stored_root(store: &mut dyn Store, run: &str) -> Option<SpanContext> {
    if !exporting() {
        return None;
    }
    store
        .trace_of(run)
        .ok()
        .flatten()
        .and_then(|text| parse_traceparent(&text))
}

/// Makes `span` a child of the (remote) span `parent`. Returns whether it did.
fn adopt(span: &Span, parent: SpanContext) -> bool {
    let context = opentelemetry::Context::new().with_remote_span_context(parent);
    span.set_parent(context).is_ok()
}

/// The span of one process driving a run: the run's root span `run` the first time (its
/// context is then stored with the run), else `resume`, a child of that root.
pub(crate) fn drive_span(store: &mut dyn Store, record: &RunRecord) -> Span {
    if let Some(root) = stored_root(store, &record.id) {
        let span = tracing::info_span!(
            "resume",
            otel.name = %format!("resume {}", record.workflow),
            flow.run_id = %record.id,
            flow.workflow = %record.workflow,
            flow.version = %record.version,
            flow.error_kind = field::Empty,
            otel.status_code = field::Empty,
        );
        if adopt(&span, root) {
            return span;
        }
    }
    let span = tracing::info_span!(
        "run",
        otel.name = %format!("run {}", record.workflow),
        flow.run_id = %record.id,
        flow.workflow = %record.workflow,
        flow.version = %record.version,
        flow.error_kind = field::Empty,
        otel.status_code = field::Empty,
    );
    if exporting() {
        let context = span.context();
        let root = context.span().span_context().clone();
        if root.is_valid() {
            // A run whose trace cannot be stored still runs; its later spans start a new
            // trace.
            let _ = store.set_trace(&record.id, &traceparent(&root));
        }
    }
    span
}

/// The span of a person's decision at a gate, in the run's trace, named after what they
/// decided (`decide release_signoff approved`). A refused decision has an error status.
pub(crate) fn decide_span(
    store: &mut dyn Store,
    record: &RunRecord,
    gate: &str,
    by: &str,
    decision: &str,
) -> Span {
    let span = tracing::info_span!(
        "decide",
        otel.name = %format!("decide {gate} {decision}"),
        flow.run_id = %record.id,
        flow.workflow = %record.workflow,
        flow.version = %record.version,
        flow.step = gate,
        flow.user = by,
        flow.decision = decision,
        flow.error_kind = field::Empty,
        otel.status_code = field::Empty,
    );
    if let Some(root) = stored_root(store, &record.id) {
        adopt(&span, root);
    }
    span
}

/// What kind of durable point a request is, and its name (the tool, gate, input request,
/// child workflow or audit event).
fn step_of(module: &Module, request: &Request) -> (&'static str, String) {
    let name = |names: &[String], index: u32| names.get(index as usize).cloned();
    let (kind, name) = match request {
        Request::Tool { tool, .. } => (
            "tool",
            module.tools.get(*tool as usize).map(|t| t.name.clone()),
        ),
        Request::Workflow { workflow, .. } => (
            "workflow",
            module
                .workflows
                .get(*workflow as usize)
                .map(|w| w.name.clone()),
        ),
        Request::ContinueAs { workflow, .. } => (
            "continue",
            module
                .workflows
                .get(*workflow as usize)
                .map(|w| w.name.clone()),
        ),
        Request::Approval { gate, .. } => ("approval", name(&module.gates, *gate)),
        Request::Input { request, .. } => (
            "input",
            module
                .input_requests
                .get(*request as usize)
                .map(|r| r.name.clone()),
        ),
        Request::Sleep { .. } => ("sleep", Some("sleep".to_string())),
        Request::Audit { event, .. } => ("audit", name(&module.events, *event)),
        Request::Now => ("now", Some("now".to_string())),
        Request::RunId => ("run_id", Some("run_id".to_string())),
        Request::Signal { signal } => (
            "signal",
            module.signals.get(*signal as usize).map(|s| s.name.clone()),
        ),
        Request::Select { .. } => ("select", Some("select".to_string())),
        Request::Parallel { .. } => ("parallel", Some("parallel".to_string())),
        Request::Compensate { .. } => ("compensate", Some("compensate".to_string())),
    };
    (kind, name.unwrap_or_default())
}

/// The span of one durable point. A tool call's attempt is recorded into it once known.
pub(crate) fn step_span(module: &Module, request: &Request, line: Option<i64>) -> Span {
    let span = tracing::info_span!(
        "step",
        otel.name = field::Empty,
        flow.step = field::Empty,
        flow.step_kind = field::Empty,
        flow.attempt = field::Empty,
        flow.line = line,
        flow.error_kind = field::Empty,
        otel.status_code = field::Empty,
    );
    if !span.is_disabled() {
        let (kind, name) = step_of(module, request);
        span.record("otel.name", format!("step {name}").as_str());
        span.record("flow.step", name.as_str());
        span.record("flow.step_kind", kind);
    }
    span
}

/// Marks `span` as failed with an error kind (`Timeout`, `Failed`, `Refused`, …): its
/// status is an error, whatever failed — a tool, a gate's time-out, a `fail`, a decision.
pub(crate) fn mark_failed(span: &Span, kind: &str) {
    span.record("flow.error_kind", kind);
    span.record("otel.status_code", "ERROR");
}

/// The span of one tool call (a client span; its status is an error when the call fails,
/// with the failure's kind — not its message: see [`mark_failed`]).
pub(crate) fn tool_span(info: &ToolInfo, attempt: i64) -> Span {
    Span::current().record("flow.attempt", attempt);
    let binding = match &info.binding {
        Binding::Http { .. } => "http",
        Binding::Exec { .. } => "exec",
        Binding::Llm { .. } => "llm",
    };
    tracing::info_span!(
        "tool",
        otel.name = %format!("tool {}", info.name),
        otel.kind = "client",
        flow.tool = %info.name,
        flow.binding = binding,
        flow.attempt = attempt,
        flow.error_kind = field::Empty,
        otel.status_code = field::Empty,
    )
}

/// Emits one `tracing` event per recorded history event: its kind, step name, attempt,
/// source line and duration — never its data. A second or later attempt of a tool call is
/// reported as `retry`; failures are warnings.
pub(crate) fn recorded(run: &str, events: &[NewEvent]) {
    for e in events {
        let kind = match e.kind {
            EventKind::StepStarted if e.attempt.is_some_and(|a| a > 1) => "retry",
            other => other.as_str(),
        };
        match e.kind {
            failure if failure.is_failure() => {
                // A failure is the error of the span it happens in: the step's (a tool, a
                // time-out, a gate's deadline) or the run's.
                let error_kind = error_kind(&e.data).unwrap_or_else(|| "Timeout".to_string());
                // (A gate's time-out happens outside any step and may be caught: only the
                // run's end marks the run's span.)
                if e.kind != EventKind::GateTimedOut {
                    mark_failed(&Span::current(), &error_kind);
                }
                tracing::warn!(
                    flow.run_id = run,
                    flow.step = e.step.as_deref(),
                    flow.attempt = e.attempt,
                    flow.line = e.line,
                    flow.duration_ms = e.duration_ms,
                    flow.error_kind = error_kind.as_str(),
                    "{kind}"
                );
            }
            _ => {
                tracing::info!(
                    flow.run_id = run,
                    flow.step = e.step.as_deref(),
                    flow.attempt = e.attempt,
                    flow.line = e.line,
                    flow.duration_ms = e.duration_ms,
                    "{kind}"
                );
            }
        }
    }
}

/// The error kind (`ToolError`, `Timeout`, …) of a failure event's data (a time-out's data
/// may name none: it is a `Timeout`).
fn error_kind(data: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(data).ok()?;
    json.get("kind")?.as_str().map(str::to_string)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip() {
        let context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let text = traceparent(&context);
        assert_eq!(
            text,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let back = parse_traceparent(&text).unwrap();
        assert_eq!(back.trace_id(), context.trace_id());
        assert_eq!(back.span_id(), context.span_id());
        assert!(back.is_remote());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-zz-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn log_formats_and_filters() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
        let settings = Settings {
            filter: Some(("FLOW_LOG".into(), "flow_runtime=loud".into())),
            ..Settings::default()
        };
        let error = init(&settings).err().unwrap();
        assert!(error.starts_with("FLOW_LOG=flow_runtime=loud"), "{error}");
        let settings = Settings {
            endpoint: Some((
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                "ftp://collector:4318".into(),
            )),
            ..Settings::default()
        };
        let error = init(&settings).err().unwrap();
        assert!(
            error.contains("must be an http:// or https:// URL"),
            "{error}"
        );
        // An https collector's CA file and client key are read before anything is exported.
        let settings = Settings {
            endpoint: Some((
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                "https://collector:4318".into(),
            )),
            certificate: Some((
                "OTEL_EXPORTER_OTLP_CERTIFICATE".into(),
                "/nonexistent/ca.pem".into(),
            )),
            ..Settings::default()
        };
        let error = init(&settings).err().unwrap();
        assert!(
            error.starts_with(
                "OTEL_EXPORTER_OTLP_CERTIFICATE: the file `/nonexistent/ca.pem`: cannot read it"
            ),
            "{error}"
        );
        let settings = Settings {
            client_key: Some((
                "OTEL_EXPORTER_OTLP_CLIENT_KEY".into(),
                "/nonexistent/key.pem".into(),
            )),
            ..settings
        };
        let settings = Settings {
            certificate: None,
            ..settings
        };
        let error = init(&settings).err().unwrap();
        assert!(
            error.starts_with("OTEL_EXPORTER_OTLP_CLIENT_KEY: the file `/nonexistent/key.pem`")
                && error.contains("(OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE)"),
            "{error}"
        );
    }
}
