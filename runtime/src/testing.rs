//! Running workflow tests (`flowc test`): a test plan from the compiler ([`TestCase`]) and
//! the test build of the program in, a verdict per test out.
//!
//! A test runs on the production path: the real engine, the real SQLite store (a private
//! in-memory database per test) and the real interpreter. Only the edges are scripted: tool
//! calls go to the test's mocks (a [`ToolDouble`]), notifications are recorded instead of
//! sent (a [`NotifyDouble`]), people's decisions go through the same rules as `flowrt
//! approve`, and time is the store's test clock, stopped: it moves only when the test moves
//! it. Timers that wait for no one — `sleep` and `retry` back-offs — elapse on their own
//! (the clock jumps to them); a gate's escalation and time-out only come when the test says
//! `advance`, each at its own due time.

use crate::config::Config;
use crate::engine::{Engine, EngineError, NotifyDouble, ToolDouble};
use crate::gates::{Action as Decision, DecideError, GateKind, PendingGate};
use crate::store::sqlite::SqliteStore;
use crate::store::{EventKind, RunStatus};
use crate::tools::{self, ToolFailure};
use crate::vm::machine::{Machine, Outcome};
use crate::vm::value::{Value, from_json};
use flow_compiler::bytecode::{Binding as BindingKind, Module, ToolInfo};
use flow_compiler::span::Span;
use flow_compiler::testing::{Action, ExpectedCall, MockAnswer, StartInput, TestCase};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How many timers may fire on their own after one step before the test is stopped (a
/// workflow that sleeps in an endless loop would otherwise never let the test end).
const MAX_TIMERS_PER_STEP: usize = 10_000;
/// The largest JSON file `start w json file "…"` reads: what `flowrt run --input @FILE` reads.
const MAX_INPUT_BYTES: u64 = 16 << 20;

/// The verdict on one test.
#[derive(Clone, Debug)]
pub struct TestResult {
    pub name: String,
    pub duration: Duration,
    /// `None` when the test passed.
    pub failure: Option<Failure>,
}

/// Why a test failed, at which step.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub span: Span,
    pub message: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
    pub help: Option<String>,
}

impl Failure {
    fn new(span: Span, message: impl Into<String>) -> Failure {
        Failure {
            span,
            message: message.into(),
            expected: None,
            actual: None,
            help: None,
        }
    }

    fn expected(mut self, expected: impl Into<String>, actual: impl Into<String>) -> Failure {
        self.expected = Some(expected.into());
        self.actual = Some(actual.into());
        self
    }

    fn help(mut self, help: impl Into<String>) -> Failure {
        self.help = Some(help.into());
        self
    }
}

/// Runs one test against `artifact` (the program's test build, `.flowb` bytes). `dir` is the
/// directory of the test's file: `start w json file "…"` paths are relative to it.
pub fn run_test(artifact: &[u8], case: &TestCase, config: &Config, dir: &Path) -> TestResult {
    let started = Instant::now();
    let failure = match TestRun::new(artifact, config, dir) {
        Ok(mut run) => run.steps(case).err(),
        Err(message) => Some(Failure::new(case.span, message)),
    };
    TestResult {
        name: case.name.clone(),
        duration: started.elapsed(),
        failure,
    }
}

/// One call a tool received.
#[derive(Clone, Debug)]
struct Call {
    tool: String,
    /// The arguments as the tool received them: `Secret`s in clear, to compare with.
    input: serde_json::Value,
    /// The arguments as a failure shows them: `Secret`s redacted.
    shown: serde_json::Value,
}

struct Mock {
    answer: MockAnswer,
    /// Calls it still serves; `None`: all of them.
    remaining: Option<u32>,
}

/// The test's tools: mocks in the order the test declared them, and every call.
struct Mocks {
    module: Rc<Module>,
    /// `flow.toml`: the bindings' base URLs and time limits, for the words of a failure.
    config: Config,
    mocks: RefCell<HashMap<String, Vec<Mock>>>,
    calls: RefCell<Vec<Call>>,
    /// Calls nothing was scripted for (the test fails at the step that made them).
    unscripted: RefCell<Vec<String>>,
}

impl ToolDouble for Mocks {
    fn call(
        &self,
        _run: &str,
        tool: &ToolInfo,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, ToolFailure> {
        self.calls.borrow_mut().push(Call {
            tool: tool.name.clone(),
            input: input.clone(),
            shown: redacted(&self.module, tool, input),
        });
        let answer = {
            let mut mocks = self.mocks.borrow_mut();
            let next = mocks
                .get_mut(&tool.name)
                .and_then(|list| list.iter_mut().find(|m| m.remaining != Some(0)));
            match next {
                Some(mock) => {
                    if let Some(n) = &mut mock.remaining {
                        *n -= 1;
                    }
                    Some(mock.answer.clone())
                }
                None => None,
            }
        };
        let Some(answer) = answer else {
            self.unscripted.borrow_mut().push(tool.name.clone());
            return Err(ToolFailure::tool_error(
                format!(
                    "tool `{}` was called but the test does not mock it",
                    tool.name
                ),
                false,
            ));
        };
        match answer {
            MockAnswer::Returns { helper, with_args } => {
                let args = if with_args {
                    arguments(&self.module, tool, input)?
                } else {
                    Vec::new()
                };
                evaluate(&self.module, &helper, args)
                    .map(|v| v.to_json_revealing())
                    .map_err(|why| ToolFailure::tool_error(why, false))
            }
            MockAnswer::Replies(raw) => serde_json::from_str(raw.trim())
                .map_err(|e| self.binding(tool, input).not_json(&e.to_string(), &raw)),
            MockAnswer::Fails {
                kind,
                message,
                retryable: _,
            } if !flow_compiler::testing::MOCK_FAILURES.contains(&kind.as_str()) => {
                Err(self.named_failure(tool, &kind, message.as_deref().unwrap_or_default()))
            }
            MockAnswer::Fails {
                kind,
                message,
                retryable,
            } => Err(self
                .binding(tool, input)
                .failure(&kind, message.as_deref(), retryable)),
        }
    }
}

impl Mocks {
    /// `mock t fails NotFound "{\"id\": \"x\"}"`: the answer the tool's `raises` turns
    /// into that named error — the status (or exit status) it declares, with `body` as the
    /// answer's body — so the workflow gets exactly what the real tool would give it.
    fn named_failure(&self, tool: &ToolInfo, kind: &str, body: &str) -> ToolFailure {
        let module = &self.module;
        let raise = module.tool_raises.iter().find(|r| {
            module.tools.get(r.tool as usize).is_some_and(|t| t.name == tool.name)
                && matches!(module.type_desc(r.error), Some(flow_compiler::bytecode::TypeDesc::Record { name, .. }) if name == kind)
        });
        let Some(raise) = raise else {
            return ToolFailure::tool_error(
                format!(
                    "the test mocks `{}` failing with `{kind}`, which it does not raise (declare it on the tool: `raises {kind} on …`)",
                    tool.name
                ),
                false,
            );
        };
        let json = serde_json::from_str::<serde_json::Value>(body.trim()).ok();
        match raise.on {
            flow_compiler::bytecode::RaiseCode::Status(status) => {
                let response = crate::http_client::Response {
                    version: "HTTP/1.1".to_string(),
                    status,
                    reason: String::new(),
                    headers: Vec::new(),
                    body: body.as_bytes().to_vec(),
                };
                let what = self
                    .binding(tool, &serde_json::Value::Null)
                    .request()
                    .unwrap_or_else(|| tool.name.clone());
                tools::http::classify(&what, "", Ok(response), &(0, String::new()))
                    .err()
                    .unwrap_or_else(|| ToolFailure::tool_error(what, false))
            }
            flow_compiler::bytecode::RaiseCode::Exit(code) => {
                tools::exec::exited(&tool.name, Some(i32::from(code)), "")
                    .answered(tools::AnswerCode::Exit(i64::from(code)), json)
            }
            // The mock's text is the model's refusal (or a JSON body with its `reason`).
            flow_compiler::bytecode::RaiseCode::Refusal => {
                let body = json
                    .filter(|j| j.get("reason").is_some())
                    .unwrap_or_else(|| serde_json::json!({ "reason": body.trim() }));
                ToolFailure::invalid_output(format!(
                    "tool `{}` refused to answer: {}",
                    tool.name,
                    body["reason"].as_str().unwrap_or_default()
                ))
                .answered(tools::AnswerCode::Refusal, Some(body))
            }
        }
    }

    fn binding<'a>(&'a self, tool: &'a ToolInfo, input: &serde_json::Value) -> Binding<'a> {
        Binding {
            tool,
            config: &self.config,
            input: input.clone(),
        }
    }
}

/// A mocked failure in the words the tool's real binding uses — `tool `x`: POST http://…
/// answered 503 Service Unavailable (retryable: a server error): <text>` for `http`, `tool
/// `x` failed with exit status 1: <text>` for `exec` — so that a handler matching on the
/// message behaves in a test as in production. The messages come from the bindings' own
/// functions.
struct Binding<'a> {
    tool: &'a ToolInfo,
    config: &'a Config,
    input: serde_json::Value,
}

impl Binding<'_> {
    /// How the binding names the request in its messages (`None`: an `exec` tool, which
    /// names only the tool).
    fn request(&self) -> Option<String> {
        let name = &self.tool.name;
        match &self.tool.binding {
            BindingKind::Http { method, path } => {
                let method = method.to_ascii_uppercase();
                // Without a base URL in flow.toml, the path as written (the real call would
                // not be made at all).
                let base = self
                    .config
                    .tools
                    .get(name)
                    .and_then(|c| c.base_url.as_deref());
                let url =
                    tools::http::request_url(Some(base.unwrap_or("")), &method, path, &self.input)
                        .unwrap_or_else(|| path.clone());
                Some(tools::http::request_name(name, &method, &url))
            }
            BindingKind::Llm { model, .. } => {
                let base = self.config.llm.as_ref().and_then(|c| c.base_url.as_deref());
                let url = tools::llm::endpoint(base.unwrap_or("[llm] base_url"));
                Some(tools::llm::request_name(name, model, &url))
            }
            BindingKind::Exec { .. } => None,
        }
    }

    fn not_json(&self, error: &str, text: &str) -> ToolFailure {
        match (&self.tool.binding, self.request()) {
            (BindingKind::Llm { .. }, Some(what)) => tools::llm::not_json(&what, error, text),
            (_, Some(what)) => tools::http::not_json(&what, error, text),
            (_, None) => tools::exec::not_json(&self.tool.name, error, text),
        }
    }

    /// `kind` is `ToolError`, `InvalidOutput` or `Timeout` (the compiler refuses others).
    fn failure(&self, kind: &str, text: Option<&str>, retryable: bool) -> ToolFailure {
        let text = text.unwrap_or_default();
        let mut failure = match (kind, self.request()) {
            ("InvalidOutput", _) => {
                let error = serde_json::from_str::<serde_json::Value>(text)
                    .err()
                    .map_or_else(|| "mocked".to_string(), |e| e.to_string());
                self.not_json(&error, text)
            }
            ("Timeout", Some(what)) => {
                let limit = self.time_limit();
                let sent = Err(crate::http_client::SendError::Timeout(
                    "waiting for the response".into(),
                ));
                tools::http::classify(&what, "", sent, &limit)
                    .err()
                    .unwrap_or_else(|| ToolFailure::timeout(what))
            }
            ("Timeout", None) => tools::exec::timed_out(&self.tool.name, &self.time_limit().1, ""),
            (_, Some(what)) => {
                let (status, reason, body) = http_status(text, retryable);
                let response = crate::http_client::Response {
                    version: "HTTP/1.1".to_string(),
                    status,
                    reason: reason.to_string(),
                    headers: Vec::new(),
                    body: body.as_bytes().to_vec(),
                };
                tools::http::classify(&what, "", Ok(response), &self.time_limit())
                    .err()
                    .unwrap_or_else(|| ToolFailure::tool_error(what, retryable))
            }
            (_, None) => tools::exec::exited(&self.tool.name, Some(1), text)
                .answered(tools::AnswerCode::Exit(1), None),
        };
        // `permanent` is the test's word: no retry, whatever the binding would decide.
        failure.retryable &= retryable;
        failure
    }

    /// The binding's time limit and the phrase naming it (no `timeout` block: the test
    /// cannot know one at a mock).
    fn time_limit(&self) -> (u64, String) {
        let name = &self.tool.name;
        let (configured, default) = match &self.tool.binding {
            BindingKind::Http { .. } => (
                self.config.tools.get(name).and_then(|c| c.timeout_ms),
                tools::http::DEFAULT_TIMEOUT_MS,
            ),
            BindingKind::Llm { .. } => (
                self.config.llm.as_ref().and_then(|c| c.timeout_ms),
                tools::llm::DEFAULT_TIMEOUT_MS,
            ),
            BindingKind::Exec { .. } => (
                self.config.exec_timeout_ms(name),
                tools::exec::DEFAULT_TIMEOUT_MS,
            ),
        };
        let context = tools::CallContext {
            run_id: String::new(),
            idempotency_key: String::new(),
            time_limit_ms: None,
        };
        tools::http::time_limit(&context, configured, default)
    }
}

/// The HTTP answer a mocked `ToolError` stands for: a text that starts with a status
/// (`"404 customer not found"`) is that answer; otherwise a 503 (400 when `permanent`).
fn http_status(text: &str, retryable: bool) -> (u16, &'static str, &str) {
    let (code, rest) = text.split_once(' ').unwrap_or((text, ""));
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| (300..600).contains(c) && code.len() == 3);
    let (status, body) = match status {
        Some(status) => (status, rest.trim()),
        None if retryable => (503, text),
        None => (400, text),
    };
    let reason = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    };
    // "503 Service Unavailable" says the status only.
    let body = body.strip_prefix(reason).map_or(body, str::trim);
    (status, reason, body)
}

/// What the gates announced: every notification the hooks of `flow.toml` would have been
/// sent. A test is hermetic: it never messages the approvers about a scripted run.
#[derive(Default)]
struct Announcements {
    messages: RefCell<Vec<serde_json::Value>>,
}

impl NotifyDouble for Announcements {
    fn announce(&self, message: &serde_json::Value) {
        self.messages.borrow_mut().push(message.clone());
    }
}

/// A call's arguments as JSON with every `Secret` the tool's parameter types declare
/// redacted: what a failure message may show.
fn redacted(module: &Module, tool: &ToolInfo, input: &serde_json::Value) -> serde_json::Value {
    let fields = tool
        .params
        .iter()
        .map(|(name, ty)| {
            let json = input.get(name).unwrap_or(&serde_json::Value::Null);
            let shown = from_json(module, *ty, json, name).map_or_else(
                |_| serde_json::Value::String(crate::vm::value::REDACTED.to_string()),
                |v| v.to_json(),
            );
            (name.clone(), shown)
        })
        .collect();
    serde_json::Value::Object(fields)
}

/// The values of a call's arguments, in parameter order.
fn arguments(
    module: &Module,
    tool: &ToolInfo,
    input: &serde_json::Value,
) -> Result<Vec<Value>, ToolFailure> {
    tool.params
        .iter()
        .map(|(name, ty)| {
            let json = input.get(name).unwrap_or(&serde_json::Value::Null);
            from_json(module, *ty, json, name)
                .map_err(|e| ToolFailure::tool_error(format!("argument `{name}`: {e}"), false))
        })
        .collect()
}

/// Runs a helper workflow of the test build to its value. Helpers only compute (the
/// compiler refuses steps in them), so they never stop at a durable point.
fn evaluate(module: &Module, helper: &str, args: Vec<Value>) -> Result<Value, String> {
    let (index, _) = module
        .workflow(helper)
        .ok_or_else(|| format!("the test build has no helper `{helper}`"))?;
    // A helper reads no clock (`now()` is a step, and the compiler refuses steps in it).
    let mut machine = Machine::start(module, index as u32, args, 0)
        .ok_or_else(|| format!("helper `{helper}` has no code"))?;
    match machine.run(module) {
        Outcome::Completed(value) => Ok(value),
        Outcome::Failed(error) => Err(format!("{}: {}", error.kind, error.message)),
        Outcome::Durable { .. } => Err("a test value tried to perform a step".into()),
    }
}

struct TestRun {
    engine: Engine,
    module: Rc<Module>,
    version: String,
    mocks: Rc<Mocks>,
    announcements: Rc<Announcements>,
    /// The run of the last `start`.
    run: Option<String>,
    /// The runs named with `let r = start …`, by name.
    named: HashMap<String, String>,
    /// Every run a `start` started, in order.
    started: Vec<String>,
    /// The run the current step names with `in r`, if it names one.
    selected: Option<String>,
    /// The gate of the last `expect approval` / `expect input`.
    gate: Option<String>,
    /// The directory of the test's file.
    dir: std::path::PathBuf,
}

impl TestRun {
    fn new(artifact: &[u8], config: &Config, dir: &Path) -> Result<TestRun, String> {
        let store = SqliteStore::in_memory().map_err(|e| e.to_string())?;
        let mut engine = Engine::new(Box::new(store), "flowc-test");
        engine.enable_test_clock().map_err(|e| e.to_string())?;
        engine.load_clock().map_err(|e| e.to_string())?;
        engine.stop_test_clock().map_err(|e| e.to_string())?;
        engine.set_config(config.clone());
        let (version, module) = engine.deploy(artifact).map_err(|e| e.to_string())?;
        let mocks = Rc::new(Mocks {
            module: module.clone(),
            config: config.clone(),
            mocks: RefCell::new(HashMap::new()),
            calls: RefCell::new(Vec::new()),
            unscripted: RefCell::new(Vec::new()),
        });
        engine.set_tool_double(mocks.clone());
        let announcements = Rc::new(Announcements::default());
        engine.set_notify_double(announcements.clone());
        Ok(TestRun {
            engine,
            module,
            version,
            mocks,
            announcements,
            run: None,
            named: HashMap::new(),
            started: Vec::new(),
            selected: None,
            gate: None,
            dir: dir.to_path_buf(),
        })
    }

    fn steps(&mut self, case: &TestCase) -> Result<(), Failure> {
        for step in &case.steps {
            // The compiler checked that the name was given by an earlier `start`.
            self.selected = step.run.as_ref().and_then(|r| self.named.get(r).cloned());
            self.step(step.span, &step.action)?;
            let unscripted = self.mocks.unscripted.borrow_mut().split_off(0);
            if let Some(tool) = unscripted.first() {
                return Err(Failure::new(
                    step.span,
                    format!("tool `{tool}` was called, but the test does not mock it (or not that many times)"),
                )
                .help(format!("script its answer before this step: `mock {tool} returns …`")));
            }
        }
        Ok(())
    }

    fn engine_failure(span: Span) -> impl Fn(EngineError) -> Failure {
        move |e| Failure::new(span, format!("the runtime stopped: {e}"))
    }

    /// Drives every run as far as it goes; timers no one waits on elapse.
    fn settle(&mut self, span: Span) -> Result<(), Failure> {
        self.run_clock(span, None)
    }

    /// Drives every run, moving the clock as real time would: to each timer that falls due,
    /// in order, up to `until` (the end of an `advance`) — or beyond it, up to the next timer
    /// no one waits on (a `sleep`, a `retry` back-off), which elapses on its own. A gate's
    /// escalation or time-out due within that reach fires at its own time, so a handler that
    /// opens the next gate starts that gate's clock then, and a chain of time-outs fires
    /// link by link. Ends at `until` once nothing more falls due.
    fn run_clock(&mut self, span: Span, until: Option<i64>) -> Result<(), Failure> {
        for _ in 0..MAX_TIMERS_PER_STEP {
            self.engine
                .work_once()
                .map_err(Self::engine_failure(span))?;
            let waiting = self
                .engine
                .store()
                .runs(Some(RunStatus::Waiting))
                .map_err(|e| Failure::new(span, e.to_string()))?;
            let next_sleep = waiting
                .iter()
                .filter(|r| r.waiting() == Some(crate::history::WaitingOn::Timer))
                .filter_map(|r| r.wake_at)
                .min();
            let reach = match (until, next_sleep) {
                (Some(end), Some(sleep)) => Some(end.max(sleep)),
                (end, sleep) => end.or(sleep),
            };
            let now = self.engine.now();
            let next = waiting
                .iter()
                .filter_map(|r| r.wake_at)
                .filter(|at| reach.is_some_and(|reach| *at <= reach))
                .min();
            let Some(at) = next else {
                if let Some(end) = until.filter(|end| *end > now) {
                    self.engine
                        .advance_clock(end - now)
                        .map_err(Self::engine_failure(span))?;
                }
                return Ok(());
            };
            self.engine
                .advance_clock((at - now).max(0))
                .map_err(Self::engine_failure(span))?;
        }
        Err(Failure::new(
            span,
            format!("more than {MAX_TIMERS_PER_STEP} timers fired after this step"),
        )
        .help("a `sleep`, `retry` or gate time-out in a loop that never ends? the test stopped it"))
    }

    /// The run the step is about: the one it names with `in r`, else the last started.
    /// The run a step is about: the one it names, else the last started — followed through
    /// `continue as` to the run that goes on.
    fn current_run(&mut self, span: Span) -> Result<String, Failure> {
        let mut run = self
            .selected
            .clone()
            .or_else(|| self.run.clone())
            .ok_or_else(|| Failure::new(span, "no run has been started"))?;
        while let Some(record) = self
            .engine
            .store()
            .run(&run)
            .map_err(|e| Failure::new(span, e.to_string()))?
            && record.status == RunStatus::Continued
        {
            run = crate::engine::successor_of(&run);
        }
        Ok(run)
    }

    /// The run the step names with `in r` and its child runs, at any depth; `None` (every
    /// run) when the step names none.
    fn selected_runs(&mut self, span: Span) -> Result<Option<HashSet<String>>, Failure> {
        let Some(root) = self.selected.clone() else {
            return Ok(None);
        };
        let runs = self
            .engine
            .store()
            .runs(None)
            .map_err(|e| Failure::new(span, e.to_string()))?;
        let mut tree = HashSet::from([root]);
        // A child starts after its parent: each pass adds a generation, and one without news
        // ends it.
        loop {
            let before = tree.len();
            for run in &runs {
                if run.parent.as_ref().is_some_and(|p| tree.contains(p)) {
                    tree.insert(run.id.clone());
                }
                // The runs it continued as are the same run, going on.
                if run.status == RunStatus::Continued && tree.contains(&run.id) {
                    tree.insert(crate::engine::successor_of(&run.id));
                }
            }
            if tree.len() == before {
                return Ok(Some(tree));
            }
        }
    }

    fn step(&mut self, span: Span, action: &Action) -> Result<(), Failure> {
        match action {
            Action::Mock {
                tool,
                answer,
                times,
            } => {
                self.mocks
                    .mocks
                    .borrow_mut()
                    .entry(tool.clone())
                    .or_default()
                    .push(Mock {
                        answer: answer.clone(),
                        remaining: *times,
                    });
                Ok(())
            }
            Action::Start {
                name,
                workflow,
                input,
                by,
            } => {
                let input = self.start_input(span, workflow, input)?;
                self.start(span, workflow, &input, by.as_deref().unwrap_or("test"))?;
                if let (Some(name), Some(run)) = (name, &self.run) {
                    self.named.insert(name.clone(), run.clone());
                }
                Ok(())
            }
            Action::ExpectGate {
                input,
                gate,
                fields,
            } => {
                let fields = self.fields(span, fields.as_deref())?;
                self.expect_gate(span, *input, gate, fields.as_ref())
            }
            Action::Decide {
                approve,
                gate,
                user,
                comment,
                refused,
            } => {
                let comment = comment.clone().unwrap_or_default();
                let action = if *approve {
                    Decision::Approve { comment }
                } else {
                    Decision::Reject { comment }
                };
                self.decide(span, gate.as_deref(), user, action, *refused)
            }
            Action::Provide {
                gate,
                user,
                value,
                refused,
            } => {
                let value =
                    evaluate(&self.module, value, Vec::new()).map_err(|e| Failure::new(span, e))?;
                let action = Decision::Input {
                    value: value.to_json_revealing(),
                };
                self.decide(span, Some(gate), user, action, *refused)
            }
            Action::Signal {
                name,
                user,
                value,
                refused,
            } => self.signal(span, name, user, value.as_deref(), *refused),
            Action::Cancel { compensate } => {
                let run = self.current_run(span)?;
                let cancelled = if *compensate {
                    self.engine.cancel(&run, "test")
                } else {
                    self.engine.cancel_plainly(&run, "test")
                }
                .map_err(Self::engine_failure(span))?;
                if !cancelled {
                    return Err(Failure::new(span, format!("run {run} has already ended")));
                }
                self.run_clock(span, None)
            }
            Action::Advance { ms } => {
                let end = self
                    .engine
                    .now()
                    .saturating_add(i64::try_from(*ms).unwrap_or(i64::MAX));
                self.run_clock(span, Some(end))
            }
            Action::ExpectResult { helper, expected } => self.expect_result(span, helper, expected),
            Action::ExpectQuery {
                query,
                helper,
                expected,
            } => self.expect_query(span, query, helper, expected),
            Action::ExpectError { kind, message } => {
                self.expect_error(span, kind, message.as_deref())
            }
            Action::ExpectCalled {
                tool,
                negated,
                times,
                args,
            } => self.expect_called(span, tool, *negated, *times, args.as_deref()),
            Action::ExpectCallOrder { calls } => self.expect_call_order(span, calls),
            Action::ExpectAudit { event, fields } => {
                let fields = self.fields(span, fields.as_deref())?;
                self.expect_event(
                    span,
                    EventKind::Audit,
                    event,
                    "audit event",
                    fields.as_ref(),
                )
            }
            Action::ExpectNotified { gate, fields } => {
                let fields = self.fields(span, fields.as_deref())?;
                self.expect_notified(span, gate, fields.as_ref())
            }
            Action::ExpectEscalated { gate } => self.expect_event(
                span,
                EventKind::GateEscalated,
                gate,
                "escalation of gate",
                None,
            ),
            Action::ExpectStatus { status } => {
                let run = self.current_run(span)?;
                let record = self
                    .engine
                    .store()
                    .run(&run)
                    .map_err(|e| Failure::new(span, e.to_string()))?;
                if record.is_some_and(|r| r.status.as_str() == status) {
                    return Ok(());
                }
                let actual = self.status_text(span, &run)?;
                Err(Failure::new(span, "the run's status differs").expected(status, actual))
            }
        }
    }

    /// A run's input object: the arguments' values, or the JSON text (read as `flowrt run
    /// --input` reads it: one key twice is refused).
    fn start_input(
        &self,
        span: Span,
        workflow: &str,
        input: &StartInput,
    ) -> Result<serde_json::Value, Failure> {
        let (text, origin) = match input {
            StartInput::Args(args) => {
                let (_, code) = self
                    .module
                    .workflow(workflow)
                    .ok_or_else(|| Failure::new(span, format!("no workflow `{workflow}`")))?;
                let mut input = serde_json::Map::new();
                for ((name, _), helper) in code.params.iter().zip(args) {
                    let value = evaluate(&self.module, helper, Vec::new())
                        .map_err(|e| Failure::new(span, e))?;
                    input.insert(name.clone(), value.to_json_revealing());
                }
                return Ok(serde_json::Value::Object(input));
            }
            StartInput::Json(text) => (text.clone(), "the JSON input".to_string()),
            StartInput::JsonFile(path) => {
                let full = self.dir.join(path);
                let bytes = flow_compiler::sources::read_regular_file(&full, MAX_INPUT_BYTES)
                    .map_err(|why| {
                        Failure::new(span, format!("cannot read `{}`: {why}", full.display()))
                            .help("the path is relative to the test's file")
                    })?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    Failure::new(span, format!("`{}` is not UTF-8 text", full.display()))
                })?;
                (text, format!("`{}`", full.display()))
            }
        };
        let json = crate::vm::value::parse_strict_json(text.as_bytes()).map_err(|e| {
            // serde's message says the line and column, within the JSON text.
            Failure::new(span, format!("{origin} is not valid JSON: {e}"))
                .help("write the run's input object as `flowrt run --input` takes it: one field per parameter")
        })?;
        Ok(json)
    }

    fn start(
        &mut self,
        span: Span,
        workflow: &str,
        input: &serde_json::Value,
        by: &str,
    ) -> Result<(), Failure> {
        let id = self
            .engine
            .start(&self.version, workflow, input, by)
            .map_err(|e| match e {
                EngineError::Input(why) => Failure::new(
                    span,
                    format!("the input does not fit the parameters of `{workflow}`"),
                )
                .expected(self.parameters_text(workflow), why),
                other => Self::engine_failure(span)(other),
            })?;
        self.started.push(id.clone());
        self.run = Some(id);
        self.gate = None;
        self.settle(span)
    }

    /// How a failure names a run: by its name in the test, else by its `start` (run ids
    /// differ from one test run to the next).
    fn run_name(&self, id: &str) -> String {
        if let Some((name, _)) = self.named.iter().find(|(_, run)| *run == id) {
            return format!("run `{name}`");
        }
        match self.started.iter().position(|run| run == id) {
            Some(n) => format!("the run of `start` number {}", n + 1),
            None => "a child run".to_string(),
        }
    }

    /// `{ id: String, by: Time }`: what a workflow's input object holds.
    fn parameters_text(&self, workflow: &str) -> String {
        let params = self
            .module
            .workflow(workflow)
            .map_or_else(Vec::new, |(_, code)| {
                code.params
                    .iter()
                    .map(|(name, ty)| format!("{name}: {}", self.module.type_name(*ty)))
                    .collect()
            });
        format!("an object {{ {} }}", params.join(", "))
    }

    /// The open gates of the run the step is about (and of its child runs); every open gate
    /// when the step names no run.
    fn pending(&mut self, span: Span) -> Result<Vec<PendingGate>, Failure> {
        let open = self
            .engine
            .pending(None)
            .map_err(Self::engine_failure(span))?;
        let runs = self.selected_runs(span)?;
        Ok(open
            .into_iter()
            .filter(|g| runs.as_ref().is_none_or(|r| r.contains(&g.run)))
            .collect())
    }

    fn describe_open(gates: &[PendingGate]) -> String {
        if gates.is_empty() {
            return "no gate is open".into();
        }
        gates
            .iter()
            .map(|g| format!("{} \"{}\"", kind_word(g.kind), g.gate))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn expect_gate(
        &mut self,
        span: Span,
        input: bool,
        gate: &str,
        fields: Option<&serde_json::Value>,
    ) -> Result<(), Failure> {
        let open = self.pending(span)?;
        let kind = if input {
            GateKind::Input
        } else {
            GateKind::Approval
        };
        let named: Vec<&PendingGate> = open
            .iter()
            .filter(|g| g.gate == gate && g.kind == kind)
            .collect();
        if named
            .iter()
            .any(|g| fields.is_none_or(|wanted| holds(&gate_view(g), wanted)))
        {
            self.gate = Some(gate.to_string());
            return Ok(());
        }
        if let (Some(wanted), false) = (fields, named.is_empty()) {
            // Only the fields the test asked about: the rest would bury the difference.
            let shown: Vec<String> = named
                .iter()
                .map(|g| asked_fields(&gate_view(g), wanted).to_string())
                .collect();
            return Err(Failure::new(
                span,
                format!("the {} \"{gate}\" shows something else", kind_word(kind)),
            )
            .expected(
                format!("{} \"{gate}\" with {wanted}", kind_word(kind)),
                shown.join("\n"),
            ));
        }
        let what = format!("{} \"{gate}\" open", kind_word(kind));
        let mut failure = Failure::new(
            span,
            format!("the {} \"{gate}\" is not open", kind_word(kind)),
        )
        .expected(what, Self::describe_open(&open));
        if let Ok(run) = self.current_run(span) {
            failure.actual = Some(format!(
                "{}; the run is {}",
                failure.actual.unwrap_or_default(),
                self.status_text(span, &run)?
            ));
        }
        Err(failure)
    }

    fn decide(
        &mut self,
        span: Span,
        gate: Option<&str>,
        user: &str,
        action: Decision,
        must_be_refused: bool,
    ) -> Result<(), Failure> {
        let open = self.pending(span)?;
        let wanted = gate.map(str::to_string).or_else(|| self.gate.clone());
        let candidates: Vec<&PendingGate> = open
            .iter()
            .filter(|g| wanted.as_ref().is_none_or(|w| &g.gate == w))
            .collect();
        let target = match candidates.as_slice() {
            [one] => (*one).clone(),
            [] => {
                let what = wanted.map_or("a gate".to_string(), |w| format!("\"{w}\""));
                return Err(Failure::new(
                    span,
                    format!("no open gate to decide: {what} is not waiting"),
                )
                .expected(format!("{what} open"), Self::describe_open(&open)));
            }
            several => {
                let mut each: Vec<String> = several
                    .iter()
                    .map(|g| {
                        format!(
                            "{} \"{}\" in {}",
                            kind_word(g.kind),
                            g.gate,
                            self.run_name(&g.run)
                        )
                    })
                    .collect();
                each.sort();
                let same_name = several.iter().all(|g| g.gate == several[0].gate);
                let help = if same_name {
                    "several runs wait at this gate: name the runs when they start (`let r1 = start …`) and say which one: `approve \"name\" as \"user\" in r1`"
                } else {
                    "name the gate: `approve \"name\" as \"user\"`, or `expect approval \"name\"` first"
                };
                return Err(Failure::new(span, "several gates are open; say which one")
                    .expected("one open gate", each.join("; "))
                    .help(help));
            }
        };
        // A refusal must be for the reason the test is about, not a typo or the wrong step.
        if self.engine.config().user(user).is_none() {
            return Err(Failure::new(
                span,
                format!("`{user}` is not a user of {}", self.engine.config().origin),
            )
            .help("name a user of flow.toml (or pass --config)"));
        }
        let wanted_kind = match action {
            Decision::Input { .. } => GateKind::Input,
            _ => GateKind::Approval,
        };
        if target.kind != wanted_kind {
            return Err(Failure::new(
                span,
                format!(
                    "\"{}\" is an {} gate, not an {} gate",
                    target.gate,
                    kind_word(target.kind),
                    kind_word(wanted_kind)
                ),
            )
            .help(match target.kind {
                GateKind::Input => {
                    "answer an input with `provide input \"name\" as \"user\" value …`"
                }
                GateKind::Approval => {
                    "decide an approval with `approve as \"user\"` or `reject as \"user\"`"
                }
            }));
        }
        let result = self
            .engine
            .decide_and_drive(&target.run, &target.gate, user, action, None);
        match (result, must_be_refused) {
            (Ok(_), false) => self.settle(span),
            (Ok(_), true) => Err(Failure::new(
                span,
                format!("`{user}` was allowed to decide \"{}\"", target.gate),
            )
            .expected("the decision refused", "it was recorded")),
            (Err(DecideError::Refused(_)), true) => Ok(()),
            (Err(DecideError::Refused(why)), false) => Err(Failure::new(span, why)
                .help("check the gate's approvers and the users' roles in flow.toml")),
            (Err(DecideError::Engine(e)), _) => Err(Self::engine_failure(span)(e)),
        }
    }

    /// `signal name as "user" [value …]`: sent to the step's run as the API sends it (the
    /// senders' rule, the value's type), then every run goes on as far as it can.
    fn signal(
        &mut self,
        span: Span,
        name: &str,
        user: &str,
        value: Option<&str>,
        must_be_refused: bool,
    ) -> Result<(), Failure> {
        let run = self.current_run(span)?;
        if crate::tokens::system_of(user).is_none() && self.engine.config().user(user).is_none() {
            return Err(Failure::new(
                span,
                format!("`{user}` is not a user of {}", self.engine.config().origin),
            )
            .help(
                "name a user of flow.toml (or pass --config), or a system as `\"system:NAME\"`",
            ));
        }
        let value = match value {
            Some(helper) => evaluate(&self.module, helper, Vec::new())
                .map_err(|e| Failure::new(span, e))?
                .to_json_revealing(),
            None => serde_json::Value::Null,
        };
        let sent = crate::ops::signal(
            &mut self.engine,
            crate::ops::Caller::User(user),
            &run,
            name,
            &value,
            false,
        );
        match (sent, must_be_refused) {
            (Ok(_), false) => self.settle(span),
            (Ok(_), true) => Err(Failure::new(
                span,
                format!("`{user}` was allowed to send `{name}`"),
            )
            .expected("the signal refused", "it was sent")),
            (
                Err(crate::ops::OpError::Forbidden { .. } | crate::ops::OpError::Refused { .. }),
                true,
            ) => Ok(()),
            (Err(crate::ops::OpError::Engine(e)), _) => Err(Self::engine_failure(span)(e)),
            (Err(why), _) => {
                let forbidden = matches!(why, crate::ops::OpError::Forbidden { .. });
                // Run ids change from one test run to the next; the test's name for it does not.
                let why = why
                    .to_string()
                    .replace(&format!("run {run}"), &self.run_name(&run));
                let failure = Failure::new(span, why);
                Err(if forbidden {
                    failure.help("check the signal's senders (`accepts … from …`) and the users' roles in flow.toml")
                } else {
                    failure
                })
            }
        }
    }

    fn status_text(&mut self, span: Span, run: &str) -> Result<String, Failure> {
        let record = self
            .engine
            .store()
            .run(run)
            .map_err(|e| Failure::new(span, e.to_string()))?
            .ok_or_else(|| Failure::new(span, format!("run {run} is gone")))?;
        Ok(match record.status {
            RunStatus::Waiting => match record.waiting_on {
                Some(on) => format!("waiting ({on})"),
                None => "waiting".into(),
            },
            RunStatus::Failed => format!(
                "failed: {}",
                record.error.unwrap_or_else(|| "no error recorded".into())
            ),
            other => other.as_str().to_string(),
        })
    }

    /// `expect query name …`: the query evaluated as `flowrt query` does, its value checked.
    fn expect_query(
        &mut self,
        span: Span,
        query: &str,
        helper: &str,
        expected: &str,
    ) -> Result<(), Failure> {
        let run = self.current_run(span)?;
        let view = match crate::ops::query(
            &mut self.engine,
            crate::ops::Caller::Operator("test"),
            &run,
            query,
        ) {
            Ok(view) => view,
            Err(crate::ops::OpError::Engine(e)) => return Err(Self::engine_failure(span)(e)),
            Err(why) => {
                let why = why
                    .to_string()
                    .replace(&format!("run {run}"), &self.run_name(&run));
                return Err(Failure::new(span, why));
            }
        };
        let workflow = self.engine.store().run(&run).ok().flatten().and_then(|r| {
            self.module
                .workflow(&r.workflow)
                .map(|(index, _)| index as u32)
        });
        let Some(code) = self
            .module
            .queries
            .iter()
            .find(|q| Some(q.workflow) == workflow && q.name == query)
        else {
            return Err(Failure::new(span, format!("no query `{query}`")));
        };
        let value = from_json(&self.module, code.ret, &view.value, "$")
            .map_err(|e| Failure::new(span, format!("the query's value does not fit: {e}")))?;
        let shown = value.to_text();
        match evaluate(&self.module, helper, vec![value]) {
            Ok(Value::Bool(true)) => Ok(()),
            Ok(_) => {
                Err(Failure::new(span, format!("query `{query}` differs"))
                    .expected(expected, shown))
            }
            Err(why) => Err(Failure::new(span, why)),
        }
    }

    fn expect_result(&mut self, span: Span, helper: &str, expected: &str) -> Result<(), Failure> {
        let run = self.current_run(span)?;
        let record = self
            .engine
            .store()
            .run(&run)
            .map_err(|e| Failure::new(span, e.to_string()))?
            .ok_or_else(|| Failure::new(span, "the run is gone"))?;
        let Some(output) = record
            .output
            .filter(|_| record.status == RunStatus::Completed)
        else {
            let status = self.status_text(span, &run)?;
            return Err(Failure::new(span, "the run has not completed").expected(expected, status));
        };
        let json: serde_json::Value = serde_json::from_str(&output)
            .map_err(|e| Failure::new(span, format!("the run's output is not JSON: {e}")))?;
        let code =
            &self.module.workflows[self.module.workflow(&record.workflow).map_or(0, |w| w.0)];
        let value = from_json(&self.module, code.ret, &json, "$")
            .map_err(|e| Failure::new(span, format!("the run's output does not fit: {e}")))?;
        let shown = value.to_text();
        match evaluate(&self.module, helper, vec![value]) {
            Ok(Value::Bool(true)) => Ok(()),
            Ok(_) => Err(Failure::new(span, "the result differs").expected(expected, shown)),
            Err(why) => Err(Failure::new(span, why)),
        }
    }

    fn expect_error(
        &mut self,
        span: Span,
        kind: &str,
        message: Option<&str>,
    ) -> Result<(), Failure> {
        let run = self.current_run(span)?;
        let history = self
            .engine
            .store()
            .history(&run)
            .map_err(|e| Failure::new(span, e.to_string()))?;
        let failed = history
            .iter()
            .rev()
            .find(|e| e.kind == EventKind::RunFailed);
        let expected = match message {
            Some(m) => format!("{kind}: {m}"),
            None => kind.to_string(),
        };
        let Some(failed) = failed else {
            let status = self.status_text(span, &run)?;
            return Err(Failure::new(span, "the run did not fail").expected(expected, status));
        };
        let data: serde_json::Value = serde_json::from_str(&failed.data).unwrap_or_default();
        let actual_kind = data["kind"].as_str().unwrap_or_default();
        let actual_message = data["message"].as_str().unwrap_or_default();
        let kind_ok = actual_kind == kind;
        let message_ok = message.is_none_or(|m| actual_message.contains(m));
        if kind_ok && message_ok {
            Ok(())
        } else {
            Err(Failure::new(span, "the run failed with another error")
                .expected(expected, format!("{actual_kind}: {actual_message}")))
        }
    }

    /// JSON without `null` fields: an absent optional and `none` are the same value.
    fn canonical(json: &serde_json::Value) -> serde_json::Value {
        match json {
            serde_json::Value::Object(fields) => serde_json::Value::Object(
                fields
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), Self::canonical(v)))
                    .collect(),
            ),
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(Self::canonical).collect())
            }
            other => other.clone(),
        }
    }

    fn expect_called(
        &mut self,
        span: Span,
        tool: &str,
        negated: bool,
        times: Option<u32>,
        args: Option<&[String]>,
    ) -> Result<(), Failure> {
        let calls: Vec<Call> = self
            .mocks
            .calls
            .borrow()
            .iter()
            .filter(|c| c.tool == tool)
            .cloned()
            .collect();
        if negated && args.is_none() {
            return match calls.first() {
                None => Ok(()),
                Some(call) => Err(Failure::new(span, format!("`{tool}` was called")).expected(
                    "no call",
                    format!("{} call(s), the first with {}", calls.len(), call.shown),
                )),
            };
        }
        let Some(args) = args else {
            return self.check_count(span, tool, times, calls.len());
        };
        let (wanted, shown) = self.expected_args(span, tool, args)?;
        let matching = calls
            .iter()
            .filter(|c| Self::canonical(&c.input) == wanted)
            .count();
        if negated {
            return match matching {
                0 => Ok(()),
                n => Err(
                    Failure::new(span, format!("`{tool}` was called with these arguments"))
                        .expected(format!("no call with {shown}"), format!("{n} such call(s)")),
                ),
            };
        }
        if times.is_none() && matching > 0 {
            return Ok(());
        }
        // Redacted, a call that differs only in its secrets looks like the one expected.
        let secret_help = calls.iter().any(|c| Self::canonical(&c.shown) == shown).then_some(
            "a call differs from this one only in `Secret` arguments, which a failure never shows",
        );
        let with_help = |f: Failure| match secret_help {
            Some(help) => f.help(help),
            None => f,
        };
        if times.is_some() {
            return self
                .check_count(span, tool, times, matching)
                .map_err(with_help)
                .map_err(|mut f| {
                    f.expected = f.expected.map(|e| format!("{e} with {shown}"));
                    let all: Vec<String> = calls.iter().map(|c| c.shown.to_string()).collect();
                    f.actual = Some(format!(
                        "{matching} such call(s); every call: {}",
                        if all.is_empty() {
                            "none".to_string()
                        } else {
                            all.join(", ")
                        }
                    ));
                    f
                });
        }
        let seen = if calls.is_empty() {
            "no call".to_string()
        } else {
            calls
                .iter()
                .map(|c| c.shown.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        Err(with_help(
            Failure::new(
                span,
                format!("`{tool}` was not called with these arguments"),
            )
            .expected(shown.to_string(), seen),
        ))
    }

    /// The arguments of an expected call, as the tool would receive them (to compare with)
    /// and as a failure shows them (secrets redacted), both canonical.
    fn expected_args(
        &self,
        span: Span,
        tool: &str,
        args: &[String],
    ) -> Result<(serde_json::Value, serde_json::Value), Failure> {
        let info = self
            .module
            .tools
            .iter()
            .find(|t| t.name == tool)
            .ok_or_else(|| Failure::new(span, format!("no tool `{tool}`")))?;
        let mut wanted = serde_json::Map::new();
        let mut shown = serde_json::Map::new();
        for ((name, _), helper) in info.params.iter().zip(args) {
            let value =
                evaluate(&self.module, helper, Vec::new()).map_err(|e| Failure::new(span, e))?;
            wanted.insert(name.clone(), value.to_json_revealing());
            shown.insert(name.clone(), value.to_json());
        }
        Ok((
            Self::canonical(&serde_json::Value::Object(wanted)),
            Self::canonical(&serde_json::Value::Object(shown)),
        ))
    }

    /// Calls like `expected` were made in this order: each matches a call after the one the
    /// previous matched (the earliest such call, which leaves the most room for the rest),
    /// other calls in between.
    fn expect_call_order(&mut self, span: Span, expected: &[ExpectedCall]) -> Result<(), Failure> {
        let mut wanted = Vec::new();
        for call in expected {
            let args = match &call.args {
                Some(args) => Some(self.expected_args(span, &call.tool, args)?),
                None => None,
            };
            wanted.push((call.tool.as_str(), args));
        }
        let module = &self.module;
        let describe = |tool: &str, shown: Option<&serde_json::Value>| match shown {
            Some(args) => call_text(module, tool, args),
            None => tool.to_string(),
        };
        let expected_text = wanted
            .iter()
            .map(|(tool, args)| describe(tool, args.as_ref().map(|(_, shown)| shown)))
            .collect::<Vec<_>>()
            .join(", then ");
        let calls = self.mocks.calls.borrow();
        let mut next = 0;
        for (position, (tool, args)) in wanted.iter().enumerate() {
            let found = calls[next..].iter().position(|c| {
                c.tool == *tool
                    && args
                        .as_ref()
                        .is_none_or(|(want, _)| Self::canonical(&c.input) == *want)
            });
            match found {
                Some(at) => next += at + 1,
                None => {
                    let missing = describe(tool, args.as_ref().map(|(_, shown)| shown));
                    let message = if position == 0 {
                        format!("no call of {missing} was made")
                    } else {
                        format!(
                            "no call of {missing} was made after {}",
                            describe(wanted[position - 1].0, None)
                        )
                    };
                    let actual = if calls.is_empty() {
                        "no call".to_string()
                    } else {
                        calls
                            .iter()
                            .map(|c| describe(&c.tool, Some(&c.shown)))
                            .collect::<Vec<_>>()
                            .join(", then ")
                    };
                    return Err(Failure::new(span, message)
                        .expected(expected_text, actual)
                        .help("the expected calls must come in this order; other calls may come between them"));
                }
            }
        }
        Ok(())
    }

    fn check_count(
        &self,
        span: Span,
        tool: &str,
        times: Option<u32>,
        count: usize,
    ) -> Result<(), Failure> {
        match times {
            None if count > 0 => Ok(()),
            None => Err(Failure::new(span, format!("`{tool}` was not called"))
                .expected("at least one call", "no call")),
            Some(n) if n as usize == count => Ok(()),
            Some(n) => Err(
                Failure::new(span, format!("`{tool}` was called {count} time(s)"))
                    .expected(format!("{n} call(s)"), format!("{count} call(s)")),
            ),
        }
    }

    /// The record of a `with { … }`, as JSON.
    fn fields(
        &self,
        span: Span,
        helper: Option<&str>,
    ) -> Result<Option<serde_json::Value>, Failure> {
        helper
            .map(|helper| {
                evaluate(&self.module, helper, Vec::new())
                    .map(|v| v.to_json())
                    .map_err(|e| Failure::new(span, e))
            })
            .transpose()
    }

    /// Some gate named `gate` was announced to the hooks (with a message holding `fields`).
    fn expect_notified(
        &mut self,
        span: Span,
        gate: &str,
        fields: Option<&serde_json::Value>,
    ) -> Result<(), Failure> {
        let selected = self.selected_runs(span)?;
        let messages = self.announcements.messages.borrow();
        let about: Vec<&serde_json::Value> = messages
            .iter()
            .filter(|m| m["gate"] == gate)
            .filter(|m| {
                let run = m["run"].as_str().unwrap_or_default();
                selected.as_ref().is_none_or(|s| s.contains(run))
            })
            .collect();
        if about
            .iter()
            .any(|m| fields.is_none_or(|wanted| holds(m, wanted)))
        {
            return Ok(());
        }
        let expected = match fields {
            Some(fields) => format!("gate \"{gate}\" announced with {fields}"),
            None => format!("gate \"{gate}\" announced"),
        };
        let actual = if messages.is_empty() {
            "no announcement".to_string()
        } else if about.is_empty() {
            let gates: Vec<String> = messages.iter().map(|m| m["gate"].to_string()).collect();
            format!("announcements of {}", gates.join(", "))
        } else {
            // Only the fields the test asked about: the rest (run id, deadline) differs from
            // run to run and would bury the difference.
            let shown: Vec<String> = about
                .iter()
                .map(|m| match fields.and_then(|f| f.as_object()) {
                    Some(wanted) => serde_json::Value::Object(
                        wanted
                            .keys()
                            .map(|k| (k.clone(), m.get(k).cloned().unwrap_or_default()))
                            .collect(),
                    )
                    .to_string(),
                    None => m.to_string(),
                })
                .collect();
            format!("announced with {}", shown.join(", "))
        };
        let failure = Failure::new(
            span,
            format!("gate \"{gate}\" was not announced as expected"),
        )
        .expected(expected, actual);
        Err(if self.engine.config().notify.is_empty() {
            failure.help(format!(
                "{} has no [[notify]] hooks, so no gate is announced",
                self.engine.config().origin
            ))
        } else {
            failure
        })
    }

    /// Some run of the test recorded an event of `kind` about `step` (holding `fields`).
    fn expect_event(
        &mut self,
        span: Span,
        kind: EventKind,
        step: &str,
        what: &str,
        fields: Option<&serde_json::Value>,
    ) -> Result<(), Failure> {
        let runs = self
            .engine
            .store()
            .runs(None)
            .map_err(|e| Failure::new(span, e.to_string()))?;
        let selected = self.selected_runs(span)?;
        let mut seen = Vec::new();
        for run in runs
            .into_iter()
            .filter(|r| selected.as_ref().is_none_or(|s| s.contains(&r.id)))
        {
            let history = self
                .engine
                .store()
                .history(&run.id)
                .map_err(|e| Failure::new(span, e.to_string()))?;
            for event in history.into_iter().filter(|e| e.kind == kind) {
                let name = event.step.unwrap_or_default();
                let data: serde_json::Value = serde_json::from_str(&event.data).unwrap_or_default();
                if name == step && fields.is_none_or(|wanted| holds(&data, wanted)) {
                    return Ok(());
                }
                seen.push(match fields {
                    Some(_) if name == step => format!("\"{name}\" with {data}"),
                    _ => format!("\"{name}\""),
                });
            }
        }
        let actual = if seen.is_empty() {
            format!("no {what}")
        } else {
            seen.join(", ")
        };
        let (expected, message) = match fields {
            Some(fields) => (
                format!("{what} \"{step}\" with {fields}"),
                format!("no {what} \"{step}\" with these fields was recorded"),
            ),
            None => (
                format!("{what} \"{step}\""),
                format!("no {what} \"{step}\" was recorded"),
            ),
        };
        Err(Failure::new(span, message).expected(expected, actual))
    }
}

/// Whether every field of `wanted` (an object) is in `data` and holds there: a nested record
/// by its own fields (`with { context: { id: "S-1" } }` ignores the context's other fields),
/// anything else by equality; a field `none` holds where the field is `null` or absent.
fn holds(data: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    match wanted.as_object() {
        Some(fields) => fields.iter().all(|(k, v)| match data.get(k) {
            Some(d) => holds(d, v),
            None => v.is_null(),
        }),
        None => data == wanted,
    }
}

/// The fields of `data` that `wanted` asks about, nested records by the fields they ask about:
/// what a failure shows.
fn asked_fields(data: &serde_json::Value, wanted: &serde_json::Value) -> serde_json::Value {
    match (wanted.as_object(), data.as_object()) {
        (Some(asked), Some(_)) => serde_json::Value::Object(
            asked
                .iter()
                .map(|(k, v)| {
                    let d = data.get(k).cloned().unwrap_or_default();
                    (k.clone(), asked_fields(&d, v))
                })
                .collect(),
        ),
        _ => data.clone(),
    }
}

/// What `expect approval "g" with { … }` compares with: the gate as a reviewer sees it.
fn gate_view(gate: &PendingGate) -> serde_json::Value {
    serde_json::json!({
        "prompt": gate.prompt,
        "context": gate.context,
        "approvers": gate.approvers,
        "quorum": gate.quorum,
        "remaining": gate.remaining,
        "workflow": gate.workflow,
        "started_by": gate.started_by,
        "escalated": gate.escalated,
    })
}

/// A call as it is written in a test: `pay("A-1", 120)`, the arguments (secrets redacted) in
/// the order of the tool's parameters.
fn call_text(module: &Module, tool: &str, args: &serde_json::Value) -> String {
    let params = module.tools.iter().find(|t| t.name == tool);
    let values: Vec<String> = params
        .map(|info| {
            info.params
                .iter()
                .map(|(name, _)| match args.get(name) {
                    None | Some(serde_json::Value::Null) => "none".to_string(),
                    Some(value) => value.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    format!("{tool}({})", values.join(", "))
}

fn kind_word(kind: GateKind) -> &'static str {
    kind.word()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_compiler::bytecode::TypeRef;
    use std::io::{Read, Write};

    fn tool(binding: BindingKind) -> ToolInfo {
        ToolInfo {
            name: "fetch".into(),
            params: vec![("id".into(), TypeRef(0))],
            ret: TypeRef(0),
            binding,
            sensitive: false,
        }
    }

    fn context() -> tools::CallContext {
        tools::CallContext {
            run_id: "r".into(),
            idempotency_key: "r:1".into(),
            time_limit_ms: None,
        }
    }

    /// A server on 127.0.0.1 that answers one request with `response`.
    fn answer_once(response: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        let address = listener.local_addr().expect("an address");
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("a request");
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(response.as_bytes());
        });
        format!("http://{address}")
    }

    #[test]
    fn a_mocked_http_failure_says_what_the_real_binding_says() {
        let base = answer_once(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\nConnection: close\r\n\r\nno such order",
        );
        let config = Config::parse(
            &format!("[tools.fetch]\nbase_url = \"{base}\"\n"),
            "flow.toml",
        )
        .expect("a config");
        let input = serde_json::json!({ "id": "A-1" });
        let real = tools::http::call(
            "fetch",
            "get",
            "/orders",
            config.tools.get("fetch"),
            &input,
            &context(),
        )
        .result
        .expect_err("a 404 fails");
        let info = tool(BindingKind::Http {
            method: "get".into(),
            path: "/orders".into(),
        });
        let mocked = Binding {
            tool: &info,
            config: &config,
            input,
        }
        .failure("ToolError", Some("404 no such order"), true);
        assert_eq!(mocked, real);
    }

    #[test]
    fn a_mocked_exec_failure_says_what_the_real_binding_says() {
        let config = Config::empty();
        let real = tools::exec::call(
            "fetch",
            "echo 'disk full' >&2; exit 1",
            "{}",
            &context(),
            None,
        )
        .expect_err("exit 1 fails");
        let info = tool(BindingKind::Exec {
            command: "convert".into(),
        });
        let mocked = Binding {
            tool: &info,
            config: &config,
            input: serde_json::json!({}),
        }
        .failure("ToolError", Some("disk full"), true);
        assert_eq!(mocked, real);
    }

    #[test]
    fn fields_hold_partially_and_none_holds_where_a_field_is_absent() {
        let gate = serde_json::json!({
            "prompt": "Pay A-1?",
            "context": { "id": "A-1", "amount_eur": 120, "note": null },
        });
        let wanted = |w: serde_json::Value| holds(&gate, &w);
        assert!(wanted(
            serde_json::json!({ "context": { "amount_eur": 120 } })
        ));
        assert!(wanted(
            serde_json::json!({ "context": { "note": null, "extra": null } })
        ));
        assert!(!wanted(
            serde_json::json!({ "context": { "amount_eur": 99 } })
        ));
        assert!(!wanted(serde_json::json!({ "prompt": "Pay A-2?" })));
        assert!(!wanted(serde_json::json!({ "context": { "missing": 1 } })));
        assert_eq!(
            asked_fields(&gate, &serde_json::json!({ "context": { "id": "B" } })),
            serde_json::json!({ "context": { "id": "A-1" } })
        );
    }

    #[test]
    fn a_status_at_the_start_of_the_text_is_the_answer() {
        assert_eq!(
            http_status("404 no such order", false),
            (404, "Not Found", "no such order")
        );
        assert_eq!(
            http_status("503 Service Unavailable", true),
            (503, "Service Unavailable", "")
        );
        assert_eq!(
            http_status("down", true),
            (503, "Service Unavailable", "down")
        );
        assert_eq!(http_status("down", false), (400, "Bad Request", "down"));
        assert_eq!(
            http_status("12 apples", true),
            (503, "Service Unavailable", "12 apples")
        );
    }
}
