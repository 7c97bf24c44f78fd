//! The HTTP API of `flowrt serve` (see `spec/server.md`): routes, authentication, and the
//! mapping of the engine's answers and refusals to JSON and status codes. Every handler does
//! its work in one job on the engine thread: authenticate, check, act.
//!
//! Refusals are recorded within bounds, so that sending refused requests is no way to fill
//! the disk: texts are cut ([`Refusal::new`]); the store counts repeats from one client in one
//! row of its log; a run's history takes at most [`HISTORY_REFUSALS`] `request_refused` of one
//! user a minute ([`RecentRefusals`]), the others going to the log.

use super::EngineHandle;
use crate::engine::{Engine, EngineError};
use crate::gates::{Action, RefusalKind};
use crate::ops::{self, Caller as Who, OpError, RunQuery};
use crate::store::{self, EventKind, Millis, Refusal, RunStatus};
use crate::tokens::{self, AuthError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const INDEX_HTML: &str = include_str!("inbox/index.html");
const APP_JS: &str = include_str!("inbox/app.js");
const STYLE_CSS: &str = include_str!("inbox/style.css");
/// The tab icon (browsers ask for `/favicon.ico` on every page): a small SVG.
const FAVICON_SVG: &str = include_str!("inbox/favicon.svg");

#[derive(Clone)]
pub struct App {
    engine: EngineHandle,
    recent: Arc<Mutex<RecentRefusals>>,
}

/// What a handler needs to know about who sends a request.
pub struct Caller {
    token: Option<String>,
    /// The client's IP address (repeated refusals are counted per address).
    client: String,
    /// The `Content-Type` header, when one was sent.
    content_type: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, Self::Rejection> {
        Ok(Caller {
            token: bearer(&parts.headers),
            client: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_default(),
            content_type: parts
                .headers
                .get(header::CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        })
    }
}

/// A request as its refusals record it.
struct Asked {
    /// `METHOD /path`.
    request: String,
    client: String,
}

/// How many refusals of one user a run's history takes in a window of
/// [`store::REFUSAL_WINDOW_MS`]; the others go to the refusal log, where repeats are counted.
pub const HISTORY_REFUSALS: u32 = 5;

/// How many refusals of each user each run's history took in the current window (since when).
/// Windows that ended are dropped once there are many.
#[derive(Default)]
pub struct RecentRefusals {
    windows: HashMap<(String, String), (Millis, u32)>,
}

/// Above this many entries, [`RecentRefusals`] forgets the windows that ended.
const RECENT_ENTRIES: usize = 10_000;

impl RecentRefusals {
    /// Whether a refusal of `user` on `run` at `now` goes to the run's history (one of the
    /// first [`HISTORY_REFUSALS`] of the window), counting it.
    fn goes_to_history(&mut self, user: &str, run: &str, now: Millis) -> bool {
        if self.windows.len() >= RECENT_ENTRIES {
            self.windows
                .retain(|_, (since, _)| now - *since < store::REFUSAL_WINDOW_MS);
        }
        let window = self
            .windows
            .entry((user.to_string(), run.to_string()))
            .or_insert((now, 0));
        if now - window.0 >= store::REFUSAL_WINDOW_MS {
            *window = (now, 0);
        }
        window.1 += 1;
        window.1 <= HISTORY_REFUSALS
    }
}

impl App {
    pub fn new(engine: EngineHandle) -> App {
        App {
            engine,
            recent: Arc::default(),
        }
    }

    /// Runs `work` on the engine thread as the request's user (after authenticating).
    async fn as_user(
        &self,
        caller: Caller,
        request: String,
        work: impl FnOnce(&mut Engine, &str) -> Result<Response, ApiError> + Send + 'static,
    ) -> Response {
        let asked = Asked {
            request,
            client: caller.client,
        };
        let recent = Arc::clone(&self.recent);
        let token = caller.token;
        let writes = !asked.request.starts_with("GET ");
        let answer = self
            .engine
            .call(writes, move |engine| {
                let user = authenticate(engine, token.as_deref(), &asked)?;
                work(engine, &user)
                    .inspect_err(|error| refused(engine, &recent, &user, &asked, error))
            })
            .await;
        answered(answer)
    }

    /// Like [`App::with_body`] in two parts (see [`EngineHandle::call_then`]): `first` runs
    /// with the other requests of its group, `then` once the runs they started were driven.
    async fn with_body_then<A: Send + 'static>(
        &self,
        caller: Caller,
        request: String,
        body: Bytes,
        first: impl FnOnce(&mut Engine, &str, Value) -> Result<A, ApiError> + Send + 'static,
        then: impl FnOnce(&mut Engine, A) -> Result<Response, ApiError> + Send + 'static,
    ) -> Response {
        let asked = Asked {
            request,
            client: caller.client,
        };
        let recent = Arc::clone(&self.recent);
        let (token, content_type) = (caller.token, caller.content_type);
        let answer = self
            .engine
            .call_then(
                move |engine| {
                    let user = authenticate(engine, token.as_deref(), &asked)?;
                    parse_body(content_type.as_deref(), &body)
                        .and_then(|body| first(engine, &user, body))
                        .inspect_err(|error| refused(engine, &recent, &user, &asked, error))
                },
                move |engine, started: Result<A, ApiError>| then(engine, started?),
            )
            .await;
        answered(answer)
    }
}

/// The response to a request the engine thread answered (or did not: shutting down, or what
/// it committed could not be made durable).
fn answered(answer: Option<Result<Response, ApiError>>) -> Response {
    match answer {
        Some(Ok(response)) => response,
        Some(Err(error)) => error.into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down, or could not make the result durable; try again",
        )
        .into_response(),
    }
}

impl App {
    /// Like [`App::as_user`] for a request with a JSON body: `work` gets the body parsed,
    /// after the media type was checked (415 unless `application/json`).
    async fn with_body(
        &self,
        caller: Caller,
        request: String,
        body: Bytes,
        work: impl FnOnce(&mut Engine, &str, Value) -> Result<Response, ApiError> + Send + 'static,
    ) -> Response {
        let content_type = caller.content_type.clone();
        self.as_user(caller, request, move |engine, user| {
            let body = parse_body(content_type.as_deref(), &body)?;
            work(engine, user, body)
        })
        .await
    }
}

pub fn router(app: App) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { static_file("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { static_file("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { static_file("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/favicon.ico",
            get(|| async { static_file("image/svg+xml", FAVICON_SVG) }),
        )
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/api/me", get(me))
        .route("/api/workflows", get(workflows))
        .route("/api/runs", get(list_runs).post(start_run))
        .route("/api/runs/{id}", get(run_status))
        .route("/api/runs/{id}/history", get(history))
        .route("/api/runs/{id}/audit", get(audit))
        .route("/api/runs/{id}/cancel", post(cancel))
        .route("/api/runs/{id}/resolve", post(resolve))
        .route("/api/decisions", get(decisions))
        .route("/api/runs/{id}/gates/{gate}/{action}", post(decide))
        .route("/api/runs/{id}/signals/{name}", post(send_signal))
        .route("/api/runs/{id}/queries/{name}", get(run_query))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response()
        })
        .with_state(app)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                ),
            ),
        ],
        body,
    )
        .into_response()
}

// ----- errors -------------------------------------------------------------------------

/// An error answer: `{"error": {"code", "message"}}` (and `problems` for 422).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    problems: Vec<Value>,
    /// The run a refusal concerns, recorded in its history.
    run: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            problems: Vec::new(),
            run: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A 422 whose message holds `PATH: why` parts (the engine's input errors).
    fn invalid(message: impl Into<String>) -> ApiError {
        let message = message.into();
        let problems = problems_in(&message);
        ApiError {
            problems,
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
        }
    }

    /// A body that is not sent as `application/json`.
    fn unsupported_media(content_type: Option<&str>) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            match content_type {
                Some(sent) => format!(
                    "the body is sent as `{}`; send it as JSON with `Content-Type: application/json`",
                    store::cut(sent, 100)
                ),
                None => "the body has no Content-Type; send it as JSON with `Content-Type: application/json`".to_string(),
            },
        )
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn about(mut self, run: &str) -> ApiError {
        self.run = Some(run.to_string());
        self
    }
}

/// An error answer outside any handler (the connection layer's 408, 413, 400).
pub fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if !self.problems.is_empty() {
            error["problems"] = Value::Array(self.problems);
        }
        (self.status, axum::Json(json!({ "error": error }))).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match error {
            EngineError::NoSuchRun(_) | EngineError::NoSuchWorkflow { .. } => {
                ApiError::not_found(error.to_string())
            }
            EngineError::Input(why) => ApiError::invalid(why),
            EngineError::Claimed(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("{error}; try again"),
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// An operation's refusal as the API answers it: the status, and the run it concerns (whose
/// trail records it).
impl From<OpError> for ApiError {
    fn from(error: OpError) -> ApiError {
        let message = error.to_string();
        match error {
            OpError::NoSuchRun(_) | OpError::NoSuchWorkflow(_) => ApiError::not_found(message),
            OpError::Forbidden { run: None, .. } => ApiError::forbidden(message),
            OpError::Forbidden { run: Some(run), .. } => ApiError::forbidden(message).about(&run),
            OpError::Finished { run, .. } => ApiError::conflict(message).about(&run),
            OpError::Refused { run, refusal } => {
                let error = match refusal.kind {
                    RefusalKind::NotFound => ApiError::not_found(message),
                    RefusalKind::Conflict => ApiError::conflict(message),
                    RefusalKind::Forbidden => ApiError::forbidden(message),
                    RefusalKind::Invalid => ApiError::invalid(message),
                };
                error.about(&run)
            }
            OpError::RejectWithoutComment => {
                ApiError::bad_request("a rejection needs a `comment` saying why")
            }
            OpError::ResolveWithoutNote => ApiError::bad_request(
                "resolving needs a `note` saying how what went wrong was handled",
            ),
            OpError::NothingToResolve(run) => ApiError::conflict(message).about(&run),
            OpError::Engine(error) => error.into(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> ApiError {
        EngineError::from(error).into()
    }
}

/// `$.a.b: expected Int, found string` parts of an input error, as `{path, message}`.
fn problems_in(message: &str) -> Vec<Value> {
    let Some(start) = message.find('$') else {
        return Vec::new();
    };
    let rest = &message[start..];
    match rest.find(": ") {
        Some(colon) => vec![json!({ "path": &rest[..colon], "message": &rest[colon + 2..] })],
        None => vec![json!({ "path": "$", "message": message })],
    }
}

// ----- authentication and refusals ----------------------------------------------------

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The token's user; a refusal is logged.
fn authenticate(
    engine: &mut Engine,
    token: Option<&str>,
    asked: &Asked,
) -> Result<String, ApiError> {
    let now = engine.now();
    match tokens::authenticate(engine.store(), token, now)? {
        Ok(record) if record.user == tokens::SCRAPER => {
            if tokens::SCRAPE_REQUESTS.contains(&asked.request.as_str()) {
                return Ok(record.user);
            }
            let error = ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token {} is a scrape token: it reads only {}",
                    record.id,
                    tokens::SCRAPE_REQUESTS.join(" and ")
                ),
            );
            log_refusal(
                engine,
                &format!("token {} (scrape)", record.id),
                asked,
                &error,
            );
            Err(error)
        }
        Ok(record) if tokens::system_of(&record.user).is_some() => {
            if tokens::system_may_ask(&asked.request) {
                return Ok(record.user);
            }
            let error = ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token {} acts as {}: a system token only sends signals (POST /api/runs/{{id}}/signals/{{name}})",
                    record.id, record.user
                ),
            );
            log_refusal(
                engine,
                &format!("token {} ({})", record.id, record.user),
                asked,
                &error,
            );
            Err(error)
        }
        Ok(record) => {
            if engine.config().user(&record.user).is_none() {
                let error = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    format!(
                        "the token's user `{}` is no longer in {}",
                        record.user,
                        engine.config().origin
                    ),
                );
                log_refusal(
                    engine,
                    &format!("token {} ({})", record.id, record.user),
                    asked,
                    &error,
                );
                return Err(error);
            }
            Ok(record.user)
        }
        Err(why) => {
            let who = match &why {
                AuthError::Missing => "no token".to_string(),
                AuthError::Unknown => "unknown token".to_string(),
                AuthError::Expired { id, user } | AuthError::Revoked { id, user } => {
                    format!("token {id} ({user})")
                }
            };
            let error = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why.to_string());
            log_refusal(engine, &who, asked, &error);
            Err(error)
        }
    }
}

/// Records a refusal in the server's refusal log (which cuts and counts, see the store).
fn log_refusal(engine: &mut Engine, who: &str, asked: &Asked, error: &ApiError) {
    let refusal = Refusal::new(
        engine.now(),
        &asked.client,
        who,
        &asked.request,
        i64::from(error.status.as_u16()),
        &error.message,
    );
    if let Err(e) = engine.store().record_refusal(&refusal) {
        tracing::error!(error = %e, "could not record a refused request");
    }
}

/// Records a refused request: in the run's history when it concerns one (unless this user
/// had [`HISTORY_REFUSALS`] recorded there this minute), else in the log.
fn refused(
    engine: &mut Engine,
    recent: &Mutex<RecentRefusals>,
    user: &str,
    asked: &Asked,
    error: &ApiError,
) {
    if !matches!(error.status.as_u16(), 401 | 403 | 409 | 422) {
        return;
    }
    let now = engine.now();
    let first = |run: &str| {
        recent
            .lock()
            .map(|mut r| r.goes_to_history(user, run, now))
            .unwrap_or(true)
    };
    if let Some(run) = error.run.as_deref().filter(|run| first(run)) {
        let event = ops::refusal_event(
            engine.now(),
            user,
            &asked.request,
            error.status.as_u16(),
            &error.message,
        );
        if engine.store().note(run, &event).is_ok() {
            return;
        }
    }
    log_refusal(engine, user, asked, error);
}

fn ok(value: Value) -> Result<Response, ApiError> {
    Ok(axum::Json(value).into_response())
}

/// A view, as JSON.
fn view(view: impl serde::Serialize) -> Result<Response, ApiError> {
    Ok(axum::Json(view).into_response())
}

/// Whether a `Content-Type` value is JSON: `application/json`, with parameters or not.
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The JSON object of a request body; an empty body is `{}`. A body must be sent as
/// `application/json` (a declared type that is not JSON is refused even with no body).
fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let empty = body.iter().all(u8::is_ascii_whitespace);
    match content_type {
        Some(sent) if !is_json(sent) => return Err(ApiError::unsupported_media(Some(sent))),
        None if !empty => return Err(ApiError::unsupported_media(None)),
        _ => {}
    }
    if empty {
        return Ok(json!({}));
    }
    let value: Value = crate::vm::value::parse_strict_json(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(value)
}

/// An optional string field of a request body.
fn text_field(body: &Value, name: &str) -> Result<Option<String>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::bad_request(format!(
            "`{name}` must be a string, not {other}"
        ))),
    }
}

// ----- handlers -----------------------------------------------------------------------

async fn health(State(app): State<App>) -> Response {
    match app.engine.call(false, |_| ()).await {
        Some(()) => axum::Json(json!({ "status": "ok" })).into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the engine has stopped",
        )
        .into_response(),
    }
}

async fn openapi(State(app): State<App>, caller: Caller) -> Response {
    app.as_user(caller, "GET /openapi.json".into(), |_, _| {
        ok(super::openapi::document())
    })
    .await
}

async fn me(State(app): State<App>, caller: Caller) -> Response {
    app.as_user(caller, "GET /api/me".into(), |engine, user| {
        let roles = engine
            .config()
            .user(user)
            .map(|u| u.roles.clone())
            .unwrap_or_default();
        ok(json!({ "user": user, "roles": roles }))
    })
    .await
}

async fn workflows(State(app): State<App>, caller: Caller) -> Response {
    app.as_user(caller, "GET /api/workflows".into(), |engine, user| {
        let mut versions = engine.store().versions()?;
        versions.reverse();
        let mut seen: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for (version, _) in versions {
            let module = engine.module(&version)?;
            for code in module.entry_workflows() {
                if seen.contains(&code.name) {
                    continue;
                }
                seen.push(code.name.clone());
                let properties: serde_json::Map<String, Value> = code
                    .params
                    .iter()
                    .map(|(name, ty)| {
                        (
                            name.clone(),
                            flow_compiler::bytecode::schema::form_schema(&module, *ty),
                        )
                    })
                    .collect();
                let required: Vec<&String> = code.params.iter().map(|(n, _)| n).collect();
                out.push(json!({
                    "name": code.name,
                    "version": version,
                    "input_schema": {
                        "type": "object",
                        "properties": properties,
                        "required": required,
                        "additionalProperties": false,
                        // The parameters in declaration order (JSON objects have none).
                        "x-order": required,
                    },
                    "output_schema": flow_compiler::bytecode::schema::json_schema(&module, code.ret),
                    "may_start": engine.config().may_start(user, &code.name).is_ok(),
                }));
            }
        }
        out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        ok(Value::Array(out))
    })
    .await
}

/// Starts a run and answers once it completed, failed or waits. Runs started by requests
/// that arrive together are driven together (one transaction per round of their steps).
async fn start_run(State(app): State<App>, caller: Caller, body: Bytes) -> Response {
    app.with_body_then(
        caller,
        "POST /api/runs".into(),
        body,
        move |engine, user, body| {
            let Some(workflow) = text_field(&body, "workflow")? else {
                return Err(ApiError::bad_request("give the `workflow` to start"));
            };
            let input = body.get("input").cloned().unwrap_or_else(|| json!({}));
            let start = ops::Start {
                workflow: &workflow,
                version: None,
                input: &input,
            };
            let id = ops::start(engine, Who::User(user), &start)?;
            engine.defer_drive(&id);
            Ok(id)
        },
        |engine, id: String| {
            let status = engine.store().run(&id)?.map(|r| r.status);
            // Not driven with the others (the batch failed): driven now.
            let status = match status {
                Some(RunStatus::Runnable) | None => engine.drive(&id)?,
                Some(status) => status,
            };
            Ok((
                StatusCode::CREATED,
                axum::Json(json!({ "id": id, "status": status.as_str() })),
            )
                .into_response())
        },
    )
    .await
}

async fn list_runs(
    State(app): State<App>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    app.as_user(caller, "GET /api/runs".into(), move |engine, user| {
        let limit = match query.get("limit") {
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("limit `{text}`: expected 1 to 10000"))
                })?,
            None => 100,
        };
        let mut runs = RunQuery {
            workflow: query.get("workflow").cloned(),
            limit: Some(limit),
            ..RunQuery::default()
        };
        if let Some(text) = query.get("status") {
            runs.filter_status(text)
                .map_err(|why| ApiError::bad_request(format!("status `{text}`: {why}")))?;
        }
        let query = runs;
        // Only the runs the user may read are listed.
        view(ops::list_runs(engine, Who::User(user), &query)?)
    })
    .await
}

async fn run_status(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> Response {
    app.as_user(
        caller,
        format!("GET /api/runs/{id}"),
        move |engine, user| view(ops::show_run(engine, Who::User(user), &id)?),
    )
    .await
}

async fn history(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> Response {
    app.as_user(
        caller,
        format!("GET /api/runs/{id}/history"),
        move |engine, user| view(ops::history(engine, Who::User(user), &id)?),
    )
    .await
}

async fn audit(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> Response {
    app.as_user(
        caller,
        format!("GET /api/runs/{id}/audit"),
        move |engine, user| view(ops::audit(engine, Who::User(user), &id)?),
    )
    .await
}

async fn cancel(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    app.with_body(
        caller,
        format!("POST /api/runs/{id}/cancel"),
        body,
        move |engine, user, body| {
            // `{"compensate": false}` ends the run at once, as `flowrt cancel --no-compensate`.
            let compensate = match body.get("compensate") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(ApiError::bad_request("`compensate` is true or false"));
                }
            };
            ops::cancel_with(engine, Who::User(user), &id, compensate)?;
            ok(json!({ "cancelled": true }))
        },
    )
    .await
}

/// `{"note": "…"}`: what made the run need attention was handled (role `operator`).
async fn resolve(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    app.with_body(
        caller,
        format!("POST /api/runs/{id}/resolve"),
        body,
        move |engine, user, body| {
            let note = text_field(&body, "note")?.unwrap_or_default();
            ops::resolve(engine, Who::User(user), &id, &note)?;
            ok(json!({ "resolved": true }))
        },
    )
    .await
}

async fn decisions(State(app): State<App>, caller: Caller) -> Response {
    app.as_user(caller, "GET /api/decisions".into(), |engine, user| {
        view(ops::pending(engine, Some(user))?)
    })
    .await
}

async fn decide(
    State(app): State<App>,
    caller: Caller,
    Path((id, gate, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let request = format!("POST /api/runs/{id}/gates/{gate}/{action}");
    app.with_body(caller, request, body, move |engine, user, body| {
        let view_hash = text_field(&body, "view_hash")?;
        let action = match action.as_str() {
            "approve" => Action::Approve {
                comment: text_field(&body, "comment")?.unwrap_or_default(),
            },
            "reject" => ops::reject(text_field(&body, "comment")?)?,
            "input" => {
                let Some(value) = body.get("value").cloned() else {
                    return Err(ApiError::bad_request("give the `value` for the input"));
                };
                Action::Input { value }
            }
            other => {
                return Err(ApiError::not_found(format!(
                    "no action `{other}`: approve, reject or input"
                )));
            }
        };
        let decided = ops::decide(engine, &id, &gate, user, action, view_hash.as_deref(), true)?;
        view(decided)
    })
    .await
}

/// Evaluates a query of a running run, for a caller who may read it.
async fn run_query(
    State(app): State<App>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    app.as_user(
        caller,
        format!("GET /api/runs/{id}/queries/{name}"),
        move |engine, user| view(ops::query(engine, Who::User(user), &id, &name)?),
    )
    .await
}

/// Sends a signal (`{"value": …}`; no body or no `value` for a signal without one).
async fn send_signal(
    State(app): State<App>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let request = format!("POST /api/runs/{id}/signals/{name}");
    app.with_body(caller, request, body, move |engine, user, body| {
        let value = body.get("value").cloned().unwrap_or(Value::Null);
        let sent = ops::signal(engine, Who::User(user), &id, &name, &value, true)?;
        view(sent)
    })
    .await
}

async fn metrics(State(app): State<App>, caller: Caller) -> Response {
    app.as_user(caller, "GET /metrics".into(), |engine, _| {
        let now = engine.now();
        let runs = engine.store().count_runs()?;
        // Every workflow with runs, by status (zeros included, so that a series does not
        // vanish when its last run moves on).
        let mut counts: std::collections::BTreeMap<(&str, &str), i64> = Default::default();
        let workflows: std::collections::BTreeSet<&str> =
            runs.iter().map(|(workflow, _, _)| workflow.as_str()).collect();
        for workflow in &workflows {
            for status in RunStatus::ALL {
                counts.insert((workflow, status.as_str()), 0);
            }
        }
        for (workflow, status, count) in &runs {
            *counts.entry((workflow.as_str(), status.as_str())).or_default() += count;
        }
        let open = engine.store().gate_counts()?;
        let steps_last_minute = engine.store().count_events(EventKind::StepCompleted, now - 60_000)?;
        let failures = engine.store().count_events(EventKind::NotifyFailed, 0)?;
        let mut text = String::new();
        text.push_str("# HELP flow_runs Runs by workflow and status.\n# TYPE flow_runs gauge\n");
        // Workflow names are identifiers: nothing in them needs escaping.
        for ((workflow, status), count) in counts {
            text.push_str(&format!(
                "flow_runs{{workflow=\"{workflow}\",status=\"{status}\"}} {count}\n"
            ));
        }
        text.push_str(&format!(
            "# HELP flow_steps_per_second Tool steps completed per second over the last minute.\n# TYPE flow_steps_per_second gauge\nflow_steps_per_second {}\n",
            steps_last_minute as f64 / 60.0
        ));
        text.push_str(&format!(
            "# HELP flow_open_gates Gates waiting for a person.\n# TYPE flow_open_gates gauge\nflow_open_gates{{kind=\"approval\"}} {}\nflow_open_gates{{kind=\"input\"}} {}\n",
            open.approvals, open.inputs
        ));
        text.push_str(&format!(
            "# HELP flow_oldest_open_gate_age_seconds How long the oldest open gate has waited.\n# TYPE flow_oldest_open_gate_age_seconds gauge\nflow_oldest_open_gate_age_seconds {}\n",
            open.oldest_opened_at.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0)
        ));
        text.push_str(&format!(
            "# HELP flow_notification_failures_total Notifications that could not be delivered.\n# TYPE flow_notification_failures_total counter\nflow_notification_failures_total {failures}\n"
        ));
        let attention = engine.store().count_needing_attention()?;
        text.push_str(&format!(
            "# HELP flow_runs_needing_attention Runs an operator must look at (an undo block failed).\n# TYPE flow_runs_needing_attention gauge\nflow_runs_needing_attention {attention}\n"
        ));
        Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            )],
            text,
        )
            .into_response())
    })
    .await
}
