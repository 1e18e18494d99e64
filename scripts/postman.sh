#!/usr/bin/env bash
# Runs the Postman collection (postman/jobq.postman_collection.json) with newman against
# a running jobq, and exits non-zero if any request or assertion failed.
#
#   scripts/postman.sh BASE_URL JOB_URL [newman options...]
#
#   BASE_URL  where the API answers, e.g. http://127.0.0.1:8080
#   JOB_URL   a git URL of a job repository like examples/hello-job
#             (scripts/example-repo.sh prints a file:// one; the server must then allow
#             local repositories)
#
# newman comes from the npm registry, pinned, installed once into
# ${JOBQ_CACHE:-$HOME/.cache/jobq}/newman and reused. Users and passwords default to the
# collection's (myuser/1234, otheruser/abcd); override them with
# --env-var username=... and the like after JOB_URL.
set -euo pipefail

NEWMAN_VERSION=6.2.2
# Pause between requests: the "Wait for ..." requests poll a job by running themselves
# again, and this paces them (the collection's own retry counter and deadline bound them).
DELAY_MS=${JOBQ_POSTMAN_DELAY_MS:-200}
[[ $DELAY_MS =~ ^[0-9]+$ ]] || { echo "postman.sh: JOBQ_POSTMAN_DELAY_MS must be a number of milliseconds" >&2; exit 2; }

usage() {
    echo "usage: $0 BASE_URL JOB_URL [newman options...]" >&2
    exit 2
}
[[ $# -ge 2 ]] || usage
base_url=${1%/}
job_url=$2
shift 2
[[ -n $base_url && -n $job_url ]] || usage

root="$(cd "$(dirname "$0")/.." && pwd)"
collection="$root/postman/jobq.postman_collection.json"
[[ -f $collection ]] || { echo "postman.sh: no collection at $collection" >&2; exit 1; }

command -v npm >/dev/null || { echo "postman.sh: npm is needed (install Node.js 18 or newer)" >&2; exit 1; }

prefix="${JOBQ_CACHE:-$HOME/.cache/jobq}/newman"
newman="$prefix/node_modules/.bin/newman"
installed=""
if [[ -x $newman ]]; then
    installed=$("$newman" --version 2>/dev/null || true)
fi
if [[ $installed != "$NEWMAN_VERSION" ]]; then
    echo "postman.sh: installing newman $NEWMAN_VERSION into $prefix" >&2
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
        "newman@$NEWMAN_VERSION" >&2
    installed=$("$newman" --version)
    [[ $installed == "$NEWMAN_VERSION" ]] || {
        echo "postman.sh: newman reports version $installed, wanted $NEWMAN_VERSION" >&2
        exit 1
    }
fi

if command -v curl >/dev/null && ! curl -fsS -o /dev/null --max-time 10 "$base_url/health/"; then
    echo "postman.sh: no jobq answers at $base_url/health/; start one (jobq standalone, or scripts/postman-stack.sh)" >&2
    exit 1
fi

options=(--env-var "baseUrl=$base_url" --env-var "jobUrl=$job_url" --reporters cli --timeout-request 60000)
# newman refuses --delay-request 0
((DELAY_MS == 0)) || options+=(--delay-request "$DELAY_MS")
# Colours only for a terminal, not for CI logs.
[[ -t 1 ]] || options+=(--color off)

echo "postman.sh: newman $installed against $base_url" >&2
exec "$newman" run "$collection" "${options[@]}" "$@"
