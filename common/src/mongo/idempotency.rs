//! Idempotency key records ([`IdempotencyKeys`]) in the collection `idempotency` of the job
//! store's database, one document per owner and key, its `_id` the record id (a hash, see
//! [`crate::idempotency::record_id`]). The unique `_id` decides which of several submits
//! stores its record; a replace or delete names the record it expects, so it is conditional.

use async_trait::async_trait;
use mongodb::Collection;
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};

use super::{MongoJobStore, db_error};
use crate::domain::{JobId, from_unix_ms, unix_ms};
use crate::error::{ErrorKind, PortError, PortResult};
use crate::idempotency::{IdempotencyKeys, KeyRecord};

/// How often `remember` inserts again when the record it lost to was deleted before it read it.
const REMEMBER_TRIES: usize = 4;

/// The stored form of a key record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyDoc {
    #[serde(rename = "_id")]
    id: String,
    job_id: String,
    body_hash: String,
    created_ms: i64,
}

impl KeyDoc {
    fn new(id: &str, r: &KeyRecord) -> Self {
        KeyDoc {
            id: id.to_string(),
            job_id: r.job_id.to_string(),
            body_hash: r.body_hash.clone(),
            created_ms: unix_ms(r.created_at),
        }
    }

    fn record(self) -> PortResult<KeyRecord> {
        Ok(KeyRecord {
            job_id: self
                .job_id
                .parse()
                .map_err(|e| PortError::with_source(ErrorKind::Internal, "stored job id", e))?,
            body_hash: self.body_hash,
            created_at: from_unix_ms(self.created_ms),
        })
    }
}

impl MongoJobStore {
    fn keys(&self) -> Collection<KeyDoc> {
        self.client
            .database(&self.jobs.namespace().db)
            .collection("idempotency")
    }
}

#[async_trait]
impl IdempotencyKeys for MongoJobStore {
    async fn remember(&self, id: &str, record: &KeyRecord) -> PortResult<Option<KeyRecord>> {
        let keys = self.keys();
        for _ in 0..REMEMBER_TRIES {
            match keys.insert_one(KeyDoc::new(id, record)).await {
                Ok(_) => return Ok(None),
                Err(e) => {
                    let e = db_error("remember idempotency key", e);
                    if e.kind != ErrorKind::AlreadyExists {
                        return Err(e);
                    }
                }
            }
            let stored = keys
                .find_one(doc! {"_id": id})
                .await
                .map_err(|e| db_error("read idempotency key", e))?;
            if let Some(stored) = stored {
                return stored.record().map(Some);
            }
        }
        Err(PortError::unavailable(
            "remember idempotency key: its record kept changing",
        ))
    }

    async fn replace(&self, id: &str, old: &KeyRecord, new: &KeyRecord) -> PortResult<bool> {
        let filter = doc! {
            "_id": id,
            "job_id": old.job_id.as_str(),
            "created_ms": unix_ms(old.created_at),
        };
        let set = doc! {"$set": {
            "job_id": new.job_id.as_str(),
            "body_hash": new.body_hash.as_str(),
            "created_ms": unix_ms(new.created_at),
        }};
        let result = self
            .keys()
            .update_one(filter, set)
            .await
            .map_err(|e| db_error("replace idempotency key", e))?;
        Ok(result.matched_count == 1)
    }

    async fn forget(&self, id: &str, job_id: &JobId) -> PortResult<bool> {
        let result = self
            .keys()
            .delete_one(doc! {"_id": id, "job_id": job_id.as_str()})
            .await
            .map_err(|e| db_error("forget idempotency key", e))?;
        Ok(result.deleted_count == 1)
    }
}
