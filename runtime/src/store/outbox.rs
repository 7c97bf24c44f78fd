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
//! attempt's outcome does to the row (see `gates.rs`); this module holds the row, its text
//! encoding, and the SQL of both stores, which differ only in dialect.

use super::{EventKind, Millis, StoreError, StoreResult};

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

/// The table, as SQLite's schema migration 11 creates it. A row goes with its run if the run
/// is ever deleted; `outbox_by_due` finds the rows due first.
pub(crate) const SQLITE_TABLE: &str = "CREATE TABLE IF NOT EXISTS outbox (
        id              TEXT NOT NULL,
        slot            INTEGER NOT NULL,
        hook            TEXT NOT NULL,
        run             TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        gate            TEXT NOT NULL,
        opened_at       INTEGER NOT NULL,
        what            TEXT NOT NULL,
        message         TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        attempts        INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        owner           TEXT,
        lease_until     INTEGER,
        PRIMARY KEY (id, slot)
    );
    CREATE INDEX IF NOT EXISTS outbox_by_due ON outbox(next_attempt_at);";

/// The same table on PostgreSQL (migration 11).
pub(crate) const POSTGRES_TABLE: &str = "CREATE TABLE IF NOT EXISTS outbox (
        id              TEXT NOT NULL,
        slot            BIGINT NOT NULL,
        hook            TEXT NOT NULL,
        run             TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        gate            TEXT NOT NULL,
        opened_at       BIGINT NOT NULL,
        what            TEXT NOT NULL,
        message         TEXT NOT NULL,
        created_at      BIGINT NOT NULL,
        attempts        BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        owner           TEXT,
        lease_until     BIGINT,
        PRIMARY KEY (id, slot)
    );
    CREATE INDEX IF NOT EXISTS outbox_by_due ON outbox(next_attempt_at);";

/// The columns of `outbox`, in the order [`finish`] reads them.
const COLUMNS: &str = "id, slot, hook, run, gate, opened_at, what, message, created_at, \
     attempts, next_attempt_at, owner, lease_until";

/// Which rows may be claimed at `now` (`?1`/`$1` in both dialects): due, and unclaimed or
/// with a lapsed claim.
const CLAIMABLE: &str = "next_attempt_at <= {now} AND (owner IS NULL OR lease_until <= {now})";

/// When the row can next be claimed: when it is due, or when its claim runs out.
const AVAILABLE_AT: &str = "CASE WHEN owner IS NULL OR lease_until IS NULL OR lease_until < next_attempt_at \
     THEN next_attempt_at ELSE lease_until END";

/// A row as the database holds it.
pub(crate) struct Raw {
    id: String,
    slot: i64,
    hook: String,
    run: String,
    gate: String,
    opened_at: i64,
    what: String,
    message: String,
    created_at: i64,
    attempts: i64,
    next_attempt_at: i64,
    owner: Option<String>,
    lease_until: Option<i64>,
}

fn finish(raw: Raw) -> StoreResult<OutboxRow> {
    let corrupt = |column: &str, why: &dyn std::fmt::Display| {
        StoreError::Database(format!(
            "the outbox row {} (hook {}) of run {}, column {column}: {why}",
            raw.id, raw.slot, raw.run
        ))
    };
    let what = EventKind::parse(&raw.what)
        .filter(|k| matches!(k, EventKind::GateOpened | EventKind::GateEscalated))
        .ok_or_else(|| corrupt("what", &format!("`{}` is not a gate event", raw.what)))?;
    let message = serde_json::from_str(&raw.message).map_err(|e| corrupt("message", &e))?;
    Ok(OutboxRow {
        what,
        message,
        id: raw.id,
        slot: raw.slot,
        hook: raw.hook,
        run: raw.run,
        gate: raw.gate,
        opened_at: raw.opened_at,
        created_at: raw.created_at,
        attempts: raw.attempts,
        next_attempt_at: raw.next_attempt_at,
        owner: raw.owner,
        lease_until: raw.lease_until,
    })
}

/// The notification's rows, as written: unclaimed, no attempt yet, due at once.
fn rows_of(n: &Notification) -> impl Iterator<Item = Raw> + '_ {
    n.hooks.iter().enumerate().map(|(slot, hook)| Raw {
        id: n.id.clone(),
        slot: slot as i64,
        hook: hook.clone(),
        run: n.run.clone(),
        gate: n.gate.clone(),
        opened_at: n.opened_at,
        what: n.what.as_str().to_string(),
        message: n.message.to_string(),
        created_at: n.created_at,
        attempts: 0,
        next_attempt_at: n.created_at,
        owner: None,
        lease_until: None,
    })
}

/// `sql` with `{now}` standing for the placeholder `now`.
fn with_now(sql: &str, now: &str) -> String {
    sql.replace("{now}", now)
}

/// The outbox on SQLite (rusqlite).
pub(crate) mod sqlite {
    use super::*;
    use rusqlite::{Connection, OptionalExtension, Row, params};

    fn raw(row: &Row<'_>) -> rusqlite::Result<Raw> {
        Ok(Raw {
            id: row.get(0)?,
            slot: row.get(1)?,
            hook: row.get(2)?,
            run: row.get(3)?,
            gate: row.get(4)?,
            opened_at: row.get(5)?,
            what: row.get(6)?,
            message: row.get(7)?,
            created_at: row.get(8)?,
            attempts: row.get(9)?,
            next_attempt_at: row.get(10)?,
            owner: row.get(11)?,
            lease_until: row.get(12)?,
        })
    }

    /// Applies a commit's change, inside the commit's transaction.
    pub(crate) fn apply(tx: &Connection, change: &OutboxChange) -> rusqlite::Result<()> {
        if change.is_empty() {
            return Ok(());
        }
        if let Some(notification) = &change.add {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO outbox ({COLUMNS}) VALUES
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ))?;
            for r in rows_of(notification) {
                insert.execute(params![
                    r.id,
                    r.slot,
                    r.hook,
                    r.run,
                    r.gate,
                    r.opened_at,
                    r.what,
                    r.message,
                    r.created_at,
                    r.attempts,
                    r.next_attempt_at,
                    r.owner,
                    r.lease_until,
                ])?;
            }
        }
        let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1 AND slot = ?2")?;
        for key in &change.done {
            delete.execute(params![key.id, key.slot])?;
        }
        Ok(())
    }

    /// Claims up to `limit` claimable rows (of notification `only`, when given), counting
    /// the attempt each is claimed for. One statement, so one transaction; a cheap read
    /// first, so that an empty or idle outbox never takes the write lock.
    pub(crate) fn claim(
        conn: &Connection,
        owner: &str,
        lease_until: Millis,
        now: Millis,
        limit: usize,
        only: Option<&str>,
    ) -> rusqlite::Result<Vec<Raw>> {
        let filter = "(?2 IS NULL OR id = ?2)";
        let any: Option<i64> = conn
            .prepare_cached(&format!(
                "SELECT 1 FROM outbox WHERE {} AND {filter} LIMIT 1",
                with_now(CLAIMABLE, "?1")
            ))?
            .query_row(params![now, only], |row| row.get(0))
            .optional()?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut claim = conn.prepare_cached(&format!(
            "UPDATE outbox SET owner = ?3, lease_until = ?4, attempts = attempts + 1
             WHERE rowid IN (SELECT rowid FROM outbox WHERE {} AND {filter}
                             ORDER BY next_attempt_at, created_at, id, slot LIMIT ?5)
             RETURNING {COLUMNS}",
            with_now(CLAIMABLE, "?1")
        ))?;
        let rows = claim.query_map(params![now, only, owner, lease_until, limit], raw)?;
        rows.collect()
    }

    /// Gives a claimed row back, due again at `at` (a failed attempt to retry).
    pub(crate) fn retry(
        conn: &Connection,
        key: &OutboxKey,
        owner: &str,
        at: Millis,
    ) -> rusqlite::Result<usize> {
        conn.prepare_cached(
            "UPDATE outbox SET owner = NULL, lease_until = NULL, next_attempt_at = ?4
             WHERE id = ?1 AND slot = ?2 AND owner = ?3",
        )?
        .execute(params![key.id, key.slot, owner, at])
    }

    pub(crate) fn remove(conn: &Connection, key: &OutboxKey) -> rusqlite::Result<usize> {
        conn.prepare_cached("DELETE FROM outbox WHERE id = ?1 AND slot = ?2")?
            .execute(params![key.id, key.slot])
    }

    /// Every row (of notification `only`, when given), oldest first.
    pub(crate) fn list(conn: &Connection, only: Option<&str>) -> rusqlite::Result<Vec<Raw>> {
        let mut list = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE (?1 IS NULL OR id = ?1)
             ORDER BY created_at, id, slot"
        ))?;
        let rows = list.query_map(params![only], raw)?;
        rows.collect()
    }

    /// When the next row (of notification `only`) can be claimed, if there is one.
    pub(crate) fn next(conn: &Connection, only: Option<&str>) -> rusqlite::Result<Option<Millis>> {
        conn.prepare_cached(&format!(
            "SELECT MIN({AVAILABLE_AT}) FROM outbox WHERE (?1 IS NULL OR id = ?1)"
        ))?
        .query_row(params![only], |row| row.get(0))
    }

    pub(crate) fn finish_all(raws: Vec<Raw>) -> StoreResult<Vec<OutboxRow>> {
        raws.into_iter().map(finish).collect()
    }
}

/// The outbox on PostgreSQL: the same rows; claims skip rows another worker is claiming
/// (`FOR UPDATE SKIP LOCKED`), so two workers never take the same row.
pub(crate) mod postgres {
    use super::*;
    use ::postgres::{GenericClient, Row};

    fn raw(row: &Row) -> Raw {
        Raw {
            id: row.get(0),
            slot: row.get(1),
            hook: row.get(2),
            run: row.get(3),
            gate: row.get(4),
            opened_at: row.get(5),
            what: row.get(6),
            message: row.get(7),
            created_at: row.get(8),
            attempts: row.get(9),
            next_attempt_at: row.get(10),
            owner: row.get(11),
            lease_until: row.get(12),
        }
    }

    fn finish_rows(rows: Vec<Row>) -> StoreResult<Vec<OutboxRow>> {
        rows.iter().map(|row| finish(raw(row))).collect()
    }

    /// Applies a commit's change, inside the commit's transaction.
    pub(crate) fn apply(
        tx: &mut impl GenericClient,
        change: &OutboxChange,
    ) -> Result<(), ::postgres::Error> {
        if change.is_empty() {
            return Ok(());
        }
        if let Some(notification) = &change.add {
            let insert = format!(
                "INSERT INTO outbox ({COLUMNS}) VALUES
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            );
            for r in rows_of(notification) {
                tx.execute(
                    &insert,
                    &[
                        &r.id,
                        &r.slot,
                        &r.hook,
                        &r.run,
                        &r.gate,
                        &r.opened_at,
                        &r.what,
                        &r.message,
                        &r.created_at,
                        &r.attempts,
                        &r.next_attempt_at,
                        &r.owner,
                        &r.lease_until,
                    ],
                )?;
            }
        }
        for key in &change.done {
            tx.execute(
                "DELETE FROM outbox WHERE id = $1 AND slot = $2",
                &[&key.id, &key.slot],
            )?;
        }
        Ok(())
    }

    /// Writes a row as it is, unclaimed (`flowrt migrate-store`).
    pub(crate) fn copy(
        tx: &mut impl GenericClient,
        row: &OutboxRow,
    ) -> Result<u64, ::postgres::Error> {
        tx.execute(
            &format!(
                "INSERT INTO outbox ({COLUMNS}) VALUES
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL)"
            ),
            &[
                &row.id,
                &row.slot,
                &row.hook,
                &row.run,
                &row.gate,
                &row.opened_at,
                &row.what.as_str(),
                &row.message.to_string(),
                &row.created_at,
                &row.attempts,
                &row.next_attempt_at,
            ],
        )
    }

    /// Claims up to `limit` claimable rows (of notification `only`), counting the attempt.
    pub(crate) fn claim(
        client: &mut impl GenericClient,
        owner: &str,
        lease_until: Millis,
        now: Millis,
        limit: usize,
        only: Option<&str>,
    ) -> Result<StoreResult<Vec<OutboxRow>>, ::postgres::Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client.query(
            &format!(
                "UPDATE outbox o SET owner = $3, lease_until = $4, attempts = o.attempts + 1
                 FROM (SELECT id, slot FROM outbox
                       WHERE {} AND ($2::TEXT IS NULL OR id = $2)
                       ORDER BY next_attempt_at, created_at, id, slot
                       LIMIT $5
                       FOR UPDATE SKIP LOCKED) due
                 WHERE o.id = due.id AND o.slot = due.slot
                 RETURNING {}",
                with_now(CLAIMABLE, "$1"),
                prefixed("o.")
            ),
            &[&now, &only, &owner, &lease_until, &limit],
        )?;
        let mut claimed = finish_rows(rows);
        if let Ok(rows) = &mut claimed {
            rows.sort_by(|a, b| {
                (a.next_attempt_at, a.created_at, &a.id, a.slot).cmp(&(
                    b.next_attempt_at,
                    b.created_at,
                    &b.id,
                    b.slot,
                ))
            });
        }
        Ok(claimed)
    }

    /// The columns, each prefixed (`o.id, o.slot, …`).
    fn prefixed(prefix: &str) -> String {
        COLUMNS
            .split(", ")
            .map(|c| format!("{prefix}{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(crate) fn retry(
        client: &mut impl GenericClient,
        key: &OutboxKey,
        owner: &str,
        at: Millis,
    ) -> Result<u64, ::postgres::Error> {
        client.execute(
            "UPDATE outbox SET owner = NULL, lease_until = NULL, next_attempt_at = $4
             WHERE id = $1 AND slot = $2 AND owner = $3",
            &[&key.id, &key.slot, &owner, &at],
        )
    }

    pub(crate) fn remove(
        client: &mut impl GenericClient,
        key: &OutboxKey,
    ) -> Result<u64, ::postgres::Error> {
        client.execute(
            "DELETE FROM outbox WHERE id = $1 AND slot = $2",
            &[&key.id, &key.slot],
        )
    }

    pub(crate) fn list(
        client: &mut impl GenericClient,
        only: Option<&str>,
    ) -> Result<StoreResult<Vec<OutboxRow>>, ::postgres::Error> {
        let rows = client.query(
            &format!(
                "SELECT {COLUMNS} FROM outbox WHERE ($1::TEXT IS NULL OR id = $1)
                 ORDER BY created_at, id, slot"
            ),
            &[&only],
        )?;
        Ok(finish_rows(rows))
    }

    pub(crate) fn next(
        client: &mut impl GenericClient,
        only: Option<&str>,
    ) -> Result<Option<Millis>, ::postgres::Error> {
        let row = client.query_one(
            &format!("SELECT MIN({AVAILABLE_AT}) FROM outbox WHERE ($1::TEXT IS NULL OR id = $1)"),
            &[&only],
        )?;
        Ok(row.get(0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub(crate) fn notification(id: &str, run: &str, hooks: &[&str], at: Millis) -> Notification {
        Notification {
            id: id.into(),
            run: run.into(),
            gate: "g".into(),
            opened_at: at,
            what: EventKind::GateOpened,
            message: serde_json::json!({ "id": id, "run": run }),
            hooks: hooks.iter().map(|h| h.to_string()).collect(),
            created_at: at,
        }
    }

    fn connection() -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE runs (id TEXT PRIMARY KEY); INSERT INTO runs VALUES ('r1');",
        )
        .unwrap();
        conn.execute_batch(SQLITE_TABLE).unwrap();
        conn
    }

    #[test]
    fn rows_are_claimed_once_retried_later_and_taken_over_after_the_lease() {
        let conn = connection();
        let change = OutboxChange {
            add: Some(notification("n1", "r1", &["command a", "webhook b"], 100)),
            done: vec![],
        };
        sqlite::apply(&conn, &change).unwrap();
        // Both rows are due at once; a claim counts the attempt.
        let claimed =
            sqlite::finish_all(sqlite::claim(&conn, "w1", 1100, 100, 10, None).unwrap()).unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(
            (
                claimed[0].hook.as_str(),
                claimed[0].attempts,
                claimed[0].owner.as_deref()
            ),
            ("command a", 1, Some("w1"))
        );
        assert_eq!(
            claimed[1].message,
            serde_json::json!({ "id": "n1", "run": "r1" })
        );
        // Claimed rows are nobody else's until the lease runs out.
        assert!(
            sqlite::claim(&conn, "w2", 1200, 500, 10, None)
                .unwrap()
                .is_empty()
        );
        assert_eq!(sqlite::next(&conn, None).unwrap(), Some(1100));
        // A retry gives the row back, due later; only its owner can.
        assert_eq!(
            sqlite::retry(&conn, &claimed[0].key(), "w2", 300).unwrap(),
            0
        );
        assert_eq!(
            sqlite::retry(&conn, &claimed[0].key(), "w1", 300).unwrap(),
            1
        );
        assert!(
            sqlite::claim(&conn, "w2", 1200, 299, 10, None)
                .unwrap()
                .is_empty()
        );
        assert_eq!(sqlite::next(&conn, Some("n1")).unwrap(), Some(300));
        let again =
            sqlite::finish_all(sqlite::claim(&conn, "w2", 1300, 300, 10, None).unwrap()).unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 2));
        // The other row's owner died: its row is taken over after the lease.
        let taken =
            sqlite::finish_all(sqlite::claim(&conn, "w2", 2200, 1100, 10, None).unwrap()).unwrap();
        assert_eq!((taken[0].slot, taken[0].attempts), (1, 2));
        // Done rows are deleted with the commit that records them.
        let done = OutboxChange {
            add: None,
            done: vec![again[0].key()],
        };
        sqlite::apply(&conn, &done).unwrap();
        assert_eq!(sqlite::remove(&conn, &taken[0].key()).unwrap(), 1);
        assert!(sqlite::list(&conn, None).unwrap().is_empty());
        assert_eq!(sqlite::next(&conn, None).unwrap(), None);
    }

    #[test]
    fn a_claim_can_be_narrowed_to_one_notification() {
        let conn = connection();
        for id in ["n1", "n2"] {
            let change = OutboxChange {
                add: Some(notification(id, "r1", &["command a"], 5)),
                done: vec![],
            };
            sqlite::apply(&conn, &change).unwrap();
        }
        let claimed =
            sqlite::finish_all(sqlite::claim(&conn, "w", 50, 5, 10, Some("n2")).unwrap()).unwrap();
        assert_eq!(
            claimed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["n2"]
        );
        assert_eq!(sqlite::list(&conn, Some("n1")).unwrap().len(), 1);
    }

    #[test]
    fn a_corrupt_row_is_an_error_naming_it() {
        let conn = connection();
        let change = OutboxChange {
            add: Some(notification("n1", "r1", &["command a"], 5)),
            done: vec![],
        };
        sqlite::apply(&conn, &change).unwrap();
        conn.execute("UPDATE outbox SET what = 'run_started'", [])
            .unwrap();
        let error = sqlite::finish_all(sqlite::list(&conn, None).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("outbox row n1 (hook 0) of run r1, column what"),
            "{error}"
        );
    }
}
