#!/usr/bin/env bash
# The web dashboard's build (frontend/dashboard, TypeScript + Vite):
#
#   scripts/dashboard.sh deps     npm ci, skipped while node_modules matches package-lock.json
#   scripts/dashboard.sh build    type-check and write frontend/dashboard/dist (commit it)
#   scripts/dashboard.sh check    type-check, build into a temporary folder and fail if it
#                                 differs from the committed dist/ (what the binary embeds)
#
# Why dist/ is committed: frontend/dashboard/README.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dash="$root/frontend/dashboard"
cd "$dash"

die() {
    echo "dashboard.sh: $*" >&2
    exit 1
}
command -v npm >/dev/null || die "npm is needed (Node.js 20+)"

deps() {
    local want have
    want=$(sha256sum package-lock.json | cut -d' ' -f1)
    have=$(cat node_modules/.jobq-lock.sha256 2>/dev/null || true)
    if [[ $want != "$have" ]]; then
        npm ci --no-audit --no-fund --loglevel=error
        echo "$want" >node_modules/.jobq-lock.sha256
    fi
}

case ${1:-} in
deps) deps ;;
build)
    deps
    npm run --silent build
    ;;
check)
    deps
    npm run --silent check
    out=$(mktemp -d "${TMPDIR:-/tmp}/jobq-dashboard.XXXX")
    trap 'rm -rf "$out"' EXIT
    npx --no-install vite build --logLevel error --outDir "$out" --emptyOutDir
    if ! diff -rq dist "$out" >&2; then
        die "frontend/dashboard/dist differs from a build of the sources: run scripts/dashboard.sh build and commit dist/"
    fi
    echo "dashboard.sh: dist/ matches a fresh build of the sources ($(find dist -type f | wc -l) files)"
    ;;
*) die "usage: scripts/dashboard.sh deps|build|check" ;;
esac
