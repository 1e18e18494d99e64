#!/usr/bin/env bash
# Runs the Postman collection against a jobq started for the run:
#
#   scripts/postman-stack.sh services [newman options...]
#       the frontend, two worker slots and the observer as local processes on the servers
#       of `scripts/infra.sh up` (Kafka, Keycloak, MongoDB-compatible, S3), with topics,
#       consumer groups, a database and a bucket of its own;
#   scripts/postman-stack.sh standalone [newman options...]
#       `jobq standalone` on a fresh data directory.
#
# Builds nothing: it uses $CARGO_TARGET_DIR/debug/jobq (default target dir
# ~/.cache/jobq/target). Stops only the processes it started. Logs stay in a temporary
# folder, printed when the run fails and removed when it passes.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target=${CARGO_TARGET_DIR:-$HOME/.cache/jobq/target}
jobq="$target/debug/jobq"

die() {
    echo "postman-stack.sh: $*" >&2
    exit 1
}

mode=${1:-}
[[ $mode == services || $mode == standalone ]] || die "usage: scripts/postman-stack.sh services|standalone [newman options...]"
shift
[[ -x $jobq ]] || die "no jobq binary at $jobq; run cargo build --workspace --bins"
command -v curl >/dev/null || die "curl is needed"
if [[ $mode == services ]]; then
    "$root/scripts/infra.sh" status >&2 ||
        die "the infra servers are not all healthy; run scripts/infra.sh up"
    eval "$("$root/scripts/infra.sh" env)"
fi

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

id="postman-$(date +%s)-$RANDOM"
dir=$(mktemp -d "${TMPDIR:-/tmp}/jobq-$id.XXXX")
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
export JOBQ_WORKER__WORK_DIR="$dir/work"
export JOBQ_WORKER__SHUTDOWN_GRACE_SECS=5
export JOBQ_OBSERVER__REFRESH_RATE_SECS=1
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
            echo "postman-stack.sh: pid $pid did not stop in 10 s; killing it" >&2
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
        echo "postman-stack.sh: failed; logs in $dir" >&2
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

echo "postman-stack.sh: jobq $mode at $url (id $id, logs in $dir)" >&2
if [[ $mode == services ]]; then
    start frontend frontend --listen "127.0.0.1:$port"
else
    start standalone standalone --listen "127.0.0.1:$port" --data-dir "$dir/data" --workers 2
fi
frontend_pid=${pids[0]}
deadline=$((SECONDS + 60))
until curl -fsS -o /dev/null "$url/health/" 2>/dev/null; do
    kill -0 "$frontend_pid" 2>/dev/null || die "the frontend exited before it answered /health/"
    ((SECONDS < deadline)) || die "the frontend did not answer /health/ within 60 s"
    sleep 0.2
done
if [[ $mode == services ]]; then
    start worker worker --slots 2
    start observer observer
fi

job_url=$(TMPDIR="$dir" "$root/scripts/example-repo.sh")
"$root/scripts/postman.sh" "$url" "$job_url" "$@"
passed=true
