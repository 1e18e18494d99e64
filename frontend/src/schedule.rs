//! A submit's scheduling fields and the caller's quotas (docs/scheduling.md): `priority`,
//! `retries`, `notBefore` and `expireAfterSecs` parsed once, here, into the job's
//! [`Schedule`], with the caller's running limit (from the token's `scheduling.quota_claim`,
//! else `scheduling.max_running_per_user`), the waiting limit checked, and the fair-share tag.

use jobq_common::domain::Schedule;
use jobq_common::ports::Principal;
use jobq_common::settings::SchedulingSettings;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::AppState;
use crate::dto::SubmitJob;
use crate::error::{ApiError, PortResultExt};

/// The furthest ahead a `notBefore` may lie.
pub const MAX_DELAY: time::Duration = time::Duration::days(366);

/// The longest `expireAfterSecs` (30 days).
pub const MAX_EXPIRE_AFTER_SECS: u64 = 30 * 24 * 3600;

/// The scheduling fields of a submit, checked (serialised into an idempotent submit's
/// body hash).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Requested {
    pub priority: i32,
    pub retries: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    pub expire_after_secs: Option<u64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub deadline: Option<OffsetDateTime>,
    pub expected_secs: Option<f64>,
}

/// The longest `expectedDurationSecs` (30 days).
pub const MAX_EXPECTED_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// An RFC 3339 time field, at the stores' millisecond precision (`None` when absent).
fn instant(name: &str, value: &Option<Value>) -> Result<Option<OffsetDateTime>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
                ApiError::Unprocessable(format!(
                    "{name} must be an RFC 3339 time, like 2026-12-01T02:00:00Z"
                ))
            })?;
            // Stores keep milliseconds: the submit's answer shows what a read will.
            Ok(Some(jobq_common::domain::from_unix_ms(
                jobq_common::domain::unix_ms(at),
            )))
        }
        Some(_) => Err(ApiError::Unprocessable(format!(
            "{name} must be an RFC 3339 time"
        ))),
    }
}

fn whole(name: &str, value: &Option<Value>) -> Result<Option<i64>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::Unprocessable(format!("{name} must be a whole number"))),
        Some(_) => Err(ApiError::Unprocessable(format!(
            "{name} must be a whole number"
        ))),
    }
}

impl Requested {
    /// Checks the fields of `request` against their ranges and `settings`.
    pub fn parse(
        request: &SubmitJob,
        settings: &SchedulingSettings,
        now: OffsetDateTime,
    ) -> Result<Self, ApiError> {
        let range = Schedule::PRIORITIES;
        let priority = match whole("priority", &request.priority)? {
            None => 0,
            Some(p) if range.contains(&(p.clamp(i32::MIN as i64, i32::MAX as i64) as i32)) => {
                p as i32
            }
            Some(_) => {
                return Err(ApiError::Unprocessable(format!(
                    "priority must be between {} and {}",
                    range.start(),
                    range.end()
                )));
            }
        };
        let retries = match whole("retries", &request.retries)? {
            None => 0,
            Some(r) if (0..=settings.max_retries as i64).contains(&r) => r as u32,
            Some(_) => {
                return Err(ApiError::Unprocessable(format!(
                    "retries must be between 0 and {}",
                    settings.max_retries
                )));
            }
        };
        let not_before = instant("notBefore", &request.not_before)?;
        if not_before.is_some_and(|at| at > now + MAX_DELAY) {
            return Err(ApiError::Unprocessable(
                "notBefore must be within 366 days".into(),
            ));
        }
        let deadline = instant("deadline", &request.deadline)?;
        if let Some(at) = deadline {
            if at <= now {
                return Err(ApiError::Unprocessable(
                    "deadline must be in the future".into(),
                ));
            }
            if at > now + MAX_DELAY {
                return Err(ApiError::Unprocessable(
                    "deadline must be within 366 days".into(),
                ));
            }
            if not_before.is_some_and(|nb| nb >= at) {
                return Err(ApiError::Unprocessable(
                    "deadline must be after notBefore".into(),
                ));
            }
        }
        let expected_secs = match &request.expected_duration_secs {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(s) if s > 0.0 && s <= MAX_EXPECTED_SECS => Some(s),
                _ => {
                    return Err(ApiError::Unprocessable(format!(
                        "expectedDurationSecs must be above 0 and at most {MAX_EXPECTED_SECS}"
                    )));
                }
            },
            Some(_) => {
                return Err(ApiError::Unprocessable(
                    "expectedDurationSecs must be a number of seconds".into(),
                ));
            }
        };
        let expire_after_secs = match whole("expireAfterSecs", &request.expire_after_secs)? {
            None => None,
            Some(s) if (1..=MAX_EXPIRE_AFTER_SECS as i64).contains(&s) => Some(s as u64),
            Some(_) => {
                return Err(ApiError::Unprocessable(format!(
                    "expireAfterSecs must be between 1 and {MAX_EXPIRE_AFTER_SECS}"
                )));
            }
        };
        Ok(Requested {
            priority,
            retries,
            not_before,
            expire_after_secs,
            deadline,
            expected_secs,
        })
    }
}

/// How long a tag read from the store serves the same user's next submits.
const FAIR_TAG_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// The fair-share tag of each user's last submit through this frontend, so a burst of one
/// user's submits costs the store's two reads (`JobCatalog::fair_tag`) once a second, not
/// once per submit: within [`FAIR_TAG_FRESH`] of a read the next tag is the last one + 1.
/// The tag may then lag the store's by what the queue moved in that second (the user's job
/// goes a little earlier than it would); concurrent submits of one user get distinct tags.
#[derive(Debug, Default)]
pub struct FairClock {
    last: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
}

impl FairClock {
    pub async fn tag(
        &self,
        jobs: &dyn jobq_common::ports::JobCatalog,
        owner: &str,
        now: OffsetDateTime,
    ) -> jobq_common::PortResult<f64> {
        if let Some(tag) = self.next_cached(owner) {
            return Ok(tag);
        }
        let tag = jobs.fair_tag(owner, 1.0, now).await?;
        let mut last = self.last.lock().expect("fair clock lock");
        if last.len() > 10_000 {
            last.retain(|_, (_, read)| read.elapsed() < FAIR_TAG_FRESH);
        }
        last.insert(owner.to_string(), (tag, std::time::Instant::now()));
        Ok(tag)
    }

    fn next_cached(&self, owner: &str) -> Option<f64> {
        let mut last = self.last.lock().expect("fair clock lock");
        let (tag, read) = last.get_mut(owner)?;
        if read.elapsed() >= FAIR_TAG_FRESH {
            return None;
        }
        *tag = jobq_common::scheduling::fair_tag(None, Some(*tag), 1.0);
        Some(*tag)
    }
}

/// The caller's running limit: their token's quota claim, else the setting.
pub fn running_limit(caller: &Principal, settings: &SchedulingSettings) -> Option<u32> {
    let from_token = settings
        .quota_claim
        .as_ref()
        .and_then(|claim| caller.numeric_claims.get(claim))
        .map(|&n| n.clamp(1, u32::MAX as u64) as u32);
    from_token.or(settings.max_running_per_user)
}

/// The schedule of a job `caller` submits now: refused with 429 while the caller has
/// `scheduling.max_queued_per_user` jobs waiting; otherwise tagged for fair share.
pub async fn schedule(
    state: &AppState,
    caller: &Principal,
    requested: Requested,
    now: OffsetDateTime,
) -> Result<Schedule, ApiError> {
    let settings = &state.scheduling;
    if let Some(limit) = settings.max_queued_per_user {
        let waiting = state
            .jobs
            .queued_of(&caller.username)
            .await
            .or_api(crate::jobs::STORE)?;
        if waiting >= limit {
            metrics::counter!("jobq_submits_over_quota_total").increment(1);
            return Err(ApiError::TooMany(format!(
                "you have {waiting} jobs waiting, the most allowed is {limit}; submit again when some have started"
            )));
        }
    }
    let fair_tag = match settings.fair_share {
        true => state
            .fair_clock
            .tag(state.jobs.as_ref(), &caller.username, now)
            .await
            .or_api(crate::jobs::STORE)?,
        false => 0.0,
    };
    Ok(Schedule {
        priority: requested.priority,
        not_before: requested.not_before,
        retries: requested.retries,
        expires_at: requested
            .expire_after_secs
            .map(|s| now + time::Duration::seconds(s as i64)),
        max_running: running_limit(caller, settings),
        fair_tag,
        deadline: requested.deadline,
        expected_secs: requested.expected_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: serde_json::Value) -> SubmitJob {
        serde_json::from_value(body).unwrap()
    }

    fn parse(body: serde_json::Value) -> Result<Requested, String> {
        let now = OffsetDateTime::parse("2026-12-01T00:00:00Z", &Rfc3339).unwrap();
        Requested::parse(&request(body), &SchedulingSettings::default(), now)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn fields_default_to_no_priority_no_retries_no_delay_no_expiry() {
        let r = parse(serde_json::json!({"url": "x"})).unwrap();
        assert_eq!(
            r,
            Requested {
                priority: 0,
                retries: 0,
                not_before: None,
                expire_after_secs: None,
                deadline: None,
                expected_secs: None
            }
        );
    }

    #[test]
    fn fields_in_range_are_kept() {
        let r = parse(serde_json::json!({
            "priority": -100, "retries": 10, "notBefore": "2026-12-02T02:00:00+01:00",
            "expireAfterSecs": 60
        }))
        .unwrap();
        assert_eq!(
            (r.priority, r.retries, r.expire_after_secs),
            (-100, 10, Some(60))
        );
        assert_eq!(
            r.not_before.map(|t| t.unix_timestamp()),
            Some(
                OffsetDateTime::parse("2026-12-02T01:00:00Z", &Rfc3339)
                    .unwrap()
                    .unix_timestamp()
            )
        );
    }

    #[test]
    fn each_field_out_of_range_or_of_the_wrong_type_is_refused_with_its_name() {
        for (body, names) in [
            (serde_json::json!({"priority": 101}), "priority"),
            (serde_json::json!({"priority": 1.5}), "priority"),
            (serde_json::json!({"priority": "high"}), "priority"),
            (
                serde_json::json!({"priority": 9_000_000_000_i64}),
                "priority",
            ),
            (serde_json::json!({"retries": -1}), "retries"),
            (serde_json::json!({"retries": 11}), "retries"),
            (serde_json::json!({"notBefore": "tomorrow"}), "notBefore"),
            (serde_json::json!({"notBefore": 5}), "notBefore"),
            (
                serde_json::json!({"notBefore": "2028-12-01T00:00:00Z"}),
                "notBefore",
            ),
            (serde_json::json!({"expireAfterSecs": 0}), "expireAfterSecs"),
            (
                serde_json::json!({"expireAfterSecs": 2_592_001}),
                "expireAfterSecs",
            ),
        ] {
            let error = parse(body.clone()).expect_err(&body.to_string());
            assert!(error.contains(names), "{body}: {error}");
        }
    }

    #[tokio::test]
    async fn a_burst_of_one_users_submits_reads_the_store_once_and_gets_rising_tags() {
        use jobq_common::embedded::SqliteStore;
        use jobq_common::ports::JobCatalog;
        let store = SqliteStore::in_memory().unwrap();
        let clock = FairClock::default();
        let now = OffsetDateTime::now_utc();
        let first = clock.tag(&store, "a", now).await.unwrap();
        // A job of another user stored meanwhile does not move a's cached tags.
        let mut other = jobq_common::domain::Job::new(
            "b",
            jobq_common::domain::JobSpec {
                url: "https://example.com/r.git".into(),
                args: String::new(),
                config: String::new(),
            },
            now,
        );
        other.schedule.fair_tag = 50.0;
        store.insert(&other).await.unwrap();
        let tags: Vec<f64> = futures::future::join_all((0..3).map(|_| clock.tag(&store, "a", now)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(first, 1.0);
        let mut sorted = tags.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(sorted, vec![2.0, 3.0, 4.0], "distinct and rising: {tags:?}");
        // Another user reads the store.
        assert_eq!(clock.tag(&store, "c", now).await.unwrap(), 51.0);
    }

    #[test]
    fn a_token_quota_claim_overrides_the_setting() {
        let mut caller = Principal {
            username: "u".into(),
            subject: "s".into(),
            roles: vec![],
            numeric_claims: Default::default(),
        };
        let settings = SchedulingSettings {
            max_running_per_user: Some(5),
            quota_claim: Some("max_running".into()),
            ..SchedulingSettings::default()
        };
        assert_eq!(running_limit(&caller, &settings), Some(5));
        caller.numeric_claims.insert("max_running".into(), 2);
        assert_eq!(running_limit(&caller, &settings), Some(2));
        assert_eq!(running_limit(&caller, &SchedulingSettings::default()), None);
    }
}
