//! A run's history and its audit trail in SQL, written once for both stores: appending
//! events linked by `audit::link` (numbering a run the first time), the heads, and reads.
//!
//! In: events to append in the caller's transaction, or a run to read. Out: stored
//! [`Event`]s and audit heads. On PostgreSQL the caller holds the run's row lock before it
//! appends, so two writers never number a run's events alike; numbering a new run locks the
//! installation head, which serializes the creation of runs (not their steps).

use super::sql::{Conn, Row, SqlStore, params, sql};
use super::{Event, EventKind, History, Millis, NewEvent, RunStatus, StoreError, StoreResult};
use crate::audit::{Head, Installation};

/// An `audit_heads` row, columns `run, n, prev_run, seq, hash, keyed_from, mac`.
fn head(mut row: Row) -> StoreResult<Head> {
    Ok(Head {
        run: row.get(0)?,
        n: row.get(1)?,
        prev_run: row.get(2)?,
        seq: row.get(3)?,
        hash: row.get(4)?,
        keyed_from: row.get(5)?,
        mac: row.get(6)?,
    })
}

pub(super) fn read_head(conn: &mut dyn Conn, run: &str) -> StoreResult<Option<Head>> {
    let sql = sql!(
        conn.dialect(),
        "SELECT run, n, prev_run, seq, hash, keyed_from, mac FROM audit_heads WHERE run = $1"
    );
    conn.query_opt("reading a run's audit head", sql, params![run])?
        .map(head)
        .transpose()
}

/// The installation head; none before the first run was numbered (the row of migration 6).
/// `lock`: for numbering a run, which moves it.
fn read_installation(conn: &mut dyn Conn, lock: bool) -> StoreResult<Option<Installation>> {
    let sql = if lock {
        sql!(
            conn.dialect(),
            "SELECT runs, last_run, mac FROM audit_installation WHERE id = 1 {FOR_UPDATE}"
        )
    } else {
        "SELECT runs, last_run, mac FROM audit_installation WHERE id = 1"
    };
    let Some(mut row) = conn.query_opt("reading the installation's audit head", sql, &[])? else {
        return Ok(None);
    };
    let installation = Installation {
        runs: row.get(0)?,
        last_run: row.get(1)?,
        mac: row.get(2)?,
    };
    Ok(Some(installation).filter(|i| !(i.runs == 0 && i.mac.is_empty())))
}

/// Appends `events` to `run`'s trail after its head — numbering the run first when it has
/// none (a new run, or one begun before the audit key) — and moves the head; `seal` is the
/// run's final state after the append ([`crate::audit::seal`]). In the caller's transaction.
pub(super) fn append(
    conn: &mut dyn Conn,
    run: &str,
    events: &[NewEvent],
    seal: Option<&str>,
) -> StoreResult<()> {
    let head = read_head(conn, run)?;
    append_after(conn, run, head, events, seal)
}

/// [`append`] for a caller that has read the run's audit head already (in this
/// transaction, under the run's lock: see [`lock_for_commit`]).
pub(super) fn append_after(
    conn: &mut dyn Conn,
    run: &str,
    head: Option<Head>,
    events: &[NewEvent],
    seal: Option<&str>,
) -> StoreResult<()> {
    use crate::audit::{Tail, key};
    let doing = "appending history events";
    let dialect = conn.dialect();
    let tail = match head {
        Some(head) => Tail::Head(head),
        None => {
            let installation = read_installation(conn, true)?;
            let last = conn.query_opt(
                doing,
                sql!(
                    dialect,
                    "SELECT seq, hash FROM events WHERE run = $1 ORDER BY seq DESC LIMIT 1"
                ),
                params![run],
            )?;
            let (last, hash) = match last {
                Some(mut row) => (row.get(0)?, row.get(1)?),
                None => (0, crate::audit::GENESIS.to_string()),
            };
            Tail::Unnumbered {
                installation,
                last,
                hash,
            }
        }
    };
    let append = crate::audit::append(key::current(), run, tail, events, seal);
    let insert = sql!(dialect,
        "INSERT INTO events (run, seq, at, kind, step, attempt, line, duration_ms, data, prev_hash, hash, seal)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    );
    for (event, linked) in events.iter().zip(&append.records) {
        conn.execute(
            doing,
            insert,
            params![
                run,
                linked.seq,
                event.at,
                event.kind.as_str(),
                &event.step,
                event.attempt,
                event.line,
                event.duration_ms,
                &event.data,
                &linked.prev_hash,
                &linked.hash,
                &linked.seal,
            ],
        )?;
    }
    let head = &append.head;
    conn.execute(
        doing,
        sql!(dialect,
            "INSERT INTO audit_heads (run, n, prev_run, seq, hash, keyed_from, mac)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (run) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac",
        ),
        params![
            &head.run,
            head.n,
            &head.prev_run,
            head.seq,
            &head.hash,
            head.keyed_from,
            &head.mac
        ],
    )?;
    if let Some(installation) = &append.installation {
        conn.execute(
            doing,
            sql!(
                dialect,
                "UPDATE audit_installation SET runs = $1, last_run = $2, mac = $3 WHERE id = 1",
            ),
            params![installation.runs, &installation.last_run, &installation.mac],
        )?;
    }
    Ok(())
}

/// The final state a record appended now seals: the run's, if it is final.
pub(super) fn seal_of_row(conn: &mut dyn Conn, run: &str) -> StoreResult<Option<String>> {
    let sql = sql!(
        conn.dialect(),
        "SELECT status, output, error FROM runs WHERE id = $1"
    );
    let Some(mut row) = conn.query_opt("reading a run's state", sql, params![run])? else {
        return Ok(None);
    };
    let (status, output, error): (String, Option<String>, Option<String>) =
        (row.get(0)?, row.get(1)?, row.get(2)?);
    Ok(RunStatus::parse(&status)
        .and_then(|status| crate::audit::seal(status, output.as_deref(), error.as_deref())))
}

/// What a commit reads of its run, under the run's lock (see [`lock_run`]): who holds its
/// claim, what it waited on before this commit, and its audit head — one statement.
pub(super) struct LockedRun {
    pub owner: Option<String>,
    pub waiting_on: Option<String>,
    pub head: Option<Head>,
}

/// [`lock_run`] with the rest of [`LockedRun`]; `None` when there is no such run.
pub(super) fn lock_for_commit(
    conn: &mut dyn Conn,
    run: &str,
    doing: &str,
) -> StoreResult<Option<LockedRun>> {
    let sql = sql!(
        conn.dialect(),
        "SELECT r.owner, r.waiting_on,
                h.run, h.n, h.prev_run, h.seq, h.hash, h.keyed_from, h.mac
         FROM runs r LEFT JOIN audit_heads h ON h.run = r.id
         WHERE r.id = $1 {postgres:FOR UPDATE OF r}"
    );
    let Some(mut row) = conn.query_opt(doing, sql, params![run])? else {
        return Ok(None);
    };
    let head = match row.get::<Option<String>>(2)? {
        Some(run) => Some(Head {
            run,
            n: row.get(3)?,
            prev_run: row.get(4)?,
            seq: row.get(5)?,
            hash: row.get(6)?,
            keyed_from: row.get(7)?,
            mac: row.get(8)?,
        }),
        None => None,
    };
    Ok(Some(LockedRun {
        owner: row.get(0)?,
        waiting_on: row.get(1)?,
        head,
    }))
}

/// Locks the run's row for the transaction (on PostgreSQL; SQLite's transaction holds the
/// write lock already) and returns its owner; `None` when there is no such run.
pub(super) fn lock_run(
    conn: &mut dyn Conn,
    run: &str,
    doing: &str,
) -> StoreResult<Option<Option<String>>> {
    let sql = sql!(
        conn.dialect(),
        "SELECT owner FROM runs WHERE id = $1 {FOR_UPDATE}"
    );
    conn.query_opt(doing, sql, params![run])?
        .map(|mut row| row.get(0))
        .transpose()
}

fn event(run: &str, mut row: Row) -> StoreResult<Event> {
    let seq = row.get(0)?;
    let kind: String = row.get(2)?;
    Ok(Event {
        seq,
        at: row.get(1)?,
        kind: super::stored_kind(run, seq, &kind)?,
        step: row.get(3)?,
        attempt: row.get(4)?,
        line: row.get(5)?,
        duration_ms: row.get(6)?,
        data: row.get(7)?,
        prev_hash: row.get(8)?,
        hash: row.get(9)?,
        seal: row.get(10)?,
    })
}

impl<S: SqlStore + ?Sized> History for S {
    fn note(&mut self, run: &str, event: &NewEvent) -> StoreResult<()> {
        let doing = "recording an event";
        self.conn()?.transaction(doing, |conn| {
            if lock_run(conn, run, doing)?.is_none() {
                return Err(StoreError::NoSuchRun(run.to_string()));
            }
            let seal = seal_of_row(conn, run)?;
            append(conn, run, std::slice::from_ref(event), seal.as_deref())
        })
    }

    fn history(&mut self, run: &str) -> StoreResult<Vec<Event>> {
        let conn = self.conn()?;
        let sql =
            sql!(conn.dialect(),
            "SELECT seq, at, kind, step, attempt, line, duration_ms, data, prev_hash, hash, seal
             FROM events WHERE run = $1 ORDER BY seq",
        );
        conn.query("reading a run's history", sql, params![run])?
            .into_iter()
            .map(|row| event(run, row))
            .collect()
    }

    fn audit_head(&mut self, run: &str) -> StoreResult<Option<Head>> {
        read_head(self.conn()?, run)
    }

    fn audit_heads(&mut self) -> StoreResult<(Option<Installation>, Vec<Head>)> {
        let conn = self.conn()?;
        let installation = read_installation(conn, false)?;
        let sql = sql!(
            conn.dialect(),
            "SELECT run, n, prev_run, seq, hash, keyed_from, mac FROM audit_heads ORDER BY n"
        );
        let heads = conn
            .query("reading the audit heads", sql, &[])?
            .into_iter()
            .map(head)
            .collect::<StoreResult<_>>()?;
        Ok((installation, heads))
    }

    fn count_events(&mut self, kind: EventKind, since: Millis) -> StoreResult<i64> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "SELECT COUNT(*) FROM events WHERE kind = $1 AND at >= $2"
        );
        Ok(conn
            .value("counting events", sql, params![kind.as_str(), since])?
            .unwrap_or(0))
    }
}
