#!/usr/bin/env bash
# Installs (downloads, builds) the servers scripts/infra.sh runs, without starting
# them, so a CI run can pay for a cold cache before its tests start.
set -euo pipefail
exec "$(dirname "$0")/../scripts/infra.sh" install
