#!/usr/bin/env bash
# The dashboard in a real browser (frontend/dashboard/tests/browser.mjs: Debian's chromium,
# headless, driven by playwright-core) against a jobq started for the run:
#
#   scripts/browser-test.sh standalone   `jobq standalone`, one in-process worker, the
#                                        built-in issuer's sign-in form
#   scripts/browser-test.sh services     frontend, one worker slot and the observer on the
#                                        servers of `scripts/infra.sh up`; users sign in
#                                        on Keycloak's own login page (code + PKCE)
#
# One job slot, so a second job waits in the queue and the test sees it queued. Screenshots
# go to $JOBQ_BROWSER_OUT (default target/browser under $CARGO_TARGET_DIR). Builds nothing:
# it uses $CARGO_TARGET_DIR/debug/jobq. Stops only the processes it started; fails unless
# every step of the browser test ran and passed.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target=${CARGO_TARGET_DIR:-$HOME/.cache/jobq/target}
jobq="$target/debug/jobq"

die() {
    echo "browser-test.sh: $*" >&2
    exit 1
}

mode=${1:-}
[[ $mode == services || $mode == standalone ]] || die "usage: scripts/browser-test.sh services|standalone"
[[ -x $jobq ]] || die "no jobq binary at $jobq; run cargo build --workspace --bins"
command -v curl >/dev/null || die "curl is needed"
chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[[ -n $chromium && -x $chromium ]] || die "no chromium on PATH (Debian: apt-get install chromium; .ci/install-deps.sh does it)"
if [[ $mode == services ]]; then
    "$root/scripts/infra.sh" status >&2 ||
        die "the infra servers are not all healthy; run scripts/infra.sh up"
    eval "$("$root/scripts/infra.sh" env)"
fi
"$root/scripts/dashboard.sh" deps >&2

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

id="browser-$(date +%s)-$RANDOM"
dir=$(mktemp -d "${TMPDIR:-/tmp}/jobq-$id.XXXX")
out=${JOBQ_BROWSER_OUT:-$target/browser}
mkdir -p "$out"
rm -f "$out/$mode-"*
port=$(free_port)
url="http://127.0.0.1:$port"

export JOBQ_KAFKA__JOBS_TOPIC="$id-jobs"
export JOBQ_KAFKA__EVENTS_TOPIC="$id-events"
export JOBQ_KAFKA__OBSERVATIONS_TOPIC="$id-observations"
export JOBQ_KAFKA__WORKER_GROUP="$id-workers"
export JOBQ_KAFKA__OBSERVER_GROUP="$id-observer"
export JOBQ_KAFKA__PARTITIONS=4
export JOBQ_MONGO__DATABASE="$id"
export JOBQ_S3__BUCKET="$id"
export JOBQ_WORKER__ALLOW_LOCAL_REPOS=true
export JOBQ_STANDALONE__ALLOW_LOCAL_REPOS=true
export JOBQ_WORKER__WORK_DIR="$dir/work"
export JOBQ_WORKER__SHUTDOWN_GRACE_SECS=5
export JOBQ_WORKER__SLOTS=1
export JOBQ_OBSERVER__REFRESH_RATE_SECS=1
# The failing job's one retry waits about a second, not the default 5 s.
export JOBQ_SCHEDULING__RETRY_BACKOFF_SECS=1
export RUST_LOG=${RUST_LOG:-info,rdkafka=warn}

pids=()
passed=false

stop_all() {
    local pid i
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "browser-test.sh: pid $pid did not stop in 10 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}

on_exit() {
    local rc=$?
    stop_all
    if $passed; then
        rm -rf "$dir"
    else
        echo "browser-test.sh: failed; logs in $dir, screenshots in $out" >&2
        local log
        for log in "$dir"/*.log; do
            [[ -f $log ]] || continue
            echo "----- last lines of $log" >&2
            tail -n 30 "$log" >&2
        done
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

start() {
    local name=$1
    shift
    "$jobq" "$@" >"$dir/$name.log" 2>&1 &
    pids+=("$!")
}

echo "browser-test.sh: jobq $mode at $url (id $id, logs in $dir)" >&2
if [[ $mode == services ]]; then
    start frontend frontend --listen "127.0.0.1:$port"
else
    start standalone standalone --listen "127.0.0.1:$port" --data-dir "$dir/data" --workers 1
fi
frontend_pid=${pids[0]}
deadline=$((SECONDS + 60))
until curl -fsS -o /dev/null "$url/health/" 2>/dev/null; do
    kill -0 "$frontend_pid" 2>/dev/null || die "the frontend exited before it answered /health/"
    ((SECONDS < deadline)) || die "the frontend did not answer /health/ within 60 s"
    sleep 0.2
done
if [[ $mode == services ]]; then
    start worker worker --slots 1
    start observer observer
fi

hello=$(TMPDIR="$dir" "$root/scripts/example-repo.sh" hello-job)
ticker=$(TMPDIR="$dir" "$root/scripts/example-repo.sh" ticker-job)
(
    cd "$root/frontend/dashboard"
    JOBQ_URL="$url" JOBQ_MODE="$mode" HELLO_URL="$hello" TICKER_URL="$ticker" OUT_DIR="$out" \
        CHROMIUM="$chromium" timeout 600 node tests/browser.mjs
)
[[ -f $out/$mode-passed ]] || die "the browser test did not report that every step passed"
passed=true
