//! The dialect layer under the store's SQL: what SQLite (`sqlite.rs`) and PostgreSQL
//! (`postgres.rs`) have in common, so that the store's logic (`runs.rs`, `events.rs`,
//! `gate_index.rs`, `admin.rs`) and its schema (`schema.rs`) are written once.
//!
//! In: SQL templates (PostgreSQL's `$N` placeholders, plus the tokens of [`Dialect::render`]
//! for what really differs) and parameters as a small [`Param`] enum. Out: affected row
//! counts, and rows of owned [`Value`]s read back with typed [`Row::get`]. Each driver
//! implements [`Conn`] (statements prepared once and cached, its errors mapped to the
//! existing [`StoreError`] variants and messages) and [`SqlStore`] (the connection, re-opened
//! by PostgreSQL after a restart); the store's traits are implemented once for every
//! [`SqlStore`].

use super::{StoreError, StoreResult};

/// The two SQL dialects the store speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    Sqlite = 0,
    Postgres = 1,
}

impl Dialect {
    /// `template` in this dialect:
    /// - `$N` placeholders become `?N` on SQLite;
    /// - `{INT}`, `{BLOB}`, `{BOOL}`: column types (INTEGER/BIGINT, BLOB/BYTEA,
    ///   INTEGER/BOOLEAN);
    /// - `{FOR_UPDATE}` locks the rows read on PostgreSQL (SQLite's writers hold the database's
    ///   write lock from `BEGIN IMMEDIATE` on, so there it is nothing); `{SKIP_LOCKED}` also
    ///   skips rows another transaction holds;
    /// - `{ROW}`: the column that numbers rows in insertion order (`rowid`, `n`);
    /// - `{sqlite:TEXT}`, `{postgres:TEXT}`: TEXT in that dialect only.
    ///
    /// Text in single quotes is left as it is.
    pub fn render(self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 16);
        let mut rest = template;
        while let Some(at) = rest.find(['$', '{', '\'']) {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            match rest.as_bytes()[0] {
                b'\'' => {
                    // A literal, up to its closing quote ('' inside is two literals in a row).
                    let end = rest[1..].find('\'').map_or(rest.len(), |i| i + 2);
                    out.push_str(&rest[..end]);
                    rest = &rest[end..];
                }
                b'$' => {
                    let digits = rest[1..].bytes().take_while(u8::is_ascii_digit).count();
                    out.push(if digits > 0 && self == Dialect::Sqlite {
                        '?'
                    } else {
                        '$'
                    });
                    out.push_str(&rest[1..1 + digits]);
                    rest = &rest[1 + digits..];
                }
                _ => {
                    let Some(end) = rest.find('}') else {
                        break;
                    };
                    out.push_str(self.token(&rest[1..end]).unwrap_or(&rest[..=end]));
                    rest = &rest[end + 1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    fn token(self, name: &str) -> Option<&str> {
        let sqlite = self == Dialect::Sqlite;
        let pick = |a, b| Some(if sqlite { a } else { b });
        match name {
            "INT" => pick("INTEGER", "BIGINT"),
            "BLOB" => pick("BLOB", "BYTEA"),
            "BOOL" => pick("INTEGER", "BOOLEAN"),
            "FOR_UPDATE" => pick("", "FOR UPDATE"),
            "SKIP_LOCKED" => pick("", "FOR UPDATE SKIP LOCKED"),
            "ROW" => pick("rowid", "n"),
            _ => {
                let (only, text) = name.split_once(':')?;
                match only {
                    "sqlite" => pick(text, ""),
                    "postgres" => pick("", text),
                    _ => None,
                }
            }
        }
    }
}

/// `sql!(dialect, "template")`: [`Dialect::render`] for a template written in the code
/// (a literal or a `concat!` of literals), rendered once per dialect at each place it is
/// written and kept for the life of the process: a `&'static str`.
macro_rules! sql {
    ($dialect:expr, $template:expr $(,)?) => {{
        const TEMPLATE: &str = $template;
        static RENDERED: [std::sync::OnceLock<String>; 2] =
            [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
        let dialect: $crate::store::sql::Dialect = $dialect;
        RENDERED[dialect as usize]
            .get_or_init(|| dialect.render(TEMPLATE))
            .as_str()
    }};
}
pub(crate) use sql;

/// A statement's parameter (`None`: SQL's null).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Param<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Blob(Option<&'a [u8]>),
    Bool(bool),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(Some(v))
    }
}
impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        Param::Int(v)
    }
}
impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}
impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(Some(v))
    }
}
impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(Some(v))
    }
}
impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Param::Text(v)
    }
}
impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Param::Text(v.as_deref())
    }
}
impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Param::Blob(Some(v))
    }
}
impl<'a> From<&'a Vec<u8>> for Param<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Param::Blob(Some(v))
    }
}

/// A value read back, as a parameter (copying rows between databases).
impl<'a> From<&'a Value> for Param<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Null => Param::Int(None),
            Value::Int(v) => Param::Int(Some(*v)),
            Value::Text(v) => Param::Text(Some(v)),
            Value::Blob(v) => Param::Blob(Some(v)),
            Value::Bool(v) => Param::Bool(*v),
        }
    }
}

/// `params![a, b, …]`: a slice of [`Param`]s.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        &[$($crate::store::sql::Param::from($value)),*][..]
    };
}
pub(crate) use params;

/// A value read back.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
    Bool(bool),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "an integer",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
            Value::Bool(_) => "a boolean",
        }
    }
}

/// A type a column is read as.
pub trait Column: Sized {
    const WANTED: &'static str;
    fn from_value(value: Value) -> Result<Self, Value>;
}

impl Column for i64 {
    const WANTED: &'static str = "an integer";
    fn from_value(value: Value) -> Result<Self, Value> {
        match value {
            Value::Int(v) => Ok(v),
            other => Err(other),
        }
    }
}
impl Column for bool {
    const WANTED: &'static str = "a boolean";
    fn from_value(value: Value) -> Result<Self, Value> {
        match value {
            Value::Bool(v) => Ok(v),
            // SQLite keeps booleans as integers.
            Value::Int(v) => Ok(v != 0),
            other => Err(other),
        }
    }
}
impl Column for String {
    const WANTED: &'static str = "text";
    fn from_value(value: Value) -> Result<Self, Value> {
        match value {
            Value::Text(v) => Ok(v),
            other => Err(other),
        }
    }
}
impl Column for Vec<u8> {
    const WANTED: &'static str = "bytes";
    fn from_value(value: Value) -> Result<Self, Value> {
        match value {
            Value::Blob(v) => Ok(v),
            other => Err(other),
        }
    }
}
impl<T: Column> Column for Option<T> {
    const WANTED: &'static str = T::WANTED;
    fn from_value(value: Value) -> Result<Self, Value> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// A row read back, its values taken out one by one.
#[derive(Debug, Default)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    pub fn new(values: Vec<Value>) -> Row {
        Row { values }
    }

    /// The values, in column order.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }

    /// Column `i` (from 0) as a `T`; each column is read once.
    pub fn get<T: Column>(&mut self, i: usize) -> StoreResult<T> {
        let value = self
            .values
            .get_mut(i)
            .map_or(Value::Null, |v| std::mem::replace(v, Value::Null));
        T::from_value(value).map_err(|found| {
            StoreError::Database(format!(
                "column {} of a row read back holds {}, not {} (was the database edited by hand?)",
                i + 1,
                found.kind(),
                T::WANTED
            ))
        })
    }
}

/// One connection to the database, as the store's logic uses it. Every call says what the
/// store is doing, for the error it may return.
pub trait Conn {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, doing: &str, sql: &str, params: &[Param<'_>]) -> StoreResult<u64>;
    /// Runs a query, handing its rows to `each` one by one as they are read.
    fn for_each(
        &mut self,
        doing: &str,
        sql: &str,
        params: &[Param<'_>],
        each: &mut dyn FnMut(Row) -> StoreResult<()>,
    ) -> StoreResult<()>;
    /// Runs a query; returns its rows.
    fn query(&mut self, doing: &str, sql: &str, params: &[Param<'_>]) -> StoreResult<Vec<Row>> {
        let mut rows = Vec::new();
        self.for_each(doing, sql, params, &mut |row| {
            rows.push(row);
            Ok(())
        })?;
        Ok(rows)
    }
    /// Runs statements without parameters (a migration).
    fn batch(&mut self, doing: &str, sql: &str) -> StoreResult<()>;
    /// Begins a write transaction (SQLite: `BEGIN IMMEDIATE`, taking the write lock now).
    fn begin(&mut self, doing: &str) -> StoreResult<()>;
    fn commit(&mut self, doing: &str) -> StoreResult<()>;
    /// Rolls back the transaction begun, if any; a failure here is not reported (the
    /// transaction's own error is).
    fn rollback(&mut self);
}

impl dyn Conn + '_ {
    /// The first row of a query, if any.
    pub fn query_opt(
        &mut self,
        doing: &str,
        sql: &str,
        params: &[Param<'_>],
    ) -> StoreResult<Option<Row>> {
        Ok(self.query(doing, sql, params)?.into_iter().next())
    }

    /// The single value of a query's first row (`None` for no row).
    pub fn value<T: Column>(
        &mut self,
        doing: &str,
        sql: &str,
        params: &[Param<'_>],
    ) -> StoreResult<Option<T>> {
        self.query_opt(doing, sql, params)?
            .map(|mut row| row.get(0))
            .transpose()
    }

    /// Runs `work` in one transaction: committed when it succeeds, rolled back when it fails.
    pub fn transaction<T>(
        &mut self,
        doing: &str,
        work: impl FnOnce(&mut dyn Conn) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.begin(doing)?;
        match work(self) {
            Ok(value) => match self.commit(doing) {
                Ok(()) => Ok(value),
                Err(e) => {
                    self.rollback();
                    Err(e)
                }
            },
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }
}

/// A store on SQL: the store's traits (`Runs`, `History`, …) are implemented once for every
/// type that can hand out its connection.
pub trait SqlStore {
    /// The connection (PostgreSQL re-opens it here after losing it).
    fn conn(&mut self) -> StoreResult<&mut dyn Conn>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_in_each_dialect() {
        let template =
            "SELECT {ROW} FROM t WHERE a = $1 AND b LIKE '$2 {INT}' AND c = $12 {FOR_UPDATE}";
        assert_eq!(
            Dialect::Sqlite.render(template),
            "SELECT rowid FROM t WHERE a = ?1 AND b LIKE '$2 {INT}' AND c = ?12 "
        );
        assert_eq!(
            Dialect::Postgres.render(template),
            "SELECT n FROM t WHERE a = $1 AND b LIKE '$2 {INT}' AND c = $12 FOR UPDATE"
        );
        let ddl = "CREATE TABLE t ({postgres:n BIGSERIAL,}a {INT}, b {BLOB}, c {BOOL});{sqlite:X;}";
        assert_eq!(
            Dialect::Sqlite.render(ddl),
            "CREATE TABLE t (a INTEGER, b BLOB, c INTEGER);X;"
        );
        assert_eq!(
            Dialect::Postgres.render(ddl),
            "CREATE TABLE t (n BIGSERIAL,a BIGINT, b BYTEA, c BOOLEAN);"
        );
        // Unknown tokens and a lone `$` are left alone; the cache renders once.
        assert_eq!(Dialect::Sqlite.render("{x} $ {y"), "{x} $ {y");
        let rendered = |dialect| sql!(dialect, "SELECT $1");
        assert_eq!(rendered(Dialect::Sqlite), "SELECT ?1");
        assert_eq!(rendered(Dialect::Postgres), "SELECT $1");
        assert!(std::ptr::eq(
            rendered(Dialect::Sqlite),
            rendered(Dialect::Sqlite)
        ));
    }

    #[test]
    fn columns_are_read_as_their_type_or_refused() {
        let mut row = Row::new(vec![
            Value::Int(1),
            Value::Null,
            Value::Text("a".into()),
            Value::Int(0),
        ]);
        assert_eq!(row.get::<i64>(0).unwrap(), 1);
        assert_eq!(row.get::<Option<String>>(1).unwrap(), None);
        let error = row.get::<i64>(2).unwrap_err().to_string();
        assert!(
            error.contains("column 3") && error.contains("text, not an integer"),
            "{error}"
        );
        assert!(!row.get::<bool>(3).unwrap());
    }
}
