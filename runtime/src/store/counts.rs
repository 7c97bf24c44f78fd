//! Running counts for `/metrics`: runs by workflow and status, open gates by kind.
//!
//! In: nothing from the engine — triggers of schema migration 14 keep `run_counts` and
//! `gate_counts` with every write of `runs` and `gates`, in the writer's own transaction, so
//! the counts cannot drift from the rows whatever writes them (the engine, `cancel`,
//! `migrate-store`, an operator's SQL). Out: the counts, summed over their slots, and
//! [`fold_departed`], which PostgreSQL connections run when they connect.
//!
//! Why slots: a count kept in one row would make every writer that changes a run's status
//! wait for the others' commits (a row lock held until commit). Each writer adds to its own
//! slot instead — SQLite's only writer slot 0, a PostgreSQL connection the slot of its
//! backend's pid — and a reader sums them. Slots of connections that are gone are folded into
//! slot 0 so that their number stays that of the live connections.

use super::sql::{Conn, params};
use super::{RunStatus, StoreError, StoreResult};

/// Serializes the folding of departed slots on PostgreSQL: slot 0 is written by the fold
/// alone, so with this lock no two writers ever wait for the same count row.
const FOLD_LOCK: i64 = 0x466c_6f77_436e_7473;

/// Runs by workflow and status (groups with no run left are left out).
pub(crate) fn runs(conn: &mut dyn Conn) -> StoreResult<Vec<(String, RunStatus, i64)>> {
    let sql = "SELECT workflow, status, CAST(SUM(count) AS BIGINT) FROM run_counts
               GROUP BY workflow, status HAVING SUM(count) <> 0";
    conn.query("counting runs", sql, &[])?
        .into_iter()
        .map(|mut row| {
            let (workflow, status): (String, String) = (row.get(0)?, row.get(1)?);
            let status = RunStatus::parse(&status).ok_or_else(|| {
                StoreError::Database(format!("a run of {workflow} has the status `{status}`"))
            })?;
            Ok((workflow, status, row.get(2)?))
        })
        .collect()
}

/// Open gates of `kind` (`approval`, `input`).
pub(crate) fn gates(conn: &mut dyn Conn) -> StoreResult<Vec<(String, i64)>> {
    let sql = "SELECT kind, CAST(SUM(count) AS BIGINT) FROM gate_counts GROUP BY kind";
    conn.query("counting open gates", sql, &[])?
        .into_iter()
        .map(|mut row| Ok((row.get(0)?, row.get(1)?)))
        .collect()
}

/// PostgreSQL: folds the slots of connections that are gone into slot 0, in one
/// transaction. A connection runs it when it connects, so there are never many more slots
/// than connections.
pub(crate) fn fold_departed(conn: &mut dyn Conn) -> StoreResult<()> {
    let doing = "folding the counts of closed connections";
    conn.transaction(doing, |conn| {
        conn.execute(
            doing,
            "SELECT pg_advisory_xact_lock($1)",
            params![FOLD_LOCK],
        )?;
        for (table, key) in [("run_counts", "workflow, status"), ("gate_counts", "kind")] {
            let sql = format!(
                "WITH gone AS (
                   DELETE FROM {table}
                   WHERE slot <> 0 AND slot NOT IN (SELECT pid FROM pg_stat_activity)
                   RETURNING {key}, count)
                 INSERT INTO {table} ({key}, slot, count)
                   SELECT {key}, 0, SUM(count) FROM gone GROUP BY {key}
                 ON CONFLICT ({key}, slot) DO UPDATE SET count = {table}.count + excluded.count"
            );
            conn.execute(doing, &sql, &[])?;
        }
        Ok(())
    })
}
