//! Human steps: gates that wait for an approval or an input, and the decisions that open
//! them. A gate opens (recorded, notified) when a run reaches `await approval` / `await input`;
//! the run then waits in the database, holding no process. A decision is checked against who
//! may make it, recorded together with the run's new checkpoint, and the run goes on. A gate's
//! clock — escalation, then the final timeout — is a durable timer like `sleep`'s.
//!
//! Every open gate has a row in the gate index (`store::gate_index`), written in the commit
//! that opens, changes or closes it; listing, showing and deciding read that row, never the
//! run's VM or history.

use crate::engine::{Change, Engine, EngineError, EngineResult, event, line};
use crate::history::WaitingOn;
use crate::store::{
    Approval, Event, EventKind, GateChange, GateRow, Millis, NewEvent, RunRecord, RunStatus,
};
use crate::vm::machine::error_value;
use crate::vm::value::from_json;
use crate::vm::{Machine, Outcome, Request, RuntimeError, Value, snapshot};
use flow_compiler::bytecode::Module;
use flow_stdlib::gate_option;
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
    /// The JSON Schema of the context, as a form's (`x-order`: the fields in the order the
    /// workflow wrote or declared them), when the gate has a context and its artifact says.
    pub context_schema: Option<serde_json::Value>,
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
    /// `remind: D`: notify again every `D` while the gate is open.
    remind: Option<i64>,
    /// `remind: D after A`: the first reminder `A` after the gate opened (else `D`).
    remind_after: Option<i64>,
}

/// The shortest interval between reminders (`remind: 1s` is taken as a minute).
const MIN_REMINDER_MS: i64 = 60_000;

/// The option naming who may decide: `approvers` of an approval, `from` of an input.
fn who(kind: GateKind) -> &'static str {
    match kind {
        GateKind::Approval => gate_option::APPROVERS,
        GateKind::Input => gate_option::FROM,
    }
}

impl GateOptions {
    fn read(kind: GateKind, options: &Value) -> GateOptions {
        let duration = |name| match options.field(name) {
            Some(Value::Duration(ms)) => Some(*ms),
            _ => None,
        };
        GateOptions {
            approvers: options.field(who(kind)).cloned().unwrap_or(Value::None),
            escalate: options
                .field(gate_option::ESCALATE)
                .filter(|v| **v != Value::None)
                .cloned(),
            escalate_after: duration(gate_option::ESCALATE_AFTER),
            timeout: duration(gate_option::TIMEOUT),
            quorum: match options.field(gate_option::QUORUM) {
                Some(Value::Int(n)) => (*n).max(1),
                _ => 1,
            },
            allow_self: options.field(gate_option::ALLOW_SELF) == Some(&Value::Bool(true)),
            prompt: match options.field(gate_option::PROMPT) {
                Some(Value::Str(s)) => Some(s.clone()),
                _ => None,
            },
            context: options
                .field(gate_option::CONTEXT)
                .cloned()
                .unwrap_or(Value::None),
            // A reminder more often than once a minute would only be noise (and a zero one
            // would never stop firing).
            remind: duration(gate_option::REMIND).map(|ms| ms.max(MIN_REMINDER_MS)),
            remind_after: duration(&gate_option::after_field(gate_option::REMIND))
                .map(|ms| ms.max(0)),
        }
    }

    /// The options as evaluated, for a reviewer who asks why (a quorum computed from data).
    fn evaluated(&self, kind: GateKind) -> serde_json::Value {
        let mut out =
            serde_json::json!({ who(kind): describe(&self.approvers), "timeout_ms": self.timeout });
        if kind == GateKind::Approval {
            out[gate_option::QUORUM] = self.quorum.into();
            out[gate_option::ALLOW_SELF] = self.allow_self.into();
        }
        if let Some(to) = &self.escalate {
            out[gate_option::ESCALATE] = describe(to).into();
            out["escalate_after_ms"] = self.escalate_after.unwrap_or(0).into();
        }
        if let Some(every) = self.remind {
            out["remind_ms"] = every.into();
            out[REMIND_AFTER_MS] = self.remind_after.unwrap_or(every).into();
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
}

/// Whether `user` (holding `roles`) is among `approvers`, as the gate index holds them
/// (`{"kind":"role","name":…}`, `{"kind":"user","name":…}`, `{"kind":"any","of":[…]}`).
fn may_decide(approvers: &serde_json::Value, user: &str, roles: &[String]) -> bool {
    let text = |name| approvers.get(name).and_then(|v| v.as_str()).unwrap_or("");
    match text("kind") {
        "role" => roles.iter().any(|r| r == text("name")),
        "user" => text("name") == user,
        "any" => approvers
            .get("of")
            .and_then(|of| of.as_array())
            .is_some_and(|items| items.iter().any(|a| may_decide(a, user, roles))),
        _ => false,
    }
}

/// Who may decide an open gate, for listing and for deciding alike: `Ok` when `user`
/// (holding `roles`) may make the decision — `approving` for an approval (four-eyes and
/// quorum apply), otherwise a rejection or an input — else the refusal.
pub(crate) fn eligibility(
    gate: &GateRow,
    user: &str,
    roles: &[String],
    approving: bool,
) -> Result<(), Refusal> {
    let refuse = |kind, why: String| Err(Refusal { kind, why });
    let escalated_to_user = gate.escalated
        && gate
            .escalate_json
            .as_ref()
            .is_some_and(|e| may_decide(e, user, roles));
    if !may_decide(&gate.approvers_json, user, roles) && !escalated_to_user {
        return refuse(
            RefusalKind::Forbidden,
            format!(
                "{user} may not decide `{}`: it needs {}",
                gate.name, gate.approvers
            ),
        );
    }
    if approving && user == gate.started_by && !gate.allow_self {
        return refuse(
            RefusalKind::Forbidden,
            format!(
                "{user} started run {} and may not approve it (four-eyes); the gate would need `allow_self: true`",
                gate.run
            ),
        );
    }
    if approving && gate.approvals.iter().any(|a| a.by == user) {
        return refuse(
            RefusalKind::Conflict,
            format!(
                "{user} has already approved `{}`; {} more approval(s) from others are needed",
                gate.name,
                gate.remaining()
            ),
        );
    }
    Ok(())
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
/// escalated since, and who approved it since (for a quorum). Only for indexing a gate that
/// opened before the gate index existed; everything else reads the index.
struct GateHistory {
    opened_at: Millis,
    escalated: bool,
    approvals: Vec<Approval>,
}

fn gate_history(history: &[Event], name: &str) -> Option<GateHistory> {
    let opened = history
        .iter()
        .rposition(|e| e.kind == EventKind::GateOpened && e.step.as_deref() == Some(name))?;
    let mut state = GateHistory {
        opened_at: history[opened].at,
        escalated: false,
        approvals: Vec::new(),
    };
    for e in &history[opened + 1..] {
        if e.step.as_deref() != Some(name) {
            continue;
        }
        match e.kind {
            EventKind::GateEscalated => state.escalated = true,
            EventKind::ApprovalRecorded => {
                let data: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
                let text = |key: &str| {
                    data.get(key)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_string()
                };
                state.approvals.push(Approval {
                    by: text("by"),
                    at: e.at,
                    comment: text("comment"),
                });
            }
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
    flow_stdlib::hex::encode(&Sha256::digest(text.as_bytes()))
}

/// The run a gate belongs to, as the gate index names it.
#[derive(Clone, Copy)]
pub(crate) struct GateRun<'a> {
    pub(crate) id: &'a str,
    pub(crate) workflow: &'a str,
    pub(crate) version: &'a str,
    pub(crate) started_by: &'a str,
}

impl<'a> GateRun<'a> {
    pub(crate) fn of(record: &'a RunRecord) -> GateRun<'a> {
        GateRun {
            id: &record.id,
            workflow: &record.workflow,
            version: &record.version,
            started_by: &record.started_by,
        }
    }
}

/// A gate stopped at by a machine: what it is and the options the workflow evaluated.
pub(crate) struct OpenedAt<'a> {
    pub(crate) module: &'a Module,
    /// The machine at the `await` (as checkpointed).
    pub(crate) machine: &'a Machine,
    pub(crate) kind: GateKind,
    pub(crate) name: &'a str,
    pub(crate) options: &'a Value,
    /// The deadline of a `timeout` around the gate.
    pub(crate) deadline: Option<Millis>,
}

/// The gate index row of a gate that opened at `opened_at` and has not escalated nor been
/// approved yet.
fn index_row(run: GateRun<'_>, at: &OpenedAt<'_>, opened_at: Millis) -> GateRow {
    let gate = GateOptions::read(at.kind, at.options);
    let input_schema = match at.kind {
        GateKind::Input => at
            .module
            .input_requests
            .iter()
            .find(|r| r.name == at.name)
            .map(|r| flow_compiler::bytecode::schema::form_schema(at.module, r.ty)),
        GateKind::Approval => None,
    };
    // The context's fields in the order the workflow wrote them, from the type the compiler
    // recorded for this `await` (none in artifacts older than format 4).
    let (workflow, pc) = at.machine.position();
    let context_schema = at
        .module
        .gate_context(workflow, pc)
        .map(|ty| flow_compiler::bytecode::schema::form_schema(at.module, ty));
    // What the timeout would do: unwind a copy of the run as its clock would.
    let timeout_caught = gate.timeout.is_some() && {
        let error = error_value("ApprovalTimeout", String::new(), at.name);
        !matches!(
            at.machine.clone().fail_step(at.module, error, opened_at),
            Some(Outcome::Failed(_))
        )
    };
    GateRow {
        run: run.id.to_string(),
        name: at.name.to_string(),
        kind: at.kind,
        workflow: run.workflow.to_string(),
        version: run.version.to_string(),
        started_by: run.started_by.to_string(),
        opened_at,
        approvers: describe(&gate.approvers),
        approvers_json: gate.approvers.to_json(),
        escalate_to: gate.escalate.as_ref().map(describe),
        escalate_json: gate.escalate.as_ref().map(Value::to_json),
        escalate_at: gate.escalate_at(opened_at),
        escalated: false,
        deadline: gate.timeout_at(opened_at),
        outer_deadline: at.deadline,
        quorum: gate.quorum,
        allow_self: gate.allow_self,
        prompt: gate.prompt.clone(),
        context: gate.context.to_json(),
        shown_sha256: gate.shown_hash(),
        input_schema,
        context_schema,
        timeout_caught,
        options: gate.evaluated(at.kind),
        approvals: Vec::new(),
        remind_every: gate.remind,
        reminded: 0,
    }
}

/// The evaluated option that holds the first reminder's delay (`remind: D after A`).
const REMIND_AFTER_MS: &str = "remind_after_ms";

/// How long after opening a gate's first reminder comes: `A` of `remind: D after A`, else `D`.
fn first_reminder(gate: &GateRow, every: Millis) -> Millis {
    gate.options
        .get(REMIND_AFTER_MS)
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(every)
}

/// When an open gate's next reminder is due: the first one after its delay, then every `D`.
fn next_reminder(gate: &GateRow) -> Option<Millis> {
    let every = gate.remind_every?;
    let later = gate.reminded.saturating_mul(every);
    Some(
        gate.opened_at
            .saturating_add(first_reminder(gate, every))
            .saturating_add(later),
    )
}

/// How many reminders are due by `now` (one at the first delay, one more every interval).
fn reminders_due(gate: &GateRow, every: Millis, now: Millis) -> i64 {
    let first = gate.opened_at.saturating_add(first_reminder(gate, every));
    if now < first {
        return 0;
    }
    1 + (now - first) / every.max(1)
}

/// The next time an open gate's clock needs attention: its escalation (until it fired),
/// its timeout, or the deadline of a `timeout` around it, whichever is first.
fn next_wake(gate: &GateRow) -> Option<Millis> {
    let escalation = gate.escalate_at.filter(|_| !gate.escalated);
    crate::history::earliest(
        crate::history::earliest(
            crate::history::earliest(escalation, gate.deadline),
            gate.outer_deadline,
        ),
        next_reminder(gate),
    )
}

/// What opening a gate commits: the `gate_opened` event (after `events`), the wait with the
/// gate's first timer, and the gate's row in the gate index.
pub(crate) fn gate_opening(
    run: GateRun<'_>,
    at: &OpenedAt<'_>,
    here: Option<i64>,
    mut events: Vec<NewEvent>,
    now: Millis,
) -> (Change, GateRow) {
    let row = index_row(run, at, now);
    let mut opened = event(
        EventKind::GateOpened,
        Some(at.name.to_string()),
        None,
        here,
        serde_json::json!({
            "kind": at.kind.word(),
            "gate": at.name,
            "prompt": row.prompt,
            "context": row.context,
            "approvers": row.approvers,
            "quorum": row.quorum,
            "escalate": row.escalate_to,
            "escalate_at": row.escalate_at.map(crate::vm::value::format_time),
            "deadline": row.deadline.map(crate::vm::value::format_time),
            "shown_sha256": row.shown_sha256,
            "version": run.version,
        }),
    );
    // The event's time is the row's `opened_at`, from which its deadlines count.
    opened.at = now;
    events.push(opened);
    let change = Change {
        events,
        status: RunStatus::Waiting,
        output: None,
        error: None,
        waiting_on: Some(WaitingOn::gate(at.kind, at.name)),
        wake_at: next_wake(&row),
    };
    (change, row)
}

impl PendingGate {
    /// The view of an open gate, from its index row (taken whole).
    pub(crate) fn of(gate: GateRow) -> PendingGate {
        let remaining = gate.remaining();
        let approvers = match (&gate.escalate_to, gate.escalated) {
            (Some(to), true) => format!("{} or, escalated, {to}", gate.approvers),
            _ => gate.approvers,
        };
        PendingGate {
            timeout_caught: gate.deadline.map(|_| gate.timeout_caught),
            decisions: gate
                .approvals
                .iter()
                .map(|a| serde_json::json!({ "by": a.by, "at": a.at, "comment": a.comment }))
                .collect(),
            escalation: gate.escalate_to.as_ref().map(|to| {
                serde_json::json!({ "to": to, "at": gate.escalate_at, "fired": gate.escalated })
            }),
            run: gate.run,
            workflow: gate.workflow,
            gate: gate.name,
            kind: gate.kind,
            prompt: gate.prompt,
            context: gate.context,
            approvers,
            started_by: gate.started_by,
            opened_at: gate.opened_at,
            deadline: gate.deadline,
            remaining,
            shown_hash: gate.shown_sha256,
            escalated: gate.escalated,
            input_schema: gate.input_schema,
            context_schema: gate.context_schema,
            quorum: gate.quorum,
            options: gate.options,
        }
    }
}

/// The setting that records that every gate opened before the gate index has been indexed.
const INDEXED_SETTING: &str = "gate_index_complete";

impl Engine {
    /// Records that a gate opened: its event, the wait, its index row and its notification
    /// (see `announce.rs`) in one commit.
    pub(crate) fn open_gate(
        &mut self,
        record: &RunRecord,
        at: &OpenedAt<'_>,
        here: Option<i64>,
        events: Vec<NewEvent>,
    ) -> EngineResult<RunStatus> {
        let now = self.clock.now();
        let (change, row) = gate_opening(GateRun::of(record), at, here, events, now);
        let notification =
            self.notification(&row, EventKind::GateOpened, &row.approvers, at.machine, now);
        let gate = Some(GateChange::Open(row));
        self.commit_with_gate(
            &record.id,
            &record.version,
            Some(at.machine),
            change,
            gate,
            notification,
        )?;
        Ok(RunStatus::Waiting)
    }

    /// Claims a run, waiting up to a few seconds for another process (a colleague's decision,
    /// a notification being recorded) to finish with it. False when the run could not be
    /// claimed: still busy, or finished meanwhile (finished runs are never claimed).
    pub(crate) fn claim_patiently(&mut self, run: &str) -> EngineResult<bool> {
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let now = self.clock.now();
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
        record: &RunRecord,
        module: &Module,
        machine: &mut Machine,
    ) -> EngineResult<GateClock> {
        let Some(gate) = self.open_gate_row(record)? else {
            return Ok(GateClock::StillWaiting);
        };
        let name = &gate.name.clone();
        let (run, version) = (record.id.as_str(), record.version.as_str());
        let now = self.clock.now();
        let here = line(module, machine);
        if let Some(timeout_at) = gate.deadline
            && timeout_at <= now
        {
            let events = vec![event(
                EventKind::GateTimedOut,
                Some(name.clone()),
                None,
                here,
                serde_json::json!({ "deadline": crate::vm::value::format_time(timeout_at) }),
            )];
            let waited = crate::vm::value::format_duration(timeout_at - gate.opened_at);
            let error = error_value(
                "ApprovalTimeout",
                format!("nobody decided `{name}` within {waited}"),
                name,
            );
            return Ok(match machine.fail_step(module, error, now) {
                Some(Outcome::Failed(failed)) => GateClock::Failed(failed, events),
                _ => GateClock::TimedOut(events),
            });
        }
        let mut gate = gate;
        if let Some(escalate_at) = gate.escalate_at
            && escalate_at <= now
            && !gate.escalated
        {
            let to = gate.escalate_to.clone().unwrap_or_default();
            let escalated = GateRow {
                escalated: true,
                ..gate.clone()
            };
            let change = Change {
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
                waiting_on: Some(WaitingOn::gate(gate.kind, name)),
                wake_at: next_wake(&escalated),
            };
            let approvers = format!("{} or, escalated, {to}", gate.approvers);
            let notification = self.notification(
                &escalated,
                EventKind::GateEscalated,
                &approvers,
                machine,
                now,
            );
            let update = Some(GateChange::Update(escalated.clone()));
            self.commit_with_gate(run, version, Some(machine), change, update, notification)?;
            gate = escalated;
        }
        if let Some(due) = next_reminder(&gate)
            && due <= now
        {
            // One reminder for however many intervals passed (a run that was not driven
            // for a while does not send a burst); the next is an interval from now's slot.
            let every = gate.remind_every.unwrap_or(MIN_REMINDER_MS).max(1);
            let reminded = GateRow {
                reminded: reminders_due(&gate, every, now).max(gate.reminded + 1),
                ..gate.clone()
            };
            let approvers = match (&gate.escalate_to, gate.escalated) {
                (Some(to), true) => format!("{} or, escalated, {to}", gate.approvers),
                _ => gate.approvers.clone(),
            };
            let change = Change {
                events: vec![event(
                    EventKind::GateReminded,
                    Some(name.clone()),
                    None,
                    here,
                    serde_json::json!({ "to": approvers, "reminder": reminded.reminded, "waited_ms": now - gate.opened_at }),
                )],
                status: RunStatus::Waiting,
                output: None,
                error: None,
                waiting_on: Some(WaitingOn::gate(gate.kind, name)),
                wake_at: next_wake(&reminded),
            };
            let notification =
                self.notification(&reminded, EventKind::GateReminded, &approvers, machine, now);
            let update = Some(GateChange::Update(reminded));
            self.commit_with_gate(run, version, Some(machine), change, update, notification)?;
        }
        Ok(GateClock::StillWaiting)
    }

    /// Every gate waiting for someone; with `user`, only those that user may decide. Read
    /// from the gate index alone.
    pub fn pending(&mut self, user: Option<&str>) -> EngineResult<Vec<PendingGate>> {
        let Some(user) = user else {
            return Ok(self
                .store
                .gates(None)?
                .into_iter()
                .map(PendingGate::of)
                .collect());
        };
        let roles = self.roles(user);
        Ok(self
            .store
            .gates_for(user, &roles)?
            .into_iter()
            .filter(|gate| {
                let approving = gate.kind == GateKind::Approval;
                eligibility(gate, user, &roles, approving).is_ok()
            })
            .map(PendingGate::of)
            .collect())
    }

    /// The gates run `run` waits at, from the gate index.
    pub fn open_gates_of(&mut self, run: &str) -> EngineResult<Vec<PendingGate>> {
        Ok(self
            .store
            .gates(Some(run))?
            .into_iter()
            .map(PendingGate::of)
            .collect())
    }

    fn roles(&self, user: &str) -> Vec<String> {
        self.config
            .user(user)
            .map(|u| u.roles.clone())
            .unwrap_or_default()
    }

    /// The index row of the gate a waiting run stopped at; rebuilt from the run (see
    /// [`Engine::rebuild_gate_row`]) if the gate opened before the index and the backfill
    /// has not reached it.
    fn open_gate_row(&mut self, record: &RunRecord) -> EngineResult<Option<GateRow>> {
        let Some(WaitingOn::Gate { name, .. }) = record.waiting() else {
            return Ok(None);
        };
        if record.status != RunStatus::Waiting {
            return Ok(None);
        }
        if let Some(row) = self.store.gate(&record.id, &name)? {
            return Ok(Some(row));
        }
        self.rebuild_gate_row(record)
    }

    /// The index row of the gate a waiting run stopped at, computed as before the index:
    /// the run's machine is run (on a copy) to its request, and its history read for when
    /// the gate opened, whether it escalated and who approved so far.
    fn rebuild_gate_row(&mut self, record: &RunRecord) -> EngineResult<Option<GateRow>> {
        let Some((_, saved)) = self.store.load(&record.id)? else {
            return Ok(None);
        };
        let module = self.module(&record.version)?;
        let machine = snapshot::decode(saved.format_version, &saved.state)
            .map_err(|why| EngineError::Corrupt(format!("run {}: {why}", record.id)))?;
        let Outcome::Durable { request, deadline } = machine.clone().run(&module) else {
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
        let at = OpenedAt {
            module: &module,
            machine: &machine,
            kind,
            name: &name,
            options: &options,
            deadline,
        };
        let mut row = index_row(GateRun::of(record), &at, state.opened_at);
        row.escalated = state.escalated;
        row.approvals = state.approvals;
        Ok(Some(row))
    }

    /// Indexes, once, the gates that opened before the gate index existed (a database
    /// migrated from an older schema): each run waiting at a gate without a row gets the
    /// row its checkpoint and history give, under the run's claim. When every such run is
    /// indexed, the `gate_index_complete` setting records it and later calls return at once.
    /// Returns how many gates it indexed.
    pub fn index_open_gates(&mut self) -> EngineResult<usize> {
        if self.store.setting(INDEXED_SETTING)?.is_some() {
            return Ok(0);
        }
        let (mut indexed, mut complete) = (0, true);
        for record in self.store.runs(Some(RunStatus::Waiting))? {
            let Some(WaitingOn::Gate { name, .. }) = record.waiting() else {
                continue;
            };
            if self.store.gate(&record.id, &name)?.is_some() {
                continue;
            }
            if !self.claim_patiently(&record.id)? {
                // Finished meanwhile (nothing to index), or busy: then try again next time.
                let finished = self
                    .store
                    .run(&record.id)?
                    .is_none_or(|r| r.status.is_final());
                complete &= finished;
                continue;
            }
            let row = match self.store.run(&record.id)? {
                Some(now) => self.rebuild_gate_row(&now),
                None => Ok(None),
            };
            let written = row.and_then(|row| match row {
                Some(row) => Ok(self.store.index_gate(&row)?),
                None => Ok(false),
            });
            self.release(&record.id)?;
            if written? {
                indexed += 1;
            }
        }
        if complete {
            self.store
                .set_setting(INDEXED_SETTING, &self.clock.now().to_string())?;
        }
        Ok(indexed)
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
        let open = self.open_gate_row(record)?;
        // A gate decided before: say so, whatever the run does now.
        let still_open = open.as_ref().is_some_and(|g| g.name == gate);
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
        let Some(open) = open else {
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
        let name = open.name.clone();
        if name != gate || open.kind != wanted {
            return not_found(format!(
                "run {run} waits at {} `{name}`, not at {} `{gate}`",
                open.kind.word(),
                wanted.word()
            ));
        }
        if self.config.user(user).is_none() && !self.config.users.is_empty() {
            return forbidden(format!(
                "unknown user `{user}`: flow.toml lists the users who may decide"
            ));
        }
        if let Some(expected) = expect_hash
            && expected != open.shown_sha256
        {
            return conflict(format!(
                "what `{name}` shows has changed since you looked (hash {}, you saw {expected}); look again with `flowrt approvals` and decide on what it shows now",
                open.shown_sha256
            ));
        }
        if let Some(deadline) = open.deadline
            && deadline <= self.clock.now()
        {
            return conflict(format!(
                "`{name}` timed out at {}; the run goes on with an ApprovalTimeout when a worker drives it",
                crate::vm::value::format_time(deadline)
            ));
        }
        let roles = self.roles(user);
        let approving = matches!(action, Action::Approve { .. });
        eligibility(&open, user, &roles, approving).map_err(DecideError::Refused)?;

        let (_, saved) = self
            .store
            .load(run)?
            .ok_or_else(|| EngineError::NoSuchRun(run.to_string()))?;
        let module = self.module(&record.version)?;
        let mut machine = snapshot::decode(saved.format_version, &saved.state)
            .map_err(|why| EngineError::Corrupt(format!("run {run}: {why}")))?;
        let here = line(&module, &machine);
        let now = self.clock.now();
        let base = serde_json::json!({
            "gate": name,
            "run": run,
            "workflow": record.workflow,
            "version": record.version,
            "by": user,
            "shown_sha256": open.shown_sha256,
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
                let approvals = open.approvals.len() as i64 + 1;
                if approvals < open.quorum {
                    let remaining = open.quorum - approvals;
                    let mut recorded = event(
                        EventKind::ApprovalRecorded,
                        Some(name.clone()),
                        None,
                        here,
                        with(serde_json::json!({ "comment": comment, "remaining": remaining })),
                    );
                    // The gate index keeps the approval's time: the event's, set here.
                    recorded.at = self.clock.now();
                    let mut updated = open.clone();
                    updated.approvals.push(Approval {
                        by: user.to_string(),
                        at: recorded.at,
                        comment,
                    });
                    let change = Change {
                        events: vec![recorded],
                        status: RunStatus::Waiting,
                        output: None,
                        error: None,
                        waiting_on: Some(WaitingOn::gate(open.kind, &name)),
                        wake_at: record.wake_at,
                    };
                    let update = Some(GateChange::Update(updated));
                    self.commit_with_gate(run, &record.version, None, change, update, None)?;
                    return Ok(Decided::Recorded { remaining });
                }
                let mut by: Vec<&str> = open.approvals.iter().map(|a| a.by.as_str()).collect();
                by.push(user);
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
        let decided = Change::runnable(vec![event(
            EventKind::GateDecided,
            Some(name.clone()),
            None,
            here,
            data,
        )]);
        let close = Some(GateChange::Close(name));
        self.commit_with_gate(run, &record.version, Some(&machine), decided, close, None)?;
        Ok(Decided::Closed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
        assert!(may_decide(&role("customs").to_json(), "ana", &customs));
        assert!(!may_decide(&role("ops").to_json(), "ana", &customs));
        assert!(may_decide(&user("ana").to_json(), "ana", &[]));
        assert!(!may_decide(&user("bob").to_json(), "ana", &customs));
        let any = Value::record([
            ("kind", Value::Str("any".into())),
            ("of", Value::List(vec![role("ops"), user("ana")])),
        ]);
        assert!(may_decide(&any.to_json(), "ana", &[]));
        assert_eq!(describe(&any), "any of (role ops, user ana)");
        assert!(!may_decide(&Value::None.to_json(), "ana", &customs));
    }

    #[test]
    fn one_rule_says_who_may_decide_an_open_gate() {
        let mut gate = crate::store::gate_index::tests::row("r1", "g", 0);
        let finance = ["finance".to_string()];
        let ops = ["ops".to_string()];
        let refused = |r: Result<(), Refusal>| r.err().map(|r| (r.kind, r.why));
        assert_eq!(eligibility(&gate, "ana", &finance, true), Ok(()));
        let (kind, why) = refused(eligibility(&gate, "omar", &ops, true)).unwrap();
        assert_eq!(kind, RefusalKind::Forbidden);
        assert_eq!(why, "omar may not decide `g`: it needs role finance");
        gate.escalated = true;
        assert_eq!(
            eligibility(&gate, "omar", &ops, true),
            Ok(()),
            "escalated to ops"
        );
        // Four-eyes: the starter may reject, not approve, unless `allow_self`.
        let (kind, why) = refused(eligibility(&gate, "ines", &finance, true)).unwrap();
        assert_eq!(kind, RefusalKind::Forbidden);
        assert!(why.contains("four-eyes"), "{why}");
        assert_eq!(eligibility(&gate, "ines", &finance, false), Ok(()));
        gate.allow_self = true;
        assert_eq!(eligibility(&gate, "ines", &finance, true), Ok(()));
        // One approval per person.
        gate.approvals.push(Approval {
            by: "ana".into(),
            at: 1,
            comment: String::new(),
        });
        let (kind, why) = refused(eligibility(&gate, "ana", &finance, true)).unwrap();
        assert_eq!(kind, RefusalKind::Conflict);
        assert!(why.contains("1 more approval(s)"), "{why}");
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
            assert_eq!(
                may_decide(&nested.to_json(), who, roles),
                expected,
                "{who} {roles:?}"
            );
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
        let mut row = crate::store::gate_index::tests::row("r", "g", 0);
        (row.escalate_at, row.deadline) = (gate.escalate_at(0), gate.timeout_at(0));
        assert_eq!(next_wake(&row), Some(24 * 3_600_000));
        row.escalated = true;
        assert_eq!(next_wake(&row), Some(48 * 3_600_000));
        row.outer_deadline = Some(30 * 3_600_000);
        assert_eq!(
            next_wake(&row),
            Some(30 * 3_600_000),
            "the `timeout` around it"
        );
    }
}
