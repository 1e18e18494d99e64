#!/usr/bin/env bash
# The one test command: format, lint, the dashboard's build, unit tests, then the suites
# against real servers (Kafka, Keycloak, a MongoDB-wire server, an S3 server) started by
# scripts/infra.sh, newman, and the dashboard in headless chromium.
#
#   scripts/test.sh              everything
#   JOBQ_KEEP_INFRA=1 scripts/test.sh   leave the servers running afterwards
#   JOBQ_REQUIRE_INFRA=1 (CI)    a server that does not start fails the run
#   JOBQ_SKIP_CHAOS=1            leave out the last step, the short chaos bench (it restarts
#                                Kafka, MongoDB and S3 of the instance in use)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jobq/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "dashboard: the embedded build (frontend/dashboard/dist) matches its sources"
scripts/dashboard.sh check

step "unit tests"
cargo test --workspace --locked --exclude jobq-tests

if [[ -x scripts/validate-deploy.sh ]]; then
    step "deployment files"
    scripts/validate-deploy.sh
fi

step "real servers: scripts/infra.sh up"
started_here=0
if scripts/infra.sh status >/dev/null 2>&1; then
    echo "servers already running; using them"
else
    if scripts/infra.sh up; then
        started_here=1
    elif [[ "${JOBQ_REQUIRE_INFRA:-0}" == 1 ]]; then
        echo "a server did not start and JOBQ_REQUIRE_INFRA=1" >&2
        exit 1
    else
        echo "servers did not start: the real-server suites will be skipped" >&2
    fi
fi
cleanup() {
    if [[ "$started_here" == 1 && "${JOBQ_KEEP_INFRA:-0}" != 1 ]]; then
        scripts/infra.sh down || true
    fi
}
trap cleanup EXIT

# The real-server tests are #[ignore]d: with the servers up they run (--include-ignored);
# without them cargo reports them as ignored, never as passed.
real_servers=()
if scripts/infra.sh status >/dev/null 2>&1; then
    eval "$(scripts/infra.sh env)"
    real_servers=(--include-ignored)
fi

if [[ ${#real_servers[@]} -gt 0 ]]; then
    step "nx-27017's correction still applies to the installed neosqlite (scripts/infra/nx27017_typed_check.py)"
    scripts/infra.sh check-mongo-patch
fi

step "suites against real servers and jobq standalone (adapters, then the binaries end to end)"
cargo build --workspace --bins --locked
cargo test --locked -p jobq-tests -- --test-threads 3 "${real_servers[@]}"

step "Postman collection with newman: jobq standalone"
scripts/postman-stack.sh standalone

if scripts/infra.sh status >/dev/null 2>&1; then
    step "Postman collection with newman: frontend, worker and observer on the real servers"
    scripts/postman-stack.sh services
else
    echo "skipping the Postman run against the real servers: they are not up"
fi

step "dashboard in a real browser (headless chromium): jobq standalone"
scripts/browser-test.sh standalone

if scripts/infra.sh status >/dev/null 2>&1; then
    step "dashboard in a real browser (headless chromium): the services, signing in on Keycloak"
    scripts/browser-test.sh services
else
    echo "skipping the browser test against the real servers: they are not up"
fi

# Last, after every other suite: it restarts the servers (those this run uses, named by the
# JOBQ_INFRA_* variables) and waits until they are healthy again.
if [[ "${JOBQ_SKIP_CHAOS:-0}" == 1 ]]; then
    echo "skipping the chaos bench: JOBQ_SKIP_CHAOS=1"
elif scripts/infra.sh status >/dev/null 2>&1; then
    step "chaos bench, short: 60 jobs, 2 worker kills, Kafka, MongoDB and S3 restarted (scripts/bench-chaos --short --check)"
    scripts/bench-chaos --short --check --no-build
    scripts/infra.sh status
elif [[ "${JOBQ_REQUIRE_INFRA:-0}" == 1 ]]; then
    echo "the servers are not up for the chaos bench and JOBQ_REQUIRE_INFRA=1" >&2
    exit 1
else
    echo "skipping the chaos bench: the servers are not up"
fi
