//! Idempotency key records ([`IdempotencyKeys`]) in the table `idempotency` of the same
//! SQLite file. Each call is one statement, or two under the one connection's lock, so a
//! record is inserted or read whole.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::domain::{from_unix_ms, unix_ms};
use crate::error::PortResult;
use crate::idempotency::{IdempotencyKeys, KeyRecord};

/// Creates the table if missing (a file of an older version gains it).
pub(super) fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS idempotency (
             id TEXT PRIMARY KEY,
             job_id TEXT NOT NULL,
             body_hash TEXT NOT NULL,
             created_ms INTEGER NOT NULL
         );",
    )
}

fn read(conn: &Connection, id: &str) -> rusqlite::Result<Option<KeyRecord>> {
    conn.query_row(
        "SELECT job_id, body_hash, created_ms FROM idempotency WHERE id = ?1",
        [id],
        |row| {
            let job_id: String = row.get(0)?;
            Ok(KeyRecord {
                job_id: job_id.parse().map_err(|e: crate::domain::InvalidJobId| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        e.to_string().into(),
                    )
                })?,
                body_hash: row.get(1)?,
                created_at: from_unix_ms(row.get(2)?),
            })
        },
    )
    .optional()
}

#[async_trait]
impl IdempotencyKeys for SqliteStore {
    async fn remember(&self, id: &str, record: &KeyRecord) -> PortResult<Option<KeyRecord>> {
        let (id, r) = (id.to_string(), record.clone());
        self.with(
            move |c| {
                let inserted = c.execute(
                    "INSERT INTO idempotency (id, job_id, body_hash, created_ms)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (id) DO NOTHING",
                    params![id, r.job_id.as_str(), r.body_hash, unix_ms(r.created_at)],
                )?;
                if inserted == 1 {
                    Ok(None)
                } else {
                    read(c, &id)
                }
            },
            "remember idempotency key",
        )
        .await
    }

    async fn replace(&self, id: &str, old: &KeyRecord, new: &KeyRecord) -> PortResult<bool> {
        let (id, old, new) = (id.to_string(), old.clone(), new.clone());
        self.with(
            move |c| {
                let changed = c.execute(
                    "UPDATE idempotency SET job_id = ?1, body_hash = ?2, created_ms = ?3
                     WHERE id = ?4 AND job_id = ?5 AND created_ms = ?6",
                    params![
                        new.job_id.as_str(),
                        new.body_hash,
                        unix_ms(new.created_at),
                        id,
                        old.job_id.as_str(),
                        unix_ms(old.created_at),
                    ],
                )?;
                Ok(changed == 1)
            },
            "replace idempotency key",
        )
        .await
    }

    async fn forget(&self, id: &str, job_id: &crate::domain::JobId) -> PortResult<bool> {
        let (id, job_id) = (id.to_string(), job_id.to_string());
        self.with(
            move |c| {
                let deleted = c.execute(
                    "DELETE FROM idempotency WHERE id = ?1 AND job_id = ?2",
                    params![id, job_id],
                )?;
                Ok(deleted == 1)
            },
            "forget idempotency key",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fresh() -> Option<SqliteStore> {
        Some(SqliteStore::in_memory().unwrap())
    }

    crate::idempotency_conformance!(fresh);
}
