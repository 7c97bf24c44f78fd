//! The [`Store`] on PostgreSQL, for many workers on many machines sharing one database.
//!
//! Same tables, same meaning, same versioned migrations as SQLite (`sqlite.rs`); what
//! differs is how writers coordinate. SQLite serializes every writer; PostgreSQL lets them
//! run side by side, so:
//! - a run's row is locked (`FOR UPDATE`) before anything is appended to its history, so two
//!   writers never number events alike and the hash chain stays one chain;
//! - ready runs are claimed with `FOR UPDATE SKIP LOCKED`: workers never wait for each other
//!   and never claim the same run;
//! - a commit checks, under the row lock, that its owner still holds the claim, so a worker
//!   whose lease ran out cannot overwrite the one that took over.
//!
//! The connection is re-opened after PostgreSQL restarts: the failing call reports the error,
//! the next one reconnects.

use super::gate_index::{self, GATE_COLUMNS, RawGate};
use super::outbox::{self, OutboxKey, OutboxRow};
use super::{
    Checkpoint, Event, EventKind, Millis, NewEvent, NewRun, Refusal, RunRecord, RunStatus,
    StepCommit, Store, StoreError, StoreResult, TokenRecord,
};
use super::{GateCounts, GateRow};
use postgres::{Client, NoTls, Row, Transaction};

/// The migrations, in order; the same versions as SQLite's (`sqlite::MIGRATIONS`).
pub const MIGRATIONS: &[&str] = &[
    // 1: versions, runs, checkpoints, events. `n` orders runs created in the same millisecond.
    "CREATE TABLE versions (
        hash        TEXT PRIMARY KEY,
        artifact    BYTEA NOT NULL,
        deployed_at BIGINT NOT NULL
    );
    CREATE TABLE runs (
        n           BIGSERIAL UNIQUE,
        id          TEXT PRIMARY KEY,
        workflow    TEXT NOT NULL,
        version     TEXT NOT NULL REFERENCES versions(hash),
        status      TEXT NOT NULL,
        input       TEXT NOT NULL,
        output      TEXT,
        error       TEXT,
        waiting_on  TEXT,
        wake_at     BIGINT,
        started_by  TEXT NOT NULL,
        parent      TEXT REFERENCES runs(id),
        created_at  BIGINT NOT NULL,
        updated_at  BIGINT NOT NULL,
        owner       TEXT,
        lease_until BIGINT
    );
    CREATE INDEX runs_by_status_wake ON runs(status, wake_at);
    CREATE INDEX runs_by_status_created ON runs(status, created_at);
    CREATE INDEX runs_by_created ON runs(created_at);
    CREATE TABLE checkpoints (
        run            TEXT PRIMARY KEY REFERENCES runs(id),
        format_version BIGINT NOT NULL,
        program_hash   TEXT NOT NULL,
        state          BYTEA NOT NULL,
        updated_at     BIGINT NOT NULL
    );
    CREATE TABLE events (
        run         TEXT NOT NULL REFERENCES runs(id),
        seq         BIGINT NOT NULL,
        at          BIGINT NOT NULL,
        kind        TEXT NOT NULL,
        step        TEXT,
        attempt     BIGINT,
        line        BIGINT,
        duration_ms BIGINT,
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
    // 4: the run's trace context.
    "ALTER TABLE runs ADD COLUMN trace TEXT;",
    // 5: API tokens and refused requests.
    "CREATE TABLE tokens (
        id         TEXT PRIMARY KEY,
        \"user\"   TEXT NOT NULL,
        name       TEXT NOT NULL,
        hash       TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        revoked_at BIGINT
    );
    CREATE TABLE refusals (
        n       BIGSERIAL PRIMARY KEY,
        at      BIGINT NOT NULL,
        who     TEXT NOT NULL,
        request TEXT NOT NULL,
        status  BIGINT NOT NULL,
        reason  TEXT NOT NULL
    );
    CREATE INDEX events_by_kind_at ON events(kind, at);",
    // 6: the keyed audit trail (see crate::audit): the final state a record seals, one head
    // per run (no foreign key: a head outlives a deleted run, to name it), and the
    // installation head (its row exists from the start, so that numbering can lock it).
    "ALTER TABLE events ADD COLUMN seal TEXT;
     CREATE TABLE audit_heads (
        run        TEXT PRIMARY KEY,
        n          BIGINT NOT NULL UNIQUE,
        prev_run   TEXT,
        seq        BIGINT NOT NULL,
        hash       TEXT NOT NULL,
        keyed_from BIGINT NOT NULL,
        mac        TEXT NOT NULL
     );
     CREATE TABLE audit_installation (
        id       BIGINT PRIMARY KEY CHECK (id = 1),
        runs     BIGINT NOT NULL,
        last_run TEXT,
        mac      TEXT NOT NULL
     );
     INSERT INTO audit_installation (id, runs, last_run, mac) VALUES (1, 0, NULL, '');",
    // 7: the refusal log is bounded: repeated refusals of one client are counted in one row.
    "ALTER TABLE refusals ADD COLUMN client TEXT NOT NULL DEFAULT '';
     ALTER TABLE refusals ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
     ALTER TABLE refusals ADD COLUMN last_at BIGINT NOT NULL DEFAULT 0;
     UPDATE refusals SET last_at = at;
     CREATE INDEX refusals_by_client ON refusals(client, who, status, at);",
    // 8: a checkpoint keeps what the engine knows of the run's earlier tool calls.
    "ALTER TABLE checkpoints ADD COLUMN calls TEXT;",
    // 9: the gate index, one row per open gate (see store/gate_index.rs; a row goes with its run
    // if the run is ever deleted).
    "CREATE TABLE IF NOT EXISTS gates (
        run            TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name           TEXT NOT NULL,
        kind           TEXT NOT NULL,
        workflow       TEXT NOT NULL,
        version        TEXT NOT NULL,
        started_by     TEXT NOT NULL,
        opened_at      BIGINT NOT NULL,
        approvers      TEXT NOT NULL,
        approvers_json TEXT NOT NULL,
        escalate_to    TEXT,
        escalate_json  TEXT,
        escalate_at    BIGINT,
        escalated      BOOLEAN NOT NULL,
        deadline       BIGINT,
        outer_deadline BIGINT,
        quorum         BIGINT NOT NULL,
        allow_self     BOOLEAN NOT NULL,
        prompt         TEXT,
        context        TEXT NOT NULL,
        shown_sha256   TEXT NOT NULL,
        input_schema   TEXT,
        timeout_caught BOOLEAN NOT NULL,
        options        TEXT NOT NULL,
        approvals      TEXT NOT NULL,
        deciders       TEXT NOT NULL,
        PRIMARY KEY (run, name)
     );
     CREATE INDEX IF NOT EXISTS gates_by_opened ON gates(opened_at);",
    // 10: `/metrics` counts from indexes (events by kind and time exist since 1).
    "CREATE INDEX IF NOT EXISTS runs_by_workflow_status ON runs(workflow, status);",
    // 11: the notification outbox (see store/outbox.rs).
    outbox::POSTGRES_TABLE,
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Any number: serializes schema migrations across processes (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x466c_6f77_5363_6865;

const RUN_COLUMNS: &str = "id, workflow, version, status, input, output, error, waiting_on, \
                           wake_at, started_by, parent, created_at, updated_at";

pub struct PostgresStore {
    url: String,
    client: Option<Client>,
    /// Where errors say they happened (the URL without its password).
    location: String,
}

/// `postgres://user:secret@host/db` → `postgres://user@host/db`.
pub fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{}{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

pub fn is_postgres_url(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

impl PostgresStore {
    /// Connects and brings the schema up to date.
    pub fn connect(url: &str) -> StoreResult<PostgresStore> {
        let mut store = PostgresStore {
            url: url.to_string(),
            client: None,
            location: without_password(url),
        };
        store.migrate()?;
        Ok(store)
    }

    fn error(&self, doing: &str, e: postgres::Error) -> StoreError {
        let detail = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string());
        StoreError::Database(format!("{} ({}): {detail}", doing, self.location))
    }

    /// The connection, re-opened when PostgreSQL dropped it (a restart, a network cut).
    fn client(&mut self) -> StoreResult<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let client = Client::connect(&self.url, NoTls).map_err(|e| {
                StoreError::Database(format!(
                    "cannot connect to {}: {}",
                    self.location,
                    e.as_db_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or_else(|| e.to_string())
                ))
            })?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    /// Runs `work` in one transaction; a failure rolls it back.
    fn transaction<T>(
        &mut self,
        doing: &str,
        work: impl FnOnce(&mut Transaction<'_>) -> Result<T, TxError>,
    ) -> StoreResult<T> {
        let location = self.location.clone();
        let wrap = |e: postgres::Error| {
            let detail = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            StoreError::Database(format!("{doing} ({location}): {detail}"))
        };
        let client = self.client()?;
        let mut tx = client.transaction().map_err(wrap)?;
        match work(&mut tx) {
            Ok(value) => {
                tx.commit().map_err(wrap)?;
                Ok(value)
            }
            Err(TxError::Store(e)) => Err(e),
            Err(TxError::Pg(e)) => Err(wrap(e)),
        }
    }

    fn migrate(&mut self) -> StoreResult<()> {
        self.transaction("migrating the schema", |tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS flow_schema (version BIGINT NOT NULL);")?;
            let found: Option<i64> = tx
                .query_opt("SELECT version FROM flow_schema", &[])?
                .map(|row| row.get(0));
            let found = match found {
                Some(version) => version,
                None => {
                    tx.execute("INSERT INTO flow_schema (version) VALUES (0)", &[])?;
                    0
                }
            };
            if found > SCHEMA_VERSION {
                return Err(TxError::Store(StoreError::NewerSchema {
                    found,
                    supported: SCHEMA_VERSION,
                }));
            }
            for migration in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0)) {
                tx.batch_execute(migration)?;
            }
            tx.execute("UPDATE flow_schema SET version = $1", &[&SCHEMA_VERSION])?;
            Ok(())
        })
    }

    /// The schema version of the database.
    pub fn schema_version(&mut self) -> StoreResult<i64> {
        let client = self.client()?;
        let row = client
            .query_one("SELECT version FROM flow_schema", &[])
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(row.get(0))
    }

    fn query(
        &mut self,
        doing: &str,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> StoreResult<Vec<Row>> {
        let result = self.client()?.query(sql, params);
        result.map_err(|e| self.error(doing, e))
    }

    fn execute(
        &mut self,
        doing: &str,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> StoreResult<u64> {
        let result = self.client()?.execute(sql, params);
        result.map_err(|e| self.error(doing, e))
    }
}

/// An error inside a transaction: the store's own, or PostgreSQL's.
enum TxError {
    Store(StoreError),
    Pg(postgres::Error),
}

impl From<postgres::Error> for TxError {
    fn from(e: postgres::Error) -> Self {
        TxError::Pg(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

fn run_record(row: &Row) -> StoreResult<RunRecord> {
    let status: String = row.get(3);
    Ok(RunRecord {
        id: row.get(0),
        workflow: row.get(1),
        version: row.get(2),
        status: RunStatus::parse(&status).ok_or_else(|| {
            StoreError::Database(format!(
                "run {} has an unknown status `{status}` (written by a newer flowrt?)",
                row.get::<_, String>(0)
            ))
        })?,
        input: row.get(4),
        output: row.get(5),
        error: row.get(6),
        waiting_on: row.get(7),
        wake_at: row.get(8),
        started_by: row.get(9),
        parent: row.get(10),
        created_at: row.get(11),
        updated_at: row.get(12),
    })
}

/// Locks the run's row for this transaction; false when there is no such run.
fn lock_run(tx: &mut Transaction<'_>, run: &str) -> Result<Option<Option<String>>, TxError> {
    Ok(tx
        .query_opt("SELECT owner FROM runs WHERE id = $1 FOR UPDATE", &[&run])?
        .map(|row| row.get(0)))
}

/// Appends `events` to `run`'s trail after its head — numbering the run first when it has
/// none (a new run, or one begun before the audit key) — and moves the head; `seal` is the
/// run's final state after the append ([`crate::audit::seal`]). The caller holds the run's
/// row lock, so only the run's own head row is written; numbering locks the installation
/// head, which serializes the creation of runs (not their steps).
fn append_events(
    tx: &mut Transaction<'_>,
    run: &str,
    events: &[NewEvent],
    seal: Option<&str>,
) -> Result<(), TxError> {
    use crate::audit::{Tail, key};
    let head = tx
        .query_opt(
            &format!("SELECT {HEAD_COLUMNS} FROM audit_heads WHERE run = $1"),
            &[&run],
        )?
        .map(|row| head_row(&row));
    let tail = match head {
        Some(head) => Tail::Head(head),
        None => {
            let installation = installation_row(tx.query_opt(
                "SELECT runs, last_run, mac FROM audit_installation WHERE id = 1 FOR UPDATE",
                &[],
            )?);
            let (last, hash): (i64, String) = tx
                .query_opt(
                    "SELECT seq, hash FROM events WHERE run = $1 ORDER BY seq DESC LIMIT 1",
                    &[&run],
                )?
                .map(|row| (row.get(0), row.get(1)))
                .unwrap_or((0, crate::audit::GENESIS.to_string()));
            Tail::Unnumbered {
                installation,
                last,
                hash,
            }
        }
    };
    let append = crate::audit::append(key::current(), run, tail, events, seal);
    let insert = tx.prepare(
        "INSERT INTO events (run, seq, at, kind, step, attempt, line, duration_ms, data, prev_hash, hash, seal)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )?;
    for (event, linked) in events.iter().zip(&append.records) {
        tx.execute(
            &insert,
            &[
                &run,
                &linked.seq,
                &event.at,
                &event.kind.as_str(),
                &event.step,
                &event.attempt,
                &event.line,
                &event.duration_ms,
                &event.data,
                &linked.prev_hash,
                &linked.hash,
                &linked.seal,
            ],
        )?;
    }
    let head = &append.head;
    tx.execute(
        "INSERT INTO audit_heads (run, n, prev_run, seq, hash, keyed_from, mac)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (run) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac",
        &[
            &head.run,
            &head.n,
            &head.prev_run,
            &head.seq,
            &head.hash,
            &head.keyed_from,
            &head.mac,
        ],
    )?;
    if let Some(installation) = &append.installation {
        tx.execute(
            "UPDATE audit_installation SET runs = $1, last_run = $2, mac = $3 WHERE id = 1",
            &[
                &installation.runs,
                &installation.last_run,
                &installation.mac,
            ],
        )?;
    }
    Ok(())
}

const HEAD_COLUMNS: &str = "run, n, prev_run, seq, hash, keyed_from, mac";

fn head_row(row: &Row) -> crate::audit::Head {
    crate::audit::Head {
        run: row.get(0),
        n: row.get(1),
        prev_run: row.get(2),
        seq: row.get(3),
        hash: row.get(4),
        keyed_from: row.get(5),
        mac: row.get(6),
    }
}

/// The installation head; none before the first run was numbered (the row of migration 6).
fn installation_row(row: Option<Row>) -> Option<crate::audit::Installation> {
    row.map(|row| crate::audit::Installation {
        runs: row.get(0),
        last_run: row.get(1),
        mac: row.get(2),
    })
    .filter(|i| !(i.runs == 0 && i.mac.is_empty()))
}

/// The final state a record appended now seals: the run's, if it is final.
fn seal_of_row(tx: &mut Transaction<'_>, run: &str) -> Result<Option<String>, TxError> {
    let row = tx.query_opt(
        "SELECT status, output, error FROM runs WHERE id = $1",
        &[&run],
    )?;
    Ok(row.and_then(|row| {
        let output: Option<String> = row.get(1);
        let error: Option<String> = row.get(2);
        RunStatus::parse(row.get(0))
            .and_then(|status| crate::audit::seal(status, output.as_deref(), error.as_deref()))
    }))
}

/// A `gates` row, in the order of [`GATE_COLUMNS`].
fn gate_row(row: &Row) -> RawGate {
    RawGate {
        run: row.get(0),
        name: row.get(1),
        kind: row.get(2),
        workflow: row.get(3),
        version: row.get(4),
        started_by: row.get(5),
        opened_at: row.get(6),
        approvers: row.get(7),
        approvers_json: row.get(8),
        escalate_to: row.get(9),
        escalate_json: row.get(10),
        escalate_at: row.get(11),
        escalated: row.get(12),
        deadline: row.get(13),
        outer_deadline: row.get(14),
        quorum: row.get(15),
        allow_self: row.get(16),
        prompt: row.get(17),
        context: row.get(18),
        shown_sha256: row.get(19),
        input_schema: row.get(20),
        timeout_caught: row.get(21),
        options: row.get(22),
        approvals: row.get(23),
    }
}

/// Writes a gate's row; `conflict` says what a row of the same run and name does.
pub(super) fn put_gate(
    tx: &mut Transaction<'_>,
    gate: &GateRow,
    conflict: &str,
) -> Result<u64, postgres::Error> {
    let r = RawGate::of(gate);
    tx.execute(
        &format!(
            "INSERT INTO gates ({GATE_COLUMNS}, deciders) VALUES
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
              $19, $20, $21, $22, $23, $24, $25)
             ON CONFLICT (run, name) {conflict}"
        ),
        &[
            &r.run,
            &r.name,
            &r.kind,
            &r.workflow,
            &r.version,
            &r.started_by,
            &r.opened_at,
            &r.approvers,
            &r.approvers_json,
            &r.escalate_to,
            &r.escalate_json,
            &r.escalate_at,
            &r.escalated,
            &r.deadline,
            &r.outer_deadline,
            &r.quorum,
            &r.allow_self,
            &r.prompt,
            &r.context,
            &r.shown_sha256,
            &r.input_schema,
            &r.timeout_caught,
            &r.options,
            &r.approvals,
            &gate_index::deciders(gate),
        ],
    )
}

/// Every column but the key takes the new row's value.
pub(super) const REPLACE_GATE: &str =
    "DO UPDATE SET kind = excluded.kind, workflow = excluded.workflow,
    version = excluded.version, started_by = excluded.started_by,
    opened_at = excluded.opened_at, approvers = excluded.approvers,
    approvers_json = excluded.approvers_json, escalate_to = excluded.escalate_to,
    escalate_json = excluded.escalate_json, escalate_at = excluded.escalate_at,
    escalated = excluded.escalated, deadline = excluded.deadline,
    outer_deadline = excluded.outer_deadline, quorum = excluded.quorum,
    allow_self = excluded.allow_self, prompt = excluded.prompt, context = excluded.context,
    shown_sha256 = excluded.shown_sha256, input_schema = excluded.input_schema,
    timeout_caught = excluded.timeout_caught, options = excluded.options,
    approvals = excluded.approvals, deciders = excluded.deciders";

/// Brings the gate index of the step's run in line with what the run waits on afterwards
/// (see [`gate_index::plan`]); the caller holds the run's row lock.
fn apply_gate_change(tx: &mut Transaction<'_>, step: &StepCommit) -> Result<(), TxError> {
    let (keep, write) =
        gate_index::plan(&step.run, step.waiting_on.as_deref(), step.gate.as_ref())?;
    match &keep {
        Some(name) => tx.execute(
            "DELETE FROM gates WHERE run = $1 AND name <> $2",
            &[&step.run, name],
        )?,
        None => tx.execute("DELETE FROM gates WHERE run = $1", &[&step.run])?,
    };
    if let Some(row) = write {
        put_gate(tx, row, REPLACE_GATE)?;
    }
    Ok(())
}

fn upsert_checkpoint(
    tx: &mut Transaction<'_>,
    run: &str,
    checkpoint: &Checkpoint,
    now: Millis,
) -> Result<(), TxError> {
    tx.execute(
        "INSERT INTO checkpoints (run, format_version, program_hash, state, updated_at, calls)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (run) DO UPDATE SET
            format_version = excluded.format_version,
            program_hash = excluded.program_hash,
            state = excluded.state,
            updated_at = excluded.updated_at,
            calls = COALESCE(excluded.calls, checkpoints.calls)",
        &[
            &run,
            &checkpoint.format_version,
            &checkpoint.program_hash,
            &checkpoint.state,
            &now,
            &checkpoint.calls,
        ],
    )?;
    Ok(())
}

fn token_record(row: &Row) -> TokenRecord {
    TokenRecord {
        id: row.get(0),
        user: row.get(1),
        name: row.get(2),
        created_at: row.get(3),
        expires_at: row.get(4),
        revoked_at: row.get(5),
    }
}

fn event(run: &str, row: &Row) -> StoreResult<Event> {
    let seq = row.get(0);
    Ok(Event {
        seq,
        at: row.get(1),
        kind: super::stored_kind(run, seq, row.get(2))?,
        step: row.get(3),
        attempt: row.get(4),
        line: row.get(5),
        duration_ms: row.get(6),
        data: row.get(7),
        prev_hash: row.get(8),
        hash: row.get(9),
        seal: row.get(10),
    })
}

const FINAL_STATUSES: &str = "('completed', 'failed', 'cancelled')";

impl Store for PostgresStore {
    fn deploy(&mut self, hash: &str, artifact: &[u8], now: Millis) -> StoreResult<()> {
        self.execute(
            "deploying a version",
            "INSERT INTO versions (hash, artifact, deployed_at) VALUES ($1, $2, $3)
             ON CONFLICT (hash) DO NOTHING",
            &[&hash, &artifact, &now],
        )?;
        Ok(())
    }

    fn artifact(&mut self, hash: &str) -> StoreResult<Option<Vec<u8>>> {
        let rows = self.query(
            "reading a deployed version",
            "SELECT artifact FROM versions WHERE hash = $1",
            &[&hash],
        )?;
        Ok(rows.first().map(|row| row.get(0)))
    }

    fn versions(&mut self) -> StoreResult<Vec<(String, Millis)>> {
        let rows = self.query(
            "listing deployed versions",
            "SELECT hash, deployed_at FROM versions ORDER BY deployed_at, hash",
            &[],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn note(&mut self, run: &str, event: &NewEvent) -> StoreResult<()> {
        self.transaction("recording an event", |tx| {
            if lock_run(tx, run)?.is_none() {
                return Err(StoreError::NoSuchRun(run.to_string()).into());
            }
            let seal = seal_of_row(tx, run)?;
            append_events(tx, run, std::slice::from_ref(event), seal.as_deref())
        })
    }

    fn create_token(&mut self, token: &TokenRecord, hash: &str) -> StoreResult<()> {
        self.execute(
            "creating a token",
            "INSERT INTO tokens (id, \"user\", name, hash, created_at, expires_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &token.id,
                &token.user,
                &token.name,
                &hash,
                &token.created_at,
                &token.expires_at,
                &token.revoked_at,
            ],
        )?;
        Ok(())
    }

    fn token_by_hash(&mut self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        let rows = self.query(
            "reading a token",
            "SELECT id, \"user\", name, created_at, expires_at, revoked_at FROM tokens WHERE hash = $1",
            &[&hash],
        )?;
        Ok(rows.first().map(token_record))
    }

    fn tokens(&mut self) -> StoreResult<Vec<TokenRecord>> {
        let rows = self.query(
            "listing tokens",
            "SELECT id, \"user\", name, created_at, expires_at, revoked_at FROM tokens
             ORDER BY created_at, id",
            &[],
        )?;
        Ok(rows.iter().map(token_record).collect())
    }

    fn revoke_token(&mut self, id: &str, now: Millis) -> StoreResult<bool> {
        let changed = self.execute(
            "revoking a token",
            "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &now],
        )?;
        Ok(changed > 0)
    }

    fn record_refusal(&mut self, refusal: &Refusal) -> StoreResult<()> {
        let r = refusal.bounded();
        self.transaction("recording a refused request", |tx| {
            let counted = tx.execute(
                "UPDATE refusals SET count = count + $5, last_at = GREATEST(last_at, $4)
                 WHERE n = (SELECT n FROM refusals
                            WHERE client = $1 AND who = $2 AND status = $3 AND at > $6
                            ORDER BY at DESC LIMIT 1)",
                &[
                    &r.client,
                    &r.who,
                    &r.status,
                    &r.at,
                    &r.count,
                    &(r.at - super::REFUSAL_WINDOW_MS),
                ],
            )?;
            if counted == 0 {
                tx.execute(
                    "INSERT INTO refusals (at, who, request, status, reason, client, count, last_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &r.at, &r.who, &r.request, &r.status, &r.reason, &r.client, &r.count,
                        &r.last_at,
                    ],
                )?;
                // `n` only grows, and rows are deleted from the oldest end only.
                tx.execute(
                    "DELETE FROM refusals WHERE n <= (SELECT MAX(n) FROM refusals) - $1",
                    &[&super::REFUSAL_LOG_ROWS],
                )?;
            }
            Ok(())
        })
    }

    fn count_events(&mut self, kind: EventKind, since: Millis) -> StoreResult<i64> {
        let rows = self.query(
            "counting events",
            "SELECT COUNT(*) FROM events WHERE kind = $1 AND at >= $2",
            &[&kind.as_str(), &since],
        )?;
        Ok(rows.first().map_or(0, |r| r.get(0)))
    }

    fn count_runs(&mut self) -> StoreResult<Vec<(String, RunStatus, i64)>> {
        let rows = self.query(
            "counting runs",
            "SELECT workflow, status, COUNT(*) FROM runs GROUP BY workflow, status",
            &[],
        )?;
        rows.iter()
            .map(|row| {
                let workflow: String = row.get(0);
                let status: String = row.get(1);
                let status = RunStatus::parse(&status).ok_or_else(|| {
                    StoreError::Database(format!("a run of {workflow} has the status `{status}`"))
                })?;
                Ok((workflow, status, row.get(2)))
            })
            .collect()
    }

    fn refusals(&mut self, limit: usize) -> StoreResult<Vec<Refusal>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query(
            "listing refused requests",
            "SELECT at, who, request, status, reason, client, count, last_at FROM refusals
             ORDER BY n DESC LIMIT $1",
            &[&limit],
        )?;
        Ok(rows
            .iter()
            .map(|row| Refusal {
                at: row.get(0),
                who: row.get(1),
                request: row.get(2),
                status: row.get(3),
                reason: row.get(4),
                client: row.get(5),
                count: row.get(6),
                last_at: row.get(7),
            })
            .collect())
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
        self.transaction("creating a run", |tx| {
            if let Some(parent) = &run.parent
                && lock_run(tx, parent)?.is_none()
            {
                return Err(StoreError::NoSuchRun(parent.clone()).into());
            }
            let lease = owner.map(|_| lease_until);
            let inserted = tx.execute(
                "INSERT INTO runs (id, workflow, version, status, input, started_by, parent,
                                   created_at, updated_at, owner, lease_until)
                 VALUES ($1, $2, $3, 'runnable', $4, $5, $6, $7, $7, $8, $9)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &run.id,
                    &run.workflow,
                    &run.version,
                    &run.input,
                    &run.started_by,
                    &run.parent,
                    &now,
                    &owner,
                    &lease,
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::Database(format!(
                    "cannot create run {}: a run with that id exists",
                    run.id
                ))
                .into());
            }
            upsert_checkpoint(tx, &run.id, checkpoint, now)?;
            // Even with no events: the run is numbered when it is created.
            append_events(tx, &run.id, events, None)
        })
    }

    fn claim(
        &mut self,
        run: &str,
        owner: &str,
        lease_until: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        let changed = self.execute(
            "claiming a run",
            &format!(
                "UPDATE runs SET owner = $2, lease_until = $3
                 WHERE id = $1 AND status NOT IN {FINAL_STATUSES}
                   AND (owner IS NULL OR owner = $2 OR lease_until IS NULL OR lease_until < $4)"
            ),
            &[&run, &owner, &lease_until, &now],
        )?;
        if changed == 0 {
            let exists = self.query(
                "claiming a run",
                "SELECT 1 FROM runs WHERE id = $1",
                &[&run],
            )?;
            if exists.is_empty() {
                return Err(StoreError::NoSuchRun(run.to_string()));
            }
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
        // Rows another worker is claiming right now are skipped, not waited for.
        let rows = self.query(
            "claiming ready runs",
            "UPDATE runs SET owner = $1, lease_until = $3
             WHERE id IN (
                SELECT id FROM runs
                WHERE ((status = 'runnable'
                        OR (status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= $2))
                       AND (owner IS NULL OR owner = $1 OR lease_until IS NULL OR lease_until < $2))
                   OR (status = 'waiting' AND waiting_on LIKE 'tool %'
                       AND (owner IS NULL OR lease_until IS NULL OR lease_until < $2))
                ORDER BY created_at, n
                LIMIT $4
                FOR UPDATE SKIP LOCKED)
             RETURNING id, created_at, n",
            &[&owner, &now, &lease_until, &limit],
        )?;
        let mut claimed: Vec<(Millis, i64, String)> = rows
            .iter()
            .map(|r| (r.get(1), r.get(2), r.get(0)))
            .collect();
        claimed.sort();
        Ok(claimed.into_iter().map(|(_, _, id)| id).collect())
    }

    fn renew_claims(&mut self, owner: &str, lease_until: Millis) -> StoreResult<u64> {
        self.execute(
            "renewing claims",
            &format!(
                "UPDATE runs SET lease_until = $2
                 WHERE owner = $1 AND status NOT IN {FINAL_STATUSES}
                   AND (lease_until IS NULL OR lease_until < $2)"
            ),
            &[&owner, &lease_until],
        )
    }

    fn release(&mut self, run: &str, owner: &str) -> StoreResult<()> {
        let changed = self.execute(
            "releasing a run",
            "UPDATE runs SET owner = NULL, lease_until = NULL WHERE id = $1 AND owner = $2",
            &[&run, &owner],
        )?;
        if changed == 0 {
            let exists = self.query(
                "releasing a run",
                "SELECT 1 FROM runs WHERE id = $1",
                &[&run],
            )?;
            if exists.is_empty() {
                return Err(StoreError::NoSuchRun(run.to_string()));
            }
        }
        Ok(())
    }

    fn load(&mut self, run: &str) -> StoreResult<Option<(RunRecord, Checkpoint)>> {
        let rows = self.query(
            "loading a run",
            "SELECT r.id, r.workflow, r.version, r.status, r.input, r.output, r.error,
                    r.waiting_on, r.wake_at, r.started_by, r.parent, r.created_at,
                    r.updated_at, c.format_version, c.program_hash, c.state, c.calls
             FROM runs r LEFT JOIN checkpoints c ON c.run = r.id
             WHERE r.id = $1",
            &[&run],
        )?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let record = run_record(row)?;
        let format_version: Option<i64> = row.get(13);
        let program_hash: Option<String> = row.get(14);
        let state: Option<Vec<u8>> = row.get(15);
        let calls: Option<String> = row.get(16);
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
        self.transaction("committing steps", |tx| {
            for step in commits {
                match lock_run(tx, &step.run)? {
                    None => return Err(StoreError::NoSuchRun(step.run.clone()).into()),
                    Some(holder) if holder.as_deref() != Some(step.owner.as_str()) => {
                        return Err(StoreError::NotOwner {
                            run: step.run.clone(),
                        }
                        .into());
                    }
                    Some(_) => {}
                }
                if let Some(checkpoint) = &step.checkpoint {
                    upsert_checkpoint(tx, &step.run, checkpoint, step.now)?;
                }
                if !step.events.is_empty() {
                    let seal = crate::audit::seal(
                        step.status,
                        step.output.as_deref(),
                        step.error.as_deref(),
                    );
                    append_events(tx, &step.run, &step.events, seal.as_deref())?;
                }
                tx.execute(
                    "UPDATE runs SET status = $2, output = $3, error = $4, waiting_on = $5,
                                     wake_at = $6, updated_at = $7
                     WHERE id = $1",
                    &[
                        &step.run,
                        &step.status.as_str(),
                        &step.output,
                        &step.error,
                        &step.waiting_on,
                        &step.wake_at,
                        &step.now,
                    ],
                )?;
                apply_gate_change(tx, step)?;
                outbox::postgres::apply(tx, &step.outbox)?;
            }
            Ok(())
        })
    }

    fn run(&mut self, run: &str) -> StoreResult<Option<RunRecord>> {
        let rows = self.query(
            "reading a run",
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
            &[&run],
        )?;
        rows.first().map(run_record).transpose()
    }

    fn runs(&mut self, status: Option<RunStatus>) -> StoreResult<Vec<RunRecord>> {
        let rows = match status {
            Some(status) => self.query(
                "listing runs",
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE status = $1 ORDER BY created_at DESC, n DESC"
                ),
                &[&status.as_str()],
            )?,
            None => self.query(
                "listing runs",
                &format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, n DESC"),
                &[],
            )?,
        };
        rows.iter().map(run_record).collect()
    }

    fn history(&mut self, run: &str) -> StoreResult<Vec<Event>> {
        let rows = self.query(
            "reading a run's history",
            "SELECT seq, at, kind, step, attempt, line, duration_ms, data, prev_hash, hash, seal
             FROM events WHERE run = $1 ORDER BY seq",
            &[&run],
        )?;
        rows.iter().map(|row| event(run, row)).collect()
    }

    fn audit_head(&mut self, run: &str) -> StoreResult<Option<crate::audit::Head>> {
        let rows = self.query(
            "reading a run's audit head",
            &format!("SELECT {HEAD_COLUMNS} FROM audit_heads WHERE run = $1"),
            &[&run],
        )?;
        Ok(rows.first().map(head_row))
    }

    fn audit_heads(
        &mut self,
    ) -> StoreResult<(Option<crate::audit::Installation>, Vec<crate::audit::Head>)> {
        let installation = self
            .query(
                "reading the installation's audit head",
                "SELECT runs, last_run, mac FROM audit_installation WHERE id = 1",
                &[],
            )?
            .into_iter()
            .next();
        let heads = self.query(
            "reading the audit heads",
            &format!("SELECT {HEAD_COLUMNS} FROM audit_heads ORDER BY n"),
            &[],
        )?;
        Ok((
            installation_row(installation),
            heads.iter().map(head_row).collect(),
        ))
    }

    fn gates(&mut self, run: Option<&str>) -> StoreResult<Vec<GateRow>> {
        let rows = match run {
            Some(run) => self.query(
                "reading the gate index",
                &format!(
                    "SELECT {GATE_COLUMNS} FROM gates WHERE run = $1 ORDER BY opened_at, name"
                ),
                &[&run],
            )?,
            None => self.query(
                "reading the gate index",
                &format!("SELECT {GATE_COLUMNS} FROM gates ORDER BY opened_at, run, name"),
                &[],
            )?,
        };
        rows.iter().map(|r| gate_row(r).finish()).collect()
    }

    fn gates_for(&mut self, user: &str, roles: &[String]) -> StoreResult<Vec<GateRow>> {
        let patterns = gate_index::decider_patterns(user, roles);
        let named = (1..=patterns.len())
            .map(|i| format!("deciders LIKE ${i} ESCAPE '\\'"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = patterns
            .iter()
            .map(|p| p as &(dyn postgres::types::ToSql + Sync))
            .collect();
        let rows = self.query(
            "reading the gate index",
            &format!(
                "SELECT {GATE_COLUMNS} FROM gates WHERE {named} ORDER BY opened_at, run, name"
            ),
            &params,
        )?;
        rows.iter().map(|r| gate_row(r).finish()).collect()
    }

    fn gate(&mut self, run: &str, name: &str) -> StoreResult<Option<GateRow>> {
        let rows = self.query(
            "reading the gate index",
            &format!("SELECT {GATE_COLUMNS} FROM gates WHERE run = $1 AND name = $2"),
            &[&run, &name],
        )?;
        rows.first().map(|r| gate_row(r).finish()).transpose()
    }

    fn gate_counts(&mut self) -> StoreResult<GateCounts> {
        let rows = self.query(
            "counting open gates",
            "SELECT COUNT(*) FILTER (WHERE kind = 'approval'), COUNT(*) FILTER (WHERE kind = 'input'),
                    MIN(opened_at)
             FROM gates",
            &[],
        )?;
        Ok(rows
            .first()
            .map(|r| GateCounts {
                approvals: r.get(0),
                inputs: r.get(1),
                oldest_opened_at: r.get(2),
            })
            .unwrap_or_default())
    }

    fn index_gate(&mut self, row: &GateRow) -> StoreResult<bool> {
        self.transaction("indexing an open gate", |tx| {
            let waiting = tx
                .query_opt(
                    "SELECT status, waiting_on FROM runs WHERE id = $1 FOR UPDATE",
                    &[&row.run],
                )?
                .map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1)));
            let expected = crate::history::WaitingOn::gate(row.kind, &row.name).to_string();
            let still_there = waiting.is_some_and(|(status, waiting_on)| {
                status == RunStatus::Waiting.as_str() && waiting_on.as_deref() == Some(&expected)
            });
            if !still_there {
                return Ok(false);
            }
            Ok(put_gate(tx, row, "DO NOTHING")? > 0)
        })
    }

    fn cancel(&mut self, run: &str, by: &str, now: Millis) -> StoreResult<bool> {
        self.transaction("cancelling a run", |tx| {
            let status: Option<String> = tx
                .query_opt("SELECT status FROM runs WHERE id = $1 FOR UPDATE", &[&run])?
                .map(|row| row.get(0));
            let Some(status) = status else {
                return Err(StoreError::NoSuchRun(run.to_string()).into());
            };
            if RunStatus::parse(&status).is_some_and(RunStatus::is_final) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE runs SET status = 'cancelled', waiting_on = NULL, wake_at = NULL,
                                 updated_at = $2, owner = NULL, lease_until = NULL
                 WHERE id = $1",
                &[&run, &now],
            )?;
            tx.execute("DELETE FROM gates WHERE run = $1", &[&run])?;
            let event = NewEvent {
                at: now,
                kind: EventKind::RunCancelled,
                step: None,
                attempt: None,
                line: None,
                duration_ms: None,
                data: serde_json::json!({ "by": by }).to_string(),
            };
            let seal = seal_of_row(tx, run)?;
            append_events(tx, run, std::slice::from_ref(&event), seal.as_deref())?;
            Ok(true)
        })
    }

    fn next_wake(&mut self) -> StoreResult<Option<Millis>> {
        let rows = self.query(
            "finding the next timer",
            "SELECT MIN(wake_at) FROM runs WHERE status = 'waiting' AND wake_at IS NOT NULL",
            &[],
        )?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    fn claim_notifications(
        &mut self,
        owner: &str,
        lease_until: Millis,
        now: Millis,
        limit: usize,
        only: Option<&str>,
    ) -> StoreResult<Vec<OutboxRow>> {
        let claimed = outbox::postgres::claim(self.client()?, owner, lease_until, now, limit, only);
        claimed.map_err(|e| self.error("claiming notifications", e))?
    }

    fn retry_notification(&mut self, key: &OutboxKey, owner: &str, at: Millis) -> StoreResult<()> {
        let done = outbox::postgres::retry(self.client()?, key, owner, at);
        done.map_err(|e| self.error("scheduling a notification again", e))?;
        Ok(())
    }

    fn drop_notification(&mut self, key: &OutboxKey) -> StoreResult<()> {
        let done = outbox::postgres::remove(self.client()?, key);
        done.map_err(|e| self.error("dropping a notification", e))?;
        Ok(())
    }

    fn notifications(&mut self, only: Option<&str>) -> StoreResult<Vec<OutboxRow>> {
        let rows = outbox::postgres::list(self.client()?, only);
        rows.map_err(|e| self.error("reading the outbox", e))?
    }

    fn next_notification(&mut self, only: Option<&str>) -> StoreResult<Option<Millis>> {
        let next = outbox::postgres::next(self.client()?, only);
        next.map_err(|e| self.error("reading the outbox", e))
    }

    fn setting(&mut self, key: &str) -> StoreResult<Option<String>> {
        let rows = self.query(
            "reading a setting",
            "SELECT value FROM settings WHERE key = $1",
            &[&key],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn set_setting(&mut self, key: &str, value: &str) -> StoreResult<()> {
        self.execute(
            "writing a setting",
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        Ok(())
    }

    fn begin_group(&mut self) -> StoreResult<()> {
        self.execute(
            "starting a group commit",
            "SET synchronous_commit TO off",
            &[],
        )?;
        Ok(())
    }

    fn flush(&mut self) -> StoreResult<()> {
        // A commit with synchronous_commit on waits until the WAL up to it is on disk, and
        // with it every transaction committed before.
        self.execute(
            "making a group commit durable",
            "SET synchronous_commit TO on",
            &[],
        )?;
        self.execute(
            "making a group commit durable",
            "INSERT INTO settings (key, value) VALUES ('group_commit', '1')
             ON CONFLICT (key) DO UPDATE SET value = (settings.value::BIGINT + 1)::TEXT",
            &[],
        )?;
        self.execute(
            "starting a group commit",
            "SET synchronous_commit TO off",
            &[],
        )?;
        Ok(())
    }

    fn end_group(&mut self) -> StoreResult<()> {
        self.flush()?;
        self.execute("ending a group commit", "SET synchronous_commit TO on", &[])?;
        Ok(())
    }

    fn trace_of(&mut self, run: &str) -> StoreResult<Option<String>> {
        let rows = self.query(
            "reading a run's trace",
            "SELECT trace FROM runs WHERE id = $1",
            &[&run],
        )?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    fn set_trace(&mut self, run: &str, trace: &str) -> StoreResult<()> {
        self.execute(
            "writing a run's trace",
            "UPDATE runs SET trace = $2 WHERE id = $1",
            &[&run, &trace],
        )?;
        Ok(())
    }
}
