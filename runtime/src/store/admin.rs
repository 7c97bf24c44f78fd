//! Deployed versions, API tokens, the refusal log and the database's settings in SQL,
//! written once for both stores.
//!
//! In: the [`Versions`], [`Tokens`] and [`Settings`] calls. Out: rows of `versions`,
//! `tokens`, `refusals` and `settings`.

use super::sql::{Row, SqlStore, params, sql};
use super::{
    Millis, REFUSAL_LOG_ROWS, REFUSAL_WINDOW_MS, Refusal, Settings, StoreResult, TokenRecord,
    Tokens, Versions,
};

impl<S: SqlStore + ?Sized> Versions for S {
    fn deploy(&mut self, hash: &str, artifact: &[u8], now: Millis) -> StoreResult<()> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "INSERT INTO versions (hash, artifact, deployed_at) VALUES ($1, $2, $3)
             ON CONFLICT (hash) DO NOTHING",
        );
        conn.execute("deploying a version", sql, params![hash, artifact, now])?;
        Ok(())
    }

    fn artifact(&mut self, hash: &str) -> StoreResult<Option<Vec<u8>>> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "SELECT artifact FROM versions WHERE hash = $1"
        );
        conn.value("reading a deployed version", sql, params![hash])
    }

    fn versions(&mut self) -> StoreResult<Vec<(String, Millis)>> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "SELECT hash, deployed_at FROM versions ORDER BY deployed_at, hash"
        );
        conn.query("listing deployed versions", sql, &[])?
            .into_iter()
            .map(|mut row| Ok((row.get(0)?, row.get(1)?)))
            .collect()
    }
}

/// A `tokens` row, columns `id, "user", name, created_at, expires_at, revoked_at`.
fn token(mut row: Row) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: row.get(0)?,
        user: row.get(1)?,
        name: row.get(2)?,
        created_at: row.get(3)?,
        expires_at: row.get(4)?,
        revoked_at: row.get(5)?,
    })
}

impl<S: SqlStore + ?Sized> Tokens for S {
    fn create_token(&mut self, token: &TokenRecord, hash: &str) -> StoreResult<()> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "INSERT INTO tokens (id, \"user\", name, hash, created_at, expires_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        );
        conn.execute(
            "creating a token",
            sql,
            params![
                &token.id,
                &token.user,
                &token.name,
                hash,
                token.created_at,
                token.expires_at,
                token.revoked_at
            ],
        )?;
        Ok(())
    }

    fn token_by_hash(&mut self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "SELECT id, \"user\", name, created_at, expires_at, revoked_at FROM tokens
             WHERE hash = $1",
        );
        conn.query_opt("reading a token", sql, params![hash])?
            .map(token)
            .transpose()
    }

    fn tokens(&mut self) -> StoreResult<Vec<TokenRecord>> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "SELECT id, \"user\", name, created_at, expires_at, revoked_at FROM tokens
             ORDER BY created_at, id",
        );
        conn.query("listing tokens", sql, &[])?
            .into_iter()
            .map(token)
            .collect()
    }

    fn revoke_token(&mut self, id: &str, now: Millis) -> StoreResult<bool> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL"
        );
        Ok(conn.execute("revoking a token", sql, params![id, now])? > 0)
    }

    fn record_refusal(&mut self, refusal: &Refusal) -> StoreResult<()> {
        let r = refusal.bounded();
        let doing = "recording a refused request";
        self.conn()?.transaction(doing, |conn| {
            let dialect = conn.dialect();
            let counted = conn.execute(
                doing,
                sql!(dialect,
                    "UPDATE refusals SET count = count + $5,
                                         last_at = CASE WHEN last_at > $4 THEN last_at ELSE $4 END
                     WHERE {ROW} = (SELECT {ROW} FROM refusals
                                    WHERE client = $1 AND who = $2 AND status = $3 AND at > $6
                                    ORDER BY at DESC LIMIT 1)",
                ),
                params![
                    &r.client,
                    &r.who,
                    r.status,
                    r.at,
                    r.count,
                    r.at - REFUSAL_WINDOW_MS
                ],
            )?;
            if counted == 0 {
                conn.execute(
                    doing,
                    sql!(dialect,
                        "INSERT INTO refusals (at, who, request, status, reason, client, count, last_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    ),
                    params![
                        r.at, &r.who, &r.request, r.status, &r.reason, &r.client, r.count, r.last_at
                    ],
                )?;
                // Row numbers only grow, and rows are deleted from the oldest end only.
                conn.execute(
                    doing,
                    sql!(dialect,
                        "DELETE FROM refusals WHERE {ROW} <= (SELECT MAX({ROW}) FROM refusals) - $1",
                    ),
                    params![REFUSAL_LOG_ROWS],
                )?;
            }
            Ok(())
        })
    }

    fn refusals(&mut self, limit: usize) -> StoreResult<Vec<Refusal>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "SELECT at, who, request, status, reason, client, count, last_at FROM refusals
             ORDER BY {ROW} DESC LIMIT $1",
        );
        conn.query("listing refused requests", sql, params![limit])?
            .into_iter()
            .map(|mut row| {
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
            })
            .collect()
    }
}

impl<S: SqlStore + ?Sized> Settings for S {
    fn setting(&mut self, key: &str) -> StoreResult<Option<String>> {
        let conn = self.conn()?;
        let sql = sql!(conn.dialect(), "SELECT value FROM settings WHERE key = $1");
        conn.value("reading a setting", sql, params![key])
    }

    fn set_setting(&mut self, key: &str, value: &str) -> StoreResult<()> {
        let conn = self.conn()?;
        let sql = sql!(
            conn.dialect(),
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        );
        conn.execute("writing a setting", sql, params![key, value])?;
        Ok(())
    }
}
