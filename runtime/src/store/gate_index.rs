//! The gate index: one row per open gate (table `gates`, keyed by run and gate name), so
//! that listing, showing and deciding gates read a row instead of re-running a run's VM and
//! re-reading its history.
//!
//! In: the [`GateChange`] a [`super::StepCommit`] carries, written by the store in the
//! commit's own transaction. Out: [`GateRow`]s read back. The invariant the stores keep: a
//! run has a row for gate `G` exactly when it is waiting at `G` — a commit whose run does not
//! wait at a gate afterwards (decided, timed out, withdrawn, finished, cancelled) deletes the
//! run's rows, and [`GateChange`] can only write the gate the run waits at. The stores share
//! the column list, the text encoding and the SQL below (written once over `sql.rs`).

use super::sql::{Conn, Param, Row, SqlStore, params, sql};
use super::{Gates, Millis, RunStatus, StepCommit, StoreError, StoreResult};
use crate::history::{GateKind, WaitingOn};

/// One approval of a quorum that needs more, as recorded (`approval_recorded`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Approval {
    pub by: String,
    pub at: Millis,
    pub comment: String,
}

/// An open gate: what the workflow evaluated when it opened, and what happened since.
#[derive(Clone, Debug, PartialEq)]
pub struct GateRow {
    pub run: String,
    pub name: String,
    pub kind: GateKind,
    pub workflow: String,
    pub version: String,
    pub started_by: String,
    pub opened_at: Millis,
    /// Who may decide, as text: `role customs`, `user ana`, `any of (…)`.
    pub approvers: String,
    /// The same, structured, to decide who is eligible: `{"kind":"role","name":"customs"}`,
    /// `{"kind":"user","name":"ana"}`, `{"kind":"any","of":[…]}`.
    pub approvers_json: serde_json::Value,
    /// Who may decide too once the gate escalated, as text and structured.
    pub escalate_to: Option<String>,
    pub escalate_json: Option<serde_json::Value>,
    pub escalate_at: Option<Millis>,
    pub escalated: bool,
    /// The gate's own final timeout.
    pub deadline: Option<Millis>,
    /// The deadline of a `timeout` block around the gate, if any.
    pub outer_deadline: Option<Millis>,
    pub quorum: i64,
    pub allow_self: bool,
    pub prompt: Option<String>,
    pub context: serde_json::Value,
    /// The hash of what a reviewer is shown (prompt and context).
    pub shown_sha256: String,
    /// For an input: the JSON Schema of the value it takes.
    pub input_schema: Option<serde_json::Value>,
    /// The JSON Schema of the context (a form's, with `x-order`), when the artifact records
    /// its type (bytecode format 4); `None` too in rows written before migration 13.
    pub context_schema: Option<serde_json::Value>,
    /// Whether the workflow catches the gate's `ApprovalTimeout`.
    pub timeout_caught: bool,
    /// The options as the workflow evaluated them (for a reviewer who asks why).
    pub options: serde_json::Value,
    /// The approvals recorded since the gate opened, oldest first.
    pub approvals: Vec<Approval>,
    /// `remind: D`: the approvers are notified again every `D` while the gate is open.
    pub remind_every: Option<Millis>,
    /// How many reminders were sent.
    pub reminded: i64,
}

impl GateRow {
    /// Approvals still needed.
    pub fn remaining(&self) -> i64 {
        self.quorum - self.approvals.len() as i64
    }
}

/// What a commit does to the gate index besides the rule that a run no longer waiting at a
/// gate loses its rows.
#[derive(Clone, Debug, PartialEq)]
pub enum GateChange {
    /// `gate_opened`: the row is written (replacing one left by an earlier opening of the
    /// same gate, e.g. in a loop).
    Open(GateRow),
    /// `approval_recorded`, `gate_escalated`: the row is replaced.
    Update(GateRow),
    /// The gate of that name closed (a commit that leaves the gate closes it anyway).
    Close(String),
}

/// Open gates by kind, and when the oldest opened (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateCounts {
    pub approvals: i64,
    pub inputs: i64,
    pub oldest_opened_at: Option<Millis>,
}

/// The columns of `gates`, in the order of [`RawGate`] (and of [`raw_gate`]), as a literal
/// for `concat!`.
macro_rules! gate_columns {
    () => {
        "run, name, kind, workflow, version, started_by, opened_at, approvers, approvers_json, \
         escalate_to, escalate_json, escalate_at, escalated, deadline, outer_deadline, quorum, \
         allow_self, prompt, context, shown_sha256, input_schema, timeout_caught, options, \
         approvals, context_schema, remind_every, reminded"
    };
}

/// The columns of `gates` that [`raw_gate`] reads.
pub(crate) const GATE_COLUMNS: &str = gate_columns!();

/// The people a row names as deciders, each once: `user:NAME` and `role:NAME`, from the
/// approvers and, once it fired, the escalation. The table `gate_deciders` holds one row for
/// each, so that a reviewer's gates are found through its index (the `deciders` column keeps
/// them as a JSON list, as older databases were filled from). Only a prefilter for
/// [`decider_entries`]: who may decide is `gates::eligibility`'s to say.
pub(crate) fn deciders(row: &GateRow) -> Vec<String> {
    fn collect(approvers: &serde_json::Value, out: &mut Vec<String>) {
        let text = |name| approvers.get(name).and_then(|v| v.as_str()).unwrap_or("");
        match text("kind") {
            kind @ ("role" | "user") => {
                let entry = format!("{kind}:{}", text("name"));
                if !out.contains(&entry) {
                    out.push(entry);
                }
            }
            _ => {
                for item in approvers
                    .get("of")
                    .and_then(|of| of.as_array())
                    .into_iter()
                    .flatten()
                {
                    collect(item, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    collect(&row.approvers_json, &mut out);
    if row.escalated
        && let Some(escalation) = &row.escalate_json
    {
        collect(escalation, &mut out);
    }
    out
}

/// The `gate_deciders` entries that name `user` or one of `roles`.
pub(crate) fn decider_entries(user: &str, roles: &[String]) -> Vec<String> {
    std::iter::once(format!("user:{user}"))
        .chain(roles.iter().map(|r| format!("role:{r}")))
        .collect()
}

/// A row as the database holds it: text, numbers and flags (JSON as text).
pub(crate) struct RawGate {
    pub run: String,
    pub name: String,
    pub kind: String,
    pub workflow: String,
    pub version: String,
    pub started_by: String,
    pub opened_at: i64,
    pub approvers: String,
    pub approvers_json: String,
    pub escalate_to: Option<String>,
    pub escalate_json: Option<String>,
    pub escalate_at: Option<i64>,
    pub escalated: bool,
    pub deadline: Option<i64>,
    pub outer_deadline: Option<i64>,
    pub quorum: i64,
    pub allow_self: bool,
    pub prompt: Option<String>,
    pub context: String,
    pub shown_sha256: String,
    pub input_schema: Option<String>,
    pub timeout_caught: bool,
    pub options: String,
    pub approvals: String,
    pub context_schema: Option<String>,
    pub remind_every: Option<i64>,
    pub reminded: i64,
}

impl RawGate {
    pub(crate) fn of(row: &GateRow) -> RawGate {
        RawGate {
            run: row.run.clone(),
            name: row.name.clone(),
            kind: row.kind.word().to_string(),
            workflow: row.workflow.clone(),
            version: row.version.clone(),
            started_by: row.started_by.clone(),
            opened_at: row.opened_at,
            approvers: row.approvers.clone(),
            approvers_json: row.approvers_json.to_string(),
            escalate_to: row.escalate_to.clone(),
            escalate_json: row.escalate_json.as_ref().map(ToString::to_string),
            escalate_at: row.escalate_at,
            escalated: row.escalated,
            deadline: row.deadline,
            outer_deadline: row.outer_deadline,
            quorum: row.quorum,
            allow_self: row.allow_self,
            prompt: row.prompt.clone(),
            context: row.context.to_string(),
            shown_sha256: row.shown_sha256.clone(),
            input_schema: row.input_schema.as_ref().map(ToString::to_string),
            timeout_caught: row.timeout_caught,
            options: row.options.to_string(),
            approvals: serde_json::to_string(&row.approvals).unwrap_or_else(|_| "[]".into()),
            context_schema: row.context_schema.as_ref().map(ToString::to_string),
            remind_every: row.remind_every,
            reminded: row.reminded,
        }
    }

    pub(crate) fn finish(self) -> StoreResult<GateRow> {
        let (run, name) = (self.run, self.name);
        let json = |column: &str, text: &str| {
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| corrupt(&run, &name, column, e))
        };
        let kind = match self.kind.as_str() {
            "approval" => GateKind::Approval,
            "input" => GateKind::Input,
            other => {
                return Err(corrupt(
                    &run,
                    &name,
                    "kind",
                    format!("unknown kind `{other}`"),
                ));
            }
        };
        Ok(GateRow {
            kind,
            workflow: self.workflow,
            version: self.version,
            started_by: self.started_by,
            opened_at: self.opened_at,
            approvers: self.approvers,
            approvers_json: json("approvers_json", &self.approvers_json)?,
            escalate_to: self.escalate_to,
            escalate_json: self
                .escalate_json
                .as_deref()
                .map(|t| json("escalate_json", t))
                .transpose()?,
            escalate_at: self.escalate_at,
            escalated: self.escalated,
            deadline: self.deadline,
            outer_deadline: self.outer_deadline,
            quorum: self.quorum,
            allow_self: self.allow_self,
            prompt: self.prompt,
            context: json("context", &self.context)?,
            shown_sha256: self.shown_sha256,
            input_schema: self
                .input_schema
                .as_deref()
                .map(|t| json("input_schema", t))
                .transpose()?,
            context_schema: self
                .context_schema
                .as_deref()
                .map(|t| json("context_schema", t))
                .transpose()?,
            timeout_caught: self.timeout_caught,
            options: json("options", &self.options)?,
            approvals: serde_json::from_str(&self.approvals)
                .map_err(|e| corrupt(&run, &name, "approvals", e))?,
            remind_every: self.remind_every,
            reminded: self.reminded,
            run,
            name,
        })
    }
}

fn corrupt(run: &str, name: &str, column: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!(
        "the gate index row of run {run}, gate `{name}`, column {column}: {why}"
    ))
}

/// What a commit must do to the gate index, given what the run waits on afterwards: the
/// gate whose rows it keeps (`None`: delete them all) and the row to write, if any. A change
/// that writes a gate other than the one the run waits at is refused: the index would then
/// disagree with the run.
pub(crate) fn plan<'a>(
    run: &str,
    waiting_on: Option<&str>,
    change: Option<&'a GateChange>,
) -> StoreResult<(Option<String>, Option<&'a GateRow>)> {
    let keep = waiting_on
        .and_then(WaitingOn::parse)
        .and_then(|w| w.as_gate().map(|(_, name)| name.to_string()));
    let write = match change {
        Some(GateChange::Open(row) | GateChange::Update(row)) => {
            if row.run != run || keep.as_deref() != Some(row.name.as_str()) {
                return Err(StoreError::Database(format!(
                    "a commit of run {run} would index gate `{}` of run {} while the run waits on {}",
                    row.name,
                    row.run,
                    waiting_on.unwrap_or("nothing")
                )));
            }
            Some(row)
        }
        Some(GateChange::Close(name)) if keep.as_deref() == Some(name.as_str()) => {
            return Err(StoreError::Database(format!(
                "a commit of run {run} would close gate `{name}` while the run still waits at it"
            )));
        }
        Some(GateChange::Close(_)) | None => None,
    };
    Ok((keep, write))
}

/// A `gates` row read back, in the order of [`GATE_COLUMNS`].
pub(crate) fn raw_gate(mut row: Row) -> StoreResult<RawGate> {
    Ok(RawGate {
        run: row.get(0)?,
        name: row.get(1)?,
        kind: row.get(2)?,
        workflow: row.get(3)?,
        version: row.get(4)?,
        started_by: row.get(5)?,
        opened_at: row.get(6)?,
        approvers: row.get(7)?,
        approvers_json: row.get(8)?,
        escalate_to: row.get(9)?,
        escalate_json: row.get(10)?,
        escalate_at: row.get(11)?,
        escalated: row.get(12)?,
        deadline: row.get(13)?,
        outer_deadline: row.get(14)?,
        quorum: row.get(15)?,
        allow_self: row.get(16)?,
        prompt: row.get(17)?,
        context: row.get(18)?,
        shown_sha256: row.get(19)?,
        input_schema: row.get(20)?,
        timeout_caught: row.get(21)?,
        options: row.get(22)?,
        approvals: row.get(23)?,
        context_schema: row.get(24)?,
        remind_every: row.get(25)?,
        reminded: row.get(26)?,
    })
}

fn gate_rows(rows: Vec<Row>) -> StoreResult<Vec<GateRow>> {
    rows.into_iter()
        .map(|row| raw_gate(row)?.finish())
        .collect()
}

/// What writing a gate's row does when the run already has a row for that gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnConflict {
    /// The new row replaces it (opening the gate again, an approval, an escalation).
    Replace,
    /// The row is left as it is (the backfill, the move to PostgreSQL).
    Keep,
}

/// Writes a gate's row; returns how many rows it wrote (0 when a kept row was there).
pub(crate) fn put_gate(
    conn: &mut dyn Conn,
    gate: &GateRow,
    on_conflict: OnConflict,
) -> StoreResult<u64> {
    macro_rules! insert {
        ($conflict:literal) => {
            concat!(
                "INSERT INTO gates (",
                gate_columns!(),
                ", deciders) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                 $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)
                 ON CONFLICT (run, name) ",
                $conflict
            )
        };
    }
    let dialect = conn.dialect();
    let sql = match on_conflict {
        // Every column but the key takes the new row's value.
        OnConflict::Replace => sql!(
            dialect,
            insert!(
                "DO UPDATE SET kind = excluded.kind,
            workflow = excluded.workflow, version = excluded.version,
            started_by = excluded.started_by, opened_at = excluded.opened_at,
            approvers = excluded.approvers, approvers_json = excluded.approvers_json,
            escalate_to = excluded.escalate_to, escalate_json = excluded.escalate_json,
            escalate_at = excluded.escalate_at, escalated = excluded.escalated,
            deadline = excluded.deadline, outer_deadline = excluded.outer_deadline,
            quorum = excluded.quorum, allow_self = excluded.allow_self, prompt = excluded.prompt,
            context = excluded.context, shown_sha256 = excluded.shown_sha256,
            input_schema = excluded.input_schema, timeout_caught = excluded.timeout_caught,
            options = excluded.options, approvals = excluded.approvals,
            context_schema = excluded.context_schema, remind_every = excluded.remind_every,
            reminded = excluded.reminded, deciders = excluded.deciders"
            )
        ),
        OnConflict::Keep => sql!(dialect, insert!("DO NOTHING")),
    };
    let r = RawGate::of(gate);
    let deciders = deciders(gate);
    let written = conn.execute(
        "writing the gate index",
        sql,
        params![
            &r.run,
            &r.name,
            &r.kind,
            &r.workflow,
            &r.version,
            &r.started_by,
            r.opened_at,
            &r.approvers,
            &r.approvers_json,
            &r.escalate_to,
            &r.escalate_json,
            r.escalate_at,
            r.escalated,
            r.deadline,
            r.outer_deadline,
            r.quorum,
            r.allow_self,
            &r.prompt,
            &r.context,
            &r.shown_sha256,
            &r.input_schema,
            r.timeout_caught,
            &r.options,
            &r.approvals,
            &r.context_schema,
            r.remind_every,
            r.reminded,
            &serde_json::Value::from(deciders.clone()).to_string(),
        ],
    )?;
    if written > 0 {
        put_deciders(conn, gate, &deciders, on_conflict)?;
    }
    Ok(written)
}

/// Writes the `gate_deciders` rows of a gate whose row was just written (replacing those of
/// the row it replaced).
fn put_deciders(
    conn: &mut dyn Conn,
    gate: &GateRow,
    deciders: &[String],
    on_conflict: OnConflict,
) -> StoreResult<()> {
    let doing = "writing who may decide a gate";
    if on_conflict == OnConflict::Replace {
        let sql = sql!(
            conn.dialect(),
            "DELETE FROM gate_deciders WHERE run = $1 AND name = $2"
        );
        conn.execute(doing, sql, params![&gate.run, &gate.name])?;
    }
    let sql = sql!(
        conn.dialect(),
        "INSERT INTO gate_deciders (decider, run, name) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING"
    );
    for decider in deciders {
        conn.execute(doing, sql, params![decider, &gate.run, &gate.name])?;
    }
    Ok(())
}

/// Brings the gate index of the step's run in line with what the run waits on afterwards
/// (see [`plan`]), in the commit's transaction. `was_at_gate`: whether the run waited at a
/// gate before this commit — if not, it has no rows (the invariant) and none are deleted,
/// which spares every step outside a gate two statements.
pub(crate) fn apply(conn: &mut dyn Conn, step: &StepCommit, was_at_gate: bool) -> StoreResult<()> {
    let (keep, write) = plan(&step.run, step.waiting_on.as_deref(), step.gate.as_ref())?;
    match &keep {
        _ if !was_at_gate => {}
        Some(name) => {
            let dialect = conn.dialect();
            for sql in [
                sql!(dialect, "DELETE FROM gates WHERE run = $1 AND name <> $2"),
                sql!(
                    dialect,
                    "DELETE FROM gate_deciders WHERE run = $1 AND name <> $2"
                ),
            ] {
                conn.execute("updating the gate index", sql, params![&step.run, name])?;
            }
        }
        None => close_all(conn, &step.run)?,
    }
    if let Some(row) = write {
        put_gate(conn, row, OnConflict::Replace)?;
    }
    Ok(())
}

/// Takes every gate of `run` out of the index (the run waits at none any more).
pub(crate) fn close_all(conn: &mut dyn Conn, run: &str) -> StoreResult<()> {
    let dialect = conn.dialect();
    for sql in [
        sql!(dialect, "DELETE FROM gates WHERE run = $1"),
        sql!(dialect, "DELETE FROM gate_deciders WHERE run = $1"),
    ] {
        conn.execute("updating the gate index", sql, params![run])?;
    }
    Ok(())
}

const READING: &str = "reading the gate index";

impl<S: SqlStore + ?Sized> Gates for S {
    fn gates(&mut self, run: Option<&str>) -> StoreResult<Vec<GateRow>> {
        let conn = self.conn()?;
        let dialect = conn.dialect();
        let rows = match run {
            Some(run) => conn.query(
                READING,
                sql!(
                    dialect,
                    concat!(
                        "SELECT ",
                        gate_columns!(),
                        " FROM gates WHERE run = $1 ORDER BY opened_at, name"
                    )
                ),
                params![run],
            )?,
            None => conn.query(
                READING,
                sql!(
                    dialect,
                    concat!(
                        "SELECT ",
                        gate_columns!(),
                        " FROM gates ORDER BY opened_at, run, name"
                    )
                ),
                &[],
            )?,
        };
        gate_rows(rows)
    }

    fn gates_for(&mut self, user: &str, roles: &[String]) -> StoreResult<Vec<GateRow>> {
        let entries = decider_entries(user, roles);
        let named = (1..=entries.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let conn = self.conn()?;
        // Through `gate_deciders`' key: the gates that name the user or a role of theirs,
        // without reading any other gate's row.
        let sql = conn.dialect().render(&format!(
            "SELECT {GATE_COLUMNS} FROM gates WHERE (run, name) IN
               (SELECT run, name FROM gate_deciders WHERE decider IN ({named}))
             ORDER BY opened_at, run, name"
        ));
        let params: Vec<Param<'_>> = entries.iter().map(Param::from).collect();
        gate_rows(conn.query(READING, &sql, &params)?)
    }

    fn gate(&mut self, run: &str, name: &str) -> StoreResult<Option<GateRow>> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            concat!(
                "SELECT ",
                gate_columns!(),
                " FROM gates WHERE run = $1 AND name = $2"
            )
        );
        conn.query_opt(READING, sql, params![run, name])?
            .map(|row| raw_gate(row)?.finish())
            .transpose()
    }

    fn gate_counts(&mut self) -> StoreResult<GateCounts> {
        let conn = self.conn()?;
        let mut counts = GateCounts::default();
        for (kind, count) in super::counts::gates(conn)? {
            match kind.as_str() {
                "approval" => counts.approvals = count,
                "input" => counts.inputs = count,
                _ => continue,
            }
        }
        // The first entry of the index `gates_by_opened`.
        counts.oldest_opened_at = conn
            .value::<Option<Millis>>(
                "finding the oldest open gate",
                "SELECT MIN(opened_at) FROM gates",
                &[],
            )?
            .flatten();
        Ok(counts)
    }

    fn index_gate(&mut self, row: &GateRow) -> StoreResult<bool> {
        let doing = "indexing an open gate";
        self.conn()?.transaction(doing, |conn| {
            let sql = sql!(
                conn.dialect(),
                "SELECT status, waiting_on FROM runs WHERE id = $1 {FOR_UPDATE}"
            );
            let waiting = match conn.query_opt(doing, sql, params![&row.run])? {
                Some(mut r) => Some((r.get::<String>(0)?, r.get::<Option<String>>(1)?)),
                None => None,
            };
            let expected = WaitingOn::gate(row.kind, &row.name).to_string();
            let still_there = waiting.is_some_and(|(status, waiting_on)| {
                status == RunStatus::Waiting.as_str() && waiting_on.as_deref() == Some(&expected)
            });
            if !still_there {
                return Ok(false);
            }
            Ok(put_gate(conn, row, OnConflict::Keep)? > 0)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// A row for tests of both stores.
    pub(crate) fn row(run: &str, name: &str, opened_at: Millis) -> GateRow {
        GateRow {
            run: run.into(),
            name: name.into(),
            kind: GateKind::Approval,
            workflow: "w".into(),
            version: "v1".into(),
            started_by: "ines".into(),
            opened_at,
            approvers: "role finance".into(),
            approvers_json: serde_json::json!({ "kind": "role", "name": "finance" }),
            escalate_to: Some("role ops".into()),
            escalate_json: Some(serde_json::json!({ "kind": "role", "name": "ops" })),
            escalate_at: Some(opened_at + 10),
            escalated: false,
            deadline: Some(opened_at + 20),
            outer_deadline: None,
            quorum: 2,
            allow_self: false,
            prompt: Some("Pay?".into()),
            context: serde_json::json!({ "amount": 5 }),
            shown_sha256: "abc".into(),
            input_schema: None,
            context_schema: None,
            timeout_caught: true,
            options: serde_json::json!({ "quorum": 2 }),
            approvals: vec![],
            remind_every: None,
            reminded: 0,
        }
    }

    #[test]
    fn a_row_survives_its_text_encoding() {
        let mut gate = row("r1", "g", 5);
        gate.approvals.push(Approval {
            by: "ana".into(),
            at: 7,
            comment: "ok".into(),
        });
        gate.kind = GateKind::Input;
        gate.input_schema = Some(serde_json::json!({ "type": "integer" }));
        gate.context_schema = Some(serde_json::json!({ "type": "object", "x-order": ["b", "a"] }));
        assert_eq!(RawGate::of(&gate).finish().unwrap(), gate);
        let mut raw = RawGate::of(&gate);
        raw.context = "{not json".into();
        let error = raw.finish().unwrap_err().to_string();
        assert!(
            error.contains("run r1, gate `g`, column context"),
            "{error}"
        );
    }

    #[test]
    fn deciders_name_the_approvers_and_the_escalation_once_it_fired() {
        let mut gate = row("r1", "g", 5);
        gate.approvers_json = serde_json::json!({ "kind": "any", "of": [
            { "kind": "role", "name": "fin_ance" },
            { "kind": "any", "of": [{ "kind": "user", "name": "a\"b%" }] },
        ] });
        assert_eq!(deciders(&gate), ["role:fin_ance", "user:a\"b%"]);
        gate.escalated = true;
        assert_eq!(deciders(&gate), ["role:fin_ance", "user:a\"b%", "role:ops"]);
        gate.escalate_json = Some(serde_json::json!({ "kind": "role", "name": "fin_ance" }));
        assert_eq!(
            deciders(&gate),
            ["role:fin_ance", "user:a\"b%"],
            "each once"
        );
        let entries = decider_entries("a\"b%", &["fin_ance".into()]);
        assert_eq!(entries, ["user:a\"b%", "role:fin_ance"]);
    }

    #[test]
    fn a_commit_keeps_only_the_gate_its_run_waits_at() {
        let open = GateChange::Open(row("r1", "g", 5));
        let (keep, write) = plan("r1", Some("approval g"), Some(&open)).unwrap();
        assert_eq!(
            (keep.as_deref(), write.map(|r| r.name.as_str())),
            (Some("g"), Some("g"))
        );
        assert_eq!(plan("r1", Some("timer"), None).unwrap().0, None);
        assert_eq!(plan("r1", None, None).unwrap().0, None);
        for (waiting, change) in [
            (Some("approval other"), open.clone()),
            (Some("timer"), open.clone()),
            (Some("approval g"), GateChange::Open(row("r2", "g", 5))),
            (Some("approval g"), GateChange::Close("g".into())),
        ] {
            assert!(
                plan("r1", waiting, Some(&change)).is_err(),
                "{waiting:?} {change:?}"
            );
        }
        let close = GateChange::Close("g".into());
        assert_eq!(plan("r1", None, Some(&close)).unwrap(), (None, None));
    }
}
