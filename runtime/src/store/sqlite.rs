//! The embedded store: one SQLite file (rusqlite, WAL, `synchronous=FULL` by default).
//!
//! In: a path (or memory). Out: a [`SqliteStore`], whose SQL is the store's shared logic
//! (`runs.rs`, `events.rs`, …) over this file's [`Conn`]: statements prepared once and
//! cached (`prepare_cached`), rusqlite's errors mapped to [`StoreError`]. What is SQLite's
//! own stays here: the WAL and pragmas, the schema version in `PRAGMA user_version`, and
//! group commit (`synchronous=NORMAL` inside a group, one synced commit to end it).
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction, so two processes on the same file
//! serialize their writes (no row locks are needed) and a waiting writer gives up with
//! [`StoreError::Busy`] after the busy timeout instead of hanging. The migrations of
//! `schema.rs` are applied in order, all in one transaction, when the file is opened.

use super::schema::{self, SCHEMA_VERSION};
use super::sql::{Conn, Dialect, Param, Row, SqlStore, Value};
use super::{GroupCommit, StoreError, StoreResult};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode};
use std::path::Path;
use std::time::Duration;

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

/// One rusqlite connection as the store's logic uses it.
struct SqliteConn {
    conn: Connection,
    ctx: Context,
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value as Owned;
        Ok(match *self {
            Param::Int(Some(v)) => ToSqlOutput::Owned(Owned::Integer(v)),
            Param::Bool(v) => ToSqlOutput::Owned(Owned::Integer(i64::from(v))),
            Param::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Param::Blob(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
            Param::Int(None) | Param::Text(None) | Param::Blob(None) => {
                ToSqlOutput::Owned(Owned::Null)
            }
        })
    }
}

impl SqliteConn {
    fn read(&self, doing: &str, value: ValueRef<'_>) -> StoreResult<Value> {
        Ok(match value {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(v) => Value::Int(v),
            ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => Value::Text(text.to_string()),
                Err(e) => {
                    return Err(StoreError::Database(format!(
                        "{doing} in {}: a text column is not UTF-8 ({e})",
                        self.ctx.location
                    )));
                }
            },
            ValueRef::Blob(bytes) => Value::Blob(bytes.to_vec()),
            ValueRef::Real(v) => {
                return Err(StoreError::Database(format!(
                    "{doing} in {}: a column holds the number {v}, where flowrt writes integers (was the database edited by hand?)",
                    self.ctx.location
                )));
            }
        })
    }
}

impl Conn for SqliteConn {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, doing: &str, sql: &str, params: &[Param<'_>]) -> StoreResult<u64> {
        let ctx = &self.ctx;
        let mut statement = self.conn.prepare_cached(sql).map_err(ctx.map(doing))?;
        let changed = statement
            .execute(rusqlite::params_from_iter(params))
            .map_err(ctx.map(doing))?;
        Ok(changed as u64)
    }

    fn for_each(
        &mut self,
        doing: &str,
        sql: &str,
        params: &[Param<'_>],
        each: &mut dyn FnMut(Row) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let ctx = &self.ctx;
        let mut statement = self.conn.prepare_cached(sql).map_err(ctx.map(doing))?;
        let columns = statement.column_count();
        let mut rows = statement
            .query(rusqlite::params_from_iter(params))
            .map_err(ctx.map(doing))?;
        while let Some(row) = rows.next().map_err(ctx.map(doing))? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                let value = row.get_ref(i).map_err(ctx.map(doing))?;
                values.push(self.read(doing, value)?);
            }
            each(Row::new(values))?;
        }
        Ok(())
    }

    fn batch(&mut self, doing: &str, sql: &str) -> StoreResult<()> {
        self.conn.execute_batch(sql).map_err(self.ctx.map(doing))
    }

    fn begin(&mut self, doing: &str) -> StoreResult<()> {
        self.batch(doing, "BEGIN IMMEDIATE")
    }

    fn commit(&mut self, doing: &str) -> StoreResult<()> {
        self.batch(doing, "COMMIT")
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            // The transaction's own error is what the caller reports.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// The SQLite implementation of [`super::Store`]. Owns one connection: keep it in one thread.
pub struct SqliteStore {
    db: SqliteConn,
    /// The durability asked for; commits use it except inside a group.
    durability: Durability,
    /// Inside a group commit ([`GroupCommit::begin_group`]).
    grouping: bool,
    /// The connection's count of changed rows when the group last synced: a flush with
    /// nothing written since has nothing to make durable (a group of reads costs no sync).
    synced_changes: u64,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.db.ctx.location)
            .finish_non_exhaustive()
    }
}

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
        self.db
            .conn
            .busy_timeout(timeout)
            .map_err(self.db.ctx.map("setting the busy timeout"))?;
        self.db.ctx.busy_timeout = timeout;
        Ok(())
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> StoreResult<i64> {
        self.db
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(self.db.ctx.map("reading the schema version"))
    }

    fn setup(conn: Connection, ctx: Context, durability: Durability) -> StoreResult<SqliteStore> {
        conn.busy_timeout(ctx.busy_timeout)
            .map_err(ctx.map("setting the busy timeout"))?;
        // Returns the new mode: "wal", or "memory" for an in-memory database. SQLite does not
        // call the busy handler for this switch (two processes opening a new database at
        // once), so it is tried again here until the busy timeout has passed.
        let give_up = std::time::Instant::now() + ctx.busy_timeout;
        loop {
            match conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            {
                Ok(_mode) => break,
                Err(error)
                    if matches!(
                        error.sqlite_error_code(),
                        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    ) && std::time::Instant::now() < give_up =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => return Err(ctx.map("switching to WAL")(error)),
            }
        }
        conn.pragma_update(None, "synchronous", durability.pragma())
            .map_err(ctx.map("setting synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(ctx.map("enabling foreign keys"))?;
        // The query planner keeps a statement's plan whatever is bound to it: without this,
        // SQLite re-prepares a cached statement when a new value for a parameter it could
        // plan around (a `LIMIT`, a pattern) is bound — a seventh of a step's time in
        // `durable_steps`. Our statements are written for one plan.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(ctx.map("keeping query plans stable"))?;
        conn.set_prepared_statement_cache_capacity(64);
        let mut store = SqliteStore {
            db: SqliteConn { conn, ctx },
            synced_changes: 0,
            durability,
            grouping: false,
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> StoreResult<()> {
        let doing = "migrating the schema";
        // Checked before taking the write lock, so a read-only look at a newer database
        // is refused without waiting; checked again under the lock below.
        let found = self.schema_version()?;
        schema::check_version(found)?;
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let conn: &mut dyn Conn = &mut self.db;
        conn.transaction(doing, |conn| {
            let found = conn.value::<i64>(doing, "PRAGMA user_version", &[])?;
            schema::apply(conn, found.unwrap_or(0))?;
            conn.batch(doing, &format!("PRAGMA user_version = {SCHEMA_VERSION}"))
        })
    }

    fn pragma(&self, name: &str, value: &str, doing: &str) -> StoreResult<()> {
        self.db
            .conn
            .pragma_update(None, name, value)
            .map_err(self.db.ctx.map(doing))
    }
}

/// A read-only connection to the database at `path` inside one read transaction: a
/// consistent snapshot even while a `flowrt` still writes to it (`flowrt migrate-store`).
pub(crate) fn snapshot(path: &Path) -> StoreResult<Box<dyn Conn>> {
    use rusqlite::OpenFlags;
    let ctx = Context {
        location: path.display().to_string(),
        busy_timeout: DEFAULT_BUSY_TIMEOUT,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(ctx.map("opening the database to read it"))?;
    let mut db = SqliteConn { conn, ctx };
    db.batch("reading the database", "BEGIN")?;
    Ok(Box::new(db))
}

impl SqlStore for SqliteStore {
    fn conn(&mut self) -> StoreResult<&mut dyn Conn> {
        Ok(&mut self.db)
    }
}

impl GroupCommit for SqliteStore {
    fn begin_group(&mut self) -> StoreResult<()> {
        if !self.grouping {
            self.pragma("synchronous", "NORMAL", "starting a group commit")?;
            self.grouping = true;
            self.synced_changes = self.db.conn.total_changes();
        }
        Ok(())
    }

    fn flush(&mut self) -> StoreResult<()> {
        if !self.grouping || self.db.conn.total_changes() == self.synced_changes {
            return Ok(());
        }
        // A commit with synchronous=FULL syncs the WAL file, and with it every transaction
        // appended before; it must write something to be a commit at all.
        self.pragma(
            "synchronous",
            self.durability.pragma(),
            "ending a group commit",
        )?;
        self.db.execute(
            "making a group commit durable",
            "INSERT INTO settings (key, value) VALUES ('group_commit', '1')
             ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            &[],
        )?;
        self.synced_changes = self.db.conn.total_changes();
        self.pragma("synchronous", "NORMAL", "starting a group commit")
    }

    fn end_group(&mut self) -> StoreResult<()> {
        if !self.grouping {
            return Ok(());
        }
        self.flush()?;
        self.pragma(
            "synchronous",
            self.durability.pragma(),
            "ending a group commit",
        )?;
        self.grouping = false;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::conformance::{OWNER, create, owner_of, step};
    use crate::store::{History, RunStatus, Runs, Settings, Versions};
    #[test]
    fn fresh_database_is_migrated_and_reopening_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/flow.db");
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let mode: String = store
            .db
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .db
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let fk: i64 = store
            .db
            .conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let normal = SqliteStore::open_with(&path, Durability::Normal).unwrap();
        let sync: i64 = normal
            .db
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
                .db
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
        // A group that only reads has nothing to sync: no write, no sync.
        reopened.begin_group().unwrap();
        assert_eq!(reopened.versions().unwrap().len(), 2);
        reopened.flush().unwrap();
        reopened.end_group().unwrap();
        assert_eq!(
            reopened.setting("group_commit").unwrap().as_deref(),
            Some("2")
        );
        // Nor does a flush right after one: only what was written since.
        reopened.begin_group().unwrap();
        reopened.deploy("v3", b"c", 3).unwrap();
        reopened.flush().unwrap();
        reopened.end_group().unwrap();
        assert_eq!(
            reopened.setting("group_commit").unwrap().as_deref(),
            Some("3")
        );
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
        assert_eq!(owner_of(&mut store, "r1").as_deref(), Some(OWNER));
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
}
