//! The views of durable state that `flowrt … --json` and the HTTP API both show, defined once
//! so that they name every field the same way and write times the same way (milliseconds
//! since the Unix epoch, as the API always has).
//!
//! In: a stored `RunRecord` (and the engine, for what only the program knows: the outcome).
//! Out: serde types whose JSON is the documented view ([server.md](../../spec/server.md)).

use crate::engine::{Engine, EngineResult};
use crate::store::{Millis, RunRecord};
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
        })
    }

    /// As JSON, for views that add fields of their own.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}
