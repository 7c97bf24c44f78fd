//! The embedded store: one SQLite file (rusqlite, WAL, `synchronous=FULL` by default).
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction, so two processes on the same file
//! serialize their writes and a waiting writer gives up with [`StoreError::Busy`] after the
//! busy timeout instead of hanging. The schema is versioned with `PRAGMA user_version`;
//! [`MIGRATIONS`] are applied in order, all in one transaction, when the file is opened.

use super::gate_index::{self, GATE_COLUMNS, RawGate};
use super::outbox::{self, OutboxKey, OutboxRow};
use super::{
    Checkpoint, Event, EventKind, Millis, NewEvent, NewRun, Refusal, RunRecord, RunStatus,
    StepCommit, Store, StoreError, StoreResult, TokenRecord,
};
use super::{GateCounts, GateRow};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};
use std::path::Path;
use std::time::Duration;

/// The schema migrations, in order: `MIGRATIONS[i]` takes the schema from version `i` to
/// version `i + 1`. Never edit a released migration; append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: versions, runs, checkpoints, events.
    "CREATE TABLE versions (
        hash        TEXT PRIMARY KEY,
        artifact    BLOB NOT NULL,
        deployed_at INTEGER NOT NULL
    );
    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        workflow    TEXT NOT NULL,
        version     TEXT NOT NULL REFERENCES versions(hash),
        status      TEXT NOT NULL,
        input       TEXT NOT NULL,
        output      TEXT,
        error       TEXT,
        waiting_on  TEXT,
        wake_at     INTEGER,
        started_by  TEXT NOT NULL,
        parent      TEXT REFERENCES runs(id),
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        owner       TEXT,
        lease_until INTEGER
    );
    CREATE INDEX runs_by_status_wake ON runs(status, wake_at);
    CREATE INDEX runs_by_status_created ON runs(status, created_at);
    CREATE INDEX runs_by_created ON runs(created_at);
    CREATE TABLE checkpoints (
        run            TEXT PRIMARY KEY REFERENCES runs(id),
        format_version INTEGER NOT NULL,
        program_hash   TEXT NOT NULL,
        state          BLOB NOT NULL,
        updated_at     INTEGER NOT NULL
    );
    CREATE TABLE events (
        run         TEXT NOT NULL REFERENCES runs(id),
        seq         INTEGER NOT NULL,
        at          INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        step        TEXT,
        attempt     INTEGER,
        line        INTEGER,
        duration_ms INTEGER,
        data        TEXT NOT NULL,
        PRIMARY KEY (run, seq)
    );",
    // 2: settings of the database itself (the test clock).
    "CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 3: the hash chain of the audit trail.
    "ALTER TABLE events ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
     ALTER TABLE events ADD COLUMN hash TEXT NOT NULL DEFAULT '';",
    // 4: the run's trace context (W3C traceparent of its root span), so that every process
    // that drives the run exports its spans into the same trace.
    "ALTER TABLE runs ADD COLUMN trace TEXT;",
    // 5: API tokens of `flowrt serve` (only their SHA-256 is kept) and refused requests that
    // concern no run (those that do are in the run's history).
    "CREATE TABLE tokens (
        id         TEXT PRIMARY KEY,
        user       TEXT NOT NULL,
        name       TEXT NOT NULL,
        hash       TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER
    );
    CREATE TABLE refusals (
        at      INTEGER NOT NULL,
        who     TEXT NOT NULL,
        request TEXT NOT NULL,
        status  INTEGER NOT NULL,
        reason  TEXT NOT NULL
    );",
    // 6: the keyed audit trail (see crate::audit): the final state a record seals, one head
    // per run (no foreign key: a head outlives a deleted run, to name it), and the
    // installation head (its row exists from the start, so that numbering can lock it).
    "ALTER TABLE events ADD COLUMN seal TEXT;
     CREATE TABLE audit_heads (
        run        TEXT PRIMARY KEY,
        n          INTEGER NOT NULL UNIQUE,
        prev_run   TEXT,
        seq        INTEGER NOT NULL,
        hash       TEXT NOT NULL,
        keyed_from INTEGER NOT NULL,
        mac        TEXT NOT NULL
     );
     CREATE TABLE audit_installation (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        runs     INTEGER NOT NULL,
        last_run TEXT,
        mac      TEXT NOT NULL
     );
     INSERT INTO audit_installation (id, runs, last_run, mac) VALUES (1, 0, NULL, '');",
    // 7: the refusal log is bounded: repeated refusals of one client are counted in one row
    // (`count`, from `at` to `last_at`), found by the index.
    "ALTER TABLE refusals ADD COLUMN client TEXT NOT NULL DEFAULT '';
     ALTER TABLE refusals ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
     ALTER TABLE refusals ADD COLUMN last_at INTEGER NOT NULL DEFAULT 0;
     UPDATE refusals SET last_at = at;
     CREATE INDEX refusals_by_client ON refusals(client, who, status, at);",
    // 8: a checkpoint keeps what the engine knows of the run's earlier tool calls, so that a
    // resume reads the checkpoint alone, not the history.
    "ALTER TABLE checkpoints ADD COLUMN calls TEXT;",
    // 9: the gate index, one row per open gate (see store/gate_index.rs; a row goes with its run
    // if the run is ever deleted), written in the
    // transaction of the events that open, change and close the gate. `IF NOT EXISTS`: a
    // database taken back to an older version by hand may still have it.
    "CREATE TABLE IF NOT EXISTS gates (
        run            TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name           TEXT NOT NULL,
        kind           TEXT NOT NULL,
        workflow       TEXT NOT NULL,
        version        TEXT NOT NULL,
        started_by     TEXT NOT NULL,
        opened_at      INTEGER NOT NULL,
        approvers      TEXT NOT NULL,
        approvers_json TEXT NOT NULL,
        escalate_to    TEXT,
        escalate_json  TEXT,
        escalate_at    INTEGER,
        escalated      INTEGER NOT NULL,
        deadline       INTEGER,
        outer_deadline INTEGER,
        quorum         INTEGER NOT NULL,
        allow_self     INTEGER NOT NULL,
        prompt         TEXT,
        context        TEXT NOT NULL,
        shown_sha256   TEXT NOT NULL,
        input_schema   TEXT,
        timeout_caught INTEGER NOT NULL,
        options        TEXT NOT NULL,
        approvals      TEXT NOT NULL,
        deciders       TEXT NOT NULL,
        PRIMARY KEY (run, name)
     );
     CREATE INDEX IF NOT EXISTS gates_by_opened ON gates(opened_at);",
    // 10: `/metrics` counts from indexes: runs by workflow and status, events by kind and time.
    "CREATE INDEX IF NOT EXISTS runs_by_workflow_status ON runs(workflow, status);
     CREATE INDEX IF NOT EXISTS events_by_kind_at ON events(kind, at);",
    // 11: the notification outbox (see store/outbox.rs), written in the transaction of the
    // gate event it announces.
    outbox::SQLITE_TABLE,
];

/// The schema version this code writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a writer waits for another process's write lock before giving up.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// When a commit is acknowledged relative to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: the WAL is synced at every commit; an acknowledged step survives
    /// a power loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a process crash, but the last commits may be lost on
    /// a power loss. For benchmarks and comparisons only.
    Normal,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

/// What an error message needs to know about the database it came from.
struct Context {
    location: String,
    busy_timeout: Duration,
}

impl Context {
    /// Maps a rusqlite error to a [`StoreError`], saying what the store was doing.
    fn map<'a>(&'a self, doing: &'a str) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
        move |error| self.error(error, doing)
    }

    fn error(&self, error: rusqlite::Error, doing: &str) -> StoreError {
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(format!(
                "{} is locked by another process (gave up after {} ms while {doing}); is another flowrt writing to it?",
                self.location,
                self.busy_timeout.as_millis()
            )),
            _ => StoreError::Database(format!("{doing} in {}: {error}", self.location)),
        }
    }
}

/// The SQLite implementation of [`Store`]. Owns one connection: keep it in one thread.
pub struct SqliteStore {
    conn: Connection,
    ctx: Context,
    /// The durability asked for; commits use it except inside a group.
    durability: Durability,
    /// Inside a group commit ([`Store::begin_group`]).
    grouping: bool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.ctx.location)
            .finish_non_exhaustive()
    }
}

const RUN_COLUMNS: &str = "id, workflow, version, status, input, output, error, waiting_on, \
     wake_at, started_by, parent, created_at, updated_at";

impl SqliteStore {
    /// Opens (creating it and its parent directories if needed) the database at `path`
    /// with `synchronous=FULL`, and brings its schema up to date.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        SqliteStore::open_with(path, Durability::Full)
    }

    pub fn open_with(path: &Path, durability: Durability) -> StoreResult<SqliteStore> {
        SqliteStore::open_with_timeout(path, durability, DEFAULT_BUSY_TIMEOUT)
    }

    pub fn open_with_timeout(
        path: &Path,
        durability: Durability,
        busy_timeout: Duration,
    ) -> StoreResult<SqliteStore> {
        let location = path.display().to_string();
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Database(format!(
                    "cannot create the directory {} for the database: {e}",
                    parent.display()
                ))
            })?;
        }
        let ctx = Context {
            location,
            busy_timeout,
        };
        let conn = Connection::open(path).map_err(ctx.map("opening the database"))?;
        SqliteStore::setup(conn, ctx, durability)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> StoreResult<SqliteStore> {
        let ctx = Context {
            location: "the in-memory database".to_string(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
        };
        let conn = Connection::open_in_memory().map_err(ctx.map("opening the database"))?;
        SqliteStore::setup(conn, ctx, Durability::Full)
    }

    /// Changes how long a writer waits for another process's lock before [`StoreError::Busy`].
    pub fn set_busy_timeout(&mut self, timeout: Duration) -> StoreResult<()> {
        self.conn
            .busy_timeout(timeout)
            .map_err(self.ctx.map("setting the busy timeout"))?;
        self.ctx.busy_timeout = timeout;
        Ok(())
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> StoreResult<i64> {
        self.conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(self.ctx.map("reading the schema version"))
    }

    fn setup(conn: Connection, ctx: Context, durability: Durability) -> StoreResult<SqliteStore> {
        conn.busy_timeout(ctx.busy_timeout)
            .map_err(ctx.map("setting the busy timeout"))?;
        // Returns the new mode: "wal", or "memory" for an in-memory database.
        let _mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(ctx.map("switching to WAL"))?;
        conn.pragma_update(None, "synchronous", durability.pragma())
            .map_err(ctx.map("setting synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(ctx.map("enabling foreign keys"))?;
        conn.set_prepared_statement_cache_capacity(64);
        let mut store = SqliteStore {
            conn,
            ctx,
            durability,
            grouping: false,
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> StoreResult<()> {
        let ctx = &self.ctx;
        let doing = "migrating the schema";
        // Checked before taking the write lock, so a read-only look at a newer database
        // is refused without waiting; checked again under the lock below.
        let found: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(ctx.map(doing))?;
        check_version(found)?;
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx.map(doing))?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(ctx.map(doing))?;
        check_version(found)?;
        let start = usize::try_from(found).unwrap_or(0);
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(start) {
            tx.execute_batch(migration)
                .map_err(|e| ctx.error(e, &format!("applying schema migration {}", index + 1)))?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(ctx.map(doing))?;
        tx.commit().map_err(ctx.map(doing))
    }
}

fn check_version(found: i64) -> StoreResult<()> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 0 {
        return Err(StoreError::Database(format!(
            "the database has an invalid schema version {found}"
        )));
    }
    Ok(())
}

/// A run row as read, before its status text is checked.
struct RawRun {
    record: RunRecord,
    status: String,
}

fn raw_run(row: &Row<'_>) -> rusqlite::Result<RawRun> {
    let status: String = row.get(3)?;
    Ok(RawRun {
        record: RunRecord {
            id: row.get(0)?,
            workflow: row.get(1)?,
            version: row.get(2)?,
            // Replaced by `finish_run` once the text is checked.
            status: RunStatus::Runnable,
            input: row.get(4)?,
            output: row.get(5)?,
            error: row.get(6)?,
            waiting_on: row.get(7)?,
            wake_at: row.get(8)?,
            started_by: row.get(9)?,
            parent: row.get(10)?,
            created_at: row.get(11)?,
            updated_at: row.get(12)?,
        },
        status,
    })
}

fn finish_run(raw: RawRun) -> StoreResult<RunRecord> {
    let RawRun { mut record, status } = raw;
    record.status = RunStatus::parse(&status).ok_or_else(|| {
        StoreError::Database(format!(
            "run {} has an unknown status `{status}` (written by a newer flowrt?)",
            record.id
        ))
    })?;
    Ok(record)
}

fn token_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: row.get(0)?,
        user: row.get(1)?,
        name: row.get(2)?,
        created_at: row.get(3)?,
        expires_at: row.get(4)?,
        revoked_at: row.get(5)?,
    })
}

/// Appends `events` to `run`'s trail after its head — numbering the run first when it has
/// none (a new run, or one begun before the audit key) — and moves the head; `seal` is the
/// run's final state after the append ([`crate::audit::seal`]). In the caller's transaction.
fn append_events(
    tx: &Connection,
    ctx: &Context,
    run: &str,
    events: &[NewEvent],
    seal: Option<&str>,
) -> StoreResult<()> {
    use crate::audit::{Tail, key};
    let doing = "appending history events";
    let tail = match read_head(tx, ctx, run)? {
        Some(head) => Tail::Head(head),
        None => {
            let (last, hash): (i64, String) = tx
                .prepare_cached(
                    "SELECT seq, hash FROM events WHERE run = ?1 ORDER BY seq DESC LIMIT 1",
                )
                .and_then(|mut s| s.query_row([run], |row| Ok((row.get(0)?, row.get(1)?))))
                .optional()
                .map_err(ctx.map(doing))?
                .unwrap_or((0, crate::audit::GENESIS.to_string()));
            Tail::Unnumbered {
                installation: read_installation(tx, ctx)?,
                last,
                hash,
            }
        }
    };
    let append = crate::audit::append(key::current(), run, tail, events, seal);
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO events (run, seq, at, kind, step, attempt, line, duration_ms, data, prev_hash, hash, seal)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .map_err(ctx.map(doing))?;
    for (event, linked) in events.iter().zip(&append.records) {
        insert
            .execute(params![
                run,
                linked.seq,
                event.at,
                event.kind.as_str(),
                event.step,
                event.attempt,
                event.line,
                event.duration_ms,
                event.data,
                linked.prev_hash,
                linked.hash,
                linked.seal,
            ])
            .map_err(ctx.map(doing))?;
    }
    let head = &append.head;
    tx.prepare_cached(
        "INSERT INTO audit_heads (run, n, prev_run, seq, hash, keyed_from, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (run) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac",
    )
    .and_then(|mut s| {
        s.execute(params![
            head.run,
            head.n,
            head.prev_run,
            head.seq,
            head.hash,
            head.keyed_from,
            head.mac
        ])
    })
    .map_err(ctx.map(doing))?;
    if let Some(installation) = &append.installation {
        tx.prepare_cached("UPDATE audit_installation SET runs = ?1, last_run = ?2, mac = ?3")
            .and_then(|mut s| {
                s.execute(params![
                    installation.runs,
                    installation.last_run,
                    installation.mac
                ])
            })
            .map_err(ctx.map(doing))?;
    }
    Ok(())
}

const HEAD_COLUMNS: &str = "run, n, prev_run, seq, hash, keyed_from, mac";

fn head_row(row: &Row<'_>) -> rusqlite::Result<crate::audit::Head> {
    Ok(crate::audit::Head {
        run: row.get(0)?,
        n: row.get(1)?,
        prev_run: row.get(2)?,
        seq: row.get(3)?,
        hash: row.get(4)?,
        keyed_from: row.get(5)?,
        mac: row.get(6)?,
    })
}

fn read_head(tx: &Connection, ctx: &Context, run: &str) -> StoreResult<Option<crate::audit::Head>> {
    tx.prepare_cached(&format!(
        "SELECT {HEAD_COLUMNS} FROM audit_heads WHERE run = ?1"
    ))
    .and_then(|mut s| s.query_row([run], head_row).optional())
    .map_err(ctx.map("reading a run's audit head"))
}

/// The installation head; none before the first run was numbered (the row of migration 6).
fn read_installation(
    conn: &Connection,
    ctx: &Context,
) -> StoreResult<Option<crate::audit::Installation>> {
    let row = conn
        .prepare_cached("SELECT runs, last_run, mac FROM audit_installation WHERE id = 1")
        .and_then(|mut s| {
            s.query_row([], |row| {
                Ok(crate::audit::Installation {
                    runs: row.get(0)?,
                    last_run: row.get(1)?,
                    mac: row.get(2)?,
                })
            })
            .optional()
        })
        .map_err(ctx.map("reading the installation's audit head"))?;
    Ok(row.filter(|i| !(i.runs == 0 && i.mac.is_empty())))
}

/// The final state a record appended now seals: the run's, if it is final.
fn seal_of_row(conn: &Connection, ctx: &Context, run: &str) -> StoreResult<Option<String>> {
    let row: Option<(String, Option<String>, Option<String>)> = conn
        .prepare_cached("SELECT status, output, error FROM runs WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([run], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .optional()
        })
        .map_err(ctx.map("reading a run's state"))?;
    Ok(row.and_then(|(status, output, error)| {
        RunStatus::parse(&status)
            .and_then(|status| crate::audit::seal(status, output.as_deref(), error.as_deref()))
    }))
}

fn upsert_checkpoint(
    tx: &Connection,
    ctx: &Context,
    run: &str,
    checkpoint: &Checkpoint,
    now: Millis,
) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO checkpoints (run, format_version, program_hash, state, updated_at, calls)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (run) DO UPDATE SET
            format_version = excluded.format_version,
            program_hash = excluded.program_hash,
            state = excluded.state,
            updated_at = excluded.updated_at,
            calls = COALESCE(excluded.calls, checkpoints.calls)",
    )
    .and_then(|mut s| {
        s.execute(params![
            run,
            checkpoint.format_version,
            checkpoint.program_hash,
            checkpoint.state,
            now,
            checkpoint.calls
        ])
    })
    .map_err(ctx.map("writing a checkpoint"))?;
    Ok(())
}

/// A `gates` row, in the order of [`GATE_COLUMNS`].
pub(super) fn gate_row(row: &Row<'_>) -> rusqlite::Result<RawGate> {
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
    })
}

/// Writes a gate's row (replacing the one of the same run and name).
fn put_gate(conn: &Connection, ctx: &Context, gate: &GateRow, verb: &str) -> StoreResult<usize> {
    let r = RawGate::of(gate);
    conn.prepare_cached(&format!(
        "{verb} INTO gates ({GATE_COLUMNS}, deciders) VALUES
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
          ?19, ?20, ?21, ?22, ?23, ?24, ?25)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            r.run,
            r.name,
            r.kind,
            r.workflow,
            r.version,
            r.started_by,
            r.opened_at,
            r.approvers,
            r.approvers_json,
            r.escalate_to,
            r.escalate_json,
            r.escalate_at,
            r.escalated,
            r.deadline,
            r.outer_deadline,
            r.quorum,
            r.allow_self,
            r.prompt,
            r.context,
            r.shown_sha256,
            r.input_schema,
            r.timeout_caught,
            r.options,
            r.approvals,
            gate_index::deciders(gate),
        ])
    })
    .map_err(ctx.map("writing the gate index"))
}

/// Brings the gate index of the step's run in line with what the run waits on afterwards
/// (see [`gate_index::plan`]).
fn apply_gate_change(tx: &Connection, ctx: &Context, step: &StepCommit) -> StoreResult<()> {
    let (keep, write) =
        gate_index::plan(&step.run, step.waiting_on.as_deref(), step.gate.as_ref())?;
    let doing = "updating the gate index";
    match &keep {
        Some(name) => tx
            .prepare_cached("DELETE FROM gates WHERE run = ?1 AND name <> ?2")
            .and_then(|mut s| s.execute(params![step.run, name])),
        None => tx
            .prepare_cached("DELETE FROM gates WHERE run = ?1")
            .and_then(|mut s| s.execute([&step.run])),
    }
    .map_err(ctx.map(doing))?;
    if let Some(row) = write {
        put_gate(tx, ctx, row, "INSERT OR REPLACE")?;
    }
    Ok(())
}

fn exists(conn: &Connection, ctx: &Context, sql: &str, key: &str) -> StoreResult<bool> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.exists([key]))
        .map_err(ctx.map("looking up a key"))
}

const FINAL_STATUSES: &str = "('completed', 'failed', 'cancelled')";

impl Store for SqliteStore {
    fn deploy(&mut self, hash: &str, artifact: &[u8], now: Millis) -> StoreResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO versions (hash, artifact, deployed_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (hash) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![hash, artifact, now]))
            .map_err(self.ctx.map("deploying a version"))?;
        Ok(())
    }

    fn versions(&mut self) -> StoreResult<Vec<(String, Millis)>> {
        self.conn
            .prepare_cached("SELECT hash, deployed_at FROM versions ORDER BY deployed_at, hash")
            .and_then(|mut s| {
                s.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(self.ctx.map("listing deployed versions"))
    }

    fn note(&mut self, run: &str, event: &NewEvent) -> StoreResult<()> {
        let ctx = &self.ctx;
        let doing = "recording an event";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx.map(doing))?;
        if !exists(&tx, ctx, "SELECT 1 FROM runs WHERE id = ?1", run)? {
            return Err(StoreError::NoSuchRun(run.to_string()));
        }
        let seal = seal_of_row(&tx, ctx, run)?;
        append_events(&tx, ctx, run, std::slice::from_ref(event), seal.as_deref())?;
        tx.commit().map_err(ctx.map(doing))
    }

    fn create_token(&mut self, token: &TokenRecord, hash: &str) -> StoreResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO tokens (id, user, name, hash, created_at, expires_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    token.id,
                    token.user,
                    token.name,
                    hash,
                    token.created_at,
                    token.expires_at,
                    token.revoked_at
                ])
            })
            .map_err(self.ctx.map("creating a token"))?;
        Ok(())
    }

    fn token_by_hash(&mut self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        self.conn
            .prepare_cached(
                "SELECT id, user, name, created_at, expires_at, revoked_at FROM tokens
                 WHERE hash = ?1",
            )
            .and_then(|mut s| s.query_row([hash], token_row).optional())
            .map_err(self.ctx.map("reading a token"))
    }

    fn tokens(&mut self) -> StoreResult<Vec<TokenRecord>> {
        self.conn
            .prepare_cached(
                "SELECT id, user, name, created_at, expires_at, revoked_at FROM tokens
                 ORDER BY created_at, id",
            )
            .and_then(|mut s| s.query_map([], token_row)?.collect::<Result<Vec<_>, _>>())
            .map_err(self.ctx.map("listing tokens"))
    }

    fn revoke_token(&mut self, id: &str, now: Millis) -> StoreResult<bool> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            )
            .and_then(|mut s| s.execute(params![id, now]))
            .map_err(self.ctx.map("revoking a token"))?;
        Ok(changed > 0)
    }

    fn record_refusal(&mut self, refusal: &Refusal) -> StoreResult<()> {
        let r = refusal.bounded();
        let ctx = &self.ctx;
        let doing = "recording a refused request";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx.map(doing))?;
        let counted = tx
            .prepare_cached(
                "UPDATE refusals SET count = count + ?5, last_at = MAX(last_at, ?4)
                 WHERE rowid = (SELECT rowid FROM refusals
                                WHERE client = ?1 AND who = ?2 AND status = ?3 AND at > ?6
                                ORDER BY at DESC LIMIT 1)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    r.client,
                    r.who,
                    r.status,
                    r.at,
                    r.count,
                    r.at - super::REFUSAL_WINDOW_MS
                ])
            })
            .map_err(ctx.map(doing))?;
        if counted == 0 {
            tx.prepare_cached(
                "INSERT INTO refusals (at, who, request, status, reason, client, count, last_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    r.at, r.who, r.request, r.status, r.reason, r.client, r.count, r.last_at
                ])
            })
            .map_err(ctx.map(doing))?;
            // Rows are only ever deleted from the oldest end, so rowids stay contiguous.
            tx.prepare_cached(
                "DELETE FROM refusals WHERE rowid <= (SELECT MAX(rowid) FROM refusals) - ?1",
            )
            .and_then(|mut s| s.execute([super::REFUSAL_LOG_ROWS]))
            .map_err(ctx.map(doing))?;
        }
        tx.commit().map_err(ctx.map(doing))
    }

    fn count_events(&mut self, kind: EventKind, since: Millis) -> StoreResult<i64> {
        self.conn
            .prepare_cached("SELECT COUNT(*) FROM events WHERE kind = ?1 AND at >= ?2")
            .and_then(|mut s| s.query_row(params![kind.as_str(), since], |row| row.get(0)))
            .map_err(self.ctx.map("counting events"))
    }

    fn count_runs(&mut self) -> StoreResult<Vec<(String, RunStatus, i64)>> {
        let ctx = &self.ctx;
        let rows = self
            .conn
            .prepare_cached("SELECT workflow, status, COUNT(*) FROM runs GROUP BY workflow, status")
            .and_then(|mut s| {
                s.query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(ctx.map("counting runs"))?;
        rows.into_iter()
            .map(|(workflow, status, count)| {
                let status = RunStatus::parse(&status).ok_or_else(|| {
                    StoreError::Database(format!("a run of {workflow} has the status `{status}`"))
                })?;
                Ok((workflow, status, count))
            })
            .collect()
    }

    fn refusals(&mut self, limit: usize) -> StoreResult<Vec<Refusal>> {
        self.conn
            .prepare_cached(
                "SELECT at, who, request, status, reason, client, count, last_at FROM refusals
                 ORDER BY rowid DESC LIMIT ?1",
            )
            .and_then(|mut s| {
                s.query_map([limit as i64], |row| {
                    Ok(Refusal {
                        at: row.get(0)?,
                        who: row.get(1)?,
                        request: row.get(2)?,
                        status: row.get(3)?,
                        reason: row.get(4)?,
                        client: row.get(5)?,
                        count: row.get(6)?,
                        last_at: row.get(7)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(self.ctx.map("listing refused requests"))
    }

    fn artifact(&mut self, hash: &str) -> StoreResult<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT artifact FROM versions WHERE hash = ?1")
            .and_then(|mut s| s.query_row([hash], |row| row.get(0)).optional())
            .map_err(self.ctx.map("reading a deployed version"))
    }

    fn create_run(
        &mut self,
        run: &NewRun,
        checkpoint: &Checkpoint,
        events: &[NewEvent],
        owner: Option<&str>,
        lease_until: Millis,
        now: Millis,
    ) -> StoreResult<()> {
        let ctx = &self.ctx;
        let doing = "creating a run";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx.map(doing))?;
        if !exists(
            &tx,
            ctx,
            "SELECT 1 FROM versions WHERE hash = ?1",
            &run.version,
        )? {
            return Err(StoreError::Database(format!(
                "cannot create run {}: version {} is not deployed",
                run.id, run.version
            )));
        }
        if let Some(parent) = &run.parent
            && !exists(&tx, ctx, "SELECT 1 FROM runs WHERE id = ?1", parent)?
        {
            return Err(StoreError::NoSuchRun(parent.clone()));
        }
        if exists(&tx, ctx, "SELECT 1 FROM runs WHERE id = ?1", &run.id)? {
            return Err(StoreError::Database(format!(
                "cannot create run {}: a run with that id exists",
                run.id
            )));
        }
        tx.prepare_cached(
            "INSERT INTO runs (id, workflow, version, status, input, started_by, parent,
                               created_at, updated_at, owner, lease_until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10)",
        )
        .and_then(|mut s| {
            s.execute(params![
                run.id,
                run.workflow,
                run.version,
                RunStatus::Runnable.as_str(),
                run.input,
                run.started_by,
                run.parent,
                now,
                owner,
                owner.map(|_| lease_until),
            ])
        })
        .map_err(ctx.map(doing))?;
        upsert_checkpoint(&tx, ctx, &run.id, checkpoint, now)?;
        // Even with no events: the run is numbered when it is created.
        append_events(&tx, ctx, &run.id, events, None)?;
        tx.commit().map_err(ctx.map(doing))
    }

    fn claim(
        &mut self,
        run: &str,
        owner: &str,
        lease_until: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        let ctx = &self.ctx;
        let doing = "claiming a run";
        // One statement: atomic on its own.
        let changed = self
            .conn
            .prepare_cached(&format!(
                "UPDATE runs SET owner = ?2, lease_until = ?3
                 WHERE id = ?1 AND status NOT IN {FINAL_STATUSES}
                   AND (owner IS NULL OR owner = ?2 OR lease_until IS NULL OR lease_until < ?4)"
            ))
            .and_then(|mut s| s.execute(params![run, owner, lease_until, now]))
            .map_err(ctx.map(doing))?;
        if changed == 0 && !exists(&self.conn, ctx, "SELECT 1 FROM runs WHERE id = ?1", run)? {
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
        let ctx = &self.ctx;
        let doing = "claiming ready runs";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx.map(doing))?;
        let ids = {
            let mut select = tx
                .prepare_cached(
                    "SELECT id FROM runs
                     WHERE ((status = 'runnable'
                             OR (status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ?2))
                            AND (owner IS NULL OR owner = ?1 OR lease_until IS NULL
                                 OR lease_until < ?2))
                        OR (status = 'waiting' AND waiting_on LIKE 'tool %'
                            AND (owner IS NULL OR lease_until IS NULL OR lease_until < ?2))
                     ORDER BY created_at, rowid
                     LIMIT ?3",
                )
                .map_err(ctx.map(doing))?;
            let rows = select
                .query_map(params![owner, now, limit], |row| row.get::<_, String>(0))
                .map_err(ctx.map(doing))?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
                .map_err(ctx.map(doing))?
        };
        {
            let mut update = tx
                .prepare_cached("UPDATE runs SET owner = ?2, lease_until = ?3 WHERE id = ?1")
                .map_err(ctx.map(doing))?;
            for id in &ids {
                update
                    .execute(params![id, owner, lease_until])
                    .map_err(ctx.map(doing))?;
            }
        }
        tx.commit().map_err(ctx.map(doing))?;
        Ok(ids)
    }

    fn release(&mut self, run: &str, owner: &str) -> StoreResult<()> {
        let ctx = &self.ctx;
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE runs SET owner = NULL, lease_until = NULL WHERE id = ?1 AND owner = ?2",
            )
            .and_then(|mut s| s.execute(params![run, owner]))
            .map_err(ctx.map("releasing a run"))?;
        if changed == 0 && !exists(&self.conn, ctx, "SELECT 1 FROM runs WHERE id = ?1", run)? {
            return Err(StoreError::NoSuchRun(run.to_string()));
        }
        Ok(())
    }

    fn renew_claims(&mut self, owner: &str, lease_until: Millis) -> StoreResult<u64> {
        let changed = self
            .conn
            .prepare_cached(&format!(
                "UPDATE runs SET lease_until = ?2
                 WHERE owner = ?1 AND status NOT IN {FINAL_STATUSES}
                   AND (lease_until IS NULL OR lease_until < ?2)"
            ))
            .and_then(|mut s| s.execute(params![owner, lease_until]))
            .map_err(self.ctx.map("renewing claims"))?;
        Ok(changed as u64)
    }

    fn load(&mut self, run: &str) -> StoreResult<Option<(RunRecord, Checkpoint)>> {
        let ctx = &self.ctx;
        let row = self
            .conn
            .prepare_cached(
                "SELECT r.id, r.workflow, r.version, r.status, r.input, r.output, r.error,
                        r.waiting_on, r.wake_at, r.started_by, r.parent, r.created_at,
                        r.updated_at, c.format_version, c.program_hash, c.state, c.calls
                 FROM runs r LEFT JOIN checkpoints c ON c.run = r.id
                 WHERE r.id = ?1",
            )
            .and_then(|mut s| {
                s.query_row([run], |row| {
                    let raw = raw_run(row)?;
                    let format_version: Option<i64> = row.get(13)?;
                    let program_hash: Option<String> = row.get(14)?;
                    let state: Option<Vec<u8>> = row.get(15)?;
                    let calls: Option<String> = row.get(16)?;
                    let checkpoint = match (format_version, program_hash, state) {
                        (Some(format_version), Some(program_hash), Some(state)) => {
                            Some(Checkpoint {
                                format_version,
                                program_hash,
                                state,
                                calls,
                            })
                        }
                        _ => None,
                    };
                    Ok((raw, checkpoint))
                })
                .optional()
            })
            .map_err(ctx.map("loading a run"))?;
        let Some((raw, checkpoint)) = row else {
            return Ok(None);
        };
        let record = finish_run(raw)?;
        let checkpoint = checkpoint
            .ok_or_else(|| StoreError::Database(format!("run {} has no checkpoint", record.id)))?;
        Ok(Some((record, checkpoint)))
    }

    fn commit(&mut self, commits: &[StepCommit]) -> StoreResult<()> {
        let ctx = &self.ctx;
        let doing = "committing steps";
        // Dropping the transaction without `commit` rolls everything back.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx.map(doing))?;
        for step in commits {
            let holder: Option<Option<String>> = tx
                .prepare_cached("SELECT owner FROM runs WHERE id = ?1")
                .and_then(|mut s| s.query_row([&step.run], |row| row.get(0)).optional())
                .map_err(ctx.map(doing))?;
            match holder {
                None => return Err(StoreError::NoSuchRun(step.run.clone())),
                Some(holder) if holder.as_deref() != Some(step.owner.as_str()) => {
                    return Err(StoreError::NotOwner {
                        run: step.run.clone(),
                    });
                }
                Some(_) => {}
            }
            if let Some(checkpoint) = &step.checkpoint {
                upsert_checkpoint(&tx, ctx, &step.run, checkpoint, step.now)?;
            }
            if !step.events.is_empty() {
                let seal =
                    crate::audit::seal(step.status, step.output.as_deref(), step.error.as_deref());
                append_events(&tx, ctx, &step.run, &step.events, seal.as_deref())?;
            }
            tx.prepare_cached(
                "UPDATE runs SET status = ?2, output = ?3, error = ?4, waiting_on = ?5,
                                 wake_at = ?6, updated_at = ?7
                 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    step.run,
                    step.status.as_str(),
                    step.output,
                    step.error,
                    step.waiting_on,
                    step.wake_at,
                    step.now,
                ])
            })
            .map_err(ctx.map(doing))?;
            apply_gate_change(&tx, ctx, step)?;
            outbox::sqlite::apply(&tx, &step.outbox).map_err(ctx.map("writing the outbox"))?;
        }
        tx.commit().map_err(ctx.map(doing))
    }

    fn run(&mut self, run: &str) -> StoreResult<Option<RunRecord>> {
        let raw = self
            .conn
            .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))
            .and_then(|mut s| s.query_row([run], raw_run).optional())
            .map_err(self.ctx.map("reading a run"))?;
        raw.map(finish_run).transpose()
    }

    fn runs(&mut self, status: Option<RunStatus>) -> StoreResult<Vec<RunRecord>> {
        let ctx = &self.ctx;
        let doing = "listing runs";
        let raws = match status {
            Some(status) => self
                .conn
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE status = ?1
                     ORDER BY created_at DESC, rowid DESC"
                ))
                .and_then(|mut s| {
                    s.query_map([status.as_str()], raw_run)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                }),
            None => self
                .conn
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, rowid DESC"
                ))
                .and_then(|mut s| s.query_map([], raw_run)?.collect()),
        }
        .map_err(ctx.map(doing))?;
        raws.into_iter().map(finish_run).collect()
    }

    fn history(&mut self, run: &str) -> StoreResult<Vec<Event>> {
        /// The `kind` column, typed as it is read.
        struct KindColumn(EventKind);
        impl rusqlite::types::FromSql for KindColumn {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                let text = value.as_str()?;
                EventKind::parse(text).map(KindColumn).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(
                        format!("unknown event kind `{text}` (written by a newer flowrt?)").into(),
                    )
                })
            }
        }
        self.conn
            .prepare_cached(
                "SELECT seq, at, kind, step, attempt, line, duration_ms, data, prev_hash, hash, seal
                 FROM events WHERE run = ?1 ORDER BY seq",
            )
            .and_then(|mut s| {
                s.query_map([run], |row| {
                    Ok(Event {
                        seq: row.get(0)?,
                        at: row.get(1)?,
                        kind: row.get::<_, KindColumn>(2)?.0,
                        step: row.get(3)?,
                        attempt: row.get(4)?,
                        line: row.get(5)?,
                        duration_ms: row.get(6)?,
                        data: row.get(7)?,
                        prev_hash: row.get(8)?,
                        hash: row.get(9)?,
                        seal: row.get(10)?,
                    })
                })?
                .collect()
            })
            .map_err(self.ctx.map("reading a run's history"))
    }

    fn audit_head(&mut self, run: &str) -> StoreResult<Option<crate::audit::Head>> {
        read_head(&self.conn, &self.ctx, run)
    }

    fn audit_heads(
        &mut self,
    ) -> StoreResult<(Option<crate::audit::Installation>, Vec<crate::audit::Head>)> {
        let installation = read_installation(&self.conn, &self.ctx)?;
        let heads = self
            .conn
            .prepare_cached(&format!(
                "SELECT {HEAD_COLUMNS} FROM audit_heads ORDER BY n"
            ))
            .and_then(|mut s| s.query_map([], head_row)?.collect())
            .map_err(self.ctx.map("reading the audit heads"))?;
        Ok((installation, heads))
    }

    fn gates(&mut self, run: Option<&str>) -> StoreResult<Vec<GateRow>> {
        let raws: Vec<RawGate> = match run {
            Some(run) => self
                .conn
                .prepare_cached(&format!(
                    "SELECT {GATE_COLUMNS} FROM gates WHERE run = ?1 ORDER BY opened_at, name"
                ))
                .and_then(|mut s| s.query_map([run], gate_row)?.collect()),
            None => self
                .conn
                .prepare_cached(&format!(
                    "SELECT {GATE_COLUMNS} FROM gates ORDER BY opened_at, run, name"
                ))
                .and_then(|mut s| s.query_map([], gate_row)?.collect()),
        }
        .map_err(self.ctx.map("reading the gate index"))?;
        raws.into_iter().map(RawGate::finish).collect()
    }

    fn gates_for(&mut self, user: &str, roles: &[String]) -> StoreResult<Vec<GateRow>> {
        let patterns = gate_index::decider_patterns(user, roles);
        let named = (1..=patterns.len())
            .map(|i| format!("deciders LIKE ?{i} ESCAPE '\\'"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let raws: Vec<RawGate> = self
            .conn
            .prepare(&format!(
                "SELECT {GATE_COLUMNS} FROM gates WHERE {named} ORDER BY opened_at, run, name"
            ))
            .and_then(|mut s| {
                s.query_map(rusqlite::params_from_iter(&patterns), gate_row)?
                    .collect()
            })
            .map_err(self.ctx.map("reading the gate index"))?;
        raws.into_iter().map(RawGate::finish).collect()
    }

    fn gate(&mut self, run: &str, name: &str) -> StoreResult<Option<GateRow>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {GATE_COLUMNS} FROM gates WHERE run = ?1 AND name = ?2"
            ))
            .and_then(|mut s| s.query_row([run, name], gate_row).optional())
            .map_err(self.ctx.map("reading the gate index"))?
            .map(RawGate::finish)
            .transpose()
    }

    fn gate_counts(&mut self) -> StoreResult<GateCounts> {
        self.conn
            .prepare_cached(
                "SELECT COALESCE(SUM(kind = 'approval'), 0), COALESCE(SUM(kind = 'input'), 0),
                        MIN(opened_at)
                 FROM gates",
            )
            .and_then(|mut s| {
                s.query_row([], |row| {
                    Ok(GateCounts {
                        approvals: row.get(0)?,
                        inputs: row.get(1)?,
                        oldest_opened_at: row.get(2)?,
                    })
                })
            })
            .map_err(self.ctx.map("counting open gates"))
    }

    fn index_gate(&mut self, row: &GateRow) -> StoreResult<bool> {
        let ctx = &self.ctx;
        let doing = "indexing an open gate";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx.map(doing))?;
        let waiting: Option<(String, Option<String>)> = tx
            .prepare_cached("SELECT status, waiting_on FROM runs WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([&row.run], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(ctx.map(doing))?;
        let expected = crate::history::WaitingOn::gate(row.kind, &row.name).to_string();
        let still_there = waiting.is_some_and(|(status, waiting_on)| {
            status == RunStatus::Waiting.as_str() && waiting_on.as_deref() == Some(&expected)
        });
        if !still_there {
            return Ok(false);
        }
        let written = put_gate(&tx, ctx, row, "INSERT OR IGNORE")? > 0;
        tx.commit().map_err(ctx.map(doing))?;
        Ok(written)
    }

    fn cancel(&mut self, run: &str, by: &str, now: Millis) -> StoreResult<bool> {
        let ctx = &self.ctx;
        let doing = "cancelling a run";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx.map(doing))?;
        let status: Option<String> = tx
            .prepare_cached("SELECT status FROM runs WHERE id = ?1")
            .and_then(|mut s| s.query_row([run], |row| row.get(0)).optional())
            .map_err(ctx.map(doing))?;
        let Some(status) = status else {
            return Err(StoreError::NoSuchRun(run.to_string()));
        };
        // An unknown status (from a newer flowrt) is treated as not final.
        if RunStatus::parse(&status).is_some_and(RunStatus::is_final) {
            return Ok(false);
        }
        tx.prepare_cached(
            "UPDATE runs SET status = 'cancelled', waiting_on = NULL, wake_at = NULL,
                             updated_at = ?2, owner = NULL, lease_until = NULL
             WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![run, now]))
        .map_err(ctx.map(doing))?;
        tx.prepare_cached("DELETE FROM gates WHERE run = ?1")
            .and_then(|mut s| s.execute([run]))
            .map_err(ctx.map(doing))?;
        let event = NewEvent {
            at: now,
            kind: EventKind::RunCancelled,
            step: None,
            attempt: None,
            line: None,
            duration_ms: None,
            data: serde_json::json!({ "by": by }).to_string(),
        };
        let seal = seal_of_row(&tx, ctx, run)?;
        append_events(&tx, ctx, run, std::slice::from_ref(&event), seal.as_deref())?;
        tx.commit().map_err(ctx.map(doing))?;
        Ok(true)
    }

    fn setting(&mut self, key: &str) -> StoreResult<Option<String>> {
        self.conn
            .prepare_cached("SELECT value FROM settings WHERE key = ?1")
            .and_then(|mut s| {
                let mut rows = s.query_map([key], |row| row.get::<_, String>(0))?;
                rows.next().transpose()
            })
            .map_err(self.ctx.map("reading a setting"))
    }

    fn set_setting(&mut self, key: &str, value: &str) -> StoreResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut s| s.execute([key, value]))
            .map(|_| ())
            .map_err(self.ctx.map("writing a setting"))
    }

    fn trace_of(&mut self, run: &str) -> StoreResult<Option<String>> {
        self.conn
            .prepare_cached("SELECT trace FROM runs WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([run], |row| row.get::<_, Option<String>>(0))
                    .optional()
            })
            .map(Option::flatten)
            .map_err(self.ctx.map("reading a run's trace context"))
    }

    fn set_trace(&mut self, run: &str, trace: &str) -> StoreResult<()> {
        self.conn
            .prepare_cached("UPDATE runs SET trace = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute([run, trace]))
            .map(|_| ())
            .map_err(self.ctx.map("writing a run's trace context"))
    }

    fn begin_group(&mut self) -> StoreResult<()> {
        if !self.grouping {
            self.conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(self.ctx.map("starting a group commit"))?;
            self.grouping = true;
        }
        Ok(())
    }

    fn flush(&mut self) -> StoreResult<()> {
        if !self.grouping {
            return Ok(());
        }
        // A commit with synchronous=FULL syncs the WAL file, and with it every transaction
        // appended before; it must write something to be a commit at all.
        self.conn
            .pragma_update(None, "synchronous", self.durability.pragma())
            .map_err(self.ctx.map("ending a group commit"))?;
        self.conn
            .execute(
                "INSERT INTO settings (key, value) VALUES ('group_commit', '1')
                 ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                [],
            )
            .map_err(self.ctx.map("making a group commit durable"))?;
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(self.ctx.map("starting a group commit"))?;
        Ok(())
    }

    fn end_group(&mut self) -> StoreResult<()> {
        if !self.grouping {
            return Ok(());
        }
        self.flush()?;
        self.conn
            .pragma_update(None, "synchronous", self.durability.pragma())
            .map_err(self.ctx.map("ending a group commit"))?;
        self.grouping = false;
        Ok(())
    }

    fn next_wake(&mut self) -> StoreResult<Option<Millis>> {
        self.conn
            .prepare_cached(
                "SELECT MIN(wake_at) FROM runs WHERE status = 'waiting' AND wake_at IS NOT NULL",
            )
            .and_then(|mut s| s.query_row([], |row| row.get(0)))
            .map_err(self.ctx.map("finding the next timer"))
    }

    fn claim_notifications(
        &mut self,
        owner: &str,
        lease_until: Millis,
        now: Millis,
        limit: usize,
        only: Option<&str>,
    ) -> StoreResult<Vec<OutboxRow>> {
        let raws = outbox::sqlite::claim(&self.conn, owner, lease_until, now, limit, only)
            .map_err(self.ctx.map("claiming notifications"))?;
        outbox::sqlite::finish_all(raws)
    }

    fn retry_notification(&mut self, key: &OutboxKey, owner: &str, at: Millis) -> StoreResult<()> {
        outbox::sqlite::retry(&self.conn, key, owner, at)
            .map_err(self.ctx.map("scheduling a notification again"))?;
        Ok(())
    }

    fn drop_notification(&mut self, key: &OutboxKey) -> StoreResult<()> {
        outbox::sqlite::remove(&self.conn, key).map_err(self.ctx.map("dropping a notification"))?;
        Ok(())
    }

    fn notifications(&mut self, only: Option<&str>) -> StoreResult<Vec<OutboxRow>> {
        let raws =
            outbox::sqlite::list(&self.conn, only).map_err(self.ctx.map("reading the outbox"))?;
        outbox::sqlite::finish_all(raws)
    }

    fn next_notification(&mut self, only: Option<&str>) -> StoreResult<Option<Millis>> {
        outbox::sqlite::next(&self.conn, only).map_err(self.ctx.map("reading the outbox"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const OWNER: &str = "worker-a";
    const OTHER: &str = "worker-b";

    fn checkpoint(state: &[u8]) -> Checkpoint {
        Checkpoint {
            format_version: 1,
            program_hash: "prog".to_string(),
            state: state.to_vec(),
            calls: None,
        }
    }

    fn event(kind: EventKind, at: Millis) -> NewEvent {
        NewEvent {
            at,
            kind,
            step: Some("tool".to_string()),
            attempt: Some(1),
            line: Some(7),
            duration_ms: Some(3),
            data: "{}".to_string(),
        }
    }

    fn new_run(id: &str) -> NewRun {
        NewRun {
            id: id.to_string(),
            workflow: "ship".to_string(),
            version: "v1".to_string(),
            input: r#"{"n":1}"#.to_string(),
            started_by: "alice".to_string(),
            parent: None,
        }
    }

    /// A store with version `v1` deployed.
    fn store() -> SqliteStore {
        let mut store = SqliteStore::in_memory().unwrap();
        store.deploy("v1", b"artifact", 1).unwrap();
        store
    }

    fn create(store: &mut SqliteStore, id: &str, owner: Option<&str>, now: Millis) {
        store
            .create_run(
                &new_run(id),
                &checkpoint(b"s0"),
                &[event(EventKind::RunStarted, now)],
                owner,
                now + 1000,
                now,
            )
            .unwrap();
    }

    fn step(run: &str, owner: &str, status: RunStatus, now: Millis) -> StepCommit {
        StepCommit {
            run: run.to_string(),
            owner: owner.to_string(),
            checkpoint: Some(checkpoint(format!("at {now}").as_bytes())),
            events: vec![
                event(EventKind::StepStarted, now),
                event(EventKind::StepCompleted, now),
            ],
            status,
            output: None,
            error: None,
            waiting_on: None,
            wake_at: None,
            now,
            gate: None,
            outbox: Default::default(),
        }
    }

    fn owner_of(store: &SqliteStore, run: &str) -> Option<String> {
        store
            .conn
            .query_row("SELECT owner FROM runs WHERE id = ?1", [run], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn fresh_database_is_migrated_and_reopening_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/flow.db");
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let fk: i64 = store
            .conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let normal = SqliteStore::open_with(&path, Durability::Normal).unwrap();
        let sync: i64 = normal
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "synchronous=NORMAL");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flow.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 5)
            .unwrap();
        drop(conn);
        match SqliteStore::open(&path) {
            Err(StoreError::NewerSchema { found, supported }) => {
                assert_eq!(found, SCHEMA_VERSION + 5);
                assert_eq!(supported, SCHEMA_VERSION);
                let message = StoreError::NewerSchema { found, supported }.to_string();
                assert!(message.contains("newer flowrt"), "{message}");
            }
            other => panic!("expected NewerSchema, got {other:?}"),
        }
    }

    #[test]
    fn a_group_commit_syncs_once_and_restores_full_durability() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("g.db")).unwrap();
        let synchronous = |store: &SqliteStore| -> i64 {
            store
                .conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap()
        };
        assert_eq!(synchronous(&store), 2, "FULL");
        store.begin_group().unwrap();
        assert_eq!(synchronous(&store), 1, "NORMAL inside a group");
        store.deploy("v1", b"a", 1).unwrap();
        store.flush().unwrap();
        assert_eq!(synchronous(&store), 1, "still grouping after a flush");
        store.deploy("v2", b"b", 2).unwrap();
        store.end_group().unwrap();
        assert_eq!(synchronous(&store), 2, "FULL again");
        assert_eq!(store.setting("group_commit").unwrap().as_deref(), Some("2"));
        drop(store);
        let mut reopened = SqliteStore::open(&dir.path().join("g.db")).unwrap();
        assert_eq!(reopened.versions().unwrap().len(), 2);
        // Outside a group, flush and end_group change nothing.
        reopened.flush().unwrap();
        reopened.end_group().unwrap();
        assert_eq!(
            reopened.setting("group_commit").unwrap().as_deref(),
            Some("2")
        );
    }

    #[test]
    fn deploy_is_idempotent() {
        let mut store = store();
        store.deploy("v1", b"artifact", 2).unwrap();
        assert_eq!(
            store.artifact("v1").unwrap().as_deref(),
            Some(&b"artifact"[..])
        );
        assert_eq!(store.artifact("v2").unwrap(), None);
        let count: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM versions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1);
    }

    #[test]
    fn create_and_load_round_trip() {
        let mut store = store();
        create(&mut store, "r1", Some(OWNER), 10);
        let (record, cp) = store.load("r1").unwrap().unwrap();
        assert_eq!(cp, checkpoint(b"s0"));
        assert_eq!(
            record,
            RunRecord {
                id: "r1".to_string(),
                workflow: "ship".to_string(),
                version: "v1".to_string(),
                status: RunStatus::Runnable,
                input: r#"{"n":1}"#.to_string(),
                output: None,
                error: None,
                waiting_on: None,
                wake_at: None,
                started_by: "alice".to_string(),
                parent: None,
                created_at: 10,
                updated_at: 10,
            }
        );
        assert_eq!(store.run("r1").unwrap(), Some(record));
        assert_eq!(store.load("nope").unwrap(), None);
        assert_eq!(store.run("nope").unwrap(), None);
        let history = store.history("r1").unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].seq, 1);
        assert_eq!(history[0].kind, EventKind::RunStarted);
        assert_eq!(owner_of(&store, "r1").as_deref(), Some(OWNER));
    }

    #[test]
    fn create_refuses_unknown_version_duplicate_id_and_missing_parent() {
        let mut store = store();
        let mut run = new_run("r1");
        run.version = "v9".to_string();
        let err = store
            .create_run(&run, &checkpoint(b""), &[], None, 0, 1)
            .unwrap_err();
        assert!(err.to_string().contains("not deployed"), "{err}");
        create(&mut store, "r1", None, 1);
        let err = store
            .create_run(&new_run("r1"), &checkpoint(b""), &[], None, 0, 1)
            .unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        let mut child = new_run("c1");
        child.parent = Some("ghost".to_string());
        assert!(matches!(
            store.create_run(&child, &checkpoint(b""), &[], None, 0, 1),
            Err(StoreError::NoSuchRun(p)) if p == "ghost"
        ));
        child.parent = Some("r1".to_string());
        store
            .create_run(&child, &checkpoint(b""), &[], None, 0, 1)
            .unwrap();
        assert_eq!(
            store.run("c1").unwrap().unwrap().parent.as_deref(),
            Some("r1")
        );
    }

    #[test]
    fn commit_appends_events_and_updates_status() {
        let mut store = store();
        create(&mut store, "r1", Some(OWNER), 10);
        store
            .commit(&[step("r1", OWNER, RunStatus::Runnable, 20)])
            .unwrap();
        let mut last = step("r1", OWNER, RunStatus::Completed, 30);
        last.output = Some("42".to_string());
        last.checkpoint = None;
        store.commit(&[last]).unwrap();
        let history = store.history("r1").unwrap();
        let seqs: Vec<i64> = history.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert_eq!(history[1].kind, EventKind::StepStarted);
        assert_eq!(history[1].step.as_deref(), Some("tool"));
        assert_eq!(history[1].line, Some(7));
        let (record, cp) = store.load("r1").unwrap().unwrap();
        assert_eq!(record.status, RunStatus::Completed);
        assert_eq!(record.output.as_deref(), Some("42"));
        assert_eq!(record.updated_at, 30);
        // A commit without a checkpoint keeps the previous one.
        assert_eq!(cp.state, b"at 20");
    }

    #[test]
    fn commit_sets_and_clears_timers() {
        let mut store = store();
        create(&mut store, "r1", Some(OWNER), 10);
        create(&mut store, "r2", Some(OWNER), 11);
        assert_eq!(store.next_wake().unwrap(), None);
        let mut sleep1 = step("r1", OWNER, RunStatus::Waiting, 20);
        sleep1.waiting_on = Some("timer".to_string());
        sleep1.wake_at = Some(500);
        let mut sleep2 = sleep1.clone();
        sleep2.run = "r2".to_string();
        sleep2.wake_at = Some(300);
        store.commit(&[sleep1, sleep2]).unwrap();
        assert_eq!(store.next_wake().unwrap(), Some(300));
        let record = store.run("r1").unwrap().unwrap();
        assert_eq!(record.waiting_on.as_deref(), Some("timer"));
        assert_eq!(record.wake_at, Some(500));
        store
            .commit(&[step("r2", OWNER, RunStatus::Runnable, 400)])
            .unwrap();
        assert_eq!(store.next_wake().unwrap(), Some(500));
        assert_eq!(store.run("r2").unwrap().unwrap().wake_at, None);
    }

    #[test]
    fn commit_with_a_wrong_owner_changes_nothing() {
        let mut store = store();
        create(&mut store, "mine", Some(OWNER), 10);
        create(&mut store, "theirs", Some(OTHER), 11);
        create(&mut store, "free", None, 12);
        let before_mine = store.load("mine").unwrap();
        let before_theirs = store.load("theirs").unwrap();
        let result = store.commit(&[
            step("mine", OWNER, RunStatus::Completed, 20),
            step("theirs", OWNER, RunStatus::Completed, 20),
        ]);
        assert!(
            matches!(&result, Err(StoreError::NotOwner { run }) if run == "theirs"),
            "{result:?}"
        );
        assert_eq!(store.load("mine").unwrap(), before_mine);
        assert_eq!(store.load("theirs").unwrap(), before_theirs);
        assert_eq!(store.history("mine").unwrap().len(), 1);
        assert_eq!(store.history("theirs").unwrap().len(), 1);
        // An unclaimed run cannot be committed to either, nor a missing one.
        assert!(matches!(
            store.commit(&[step("free", OWNER, RunStatus::Completed, 20)]),
            Err(StoreError::NotOwner { .. })
        ));
        assert!(matches!(
            store.commit(&[step("ghost", OWNER, RunStatus::Completed, 20)]),
            Err(StoreError::NoSuchRun(r)) if r == "ghost"
        ));
        // The store is still usable after the rollback.
        store
            .commit(&[step("mine", OWNER, RunStatus::Completed, 30)])
            .unwrap();
        assert_eq!(store.history("mine").unwrap().len(), 3);
    }

    #[test]
    fn a_live_lease_blocks_another_owner_until_it_expires() {
        let mut store = store();
        create(&mut store, "r1", None, 10);
        assert!(store.claim("r1", OWNER, 100, 10).unwrap());
        // The same owner may renew.
        assert!(store.claim("r1", OWNER, 150, 20).unwrap());
        assert!(!store.claim("r1", OTHER, 200, 149).unwrap());
        assert!(!store.claim("r1", OTHER, 200, 150).unwrap());
        assert_eq!(owner_of(&store, "r1").as_deref(), Some(OWNER));
        // Expired: taken over.
        assert!(store.claim("r1", OTHER, 300, 151).unwrap());
        assert_eq!(owner_of(&store, "r1").as_deref(), Some(OTHER));
        // The former owner's commits are now refused.
        assert!(matches!(
            store.commit(&[step("r1", OWNER, RunStatus::Runnable, 160)]),
            Err(StoreError::NotOwner { .. })
        ));
        // Released: anyone may claim at once.
        store.release("r1", OWNER).unwrap(); // not the owner: no effect
        assert_eq!(owner_of(&store, "r1").as_deref(), Some(OTHER));
        store.release("r1", OTHER).unwrap();
        assert_eq!(owner_of(&store, "r1"), None);
        assert!(store.claim("r1", OWNER, 400, 170).unwrap());
        assert!(matches!(
            store.claim("ghost", OWNER, 400, 170),
            Err(StoreError::NoSuchRun(_))
        ));
        assert!(matches!(
            store.release("ghost", OWNER),
            Err(StoreError::NoSuchRun(_))
        ));
    }

    #[test]
    fn final_runs_are_never_claimed() {
        let mut store = store();
        create(&mut store, "r1", Some(OWNER), 10);
        store
            .commit(&[step("r1", OWNER, RunStatus::Completed, 20)])
            .unwrap();
        store.release("r1", OWNER).unwrap();
        assert!(!store.claim("r1", OWNER, 100, 30).unwrap());
        assert!(store.claim_ready(OWNER, 100, 30, 10).unwrap().is_empty());
    }

    #[test]
    fn runs_are_counted_by_workflow_and_status() {
        let mut store = store();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            create(&mut store, id, Some(OWNER), 10 + i as i64);
        }
        let mut done = step("b", OWNER, RunStatus::Completed, 20);
        done.checkpoint = None;
        store.commit(&[done]).unwrap();
        let mut counts = store.count_runs().unwrap();
        counts.sort_by_key(|(_, status, _)| status.as_str());
        let workflow = new_run("a").workflow;
        assert_eq!(
            counts,
            vec![
                (workflow.clone(), RunStatus::Completed, 1),
                (workflow, RunStatus::Runnable, 2),
            ]
        );
    }

    #[test]
    fn claim_ready_returns_due_and_runnable_runs_only() {
        let mut store = store();
        // Created in this order; claim_ready returns them oldest first.
        for (i, id) in [
            "runnable", "due", "later", "approval", "done", "taken", "expired",
        ]
        .iter()
        .enumerate()
        {
            create(&mut store, id, Some(OWNER), 10 + i as i64);
        }
        let mut due = step("due", OWNER, RunStatus::Waiting, 20);
        due.waiting_on = Some("timer".to_string());
        due.wake_at = Some(100);
        let mut later = due.clone();
        later.run = "later".to_string();
        later.wake_at = Some(101);
        let mut approval = step("approval", OWNER, RunStatus::Waiting, 20);
        approval.waiting_on = Some("approval gate".to_string());
        let done = step("done", OWNER, RunStatus::Failed, 20);
        store.commit(&[due, later, approval, done]).unwrap();
        for id in ["runnable", "due", "later", "approval", "done"] {
            store.release(id, OWNER).unwrap();
        }
        // "taken" is held by another live owner; "expired" by another whose lease ran out.
        store.release("taken", OWNER).unwrap();
        assert!(store.claim("taken", OTHER, 1000, 20).unwrap());
        store.release("expired", OWNER).unwrap();
        assert!(store.claim("expired", OTHER, 50, 20).unwrap());

        let claimed = store.claim_ready("me", 500, 100, 10).unwrap();
        assert_eq!(claimed, vec!["runnable", "due", "expired"]);
        for id in &claimed {
            assert_eq!(owner_of(&store, id).as_deref(), Some("me"));
        }
        // Status is left for the driver to commit.
        assert_eq!(
            store.run("due").unwrap().unwrap().status,
            RunStatus::Waiting
        );
        // Another process finds nothing more while the leases live.
        assert!(store.claim_ready("you", 500, 100, 10).unwrap().is_empty());
        // The limit is honoured, oldest first.
        let mut store2 = self::store();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            create(&mut store2, id, None, i as i64);
        }
        assert_eq!(store2.claim_ready("me", 10, 5, 2).unwrap(), vec!["a", "b"]);
        assert_eq!(store2.claim_ready("you", 10, 5, 2).unwrap(), vec!["c"]);
    }

    #[test]
    fn cancel_finishes_a_live_run_once() {
        let mut store = store();
        create(&mut store, "r1", Some(OWNER), 10);
        assert!(store.cancel("r1", "bob", 50).unwrap());
        let record = store.run("r1").unwrap().unwrap();
        assert_eq!(record.status, RunStatus::Cancelled);
        assert_eq!(record.updated_at, 50);
        assert_eq!(owner_of(&store, "r1"), None);
        let history = store.history("r1").unwrap();
        let last = history.last().unwrap();
        assert_eq!((last.seq, last.kind), (2, EventKind::RunCancelled));
        let data: serde_json::Value = serde_json::from_str(&last.data).unwrap();
        assert_eq!(data, serde_json::json!({ "by": "bob" }));
        // Already final.
        assert!(!store.cancel("r1", "bob", 60).unwrap());
        assert_eq!(store.history("r1").unwrap().len(), 2);
        // The driver that held it can no longer commit.
        assert!(matches!(
            store.commit(&[step("r1", OWNER, RunStatus::Runnable, 70)]),
            Err(StoreError::NotOwner { .. })
        ));
        assert!(matches!(
            store.cancel("ghost", "bob", 60),
            Err(StoreError::NoSuchRun(_))
        ));
    }

    #[test]
    fn runs_are_listed_newest_first_and_filtered_by_status() {
        let mut store = store();
        create(&mut store, "old", Some(OWNER), 10);
        create(&mut store, "mid", Some(OWNER), 20);
        create(&mut store, "new", Some(OWNER), 20);
        store.cancel("mid", "bob", 30).unwrap();
        let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.runs(None).unwrap()), vec!["new", "mid", "old"]);
        assert_eq!(
            ids(store.runs(Some(RunStatus::Runnable)).unwrap()),
            vec!["new", "old"]
        );
        assert_eq!(
            ids(store.runs(Some(RunStatus::Cancelled)).unwrap()),
            vec!["mid"]
        );
        assert!(store.runs(Some(RunStatus::Failed)).unwrap().is_empty());
    }

    #[test]
    fn data_survives_closing_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flow.db");
        {
            let mut store = SqliteStore::open(&path).unwrap();
            store.deploy("v1", b"artifact", 1).unwrap();
            create(&mut store, "r1", Some(OWNER), 10);
            store
                .commit(&[step("r1", OWNER, RunStatus::Runnable, 20)])
                .unwrap();
        }
        let mut store = SqliteStore::open(&path).unwrap();
        let (record, cp) = store.load("r1").unwrap().unwrap();
        assert_eq!(record.updated_at, 20);
        assert_eq!(cp.state, b"at 20");
        assert_eq!(store.history("r1").unwrap().len(), 3);
        assert_eq!(store.artifact("v1").unwrap().unwrap(), b"artifact");
        assert_eq!(owner_of(&store, "r1").as_deref(), Some(OWNER));
    }

    #[test]
    fn a_locked_database_gives_busy_within_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flow.db");
        let mut store = SqliteStore::open(&path).unwrap();
        store.deploy("v1", b"artifact", 1).unwrap();
        create(&mut store, "r1", Some(OWNER), 10);
        store.set_busy_timeout(Duration::from_millis(200)).unwrap();

        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        let result = store.commit(&[step("r1", OWNER, RunStatus::Runnable, 20)]);
        let waited = started.elapsed();
        match &result {
            Err(StoreError::Busy(why)) => {
                assert!(why.contains("locked by another process"), "{why}");
                assert!(why.contains("200 ms"), "{why}");
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        // Reads still work in WAL mode while another process writes.
        assert_eq!(store.history("r1").unwrap().len(), 1);
        other.execute_batch("ROLLBACK").unwrap();
        store
            .commit(&[step("r1", OWNER, RunStatus::Runnable, 20)])
            .unwrap();
        assert_eq!(store.history("r1").unwrap().len(), 3);
    }

    #[test]
    fn repeated_refusals_are_counted_cut_and_the_log_is_capped() {
        use super::super::{REFUSAL_LOG_ROWS, REFUSAL_TEXT_BYTES, REFUSAL_WINDOW_MS};
        let mut store = store();
        let long = format!("GET /{}", "x".repeat(60_000));
        let refusal = |at, client: &str, who: &str| {
            Refusal::new(at, client, who, &long, 401, "no token was given")
        };
        for at in 0..500 {
            store
                .record_refusal(&refusal(1_000 + at, "10.0.0.1", "no token"))
                .unwrap();
        }
        // Another client, another `who`, and the same client after the window: rows of their own.
        store
            .record_refusal(&refusal(2_000, "10.0.0.2", "no token"))
            .unwrap();
        store
            .record_refusal(&refusal(2_001, "10.0.0.1", "unknown token"))
            .unwrap();
        store
            .record_refusal(&refusal(1_000 + REFUSAL_WINDOW_MS, "10.0.0.1", "no token"))
            .unwrap();
        let rows = store.refusals(10).unwrap();
        assert_eq!(rows.len(), 4, "{rows:?}");
        let first = &rows[3];
        assert_eq!((first.count, first.at, first.last_at), (500, 1_000, 1_499));
        assert!(
            first.request.len() <= REFUSAL_TEXT_BYTES,
            "{}",
            first.request.len()
        );
        assert!(first.request.ends_with('…') && first.request.starts_with("GET /xxx"));
        assert_eq!(rows[0].count, 1);

        // Beyond the cap, the oldest rows go.
        for n in 0..REFUSAL_LOG_ROWS {
            store
                .record_refusal(&refusal(10_000_000 + n, &format!("c{n}"), "no token"))
                .unwrap();
        }
        let rows = store.refusals(usize::MAX >> 1).unwrap();
        assert_eq!(rows.len() as i64, REFUSAL_LOG_ROWS);
        assert!(
            rows.iter().all(|r| r.client.starts_with('c')),
            "the oldest went first"
        );
    }
}
