//! The [`super::Store`] on PostgreSQL, for many workers on many machines sharing one
//! database.
//!
//! In: a `postgres://` URL. Out: a [`PostgresStore`], whose SQL is the store's shared logic
//! (`runs.rs`, `events.rs`, …) over this file's [`Conn`]; the tables, their meaning and the
//! versioned migrations (`schema.rs`) are SQLite's. What differs is how writers coordinate.
//! SQLite serializes every writer; PostgreSQL lets them run side by side, so the shared
//! logic's `{FOR_UPDATE}` and `{SKIP_LOCKED}` mean something here:
//! - a run's row is locked (`FOR UPDATE`) before anything is appended to its history, so two
//!   writers never number events alike and the hash chain stays one chain;
//! - ready runs are claimed with `FOR UPDATE SKIP LOCKED`: workers never wait for each other
//!   and never claim the same run;
//! - a commit checks, under the row lock, that its owner still holds the claim, so a worker
//!   whose lease ran out cannot overwrite the one that took over.
//!
//! What is PostgreSQL's own stays here: the connection is re-opened after PostgreSQL
//! restarts (the failing call reports the error, the next one reconnects), statements are
//! prepared once per connection (one round trip per statement after that), the schema
//! version lives in `flow_schema` under an advisory lock, and group commit turns
//! `synchronous_commit` off until a flush.

use super::counts;
use super::schema::{self, SCHEMA_VERSION};
use super::sql::{Conn, Dialect, Param, Row, SqlStore, Value};
use super::{GroupCommit, StoreError, StoreResult};
use postgres::types::private::BytesMut;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};
use std::collections::HashMap;

/// Any number: serializes schema migrations across processes (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x466c_6f77_5363_6865;

/// Prepared statements kept per connection, at most (the store has a few dozen; the gate
/// reader's varies with the number of roles).
const STATEMENT_CACHE: usize = 256;

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

/// What PostgreSQL said, without the client library's wrapping when it is the server's.
fn detail(e: &postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Param::Int(None) | Param::Text(None) | Param::Blob(None) => Ok(IsNull::Yes),
            // A parameter PostgreSQL typed as a narrower integer (`SELECT 1 = $1`) still takes
            // an i64 that fits.
            Param::Int(Some(v)) if *ty == Type::INT4 => i32::try_from(v)?.to_sql_checked(ty, out),
            Param::Int(Some(v)) if *ty == Type::INT2 => i16::try_from(v)?.to_sql_checked(ty, out),
            Param::Int(Some(v)) => v.to_sql_checked(ty, out),
            Param::Text(Some(v)) => v.to_sql_checked(ty, out),
            Param::Blob(Some(v)) => v.to_sql_checked(ty, out),
            Param::Bool(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each variant checks the type itself, in `to_sql`.
        true
    }

    postgres::types::to_sql_checked!();
}

/// One PostgreSQL connection as the store's logic uses it.
struct PgConn {
    client: Client,
    /// Statements prepared on this connection, by their SQL.
    statements: HashMap<String, Statement>,
    /// Where errors say they happened (the URL without its password).
    location: String,
}

impl PgConn {
    fn error(&self, doing: &str, e: postgres::Error) -> StoreError {
        StoreError::Database(format!("{doing} ({}): {}", self.location, detail(&e)))
    }

    fn statement(&mut self, doing: &str, sql: &str) -> StoreResult<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).map_err(|e| self.error(doing, e))?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn value(&self, doing: &str, row: &postgres::Row, i: usize) -> StoreResult<Value> {
        let ty = row.columns()[i].type_();
        let read = |e: postgres::Error| self.error(doing, e);
        Ok(match *ty {
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)
                .map_err(read)?
                .map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(read)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map_err(read)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(read)?
                .map(Value::Bool),
            Type::BYTEA => row
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(read)?
                .map(Value::Blob),
            _ => row
                .try_get::<_, Option<String>>(i)
                .map_err(read)?
                .map(Value::Text),
        }
        .unwrap_or(Value::Null))
    }
}

/// The parameters as the client library takes them.
fn bind<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Conn for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, doing: &str, sql: &str, params: &[Param<'_>]) -> StoreResult<u64> {
        let statement = self.statement(doing, sql)?;
        let result = self.client.execute(&statement, &bind(params));
        result.map_err(|e| self.error(doing, e))
    }

    fn for_each(
        &mut self,
        doing: &str,
        sql: &str,
        params: &[Param<'_>],
        each: &mut dyn FnMut(Row) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let statement = self.statement(doing, sql)?;
        let result = self.client.query(&statement, &bind(params));
        let rows = result.map_err(|e| self.error(doing, e))?;
        for row in &rows {
            let values = (0..row.len())
                .map(|i| self.value(doing, row, i))
                .collect::<StoreResult<Vec<_>>>()?;
            each(Row::new(values))?;
        }
        Ok(())
    }

    fn batch(&mut self, doing: &str, sql: &str) -> StoreResult<()> {
        let result = self.client.batch_execute(sql);
        result.map_err(|e| self.error(doing, e))
    }

    fn begin(&mut self, doing: &str) -> StoreResult<()> {
        self.batch(doing, "BEGIN")
    }

    fn commit(&mut self, doing: &str) -> StoreResult<()> {
        self.batch(doing, "COMMIT")
    }

    fn rollback(&mut self) {
        // The transaction's own error is what the caller reports; a lost connection is
        // re-opened by the next call.
        let _ = self.client.batch_execute("ROLLBACK");
    }
}

pub struct PostgresStore {
    url: String,
    db: Option<PgConn>,
    /// Where errors say they happened (the URL without its password).
    location: String,
}

impl PostgresStore {
    /// Connects and brings the schema up to date.
    pub fn connect(url: &str) -> StoreResult<PostgresStore> {
        let mut store = PostgresStore {
            url: url.to_string(),
            db: None,
            location: without_password(url),
        };
        store.migrate()?;
        counts::fold_departed(store.db()?)?;
        Ok(store)
    }

    /// The connection, re-opened when PostgreSQL dropped it (a restart, a network cut).
    fn db(&mut self) -> StoreResult<&mut PgConn> {
        if self.db.as_ref().is_none_or(|db| db.client.is_closed()) {
            let client = Client::connect(&self.url, NoTls).map_err(|e| {
                StoreError::Database(format!(
                    "cannot connect to {}: {}",
                    self.location,
                    detail(&e)
                ))
            })?;
            // A connection lost, not the first one: this one writes the counts under
            // another slot (store/counts.rs), so the old slot is folded in now.
            let reconnected = self.db.take().is_some();
            let conn = self.db.insert(PgConn {
                client,
                statements: HashMap::new(),
                location: self.location.clone(),
            });
            if reconnected {
                counts::fold_departed(&mut *conn)?;
            }
            return Ok(conn);
        }
        self.db
            .as_mut()
            .ok_or_else(|| StoreError::Database(format!("no connection to {}", self.location)))
    }

    fn migrate(&mut self) -> StoreResult<()> {
        let doing = "migrating the schema";
        let conn: &mut dyn Conn = self.db()?;
        conn.transaction(doing, |conn| {
            conn.execute(
                doing,
                "SELECT pg_advisory_xact_lock($1)",
                &[MIGRATION_LOCK.into()],
            )?;
            conn.batch(
                doing,
                "CREATE TABLE IF NOT EXISTS flow_schema (version BIGINT NOT NULL);",
            )?;
            let found = match conn.value::<i64>(doing, "SELECT version FROM flow_schema", &[])? {
                Some(version) => version,
                None => {
                    conn.execute(doing, "INSERT INTO flow_schema (version) VALUES (0)", &[])?;
                    0
                }
            };
            schema::apply(conn, found)?;
            conn.execute(
                doing,
                "UPDATE flow_schema SET version = $1",
                &[SCHEMA_VERSION.into()],
            )?;
            Ok(())
        })
    }

    /// The schema version of the database.
    pub fn schema_version(&mut self) -> StoreResult<i64> {
        let conn: &mut dyn Conn = self.db()?;
        conn.value(
            "reading the schema version",
            "SELECT version FROM flow_schema",
            &[],
        )?
        .ok_or_else(|| StoreError::Database("flow_schema holds no version".into()))
    }

    fn set(&mut self, doing: &str, setting: &str) -> StoreResult<()> {
        self.db()?.batch(doing, setting)
    }
}

impl SqlStore for PostgresStore {
    fn conn(&mut self) -> StoreResult<&mut dyn Conn> {
        Ok(self.db()?)
    }
}

impl GroupCommit for PostgresStore {
    fn begin_group(&mut self) -> StoreResult<()> {
        self.set("starting a group commit", "SET synchronous_commit TO off")
    }

    fn flush(&mut self) -> StoreResult<()> {
        // A commit with synchronous_commit on waits until the WAL up to it is on disk, and
        // with it every transaction committed before.
        let doing = "making a group commit durable";
        self.set(doing, "SET synchronous_commit TO on")?;
        self.db()?.execute(
            doing,
            "INSERT INTO settings (key, value) VALUES ('group_commit', '1')
             ON CONFLICT (key) DO UPDATE SET value = (settings.value::BIGINT + 1)::TEXT",
            &[],
        )?;
        self.set("starting a group commit", "SET synchronous_commit TO off")
    }

    fn end_group(&mut self) -> StoreResult<()> {
        self.flush()?;
        self.set("ending a group commit", "SET synchronous_commit TO on")
    }
}
