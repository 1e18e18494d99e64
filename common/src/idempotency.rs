//! Idempotent submits: an `Idempotency-Key` a client sends with a submit, so that a retry
//! (after a timeout, a lost answer, a crash) answers the job the first request made instead
//! of making a second one.
//!
//! The rule is written once, in [`claim`]: of all the submits with one key of one owner,
//! the first stores a [`KeyRecord`] (the job id it chose before the job is stored, and the
//! hash of what it asked for); a later submit with the same key within [`KEY_LIFETIME`]
//! replays that job when it asked for the same thing and is refused when it did not; after
//! the lifetime the record is replaced and the key makes a new job. A store adapter only
//! implements [`IdempotencyKeys`]: an insert that fails on a taken id, a conditional
//! replace and a conditional delete.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::domain::{JobId, JobSpec};
use crate::error::{PortError, PortResult};

/// How long a key answers the same job; after it the key may make a new one.
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// How often [`claim`] tries again when the record it read changed under it.
const CLAIM_TRIES: usize = 8;

/// A client's idempotency key: 1 to [`MAX_KEY_LEN`] printable ASCII characters (space to
/// `~`). It is never stored or logged as given: records are named by [`record_id`].
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdempotencyKey")
            .field(&self.0.len())
            .finish()
    }
}

/// Why a text is not an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKey {
    #[error("the idempotency key is empty")]
    Empty,
    #[error("the idempotency key is longer than {MAX_KEY_LEN} characters")]
    TooLong,
    #[error("the idempotency key may hold printable ASCII characters only")]
    NotPrintable,
}

impl FromStr for IdempotencyKey {
    type Err = InvalidKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(InvalidKey::Empty);
        }
        if s.len() > MAX_KEY_LEN {
            return Err(InvalidKey::TooLong);
        }
        if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(InvalidKey::NotPrintable);
        }
        Ok(Self(s.to_string()))
    }
}

impl IdempotencyKey {
    /// The key as given (for the header a client sends).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the raw bytes of a header value.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidKey> {
        std::str::from_utf8(bytes)
            .map_err(|_| InvalidKey::NotPrintable)?
            .parse()
    }
}

/// The id of `owner`'s record of `key`: the SHA-256 (hex) of the owner, a NUL and the key.
/// Keys hold no NUL, so no two (owner, key) pairs share an id; and whatever a key holds,
/// it never forms an odd document id or primary key.
pub fn record_id(owner: &str, key: &IdempotencyKey) -> String {
    let mut hash = Sha256::new();
    hash.update(owner.as_bytes());
    hash.update([0u8]);
    hash.update(key.0.as_bytes());
    hex::encode(hash.finalize())
}

/// The hash of what a submit asks for: the SHA-256 (hex) of the job spec as parsed (URL,
/// args, config) and the scheduling it asks for (priority, retries, `notBefore`,
/// `expireAfterSecs`), in their serialised form. Two requests that parse to the same (args
/// as a string or as a list of words) ask for the same thing.
pub fn body_hash(spec: &JobSpec, schedule: &impl serde::Serialize) -> String {
    let canonical = serde_json::to_vec(&(spec, schedule)).expect("a job spec always serialises");
    hex::encode(Sha256::digest(&canonical))
}

/// What a store keeps for one key of one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The job the key answers; chosen before that job is stored.
    pub job_id: JobId,
    /// [`body_hash`] of the first request.
    pub body_hash: String,
    /// When the key was first used (milliseconds are what stores keep).
    pub created_at: OffsetDateTime,
}

impl KeyRecord {
    /// Whether the key no longer answers its job at `now`.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.created_at + KEY_LIFETIME <= now
    }
}

/// The key records: what a store adapter implements for idempotent submits.
#[async_trait]
pub trait IdempotencyKeys: Send + Sync {
    /// Stores `record` under `id` unless a record has that id: `None` when it was stored,
    /// else the record stored.
    async fn remember(&self, id: &str, record: &KeyRecord) -> PortResult<Option<KeyRecord>>;

    /// Replaces the record under `id` by `new`, only if it is still `old` (the same job and
    /// creation time); `true` when it did.
    async fn replace(&self, id: &str, old: &KeyRecord, new: &KeyRecord) -> PortResult<bool>;

    /// Deletes the record under `id`, only if it still names `job_id`; `true` when it did.
    async fn forget(&self, id: &str, job_id: &JobId) -> PortResult<bool>;
}

/// What [`claim`] decided for one submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this submit's (new, or its old record had expired): store the job.
    Won,
    /// The key answers this job (asked for the same thing): answer it, storing it first if
    /// the first submit has not (yet).
    Replay(JobId),
    /// The key was used within its lifetime for a different request.
    Conflict,
}

/// Claims `owner`'s `key` for `record` at `now`: the rule of idempotent submits (module
/// comment). A record that already names `record`'s job is this submit's own, stored by an
/// earlier try whose answer was lost.
pub async fn claim(
    keys: &dyn IdempotencyKeys,
    owner: &str,
    key: &IdempotencyKey,
    record: &KeyRecord,
    now: OffsetDateTime,
) -> PortResult<Claim> {
    let id = record_id(owner, key);
    for _ in 0..CLAIM_TRIES {
        let Some(stored) = keys.remember(&id, record).await? else {
            return Ok(Claim::Won);
        };
        if stored.job_id == record.job_id {
            return Ok(Claim::Won);
        }
        if stored.expired(now) {
            // Conditional on the old record, so of several submits after the lifetime one
            // replaces it; the others read the new record on the next round.
            if keys.replace(&id, &stored, record).await? {
                return Ok(Claim::Won);
            }
            continue;
        }
        return Ok(if stored.body_hash == record.body_hash {
            Claim::Replay(stored.job_id)
        } else {
            Claim::Conflict
        });
    }
    Err(PortError::unavailable(
        "idempotency key: its record kept changing",
    ))
}

/// Lets `owner`'s `key` make a new job again: its record is deleted if it still names
/// `job_id` (a submit that was not accepted after all).
pub async fn release(
    keys: &dyn IdempotencyKeys,
    owner: &str,
    key: &IdempotencyKey,
    job_id: &JobId,
) -> PortResult<bool> {
    keys.forget(&record_id(owner, key), job_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_printable_ascii_characters() {
        assert!("a".parse::<IdempotencyKey>().is_ok());
        assert!("order 42/retry=1 ~!".parse::<IdempotencyKey>().is_ok());
        assert!("k".repeat(255).parse::<IdempotencyKey>().is_ok());
        assert_eq!("".parse::<IdempotencyKey>(), Err(InvalidKey::Empty));
        assert_eq!(
            "k".repeat(256).parse::<IdempotencyKey>(),
            Err(InvalidKey::TooLong)
        );
        for bad in ["tab\there", "nul\0", "é", "line\nbreak", "\x7f"] {
            assert_eq!(
                bad.parse::<IdempotencyKey>(),
                Err(InvalidKey::NotPrintable),
                "{bad:?}"
            );
        }
        assert_eq!(
            IdempotencyKey::from_bytes(&[0xff, 0x41]),
            Err(InvalidKey::NotPrintable)
        );
    }

    #[test]
    fn record_ids_are_per_owner_and_hex() {
        let key: IdempotencyKey = "k1".parse().unwrap();
        let a = record_id("alice", &key);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, record_id("alice", &key));
        assert_ne!(a, record_id("bob", &key));
        assert_ne!(a, record_id("alice", &"k2".parse().unwrap()));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            record_id("ab", &"c".parse().unwrap()),
            record_id("a", &"bc".parse().unwrap())
        );
    }

    #[test]
    fn the_body_hash_covers_url_args_and_config() {
        let spec = crate::conformance::job("alice").spec;
        let hash = body_hash(&spec, &());
        assert_eq!(hash, body_hash(&spec.clone(), &()));
        assert_ne!(hash, body_hash(&spec, &1));
        for other in [
            JobSpec {
                url: "https://example.com/s.git".into(),
                ..spec.clone()
            },
            JobSpec {
                args: "a c".into(),
                ..spec.clone()
            },
            JobSpec {
                config: "{\"n\":1}".into(),
                ..spec.clone()
            },
        ] {
            assert_ne!(hash, body_hash(&other, &()));
        }
    }

    #[test]
    fn the_debug_form_never_shows_the_key() {
        let key: IdempotencyKey = "secret-order-7".parse().unwrap();
        assert!(!format!("{key:?}").contains("secret"));
    }
}
