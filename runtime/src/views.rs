//! The views of durable state that `flowrt … --json` and the HTTP API both show, defined once
//! so that they name every field the same way and write times the same way (milliseconds
//! since the Unix epoch, as the API always has).
//!
//! In: stored records — a `RunRecord`, an open gate, history events — (and the engine, for
//! what only the program knows: the outcome). Out: serde types whose JSON is the documented
//! view ([server.md](../../spec/server.md)). [`crate::ops`] builds them for both sides.

use crate::engine::{Engine, EngineResult};
use crate::gates::{Decided, PendingGate};
use crate::store::{Event, EventKind, Millis, RunRecord, RunStatus};
use serde::Serialize;

/// A run, as listed by `GET /api/runs` and `flowrt runs --json`, and shown (with more) by
/// `GET /api/runs/{id}` and `flowrt status --json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunView {
    pub id: String,
    pub workflow: String,
    pub version: String,
    pub status: &'static str,
    /// `timer`, `approval NAME`, `input NAME`, `child RUN` or `tool NAME`, when waiting.
    pub waiting_on: Option<String>,
    /// When a waiting run wakes (a timer, a gate's escalation or deadline), if it does.
    pub wake_at: Option<Millis>,
    pub started_by: String,
    pub parent: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// The enum variant a completed run returned, when its workflow returns an enum.
    pub outcome: Option<String>,
    /// The result, when completed.
    pub output: Option<serde_json::Value>,
    /// The rendered error, when failed.
    pub error: Option<String>,
    /// The run that goes on, when this one ended with `continue as`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continued_as: Option<String>,
    /// Why an operator must look at the run (an undo block failed), until it is resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_attention: Option<String>,
}

impl RunView {
    pub fn of(engine: &mut Engine, record: &RunRecord) -> EngineResult<RunView> {
        Ok(RunView {
            id: record.id.clone(),
            workflow: record.workflow.clone(),
            version: record.version.clone(),
            status: record.status.as_str(),
            waiting_on: record.waiting_on.clone(),
            wake_at: record.wake_at,
            started_by: record.started_by.clone(),
            parent: record.parent.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            outcome: engine.outcome(record)?,
            output: record
                .output
                .as_deref()
                .and_then(|o| serde_json::from_str(o).ok()),
            error: record.error.clone(),
            continued_as: (record.status == crate::store::RunStatus::Continued)
                .then(|| crate::engine::successor_of(&record.id)),
            needs_attention: record.attention.clone(),
        })
    }

    /// As JSON, for views that add fields of their own.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A run as `GET /api/runs/{id}` and `flowrt status --json` show it: the [`RunView`] with the
/// input and the open gate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunDetailView {
    #[serde(flatten)]
    pub run: RunView,
    pub input: serde_json::Value,
    /// The open gate, as `GET /api/decisions` shows it, or `null`.
    pub gate: Option<GateView>,
    /// The signals the run's workflow accepts (none once the run has finished).
    pub signals: Vec<AcceptedSignal>,
}

/// A signal a run accepts, as the `signals` of `GET /api/runs/{id}` show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AcceptedSignal {
    pub name: String,
    /// Who may send it, as the workflow declares it: `role("support") or system("billing")`.
    pub senders: String,
    /// Whether the caller may send it.
    pub may_send: bool,
    /// The JSON Schema of its value, as a form's (see `input_schema`); `null` for a signal
    /// that carries none.
    pub value_schema: Option<serde_json::Value>,
    /// How many of it the run has received and not taken yet.
    pub queued: usize,
}

/// A gate waiting for a person, as `GET /api/decisions`, the `gate` of `GET /api/runs/{id}`
/// and `flowrt approvals --json` show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateView {
    pub run: String,
    pub workflow: String,
    pub gate: String,
    /// `approval` or `input`.
    pub kind: &'static str,
    pub prompt: Option<String>,
    pub context: serde_json::Value,
    /// Who may decide, as text for people: `role customs or, escalated, role ops_manager`.
    pub approvers: String,
    pub started_by: String,
    pub opened_at: Millis,
    pub deadline: Option<Millis>,
    pub escalated: bool,
    /// Approvals still needed.
    pub remaining: i64,
    /// The hash of what the reviewer is shown (prompt and context): a decision sent with it
    /// (`view_hash`, `--expect-hash`) is refused once the view changed.
    pub view_hash: String,
    /// For an input: the JSON Schema of the value it takes.
    pub input_schema: Option<serde_json::Value>,
    /// The JSON Schema of `context`, with a record's fields in the order the workflow wrote
    /// or declared them (`x-order`, as in `input_schema`), for showing it; `null` without a
    /// context, or for a gate of an artifact older than bytecode format 4 or opened before
    /// the gate index kept it (then the context's fields are shown alphabetically).
    pub context_schema: Option<serde_json::Value>,
    /// Approvals needed in all.
    pub quorum: i64,
    /// The approvals recorded since the gate opened, oldest first: `{by, at, comment}`.
    pub decisions: Vec<serde_json::Value>,
    /// Who the gate escalates to and when: `{to, at, fired}`.
    pub escalation: Option<serde_json::Value>,
    /// What happens when the deadline passes, when there is one.
    pub at_deadline: Option<&'static str>,
    /// The gate's options as the workflow evaluated them when it opened.
    pub options: serde_json::Value,
}

impl GateView {
    /// The view of a gate (taken whole: a listing of a thousand gates copies no context).
    pub fn of(gate: PendingGate) -> GateView {
        GateView {
            run: gate.run,
            workflow: gate.workflow,
            gate: gate.gate,
            kind: gate.kind.word(),
            prompt: gate.prompt,
            context: gate.context,
            approvers: gate.approvers,
            started_by: gate.started_by,
            opened_at: gate.opened_at,
            deadline: gate.deadline,
            escalated: gate.escalated,
            remaining: gate.remaining,
            view_hash: gate.shown_hash,
            input_schema: gate.input_schema,
            context_schema: gate.context_schema,
            quorum: gate.quorum,
            decisions: gate.decisions,
            escalation: gate.escalation,
            at_deadline: gate.timeout_caught.map(at_deadline),
            options: gate.options,
        }
    }
}

/// What a gate's timeout does (see spec/runtime.md, gates): whether the workflow catches
/// the `ApprovalTimeout`.
fn at_deadline(caught: bool) -> &'static str {
    if caught {
        "the gate times out: the workflow catches the ApprovalTimeout and goes on without a decision"
    } else {
        "the gate times out: the run fails with ApprovalTimeout (the workflow does not catch it)"
    }
}

/// One event of a run's timeline, as `GET /api/runs/{id}/history` and `flowrt history --json`
/// show it. (The audit export has its own, hashed format: [`crate::audit::export_record`].)
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventView {
    pub seq: i64,
    pub at: Millis,
    pub kind: EventKind,
    /// The tool, gate, event or child workflow concerned.
    pub step: Option<String>,
    pub attempt: Option<i64>,
    /// The `.flow` source line.
    pub line: Option<i64>,
    pub duration_ms: Option<i64>,
    /// The event's details (`null` if the stored text is not JSON).
    pub data: serde_json::Value,
}

impl EventView {
    pub fn of(event: &Event) -> EventView {
        EventView {
            seq: event.seq,
            at: event.at,
            kind: event.kind,
            step: event.step.clone(),
            attempt: event.attempt,
            line: event.line,
            duration_ms: event.duration_ms,
            data: serde_json::from_str(&event.data).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A run's audit trail, as `GET /api/runs/{id}/audit` shows it (`flowrt audit RUN --json`
/// prints its records, one a line): whether its keyed chain verifies, and its records in the
/// export format.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditView {
    pub run: String,
    pub verified: bool,
    /// Why the chain does not verify.
    pub problem: Option<String>,
    /// The records as `flowrt audit export` writes them ([`crate::audit::export_record`]).
    pub records: Vec<serde_json::Value>,
}

/// A query's value, as `GET /api/runs/{id}/queries/{name}` answers and `flowrt query --json`
/// prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryView {
    pub run: String,
    pub query: String,
    pub value: serde_json::Value,
    /// When the state it was read from was committed (the run's last change).
    pub at: Millis,
}

/// What sending a signal did, as `POST /api/runs/{id}/signals/{name}` answers and
/// `flowrt signal` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SignalView {
    pub run: String,
    pub signal: String,
    /// The signal's number in the run (1, 2, … in the order received).
    pub number: i64,
    /// Whether the run was waiting for it (it takes it at once); otherwise it is queued
    /// until the run waits for a signal of this name.
    pub taken_now: bool,
    /// The run's status after it was driven (`null` when it was not driven here).
    pub run_status: Option<&'static str>,
}

/// What a decision did, as `POST /api/runs/{id}/gates/{gate}/{action}` answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecisionView {
    /// `closed` (the gate is decided) or `recorded` (one approval of a quorum).
    pub decision: &'static str,
    /// Approvals still needed.
    pub remaining: i64,
    /// The run's status after it was driven (`null` when it was left to a worker).
    pub run_status: Option<&'static str>,
}

impl DecisionView {
    pub fn of(decided: &Decided, status: Option<RunStatus>) -> DecisionView {
        let (decision, remaining) = match decided {
            Decided::Closed => ("closed", 0),
            Decided::Recorded { remaining } => ("recorded", *remaining),
        };
        DecisionView {
            decision,
            remaining,
            run_status: status.map(RunStatus::as_str),
        }
    }
}
