//! The signals sent to runs, in SQL written once for both stores (spec/runtime.md,
//! "Signals").
//!
//! In: a signal to deliver (run, name, value as JSON, who sent it, the `signal_received` event
//! that records it), or a run and a signal name to read. Out: where the signal went — queued
//! with its number, or refused because the run has finished — and the oldest signal of a name
//! the run has not taken yet.
//!
//! A signal is queued in the run's `signals` rows from the moment it is sent, whatever the run
//! is doing, so none is lost; the run takes them in the order sent, one per `await signal`.
//! The send and the commit that makes a run wait for a signal both hold the run's row lock,
//! so one of them sees the other: a signal sent while the run waits for it sets the run's
//! wake-up time to now, and a run that starts to wait when one is queued already is woken by
//! its own commit (`wake_if_queued`).

use super::sql::{Conn, SqlStore, params, sql};
use super::{Millis, NewEvent, RunStatus, Signals, StoreError, StoreResult, events};

/// A signal a run received and has not taken yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalRecord {
    /// 1, 2, … per run, in the order received.
    pub number: i64,
    pub name: String,
    /// The value, as JSON text validated against the signal's type.
    pub value: String,
    pub sender: String,
    pub sent_at: Millis,
}

/// What became of a signal sent to a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Queued with this number; `woke`: the run was waiting for a signal of this name.
    Queued { number: i64, woke: bool },
    /// The run has finished: nothing was recorded.
    Finished(RunStatus),
}

/// In a commit's transaction, under the run's lock: the run that now waits for signal `name`
/// is due at once when one is queued already (it arrived while the run was elsewhere).
pub(super) fn wake_if_queued(
    conn: &mut dyn Conn,
    run: &str,
    name: &str,
    now: Millis,
) -> StoreResult<()> {
    let sql = sql!(
        conn.dialect(),
        "UPDATE runs SET wake_at = $3
         WHERE id = $1 AND EXISTS (SELECT 1 FROM signals
                                   WHERE run = $1 AND name = $2 AND taken = 0)",
    );
    conn.execute(
        "waking a run for a queued signal",
        sql,
        params![run, name, now],
    )?;
    Ok(())
}

/// In a commit's transaction: signal `number` of `run` is taken by the step committed.
pub(super) fn take(conn: &mut dyn Conn, run: &str, number: i64) -> StoreResult<()> {
    let sql = sql!(
        conn.dialect(),
        "UPDATE signals SET taken = 1 WHERE run = $1 AND number = $2 AND taken = 0"
    );
    if conn.execute("taking a signal", sql, params![run, number])? == 0 {
        return Err(StoreError::Database(format!(
            "run {run} takes signal #{number}, which it has not received or has taken already"
        )));
    }
    Ok(())
}

/// A `signals` row, columns `number, name, value, sender, sent_at`.
fn signal_record(mut row: super::sql::Row) -> StoreResult<SignalRecord> {
    Ok(SignalRecord {
        number: row.get(0)?,
        name: row.get(1)?,
        value: row.get(2)?,
        sender: row.get(3)?,
        sent_at: row.get(4)?,
    })
}

impl<S: SqlStore + ?Sized> Signals for S {
    fn send_signal(
        &mut self,
        run: &str,
        name: &str,
        value: &str,
        sender: &str,
        event: &NewEvent,
    ) -> StoreResult<Delivery> {
        let doing = "sending a signal";
        self.conn()?.transaction(doing, |conn| {
            let sql = sql!(
                conn.dialect(),
                "SELECT status, waiting_on FROM runs WHERE id = $1 {FOR_UPDATE}"
            );
            let Some(mut row) = conn.query_opt(doing, sql, params![run])? else {
                return Err(StoreError::NoSuchRun(run.to_string()));
            };
            let (status, waiting_on): (String, Option<String>) = (row.get(0)?, row.get(1)?);
            if let Some(status) = RunStatus::parse(&status).filter(|s| s.is_final()) {
                return Ok(Delivery::Finished(status));
            }
            let sql = sql!(
                conn.dialect(),
                "SELECT COALESCE(MAX(number), 0) FROM signals WHERE run = $1"
            );
            let number = conn.value::<i64>(doing, sql, params![run])?.unwrap_or(0) + 1;
            let sql = sql!(
                conn.dialect(),
                "INSERT INTO signals (run, number, name, value, sender, sent_at, taken)
                 VALUES ($1, $2, $3, $4, $5, $6, 0)",
            );
            conn.execute(
                doing,
                sql,
                params![run, number, name, value, sender, event.at],
            )?;
            let woke = status == RunStatus::Waiting.as_str()
                && waiting_on
                    .as_deref()
                    .and_then(crate::history::WaitingOn::parse)
                    .is_some_and(|w| w.signals().iter().any(|s| s == name));
            if woke {
                let sql = sql!(conn.dialect(), "UPDATE runs SET wake_at = $2 WHERE id = $1");
                conn.execute(doing, sql, params![run, event.at])?;
            }
            // The event says which number the signal got.
            let mut recorded = event.clone();
            if let Ok(serde_json::Value::Object(mut data)) = serde_json::from_str(&event.data) {
                data.insert("number".into(), number.into());
                recorded.data = serde_json::Value::Object(data).to_string();
            }
            let seal = events::seal_of_row(conn, run)?;
            events::append(conn, run, std::slice::from_ref(&recorded), seal.as_deref())?;
            Ok(Delivery::Queued { number, woke })
        })
    }

    fn next_signal(&mut self, run: &str, name: &str) -> StoreResult<Option<SignalRecord>> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "SELECT number, name, value, sender, sent_at FROM signals
             WHERE run = $1 AND name = $2 AND taken = 0
             ORDER BY number LIMIT 1",
        );
        conn.query_opt("reading a run's next signal", sql, params![run, name])?
            .map(signal_record)
            .transpose()
    }

    fn queued_signals(&mut self, run: &str) -> StoreResult<Vec<SignalRecord>> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "SELECT number, name, value, sender, sent_at FROM signals
             WHERE run = $1 AND taken = 0 ORDER BY number",
        );
        conn.query("reading a run's queued signals", sql, params![run])?
            .into_iter()
            .map(signal_record)
            .collect()
    }
}
