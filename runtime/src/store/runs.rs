//! Runs and their claims in SQL, written once for both stores: creating a run, claiming,
//! releasing and renewing, loading, committing steps (events linked into the audit trail,
//! the checkpoint upserted, the gate index brought in line, the status, the notification
//! outbox's rows written and deleted), cancelling, reads.
//!
//! In: the [`Runs`] calls. Out: rows of `runs` and `checkpoints`, changed in one transaction
//! per call. Every commit checks the claim under the run's row lock (PostgreSQL) or the
//! database's write lock (SQLite), so a process whose lease ran out cannot overwrite the one
//! that took over.

use super::events::{self, lock_run};
use super::sql::{Conn, Row, SqlStore, params, sql};
use super::{
    Checkpoint, EventKind, Millis, NewEvent, NewRun, RunRecord, RunStatus, Runs, StepCommit,
    StoreError, StoreResult,
};

/// The columns of a `runs` row that [`run_record`] reads, in its order.
macro_rules! run_columns {
    () => {
        "id, workflow, version, status, input, output, error, waiting_on, wake_at, \
         started_by, parent, created_at, updated_at, attention"
    };
}

/// A `runs` row, the [`run_columns`] (the first 14 of `row`).
fn run_record(row: &mut Row) -> StoreResult<RunRecord> {
    let id: String = row.get(0)?;
    let status: String = row.get(3)?;
    let status = RunStatus::parse(&status).ok_or_else(|| {
        StoreError::Database(format!(
            "run {id} has an unknown status `{status}` (written by a newer flowrt?)"
        ))
    })?;
    Ok(RunRecord {
        workflow: row.get(1)?,
        version: row.get(2)?,
        status,
        input: row.get(4)?,
        output: row.get(5)?,
        error: row.get(6)?,
        waiting_on: row.get(7)?,
        wake_at: row.get(8)?,
        started_by: row.get(9)?,
        parent: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
        attention: row.get(13)?,
        id,
    })
}

fn upsert_checkpoint(
    conn: &mut dyn Conn,
    run: &str,
    checkpoint: &Checkpoint,
    now: Millis,
) -> StoreResult<()> {
    let sql = sql!(
        conn.dialect(),
        "INSERT INTO checkpoints (run, format_version, program_hash, state, updated_at, calls)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (run) DO UPDATE SET
            format_version = excluded.format_version,
            program_hash = excluded.program_hash,
            state = excluded.state,
            updated_at = excluded.updated_at,
            calls = COALESCE(excluded.calls, checkpoints.calls)",
    );
    conn.execute(
        "writing a checkpoint",
        sql,
        params![
            run,
            checkpoint.format_version,
            &checkpoint.program_hash,
            &checkpoint.state,
            now,
            &checkpoint.calls
        ],
    )?;
    Ok(())
}

/// Whether the query (rendered) finds a row for `key`.
fn exists(conn: &mut dyn Conn, doing: &str, sql: &str, key: &str) -> StoreResult<bool> {
    Ok(conn.query_opt(doing, sql, params![key])?.is_some())
}

fn run_exists(conn: &mut dyn Conn, doing: &str, run: &str) -> StoreResult<bool> {
    let sql = sql!(conn.dialect(), "SELECT 1 FROM runs WHERE id = $1");
    exists(conn, doing, sql, run)
}

/// One step of a commit, under the run's lock: the claim checked, then everything written.
fn commit_step(conn: &mut dyn Conn, step: &StepCommit, doing: &str) -> StoreResult<()> {
    let Some(locked) = events::lock_for_commit(conn, &step.run, doing)? else {
        return Err(StoreError::NoSuchRun(step.run.clone()));
    };
    if locked.owner.as_deref() != Some(step.owner.as_str()) {
        return Err(StoreError::NotOwner {
            run: step.run.clone(),
        });
    }
    if let Some(checkpoint) = &step.checkpoint {
        upsert_checkpoint(conn, &step.run, checkpoint, step.now)?;
    }
    if !step.events.is_empty() {
        let seal = crate::audit::seal(step.status, step.output.as_deref(), step.error.as_deref());
        events::append_after(conn, &step.run, locked.head, &step.events, seal.as_deref())?;
    }
    let was_at_gate = locked
        .waiting_on
        .as_deref()
        .and_then(crate::history::WaitingOn::parse)
        .is_some_and(|w| w.as_gate().is_some());
    let sql = sql!(
        conn.dialect(),
        "UPDATE runs SET status = $2, output = $3, error = $4, waiting_on = $5,
                         wake_at = $6, updated_at = $7
         WHERE id = $1",
    );
    conn.execute(
        doing,
        sql,
        params![
            &step.run,
            step.status.as_str(),
            &step.output,
            &step.error,
            &step.waiting_on,
            step.wake_at,
            step.now,
        ],
    )?;
    if let Some(reason) = crate::history::attention_of(&step.events) {
        let sql = sql!(
            conn.dialect(),
            "UPDATE runs SET attention = CASE WHEN attention IS NULL THEN $2
                                              ELSE attention || '; ' || $2 END
             WHERE id = $1",
        );
        conn.execute(doing, sql, params![&step.run, &reason])?;
    }
    super::gate_index::apply(conn, step, was_at_gate)?;
    if let Some(number) = step.takes_signal {
        super::signals::take(conn, &step.run, number)?;
    }
    if let Some(waiting) = step
        .waiting_on
        .as_deref()
        .and_then(crate::history::WaitingOn::parse)
    {
        for name in waiting.signals() {
            super::signals::wake_if_queued(conn, &step.run, name, step.now)?;
        }
    }
    super::outbox::apply(conn, &step.outbox)
}

impl<S: SqlStore + ?Sized> Runs for S {
    fn create_run(
        &mut self,
        run: &NewRun,
        checkpoint: &Checkpoint,
        events: &[NewEvent],
        owner: Option<&str>,
        lease_until: Millis,
        now: Millis,
    ) -> StoreResult<()> {
        let doing = "creating a run";
        self.conn()?.transaction(doing, |conn| {
            let deployed = sql!(conn.dialect(), "SELECT 1 FROM versions WHERE hash = $1");
            if !exists(conn, doing, deployed, &run.version)? {
                return Err(StoreError::Database(format!(
                    "cannot create run {}: version {} is not deployed",
                    run.id, run.version
                )));
            }
            if let Some(parent) = &run.parent
                && lock_run(conn, parent, doing)?.is_none()
            {
                return Err(StoreError::NoSuchRun(parent.clone()));
            }
            let sql = sql!(
                conn.dialect(),
                "INSERT INTO runs (id, workflow, version, status, input, started_by, parent,
                                   created_at, updated_at, owner, lease_until)
                 VALUES ($1, $2, $3, 'runnable', $4, $5, $6, $7, $7, $8, $9)
                 ON CONFLICT (id) DO NOTHING",
            );
            let inserted = conn.execute(
                doing,
                sql,
                params![
                    &run.id,
                    &run.workflow,
                    &run.version,
                    &run.input,
                    &run.started_by,
                    &run.parent,
                    now,
                    owner,
                    owner.map(|_| lease_until),
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::Database(format!(
                    "cannot create run {}: a run with that id exists",
                    run.id
                )));
            }
            upsert_checkpoint(conn, &run.id, checkpoint, now)?;
            // Even with no events: the run is numbered when it is created.
            events::append(conn, &run.id, events, None)
        })
    }

    fn claim(
        &mut self,
        run: &str,
        owner: &str,
        lease_until: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        let doing = "claiming a run";
        let conn = self.conn()?;
        // One statement: atomic on its own.
        let sql = sql!(
            conn.dialect(),
            "UPDATE runs SET owner = $2, lease_until = $3
             WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')
               AND (owner IS NULL OR owner = $2 OR lease_until IS NULL OR lease_until < $4)",
        );
        let changed = conn.execute(doing, sql, params![run, owner, lease_until, now])?;
        if changed == 0 && !run_exists(conn, doing, run)? {
            return Err(StoreError::NoSuchRun(run.to_string()));
        }
        Ok(changed > 0)
    }

    fn claim_ready(
        &mut self,
        owner: &str,
        lease_until: Millis,
        now: Millis,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.conn()?;
        // One statement; on PostgreSQL, rows another worker is claiming right now are skipped,
        // not waited for. Each of the three kinds of ready run is found through an index
        // (`runs_in_call`, `runs_by_status_wake`), so that the runs waiting for people or
        // later timers, however many, are not read: runnable; waiting on a timer that is due;
        // in a tool call whose driver's lease ran out.
        let sql = sql!(
            conn.dialect(),
            "UPDATE runs SET owner = $1, lease_until = $3
             WHERE id IN (
                SELECT id FROM runs
                WHERE (status = 'runnable'
                       AND (owner IS NULL OR owner = $1 OR lease_until IS NULL OR lease_until < $2))
                   OR (status = 'waiting' AND wake_at <= $2
                       AND (owner IS NULL OR owner = $1 OR lease_until IS NULL OR lease_until < $2))
                   OR (status = 'waiting' AND substr(waiting_on, 1, 5) = 'tool '
                       AND (owner IS NULL OR lease_until IS NULL OR lease_until < $2))
                ORDER BY created_at, {ROW}
                LIMIT $4
                {SKIP_LOCKED})
             RETURNING id, created_at, {ROW}",
        );
        let rows = conn.query(
            "claiming ready runs",
            sql,
            params![owner, now, lease_until, limit],
        )?;
        let mut claimed = rows
            .into_iter()
            .map(|mut r| Ok((r.get::<i64>(1)?, r.get::<i64>(2)?, r.get::<String>(0)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        // Oldest first: the order of RETURNING is the database's.
        claimed.sort();
        Ok(claimed.into_iter().map(|(_, _, id)| id).collect())
    }

    fn release(&mut self, run: &str, owner: &str) -> StoreResult<()> {
        let doing = "releasing a run";
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "UPDATE runs SET owner = NULL, lease_until = NULL WHERE id = $1 AND owner = $2"
        );
        let changed = conn.execute(doing, sql, params![run, owner])?;
        if changed == 0 && !run_exists(conn, doing, run)? {
            return Err(StoreError::NoSuchRun(run.to_string()));
        }
        Ok(())
    }

    fn renew_claims(&mut self, owner: &str, lease_until: Millis) -> StoreResult<u64> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "UPDATE runs SET lease_until = $2
             WHERE owner = $1 AND status NOT IN ('completed', 'failed', 'cancelled')
               AND (lease_until IS NULL OR lease_until < $2)",
        );
        conn.execute("renewing claims", sql, params![owner, lease_until])
    }

    fn load(&mut self, run: &str) -> StoreResult<Option<(RunRecord, Checkpoint)>> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "SELECT r.id, r.workflow, r.version, r.status, r.input, r.output, r.error,
                    r.waiting_on, r.wake_at, r.started_by, r.parent, r.created_at,
                    r.updated_at, r.attention, c.format_version, c.program_hash, c.state,
                    c.calls
             FROM runs r LEFT JOIN checkpoints c ON c.run = r.id
             WHERE r.id = $1",
        );
        let Some(mut row) = conn.query_opt("loading a run", sql, params![run])? else {
            return Ok(None);
        };
        let record = run_record(&mut row)?;
        let format_version: Option<i64> = row.get(14)?;
        let program_hash: Option<String> = row.get(15)?;
        let state: Option<Vec<u8>> = row.get(16)?;
        let calls: Option<String> = row.get(17)?;
        match (format_version, program_hash, state) {
            (Some(format_version), Some(program_hash), Some(state)) => Ok(Some((
                record,
                Checkpoint {
                    format_version,
                    program_hash,
                    state,
                    calls,
                },
            ))),
            _ => Err(StoreError::Database(format!(
                "run {} has no checkpoint",
                record.id
            ))),
        }
    }

    fn commit(&mut self, commits: &[StepCommit]) -> StoreResult<()> {
        let doing = "committing steps";
        // A failure anywhere rolls everything back.
        self.conn()?.transaction(doing, |conn| {
            commits
                .iter()
                .try_for_each(|step| commit_step(conn, step, doing))
        })
    }

    fn cancel(&mut self, run: &str, event: &NewEvent) -> StoreResult<bool> {
        let doing = "cancelling a run";
        if event.kind != EventKind::RunCancelled {
            return Err(StoreError::Database(format!(
                "cancelling run {run} records a `run_cancelled` event, not `{}`",
                event.kind
            )));
        }
        self.conn()?.transaction(doing, |conn| {
            let sql = sql!(
                conn.dialect(),
                "SELECT status FROM runs WHERE id = $1 {FOR_UPDATE}"
            );
            let Some(status) = conn.value::<String>(doing, sql, params![run])? else {
                return Err(StoreError::NoSuchRun(run.to_string()));
            };
            // An unknown status (from a newer flowrt) is treated as not final.
            if RunStatus::parse(&status).is_some_and(RunStatus::is_final) {
                return Ok(false);
            }
            let sql = sql!(
                conn.dialect(),
                "UPDATE runs SET status = 'cancelled', waiting_on = NULL, wake_at = NULL,
                                 updated_at = $2, owner = NULL, lease_until = NULL
                 WHERE id = $1",
            );
            conn.execute(doing, sql, params![run, event.at])?;
            super::gate_index::close_all(conn, run)?;
            let seal = events::seal_of_row(conn, run)?;
            events::append(conn, run, std::slice::from_ref(event), seal.as_deref())?;
            Ok(true)
        })
    }

    fn run(&mut self, run: &str) -> StoreResult<Option<RunRecord>> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1"),
        );
        conn.query_opt("reading a run", sql, params![run])?
            .map(|mut row| run_record(&mut row))
            .transpose()
    }

    fn children(&mut self, parent: &str) -> StoreResult<Vec<RunRecord>> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs WHERE parent = $1 ORDER BY id"
            ),
        );
        conn.query("reading a run's child runs", sql, params![parent])?
            .into_iter()
            .map(|mut row| run_record(&mut row))
            .collect()
    }

    fn runs(&mut self, status: Option<RunStatus>) -> StoreResult<Vec<RunRecord>> {
        let conn = self.conn()?;
        let dialect = conn.dialect();
        let rows = match status {
            Some(status) => conn.query(
                "listing runs",
                sql!(
                    dialect,
                    concat!(
                        "SELECT ",
                        run_columns!(),
                        " FROM runs WHERE status = $1 ORDER BY created_at DESC, {ROW} DESC"
                    ),
                ),
                params![status.as_str()],
            )?,
            None => conn.query(
                "listing runs",
                sql!(
                    dialect,
                    concat!(
                        "SELECT ",
                        run_columns!(),
                        " FROM runs ORDER BY created_at DESC, {ROW} DESC"
                    ),
                ),
                &[],
            )?,
        };
        rows.into_iter()
            .map(|mut row| run_record(&mut row))
            .collect()
    }

    fn needing_attention(&mut self) -> StoreResult<Vec<RunRecord>> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            concat!(
                "SELECT ",
                run_columns!(),
                " FROM runs WHERE attention IS NOT NULL ORDER BY created_at DESC, {ROW} DESC"
            ),
        );
        conn.query("listing the runs that need attention", sql, &[])?
            .into_iter()
            .map(|mut row| run_record(&mut row))
            .collect()
    }

    fn count_needing_attention(&mut self) -> StoreResult<i64> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "SELECT COUNT(*) FROM runs WHERE attention IS NOT NULL"
        );
        Ok(conn
            .value("counting the runs that need attention", sql, &[])?
            .unwrap_or(0))
    }

    fn resolve_attention(&mut self, run: &str, event: &NewEvent) -> StoreResult<bool> {
        let doing = "recording that a run's attention was handled";
        self.conn()?.transaction(doing, |conn| {
            if events::lock_run(conn, run, doing)?.is_none() {
                return Err(StoreError::NoSuchRun(run.to_string()));
            }
            let sql = sql!(
                conn.dialect(),
                "UPDATE runs SET attention = NULL WHERE id = $1 AND attention IS NOT NULL"
            );
            if conn.execute(doing, sql, params![run])? == 0 {
                return Ok(false);
            }
            let seal = events::seal_of_row(conn, run)?;
            events::append(conn, run, std::slice::from_ref(event), seal.as_deref())?;
            Ok(true)
        })
    }

    fn count_runs(&mut self) -> StoreResult<Vec<(String, RunStatus, i64)>> {
        super::counts::runs(self.conn()?)
    }

    fn next_wake(&mut self) -> StoreResult<Option<Millis>> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "SELECT MIN(wake_at) FROM runs WHERE status = 'waiting' AND wake_at IS NOT NULL"
        );
        Ok(conn
            .value::<Option<Millis>>("finding the next timer", sql, &[])?
            .flatten())
    }

    fn trace_of(&mut self, run: &str) -> StoreResult<Option<String>> {
        let conn = self.conn()?;
        let sql = sql!(conn.dialect(), "SELECT trace FROM runs WHERE id = $1");
        Ok(conn
            .value::<Option<String>>("reading a run's trace context", sql, params![run])?
            .flatten())
    }

    fn set_trace(&mut self, run: &str, trace: &str) -> StoreResult<()> {
        let conn = self.conn()?;
        let sql = sql!(conn.dialect(), "UPDATE runs SET trace = $2 WHERE id = $1");
        conn.execute("writing a run's trace context", sql, params![run, trace])?;
        Ok(())
    }
}
