//! The notification outbox: one row per (notification, hook) still to be delivered (table
//! `outbox`), so that a notification survives the process that committed its gate.
//!
//! In: the [`OutboxChange`] a [`super::StepCommit`] carries — the [`Notification`] of a gate
//! that opened or escalated, written in the commit's own transaction (a notification exists
//! exactly when its `gate_opened` / `gate_escalated` event does), and the rows a recorded
//! delivery is done with, deleted in the transaction of the `notified` / `notify_failed`
//! event. Out: [`OutboxRow`]s claimed by whoever drains the outbox (`flowrt worker`,
//! `flowrt serve`, and the one-shot commands for their own notifications), one attempt at a
//! time: a claim (owner and lease) keeps two processes from sending a row at once, and a
//! dead process's rows are taken over once its lease ran out. The engine decides what an
//! attempt's outcome does to the row (see `announce.rs`); this module holds the row, its text
//! encoding, and its SQL, written once over the dialect layer (`sql.rs`): the table is
//! migration 11 of `schema.rs`, [`apply`] runs inside the shared commit of `runs.rs`, and
//! the [`Outbox`] calls are implemented once for both stores.

use super::sql::{Conn, Dialect, Row, SqlStore, params, sql};
use super::{EventKind, Millis, Outbox, StoreError, StoreResult};

/// A notification to deliver to the hooks configured when its gate opened or escalated.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// Stable for the notification: the same in every delivery to every hook, re-deliveries
    /// included (the message carries it as `id`, for receivers to drop duplicates).
    pub id: String,
    pub run: String,
    pub gate: String,
    /// When the gate opened: a delivery is for that opening only (a gate reopened in a loop
    /// is a new opening).
    pub opened_at: Millis,
    /// [`EventKind::GateOpened`] or [`EventKind::GateEscalated`].
    pub what: EventKind,
    /// What every hook is sent (secrets redacted).
    pub message: serde_json::Value,
    /// The hooks, as `flow.toml` describes them (`webhook URL`, `command TEXT`): one row each.
    pub hooks: Vec<String>,
    pub created_at: Millis,
}

/// One row: a notification for one hook.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRow {
    pub id: String,
    /// The hook's place in `flow.toml` when the notification was made.
    pub slot: i64,
    pub hook: String,
    pub run: String,
    pub gate: String,
    pub opened_at: Millis,
    pub what: EventKind,
    pub message: serde_json::Value,
    pub created_at: Millis,
    /// Attempts started, the one of the current claim included.
    pub attempts: i64,
    pub next_attempt_at: Millis,
    pub owner: Option<String>,
    pub lease_until: Option<Millis>,
}

impl OutboxRow {
    pub fn key(&self) -> OutboxKey {
        OutboxKey {
            id: self.id.clone(),
            slot: self.slot,
        }
    }
}

/// Which row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxKey {
    pub id: String,
    pub slot: i64,
}

/// What a commit does to the outbox.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutboxChange {
    /// A notification to write (one row per hook).
    pub add: Option<Notification>,
    /// Rows whose delivery the commit records: deleted.
    pub done: Vec<OutboxKey>,
}

impl OutboxChange {
    fn is_empty(&self) -> bool {
        self.add.is_none() && self.done.is_empty()
    }
}

/// The columns of `outbox`, in the order [`outbox_row`] reads them, as a literal for
/// `concat!`.
macro_rules! outbox_columns {
    () => {
        "id, slot, hook, run, gate, opened_at, what, message, created_at, attempts, \
         next_attempt_at, owner, lease_until"
    };
}

/// Which rows may be claimed at `$1`: due, unclaimed or with a lapsed claim, and of
/// notification `$2` when it is not null.
macro_rules! claimable {
    () => {
        "next_attempt_at <= $1 AND (owner IS NULL OR lease_until <= $1)
         AND (CAST($2 AS TEXT) IS NULL OR id = $2)"
    };
}

/// A row read back (columns in the order of `outbox_columns!`), checked: a row edited by
/// hand is an error naming it.
fn outbox_row(mut row: Row) -> StoreResult<OutboxRow> {
    let id: String = row.get(0)?;
    let slot: i64 = row.get(1)?;
    let hook: String = row.get(2)?;
    let run: String = row.get(3)?;
    let corrupt = |column: &str, why: &dyn std::fmt::Display| {
        StoreError::Database(format!(
            "the outbox row {id} (hook {slot}) of run {run}, column {column}: {why}"
        ))
    };
    let gate: String = row.get(4)?;
    let opened_at: Millis = row.get(5)?;
    let what: String = row.get(6)?;
    let what = EventKind::parse(&what)
        .filter(|k| {
            matches!(
                k,
                EventKind::GateOpened | EventKind::GateEscalated | EventKind::GateReminded
            )
        })
        .ok_or_else(|| corrupt("what", &format!("`{what}` is not a gate event")))?;
    let message: String = row.get(7)?;
    let message = serde_json::from_str(&message).map_err(|e| corrupt("message", &e))?;
    Ok(OutboxRow {
        what,
        message,
        gate,
        opened_at,
        created_at: row.get(8)?,
        attempts: row.get(9)?,
        next_attempt_at: row.get(10)?,
        owner: row.get(11)?,
        lease_until: row.get(12)?,
        id,
        slot,
        hook,
        run,
    })
}

fn outbox_rows(rows: Vec<Row>) -> StoreResult<Vec<OutboxRow>> {
    rows.into_iter().map(outbox_row).collect()
}

/// The notification's rows, as written: unclaimed, no attempt yet, due at once.
fn rows_of(n: &Notification) -> impl Iterator<Item = OutboxRow> + '_ {
    n.hooks.iter().enumerate().map(|(slot, hook)| OutboxRow {
        id: n.id.clone(),
        slot: slot as i64,
        hook: hook.clone(),
        run: n.run.clone(),
        gate: n.gate.clone(),
        opened_at: n.opened_at,
        what: n.what,
        message: n.message.clone(),
        created_at: n.created_at,
        attempts: 0,
        next_attempt_at: n.created_at,
        owner: None,
        lease_until: None,
    })
}

/// Writes a row as it is, its claim included.
fn insert(conn: &mut dyn Conn, doing: &str, row: &OutboxRow) -> StoreResult<()> {
    let sql = sql!(
        conn.dialect(),
        concat!(
            "INSERT INTO outbox (",
            outbox_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )
    );
    let message = row.message.to_string();
    conn.execute(
        doing,
        sql,
        params![
            &row.id,
            row.slot,
            &row.hook,
            &row.run,
            &row.gate,
            row.opened_at,
            row.what.as_str(),
            &message,
            row.created_at,
            row.attempts,
            row.next_attempt_at,
            &row.owner,
            row.lease_until,
        ],
    )?;
    Ok(())
}

fn delete(conn: &mut dyn Conn, doing: &str, key: &OutboxKey) -> StoreResult<u64> {
    let sql = sql!(
        conn.dialect(),
        "DELETE FROM outbox WHERE id = $1 AND slot = $2"
    );
    conn.execute(doing, sql, params![&key.id, key.slot])
}

/// Applies a commit's change, inside the commit's transaction (see `runs.rs`).
pub(crate) fn apply(conn: &mut dyn Conn, change: &OutboxChange) -> StoreResult<()> {
    if change.is_empty() {
        return Ok(());
    }
    let doing = "writing the outbox";
    if let Some(notification) = &change.add {
        for row in rows_of(notification) {
            insert(conn, doing, &row)?;
        }
    }
    for key in &change.done {
        delete(conn, doing, key)?;
    }
    Ok(())
}

/// Writes a row read from another store, unclaimed (`flowrt migrate-store`: a row that was
/// in an attempt is sent again by a worker on the target).
pub(crate) fn copy(conn: &mut dyn Conn, row: &OutboxRow) -> StoreResult<()> {
    let unclaimed = OutboxRow {
        owner: None,
        lease_until: None,
        ..row.clone()
    };
    insert(conn, "writing the outbox", &unclaimed)
}

/// Every row (of notification `only`, when given), oldest first.
pub(crate) fn list(conn: &mut dyn Conn, only: Option<&str>) -> StoreResult<Vec<OutboxRow>> {
    let sql = sql!(
        conn.dialect(),
        concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox WHERE (CAST($1 AS TEXT) IS NULL OR id = $1)
             ORDER BY created_at, id, slot"
        )
    );
    outbox_rows(conn.query("reading the outbox", sql, params![only])?)
}

impl<S: SqlStore + ?Sized> Outbox for S {
    fn claim_notifications(
        &mut self,
        owner: &str,
        lease_until: Millis,
        now: Millis,
        limit: usize,
        only: Option<&str>,
    ) -> StoreResult<Vec<OutboxRow>> {
        let doing = "claiming notifications";
        let conn = self.conn()?;
        let dialect = conn.dialect();
        // On SQLite a cheap read first, so that an empty or idle outbox never takes the
        // database's write lock; PostgreSQL locks rows, not the database.
        if dialect == Dialect::Sqlite {
            let sql = sql!(
                dialect,
                concat!("SELECT 1 FROM outbox WHERE ", claimable!(), " LIMIT 1")
            );
            if conn.query_opt(doing, sql, params![now, only])?.is_none() {
                return Ok(Vec::new());
            }
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // One statement, so one transaction; on PostgreSQL rows another worker is claiming
        // right now are skipped, not waited for, so two workers never take the same row.
        let sql = sql!(
            dialect,
            concat!(
                "UPDATE outbox SET owner = $3, lease_until = $4, attempts = attempts + 1
                 WHERE (id, slot) IN (SELECT id, slot FROM outbox WHERE ",
                claimable!(),
                " ORDER BY next_attempt_at, created_at, id, slot LIMIT $5 {SKIP_LOCKED})
                 RETURNING ",
                outbox_columns!()
            )
        );
        let rows = conn.query(doing, sql, params![now, only, owner, lease_until, limit])?;
        let mut claimed = outbox_rows(rows)?;
        // Oldest due first: the order of RETURNING is the database's.
        claimed.sort_by(|a, b| {
            (a.next_attempt_at, a.created_at, &a.id, a.slot).cmp(&(
                b.next_attempt_at,
                b.created_at,
                &b.id,
                b.slot,
            ))
        });
        Ok(claimed)
    }

    fn retry_notification(&mut self, key: &OutboxKey, owner: &str, at: Millis) -> StoreResult<()> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "UPDATE outbox SET owner = NULL, lease_until = NULL, next_attempt_at = $4
             WHERE id = $1 AND slot = $2 AND owner = $3",
        );
        conn.execute(
            "scheduling a notification again",
            sql,
            params![&key.id, key.slot, owner, at],
        )?;
        Ok(())
    }

    fn drop_notification(&mut self, key: &OutboxKey) -> StoreResult<()> {
        delete(self.conn()?, "dropping a notification", key)?;
        Ok(())
    }

    fn notifications(&mut self, only: Option<&str>) -> StoreResult<Vec<OutboxRow>> {
        list(self.conn()?, only)
    }

    fn next_notification(&mut self, only: Option<&str>) -> StoreResult<Option<Millis>> {
        let conn = self.conn()?;
        // When a row can next be claimed: when it is due, or when its claim runs out.
        let sql = sql!(
            conn.dialect(),
            "SELECT MIN(CASE WHEN owner IS NULL OR lease_until IS NULL
                                  OR lease_until < next_attempt_at
                             THEN next_attempt_at ELSE lease_until END)
             FROM outbox WHERE (CAST($1 AS TEXT) IS NULL OR id = $1)",
        );
        Ok(conn
            .value::<Option<Millis>>("reading the outbox", sql, params![only])?
            .flatten())
    }
}
