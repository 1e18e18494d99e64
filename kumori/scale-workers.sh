#!/bin/sh
# Sets the worker role's instance count of the jobq Kumori deployment.
#
#   scale-workers.sh COUNT
#
# The observer's Kumori scaler (JOBQ_OBSERVER__SCALER=kumori) runs
# JOBQ_OBSERVER__KUMORI_COMMAND with the desired count appended as the last
# argument; this script is the default command. It rewrites
# deployment/workers.cue and runs `kam ctl update deployment`, which changes
# only the worker role's hsize. Environment:
#   KUMORI_DEPLOYMENT  deployment name (default jobq)
#   KAM_CTL            the CLI (default "kam ctl"; "kumorictl" on older installs)
#   KUMORI_WAIT        how long to wait for the update (default 5m)
set -eu

count="${1:-}"
case "$count" in
  '' | *[!0-9]*) echo "usage: $0 COUNT (a whole number)" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "$0")" && pwd)"
file="$here/deployment/workers.cue"
tmp="$file.tmp.$$"
cat > "$tmp" <<CUE
// The worker role's instance count. kumori/scale-workers.sh rewrites this file
// and updates the deployment; edit it by hand for a manual change.
package deployment

#WorkerCount: $count
CUE
mv "$tmp" "$file"

# shellcheck disable=SC2086 # KAM_CTL may be two words ("kam ctl").
exec ${KAM_CTL:-kam ctl} update deployment "${KUMORI_DEPLOYMENT:-jobq}" \
  --deployment "$here/deployment" --yes --wait "${KUMORI_WAIT:-5m}"
