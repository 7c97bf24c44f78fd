//! Human steps: gates that wait for an approval or an input, and the decisions that open
//! them. A gate opens (recorded, notified) when a run reaches `await approval` / `await input`;
//! the run then waits in the database, holding no process. A decision is checked against who
//! may make it, recorded together with the run's new checkpoint, and the run goes on. A gate's
//! clock — escalation, then the final timeout — is a durable timer like `sleep`'s.

use crate::engine::{Change, Engine, EngineError, EngineResult, checkpoint, event, line, now_ms};
use crate::history::WaitingOn;
use crate::notify::{self, RetryPolicy};
use crate::store::{Event, EventKind, Millis, NewEvent, RunRecord, RunStatus, StepCommit};
use crate::vm::machine::error_value;
use crate::vm::value::from_json;
use crate::vm::{Machine, Outcome, Request, RuntimeError, Value, snapshot};
use flow_compiler::bytecode::Module;
use sha2::{Digest, Sha256};
use std::fmt;

pub use crate::history::GateKind;

/// What a due gate timer did.
pub(crate) enum GateClock {
    /// Escalated (or not due yet): the run keeps waiting.
    StillWaiting,
    /// The final timeout passed: an `ApprovalTimeout` was raised and a handler caught it.
    TimedOut(Vec<NewEvent>),
    /// The timeout was not caught: the run fails.
    Failed(RuntimeError, Vec<NewEvent>),
}

/// A decision someone makes at a gate.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Approve { comment: String },
    Reject { comment: String },
    Input { value: serde_json::Value },
}

/// What a decision did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decided {
    /// The gate is decided; the run goes on.
    Closed,
    /// One approval of several (`quorum`) recorded; `remaining` more are needed.
    Recorded { remaining: i64 },
}

#[derive(Debug)]
pub enum DecideError {
    /// The decision is not allowed; nothing was recorded.
    Refused(Refusal),
    Engine(EngineError),
}

/// Why a decision was refused, and what kind of reason it is (the server maps the kind to an
/// HTTP status: 404, 409, 403 or 422).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub why: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// No such run, or it waits at no gate of that name.
    NotFound,
    /// The run or gate moved on: finished, already decided, timed out, a stale view.
    Conflict,
    /// This user may not make this decision.
    Forbidden,
    /// The value does not fit the gate's type.
    Invalid,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

impl From<Refusal> for String {
    fn from(refusal: Refusal) -> String {
        refusal.why
    }
}

impl fmt::Display for DecideError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecideError::Refused(refusal) => write!(f, "{refusal}"),
            DecideError::Engine(e) => write!(f, "{e}"),
        }
    }
}

impl From<EngineError> for DecideError {
    fn from(e: EngineError) -> Self {
        DecideError::Engine(e)
    }
}

impl From<crate::store::StoreError> for DecideError {
    fn from(e: crate::store::StoreError) -> Self {
        DecideError::Engine(e.into())
    }
}

fn refused_as<T>(kind: RefusalKind, why: impl Into<String>) -> Result<T, DecideError> {
    Err(DecideError::Refused(Refusal {
        kind,
        why: why.into(),
    }))
}

fn not_found<T>(why: impl Into<String>) -> Result<T, DecideError> {
    refused_as(RefusalKind::NotFound, why)
}

fn conflict<T>(why: impl Into<String>) -> Result<T, DecideError> {
    refused_as(RefusalKind::Conflict, why)
}

fn forbidden<T>(why: impl Into<String>) -> Result<T, DecideError> {
    refused_as(RefusalKind::Forbidden, why)
}

/// A notification waiting to be delivered once the run's claim is released.
pub struct Outgoing {
    run: String,
    gate: String,
    what: String,
    waiting_on: WaitingOn,
    message: serde_json::Value,
    /// The secrets the run held when the gate opened: a hook's reply is scrubbed of them.
    held: crate::tools::Secrets,
}

/// A gate waiting for someone, as `flowrt approvals` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingGate {
    pub run: String,
    pub workflow: String,
    pub gate: String,
    pub kind: GateKind,
    pub prompt: Option<String>,
    pub context: serde_json::Value,
    /// Who may decide, as text: `role customs`, `user alice`, `any of (…)`.
    pub approvers: String,
    pub started_by: String,
    pub opened_at: Millis,
    pub deadline: Option<Millis>,
    /// Approvals still needed (quorum).
    pub remaining: i64,
    /// SHA-256 of what the reviewer is shown (prompt and context): pass it to a decision
    /// (`--expect-hash`) so that a decision made on a stale view is refused.
    pub shown_hash: String,
    /// Whether the escalation fired (the escalation approvers may decide too).
    pub escalated: bool,
    /// For an input: the JSON Schema of the value it takes.
    pub input_schema: Option<serde_json::Value>,
    /// What happens at the deadline, when there is one: `true` when the workflow catches the
    /// `ApprovalTimeout` (it goes on), `false` when the run then fails.
    pub timeout_caught: Option<bool>,
    /// Approvals needed in all (`quorum`, as the workflow evaluated it).
    pub quorum: i64,
    /// The approvals recorded since the gate opened (a quorum's earlier reviewers), oldest
    /// first: `{by, at, comment}`.
    pub decisions: Vec<serde_json::Value>,
    /// Who the gate escalates to and when (`{to, at, fired}`), when it escalates.
    pub escalation: Option<serde_json::Value>,
    /// The gate's options as the workflow evaluated them when it opened (who, quorum,
    /// allow_self, timeout and escalation in milliseconds).
    pub options: serde_json::Value,
}

/// The options of a gate, as the workflow computed them.
struct GateOptions {
    approvers: Value,
    escalate: Option<Value>,
    escalate_after: Option<i64>,
    timeout: Option<i64>,
    quorum: i64,
    allow_self: bool,
    prompt: Option<String>,
    context: Value,
    /// Whether the workflow catches the `ApprovalTimeout` of this gate (known only for an
    /// open gate, see `open_gate_of`).
    timeout_caught: bool,
}

impl GateOptions {
    fn read(kind: GateKind, options: &Value) -> GateOptions {
        let duration = |name| match options.field(name) {
            Some(Value::Duration(ms)) => Some(*ms),
            _ => None,
        };
        let who = match kind {
            GateKind::Approval => "approvers",
            GateKind::Input => "from",
        };
        GateOptions {
            approvers: options.field(who).cloned().unwrap_or(Value::None),
            escalate: options
                .field("escalate")
                .filter(|v| **v != Value::None)
                .cloned(),
            escalate_after: duration("escalate_after"),
            timeout: duration("timeout"),
            quorum: match options.field("quorum") {
                Some(Value::Int(n)) => (*n).max(1),
                _ => 1,
            },
            allow_self: options.field("allow_self") == Some(&Value::Bool(true)),
            prompt: match options.field("prompt") {
                Some(Value::Str(s)) => Some(s.clone()),
                _ => None,
            },
            context: options.field("context").cloned().unwrap_or(Value::None),
            timeout_caught: false,
        }
    }

    /// The options as evaluated, for a reviewer who asks why (a quorum computed from data).
    fn evaluated(&self, kind: GateKind) -> serde_json::Value {
        let who = match kind {
            GateKind::Approval => "approvers",
            GateKind::Input => "from",
        };
        let mut out =
            serde_json::json!({ who: describe(&self.approvers), "timeout_ms": self.timeout });
        if kind == GateKind::Approval {
            out["quorum"] = self.quorum.into();
            out["allow_self"] = self.allow_self.into();
        }
        if let Some(to) = &self.escalate {
            out["escalate"] = describe(to).into();
            out["escalate_after_ms"] = self.escalate_after.unwrap_or(0).into();
        }
        out
    }

    /// The hash binding a decision to what the reviewer saw.
    fn shown_hash(&self) -> String {
        let shown = serde_json::json!({ "prompt": self.prompt, "context": self.context.to_json() });
        sha256_hex(&shown.to_string())
    }

    fn escalate_at(&self, opened: Millis) -> Option<Millis> {
        self.escalate.as_ref()?;
        Some(opened.saturating_add(self.escalate_after.unwrap_or(0)))
    }

    fn timeout_at(&self, opened: Millis) -> Option<Millis> {
        self.timeout.map(|t| opened.saturating_add(t))
    }

    /// The next time the gate's clock needs attention.
    fn next_wake(&self, opened: Millis, escalated: bool) -> Option<Millis> {
        let escalation = if escalated {
            None
        } else {
            self.escalate_at(opened)
        };
        match (escalation, self.timeout_at(opened)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Whether `user` (holding `roles`) is among `approvers`.
fn may_decide(approvers: &Value, user: &str, roles: &[String]) -> bool {
    let text = |name| match approvers.field(name) {
        Some(Value::Str(s)) => s.as_str(),
        _ => "",
    };
    match text("kind") {
        "role" => roles.iter().any(|r| r == text("name")),
        "user" => text("name") == user,
        "any" => match approvers.field("of") {
            Some(Value::List(items)) => items.iter().any(|a| may_decide(a, user, roles)),
            _ => false,
        },
        _ => false,
    }
}

fn describe(approvers: &Value) -> String {
    let text = |name| match approvers.field(name) {
        Some(Value::Str(s)) => s.clone(),
        _ => String::new(),
    };
    match text("kind").as_str() {
        "role" => format!("role {}", text("name")),
        "user" => format!("user {}", text("name")),
        "any" => match approvers.field("of") {
            Some(Value::List(items)) => format!(
                "any of ({})",
                items.iter().map(describe).collect::<Vec<_>>().join(", ")
            ),
            _ => "nobody".to_string(),
        },
        _ => "nobody".to_string(),
    }
}

/// Whether `user` (holding `roles`) is named by approvers as [`describe`] wrote them in a
/// `gate_opened` event: `role NAME`, `user NAME`, `any of (A, B, …)`.
fn named_in(described: &str, user: &str, roles: &[String]) -> bool {
    if let Some(name) = described.strip_prefix("role ") {
        return roles.iter().any(|r| r == name);
    }
    if let Some(name) = described.strip_prefix("user ") {
        return name == user;
    }
    let Some(inner) = described
        .strip_prefix("any of (")
        .and_then(|rest| rest.strip_suffix(')'))
    else {
        return false;
    };
    // Split at the top level only: a part may itself be `any of (…)`.
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in inner.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                if named_in(inner[start..i].trim(), user, roles) {
                    return true;
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    named_in(inner[start..].trim(), user, roles)
}

/// Whether `user` is one who may decide a gate of the run whose history this is: named (or
/// holding a role named) as the approvers of a gate it opened, or as its escalation once it
/// escalated, or one who decided one of its gates.
pub fn decider_of(history: &[Event], user: &str, roles: &[String]) -> bool {
    // The escalation of each gate, from its last opening.
    let mut escalations: Vec<(String, String)> = Vec::new();
    for e in history {
        let data = || serde_json::from_str::<serde_json::Value>(&e.data).unwrap_or_default();
        let text = |data: &serde_json::Value, key: &str| {
            data.get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        match e.kind {
            EventKind::GateOpened => {
                let data = data();
                if named_in(&text(&data, "approvers"), user, roles) {
                    return true;
                }
                let step = e.step.clone().unwrap_or_default();
                escalations.retain(|(s, _)| *s != step);
                escalations.push((step, text(&data, "escalate")));
            }
            EventKind::GateEscalated => {
                let step = e.step.as_deref().unwrap_or_default();
                if escalations
                    .iter()
                    .any(|(s, who)| s == step && named_in(who, user, roles))
                {
                    return true;
                }
            }
            EventKind::GateDecided | EventKind::ApprovalRecorded if text(&data(), "by") == user => {
                return true;
            }
            _ => {}
        }
    }
    false
}

/// The state of the gate `name` in a run's history: when it last opened, whether it
/// escalated since, and who approved it since (for a quorum).
struct GateHistory {
    opened_at: Millis,
    escalated: bool,
    approvals: Vec<String>,
    /// The approvals as `{by, at, comment}`.
    recorded: Vec<serde_json::Value>,
    decided_by: Option<(String, Millis)>,
}

fn gate_history(history: &[Event], name: &str) -> Option<GateHistory> {
    let opened = history
        .iter()
        .rposition(|e| e.kind == EventKind::GateOpened && e.step.as_deref() == Some(name))?;
    let mut state = GateHistory {
        opened_at: history[opened].at,
        escalated: false,
        approvals: Vec::new(),
        recorded: Vec::new(),
        decided_by: None,
    };
    for e in &history[opened + 1..] {
        if e.step.as_deref() != Some(name) {
            continue;
        }
        let data: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
        let by = data
            .get("by")
            .and_then(|b| b.as_str())
            .unwrap_or_default()
            .to_string();
        match e.kind {
            EventKind::GateEscalated => state.escalated = true,
            EventKind::ApprovalRecorded => {
                state.recorded.push(serde_json::json!({
                    "by": by,
                    "at": e.at,
                    "comment": data.get("comment").cloned().unwrap_or_default(),
                }));
                state.approvals.push(by);
            }
            EventKind::GateDecided => state.decided_by = Some((by, e.at)),
            _ => {}
        }
    }
    Some(state)
}

fn finished_message(record: &RunRecord) -> String {
    format!(
        "run {} has {}; it takes no more decisions",
        record.id,
        match record.status {
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            _ => "been cancelled",
        }
    )
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What opening a gate commits: the `gate_opened` event (after `events`) and the wait, with
/// the gate's first timer (escalation or timeout).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gate_opening(
    version: &str,
    kind: GateKind,
    name: &str,
    options: &Value,
    here: Option<i64>,
    deadline: Option<Millis>,
    mut events: Vec<NewEvent>,
    now: Millis,
) -> Change {
    let gate = GateOptions::read(kind, options);
    events.push(event(
        EventKind::GateOpened,
        Some(name.to_string()),
        None,
        here,
        serde_json::json!({
            "kind": kind.word(),
            "gate": name,
            "prompt": gate.prompt,
            "context": gate.context.to_json(),
            "approvers": describe(&gate.approvers),
            "quorum": gate.quorum,
            "escalate": gate.escalate.as_ref().map(describe),
            "escalate_at": gate.escalate_at(now).map(crate::vm::value::format_time),
            "deadline": gate.timeout_at(now).map(crate::vm::value::format_time),
            "shown_sha256": gate.shown_hash(),
            "version": version,
        }),
    ));
    Change {
        events,
        status: RunStatus::Waiting,
        output: None,
        error: None,
        waiting_on: Some(WaitingOn::gate(kind, name)),
        // The gate's own clock, or the deadline of a `timeout` around it: whichever is first.
        wake_at: crate::history::earliest(gate.next_wake(now, false), deadline),
    }
}

impl Outgoing {
    /// What every hook is sent.
    pub(crate) fn message(&self) -> &serde_json::Value {
        &self.message
    }
}

impl Engine {
    /// Records that a gate opened, makes the run wait, then notifies.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open_gate(
        &mut self,
        run: &str,
        version: &str,
        module: &Module,
        machine: &Machine,
        kind: GateKind,
        name: &str,
        options: &Value,
        here: Option<i64>,
        deadline: Option<Millis>,
        events: Vec<NewEvent>,
    ) -> EngineResult<RunStatus> {
        let now = now_ms();
        let gate = GateOptions::read(kind, options);
        let change = gate_opening(version, kind, name, options, here, deadline, events, now);
        let (waiting_on, wake_at) = (WaitingOn::gate(kind, name), change.wake_at);
        self.commit(run, version, Some(machine), change)?;
        let approvers = describe(&gate.approvers);
        self.notify(
            run,
            version,
            module,
            name,
            kind,
            EventKind::GateOpened,
            &gate,
            &approvers,
            &waiting_on,
            wake_at,
            now,
            machine,
        )?;
        Ok(RunStatus::Waiting)
    }

    /// Prepares the notifications of a gate that opened or escalated. They are delivered by
    /// [`Engine::flush_notifications`] once the run's claim is released, so that a slow hook
    /// never keeps anyone from deciding.
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &mut self,
        run: &str,
        version: &str,
        module: &Module,
        name: &str,
        kind: GateKind,
        what: EventKind,
        gate: &GateOptions,
        approvers: &str,
        waiting_on: &WaitingOn,
        _wake_at: Option<Millis>,
        opened: Millis,
        machine: &Machine,
    ) -> EngineResult<()> {
        if self.config.notify.is_empty() {
            return Ok(());
        }
        let workflow = self.store.run(run)?.map(|r| r.workflow).unwrap_or_default();
        let command = match kind {
            GateKind::Approval => format!("flowrt approve {run} {name} --as USER"),
            GateKind::Input => format!("flowrt input {run} {name} --as USER --value JSON"),
        };
        let _ = module;
        let message = serde_json::json!({
            "event": what,
            "run": run,
            "workflow": workflow,
            "version": version,
            "gate": name,
            "kind": kind.word(),
            "prompt": gate.prompt,
            "context": gate.context.to_json(),
            "approvers": approvers,
            "deadline": gate.timeout_at(opened).map(crate::vm::value::format_time),
            "command": command,
        });
        self.outbox.push(Outgoing {
            run: run.to_string(),
            gate: name.to_string(),
            what: what.as_str().to_string(),
            waiting_on: waiting_on.clone(),
            message,
            held: crate::tools::Secrets::held_by(machine),
        });
        Ok(())
    }

    /// Delivers the prepared notifications (no claim is held meanwhile) and records each
    /// delivery in its run's history, if the run still waits at that gate.
    pub fn flush_notifications(&mut self) -> EngineResult<()> {
        if !self.outbox.is_empty() {
            // What a notification announces is on disk before anyone hears of it.
            self.store.flush()?;
        }
        for outgoing in std::mem::take(&mut self.outbox) {
            if let Some(double) = &self.notify_double {
                double.announce(&outgoing.message);
                continue;
            }
            // With a pool, the hooks are called from it (a slow webhook keeps nobody from
            // being served); the deliveries are recorded when it is done.
            let outgoing = match self.announce_in_pool(outgoing) {
                Some(outgoing) => outgoing,
                None => continue,
            };
            let deliveries = notify::deliver(
                &self.config.notify,
                &outgoing.message,
                &RetryPolicy::default(),
            );
            self.record_announcement(outgoing, deliveries)?;
        }
        Ok(())
    }

    /// Records in the run's history how each hook took an announcement, if the run still
    /// waits at that gate.
    pub(crate) fn record_announcement(
        &mut self,
        outgoing: Outgoing,
        deliveries: Vec<notify::Delivery>,
    ) -> EngineResult<()> {
        let events: Vec<NewEvent> = deliveries
            .iter()
            .map(|d| {
                event(
                    if d.delivered { EventKind::Notified } else { EventKind::NotifyFailed },
                    Some(outgoing.gate.clone()),
                    Some(i64::from(d.attempts)),
                    None,
                    serde_json::json!({ "hook": d.hook, "attempts": d.attempts, "error": d.error.as_deref().map(|e| outgoing.held.redact(e)), "for": outgoing.what }),
                )
            })
            .collect();
        if !self.claim_patiently(&outgoing.run)? {
            return Ok(());
        }
        let recorded = self.record_deliveries(&outgoing, events);
        self.release(&outgoing.run)?;
        recorded
    }

    fn record_deliveries(
        &mut self,
        outgoing: &Outgoing,
        events: Vec<NewEvent>,
    ) -> EngineResult<()> {
        // Recording the deliveries must not disturb the run if it moved on meanwhile.
        let Some(record) = self.store.run(&outgoing.run)? else {
            return Ok(());
        };
        if record.status != RunStatus::Waiting
            || record.waiting().as_ref() != Some(&outgoing.waiting_on)
        {
            return Ok(());
        }
        let commit = StepCommit {
            run: outgoing.run.clone(),
            owner: self.owner.clone(),
            checkpoint: None,
            events,
            status: RunStatus::Waiting,
            output: None,
            error: None,
            waiting_on: record.waiting_on,
            wake_at: record.wake_at,
            now: now_ms(),
        };
        self.store.commit(std::slice::from_ref(&commit))?;
        Ok(())
    }

    /// Claims a run, waiting up to a few seconds for another process (a colleague's decision,
    /// a notification being recorded) to finish with it. False when the run could not be
    /// claimed: still busy, or finished meanwhile (finished runs are never claimed).
    pub(crate) fn claim_patiently(&mut self, run: &str) -> EngineResult<bool> {
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let now = now_ms();
            if self
                .store
                .claim(run, &self.owner, now + self.lease_ms, now)?
            {
                return Ok(true);
            }
            let finished = self.store.run(run)?.is_none_or(|r| r.status.is_final());
            if finished || std::time::Instant::now() >= give_up {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Handles a due gate timer: escalate once, then time out.
    pub(crate) fn gate_clock(
        &mut self,
        run: &str,
        version: &str,
        module: &Module,
        machine: &mut Machine,
        history: &[Event],
    ) -> EngineResult<GateClock> {
        let Outcome::Durable { request, deadline } = machine.clone().run(module) else {
            return Ok(GateClock::StillWaiting);
        };
        let (kind, name, options) = match request {
            Request::Approval { gate, options } => (
                GateKind::Approval,
                module.gates.get(gate as usize).cloned().unwrap_or_default(),
                options,
            ),
            Request::Input { request, options } => (
                GateKind::Input,
                module
                    .input_requests
                    .get(request as usize)
                    .map(|r| r.name.clone())
                    .unwrap_or_default(),
                options,
            ),
            _ => return Ok(GateClock::StillWaiting),
        };
        let gate = GateOptions::read(kind, &options);
        let state = gate_history(history, &name).ok_or_else(|| {
            EngineError::Corrupt(format!(
                "run {run} waits at `{name}`, but its history never opened it"
            ))
        })?;
        let now = now_ms();
        let here = line(module, machine);
        let waiting_on = WaitingOn::gate(kind, &name);
        if let Some(timeout_at) = gate.timeout_at(state.opened_at)
            && timeout_at <= now
        {
            let events = vec![event(
                EventKind::GateTimedOut,
                Some(name.clone()),
                None,
                here,
                serde_json::json!({ "deadline": crate::vm::value::format_time(timeout_at) }),
            )];
            let waited = crate::vm::value::format_duration(gate.timeout.unwrap_or(0));
            let error = error_value(
                "ApprovalTimeout",
                format!("nobody decided `{name}` within {waited}"),
                &name,
            );
            return Ok(match machine.fail_step(module, error, now) {
                Some(Outcome::Failed(failed)) => GateClock::Failed(failed, events),
                _ => GateClock::TimedOut(events),
            });
        }
        if let Some(escalate_at) = gate.escalate_at(state.opened_at)
            && escalate_at <= now
            && !state.escalated
        {
            let to = gate.escalate.as_ref().map(describe).unwrap_or_default();
            let wake_at = crate::history::earliest(gate.next_wake(state.opened_at, true), deadline);
            self.commit(
                run,
                version,
                Some(machine),
                Change {
                    events: vec![event(
                        EventKind::GateEscalated,
                        Some(name.clone()),
                        None,
                        here,
                        serde_json::json!({ "to": to }),
                    )],
                    status: RunStatus::Waiting,
                    output: None,
                    error: None,
                    waiting_on: Some(waiting_on.clone()),
                    wake_at,
                },
            )?;
            let approvers = format!("{} or, escalated, {to}", describe(&gate.approvers));
            self.notify(
                run,
                version,
                module,
                &name,
                kind,
                EventKind::GateEscalated,
                &gate,
                &approvers,
                &waiting_on,
                wake_at,
                state.opened_at,
                machine,
            )?;
        }
        Ok(GateClock::StillWaiting)
    }

    /// Every gate waiting for someone; with `user`, only those that user may decide.
    pub fn pending(&mut self, user: Option<&str>) -> EngineResult<Vec<PendingGate>> {
        let mut out = Vec::new();
        for record in self.store.runs(Some(RunStatus::Waiting))? {
            let Some(found) = self.open_gate_of(&record)? else {
                continue;
            };
            let (kind, name, gate, state) = found;
            let input_schema = match kind {
                GateKind::Input => {
                    let module = self.module(&record.version)?;
                    module
                        .input_requests
                        .iter()
                        .find(|r| r.name == name)
                        .map(|r| flow_compiler::bytecode::schema::form_schema(&module, r.ty))
                }
                GateKind::Approval => None,
            };
            let eligible = match user {
                None => true,
                Some(user) => {
                    let roles = self.roles(user);
                    let escalated = state.escalated
                        && gate
                            .escalate
                            .as_ref()
                            .is_some_and(|e| may_decide(e, user, &roles));
                    (may_decide(&gate.approvers, user, &roles) || escalated)
                        && !(kind == GateKind::Approval
                            && user == record.started_by
                            && !gate.allow_self)
                        && !state.approvals.iter().any(|a| a == user)
                }
            };
            if !eligible {
                continue;
            }
            let mut approvers = describe(&gate.approvers);
            if state.escalated
                && let Some(e) = &gate.escalate
            {
                approvers = format!("{approvers} or, escalated, {}", describe(e));
            }
            out.push(PendingGate {
                run: record.id.clone(),
                workflow: record.workflow.clone(),
                gate: name,
                kind,
                prompt: gate.prompt.clone(),
                context: gate.context.to_json(),
                approvers,
                started_by: record.started_by.clone(),
                opened_at: state.opened_at,
                deadline: gate.timeout_at(state.opened_at),
                remaining: gate.quorum - state.approvals.len() as i64,
                shown_hash: gate.shown_hash(),
                escalated: state.escalated,
                input_schema,
                timeout_caught: gate.timeout.map(|_| gate.timeout_caught),
                quorum: gate.quorum,
                decisions: state.recorded.clone(),
                escalation: gate.escalate.as_ref().map(|to| {
                    serde_json::json!({
                        "to": describe(to),
                        "at": gate.escalate_at(state.opened_at),
                        "fired": state.escalated,
                    })
                }),
                options: gate.evaluated(kind),
            });
        }
        out.sort_by_key(|p| p.opened_at);
        Ok(out)
    }

    fn roles(&self, user: &str) -> Vec<String> {
        self.config
            .user(user)
            .map(|u| u.roles.clone())
            .unwrap_or_default()
    }

    /// The gate a waiting run stopped at, with its options and history.
    fn open_gate_of(
        &mut self,
        record: &RunRecord,
    ) -> EngineResult<Option<(GateKind, String, GateOptions, GateHistory)>> {
        if !matches!(record.waiting(), Some(WaitingOn::Gate { .. })) {
            return Ok(None);
        }
        let Some((_, saved)) = self.store.load(&record.id)? else {
            return Ok(None);
        };
        let module = self.module(&record.version)?;
        let machine = snapshot::decode(saved.format_version, &saved.state)
            .map_err(|why| EngineError::Corrupt(format!("run {}: {why}", record.id)))?;
        let Outcome::Durable { request, .. } = machine.clone().run(&module) else {
            return Ok(None);
        };
        let (kind, name, options) = match request {
            Request::Approval { gate, options } => (
                GateKind::Approval,
                module.gates.get(gate as usize).cloned().unwrap_or_default(),
                options,
            ),
            Request::Input { request, options } => (
                GateKind::Input,
                module
                    .input_requests
                    .get(request as usize)
                    .map(|r| r.name.clone())
                    .unwrap_or_default(),
                options,
            ),
            _ => return Ok(None),
        };
        let history = self.store.history(&record.id)?;
        let Some(state) = gate_history(&history, &name) else {
            return Ok(None);
        };
        let mut gate = GateOptions::read(kind, &options);
        // What the timeout would do: unwind a copy of the run as its clock would.
        let error = error_value("ApprovalTimeout", String::new(), &name);
        gate.timeout_caught = !matches!(
            machine.clone().fail_step(&module, error, now_ms()),
            Some(Outcome::Failed(_))
        );
        Ok(Some((kind, name, gate, state)))
    }

    /// Records `user`'s decision at gate `gate` of `run` — if they may make it — and lets
    /// the run go on (without driving it: call [`Engine::drive`] after).
    pub fn decide(
        &mut self,
        run: &str,
        gate: &str,
        user: &str,
        action: Action,
        expect_hash: Option<&str>,
    ) -> Result<Decided, DecideError> {
        let Some(record) = self.store.run(run)? else {
            return not_found(format!("no run with id {run}"));
        };
        if record.status.is_final() {
            return conflict(format!(
                "run {run} has {}; it takes no more decisions",
                match record.status {
                    RunStatus::Completed => "completed",
                    RunStatus::Failed => "failed",
                    _ => "been cancelled",
                }
            ));
        }
        if !self.claim_patiently(run)? {
            return match self.store.run(run)? {
                Some(now) if now.status.is_final() => conflict(finished_message(&now)),
                _ => Err(DecideError::Engine(EngineError::Claimed(run.to_string()))),
            };
        }
        // Read the run again under the claim: another decision may have just moved it on.
        let Some(record) = self.store.run(run)? else {
            self.release(run)?;
            return not_found(format!("no run with id {run}"));
        };
        let result = self.decide_claimed(&record, gate, user, action, expect_hash);
        self.release(run)?;
        result
    }

    /// [`Engine::decide`], then drives the run on under the same claim (one claim and one
    /// release instead of two of each: the shortest approve-to-resume path). Returns what the
    /// decision did and the run's status after it.
    pub fn decide_and_drive(
        &mut self,
        run: &str,
        gate: &str,
        user: &str,
        action: Action,
        expect_hash: Option<&str>,
    ) -> Result<(Decided, RunStatus), DecideError> {
        let Some(record) = self.store.run(run)? else {
            return not_found(format!("no run with id {run}"));
        };
        if record.status.is_final() {
            return self
                .decide(run, gate, user, action, expect_hash)
                .map(|d| (d, record.status));
        }
        if !self.claim_patiently(run)? {
            return match self.store.run(run)? {
                Some(now) if now.status.is_final() => conflict(finished_message(&now)),
                _ => Err(DecideError::Engine(EngineError::Claimed(run.to_string()))),
            };
        }
        // Read the run again under the claim: another decision may have just moved it on.
        let Some(record) = self.store.run(run)? else {
            self.release(run)?;
            return not_found(format!("no run with id {run}"));
        };
        let result = self
            .decide_claimed(&record, gate, user, action, expect_hash)
            .and_then(|decided| {
                let status = match decided {
                    Decided::Closed => self.drive_claimed(run)?,
                    Decided::Recorded { .. } => RunStatus::Waiting,
                };
                Ok((decided, status))
            });
        self.release(run)?;
        if let Ok((_, status)) = &result
            && status.is_final()
        {
            self.wake_parent(run)?;
        }
        self.flush_notifications()?;
        result
    }

    fn decide_claimed(
        &mut self,
        record: &RunRecord,
        gate: &str,
        user: &str,
        action: Action,
        expect_hash: Option<&str>,
    ) -> Result<Decided, DecideError> {
        let decision = match &action {
            Action::Approve { .. } => "approved",
            Action::Reject { .. } => "rejected",
            Action::Input { .. } => "input",
        };
        let span = crate::telemetry::decide_span(self.store.as_mut(), record, gate, user, decision);
        let decided =
            span.in_scope(|| self.decide_in_span(record, gate, user, action, expect_hash));
        if let Err(DecideError::Refused(_)) = &decided {
            crate::telemetry::mark_failed(&span, "Refused");
        }
        decided
    }

    fn decide_in_span(
        &mut self,
        record: &RunRecord,
        gate: &str,
        user: &str,
        action: Action,
        expect_hash: Option<&str>,
    ) -> Result<Decided, DecideError> {
        let run = record.id.as_str();
        let wanted = match action {
            Action::Input { .. } => GateKind::Input,
            _ => GateKind::Approval,
        };
        let open = self.open_gate_of(record)?;
        // A gate decided before: say so, whatever the run does now.
        let still_open = open.as_ref().is_some_and(|(_, name, _, _)| name == gate);
        if !still_open
            && let Some(decided) = self
                .store
                .history(run)?
                .iter()
                .rev()
                .find(|e| e.kind == EventKind::GateDecided && e.step.as_deref() == Some(gate))
        {
            let by = serde_json::from_str::<serde_json::Value>(&decided.data)
                .ok()
                .and_then(|d| d.get("by").and_then(|b| b.as_str()).map(str::to_string))
                .unwrap_or_default();
            return conflict(format!(
                "`{gate}` of run {run} was already decided by {by} at {}; the first decision stands",
                crate::vm::value::format_time(decided.at)
            ));
        }
        let Some((kind, name, options, state)) = open else {
            return not_found(format!(
                "run {run} is not waiting at `{gate}` (it is {}{})",
                record.status.as_str(),
                record
                    .waiting_on
                    .as_deref()
                    .map(|w| format!(", on {w}"))
                    .unwrap_or_default()
            ));
        };
        if name != gate || kind != wanted {
            return not_found(format!(
                "run {run} waits at {} `{name}`, not at {} `{gate}`",
                kind.word(),
                wanted.word()
            ));
        }
        if self.config.user(user).is_none() && !self.config.users.is_empty() {
            return forbidden(format!(
                "unknown user `{user}`: flow.toml lists the users who may decide"
            ));
        }
        if let Some(expected) = expect_hash
            && expected != options.shown_hash()
        {
            return conflict(format!(
                "what `{name}` shows has changed since you looked (hash {}, you saw {expected}); look again with `flowrt approvals` and decide on what it shows now",
                options.shown_hash()
            ));
        }
        if let Some(deadline) = options.timeout_at(state.opened_at)
            && deadline <= now_ms()
        {
            return conflict(format!(
                "`{name}` timed out at {}; the run goes on with an ApprovalTimeout when a worker drives it",
                crate::vm::value::format_time(deadline)
            ));
        }
        let roles = self.roles(user);
        let escalated_to_user = state.escalated
            && options
                .escalate
                .as_ref()
                .is_some_and(|e| may_decide(e, user, &roles));
        if !may_decide(&options.approvers, user, &roles) && !escalated_to_user {
            return forbidden(format!(
                "{user} may not decide `{name}`: it needs {}",
                describe(&options.approvers)
            ));
        }
        let approving = matches!(action, Action::Approve { .. });
        if approving && user == record.started_by && !options.allow_self {
            return forbidden(format!(
                "{user} started run {run} and may not approve it (four-eyes); the gate would need `allow_self: true`"
            ));
        }
        if approving && state.approvals.iter().any(|a| a == user) {
            return conflict(format!(
                "{user} has already approved `{name}`; {} more approval(s) from others are needed",
                options.quorum - state.approvals.len() as i64
            ));
        }

        let (_, saved) = self
            .store
            .load(run)?
            .ok_or_else(|| EngineError::NoSuchRun(run.to_string()))?;
        let module = self.module(&record.version)?;
        let mut machine = snapshot::decode(saved.format_version, &saved.state)
            .map_err(|why| EngineError::Corrupt(format!("run {run}: {why}")))?;
        let here = line(&module, &machine);
        let now = now_ms();
        let waiting_on = WaitingOn::gate(kind, &name);
        let base = serde_json::json!({
            "gate": name,
            "run": run,
            "workflow": record.workflow,
            "version": record.version,
            "by": user,
            "shown_sha256": options.shown_hash(),
        });
        let with = |extra: serde_json::Value| {
            let mut data = base.clone();
            if let (Some(object), serde_json::Value::Object(more)) = (data.as_object_mut(), extra) {
                object.extend(more);
            }
            data
        };

        let (value, data) = match action {
            Action::Approve { comment } => {
                let approvals = state.approvals.len() as i64 + 1;
                if approvals < options.quorum {
                    let remaining = options.quorum - approvals;
                    let events = vec![event(
                        EventKind::ApprovalRecorded,
                        Some(name.clone()),
                        None,
                        here,
                        with(serde_json::json!({ "comment": comment, "remaining": remaining })),
                    )];
                    self.commit(
                        run,
                        &record.version,
                        None,
                        Change {
                            events,
                            status: RunStatus::Waiting,
                            output: None,
                            error: None,
                            waiting_on: Some(waiting_on),
                            wake_at: record.wake_at,
                        },
                    )?;
                    return Ok(Decided::Recorded { remaining });
                }
                let mut by = state.approvals.clone();
                by.push(user.to_string());
                let by = by.join(", ");
                let decision = Value::record([
                    ("approved", Value::Bool(true)),
                    ("by", Value::Str(by.clone())),
                    ("at", Value::Time(now)),
                    ("comment", Value::Str(comment.clone())),
                ]);
                let data =
                    with(serde_json::json!({ "approved": true, "by": by, "comment": comment }));
                (decision, data)
            }
            Action::Reject { comment } => {
                let decision = Value::record([
                    ("approved", Value::Bool(false)),
                    ("by", Value::Str(user.to_string())),
                    ("at", Value::Time(now)),
                    ("comment", Value::Str(comment.clone())),
                ]);
                let data = with(serde_json::json!({ "approved": false, "comment": comment }));
                (decision, data)
            }
            Action::Input { value } => {
                let request = module
                    .input_requests
                    .iter()
                    .find(|r| r.name == name)
                    .cloned()
                    .ok_or_else(|| EngineError::Corrupt(format!("no input request `{name}`")))?;
                let converted = match from_json(&module, request.ty, &value, "$") {
                    Ok(converted) => converted,
                    Err(mismatch) => {
                        return refused_as(
                            RefusalKind::Invalid,
                            format!(
                                "the value for `{name}` does not fit {}: {mismatch}",
                                module.type_name(request.ty)
                            ),
                        );
                    }
                };
                (converted, with(serde_json::json!({ "value": value })))
            }
        };
        machine
            .complete(&module, value, now)
            .map_err(EngineError::Corrupt)?;
        self.commit(
            run,
            &record.version,
            Some(&machine),
            Change::runnable(vec![event(
                EventKind::GateDecided,
                Some(name),
                None,
                here,
                data,
            )]),
        )?;
        let _ = checkpoint;
        Ok(Decided::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> Value {
        Value::record([
            ("kind", Value::Str("role".into())),
            ("name", Value::Str(name.into())),
        ])
    }

    fn user(name: &str) -> Value {
        Value::record([
            ("kind", Value::Str("user".into())),
            ("name", Value::Str(name.into())),
        ])
    }

    #[test]
    fn who_may_decide() {
        let customs = vec!["customs".to_string()];
        assert!(may_decide(&role("customs"), "ana", &customs));
        assert!(!may_decide(&role("ops"), "ana", &customs));
        assert!(may_decide(&user("ana"), "ana", &[]));
        assert!(!may_decide(&user("bob"), "ana", &customs));
        let any = Value::record([
            ("kind", Value::Str("any".into())),
            ("of", Value::List(vec![role("ops"), user("ana")])),
        ]);
        assert!(may_decide(&any, "ana", &[]));
        assert_eq!(describe(&any), "any of (role ops, user ana)");
        assert!(!may_decide(&Value::None, "ana", &customs));
    }

    #[test]
    fn who_is_named_in_described_approvers() {
        let ops = ["ops".to_string()];
        let nested = Value::record([
            ("kind", Value::Str("any".into())),
            (
                "of",
                Value::List(vec![
                    user("bob"),
                    Value::record([
                        ("kind", Value::Str("any".into())),
                        ("of", Value::List(vec![role("ops"), user("ana")])),
                    ]),
                ]),
            ),
        ]);
        let text = describe(&nested);
        assert_eq!(text, "any of (user bob, any of (role ops, user ana))");
        for (who, roles, expected) in [
            ("bob", &[][..], true),
            ("ana", &[][..], true),
            ("cy", &ops[..], true),
            ("cy", &[][..], false),
            ("bo", &[][..], false),
        ] {
            assert_eq!(named_in(&text, who, roles), expected, "{who} {roles:?}");
            assert_eq!(may_decide(&nested, who, roles), expected, "{who} {roles:?}");
        }
        assert!(!named_in("nobody", "nobody", &[]));
        assert!(!named_in("", "", &[]));
    }

    #[test]
    fn deciders_of_a_run_come_from_its_history() {
        let ev = |kind: EventKind, step: &str, data: serde_json::Value| Event {
            seq: 0,
            at: 0,
            kind,
            step: Some(step.into()),
            attempt: None,
            line: None,
            duration_ms: None,
            data: data.to_string(),
            prev_hash: String::new(),
            hash: String::new(),
            seal: None,
        };
        let customs = vec!["customs".to_string()];
        let ops = vec!["ops".to_string()];
        let opened = ev(
            EventKind::GateOpened,
            "g",
            serde_json::json!({ "approvers": "role customs", "escalate": "role ops" }),
        );
        let history = vec![opened.clone()];
        assert!(decider_of(&history, "ana", &customs));
        assert!(!decider_of(&history, "omar", &ops), "not escalated yet");
        let escalated = vec![
            opened,
            ev(EventKind::GateEscalated, "g", serde_json::json!({})),
        ];
        assert!(decider_of(&escalated, "omar", &ops));
        assert!(!decider_of(&escalated, "eve", &[]));
        let decided = vec![ev(
            EventKind::GateDecided,
            "g",
            serde_json::json!({ "by": "eve" }),
        )];
        assert!(decider_of(&decided, "eve", &[]));
    }

    #[test]
    fn the_gate_clock_escalates_before_it_times_out() {
        let options = Value::record([
            ("approvers", role("customs")),
            ("escalate", role("ops")),
            ("escalate_after", Value::Duration(24 * 3_600_000)),
            ("timeout", Value::Duration(48 * 3_600_000)),
        ]);
        let gate = GateOptions::read(GateKind::Approval, &options);
        assert_eq!(gate.next_wake(0, false), Some(24 * 3_600_000));
        assert_eq!(gate.next_wake(0, true), Some(48 * 3_600_000));
    }
}
