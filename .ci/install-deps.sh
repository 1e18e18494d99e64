#!/usr/bin/env bash
# Debian packages that jobq's CI and scripts/infra.sh need on a fresh machine.
# The servers themselves (Kafka, Keycloak, nx-27017, MinIO) are installed and
# cached by scripts/infra.sh; Java 17, Maven, Python 3, Go, Rust and Node come
# with the machine image.
set -euo pipefail

packages=(
  bubblewrap    # the worker runs every job in a bubblewrap sandbox
  ca-certificates
  curl          # infra.sh: Keycloak health check; tests
  git           # the worker clones job repositories
  procps        # infra.sh: ps and pgrep to manage server processes
  python3-venv  # infra.sh: venv for nx-27017, pymongo and boto3
  unzip         # infra.sh: unpack the Keycloak distribution
  util-linux    # infra.sh: setsid and flock
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# python3-venv only matters when the python3 on PATH cannot make a venv by itself.
if python3 -c 'import ensurepip, venv' 2>/dev/null; then
  filtered=()
  for p in "${missing[@]}"; do [[ $p == python3-venv ]] || filtered+=("$p"); done
  missing=("${filtered[@]}")
fi

# Java and Maven come with the image; install Debian's if a machine lacks them.
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
for tool in go cargo; do
  command -v "$tool" >/dev/null || echo "install-deps: warning: $tool is not on PATH (infra.sh builds MinIO with go, s3s-fs with cargo)" >&2
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all Debian packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
"${sudo[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
