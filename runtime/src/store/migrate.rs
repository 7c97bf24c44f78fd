//! `flowrt migrate-store`: moves an installation from a SQLite file to PostgreSQL — deployed
//! versions, runs with their checkpoints, waiting gates (with their gate index rows and the
//! notifications still to deliver) and timers, the whole history with its audit hashes, settings (the test clock), API tokens and the refusal log — in one PostgreSQL
//! transaction, from one consistent SQLite snapshot. Afterwards every run's audit chain is
//! verified on the target and the counts compared with the source.
//!
//! Claims are not carried over: a run that was being driven is taken up by the first worker
//! on the new store, from its last checkpoint, exactly as after a crash.

use super::postgres::PostgresStore;
use super::{Store, StoreError, StoreResult};
use rusqlite::{OpenFlags, params};
use std::path::Path;

/// What was moved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub versions: usize,
    pub runs: usize,
    pub events: usize,
    /// Rows of the gate index (open gates).
    pub gates: usize,
    /// Rows of the notification outbox (notifications still to deliver), unclaimed.
    pub notifications: usize,
    pub tokens: usize,
    pub refusals: usize,
    pub settings: usize,
}

fn sqlite_error(doing: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Database(format!("{doing} (the SQLite source): {e}"))
}

fn pg_error(doing: &str) -> impl Fn(postgres::Error) -> StoreError + '_ {
    move |e| {
        let detail = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string());
        StoreError::Database(format!("{doing} (the PostgreSQL target): {detail}"))
    }
}

/// Copies everything from the SQLite database at `from` into the PostgreSQL store at `to`,
/// which must hold no runs yet; then verifies the target.
pub fn sqlite_to_postgres(from: &Path, to: &str) -> StoreResult<Moved> {
    if !from.is_file() {
        return Err(StoreError::Database(format!(
            "{} is not a SQLite database file",
            from.display()
        )));
    }
    // Brings the source up to the current schema first (a no-op when it is current).
    drop(super::sqlite::SqliteStore::open(from)?);
    let mut source = rusqlite::Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error("opening"))?;
    // One read transaction: a consistent snapshot even if a flowrt still writes to it.
    let snapshot = source.transaction().map_err(sqlite_error("reading"))?;

    // Creates the schema on the target.
    drop(PostgresStore::connect(to)?);
    let mut target =
        postgres::Client::connect(to, postgres::NoTls).map_err(pg_error("connecting"))?;
    let mut tx = target.transaction().map_err(pg_error("starting"))?;
    let existing: i64 = tx
        .query_one("SELECT COUNT(*) FROM runs", &[])
        .map_err(pg_error("checking the target"))?
        .get(0);
    if existing > 0 {
        return Err(StoreError::Database(format!(
            "the target already holds {existing} run(s); migrate into an empty database"
        )));
    }
    let mut moved = Moved::default();

    let mut read = snapshot
        .prepare("SELECT hash, artifact, deployed_at FROM versions ORDER BY deployed_at, hash")
        .map_err(sqlite_error("reading versions"))?;
    let rows = read
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(sqlite_error("reading versions"))?;
    for row in rows {
        let (hash, artifact, at) = row.map_err(sqlite_error("reading versions"))?;
        tx.execute(
            "INSERT INTO versions (hash, artifact, deployed_at) VALUES ($1, $2, $3)
             ON CONFLICT (hash) DO NOTHING",
            &[&hash, &artifact, &at],
        )
        .map_err(pg_error("writing versions"))?;
        moved.versions += 1;
    }

    // Parents before children: in creation order (a child is created after its parent).
    let mut read = snapshot
        .prepare(
            "SELECT id, workflow, version, status, input, output, error, waiting_on, wake_at,
                    started_by, parent, created_at, updated_at, trace
             FROM runs ORDER BY created_at, rowid",
        )
        .map_err(sqlite_error("reading runs"))?;
    let mut runs = read.query([]).map_err(sqlite_error("reading runs"))?;
    let insert_run = tx
        .prepare(
            "INSERT INTO runs (id, workflow, version, status, input, output, error, waiting_on,
                               wake_at, started_by, parent, created_at, updated_at, trace)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .map_err(pg_error("writing runs"))?;
    while let Some(r) = runs.next().map_err(sqlite_error("reading runs"))? {
        let get_text = |i| r.get::<_, String>(i);
        let get_opt = |i| r.get::<_, Option<String>>(i);
        let values = (
            get_text(0),
            get_text(1),
            get_text(2),
            get_text(3),
            get_text(4),
            get_opt(5),
            get_opt(6),
            get_opt(7),
            r.get::<_, Option<i64>>(8),
            get_text(9),
            get_opt(10),
            r.get::<_, i64>(11),
            r.get::<_, i64>(12),
            get_opt(13),
        );
        let read_error = sqlite_error("reading runs");
        let (id, workflow, version, status, input, output, error, waiting_on) = (
            values.0.map_err(&read_error)?,
            values.1.map_err(&read_error)?,
            values.2.map_err(&read_error)?,
            values.3.map_err(&read_error)?,
            values.4.map_err(&read_error)?,
            values.5.map_err(&read_error)?,
            values.6.map_err(&read_error)?,
            values.7.map_err(&read_error)?,
        );
        let (wake_at, started_by, parent, created_at, updated_at, trace) = (
            values.8.map_err(&read_error)?,
            values.9.map_err(&read_error)?,
            values.10.map_err(&read_error)?,
            values.11.map_err(&read_error)?,
            values.12.map_err(&read_error)?,
            values.13.map_err(&read_error)?,
        );
        tx.execute(
            &insert_run,
            &[
                &id,
                &workflow,
                &version,
                &status,
                &input,
                &output,
                &error,
                &waiting_on,
                &wake_at,
                &started_by,
                &parent,
                &created_at,
                &updated_at,
                &trace,
            ],
        )
        .map_err(pg_error("writing runs"))?;
        moved.runs += 1;
    }
    drop(runs);

    let mut read = snapshot
        .prepare(
            "SELECT run, format_version, program_hash, state, updated_at, calls FROM checkpoints",
        )
        .map_err(sqlite_error("reading checkpoints"))?;
    let rows = read
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })
        .map_err(sqlite_error("reading checkpoints"))?;
    for row in rows {
        let (run, format_version, program_hash, state, at, calls) =
            row.map_err(sqlite_error("reading checkpoints"))?;
        tx.execute(
            "INSERT INTO checkpoints (run, format_version, program_hash, state, updated_at, calls)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&run, &format_version, &program_hash, &state, &at, &calls],
        )
        .map_err(pg_error("writing checkpoints"))?;
    }

    let mut read = snapshot
        .prepare(
            "SELECT run, seq, at, kind, step, attempt, line, duration_ms, data, prev_hash, hash, seal
             FROM events ORDER BY run, seq",
        )
        .map_err(sqlite_error("reading history"))?;
    let insert_event = tx
        .prepare(
            "INSERT INTO events (run, seq, at, kind, step, attempt, line, duration_ms, data, prev_hash, hash, seal)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .map_err(pg_error("writing history"))?;
    let mut events = read.query([]).map_err(sqlite_error("reading history"))?;
    while let Some(r) = events.next().map_err(sqlite_error("reading history"))? {
        let e = sqlite_error("reading history");
        let run: String = r.get(0).map_err(&e)?;
        let seq: i64 = r.get(1).map_err(&e)?;
        let at: i64 = r.get(2).map_err(&e)?;
        let kind: String = r.get(3).map_err(&e)?;
        let step: Option<String> = r.get(4).map_err(&e)?;
        let attempt: Option<i64> = r.get(5).map_err(&e)?;
        let line: Option<i64> = r.get(6).map_err(&e)?;
        let duration: Option<i64> = r.get(7).map_err(&e)?;
        let data: String = r.get(8).map_err(&e)?;
        let prev_hash: String = r.get(9).map_err(&e)?;
        let hash: String = r.get(10).map_err(&e)?;
        let seal: Option<String> = r.get(11).map_err(&e)?;
        tx.execute(
            &insert_event,
            &[
                &run, &seq, &at, &kind, &step, &attempt, &line, &duration, &data, &prev_hash,
                &hash, &seal,
            ],
        )
        .map_err(pg_error("writing history"))?;
        moved.events += 1;
    }
    drop(events);
    copy_audit_heads(&snapshot, &mut tx)?;
    moved.gates = copy_gates(&snapshot, &mut tx)?;
    moved.notifications = copy_outbox(&snapshot, &mut tx)?;

    let mut read = snapshot
        .prepare("SELECT key, value FROM settings")
        .map_err(sqlite_error("reading settings"))?;
    let rows = read
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(sqlite_error("reading settings"))?;
    for row in rows {
        let (key, value) = row.map_err(sqlite_error("reading settings"))?;
        tx.execute(
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
        .map_err(pg_error("writing settings"))?;
        moved.settings += 1;
    }

    let mut read = snapshot
        .prepare("SELECT id, user, name, hash, created_at, expires_at, revoked_at FROM tokens")
        .map_err(sqlite_error("reading tokens"))?;
    let rows = read
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        })
        .map_err(sqlite_error("reading tokens"))?;
    for row in rows {
        let (id, user, name, hash, created, expires, revoked) =
            row.map_err(sqlite_error("reading tokens"))?;
        tx.execute(
            "INSERT INTO tokens (id, \"user\", name, hash, created_at, expires_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&id, &user, &name, &hash, &created, &expires, &revoked],
        )
        .map_err(pg_error("writing tokens"))?;
        moved.tokens += 1;
    }

    let mut read = snapshot
        .prepare(
            "SELECT at, who, request, status, reason, client, count, last_at FROM refusals
             ORDER BY rowid",
        )
        .map_err(sqlite_error("reading refusals"))?;
    let rows = read
        .query_map(params![], |r| {
            Ok((
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ),
                (
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                ),
            ))
        })
        .map_err(sqlite_error("reading refusals"))?;
    for row in rows {
        let ((at, who, request, status), (reason, client, count, last_at)) =
            row.map_err(sqlite_error("reading refusals"))?;
        tx.execute(
            "INSERT INTO refusals (at, who, request, status, reason, client, count, last_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &at, &who, &request, &status, &reason, &client, &count, &last_at,
            ],
        )
        .map_err(pg_error("writing refusals"))?;
        moved.refusals += 1;
    }
    tx.commit().map_err(pg_error("committing"))?;

    verify(to, &moved)?;
    Ok(moved)
}

/// The gate index, row by row (each checked as it is read). A source from before the index
/// may not hold every open gate yet: the first engine on the target indexes the rest, as it
/// would have on the source (the `gate_index_complete` setting moves with the settings).
fn copy_gates(
    snapshot: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
) -> StoreResult<usize> {
    let mut read = snapshot
        .prepare(&format!(
            "SELECT {} FROM gates ORDER BY run, name",
            super::gate_index::GATE_COLUMNS
        ))
        .map_err(sqlite_error("reading the gate index"))?;
    let rows = read
        .query_map([], super::sqlite::gate_row)
        .map_err(sqlite_error("reading the gate index"))?;
    let mut copied = 0;
    for row in rows {
        let row = row
            .map_err(sqlite_error("reading the gate index"))?
            .finish()?;
        super::postgres::put_gate(tx, &row, "DO NOTHING")
            .map_err(pg_error("writing the gate index"))?;
        copied += 1;
    }
    Ok(copied)
}

/// The notifications still to deliver, with their attempts and when each is next due; claims
/// are not carried over (a row in an attempt is sent again by a worker on the target).
fn copy_outbox(
    snapshot: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
) -> StoreResult<usize> {
    let rows =
        super::outbox::sqlite::list(snapshot, None).map_err(sqlite_error("reading the outbox"))?;
    let rows = super::outbox::sqlite::finish_all(rows)?;
    for row in &rows {
        super::outbox::postgres::copy(tx, row).map_err(pg_error("writing the outbox"))?;
    }
    Ok(rows.len())
}

/// The audit trail's run heads and installation head, as they are: they are signed with the
/// audit key, which the target's processes must share (see spec/runtime.md).
fn copy_audit_heads(
    snapshot: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
) -> StoreResult<()> {
    let mut read = snapshot
        .prepare("SELECT run, n, prev_run, seq, hash, keyed_from, mac FROM audit_heads")
        .map_err(sqlite_error("reading audit heads"))?;
    let mut heads = read
        .query([])
        .map_err(sqlite_error("reading audit heads"))?;
    while let Some(r) = heads.next().map_err(sqlite_error("reading audit heads"))? {
        let e = sqlite_error("reading audit heads");
        let (run, n, prev_run): (String, i64, Option<String>) = (
            r.get(0).map_err(&e)?,
            r.get(1).map_err(&e)?,
            r.get(2).map_err(&e)?,
        );
        let (seq, hash, keyed_from, mac): (i64, String, i64, String) = (
            r.get(3).map_err(&e)?,
            r.get(4).map_err(&e)?,
            r.get(5).map_err(&e)?,
            r.get(6).map_err(&e)?,
        );
        tx.execute(
            "INSERT INTO audit_heads (run, n, prev_run, seq, hash, keyed_from, mac)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&run, &n, &prev_run, &seq, &hash, &keyed_from, &mac],
        )
        .map_err(pg_error("writing audit heads"))?;
    }
    let (runs, last_run, mac): (i64, Option<String>, String) = snapshot
        .query_row(
            "SELECT runs, last_run, mac FROM audit_installation WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(sqlite_error("reading the installation's audit head"))?;
    tx.execute(
        "UPDATE audit_installation SET runs = $1, last_run = $2, mac = $3 WHERE id = 1",
        &[&runs, &last_run, &mac],
    )
    .map_err(pg_error("writing the installation's audit head"))?;
    Ok(())
}

/// Reads the target back through the store: the counts match and every chain verifies.
fn verify(to: &str, moved: &Moved) -> StoreResult<()> {
    let mut store = PostgresStore::connect(to)?;
    let runs = store.runs(None)?;
    if runs.len() != moved.runs {
        return Err(StoreError::Database(format!(
            "after the move the target holds {} runs, not {}",
            runs.len(),
            moved.runs
        )));
    }
    let gates = store.gates(None)?.len();
    if gates != moved.gates {
        return Err(StoreError::Database(format!(
            "after the move the target holds {gates} open gate(s) in its index, not {}",
            moved.gates
        )));
    }
    let notifications = store.notifications(None)?.len();
    if notifications != moved.notifications {
        return Err(StoreError::Database(format!(
            "after the move the target holds {notifications} notification(s) to deliver, not {}",
            moved.notifications
        )));
    }
    let key = crate::audit::key::current();
    let (installation, heads) = store.audit_heads()?;
    let ids = runs.iter().map(|r| r.id.as_str()).collect();
    let broken = |broken: crate::audit::Break| {
        StoreError::Database(format!("after the move, the audit trail of {broken}"))
    };
    if let Some(first) = crate::audit::verify_installation(key, installation.as_ref(), &heads, &ids)
        .into_iter()
        .next()
    {
        return Err(broken(first));
    }
    let mut events = 0;
    for run in &runs {
        let history = store.history(&run.id)?;
        let head = heads.iter().find(|h| h.run == run.id);
        crate::audit::verify(key, run, &history, head).map_err(broken)?;
        events += history.len();
    }
    if events != moved.events {
        return Err(StoreError::Database(format!(
            "after the move the target holds {events} history records, not {}",
            moved.events
        )));
    }
    Ok(())
}
