//! jobq-tests: shared harness for the suites that run against real servers.
//!
//! The suites read the `JOBQ_` variables that `scripts/infra.sh env` prints. Without
//! `JOBQ_TEST_INFRA=1` a suite says it is skipped and passes, unless
//! `JOBQ_REQUIRE_INFRA=1` (CI) makes a missing server a failure.

pub mod stack;

use jobq_common::settings::Settings;

/// Settings for a suite, or `None` (after saying so) when the real servers are not set up.
pub fn infra_settings(suite: &str) -> Option<Settings> {
    let ready = std::env::var("JOBQ_TEST_INFRA").is_ok_and(|v| v == "1");
    let required = std::env::var("JOBQ_REQUIRE_INFRA").is_ok_and(|v| v == "1");
    if !ready {
        assert!(
            !required,
            "JOBQ_REQUIRE_INFRA=1 but the servers are not set up: run `scripts/infra.sh up` and `eval \"$(scripts/infra.sh env)\"`"
        );
        eprintln!(
            "skipping {suite}: real servers not set up (scripts/infra.sh up; eval \"$(scripts/infra.sh env)\")"
        );
        return None;
    }
    Some(Settings::load().expect("settings from the environment"))
}

/// A name no other test uses: `prefix-<random>`, valid as a topic, database and bucket name.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}
