#!/usr/bin/env bash
# Makes a git repository of examples/<name> (default hello-job) in a temporary folder and
# prints its file:// URL, for submitting the example to a local jobq.
#   scripts/example-repo.sh [name]
set -euo pipefail
name=${1:-hello-job}
src="$(cd "$(dirname "$0")/.." && pwd)/examples/$name"
[[ -f $src/package.json ]] || { echo "no example $name in examples/" >&2; exit 1; }
dest="${TMPDIR:-/tmp}/jobq-example-$name"
rm -rf "$dest"
mkdir -p "$dest"
cp -r "$src"/. "$dest"/
git -C "$dest" init -q
git -C "$dest" add -A
git -C "$dest" -c user.name=jobq -c user.email=jobq@localhost commit -qm "$name"
echo "file://$dest"
