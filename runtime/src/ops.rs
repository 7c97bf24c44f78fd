//! The operations that `flowrt` and the HTTP API both offer — start a run, decide a gate,
//! cancel a run, list runs, show a run, its history and its audit trail, the gates waiting
//! for a person — written once, so that who may do what, and what is checked, is decided in
//! one place (spec/server.md, "Who may read a run"; spec/runtime.md, gates).
//!
//! In: the engine, who asks ([`Caller`]) and the operation's arguments, already read from
//! flags or a request body. Out: the views of [`crate::views`], or an [`OpError`] that each
//! side puts in its own words: `flowrt` as a message and an exit status, the server as a
//! status code and an error object. Neither side checks rights or validates on its own.

use crate::engine::{Engine, EngineError};
use crate::gates::{Action, DecideError, Refusal, RefusalKind};
use crate::server::access;
use crate::store::{Delivery, EventKind, Millis, NewEvent, RunRecord, RunStatus};
use crate::views::{
    AcceptedSignal, AuditView, DecisionView, EventView, GateView, QueryView, RunDetailView,
    RunView, SignalView,
};
use std::fmt;

/// Who asks for an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller<'a> {
    /// A user of flow.toml: the API's rules apply (who may start a workflow, cancel or read a
    /// run). The server's callers, and `flowrt … --as USER` with a flow.toml, are users.
    User(&'a str),
    /// Whoever may run `flowrt` on the database (it can read and write the database anyway):
    /// no rule is checked, the name is recorded as who acted.
    Operator(&'a str),
}

impl<'a> Caller<'a> {
    pub fn name(self) -> &'a str {
        match self {
            Caller::User(name) | Caller::Operator(name) => name,
        }
    }
}

/// Why an operation did nothing. Each variant carries what a message needs; `flowrt` and the
/// server each word it for their place (a flag, a field) and map it to an exit status or an
/// HTTP status.
#[derive(Debug)]
pub enum OpError {
    /// No run has this id (404).
    NoSuchRun(String),
    /// No deployed program has a workflow of this name (404).
    NoSuchWorkflow(String),
    /// The caller may not do this (403); `run` is the run it concerns, whose trail records
    /// the refusal.
    Forbidden {
        run: Option<String>,
        why: String,
    },
    /// The run has finished, so there is nothing to cancel (409).
    Finished {
        run: String,
        status: RunStatus,
    },
    /// The engine refused the decision (404, 409, 403 or 422 by its kind); nothing was
    /// recorded.
    Refused {
        run: String,
        refusal: Refusal,
    },
    /// A rejection without a comment saying why (400).
    RejectWithoutComment,
    /// `resolve` without a note saying how the run was handled (400).
    ResolveWithoutNote,
    /// `resolve` of a run that needs no attention (409).
    NothingToResolve(String),
    Engine(EngineError),
}

impl From<EngineError> for OpError {
    fn from(error: EngineError) -> OpError {
        OpError::Engine(error)
    }
}

impl From<crate::store::StoreError> for OpError {
    fn from(error: crate::store::StoreError) -> OpError {
        OpError::Engine(error.into())
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::NoSuchRun(id) => write!(f, "no run with id {id}"),
            OpError::NoSuchWorkflow(workflow) => write!(
                f,
                "no deployed workflow is named `{workflow}` (deploy it with `flowrt deploy FILE`)"
            ),
            OpError::Forbidden { why, .. } => f.write_str(why),
            OpError::Finished { run, status } => {
                write!(f, "run {run} has already {}", status.as_str())
            }
            OpError::Refused { refusal, .. } => write!(f, "{refusal}"),
            OpError::RejectWithoutComment => f.write_str("a rejection needs a comment saying why"),
            OpError::ResolveWithoutNote => {
                f.write_str("resolving needs a note saying how what went wrong was handled")
            }
            OpError::NothingToResolve(run) => write!(f, "run {run} needs no attention"),
            OpError::Engine(error) => write!(f, "{error}"),
        }
    }
}

pub type OpResult<T> = Result<T, OpError>;

// ----- starting -----------------------------------------------------------------------

/// What to start: a workflow, in a version or the newest deployed one that has it, with its
/// input (a JSON object, one field per parameter; the engine validates it).
pub struct Start<'a> {
    pub workflow: &'a str,
    pub version: Option<&'a str>,
    pub input: &'a serde_json::Value,
}

/// Starts a run (not driven: the caller drives it, or leaves it to a worker) and returns its
/// id. A user must be allowed to start the workflow (`[workflows.NAME] starters`).
pub fn start(engine: &mut Engine, caller: Caller<'_>, what: &Start<'_>) -> OpResult<String> {
    let version = match what.version {
        Some(version) => version.to_string(),
        None => newest_version_of(engine, what.workflow)?,
    };
    if let Caller::User(user) = caller {
        engine
            .config()
            .may_start(user, what.workflow)
            .map_err(|why| OpError::Forbidden { run: None, why })?;
    }
    Ok(engine.start(&version, what.workflow, what.input, caller.name())?)
}

/// The newest deployed version that has `workflow`.
pub fn newest_version_of(engine: &mut Engine, workflow: &str) -> OpResult<String> {
    let mut versions = engine.store().versions()?;
    versions.reverse();
    for (version, _) in versions {
        if engine.module(&version)?.workflow(workflow).is_some() {
            return Ok(version);
        }
    }
    Err(OpError::NoSuchWorkflow(workflow.to_string()))
}

// ----- reading ------------------------------------------------------------------------

/// Which runs to list.
#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    pub status: Option<RunStatus>,
    pub workflow: Option<String>,
    /// Started at or after.
    pub since: Option<Millis>,
    /// At most this many (the newest).
    pub limit: Option<usize>,
    /// Only the runs an operator must look at (`--status needs_attention`).
    pub needing_attention: bool,
}

/// The `status` a run listing may ask for besides a [`RunStatus`]: the runs an operator must
/// look at, whatever their status.
pub const NEEDS_ATTENTION: &str = "needs_attention";

impl RunQuery {
    /// Sets the status filter from its text (`flowrt runs --status`, `GET /api/runs?status=`):
    /// a run status or [`NEEDS_ATTENTION`]. The error lists what may be asked (the caller
    /// says where the text came from).
    pub fn filter_status(&mut self, text: &str) -> Result<(), String> {
        if text == NEEDS_ATTENTION {
            self.needing_attention = true;
            return Ok(());
        }
        self.status = Some(RunStatus::parse(text).ok_or_else(|| {
            let mut all: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
            all.push(NEEDS_ATTENTION);
            format!("expected one of {}", all.join(", "))
        })?);
        Ok(())
    }

    fn keeps(&self, record: &RunRecord) -> bool {
        self.status.is_none_or(|s| s == record.status)
            && self.workflow.as_ref().is_none_or(|w| *w == record.workflow)
            && self.since.is_none_or(|since| record.created_at >= since)
    }
}

/// The runs that match `query` and that the caller may read, newest first.
pub fn list_runs(
    engine: &mut Engine,
    caller: Caller<'_>,
    query: &RunQuery,
) -> OpResult<Vec<RunView>> {
    let limit = query.limit.unwrap_or(usize::MAX);
    let mut runs = Vec::new();
    let records = if query.needing_attention {
        engine.store().needing_attention()?
    } else {
        engine.store().runs(query.status)?
    };
    for record in records {
        if runs.len() == limit {
            break;
        }
        if query.keeps(&record) && may_read(engine, caller, &record)?.is_ok() {
            runs.push(RunView::of(engine, &record)?);
        }
    }
    Ok(runs)
}

/// One run with its input and open gate.
pub fn show_run(engine: &mut Engine, caller: Caller<'_>, id: &str) -> OpResult<RunDetailView> {
    let record = readable_run(engine, caller, id)?;
    let gate = engine
        .open_gates_of(id)?
        .into_iter()
        .next()
        .map(GateView::of);
    let signals = accepted_signals(engine, caller, &record)?;
    Ok(RunDetailView {
        run: RunView::of(engine, &record)?,
        input: serde_json::from_str(&record.input).unwrap_or(serde_json::Value::Null),
        gate,
        signals,
    })
}

/// The signals an unfinished run accepts, with whether `caller` may send each and how many
/// are queued.
fn accepted_signals(
    engine: &mut Engine,
    caller: Caller<'_>,
    record: &RunRecord,
) -> OpResult<Vec<AcceptedSignal>> {
    if record.status.is_final() {
        return Ok(Vec::new());
    }
    let module = engine.module(&record.version)?;
    let Some((workflow, _)) = module.workflow(&record.workflow) else {
        return Ok(Vec::new());
    };
    let declared: Vec<_> = module.signals_of(workflow as u32).cloned().collect();
    if declared.is_empty() {
        return Ok(Vec::new());
    }
    let queued = engine.store().queued_signals(&record.id)?;
    Ok(declared
        .into_iter()
        .map(|signal| {
            let unit = matches!(
                module.type_desc(signal.ty),
                Some(flow_compiler::bytecode::TypeDesc::Unit)
            );
            AcceptedSignal {
                senders: signal
                    .senders
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
                may_send: match caller {
                    Caller::Operator(_) => true,
                    Caller::User(user) => may_send(engine, user, &signal.senders),
                },
                value_schema: (!unit)
                    .then(|| flow_compiler::bytecode::schema::form_schema(&module, signal.ty)),
                queued: queued.iter().filter(|q| q.name == signal.name).count(),
                name: signal.name,
            }
        })
        .collect())
}

/// A run's timeline.
pub fn history(engine: &mut Engine, caller: Caller<'_>, id: &str) -> OpResult<Vec<EventView>> {
    readable_run(engine, caller, id)?;
    Ok(engine
        .store()
        .history(id)?
        .iter()
        .map(EventView::of)
        .collect())
}

/// A run's audit trail in the export format, and whether its keyed chain verifies.
pub fn audit(engine: &mut Engine, caller: Caller<'_>, id: &str) -> OpResult<AuditView> {
    let record = readable_run(engine, caller, id)?;
    let events = engine.store().history(id)?;
    let verified = crate::audit::check_run(engine.store(), &record)?;
    Ok(AuditView {
        run: id.to_string(),
        verified: verified.is_ok(),
        problem: verified.err().map(|b| b.to_string()),
        records: events
            .iter()
            .map(|e| crate::audit::export_record(id, &record.workflow, &record.version, e))
            .collect(),
    })
}

/// The gates waiting for a person: those `user` may decide now, or every one.
pub fn pending(engine: &mut Engine, user: Option<&str>) -> OpResult<Vec<GateView>> {
    Ok(engine
        .pending(user)?
        .into_iter()
        .map(GateView::of)
        .collect())
}

/// The run, which must exist.
pub fn load_run(engine: &mut Engine, id: &str) -> OpResult<RunRecord> {
    engine
        .store()
        .run(id)?
        .ok_or_else(|| OpError::NoSuchRun(id.to_string()))
}

/// The run, when the caller may read it (see [`access`]).
pub fn readable_run(engine: &mut Engine, caller: Caller<'_>, id: &str) -> OpResult<RunRecord> {
    let record = load_run(engine, id)?;
    may_read(engine, caller, &record)?.map_err(|why| OpError::Forbidden {
        run: Some(id.to_string()),
        why,
    })?;
    Ok(record)
}

fn may_read(
    engine: &mut Engine,
    caller: Caller<'_>,
    record: &RunRecord,
) -> OpResult<Result<(), String>> {
    Ok(match caller {
        Caller::User(user) => access::may_read(engine, user, record)?,
        Caller::Operator(_) => Ok(()),
    })
}

// ----- changing -----------------------------------------------------------------------

// ----- queries ------------------------------------------------------------------------

/// Evaluates query `name` of run `id` on the run's last checkpoint, for a caller who may
/// read the run; nothing is changed or recorded. Refused (409) when the run has finished or
/// has not reached the query yet, or when the query fails.
pub fn query(engine: &mut Engine, caller: Caller<'_>, id: &str, name: &str) -> OpResult<QueryView> {
    let record = readable_run(engine, caller, id)?;
    let refused = |kind, why: String| OpError::Refused {
        run: id.to_string(),
        refusal: Refusal { kind, why },
    };
    let module = engine.module(&record.version)?;
    let workflow = module
        .workflow(&record.workflow)
        .map(|(index, _)| index as u32)
        .ok_or_else(|| OpError::NoSuchWorkflow(record.workflow.clone()))?;
    let Some(query) = module
        .queries
        .iter()
        .find(|q| q.workflow == workflow && q.name == name)
    else {
        let names: Vec<String> = module
            .queries
            .iter()
            .filter(|q| q.workflow == workflow)
            .map(|q| format!("`{}`", q.name))
            .collect();
        let has = if names.is_empty() {
            "it has no queries".to_string()
        } else {
            format!("it has {}", names.join(", "))
        };
        return Err(refused(
            RefusalKind::NotFound,
            format!("`{}` has no query `{name}`: {has}", record.workflow),
        ));
    };
    if record.status.is_final() {
        return Err(refused(
            RefusalKind::Conflict,
            format!(
                "run {id} has {}: a query reads a running run's state (its result is in `output`)",
                record.status.as_str()
            ),
        ));
    }
    let Some((_, saved)) = engine.store().load(id)? else {
        return Err(OpError::NoSuchRun(id.to_string()));
    };
    let machine = crate::vm::snapshot::decode(saved.format_version, &saved.state)
        .map_err(|why| EngineError::Corrupt(format!("run {id}: {why}")))?;
    if machine.workflow != workflow || machine.fiber.pc < query.from_pc {
        return Err(refused(
            RefusalKind::Conflict,
            format!(
                "run {id} has not reached query `{name}` yet: the variables it reads are not set"
            ),
        ));
    }
    let value = machine.evaluate(&module, &query.code).map_err(|why| {
        refused(
            RefusalKind::Conflict,
            format!("query `{name}` failed: {why}"),
        )
    })?;
    Ok(QueryView {
        run: id.to_string(),
        query: name.to_string(),
        value: value.to_json(),
        at: record.updated_at,
    })
}

// ----- signals ------------------------------------------------------------------------

/// Whether `who` is one of the senders a signal names.
pub fn may_send(engine: &Engine, who: &str, senders: &[flow_compiler::bytecode::Sender]) -> bool {
    use flow_compiler::bytecode::SenderKind;
    senders.iter().any(|sender| match sender.kind {
        SenderKind::Role => engine.config().has_role(who, &sender.name),
        SenderKind::User => who == sender.name,
        SenderKind::System => crate::tokens::system_of(who) == Some(sender.name.as_str()),
    })
}

/// Sends signal `name` with `value` to run `id` as `caller`: the run must accept it, a user
/// must be one of its senders, the value must fit its type. The signal is queued and
/// recorded even when the run is busy elsewhere; when the run waits for it and `drive`, the
/// run is driven on (unless another process holds it, which then drives it).
pub fn signal(
    engine: &mut Engine,
    caller: Caller<'_>,
    id: &str,
    name: &str,
    value: &serde_json::Value,
    drive: bool,
) -> OpResult<SignalView> {
    let record = load_run(engine, id)?;
    let module = engine.module(&record.version)?;
    let workflow = module
        .workflow(&record.workflow)
        .map(|(index, _)| index as u32)
        .ok_or_else(|| OpError::NoSuchWorkflow(record.workflow.clone()))?;
    let Some((_, info)) = module.signal(workflow, name) else {
        let accepted: Vec<String> = module
            .signals_of(workflow)
            .map(|s| format!("`{}`", s.name))
            .collect();
        let accepts = if accepted.is_empty() {
            "it accepts no signals".to_string()
        } else {
            format!("it accepts {}", accepted.join(", "))
        };
        return Err(OpError::Refused {
            run: id.to_string(),
            refusal: Refusal {
                kind: RefusalKind::NotFound,
                why: format!(
                    "run {id} (`{}`) does not accept a signal `{name}`: {accepts}",
                    record.workflow
                ),
            },
        });
    };
    if let Caller::User(user) = caller
        && !may_send(engine, user, &info.senders)
    {
        let senders: Vec<String> = info.senders.iter().map(|s| s.to_string()).collect();
        return Err(OpError::Forbidden {
            run: Some(id.to_string()),
            why: format!(
                "{user} may not send `{name}` to run {id}: only {} may",
                senders.join(" or ")
            ),
        });
    }
    if let Err(mismatch) = crate::vm::value::from_json(&module, info.ty, value, "$") {
        return Err(OpError::Refused {
            run: id.to_string(),
            refusal: Refusal {
                kind: RefusalKind::Invalid,
                why: format!(
                    "the value of signal `{name}` does not fit {}: {mismatch}",
                    module.type_name(info.ty)
                ),
            },
        });
    }
    let event = signal_event(engine.now(), name, value, caller.name());
    let text = value.to_string();
    match engine
        .store()
        .send_signal(id, name, &text, caller.name(), &event)?
    {
        Delivery::Finished(status) => Err(OpError::Refused {
            run: id.to_string(),
            refusal: Refusal {
                kind: RefusalKind::Conflict,
                why: format!(
                    "run {id} has already {}: it takes no more signals",
                    status.as_str()
                ),
            },
        }),
        Delivery::Queued { number, woke } => {
            let run_status = if woke && drive {
                match engine.drive(id) {
                    Ok(status) => Some(status.as_str()),
                    // Another process holds the run: it takes the signal.
                    Err(EngineError::Claimed(_)) => None,
                    Err(error) => return Err(error.into()),
                }
            } else {
                None
            };
            Ok(SignalView {
                run: id.to_string(),
                signal: name.to_string(),
                number,
                taken_now: woke,
                run_status,
            })
        }
    }
}

/// The `signal_received` event of a signal (its number is added by the store, which
/// numbers it).
fn signal_event(at: Millis, name: &str, value: &serde_json::Value, by: &str) -> NewEvent {
    NewEvent {
        at,
        kind: EventKind::SignalReceived,
        step: Some(name.to_string()),
        attempt: None,
        line: None,
        duration_ms: None,
        data: serde_json::json!({ "signal": name, "value": value, "by": by }).to_string(),
    }
}

/// A rejection, which needs a comment saying why.
pub fn reject(comment: Option<String>) -> OpResult<Action> {
    match comment.filter(|c| !c.trim().is_empty()) {
        Some(comment) => Ok(Action::Reject { comment }),
        None => Err(OpError::RejectWithoutComment),
    }
}

/// Decides gate `gate` of run `run` as `user` (the engine checks that they may, and that the
/// view hash, when given, is still the gate's), then drives the run when `drive`.
pub fn decide(
    engine: &mut Engine,
    run: &str,
    gate: &str,
    user: &str,
    action: Action,
    expect_hash: Option<&str>,
    drive: bool,
) -> OpResult<DecisionView> {
    let outcome = if drive {
        engine
            .decide_and_drive(run, gate, user, action, expect_hash)
            .map(|(decided, status)| (decided, Some(status)))
    } else {
        engine
            .decide(run, gate, user, action, expect_hash)
            .map(|decided| (decided, None))
    };
    match outcome {
        Ok((decided, status)) => Ok(DecisionView::of(&decided, status)),
        Err(DecideError::Refused(refusal)) => Err(OpError::Refused {
            run: run.to_string(),
            refusal,
        }),
        Err(DecideError::Engine(error)) => Err(error.into()),
    }
}

/// Cancels a run that has not finished. A user may cancel a run they started, or one of a
/// workflow they may start.
pub fn cancel(engine: &mut Engine, caller: Caller<'_>, id: &str) -> OpResult<()> {
    cancel_with(engine, caller, id, true)
}

/// [`cancel`], choosing whether the run's undo blocks run first (`compensate`).
pub fn cancel_with(
    engine: &mut Engine,
    caller: Caller<'_>,
    id: &str,
    compensate: bool,
) -> OpResult<()> {
    let record = load_run(engine, id)?;
    if let Caller::User(user) = caller
        && record.started_by != user
        && let Err(why) = engine.config().may_start(user, &record.workflow)
    {
        return Err(OpError::Forbidden {
            run: Some(id.to_string()),
            why: format!(
                "{why}; only who started run {id} or may start `{}` may cancel it",
                record.workflow
            ),
        });
    }
    let cancelled = if compensate {
        engine.cancel(id, caller.name())?
    } else {
        engine.cancel_plainly(id, caller.name())?
    };
    if !cancelled {
        return Err(OpError::Finished {
            run: id.to_string(),
            status: record.status,
        });
    }
    Ok(())
}

/// The role that may resolve, over the API, a run that needs attention (`flowrt` itself may).
pub const OPERATOR_ROLE: &str = "operator";

/// Records that what made run `id` need attention (an undo block that failed) was handled,
/// by `caller`, with a note saying how: `attention_resolved` in its trail, and the run no
/// longer listed as needing attention. A user must hold the `operator` role.
pub fn resolve(engine: &mut Engine, caller: Caller<'_>, id: &str, note: &str) -> OpResult<()> {
    let record = load_run(engine, id)?;
    if let Caller::User(user) = caller
        && !engine.config().has_role(user, OPERATOR_ROLE)
    {
        return Err(OpError::Forbidden {
            run: Some(record.id),
            why: format!("{user} may not resolve run {id}: only role {OPERATOR_ROLE} may"),
        });
    }
    let note = note.trim();
    if note.is_empty() {
        return Err(OpError::ResolveWithoutNote);
    }
    let event = NewEvent {
        at: engine.now(),
        kind: EventKind::AttentionResolved,
        step: None,
        attempt: None,
        line: None,
        duration_ms: None,
        data: serde_json::json!({
            "by": caller.name(),
            "note": crate::store::cut(note, crate::store::REFUSAL_REASON_BYTES),
            "was": record.attention,
        })
        .to_string(),
    };
    if !engine.store().resolve_attention(id, &event)? {
        return Err(OpError::NothingToResolve(id.to_string()));
    }
    Ok(())
}

/// The `request_refused` event that records, in a run's trail, that `user` was refused
/// `request` (`POST /api/runs/R/cancel`, `flowrt cancel R`) with `status` because `reason`,
/// at `at` (the engine's clock).
pub fn refusal_event(at: Millis, user: &str, request: &str, status: u16, reason: &str) -> NewEvent {
    use crate::store::{REFUSAL_REASON_BYTES, REFUSAL_TEXT_BYTES, cut};
    NewEvent {
        at,
        kind: EventKind::RequestRefused,
        step: None,
        attempt: None,
        line: None,
        duration_ms: None,
        data: serde_json::json!({
            "by": user,
            "request": cut(request, REFUSAL_TEXT_BYTES),
            "status": status,
            "reason": cut(reason, REFUSAL_REASON_BYTES),
        })
        .to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::sqlite::SqliteStore;

    const PROGRAM: &str = r#"workflow release(id: String) -> String {
  let d = await approval "signoff" { approvers: role("customs"), prompt: "Release ${id}?" }
  if d.approved { "released ${id}" } else { "held ${id}" }
}
"#;

    const USERS: &str = r#"[users.ines]
roles = ["clerk"]

[users.alice]
roles = ["customs"]

[users.vera]
roles = ["visitor"]

[workflows.release]
starters = ["clerk"]
"#;

    /// An engine on an in-memory store with the program above deployed and the users above.
    fn engine() -> (Engine, String) {
        let loader = flow_compiler::sources::MemoryLoader::default().with("p.flow", PROGRAM);
        let program = flow_compiler::check_paths(&["p.flow".to_string()], &loader).unwrap();
        assert_eq!(program.errors(), 0);
        let module = flow_compiler::lower::lower(&program).unwrap();
        let mut engine = Engine::new(Box::new(SqliteStore::in_memory().unwrap()), "ops-test");
        engine.set_config(Config::parse(USERS, "flow.toml").unwrap());
        let (version, _) = engine
            .deploy(&flow_compiler::bytecode::encode(&module))
            .unwrap();
        (engine, version)
    }

    fn start_as(engine: &mut Engine, caller: Caller<'_>, id: &str) -> OpResult<String> {
        let input = serde_json::json!({ "id": id });
        let what = Start {
            workflow: "release",
            version: None,
            input: &input,
        };
        let run = start(engine, caller, &what)?;
        engine.drive(&run)?;
        Ok(run)
    }

    #[test]
    fn only_starters_start_but_the_operator_may() {
        let (mut engine, _) = engine();
        let refused = start_as(&mut engine, Caller::User("vera"), "R-1").unwrap_err();
        assert!(
            matches!(&refused, OpError::Forbidden { run: None, why } if why.contains("needs role clerk")),
            "{refused:?}"
        );
        start_as(&mut engine, Caller::User("ines"), "R-1").unwrap();
        let run = start_as(&mut engine, Caller::Operator("root"), "R-2").unwrap();
        assert_eq!(load_run(&mut engine, &run).unwrap().started_by, "root");
        let input = serde_json::json!({});
        let what = Start {
            workflow: "nothing",
            version: None,
            input: &input,
        };
        let missing = start(&mut engine, Caller::Operator("root"), &what).unwrap_err();
        assert!(matches!(missing, OpError::NoSuchWorkflow(ref w) if w == "nothing"));
    }

    #[test]
    fn reads_are_limited_to_what_the_caller_may_read() {
        let (mut engine, _) = engine();
        let run = start_as(&mut engine, Caller::User("ines"), "R-1").unwrap();
        // vera neither started it, nor may decide its gate, nor reads `release`.
        let all = RunQuery::default();
        assert!(
            list_runs(&mut engine, Caller::User("vera"), &all)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            list_runs(&mut engine, Caller::User("alice"), &all)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            list_runs(&mut engine, Caller::Operator("root"), &all)
                .unwrap()
                .len(),
            1
        );
        let refused = history(&mut engine, Caller::User("vera"), &run).unwrap_err();
        assert!(
            matches!(&refused, OpError::Forbidden { run: Some(r), .. } if *r == run),
            "{refused:?}"
        );
        assert!(matches!(
            audit(&mut engine, Caller::User("vera"), &run),
            Err(OpError::Forbidden { .. })
        ));
        assert!(matches!(
            show_run(&mut engine, Caller::User("alice"), "nope"),
            Err(OpError::NoSuchRun(ref id)) if id == "nope"
        ));
        let shown = show_run(&mut engine, Caller::User("alice"), &run).unwrap();
        assert_eq!(
            shown.gate.as_ref().map(|g| g.gate.as_str()),
            Some("signoff")
        );
        assert_eq!(shown.input, serde_json::json!({ "id": "R-1" }));
        let events = history(&mut engine, Caller::User("ines"), &run).unwrap();
        assert_eq!(events[0].kind, EventKind::RunStarted);
        let trail = audit(&mut engine, Caller::User("ines"), &run).unwrap();
        assert!(trail.verified, "{:?}", trail.problem);
        assert_eq!(trail.records.len(), events.len());
        // Filters: another workflow, a later start, a limit.
        let other = RunQuery {
            workflow: Some("other".into()),
            ..RunQuery::default()
        };
        assert!(
            list_runs(&mut engine, Caller::Operator("root"), &other)
                .unwrap()
                .is_empty()
        );
        let later = RunQuery {
            since: Some(engine.now() + 60_000),
            ..RunQuery::default()
        };
        assert!(
            list_runs(&mut engine, Caller::Operator("root"), &later)
                .unwrap()
                .is_empty()
        );
        start_as(&mut engine, Caller::User("ines"), "R-2").unwrap();
        let one = RunQuery {
            limit: Some(1),
            ..RunQuery::default()
        };
        assert_eq!(
            list_runs(&mut engine, Caller::Operator("root"), &one)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn who_may_cancel_and_what_is_left_to_cancel() {
        let (mut engine, _) = engine();
        let run = start_as(&mut engine, Caller::User("ines"), "R-1").unwrap();
        let refused = cancel(&mut engine, Caller::User("alice"), &run).unwrap_err();
        assert!(
            matches!(&refused, OpError::Forbidden { run: Some(r), why } if *r == run && why.contains("may cancel it")),
            "{refused:?}"
        );
        cancel(&mut engine, Caller::User("ines"), &run).unwrap();
        let again = cancel(&mut engine, Caller::Operator("root"), &run).unwrap_err();
        assert!(
            matches!(
                again,
                OpError::Finished {
                    status: RunStatus::Cancelled,
                    ..
                }
            ),
            "{again:?}"
        );
        assert!(matches!(
            cancel(&mut engine, Caller::Operator("root"), "nope"),
            Err(OpError::NoSuchRun(_))
        ));
        // The operator may cancel any run that goes on.
        let other = start_as(&mut engine, Caller::User("ines"), "R-2").unwrap();
        cancel(&mut engine, Caller::Operator("root"), &other).unwrap();
    }

    #[test]
    fn decisions_go_through_the_engine_rules() {
        let (mut engine, _) = engine();
        assert!(matches!(reject(None), Err(OpError::RejectWithoutComment)));
        assert!(matches!(
            reject(Some(" \n".into())),
            Err(OpError::RejectWithoutComment)
        ));
        let run = start_as(&mut engine, Caller::User("ines"), "R-1").unwrap();
        let gates = pending(&mut engine, Some("alice")).unwrap();
        assert_eq!(gates.len(), 1);
        assert!(pending(&mut engine, Some("vera")).unwrap().is_empty());
        let approve = || Action::Approve {
            comment: String::new(),
        };
        let refused = decide(&mut engine, &run, "signoff", "vera", approve(), None, true);
        assert!(
            matches!(&refused, Err(OpError::Refused { run: r, refusal }) if *r == run && refusal.kind == crate::gates::RefusalKind::Forbidden),
            "{refused:?}"
        );
        let stale = "0".repeat(64);
        let refused = decide(
            &mut engine,
            &run,
            "signoff",
            "alice",
            approve(),
            Some(&stale),
            true,
        );
        assert!(
            matches!(&refused, Err(OpError::Refused { refusal, .. }) if refusal.kind == crate::gates::RefusalKind::Conflict),
            "{refused:?}"
        );
        let hash = gates[0].view_hash.clone();
        let decided = decide(
            &mut engine,
            &run,
            "signoff",
            "alice",
            approve(),
            Some(&hash),
            true,
        );
        assert_eq!(
            decided.unwrap(),
            DecisionView {
                decision: "closed",
                remaining: 0,
                run_status: Some("completed"),
            }
        );
    }
}
