//! The store's schema: one list of versioned migrations for both stores, written as
//! [`Dialect::render`] templates. `MIGRATIONS[i]` takes the schema from version `i` to
//! version `i + 1`; each store keeps the version it reached (SQLite in `PRAGMA
//! user_version`, PostgreSQL in the table `flow_schema`) and applies the rest in one
//! transaction when it opens the database. Never edit a released migration (databases in
//! use were built by it, in both dialects); append a new one.
//!
//! What the dialects' schemas differ in is spelled out where it happens: column types,
//! PostgreSQL's `n BIGSERIAL` columns (SQLite numbers rows by `rowid`), and the index of
//! events by kind, which PostgreSQL made in migration 5 and SQLite in 10.

use super::sql::{Conn, Dialect};
use super::{StoreError, StoreResult};

pub const MIGRATIONS: &[&str] = &[
    // 1: versions, runs, checkpoints, events. `n` orders runs created in the same millisecond
    // on PostgreSQL.
    "CREATE TABLE versions (
        hash        TEXT PRIMARY KEY,
        artifact    {BLOB} NOT NULL,
        deployed_at {INT} NOT NULL
    );
    CREATE TABLE runs (
        {postgres:n           BIGSERIAL UNIQUE,}
        id          TEXT PRIMARY KEY,
        workflow    TEXT NOT NULL,
        version     TEXT NOT NULL REFERENCES versions(hash),
        status      TEXT NOT NULL,
        input       TEXT NOT NULL,
        output      TEXT,
        error       TEXT,
        waiting_on  TEXT,
        wake_at     {INT},
        started_by  TEXT NOT NULL,
        parent      TEXT REFERENCES runs(id),
        created_at  {INT} NOT NULL,
        updated_at  {INT} NOT NULL,
        owner       TEXT,
        lease_until {INT}
    );
    CREATE INDEX runs_by_status_wake ON runs(status, wake_at);
    CREATE INDEX runs_by_status_created ON runs(status, created_at);
    CREATE INDEX runs_by_created ON runs(created_at);
    CREATE TABLE checkpoints (
        run            TEXT PRIMARY KEY REFERENCES runs(id),
        format_version {INT} NOT NULL,
        program_hash   TEXT NOT NULL,
        state          {BLOB} NOT NULL,
        updated_at     {INT} NOT NULL
    );
    CREATE TABLE events (
        run         TEXT NOT NULL REFERENCES runs(id),
        seq         {INT} NOT NULL,
        at          {INT} NOT NULL,
        kind        TEXT NOT NULL,
        step        TEXT,
        attempt     {INT},
        line        {INT},
        duration_ms {INT},
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
        \"user\"     TEXT NOT NULL,
        name       TEXT NOT NULL,
        hash       TEXT NOT NULL UNIQUE,
        created_at {INT} NOT NULL,
        expires_at {INT},
        revoked_at {INT}
    );
    CREATE TABLE refusals (
        {postgres:n       BIGSERIAL PRIMARY KEY,}
        at      {INT} NOT NULL,
        who     TEXT NOT NULL,
        request TEXT NOT NULL,
        status  {INT} NOT NULL,
        reason  TEXT NOT NULL
    );
    {postgres:CREATE INDEX events_by_kind_at ON events(kind, at);}",
    // 6: the keyed audit trail (see crate::audit): the final state a record seals, one head
    // per run (no foreign key: a head outlives a deleted run, to name it), and the
    // installation head (its row exists from the start, so that numbering can lock it).
    "ALTER TABLE events ADD COLUMN seal TEXT;
     CREATE TABLE audit_heads (
        run        TEXT PRIMARY KEY,
        n          {INT} NOT NULL UNIQUE,
        prev_run   TEXT,
        seq        {INT} NOT NULL,
        hash       TEXT NOT NULL,
        keyed_from {INT} NOT NULL,
        mac        TEXT NOT NULL
     );
     CREATE TABLE audit_installation (
        id       {INT} PRIMARY KEY CHECK (id = 1),
        runs     {INT} NOT NULL,
        last_run TEXT,
        mac      TEXT NOT NULL
     );
     INSERT INTO audit_installation (id, runs, last_run, mac) VALUES (1, 0, NULL, '');",
    // 7: the refusal log is bounded: repeated refusals of one client are counted in one row
    // (`count`, from `at` to `last_at`), found by the index.
    "ALTER TABLE refusals ADD COLUMN client TEXT NOT NULL DEFAULT '';
     ALTER TABLE refusals ADD COLUMN count {INT} NOT NULL DEFAULT 1;
     ALTER TABLE refusals ADD COLUMN last_at {INT} NOT NULL DEFAULT 0;
     UPDATE refusals SET last_at = at;
     CREATE INDEX refusals_by_client ON refusals(client, who, status, at);",
    // 8: a checkpoint keeps what the engine knows of the run's earlier tool calls, so that a
    // resume reads the checkpoint alone, not the history.
    "ALTER TABLE checkpoints ADD COLUMN calls TEXT;",
    // 9: the gate index, one row per open gate (see store/gate_index.rs; a row goes with its
    // run if the run is ever deleted), written in the transaction of the events that open,
    // change and close the gate. `IF NOT EXISTS`: a database taken back to an older version
    // by hand may still have it.
    "CREATE TABLE IF NOT EXISTS gates (
        run            TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name           TEXT NOT NULL,
        kind           TEXT NOT NULL,
        workflow       TEXT NOT NULL,
        version        TEXT NOT NULL,
        started_by     TEXT NOT NULL,
        opened_at      {INT} NOT NULL,
        approvers      TEXT NOT NULL,
        approvers_json TEXT NOT NULL,
        escalate_to    TEXT,
        escalate_json  TEXT,
        escalate_at    {INT},
        escalated      {BOOL} NOT NULL,
        deadline       {INT},
        outer_deadline {INT},
        quorum         {INT} NOT NULL,
        allow_self     {BOOL} NOT NULL,
        prompt         TEXT,
        context        TEXT NOT NULL,
        shown_sha256   TEXT NOT NULL,
        input_schema   TEXT,
        timeout_caught {BOOL} NOT NULL,
        options        TEXT NOT NULL,
        approvals      TEXT NOT NULL,
        deciders       TEXT NOT NULL,
        PRIMARY KEY (run, name)
     );
     CREATE INDEX IF NOT EXISTS gates_by_opened ON gates(opened_at);",
    // 10: `/metrics` counts from indexes: runs by workflow and status, events by kind and
    // time (PostgreSQL has had that one since 5).
    "CREATE INDEX IF NOT EXISTS runs_by_workflow_status ON runs(workflow, status);
     {sqlite:CREATE INDEX IF NOT EXISTS events_by_kind_at ON events(kind, at);}",
    // 11: the notification outbox (see store/outbox.rs), one row per notification and hook,
    // written in the transaction of the gate event it announces; a row goes with its run if
    // the run is ever deleted, and `outbox_by_due` finds the rows due first.
    "CREATE TABLE IF NOT EXISTS outbox (
        id              TEXT NOT NULL,
        slot            {INT} NOT NULL,
        hook            TEXT NOT NULL,
        run             TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        gate            TEXT NOT NULL,
        opened_at       {INT} NOT NULL,
        what            TEXT NOT NULL,
        message         TEXT NOT NULL,
        created_at      {INT} NOT NULL,
        attempts        {INT} NOT NULL,
        next_attempt_at {INT} NOT NULL,
        owner           TEXT,
        lease_until     {INT},
        PRIMARY KEY (id, slot)
     );
     CREATE INDEX IF NOT EXISTS outbox_by_due ON outbox(next_attempt_at);",
    // 12: `/metrics` counts the open gates by kind, and finds the oldest, from an index
    // instead of reading every gate's row.
    "CREATE INDEX IF NOT EXISTS gates_by_kind_opened ON gates(kind, opened_at);",
    // 13: the schema of a gate's context (its type as the artifact records it, bytecode
    // format 4), so that the inbox shows its fields in the order the workflow wrote them;
    // NULL in the rows of gates opened before, which are shown as they were.
    "ALTER TABLE gates ADD COLUMN context_schema TEXT;",
    // 14: who may decide each open gate, one row per user or role the gate names (see
    // store/gate_index.rs), so that one reviewer's gates are found through an index instead
    // of by matching every gate's `deciders` text; filled from that text for the gates open
    // when the database is upgraded.
    "CREATE TABLE IF NOT EXISTS gate_deciders (
        decider TEXT NOT NULL,
        run     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name    TEXT NOT NULL,
        PRIMARY KEY (decider, run, name)
     );
     CREATE INDEX IF NOT EXISTS gate_deciders_by_gate ON gate_deciders(run, name);
     {sqlite:INSERT OR IGNORE INTO gate_deciders (decider, run, name)
        SELECT DISTINCT j.value, g.run, g.name FROM gates g, json_each(g.deciders) j;}
     {postgres:INSERT INTO gate_deciders (decider, run, name)
        SELECT DISTINCT d, g.run, g.name FROM gates g, jsonb_array_elements_text(g.deciders::jsonb) d
        ON CONFLICT DO NOTHING;}",
    // 15: `/metrics` reads running counts of runs (by workflow and status) and of open gates
    // (by kind) instead of counting rows: triggers keep them with every write of `runs` and
    // `gates`, in the writer's transaction. A count is split into slots, each written by one
    // writer only, so that writers never wait for one another: SQLite has one writer (slot
    // 0); on PostgreSQL a connection writes the slot of its backend's pid, and the slots of
    // connections that are gone are folded into slot 0 (store/counts.rs). Filled from the
    // rows there when the database is upgraded (after the triggers, in the same transaction).
    "CREATE TABLE IF NOT EXISTS run_counts (
        workflow TEXT NOT NULL,
        status   TEXT NOT NULL,
        slot     {INT} NOT NULL,
        count    {INT} NOT NULL,
        PRIMARY KEY (workflow, status, slot)
     );
     CREATE TABLE IF NOT EXISTS gate_counts (
        kind  TEXT NOT NULL,
        slot  {INT} NOT NULL,
        count {INT} NOT NULL,
        PRIMARY KEY (kind, slot)
     );
     {sqlite:CREATE TRIGGER IF NOT EXISTS runs_counted_in AFTER INSERT ON runs BEGIN
        INSERT INTO run_counts VALUES (NEW.workflow, NEW.status, 0, 1)
          ON CONFLICT (workflow, status, slot) DO UPDATE SET count = count + 1;
     END;
     CREATE TRIGGER IF NOT EXISTS runs_counted_moved AFTER UPDATE OF status ON runs
       WHEN OLD.status <> NEW.status BEGIN
        INSERT INTO run_counts VALUES (OLD.workflow, OLD.status, 0, -1)
          ON CONFLICT (workflow, status, slot) DO UPDATE SET count = count - 1;
        INSERT INTO run_counts VALUES (NEW.workflow, NEW.status, 0, 1)
          ON CONFLICT (workflow, status, slot) DO UPDATE SET count = count + 1;
     END;
     CREATE TRIGGER IF NOT EXISTS runs_counted_out AFTER DELETE ON runs BEGIN
        INSERT INTO run_counts VALUES (OLD.workflow, OLD.status, 0, -1)
          ON CONFLICT (workflow, status, slot) DO UPDATE SET count = count - 1;
     END;
     CREATE TRIGGER IF NOT EXISTS gates_counted_in AFTER INSERT ON gates BEGIN
        INSERT INTO gate_counts VALUES (NEW.kind, 0, 1)
          ON CONFLICT (kind, slot) DO UPDATE SET count = count + 1;
     END;
     CREATE TRIGGER IF NOT EXISTS gates_counted_moved AFTER UPDATE OF kind ON gates
       WHEN OLD.kind <> NEW.kind BEGIN
        INSERT INTO gate_counts VALUES (OLD.kind, 0, -1)
          ON CONFLICT (kind, slot) DO UPDATE SET count = count - 1;
        INSERT INTO gate_counts VALUES (NEW.kind, 0, 1)
          ON CONFLICT (kind, slot) DO UPDATE SET count = count + 1;
     END;
     CREATE TRIGGER IF NOT EXISTS gates_counted_out AFTER DELETE ON gates BEGIN
        INSERT INTO gate_counts VALUES (OLD.kind, 0, -1)
          ON CONFLICT (kind, slot) DO UPDATE SET count = count - 1;
     END;}
     {postgres:CREATE OR REPLACE FUNCTION flow_count_runs() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
        IF TG_OP <> 'INSERT' THEN
          INSERT INTO run_counts VALUES (OLD.workflow, OLD.status, pg_backend_pid(), -1)
            ON CONFLICT (workflow, status, slot) DO UPDATE SET count = run_counts.count - 1;
        END IF;
        IF TG_OP <> 'DELETE' THEN
          INSERT INTO run_counts VALUES (NEW.workflow, NEW.status, pg_backend_pid(), 1)
            ON CONFLICT (workflow, status, slot) DO UPDATE SET count = run_counts.count + 1;
        END IF;
        RETURN NULL;
     END $$;
     CREATE OR REPLACE FUNCTION flow_count_gates() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
        IF TG_OP <> 'INSERT' THEN
          INSERT INTO gate_counts VALUES (OLD.kind, pg_backend_pid(), -1)
            ON CONFLICT (kind, slot) DO UPDATE SET count = gate_counts.count - 1;
        END IF;
        IF TG_OP <> 'DELETE' THEN
          INSERT INTO gate_counts VALUES (NEW.kind, pg_backend_pid(), 1)
            ON CONFLICT (kind, slot) DO UPDATE SET count = gate_counts.count + 1;
        END IF;
        RETURN NULL;
     END $$;
     DROP TRIGGER IF EXISTS runs_counted_in ON runs;
     DROP TRIGGER IF EXISTS runs_counted_moved ON runs;
     DROP TRIGGER IF EXISTS runs_counted_out ON runs;
     DROP TRIGGER IF EXISTS gates_counted_in ON gates;
     DROP TRIGGER IF EXISTS gates_counted_moved ON gates;
     DROP TRIGGER IF EXISTS gates_counted_out ON gates;
     CREATE TRIGGER runs_counted_in AFTER INSERT ON runs
       FOR EACH ROW EXECUTE FUNCTION flow_count_runs();
     CREATE TRIGGER runs_counted_moved AFTER UPDATE OF status ON runs
       FOR EACH ROW WHEN (OLD.status <> NEW.status) EXECUTE FUNCTION flow_count_runs();
     CREATE TRIGGER runs_counted_out AFTER DELETE ON runs
       FOR EACH ROW EXECUTE FUNCTION flow_count_runs();
     CREATE TRIGGER gates_counted_in AFTER INSERT ON gates
       FOR EACH ROW EXECUTE FUNCTION flow_count_gates();
     CREATE TRIGGER gates_counted_moved AFTER UPDATE OF kind ON gates
       FOR EACH ROW WHEN (OLD.kind <> NEW.kind) EXECUTE FUNCTION flow_count_gates();
     CREATE TRIGGER gates_counted_out AFTER DELETE ON gates
       FOR EACH ROW EXECUTE FUNCTION flow_count_gates();}
     DELETE FROM run_counts;
     DELETE FROM gate_counts;
     INSERT INTO run_counts (workflow, status, slot, count)
        SELECT workflow, status, 0, COUNT(*) FROM runs GROUP BY workflow, status;
     INSERT INTO gate_counts (kind, slot, count) SELECT kind, 0, COUNT(*) FROM gates GROUP BY kind;",
    // 16: the runs in a tool call, found by the claim without reading every waiting run
    // (`Runs::claim_ready` asks for `substr(waiting_on, 1, 5) = 'tool '`).
    "CREATE INDEX IF NOT EXISTS runs_in_call ON runs(status, substr(waiting_on, 1, 5));",
    // 17: the signals sent to runs, queued until the run takes them (store/signals.rs).
    "CREATE TABLE IF NOT EXISTS signals (
        run     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        number  {INT} NOT NULL,
        name    TEXT NOT NULL,
        value   TEXT NOT NULL,
        sender  TEXT NOT NULL,
        sent_at {INT} NOT NULL,
        taken   {INT} NOT NULL DEFAULT 0,
        PRIMARY KEY (run, number)
     );
     CREATE INDEX IF NOT EXISTS signals_queued ON signals(run, name, taken, number);",
    // 18: a gate's reminders (`remind: 1d`): how often, and how many were sent.
    "ALTER TABLE gates ADD COLUMN remind_every {INT};
     ALTER TABLE gates ADD COLUMN reminded {INT} NOT NULL DEFAULT 0;",
    // 19: a run's child runs, found without reading every run (`Runs::children`: the
    // branches of a `parallel` are its children).
    "CREATE INDEX IF NOT EXISTS runs_by_parent ON runs(parent);",
    // 20: why an operator must look at a run (an undo block that failed), until someone
    // records it handled; found without reading every run (`flowrt runs --status
    // needs_attention`).
    "ALTER TABLE runs ADD COLUMN attention TEXT;
     CREATE INDEX IF NOT EXISTS runs_needing_attention ON runs(created_at)
        WHERE attention IS NOT NULL;",
];

/// The schema version this code writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Refuses a database whose schema this `flowrt` cannot use.
pub fn check_version(found: i64) -> StoreResult<()> {
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

/// Applies the migrations after version `found`, in the caller's transaction.
pub fn apply(conn: &mut dyn Conn, found: i64) -> StoreResult<()> {
    check_version(found)?;
    let dialect: Dialect = conn.dialect();
    let start = usize::try_from(found).unwrap_or(0);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(start) {
        conn.batch(
            &format!("applying schema migration {}", index + 1),
            &dialect.render(migration),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whitespace-insensitive, so that only the SQL is compared.
    fn words(sql: &str) -> Vec<&str> {
        sql.split_whitespace().collect()
    }

    /// Migration 11 was released with a text per store (before the dialect layer); databases
    /// built by it must be what migration 11 builds now, in both dialects.
    #[test]
    fn migration_11_is_the_outbox_as_released() {
        let released = |int: &str| {
            format!(
                "CREATE TABLE IF NOT EXISTS outbox (
                    id TEXT NOT NULL, slot {int} NOT NULL, hook TEXT NOT NULL,
                    run TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                    gate TEXT NOT NULL, opened_at {int} NOT NULL, what TEXT NOT NULL,
                    message TEXT NOT NULL, created_at {int} NOT NULL, attempts {int} NOT NULL,
                    next_attempt_at {int} NOT NULL, owner TEXT, lease_until {int},
                    PRIMARY KEY (id, slot)
                );
                CREATE INDEX IF NOT EXISTS outbox_by_due ON outbox(next_attempt_at);"
            )
        };
        for (dialect, int) in [(Dialect::Sqlite, "INTEGER"), (Dialect::Postgres, "BIGINT")] {
            let rendered = dialect.render(MIGRATIONS[10]);
            assert_eq!(words(&rendered), words(&released(int)), "{dialect:?}");
        }
    }
}
