//! jobq-tests: shared harness for the suites that run against real servers.
//!
//! The suites read the `JOBQ_` variables that `scripts/infra.sh env` prints. Every test
//! that needs those servers is marked `#[ignore = "needs the real servers: scripts/infra.sh up"]`,
//! so a plain `cargo test` reports it *ignored*, never passed. `scripts/test.sh` runs them
//! with `-- --include-ignored` once the servers are up; a test asked to run without them
//! (`JOBQ_TEST_INFRA` unset) fails, it does not pass.

pub mod stack;

/// Runs each scenario (an `async fn(Backend)` of the calling suite) against both backends,
/// as `<scenario>::services` (ignored without the real servers) and `<scenario>::standalone`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            #[ignore = "needs the real servers: scripts/infra.sh up"]
            async fn services() {
                super::$scenario($crate::stack::Backend::Services).await
            }

            #[tokio::test]
            async fn standalone() {
                super::$scenario($crate::stack::Backend::Standalone).await
            }
        }
    )*};
}

use jobq_common::settings::Settings;

/// The `package.json` of a test job whose start script is `start`.
pub fn package(start: &str) -> String {
    serde_json::json!({"name": "job", "version": "1.0.0", "private": true, "scripts": {"start": start}})
        .to_string()
}

/// Fails the calling test unless the real servers are set up (`JOBQ_TEST_INFRA=1`, printed
/// by `scripts/infra.sh env`): a real-server test runs only when asked for, and then it must
/// not pass without having run.
pub fn require_servers(suite: &str) {
    let ready = std::env::var("JOBQ_TEST_INFRA").is_ok_and(|v| v == "1");
    assert!(
        ready,
        "{suite} needs the real servers, which are not set up: run `scripts/infra.sh up` and \
         `eval \"$(scripts/infra.sh env)\"` (without them, leave out `--include-ignored`: \
         these tests are then reported as ignored)"
    );
}

/// Settings for a real-server suite, from the environment; see [`require_servers`].
pub fn infra_settings(suite: &str) -> Settings {
    require_servers(suite);
    Settings::load().expect("settings from the environment")
}

/// A name no other test uses: `prefix-<random>`, valid as a topic, database and bucket name.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}
