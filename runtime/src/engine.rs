//! The engine drives runs: it runs the machine to its next durable point, performs the
//! effect, and commits the effect's record together with the new checkpoint in one
//! transaction. Only then does it go on, so every acknowledged step is on disk.
//!
//! Crash safety follows from two rules:
//! - Before a tool call, the engine commits a checkpoint taken *at* the call together with a
//!   `step_started` event; after the call, one taken *past* it with `step_completed`. A
//!   process killed in between resumes at the call and makes it again, with the same
//!   idempotency key (run id + step number), and records `step_resumed` — at-least-once
//!   delivery, exactly-once recording.
//! - Everything else that is durable (`now()`, `audit`, `sleep`, waiting) is recorded and
//!   checkpointed in a single commit.

use crate::clock::Clock;
use crate::config::Config;
use crate::effects::{self, Completion, Done, Executor, Invocation, ToolCall, Work};
use crate::gates::{GateKind, GateRun, OpenedAt, gate_opening};
use crate::history::WaitingOn;
use crate::store::{
    Checkpoint, EventKind, GateChange, Millis, NewEvent, NewRun, RunStatus, StepCommit, Store,
    StoreError,
};
use crate::tools::{self, CallContext, ToolFailure};
use crate::vm::machine::tool_error_value;
use crate::vm::value::{JsonMismatch, from_json};
use crate::vm::{Machine, Outcome, Request, RuntimeError, Value, snapshot};
use flow_compiler::bytecode::{self, ArtifactError, Binding, Module};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// How often a parent waiting on a child run looks at it again, in case the process that
/// finished the child died before waking the parent.
pub(crate) const CHILD_RECHECK_MS: i64 = 5_000;

const TEST_CLOCK: &str = "test_clock";
const CLOCK_OFFSET_KEY: &str = "clock_offset_ms";

#[derive(Debug)]
pub enum EngineError {
    Store(StoreError),
    Artifact(ArtifactError),
    NoSuchWorkflow {
        name: String,
        available: Vec<String>,
    },
    /// The input JSON does not fit the workflow's parameters.
    Input(String),
    NoSuchRun(String),
    /// Another process is driving the run.
    Claimed(String),
    /// A checkpoint or version that cannot be used.
    Corrupt(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Store(e) => write!(f, "{e}"),
            EngineError::Artifact(e) => write!(f, "{e}"),
            EngineError::NoSuchWorkflow { name, available } => write!(
                f,
                "no workflow named `{name}` (the program has: {})",
                available.join(", ")
            ),
            EngineError::Input(why) => write!(f, "invalid input: {why}"),
            EngineError::NoSuchRun(id) => write!(f, "no run with id {id}"),
            EngineError::Claimed(id) => {
                write!(f, "run {id} is being driven by another flowrt process")
            }
            EngineError::Corrupt(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchRun(id) => EngineError::NoSuchRun(id),
            StoreError::NotOwner { run } => EngineError::Claimed(run),
            other => EngineError::Store(other),
        }
    }
}

/// A tool provided by the runtime itself (`via exec "flowrt:NAME"`), so that benchmarks and
/// tests can measure the engine rather than process start-up.
pub type NativeTool = fn(&Value) -> Result<Value, ToolFailure>;

pub struct Engine {
    pub(crate) store: Box<dyn Store>,
    /// Every "now" of this engine and of the threads it starts (see [`Clock`]).
    pub(crate) clock: Clock,
    /// Runs started and left to be driven together (see [`Engine::defer_drive`]).
    deferred_drives: Vec<String>,
    pub(crate) owner: String,
    pub(crate) lease_ms: i64,
    modules: HashMap<String, Rc<Module>>,
    native_tools: HashMap<String, NativeTool>,
    next_id: u64,
    renewed_at: Millis,
    pub(crate) config: Config,
    /// What this engine keeps about the notification outbox (see `announce.rs`).
    pub(crate) outbox: crate::announce::OutboxState,
    /// Answers every tool call instead of its binding (`flowc test`'s mocks).
    tool_double: Option<Rc<dyn ToolDouble>>,
    /// Receives every notification instead of the hooks (`flowc test` records them).
    pub(crate) notify_double: Option<Rc<dyn NotifyDouble>>,
    /// Renews this engine's claims from a thread of its own (see [`Engine::keep_claims_alive`]).
    heartbeat: Option<crate::heartbeat::Heartbeat>,
    /// The spans of the runs being driven, innermost last (a parent drives its child inline):
    /// a run's failure is marked on its own span, wherever it happens.
    run_spans: Vec<tracing::Span>,
    /// Makes tool calls on threads of its own (see [`Engine::run_effects_in_pool`]); without
    /// it, calls are made inline.
    executor: Option<Executor>,
    /// The runs with a call in the pool (their claims are kept until it returns).
    pub(crate) in_flight: std::collections::HashSet<String>,
    /// The completion being applied, by run.
    pub(crate) arrived: HashMap<String, Completion>,
    /// Completions taken from the pool while waiting, not yet applied.
    waiting_to_apply: Vec<Completion>,
    /// Attempts the pool made at rows of the outbox, whose outcomes are not yet taken.
    announced: Vec<effects::Announced>,
    /// Attempts handed to the pool and not yet taken.
    pub(crate) announcing: usize,
    /// What the next checkpoint of each run being driven records of its calls (JSON of a
    /// `CallMemory`); a commit outside a drive (a decision) leaves the stored one as it is.
    run_calls: HashMap<String, String>,
    /// Runs whose answer was taken but whose commit failed (the database went away): driven
    /// again from their last commit, under the claim this engine kept.
    stranded: Vec<String>,
}

/// Stands in for every tool binding: a workflow test scripts what tools answer. The answer
/// is validated against the tool's type like a real one.
pub trait ToolDouble {
    fn call(
        &self,
        run: &str,
        tool: &bytecode::ToolInfo,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, ToolFailure>;
}

/// A run being driven: what every handler reads, and what it changes.
pub(crate) struct Driving<'a> {
    pub(crate) run: &'a str,
    pub(crate) record: &'a crate::store::RunRecord,
    pub(crate) version: &'a str,
    pub(crate) module: &'a Module,
    pub(crate) machine: Machine,
    /// What the run's earlier tool calls left (see [`CallMemory`]).
    pub(crate) memory: CallMemory,
    /// Events recorded since the last commit, committed with the next one.
    pub(crate) pending: Vec<NewEvent>,
    /// Whether the run was woken from a wait (a gate, a sleep, a child), so that a deadline
    /// met now is what the `timeout` cut short.
    pub(crate) woke_from_wait: bool,
}

/// Who starts a new run and where it comes from.
pub(crate) struct StartedAs<'a> {
    pub(crate) by: &'a str,
    /// The run waiting on it, for a child run.
    pub(crate) parent: Option<&'a str>,
    /// The run that ended with `continue as` to start it.
    pub(crate) continued_from: Option<&'a str>,
}

/// The run that a `continue as` in `run` starts: `r1` → `r1~2` → `r1~3`. Derived from the
/// id, so a crash between starting the successor and ending `run` starts it only once, and
/// anyone can follow a chain without reading history.
pub fn successor_of(run: &str) -> String {
    if let Some((base, n)) = run.rsplit_once('~')
        && let Ok(n) = n.parse::<u64>()
    {
        return format!("{base}~{}", n + 1);
    }
    format!("{run}~2")
}

/// Stands in for the notification hooks: a workflow test records what a gate announces
/// instead of messaging real people about a scripted run.
pub trait NotifyDouble {
    /// `message` is what every hook of `flow.toml` would have been sent.
    fn announce(&self, message: &serde_json::Value);
}

pub(crate) type EngineResult<T> = Result<T, EngineError>;

/// Everything a commit changes besides the checkpoint.
pub(crate) struct Change {
    pub(crate) events: Vec<NewEvent>,
    pub(crate) status: RunStatus,
    pub(crate) output: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) waiting_on: Option<WaitingOn>,
    pub(crate) wake_at: Option<Millis>,
}

impl Change {
    pub(crate) fn runnable(events: Vec<NewEvent>) -> Change {
        Change {
            events,
            status: RunStatus::Runnable,
            output: None,
            error: None,
            waiting_on: None,
            wake_at: None,
        }
    }
}

impl Engine {
    pub fn new(store: Box<dyn Store>, owner: impl Into<String>) -> Engine {
        let mut native_tools: HashMap<String, NativeTool> = HashMap::new();
        // Returns its only argument (or all of them, as a record, when there are several).
        native_tools.insert("flowrt:echo".to_string(), |input| match input {
            Value::Record(fields) if fields.len() == 1 => {
                Ok(fields.values().next().cloned().unwrap_or(Value::None))
            }
            other => Ok(other.clone()),
        });
        Engine {
            store,
            clock: Clock::system(),
            deferred_drives: Vec::new(),
            owner: owner.into(),
            lease_ms: 30_000,
            modules: HashMap::new(),
            native_tools,
            next_id: 0,
            renewed_at: 0,
            config: Config::empty(),
            outbox: Default::default(),
            tool_double: None,
            notify_double: None,
            heartbeat: None,
            run_spans: Vec::new(),
            executor: None,
            in_flight: Default::default(),
            arrived: HashMap::new(),
            waiting_to_apply: Vec::new(),
            announced: Vec::new(),
            announcing: 0,
            stranded: Vec::new(),
            run_calls: HashMap::new(),
        }
    }

    /// The engine's clock (a clone shares it): the real time, or the database's test clock
    /// once [`Engine::load_clock`] read it.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// The time on the engine's clock.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Leaves `run` (just started) to be driven with the other runs started meanwhile, by
    /// whoever takes them ([`Engine::take_deferred_drives`]: the server, after a group of
    /// requests, with [`Engine::drive_batch`]).
    pub fn defer_drive(&mut self, run: &str) {
        self.deferred_drives.push(run.to_string());
    }

    /// The runs left to be driven by [`Engine::defer_drive`] since the last call.
    pub fn take_deferred_drives(&mut self) -> Vec<String> {
        std::mem::take(&mut self.deferred_drives)
    }

    /// Sends every tool call to `double` instead of the tool's binding.
    pub fn set_tool_double(&mut self, double: Rc<dyn ToolDouble>) {
        self.tool_double = Some(double);
    }

    /// Hands every notification to `double` instead of delivering it to the hooks.
    pub fn set_notify_double(&mut self, double: Rc<dyn NotifyDouble>) {
        self.notify_double = Some(double);
    }

    /// Users, roles and notification hooks (`flow.toml`).
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Reads the test clock's offset from the database, if it has a test clock.
    pub fn load_clock(&mut self) -> EngineResult<()> {
        let offset = match self.store.setting(CLOCK_OFFSET_KEY)? {
            Some(text) => text.parse::<i64>().map_err(|_| {
                EngineError::Corrupt(format!("the test clock's offset `{text}` is not a number"))
            })?,
            None => 0,
        };
        self.clock.set_offset(offset);
        Ok(())
    }

    pub fn has_test_clock(&mut self) -> EngineResult<bool> {
        Ok(self.store.setting(TEST_CLOCK)?.as_deref() == Some("on"))
    }

    /// Gives a new database a test clock that `advance_clock` moves (for tests that must not
    /// wait hours). Refused on a database that already has runs on the real clock.
    pub fn enable_test_clock(&mut self) -> EngineResult<()> {
        if self.has_test_clock()? {
            return Ok(());
        }
        if !self.store.runs(None)?.is_empty() {
            return Err(EngineError::Corrupt(
                "a test clock can only be enabled on a new database; this one already has runs"
                    .into(),
            ));
        }
        self.store.set_setting(TEST_CLOCK, "on")?;
        Ok(())
    }

    /// Stops the test clock where it is: from now on only `advance_clock` moves it. `flowc
    /// test` runs on a stopped clock, so that a timer due in 30 days is due exactly then and
    /// not a few milliseconds of the test's own work later.
    pub fn stop_test_clock(&mut self) -> EngineResult<()> {
        if !self.has_test_clock()? {
            return Err(EngineError::Corrupt(
                "only a test clock can be stopped; this database runs on the real clock".into(),
            ));
        }
        self.clock.stop();
        Ok(())
    }

    /// Moves the test clock forward by `ms`; returns the new time.
    pub fn advance_clock(&mut self, ms: i64) -> EngineResult<Millis> {
        if !self.has_test_clock()? {
            return Err(EngineError::Corrupt(
                "this database runs on the real clock; create it with `flowrt --test-clock` to move time".into(),
            ));
        }
        self.load_clock()?;
        let offset = self.clock.offset().saturating_add(ms.max(0));
        self.store
            .set_setting(CLOCK_OFFSET_KEY, &offset.to_string())?;
        self.clock.set_offset(offset);
        Ok(self.clock.now())
    }

    /// How long a claim lasts without renewal. Another process may take a run over once its
    /// claim has expired — after a crash, that is how long the run waits.
    pub fn set_lease(&mut self, lease_ms: i64) {
        self.lease_ms = lease_ms.max(1);
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.set_lease(self.lease_ms);
        }
    }

    /// Keeps this engine's claims alive for as long as it lives, whatever it is doing (a tool
    /// call may take longer than the lease): a heartbeat thread with its own connection to
    /// `db` (the database this engine's store is on) renews them every third of the lease.
    /// Every process whose runs another process could take over needs one.
    pub fn keep_claims_alive(&mut self, db: &str) -> EngineResult<()> {
        self.heartbeat = Some(crate::heartbeat::Heartbeat::start(
            db,
            &self.owner,
            self.lease_ms,
            self.clock.clone(),
        )?);
        Ok(())
    }

    pub fn store(&mut self) -> &mut dyn Store {
        self.store.as_mut()
    }

    /// Records a compiled program (idempotent) and returns its version hash.
    pub fn deploy(&mut self, artifact: &[u8]) -> EngineResult<(String, Rc<Module>)> {
        let module = Rc::new(bytecode::decode(artifact).map_err(EngineError::Artifact)?);
        let hash = bytecode::encoding::artifact_hash(artifact);
        self.store.deploy(&hash, artifact, self.clock.now())?;
        self.modules.insert(hash.clone(), module.clone());
        Ok((hash, module))
    }

    /// The enum variant a completed run returned (`Paid` of `{"Paid": {…}}` or of `"Paid"`),
    /// when its workflow returns an enum: the run's outcome, as the CLI and the inbox show it.
    pub fn outcome(&mut self, record: &crate::store::RunRecord) -> EngineResult<Option<String>> {
        if record.status != RunStatus::Completed {
            return Ok(None);
        }
        let module = self.module(&record.version)?;
        let Some((_, code)) = module.workflow(&record.workflow) else {
            return Ok(None);
        };
        let Some(bytecode::TypeDesc::Enum { variants, .. }) = module.type_desc(code.ret) else {
            return Ok(None);
        };
        let output: serde_json::Value = record
            .output
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or_default();
        let name = match &output {
            serde_json::Value::String(name) => Some(name.as_str()),
            serde_json::Value::Object(fields) if fields.len() == 1 => {
                fields.keys().next().map(String::as_str)
            }
            _ => None,
        };
        Ok(name
            .filter(|name| variants.iter().any(|(v, _)| v == name))
            .map(str::to_string))
    }

    /// Every deployed program, oldest first.
    pub fn deployed(&mut self) -> EngineResult<Vec<Rc<Module>>> {
        let versions = self.store.versions()?;
        versions
            .iter()
            .map(|(version, _)| self.module(version))
            .collect()
    }

    pub(crate) fn module(&mut self, version: &str) -> EngineResult<Rc<Module>> {
        if let Some(module) = self.modules.get(version) {
            return Ok(module.clone());
        }
        let bytes = self.store.artifact(version)?.ok_or_else(|| {
            EngineError::Corrupt(format!(
                "version {version} is not deployed in this database"
            ))
        })?;
        let module = Rc::new(bytecode::decode(&bytes).map_err(EngineError::Artifact)?);
        self.modules.insert(version.to_string(), module.clone());
        Ok(module)
    }

    fn new_run_id(&mut self) -> String {
        self.next_id += 1;
        format!(
            "r{:x}{:05x}{:x}",
            self.clock.now(),
            std::process::id() & 0xfffff,
            self.next_id
        )
    }

    /// Validates `input` against the workflow's parameters and creates a runnable run.
    pub fn start(
        &mut self,
        version: &str,
        workflow: &str,
        input: &serde_json::Value,
        started_by: &str,
    ) -> EngineResult<String> {
        let id = self.new_run_id();
        let started = StartedAs {
            by: started_by,
            parent: None,
            continued_from: None,
        };
        self.start_with_id(&id, version, workflow, input, &started)?;
        Ok(id)
    }

    pub(crate) fn start_with_id(
        &mut self,
        id: &str,
        version: &str,
        workflow: &str,
        input: &serde_json::Value,
        started: &StartedAs<'_>,
    ) -> EngineResult<()> {
        let (started_by, parent) = (started.by, started.parent);
        let module = self.module(version)?;
        // A `parallel`'s branch is started by its run, never from outside.
        let (index, code) = module
            .workflow(workflow)
            .filter(|(index, _)| parent.is_some() || !module.is_branch(*index))
            .ok_or_else(|| EngineError::NoSuchWorkflow {
                name: workflow.to_string(),
                available: module.entry_workflows().map(|w| w.name.clone()).collect(),
            })?;
        let args = validate_input(&module, &code.params, input)?;
        // What is stored and recorded is the validated input with its secrets redacted.
        let input = &arguments_json(&code.params, &args, false);
        let now = self.clock.now();
        let machine = Machine::start(&module, index as u32, args, now)
            .ok_or_else(|| EngineError::Corrupt("the workflow has no code".into()))?;
        let run = NewRun {
            id: id.to_string(),
            workflow: workflow.to_string(),
            version: version.to_string(),
            input: input.to_string(),
            started_by: started_by.to_string(),
            parent: parent.map(str::to_string),
        };
        let mut data = serde_json::json!({ "input": input, "version": version, "by": started_by, "parent": parent });
        if let Some(previous) = started.continued_from {
            data["continued_from"] = serde_json::Value::String(previous.to_string());
        }
        let event = NewEvent {
            at: now,
            kind: EventKind::RunStarted,
            step: Some(workflow.to_string()),
            attempt: None,
            line: None,
            duration_ms: None,
            data: data.to_string(),
        };
        let events = [event];
        let first = Checkpoint {
            calls: Some(CallMemory::default().to_json()),
            ..checkpoint(version, &machine)
        };
        self.store.create_run(&run, &first, &events, None, 0, now)?;
        crate::telemetry::recorded(id, &events);
        Ok(())
    }

    /// Drives a run until it completes, fails or waits. Returns its status then.
    pub fn drive(&mut self, run: &str) -> EngineResult<RunStatus> {
        let status = self.drive_alone(run)?;
        if status.is_final() {
            self.wake_parent(run)?;
        }
        self.flush_notifications()?;
        Ok(status)
    }

    /// Drives a run without waking its parent: for a parent that drives its own child.
    pub(crate) fn drive_alone(&mut self, run: &str) -> EngineResult<RunStatus> {
        let now = self.clock.now();
        if self.store.run(run)?.is_none() {
            return Err(EngineError::NoSuchRun(run.to_string()));
        }
        if !self
            .store
            .claim(run, &self.owner, now + self.lease_ms, now)?
        {
            return Err(EngineError::Claimed(run.to_string()));
        }
        let result = self.drive_claimed(run);
        let released = self.release(run);
        let status = result?;
        released?;
        Ok(status)
    }

    /// The error that ended a failed run — the `Error` record (a named error with its
    /// fields) its `run_failed` holds — as a value of `module`'s types; `None` for a run
    /// that was cancelled or whose history holds none (written by an older flowrt).
    pub(crate) fn failure_of(
        &mut self,
        module: &Module,
        record: &crate::store::RunRecord,
    ) -> EngineResult<Option<Value>> {
        if record.status != RunStatus::Failed {
            return Ok(None);
        }
        let history = self.store.history(&record.id)?;
        let Some(failed) = history
            .iter()
            .rev()
            .find(|e| e.kind == EventKind::RunFailed)
        else {
            return Ok(None);
        };
        let data: serde_json::Value = serde_json::from_str(&failed.data).unwrap_or_default();
        let error = &data["error"];
        let Some(kind) = error.get("kind").and_then(|k| k.as_str()) else {
            return Ok(None);
        };
        let ty = module
            .record_named(kind)
            .or_else(|| module.record_named("Error"));
        Ok(ty.and_then(|ty| crate::vm::value::from_json(module, ty, error, "$").ok()))
    }

    /// Cancels a run that has not finished, without waking its parent: for a parent that
    /// cancels its own branches. Returns false when the run had already finished.
    pub(crate) fn cancel_quietly(&mut self, run: &str, by: &str) -> EngineResult<bool> {
        Ok(self
            .store
            .cancel(run, &cancel_event(by, self.clock.now()))?)
    }

    /// Cancels a run that has not finished and lets its parent (if any) go on. Returns false
    /// when the run had already finished.
    pub fn cancel(&mut self, run: &str, by: &str) -> EngineResult<bool> {
        // A run with steps to undo runs its undo blocks first, then ends cancelled.
        if self.cancel_compensating(run, by)? {
            return Ok(true);
        }
        self.cancel_plainly(run, by)
    }

    /// Cancels a run at once, without running its undo blocks (`flowrt cancel
    /// --no-compensate`), and lets its parent (if any) go on.
    pub fn cancel_plainly(&mut self, run: &str, by: &str) -> EngineResult<bool> {
        let cancelled = self
            .store
            .cancel(run, &cancel_event(by, self.clock.now()))?;
        if cancelled {
            // What the run started goes with it: its branches and child runs (their gates
            // leave the inbox), and theirs.
            self.cancel_descendants(run, by)?;
            self.wake_parent(run)?;
        }
        Ok(cancelled)
    }

    /// Cancels every run that `run` started and that has not finished, and what those
    /// started, without waking anyone (their parents are being cancelled, or are the ones
    /// cancelling them).
    pub(crate) fn cancel_descendants(&mut self, run: &str, by: &str) -> EngineResult<()> {
        for child in self.store.children(run)? {
            if child.status.is_final() {
                continue;
            }
            self.cancel_quietly(&child.id, by)?;
            self.cancel_descendants(&child.id, by)?;
        }
        Ok(())
    }

    /// Drives every run that can make progress now (runnable, or with a due timer), until
    /// none is left. Returns how many runs were driven.
    pub fn work_once(&mut self) -> EngineResult<usize> {
        let mut driven = 0;
        loop {
            driven += self.apply_completions()?;
            // Notifications that fell due (retries, rows a dead process left) go out.
            self.flush_notifications()?;
            // Runs that would call a tool wait for a free thread anyway: claim none meanwhile.
            if self.pool_is_full() {
                return Ok(driven);
            }
            let now = self.clock.now();
            let mut ready = self
                .store
                .claim_ready(&self.owner, now + self.lease_ms, now, 16)?;
            // A run whose call is in this engine's pool goes on when the call returns.
            ready.retain(|run| !self.in_flight.contains(run));
            if ready.is_empty() {
                return Ok(driven);
            }
            // Runnable runs go on together: one transaction per round of their steps (group
            // commit). Runs a timer woke go one by one.
            let mut batch = Vec::new();
            let mut single = Vec::new();
            for run in ready {
                match self.store.run(&run)? {
                    Some(record) if record.status == RunStatus::Runnable => batch.push(run),
                    Some(_) => single.push(run),
                    None => {}
                }
            }
            if !batch.is_empty() {
                self.drive_batch(&batch)?;
                for run in &batch {
                    if self
                        .store
                        .run(run)?
                        .is_some_and(|record| record.status.is_final())
                    {
                        self.wake_parent(run)?;
                    }
                }
                self.flush_notifications()?;
                driven += batch.len();
            }
            for run in single {
                let result = self.drive_claimed(&run);
                let released = self.release(&run);
                match result {
                    Ok(status) if status.is_final() => self.wake_parent(&run)?,
                    Ok(_) => {}
                    Err(EngineError::Claimed(_)) => {}
                    Err(e) => return Err(e),
                }
                released?;
                self.flush_notifications()?;
                driven += 1;
            }
        }
    }

    /// A child run that finished lets its parent go on.
    pub(crate) fn wake_parent(&mut self, child: &str) -> EngineResult<()> {
        let Some(record) = self.store.run(child)? else {
            return Ok(());
        };
        let Some(parent) = record.parent else {
            return Ok(());
        };
        let now = self.clock.now();
        if self
            .store
            .claim(&parent, &self.owner, now + self.lease_ms, now)?
        {
            let result = self.drive_claimed(&parent);
            self.release(&parent)?;
            if let Ok(status) = result
                && status.is_final()
            {
                self.wake_parent(&parent)?;
            }
        }
        Ok(())
    }

    pub(crate) fn commit(
        &mut self,
        run: &str,
        version: &str,
        machine: Option<&Machine>,
        change: Change,
    ) -> EngineResult<()> {
        self.commit_with_gate(run, version, machine, change, None, None)
    }

    /// [`Engine::commit`] of a step that took signal `number` (marked taken in the same
    /// transaction).
    pub(crate) fn commit_taking_signal(
        &mut self,
        run: &str,
        version: &str,
        machine: &Machine,
        change: Change,
        number: i64,
    ) -> EngineResult<()> {
        let mut commit = self.step_commit(run, version, Some(machine), change);
        commit.takes_signal = Some(number);
        self.commit_prepared(commit)
    }

    /// [`Engine::commit`], with what the commit does to the gate index (see
    /// `store::gate_index`) in the same transaction.
    pub(crate) fn commit_with_gate(
        &mut self,
        run: &str,
        version: &str,
        machine: Option<&Machine>,
        change: Change,
        gate: Option<crate::store::GateChange>,
        notification: Option<crate::store::Notification>,
    ) -> EngineResult<()> {
        let mut commit = self.step_commit(run, version, machine, change);
        commit.gate = gate;
        commit.outbox.add = notification;
        self.commit_prepared(commit)
    }

    /// The commit of one step of `run` (no gate change, no notification, no signal taken).
    fn step_commit(
        &self,
        run: &str,
        version: &str,
        machine: Option<&Machine>,
        change: Change,
    ) -> StepCommit {
        let now = self.clock.now();
        StepCommit {
            run: run.to_string(),
            owner: self.owner.clone(),
            checkpoint: machine.map(|m| Checkpoint {
                calls: self.run_calls.get(run).cloned(),
                ..checkpoint(version, m)
            }),
            events: stamped(change.events, now),
            status: change.status,
            output: change.output,
            error: change.error,
            waiting_on: change.waiting_on.as_ref().map(WaitingOn::to_string),
            wake_at: change.wake_at,
            now,
            gate: None,
            outbox: crate::store::OutboxChange::default(),
            takes_signal: None,
        }
    }

    fn commit_prepared(&mut self, commit: StepCommit) -> EngineResult<()> {
        let (run, now) = (commit.run.as_str(), commit.now);
        let announced = commit.outbox.add.as_ref().map(|n| n.id.clone());
        self.store.commit(std::slice::from_ref(&commit))?;
        crate::telemetry::recorded(run, &commit.events);
        if let Some(id) = announced {
            self.wrote_notification(id);
        }
        // Keep the claim alive while the run is being driven, without paying a write for it
        // on every step. (During a tool call, which commits nothing, the process's heartbeat
        // renews it: see `keep_claims_alive`.)
        if now - self.renewed_at > self.lease_ms / 3 {
            self.store
                .claim(run, &self.owner, now + self.lease_ms, now)?;
            self.renewed_at = now;
        }
        Ok(())
    }

    pub(crate) fn drive_claimed(&mut self, run: &str) -> EngineResult<RunStatus> {
        let depth = self.run_spans.len();
        let status = self.drive_claimed_in_span(run);
        self.run_spans.truncate(depth);
        self.run_calls.remove(run);
        status
    }

    fn drive_claimed_in_span(&mut self, run: &str) -> EngineResult<RunStatus> {
        let (record, saved) = self
            .store
            .load(run)?
            .ok_or_else(|| EngineError::NoSuchRun(run.to_string()))?;
        if record.status.is_final() {
            return Ok(record.status);
        }
        let span = crate::telemetry::drive_span(self.store.as_mut(), &record);
        self.run_spans.push(span.clone());
        let _span = span.entered();
        let module = self.module(&record.version)?;
        if saved.program_hash != record.version {
            return Err(EngineError::Corrupt(format!(
                "run {run}: its checkpoint belongs to version {}, not {}",
                saved.program_hash, record.version
            )));
        }
        let machine = snapshot::decode(saved.format_version, &saved.state)
            .map_err(|why| EngineError::Corrupt(format!("run {run}: {why}")))?;
        let version = record.version.clone();
        let mut d = Driving {
            run,
            record: &record,
            version: &version,
            module: &module,
            machine,
            memory: CallMemory::default(),
            pending: Vec::new(),
            woke_from_wait: record.status == RunStatus::Waiting
                && !matches!(record.waiting(), Some(WaitingOn::Tool { .. })),
        };
        if let Some(status) = self.wake(&mut d)? {
            return Ok(status);
        }
        // What the run's earlier tool calls left: kept with the checkpoint, so that a resume
        // reads no history (a checkpoint written before that was kept: from the history).
        d.memory = match saved.calls.as_deref().and_then(CallMemory::parse) {
            Some(memory) => memory.at_step(d.machine.steps),
            None => CallMemory::read(&self.store.history(run)?, d.machine.steps),
        };
        self.remember(run, &d.memory);
        loop {
            let stop = match d.machine.run(&module) {
                Outcome::Completed(value) => {
                    let ret = module.workflows[d.machine.workflow as usize].ret;
                    let change = run_completed(output_json(&module, ret, &value), d.pending);
                    self.commit(run, &version, None, change)?;
                    return Ok(RunStatus::Completed);
                }
                Outcome::Failed(error) => {
                    return self.fail_run(run, &version, &module, &error, d.pending);
                }
                Outcome::Durable { request, deadline } => {
                    self.durable_step(&mut d, request, deadline)?
                }
            };
            if let Some(status) = stop {
                return Ok(status);
            }
        }
    }

    /// `continue as`: starts the successor run (unless a crash left it started already) with
    /// the new arguments, and ends this run as `continued`, pointing at it. The successor
    /// takes over this run's parent, so a parent waiting on a chain of continued runs is woken
    /// by the last one.
    pub(crate) fn continue_as(
        &mut self,
        d: &mut Driving<'_>,
        workflow: u32,
        args: &[Value],
        here: Option<i64>,
    ) -> EngineResult<RunStatus> {
        let record = d.record;
        let code = d.module.workflows.get(workflow as usize).ok_or_else(|| {
            EngineError::Corrupt("`continue as` names an unknown workflow".into())
        })?;
        let successor = successor_of(&record.id);
        let input = arguments_json(&code.params, args, true);
        if self.store.run(&successor)?.is_none() {
            self.start_with_id(
                &successor,
                &record.version,
                &code.name,
                &input,
                &StartedAs {
                    by: &record.started_by,
                    parent: record.parent.as_deref(),
                    continued_from: Some(&record.id),
                },
            )?;
        }
        // What the history keeps of the input is what the successor stored: secrets redacted.
        let stored_input = self
            .store
            .run(&successor)?
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.input).ok())
            .unwrap_or(serde_json::Value::Null);
        let mut events = std::mem::take(&mut d.pending);
        events.push(event(
            EventKind::RunContinued,
            Some(code.name.clone()),
            None,
            here,
            serde_json::json!({ "run": successor, "input": stored_input }),
        ));
        self.commit(
            &record.id,
            &record.version,
            None,
            Change {
                events,
                status: RunStatus::Continued,
                output: None,
                error: None,
                waiting_on: None,
                wake_at: None,
            },
        )?;
        Ok(RunStatus::Continued)
    }

    pub(crate) fn fail_run(
        &mut self,
        run: &str,
        version: &str,
        module: &Module,
        error: &RuntimeError,
        mut events: Vec<NewEvent>,
    ) -> EngineResult<RunStatus> {
        if let Some(span) = self.run_spans.last() {
            crate::telemetry::mark_failed(span, &error.kind);
        }
        // A cancel that ran the undo blocks first ends here: the run is cancelled.
        if error.kind == "Cancelled"
            && let Some(by) = error
                .error
                .as_ref()
                .and_then(|e| e.get("by"))
                .and_then(|b| b.as_str())
        {
            events.push(cancel_event(by, self.clock.now()));
            self.commit(
                run,
                version,
                None,
                Change {
                    events,
                    status: RunStatus::Cancelled,
                    output: None,
                    error: None,
                    waiting_on: None,
                    wake_at: None,
                },
            )?;
            return Ok(RunStatus::Cancelled);
        }
        events.push(event(EventKind::RunFailed,
            None,
            None,
            error.location.map(|l| l.1 as i64),
            serde_json::json!({ "kind": error.kind, "message": error.message, "at": error.at(module), "error": error.error }),
        ));
        self.commit(
            run,
            version,
            None,
            Change {
                events,
                status: RunStatus::Failed,
                output: None,
                error: Some(render_error(module, error)),
                waiting_on: None,
                wake_at: None,
            },
        )?;
        Ok(RunStatus::Failed)
    }

    fn is_native(&self, info: &bytecode::ToolInfo) -> bool {
        matches!(&info.binding, Binding::Exec { command } if self.native_tools.contains_key(command))
    }

    /// Drives many runs at once, committing one step of every run in a single transaction
    /// (group commit): the fsync that makes a step durable is shared by all of them. Each
    /// run goes on only after the commit holding its step. Steps calling in-process tools
    /// are batched; a run that reaches any other durable point is finished one run at a
    /// time, like [`Engine::drive`]. Returns how many runs completed.
    pub fn drive_batch(&mut self, runs: &[String]) -> EngineResult<usize> {
        self.drive_many(runs, true)
    }

    /// [`Engine::drive_batch`] for the branches of a `parallel`, driven by their parent:
    /// a branch that ends does not wake the parent (which is the one driving it).
    pub(crate) fn drive_branches(&mut self, runs: &[String]) -> EngineResult<usize> {
        self.drive_many(runs, false)
    }

    fn drive_many(&mut self, runs: &[String], wake_parents: bool) -> EngineResult<usize> {
        struct Active {
            id: String,
            version: String,
            record: crate::store::RunRecord,
            module: Rc<Module>,
            machine: Machine,
        }
        let now = self.clock.now();
        let mut active = Vec::new();
        let mut one_by_one = Vec::new();
        for id in runs {
            if !self
                .store
                .claim(id, &self.owner, now + self.lease_ms, now)?
            {
                continue;
            }
            let (record, saved) = self
                .store
                .load(id)?
                .ok_or_else(|| EngineError::NoSuchRun(id.clone()))?;
            if record.status != RunStatus::Runnable {
                self.release(id)?;
                continue;
            }
            // The batch makes only first attempts of in-process calls, which change nothing
            // the run remembers of its calls; a run with failed or unfinished calls goes alone.
            let remembers_calls = saved
                .calls
                .as_deref()
                .and_then(CallMemory::parse)
                .is_some_and(|memory| memory != CallMemory::default());
            if remembers_calls {
                one_by_one.push(id.clone());
                continue;
            }
            let module = self.module(&record.version)?;
            let machine = snapshot::decode(saved.format_version, &saved.state)
                .map_err(|why| EngineError::Corrupt(format!("run {id}: {why}")))?;
            active.push(Active {
                id: id.clone(),
                version: record.version.clone(),
                record,
                module,
                machine,
            });
        }
        let mut completed = 0;
        // Child runs that completed in the batch: their parents are woken once they are
        // released (not after the parent's next periodic look at them).
        let mut children_done = Vec::new();
        while !active.is_empty() {
            let now = self.clock.now();
            let mut commits = Vec::with_capacity(active.len());
            let mut still_going = Vec::with_capacity(active.len());
            for mut run in active {
                let commit = |machine: Option<&Machine>, change: Change| StepCommit {
                    run: run.id.clone(),
                    owner: self.owner.clone(),
                    checkpoint: machine.map(|m| checkpoint(&run.version, m)),
                    events: stamped(change.events, now),
                    status: change.status,
                    output: change.output,
                    error: change.error,
                    waiting_on: change.waiting_on.as_ref().map(WaitingOn::to_string),
                    wake_at: change.wake_at,
                    now,
                    gate: None,
                    outbox: Default::default(),
                    takes_signal: None,
                };
                match run.machine.run(&run.module) {
                    Outcome::Completed(value) => {
                        let ret = run.module.workflows[run.machine.workflow as usize].ret;
                        let output = output_json(&run.module, ret, &value);
                        commits.push(commit(None, run_completed(output, Vec::new())));
                        completed += 1;
                        if run.record.parent.is_some() {
                            children_done.push(run.id.clone());
                        }
                    }
                    Outcome::Durable {
                        request: Request::Tool { tool, args },
                        deadline: None,
                    } if run
                        .module
                        .tools
                        .get(tool as usize)
                        .is_some_and(|info| self.is_native(info)) =>
                    {
                        let info = &run.module.tools[tool as usize];
                        let step = run.machine.steps;
                        let here = line(&run.module, &run.machine);
                        let key = format!("{}:{step}", run.id);
                        let json_of = |reveal: bool| arguments_json(&info.params, &args, reveal);
                        let context = CallContext {
                            run_id: run.id.clone(),
                            idempotency_key: key.clone(),
                            time_limit_ms: None,
                        };
                        let started = self.clock.now();
                        let called = self.call_inline(&run.module, info, &json_of(true), &context);
                        let finished = self.clock.now();
                        let held = tools::Secrets::held_by(&run.machine);
                        match finish_call(&run.module, info, called, &held) {
                            // The same two records as the call made one run at a time.
                            (Ok(value), record) => {
                                let events = vec![
                                    call_started(info, 1, here, step, &key, json_of(false)),
                                    call_completed(
                                        info,
                                        1,
                                        here,
                                        finished - started,
                                        step,
                                        &value,
                                        record,
                                    ),
                                ];
                                run.machine
                                    .complete(&run.module, value, finished)
                                    .map_err(EngineError::Corrupt)?;
                                commits.push(commit(Some(&run.machine), Change::runnable(events)));
                                still_going.push(run);
                            }
                            // A failure is recorded (and retried) one run at a time, where
                            // the call is made again: it is in-process, with no effect outside.
                            (Err(_), _) => one_by_one.push(run.id.clone()),
                        }
                    }
                    // A gate opens in the batch too, unless it must notify someone (that
                    // is done one run at a time, after the gate is recorded).
                    Outcome::Durable {
                        request: Request::Approval { gate, options },
                        deadline,
                    } if self.config.notify.is_empty() => {
                        let name = run
                            .module
                            .gates
                            .get(gate as usize)
                            .cloned()
                            .unwrap_or_default();
                        let here = line(&run.module, &run.machine);
                        let at = OpenedAt {
                            module: &run.module,
                            machine: &run.machine,
                            kind: GateKind::Approval,
                            name: &name,
                            options: &options,
                            deadline,
                        };
                        let (change, row) =
                            gate_opening(GateRun::of(&run.record), &at, here, Vec::new(), now);
                        let mut opening = commit(Some(&run.machine), change);
                        opening.gate = Some(GateChange::Open(row));
                        commits.push(opening);
                    }
                    Outcome::Failed(_) | Outcome::Durable { .. } => one_by_one.push(run.id.clone()),
                }
            }
            self.store.commit(&commits)?;
            active = still_going;
        }
        // The runs that left the batch keep their claims and go on one by one (released in
        // between, another worker could take them and this one would find them claimed).
        for id in runs.iter().filter(|id| !one_by_one.contains(id)) {
            self.release(id)?;
        }
        for id in children_done.iter().filter(|_| wake_parents) {
            self.wake_parent(id)?;
        }
        for id in one_by_one {
            let result = self.drive_claimed(&id);
            let released = self.release(&id);
            match result {
                Ok(status) => {
                    if status.is_final() && wake_parents {
                        self.wake_parent(&id)?;
                    }
                    if status == RunStatus::Completed {
                        completed += 1;
                    }
                }
                // Its claim lapsed and another process has it: that one goes on with it.
                Err(EngineError::Claimed(_)) => {}
                Err(e) => return Err(e),
            }
            released?;
            self.flush_notifications()?;
        }
        Ok(completed)
    }

    /// A tool call: recorded as started (committed before the outside world is touched),
    /// then made inline or handed to the pool, or — when the pool has answered — recorded
    /// as completed or failed. `None`: the run goes on; `Some(status)`: the drive stops.
    pub(crate) fn tool_step(
        &mut self,
        call: ToolStep<'_>,
        machine: &mut Machine,
        memory: &mut CallMemory,
        pending: &mut Vec<NewEvent>,
    ) -> EngineResult<Option<RunStatus>> {
        let ToolStep {
            run,
            version,
            module,
            tool,
            args,
            here,
            deadline,
        } = call;
        let step = machine.steps;
        let info = module
            .tools
            .get(tool as usize)
            .cloned()
            .ok_or_else(|| EngineError::Corrupt("unknown tool".into()))?;
        let input = arguments_json(&info.params, &args, false);
        let site = (info.name.clone(), here);
        // The run id and the step number of the call's first attempt: the same after a crash
        // and on every attempt of a `retry`.
        let key = match (memory.in_flight_key.take(), memory.failed_calls.get(&site)) {
            (Some(key), _) => key,
            (None, Some((key, failed_input))) if *failed_input == input => key.clone(),
            _ => format!("{run}:{step}"),
        };
        let attempt = 1 + memory.failures.get(&site).copied().unwrap_or(0);
        let held = tools::Secrets::held_by(machine);
        let (called, started, finished) = match self.take_arrived(run, step) {
            // The pool made the call: its `step_started` is the run's last record.
            Some(done) => {
                memory.attempt_after_crash = false;
                (done.called, done.started, done.finished)
            }
            // Every thread of the pool is making a call: the run stays where it is, runnable,
            // and goes on when one is free (a started call is always one being made, so a
            // process that dies abandons at most as many calls as it has threads).
            None if self.pool_is_full() && self.reaches_outside(&info) => {
                if !pending.is_empty() {
                    self.commit(
                        run,
                        version,
                        Some(machine),
                        Change::runnable(std::mem::take(pending)),
                    )?;
                }
                return Ok(Some(RunStatus::Runnable));
            }
            None => {
                if memory.attempt_after_crash {
                    pending.push(event(EventKind::StepResumed, Some(info.name.clone()), None, here, serde_json::json!({ "step_number": step, "idempotency_key": key, "why": "the step was in flight when the previous flowrt stopped; it runs again with the same idempotency key" })));
                    memory.attempt_after_crash = false;
                }
                pending.push(call_started(
                    &info,
                    attempt,
                    here,
                    step,
                    &key,
                    input.clone(),
                ));
                memory.started(step, &site, &key, &input);
                self.remember(run, memory);
                let started = self.clock.now();
                let context = CallContext {
                    run_id: run.to_string(),
                    idempotency_key: key.clone(),
                    time_limit_ms: deadline.map(|d| (d - started).max(0) as u64),
                };
                // The tool receives its secrets; the history saw them redacted.
                let call_input = arguments_json(&info.params, &args, true);
                if let Some(outside) = self.offloadable(module, &info, &call_input) {
                    return self
                        .offload(
                            run, version, machine, &info, attempt, outside, context, pending,
                        )
                        .map(Some);
                }
                // An in-process tool has no effect outside this process, so it cannot be "in
                // flight" across a crash: its start needs no commit of its own.
                if !self.is_native(&info) {
                    self.commit(
                        run,
                        version,
                        Some(machine),
                        Change::runnable(std::mem::take(pending)),
                    )?;
                    // Inside a group commit, everything that led here (the decision that
                    // allowed this call, above all) is on disk before the outside world is
                    // touched.
                    self.store.flush()?;
                }
                let span = crate::telemetry::tool_span(&info, attempt);
                let called =
                    span.in_scope(|| self.call_inline(module, &info, &call_input, &context));
                if let Err(failure) = &called.result {
                    crate::telemetry::mark_failed(&span, failure.kind);
                }
                (called, started, self.clock.now())
            }
        };
        let (result, record) = finish_call(module, &info, called, &held);
        match result {
            Ok(value) => {
                pending.push(call_completed(
                    &info,
                    attempt,
                    here,
                    finished - started,
                    step,
                    &value,
                    record,
                ));
                memory.failures.remove(&site);
                memory.failed_calls.remove(&site);
                memory.started.remove(&site);
                memory.ended();
                self.remember(run, memory);
                machine
                    .complete(module, value, finished)
                    .map_err(EngineError::Corrupt)?;
            }
            Err(failure) => {
                let mut data = serde_json::json!({ "step_number": step, "kind": failure.kind, "message": failure.message, "retryable": failure.retryable });
                extend(&mut data, record);
                let error = failure_value(module, tool, failure, attempt);
                // An answer the tool declares (`raises RateLimited on 429`) is recorded as the
                // named error the workflow sees.
                if let Some(Value::Str(kind)) = error.field("kind")
                    && data["kind"].as_str() != Some(kind.as_str())
                {
                    data["kind"] = serde_json::Value::String(kind.clone());
                }
                pending.push(event_with_duration(
                    EventKind::StepFailed,
                    Some(info.name.clone()),
                    Some(attempt),
                    here,
                    finished - started,
                    data,
                ));
                *memory.failures.entry(site.clone()).or_default() += 1;
                memory.started.remove(&site);
                memory
                    .failed_calls
                    .insert(site, (key.clone(), input.clone()));
                memory.ended();
                self.remember(run, memory);
                if let Some(Outcome::Failed(failed)) = machine.fail_step(module, error, finished) {
                    return self
                        .fail_run(run, version, module, &failed, std::mem::take(pending))
                        .map(Some);
                }
            }
        }
        self.commit(
            run,
            version,
            Some(machine),
            Change::runnable(std::mem::take(pending)),
        )?;
        Ok(None)
    }

    /// The call to hand to the pool, when there is a pool and the binding reaches outside
    /// this process (in-process tools and a test's doubles are answered inline).
    fn offloadable(
        &self,
        module: &Module,
        info: &bytecode::ToolInfo,
        input: &serde_json::Value,
    ) -> Option<ToolCall> {
        if !self.reaches_outside(info) {
            return None;
        }
        Some(self.resolve(module, info, input))
    }

    /// Whether a call of `info` goes to the pool: there is one, and the binding reaches
    /// outside this process (in-process tools and a test's doubles are answered inline).
    fn reaches_outside(&self, info: &bytecode::ToolInfo) -> bool {
        self.executor.is_some() && self.tool_double.is_none() && !self.is_native(info)
    }

    /// Whether the pool has as many calls as threads (including answers not yet recorded).
    fn pool_is_full(&self) -> bool {
        self.has_pool() && self.free_threads() == 0
    }

    /// Commits the call's start with the run waiting on it, and queues the call. The claim
    /// stays with this engine (its heartbeat keeps it alive) until the completion is applied.
    #[allow(clippy::too_many_arguments)]
    fn offload(
        &mut self,
        run: &str,
        version: &str,
        machine: &Machine,
        info: &bytecode::ToolInfo,
        attempt: i64,
        call: ToolCall,
        context: CallContext,
        pending: &mut Vec<NewEvent>,
    ) -> EngineResult<RunStatus> {
        self.commit(
            run,
            version,
            Some(machine),
            Change {
                waiting_on: Some(WaitingOn::Tool {
                    name: info.name.clone(),
                }),
                status: RunStatus::Waiting,
                ..Change::runnable(std::mem::take(pending))
            },
        )?;
        self.store.flush()?;
        let invocation = Invocation {
            run: run.to_string(),
            step: machine.steps,
            tool: info.name.clone(),
            call,
            context,
            span: crate::telemetry::tool_span(info, attempt),
            step_span: tracing::Span::current(),
        };
        let submitted = self
            .executor
            .as_ref()
            .is_some_and(|executor| executor.submit(Work::Call(Box::new(invocation))));
        if submitted {
            self.in_flight.insert(run.to_string());
        }
        Ok(RunStatus::Waiting)
    }

    /// Answers a call here and now: a test's double, an in-process tool, or the binding
    /// itself (when the engine has no pool).
    fn call_inline(
        &self,
        module: &Module,
        info: &bytecode::ToolInfo,
        input: &serde_json::Value,
        context: &CallContext,
    ) -> tools::Called {
        let answered = |result| tools::Called {
            result,
            record: serde_json::Map::new(),
        };
        if let Some(double) = &self.tool_double {
            return answered(double.call(&context.run_id, info, input));
        }
        if let Binding::Exec { command } = &info.binding
            && let Some(native) = self.native_tools.get(command)
        {
            return answered(native(&Value::from_any_json(input)).map(|v| v.to_json()));
        }
        effects::perform(&info.name, &self.resolve(module, info, input), context)
    }

    /// The binding of `info` with its configuration, as one self-contained call.
    fn resolve(
        &self,
        module: &Module,
        info: &bytecode::ToolInfo,
        input: &serde_json::Value,
    ) -> ToolCall {
        match &info.binding {
            Binding::Exec { command } => ToolCall::Exec {
                command: command.clone(),
                input: input.to_string(),
                timeout_ms: self.config.exec_timeout_ms(&info.name),
            },
            Binding::Http { method, path } => ToolCall::Http {
                method: method.clone(),
                path: path.clone(),
                config: self.config.tools.get(&info.name).cloned(),
                input: input.clone(),
            },
            Binding::Llm { model, prompt } => ToolCall::Llm {
                model: model.clone(),
                prompt: prompt.clone(),
                config: self.config.llm.clone(),
                input: input.clone(),
                schema: bytecode::schema::json_schema(module, info.ret),
            },
        }
    }

    /// Starts the pool of `threads` threads that make tool calls for this engine, so that
    /// driving runs never waits on the outside world. `waker` is called after each call
    /// finishes (the server sends its engine thread a job that applies it). Needs the
    /// heartbeat ([`Engine::keep_claims_alive`]): a run in a call stays claimed meanwhile.
    pub fn run_effects_in_pool(
        &mut self,
        threads: usize,
        waker: Option<effects::Waker>,
    ) -> EngineResult<()> {
        self.executor =
            Some(Executor::start(threads, waker, &self.clock).map_err(EngineError::Corrupt)?);
        Ok(())
    }

    /// How many tool calls and announcements the pool is making for this engine now.
    pub fn calls_in_flight(&self) -> usize {
        self.in_flight.len() + self.announcing
    }

    /// Waits up to `timeout` for a tool call or announcement of the pool to finish (a
    /// worker's idle wait).
    pub fn wait_for_calls(&mut self, timeout: std::time::Duration) {
        if self.calls_in_flight() == 0 {
            std::thread::sleep(timeout);
            return;
        }
        if let Some(done) = self.executor.as_ref().and_then(|e| e.wait(timeout)) {
            self.take_done(vec![done]);
        }
    }

    /// Sorts what the pool finished: answers to apply, announcements to record.
    fn take_done(&mut self, done: Vec<Done>) {
        for finished in done {
            match finished {
                Done::Call(completion) => self.waiting_to_apply.push(completion),
                Done::Announced(announced) => self.announced.push(announced),
            }
        }
    }

    /// Whether tool calls and notifications go to a pool of threads (`worker`, `serve`).
    pub(crate) fn has_pool(&self) -> bool {
        self.executor.is_some()
    }

    /// How many threads of the pool are neither in a call nor in an attempt to notify.
    pub(crate) fn free_threads(&self) -> usize {
        self.executor.as_ref().map_or(0, |executor| {
            executor
                .threads()
                .saturating_sub(self.in_flight.len() + self.announcing)
        })
    }

    /// Queues work on the pool. False when there is no pool or it stopped.
    pub(crate) fn submit(&self, work: Work) -> bool {
        self.executor
            .as_ref()
            .is_some_and(|executor| executor.submit(work))
    }

    /// Records every call the pool finished and drives each run on from it. Returns how many
    /// were applied.
    pub fn apply_completions(&mut self) -> EngineResult<usize> {
        while let Some(run) = self.stranded.pop() {
            self.in_flight.remove(&run);
            if let Err(error) = self.drive_claimed(&run).and_then(|_| self.release(&run)) {
                self.in_flight.insert(run.clone());
                self.stranded.push(run);
                return Err(error);
            }
        }
        if let Some(executor) = &self.executor {
            let arrived = executor.arrived();
            self.take_done(arrived);
        }
        for announced in std::mem::take(&mut self.announced) {
            self.announcing = self.announcing.saturating_sub(1);
            self.finish_attempt(announced.row, announced.outcome)?;
        }
        let done = std::mem::take(&mut self.waiting_to_apply);
        let applied = done.len();
        let mut done = done.into_iter();
        while let Some(completion) = done.next() {
            let run = completion.run.clone();
            self.in_flight.remove(&run);
            self.arrived.insert(run.clone(), completion);
            let result = self.drive_claimed(&run);
            let unapplied = self.arrived.remove(&run);
            match result {
                Ok(status) => {
                    self.release(&run)?;
                    if status.is_final() {
                        self.wake_parent(&run)?;
                    }
                }
                // Its claim lapsed and another process took the run over (and makes the
                // call again under the same key): this answer is not recorded.
                Err(EngineError::Claimed(_)) => {}
                // The database went away before the answer was recorded: keep it, and the
                // claim, and record it when the database is back (the worker retries). If it
                // went away after the answer was taken, the run goes on from its last commit
                // (the call made again under its key), still under this engine's claim.
                Err(error @ EngineError::Store(_)) => {
                    self.in_flight.insert(run.clone());
                    match unapplied {
                        Some(completion) => self.waiting_to_apply.push(completion),
                        None => self.stranded.push(run),
                    }
                    self.waiting_to_apply.extend(done);
                    return Err(error);
                }
                Err(error) => {
                    let _ = self.release(&run);
                    self.waiting_to_apply.extend(done);
                    return Err(error);
                }
            }
            self.flush_notifications()?;
        }
        Ok(applied)
    }

    pub(crate) fn has_arrived(&self, run: &str, step: u64) -> bool {
        self.arrived.get(run).is_some_and(|done| done.step == step)
    }

    fn take_arrived(&mut self, run: &str, step: u64) -> Option<Completion> {
        if self.has_arrived(run, step) {
            self.arrived.remove(run)
        } else {
            None
        }
    }

    /// Keeps `memory` as what the run's next checkpoint records of its calls.
    pub(crate) fn remember(&mut self, run: &str, memory: &CallMemory) {
        self.run_calls.insert(run.to_string(), memory.to_json());
    }

    /// Gives up this engine's claim on `run`, unless a call of the run is in the pool (the
    /// claim then lasts until its completion is applied).
    pub(crate) fn release(&mut self, run: &str) -> EngineResult<()> {
        if !self.in_flight.contains(run) {
            self.store.release(run, &self.owner)?;
        }
        Ok(())
    }
}

/// A tool call site's part of a run's history: the arguments of [`Engine::tool_step`].
pub(crate) struct ToolStep<'a> {
    pub(crate) run: &'a str,
    pub(crate) version: &'a str,
    pub(crate) module: &'a Module,
    pub(crate) tool: u32,
    pub(crate) args: Vec<Value>,
    pub(crate) here: Option<i64>,
    pub(crate) deadline: Option<Millis>,
}

/// A tool call site: the tool and the source line of the call.
type Site = (String, Option<i64>);

/// What a drive needs to know of a run's earlier tool calls: read from its history once,
/// then kept with every checkpoint (`Checkpoint::calls`) and updated as calls are made.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CallMemory {
    /// The key of the call that was in flight when the last process stopped (the run's last
    /// record is its `step_started` at the current step): it is made again under that key.
    #[serde(skip)]
    pub(crate) in_flight_key: Option<String>,
    /// Whether the next call is such a repeat (recorded as `step_resumed`).
    #[serde(skip)]
    pub(crate) attempt_after_crash: bool,
    /// The step number and key of the last call whose start was recorded and whose end was
    /// not (what `in_flight_key` is read from).
    #[serde(default)]
    pub(crate) last_started: Option<(u64, String)>,
    /// The attempt number of each site: 1 + its failures since its last success (a `retry`
    /// loops back to the same call).
    #[serde(with = "site_map", default)]
    pub(crate) failures: HashMap<Site, i64>,
    /// The idempotency key and input of each site's last failed call: calling it again with
    /// the same input (a `retry`) is the same request, so it keeps the same key.
    #[serde(with = "site_map", default)]
    pub(crate) failed_calls: HashMap<Site, (String, serde_json::Value)>,
    /// The calls started and not yet finished, by site.
    #[serde(with = "site_map", default)]
    pub(crate) started: HashMap<Site, (String, serde_json::Value)>,
    /// At a `parallel`: what the history records of its branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) branches: Option<crate::parallel::BranchMemory>,
}

/// A map keyed by call site, as JSON: a list of `[site, value]` pairs (JSON object keys are
/// text only).
mod site_map {
    use super::Site;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::HashMap;

    pub(super) fn serialize<V: Serialize, S: Serializer>(
        map: &HashMap<Site, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut pairs: Vec<(&Site, &V)> = map.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        pairs.serialize(serializer)
    }

    pub(super) fn deserialize<'de, V: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<HashMap<Site, V>, D::Error> {
        Ok(Vec::<(Site, V)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

impl CallMemory {
    fn read(history: &[crate::store::Event], step: u64) -> CallMemory {
        let in_flight_key = history.last().and_then(|e| {
            let data = serde_json::from_str::<serde_json::Value>(&e.data).ok()?;
            (e.kind == EventKind::StepStarted
                && data.get("step_number").and_then(|n| n.as_u64()) == Some(step))
            .then(|| data["idempotency_key"].as_str().map(str::to_string))
            .flatten()
        });
        let mut memory = CallMemory {
            attempt_after_crash: in_flight_key.is_some(),
            last_started: in_flight_key.clone().map(|key| (step, key)),
            in_flight_key,
            ..CallMemory::default()
        };
        for e in history {
            let site = (e.step.clone().unwrap_or_default(), e.line);
            match e.kind {
                EventKind::StepStarted => {
                    if let Ok(data) = serde_json::from_str::<serde_json::Value>(&e.data)
                        && let Some(key) = data["idempotency_key"].as_str()
                    {
                        memory
                            .started
                            .insert(site, (key.to_string(), data["input"].clone()));
                    }
                }
                // A failed call, or one that was in flight at a crash and found its deadline
                // passed on resume (a `step_timed_out` right after its own `step_started`):
                // an attempt that failed, whose retry keeps the key. A `step_timed_out`
                // without a start is a call that was never made.
                EventKind::StepFailed | EventKind::StepTimedOut => {
                    let made = memory.started.remove(&site);
                    if e.kind == EventKind::StepFailed || made.is_some() {
                        *memory.failures.entry(site.clone()).or_default() += 1;
                    }
                    if let Some(call) = made {
                        memory.failed_calls.insert(site, call);
                    }
                }
                EventKind::StepCompleted => {
                    memory.failures.remove(&site);
                    memory.failed_calls.remove(&site);
                    memory.started.remove(&site);
                }
                _ => {}
            }
        }
        memory
    }

    fn parse(json: &str) -> Option<CallMemory> {
        serde_json::from_str(json).ok()
    }

    /// The memory as a drive at step `step` starts from it: a call started at this very
    /// step and not finished was in flight when the last process stopped.
    fn at_step(mut self, step: u64) -> CallMemory {
        self.in_flight_key = self
            .last_started
            .as_ref()
            .filter(|(started, _)| *started == step)
            .map(|(_, key)| key.clone());
        self.attempt_after_crash = self.in_flight_key.is_some();
        self
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A call's start, recorded.
    fn started(&mut self, step: u64, site: &Site, key: &str, input: &serde_json::Value) {
        self.last_started = Some((step, key.to_string()));
        self.started
            .insert(site.clone(), (key.to_string(), input.clone()));
    }

    /// A call's end (completed, failed or timed out), recorded.
    pub(crate) fn ended(&mut self) {
        self.last_started = None;
    }
}

/// What a call's answer becomes: checked against the tool's type, and — like everything
/// that comes back from the outside (an error's text with the tool's stderr, the recorded
/// request and response) — scrubbed of every secret the run holds (`held`) before anyone
/// records or shows it: a tool that echoes its input, or a server that puts the request body
/// in its error page, must not put a secret in the history.
fn finish_call(
    module: &Module,
    info: &bytecode::ToolInfo,
    called: tools::Called,
    held: &tools::Secrets,
) -> (
    Result<Value, ToolFailure>,
    serde_json::Map<String, serde_json::Value>,
) {
    let tools::Called { result, mut record } = called;
    let mut result = result.and_then(|json| check_output(module, info, &json));
    if !held.is_empty() {
        match &mut result {
            Ok(value) => held.redact_value(value),
            Err(failure) => failure.message = held.redact(&failure.message),
        }
        let mut json = serde_json::Value::Object(std::mem::take(&mut record));
        held.redact_json(&mut json);
        if let serde_json::Value::Object(map) = json {
            record = map;
        }
    }
    (result, record)
}

/// The arguments of a call as the JSON object its callee takes, one field per parameter:
/// secrets redacted (what the history shows) or revealed (what the callee receives).
pub(crate) fn arguments_json(
    params: &[(String, bytecode::TypeRef)],
    args: &[Value],
    reveal: bool,
) -> serde_json::Value {
    serde_json::Value::Object(
        params
            .iter()
            .map(|(name, _)| name.clone())
            .zip(args.iter().map(|a| {
                if reveal {
                    a.to_json_revealing()
                } else {
                    a.to_json()
                }
            }))
            .collect(),
    )
}

/// A failed call as the `Error` record the workflow sees: the named error the tool's
/// `raises` makes of that answer (its fields read from the answer's body, by name), or the
/// builtin kind. An answer whose body does not fit the named error stays a plain error,
/// saying why.
pub(crate) fn failure_value(
    module: &Module,
    tool: u32,
    failure: crate::tools::ToolFailure,
    attempt: i64,
) -> Value {
    let name = module
        .tools
        .get(tool as usize)
        .map(|t| t.name.clone())
        .unwrap_or_default();
    let plain = |message: String, failure: &crate::tools::ToolFailure| {
        tool_error_value(
            failure.kind,
            message,
            &name,
            &name,
            attempt,
            failure.retryable,
        )
    };
    let Some(answer) = &failure.answer else {
        return plain(failure.message.clone(), &failure);
    };
    let code = match answer.code {
        crate::tools::AnswerCode::Status(s) => u16::try_from(s).map(bytecode::RaiseCode::Status),
        crate::tools::AnswerCode::Exit(e) => u8::try_from(e).map(bytecode::RaiseCode::Exit),
        crate::tools::AnswerCode::Refusal => Ok(bytecode::RaiseCode::Refusal),
    };
    let raise = code.ok().and_then(|code| {
        module
            .tool_raises
            .iter()
            .find(|r| r.tool == tool && r.on == code)
    });
    let Some(bytecode::TypeDesc::Record { name: kind, fields }) =
        raise.and_then(|r| module.type_desc(r.error))
    else {
        return plain(failure.message.clone(), &failure);
    };
    let mut record = std::collections::BTreeMap::new();
    for (field, ty) in fields {
        let value = match field.as_str() {
            "kind" => Value::Str(kind.clone()),
            "message" => Value::Str(failure.message.clone()),
            "step" | "tool" => Value::Str(name.clone()),
            "attempt" => Value::Int(attempt),
            "retryable" => Value::Bool(failure.retryable),
            _ => {
                let json = answer
                    .body
                    .as_ref()
                    .and_then(|b| b.get(field))
                    .unwrap_or(&serde_json::Value::Null);
                match crate::vm::value::from_json(module, *ty, json, &format!("$.{field}")) {
                    Ok(value) => value,
                    Err(why) => {
                        let message =
                            format!("{} (the answer is not a `{kind}`: {why})", failure.message);
                        return plain(message, &failure);
                    }
                }
            }
        };
        record.insert(field.clone(), value);
    }
    Value::Record(record)
}

/// `step_started` of an attempt of a call, with the input as the history shows it (secrets
/// redacted): one builder for the drive loop and the batch.
pub(crate) fn call_started(
    info: &bytecode::ToolInfo,
    attempt: i64,
    here: Option<i64>,
    step: u64,
    key: &str,
    input: serde_json::Value,
) -> NewEvent {
    event(
        EventKind::StepStarted,
        Some(info.name.clone()),
        Some(attempt),
        here,
        serde_json::json!({ "step_number": step, "idempotency_key": key, "input": input }),
    )
}

/// `step_completed` of an attempt, with its output and what the binding recorded.
pub(crate) fn call_completed(
    info: &bytecode::ToolInfo,
    attempt: i64,
    here: Option<i64>,
    duration_ms: i64,
    step: u64,
    output: &Value,
    record: serde_json::Map<String, serde_json::Value>,
) -> NewEvent {
    let mut data = serde_json::json!({ "step_number": step, "output": output.to_json() });
    extend(&mut data, record);
    event_with_duration(
        EventKind::StepCompleted,
        Some(info.name.clone()),
        Some(attempt),
        here,
        duration_ms,
        data,
    )
}

fn check_output(
    module: &Module,
    info: &bytecode::ToolInfo,
    json: &serde_json::Value,
) -> Result<Value, ToolFailure> {
    from_json(module, info.ret, json, "$").map_err(|mismatch: JsonMismatch| {
        ToolFailure::invalid_output(format!(
            "tool `{}` returned data that does not match {}: {mismatch}",
            info.name,
            module.type_name(info.ret)
        ))
    })
}

/// Adds the fields of `record` to the event data `data` (an object).
fn extend(data: &mut serde_json::Value, record: serde_json::Map<String, serde_json::Value>) {
    if let Some(fields) = data.as_object_mut() {
        fields.extend(record);
    }
}

/// The checkpoint of `machine`; `calls: None` keeps what the store holds of the run's calls.
/// The end of a run that returned `output`: one transition for the drive loop and the batch.
pub(crate) fn run_completed(output: serde_json::Value, mut events: Vec<NewEvent>) -> Change {
    events.push(event(
        EventKind::RunCompleted,
        None,
        None,
        None,
        serde_json::json!({ "output": output }),
    ));
    Change {
        events,
        status: RunStatus::Completed,
        output: Some(output.to_string()),
        error: None,
        waiting_on: None,
        wake_at: None,
    }
}

pub(crate) fn checkpoint(version: &str, machine: &Machine) -> Checkpoint {
    Checkpoint {
        calls: None,
        format_version: snapshot::CURRENT_VERSION,
        program_hash: version.to_string(),
        state: snapshot::encode(machine),
    }
}

pub(crate) fn line(module: &Module, machine: &Machine) -> Option<i64> {
    machine.location(module).map(|l| l.line as i64)
}

/// A history event, without its time yet: [`stamped`] gives it the time of the commit that
/// records it (so every event is timed by the engine's one clock).
pub(crate) fn event(
    kind: EventKind,
    step: Option<String>,
    attempt: Option<i64>,
    line: Option<i64>,
    data: serde_json::Value,
) -> NewEvent {
    NewEvent {
        at: UNSTAMPED,
        kind,
        step,
        attempt,
        line,
        duration_ms: None,
        data: data.to_string(),
    }
}

/// The `run_cancelled` event of a run cancelled by `by` at `at` (the store appends it with
/// the cancellation).
pub fn cancel_event(by: &str, at: Millis) -> NewEvent {
    NewEvent {
        at,
        ..event(
            EventKind::RunCancelled,
            None,
            None,
            None,
            serde_json::json!({ "by": by }),
        )
    }
}

pub(crate) fn event_with_duration(
    kind: EventKind,
    step: Option<String>,
    attempt: Option<i64>,
    line: Option<i64>,
    duration: i64,
    data: serde_json::Value,
) -> NewEvent {
    NewEvent {
        duration_ms: Some(duration),
        ..event(kind, step, attempt, line, data)
    }
}

/// The time of an event not yet committed.
const UNSTAMPED: Millis = 0;

/// The events of a commit made at `now`, each timed `now` unless it has a time already.
pub(crate) fn stamped(mut events: Vec<NewEvent>, now: Millis) -> Vec<NewEvent> {
    for event in &mut events {
        if event.at == UNSTAMPED {
            event.at = now;
        }
    }
    events
}

/// The deadline of the `timeout` around the durable point the machine stands at, when it has
/// passed by `now`.
pub(crate) fn expired_deadline(module: &Module, machine: &Machine, now: Millis) -> Option<Millis> {
    match machine.clone().run(module) {
        Outcome::Durable {
            deadline: Some(deadline),
            ..
        } if deadline <= now => Some(deadline),
        _ => None,
    }
}

/// What a timer is for, as the history names it: `retry backoff` for the wait between the
/// attempts of a `retry` (the lowering puts its jittered delay right before the `sleep`, and
/// nothing else does), `sleep` for a `sleep` the workflow wrote.
pub(crate) fn timer_name(module: &Module, machine: &Machine) -> &'static str {
    let code = module
        .workflows
        .get(machine.workflow as usize)
        .map(|w| w.code.as_slice())
        .unwrap_or_default();
    let before = (machine.fiber.pc as usize)
        .checked_sub(1)
        .and_then(|i| code.get(i));
    match before {
        Some(bytecode::Op::Jitter) => "retry backoff",
        _ => "sleep",
    }
}

pub(crate) fn step_name(module: &Module, request: &Request) -> String {
    match request {
        Request::Tool { tool, .. } => module.tools.get(*tool as usize).map(|t| t.name.clone()),
        Request::Workflow { workflow, .. } | Request::ContinueAs { workflow, .. } => module
            .workflows
            .get(*workflow as usize)
            .map(|w| w.name.clone()),
        Request::Approval { gate, .. } => module.gates.get(*gate as usize).cloned(),
        Request::Input { request, .. } => module
            .input_requests
            .get(*request as usize)
            .map(|r| r.name.clone()),
        Request::Sleep { .. } => Some("sleep".into()),
        Request::Audit { event, .. } => module.events.get(*event as usize).cloned(),
        Request::Now => Some("now".into()),
        Request::RunId => Some("run_id".into()),
        Request::Signal { signal } => module.signals.get(*signal as usize).map(|s| s.name.clone()),
        Request::Select { .. } => Some("select".into()),
        Request::Parallel { .. } => Some("parallel".into()),
        Request::Compensate { .. } => Some("compensate".into()),
    }
    .unwrap_or_default()
}

/// The output JSON of a completed run (the workflow's declared result type guides nothing
/// more than the value already carries).
fn output_json(_module: &Module, _ret: bytecode::TypeRef, value: &Value) -> serde_json::Value {
    value.to_json()
}

/// `error[Failed]: message` with the source location, as stored and shown for failed runs.
pub fn render_error(module: &Module, error: &RuntimeError) -> String {
    format!(
        "{}: {} (at {})",
        error.kind,
        error.message,
        error.at(module)
    )
}

/// Converts the input object into the workflow's arguments, or says where it does not fit.
pub fn validate_input(
    module: &Module,
    params: &[(String, bytecode::TypeRef)],
    input: &serde_json::Value,
) -> EngineResult<Vec<Value>> {
    let empty = serde_json::Map::new();
    let given = match input {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null if params.is_empty() => &empty,
        other => {
            return Err(EngineError::Input(format!(
                "$: expected an object with the parameters ({}), found {}",
                params
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                match other {
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Bool(_) => "a boolean",
                    _ => "null",
                }
            )));
        }
    };
    if let Some(extra) = given.keys().find(|k| !params.iter().any(|(n, _)| n == *k)) {
        return Err(EngineError::Input(format!(
            "$.{extra}: the workflow has no parameter `{extra}` (its parameters: {})",
            params
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    params
        .iter()
        .map(|(name, ty)| {
            let path = format!("$.{name}");
            match given.get(name) {
                Some(json) => from_json(module, *ty, json, &path)
                    .map_err(|m| EngineError::Input(m.to_string())),
                None => from_json(module, *ty, &serde_json::Value::Null, &path).map_err(|_| {
                    EngineError::Input(format!(
                        "{path}: expected {}, found nothing (the parameter is missing)",
                        module.type_name(*ty)
                    ))
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod call_memory_tests {
    use super::*;

    #[test]
    fn the_memory_kept_with_a_checkpoint_reads_back_as_the_history_would_give_it() {
        let site = ("charge".to_string(), Some(7));
        let mut memory = CallMemory::default();
        memory.started(4, &site, "r1:4", &serde_json::json!({ "n": 1 }));
        *memory.failures.entry(site.clone()).or_default() += 2;
        memory
            .failed_calls
            .insert(site.clone(), ("r1:2".into(), serde_json::json!({ "n": 1 })));
        let back = CallMemory::parse(&memory.to_json()).expect("it parses");
        assert_eq!(back, memory);
        // At the step of the unfinished call: it was in flight, and is made again under its key.
        let resumed = back.clone().at_step(4);
        assert_eq!(resumed.in_flight_key.as_deref(), Some("r1:4"));
        assert!(resumed.attempt_after_crash);
        // At another step: nothing was in flight.
        assert_eq!(back.at_step(5).in_flight_key, None);
        assert_eq!(CallMemory::parse("not json"), None);
    }
}
