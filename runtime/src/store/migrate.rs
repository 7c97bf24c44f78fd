//! `flowrt migrate-store`: moves an installation from a SQLite file to PostgreSQL — deployed
//! versions, runs with their checkpoints, waiting gates (with their gate index rows and the
//! notifications still to deliver) and timers, the whole history with its audit hashes,
//! settings (the test clock), API tokens and the refusal log — in one PostgreSQL
//! transaction, from one consistent SQLite snapshot. Afterwards every run's audit chain is
//! verified on the target and the counts compared with the source.
//!
//! In: a SQLite path and a PostgreSQL URL. Out: what was [`Moved`]. Rows are copied table by
//! table through the dialect layer (`sql.rs`), values as they are; gate index rows and
//! outbox rows are read and written as [`super::GateRow`]s and [`super::OutboxRow`]s (checked
//! as they are read; gate flags are integers on SQLite, booleans on PostgreSQL).
//!
//! Claims are not carried over: a run that was being driven is taken up by the first worker
//! on the new store, from its last checkpoint, exactly as after a crash.

use super::gate_index::{GATE_COLUMNS, OnConflict, put_gate, raw_gate};
use super::postgres::PostgresStore;
use super::sql::{Conn, Param, SqlStore};
use super::{Gates, History, Outbox, Runs, StoreError, StoreResult};
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

/// A table to copy: its name, the columns copied, the order rows are read in (parents
/// before children) and what a row already on the target does.
struct Table {
    name: &'static str,
    columns: &'static str,
    order: &'static str,
    conflict: &'static str,
}

/// In the order they are copied: a table's foreign keys point at tables copied before it.
const TABLES: &[Table] = &[
    Table {
        name: "versions",
        columns: "hash, artifact, deployed_at",
        order: "ORDER BY deployed_at, hash",
        conflict: "ON CONFLICT (hash) DO NOTHING",
    },
    // A child is created after its parent.
    Table {
        name: "runs",
        columns: "id, workflow, version, status, input, output, error, waiting_on, wake_at, \
                  started_by, parent, created_at, updated_at, trace, attention",
        order: "ORDER BY created_at, rowid",
        conflict: "",
    },
    Table {
        name: "checkpoints",
        columns: "run, format_version, program_hash, state, updated_at, calls",
        order: "",
        conflict: "",
    },
    Table {
        name: "events",
        columns: "run, seq, at, kind, step, attempt, line, duration_ms, data, prev_hash, hash, seal",
        order: "ORDER BY run, seq",
        conflict: "",
    },
    // Signed with the audit key, which the target's processes must share (spec/runtime.md).
    Table {
        name: "audit_heads",
        columns: "run, n, prev_run, seq, hash, keyed_from, mac",
        order: "",
        conflict: "",
    },
    Table {
        name: "settings",
        columns: "key, value",
        order: "",
        conflict: "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    },
    Table {
        name: "tokens",
        columns: "id, \"user\", name, hash, created_at, expires_at, revoked_at",
        order: "",
        conflict: "",
    },
    Table {
        name: "refusals",
        columns: "at, who, request, status, reason, client, count, last_at",
        order: "ORDER BY rowid",
        conflict: "",
    },
];

/// Copies every row of `table`; returns how many.
fn copy(source: &mut dyn Conn, target: &mut dyn Conn, table: &Table) -> StoreResult<usize> {
    let Table {
        name,
        columns,
        order,
        conflict,
    } = table;
    let placeholders = (1..=columns.split(',').count())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let insert = format!("INSERT INTO {name} ({columns}) VALUES ({placeholders}) {conflict}");
    let (reading, writing) = (format!("reading {name}"), format!("writing {name}"));
    let mut copied = 0;
    source.for_each(
        &reading,
        &format!("SELECT {columns} FROM {name} {order}"),
        &[],
        &mut |row| {
            let values = row.into_values();
            let params: Vec<Param<'_>> = values.iter().map(Param::from).collect();
            target.execute(&writing, &insert, &params)?;
            copied += 1;
            Ok(())
        },
    )?;
    Ok(copied)
}

/// The gate index, row by row (each checked as it is read). A source from before the index
/// may not hold every open gate yet: the first engine on the target indexes the rest, as it
/// would have on the source (the `gate_index_complete` setting moves with the settings).
fn copy_gates(source: &mut dyn Conn, target: &mut dyn Conn) -> StoreResult<usize> {
    let mut copied = 0;
    source.for_each(
        "reading the gate index",
        &format!("SELECT {GATE_COLUMNS} FROM gates ORDER BY run, name"),
        &[],
        &mut |row| {
            put_gate(target, &raw_gate(row)?.finish()?, OnConflict::Keep)?;
            copied += 1;
            Ok(())
        },
    )?;
    Ok(copied)
}

/// The installation head of the audit trail (its row exists on both from migration 6).
fn copy_installation(source: &mut dyn Conn, target: &mut dyn Conn) -> StoreResult<()> {
    let doing = "reading the installation's audit head";
    let sql = "SELECT runs, last_run, mac FROM audit_installation WHERE id = 1";
    let Some(row) = source.query_opt(doing, sql, &[])? else {
        return Err(StoreError::Database(
            "the SQLite source has no installation head".into(),
        ));
    };
    let values = row.into_values();
    let params: Vec<Param<'_>> = values.iter().map(Param::from).collect();
    target.execute(
        "writing the installation's audit head",
        "UPDATE audit_installation SET runs = $1, last_run = $2, mac = $3 WHERE id = 1",
        &params,
    )?;
    Ok(())
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
    let mut source = super::sqlite::snapshot(from)?;
    // Creates the schema on the target.
    let mut target = PostgresStore::connect(to)?;
    let moved = target
        .conn()?
        .transaction("moving the installation", |target| {
            let existing = target
                .value::<i64>("checking the target", "SELECT COUNT(*) FROM runs", &[])?
                .unwrap_or(0);
            if existing > 0 {
                return Err(StoreError::Database(format!(
                    "the target already holds {existing} run(s); migrate into an empty database"
                )));
            }
            let mut moved = Moved::default();
            for table in TABLES {
                let copied = copy(source.as_mut(), target, table)?;
                match table.name {
                    "versions" => moved.versions = copied,
                    "runs" => moved.runs = copied,
                    "events" => moved.events = copied,
                    "settings" => moved.settings = copied,
                    "tokens" => moved.tokens = copied,
                    "refusals" => moved.refusals = copied,
                    _ => {}
                }
            }
            copy_installation(source.as_mut(), target)?;
            moved.gates = copy_gates(source.as_mut(), target)?;
            moved.notifications = copy_outbox(source.as_mut(), target)?;
            Ok(moved)
        })?;
    verify(&mut target, &moved)?;
    Ok(moved)
}

/// The notifications still to deliver, with their attempts and when each is next due; claims
/// are not carried over (a row in an attempt is sent again by a worker on the target).
fn copy_outbox(source: &mut dyn Conn, target: &mut dyn Conn) -> StoreResult<usize> {
    let rows = super::outbox::list(source, None)?;
    for row in &rows {
        super::outbox::copy(target, row)?;
    }
    Ok(rows.len())
}

/// Reads the target back through the store: the counts match and every chain verifies.
fn verify(store: &mut PostgresStore, moved: &Moved) -> StoreResult<()> {
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
