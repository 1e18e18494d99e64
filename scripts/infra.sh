#!/usr/bin/env bash
# Real servers for jobq's adapter and end-to-end tests, as plain processes on
# 127.0.0.1 (no containers): Apache Kafka (KRaft), Keycloak with the jobq realm,
# a MongoDB-wire server (nx-27017) and an S3 server (MinIO, or s3s-fs as a
# fallback). See docs/infra.md for versions, ports, limits and timings.
#
#   scripts/infra.sh install   only install (download, build) what is missing
#   scripts/infra.sh up        install what is missing (cached), start what is not running, wait until healthy
#   scripts/infra.sh down      stop everything and wipe the data dirs (logs are kept; Keycloak's
#                              database and home are kept while the realm file is unchanged, --purge
#                              wipes them too)
#   scripts/infra.sh status    healthy/unhealthy with version per server; exit 1 unless all are healthy
#   scripts/infra.sh env       export lines for the jobq services and tests
#   scripts/infra.sh stop|start|restart SERVER   one of: kafka keycloak mongo s3 (data is kept)
#   scripts/infra.sh check-mongo-patch   fail unless nx-27017's correction (scripts/infra/nx27017_typed.py)
#                              still applies to the installed neosqlite and keeps booleans and datetimes
#
# Installs are cached under JOBQ_CACHE (default ~/.cache/jobq); runtime state
# (data, logs, pid files) lives under JOBQ_INFRA_DIR (default $JOBQ_CACHE/run).
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(dirname "$(dirname "$SELF")")

CACHE=${JOBQ_CACHE:-$HOME/.cache/jobq}
RUN=${JOBQ_INFRA_DIR:-$CACHE/run}
LOGS=$RUN/logs
HOST=127.0.0.1

KAFKA_PORT=${JOBQ_INFRA_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${JOBQ_INFRA_KAFKA_CONTROLLER_PORT:-9093}
KEYCLOAK_PORT=${JOBQ_INFRA_KEYCLOAK_PORT:-8180}
# Keycloak's management interface (health/metrics) stays off, but pin its port
# away from MinIO's default 9000 in case someone enables it.
KEYCLOAK_MGMT_PORT=${JOBQ_INFRA_KEYCLOAK_MGMT_PORT:-9190}
MONGO_PORT=${JOBQ_INFRA_MONGO_PORT:-27017}
S3_PORT=${JOBQ_INFRA_S3_PORT:-9000}
S3_CONSOLE_PORT=${JOBQ_INFRA_S3_CONSOLE_PORT:-9001}

KAFKA_VERSION=${JOBQ_INFRA_KAFKA_VERSION:-4.1.1}
LOG4J_VERSION=2.24.3
KEYCLOAK_VERSION=${JOBQ_INFRA_KEYCLOAK_VERSION:-26.4.7}
NX_VERSION=0.8.1
PY_PACKAGES=("nx-27017==$NX_VERSION" "pymongo==4.20.0" "boto3==1.44.5")
# The Go module proxy has no tagged release of MinIO: pin the pseudo-version measured to build.
MINIO_VERSION=${JOBQ_INFRA_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
MINIO_BUILD_TIMEOUT=${JOBQ_INFRA_MINIO_BUILD_TIMEOUT:-1500}
S3S_FS_VERSION=0.14.1
# minio (default) or s3s-fs; minio falls back to s3s-fs when it cannot be built.
S3_SERVER=${JOBQ_INFRA_S3_SERVER:-minio}

S3_REGION=us-east-1
S3_ACCESS_KEY=jobq-access
S3_SECRET_KEY=jobq-secret-key-123
OIDC_CLIENT_ID=jobq-frontend
OIDC_CLIENT_SECRET=jobq-frontend-secret

KAFKA_WAIT=${JOBQ_INFRA_KAFKA_WAIT:-60}
KEYCLOAK_WAIT=${JOBQ_INFRA_KEYCLOAK_WAIT:-180}
MONGO_WAIT=${JOBQ_INFRA_MONGO_WAIT:-30}
S3_WAIT=${JOBQ_INFRA_S3_WAIT:-30}
STOP_GRACE=${JOBQ_INFRA_STOP_GRACE:-20}

SERVERS=(kafka keycloak mongo s3)
M2=$CACHE/m2
VENV=$CACHE/venv
KAFKA_HOME=$CACHE/kafka-$KAFKA_VERSION
KEYCLOAK_HOME=$CACHE/keycloak-$KEYCLOAK_VERSION
MINIO_DIR=$CACHE/minio-$MINIO_VERSION
S3S_DIR=$CACHE/s3s-fs-$S3S_FS_VERSION

NAME=infra
say() { printf '[%s] %s\n' "$NAME" "$*"; }
die() { say "error: $*" >&2; exit 1; }
now() { date +%s; }

# ---------------------------------------------------------------- installs

# Maven runs one at a time: two builds writing one local repository can clash.
mvn_locked() {
  mkdir -p "$CACHE"
  flock "$CACHE/.mvn.lock" mvn -B -q -Dmaven.repo.local="$M2" "$@"
}

install_kafka() {
  [[ -f $KAFKA_HOME/.installed ]] && return 0
  command -v java >/dev/null || die "java (17+) is not on PATH"
  command -v mvn >/dev/null || die "mvn is not on PATH"
  say "installing Apache Kafka $KAFKA_VERSION from Maven Central"
  rm -rf "$KAFKA_HOME"
  mkdir -p "$KAFKA_HOME"
  cat >"$KAFKA_HOME/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>jobq.infra</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- kafka.Kafka (broker + controller) and kafka.tools.StorageTool -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- kafka-topics and friends, for debugging by hand -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- slf4j 1.x binding to log4j2, as in Kafka's own distribution -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  if ! mvn_locked -f "$KAFKA_HOME/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs" >"$KAFKA_HOME/install.log" 2>&1; then
    tail -n 30 "$KAFKA_HOME/install.log" >&2
    die "could not fetch Kafka $KAFKA_VERSION (log: $KAFKA_HOME/install.log)"
  fi
  touch "$KAFKA_HOME/.installed"
}

install_keycloak() {
  [[ -f $KEYCLOAK_HOME/.installed ]] && return 0
  command -v java >/dev/null || die "java (17+) is not on PATH"
  command -v mvn >/dev/null || die "mvn is not on PATH"
  say "installing Keycloak $KEYCLOAK_VERSION from Maven Central"
  local zip=$M2/org/keycloak/keycloak-quarkus-dist/$KEYCLOAK_VERSION/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip
  local log=$CACHE/keycloak-$KEYCLOAK_VERSION.install.log
  if ! mvn_locked dependency:get -Dtransitive=false \
    -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "could not fetch Keycloak $KEYCLOAK_VERSION (log: $log)"
  fi
  local tmp=$CACHE/.keycloak-unpack.$$
  rm -rf "$tmp" "$KEYCLOAK_HOME"
  mkdir -p "$tmp"
  unzip -q "$zip" -d "$tmp"
  mv "$tmp/keycloak-$KEYCLOAK_VERSION" "$KEYCLOAK_HOME"
  rm -rf "$tmp"
  touch "$KEYCLOAK_HOME/.installed"
}

# One venv holds the Mongo-wire server and the Python clients the health checks use.
install_venv() {
  local stamp=$VENV/.installed-${NX_VERSION}-${#PY_PACKAGES[@]}
  [[ -f $stamp ]] && return 0
  mkdir -p "$CACHE"
  (
    flock 9
    [[ -f $stamp ]] && exit 0
    say "installing ${PY_PACKAGES[*]} into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    if ! "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}" >"$CACHE/venv.install.log" 2>&1; then
      tail -n 30 "$CACHE/venv.install.log" >&2
      die "pip install failed (log: $CACHE/venv.install.log)"
    fi
    touch "$stamp"
  ) 9>"$CACHE/.venv.lock"
}

install_minio() {
  [[ -x $MINIO_DIR/minio ]] && return 0
  [[ -f $MINIO_DIR/.failed ]] && return 1
  command -v go >/dev/null || { say "go is not on PATH: cannot build MinIO"; return 1; }
  say "building MinIO $MINIO_VERSION with go install (a few minutes, once)"
  mkdir -p "$MINIO_DIR"
  local start rc=0
  start=$(now)
  GOBIN=$MINIO_DIR GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build GOFLAGS=-buildvcs=false \
    timeout "$MINIO_BUILD_TIMEOUT" go install "github.com/minio/minio@$MINIO_VERSION" \
    >"$MINIO_DIR/install.log" 2>&1 || rc=$?
  # The build and module caches (over 1 GB) are not needed once the binary exists.
  GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build go clean -cache -modcache >/dev/null 2>&1 || true
  if [[ $rc -ne 0 || ! -x $MINIO_DIR/minio ]]; then
    tail -n 20 "$MINIO_DIR/install.log" >&2
    say "MinIO build failed (exit $rc after $(($(now) - start)) s); remembering that in $MINIO_DIR/.failed"
    touch "$MINIO_DIR/.failed"
    return 1
  fi
  say "MinIO built in $(($(now) - start)) s"
}

install_s3s_fs() {
  [[ -x $S3S_DIR/bin/s3s-fs ]] && return 0
  command -v cargo >/dev/null || die "cargo is not on PATH: cannot install s3s-fs"
  say "installing s3s-fs $S3S_FS_VERSION with cargo install (about 2 minutes, once)"
  # 0.15 and later need a newer rustc than this machine's.
  if ! CARGO_TARGET_DIR=$CACHE/s3s-fs-build cargo install --locked "s3s-fs@$S3S_FS_VERSION" \
    --features binary --root "$S3S_DIR" >"$CACHE/s3s-fs.install.log" 2>&1; then
    tail -n 30 "$CACHE/s3s-fs.install.log" >&2
    die "cargo install s3s-fs failed (log: $CACHE/s3s-fs.install.log)"
  fi
  rm -rf "$CACHE/s3s-fs-build"
}

# Decides which S3 server this machine runs and records it for start_s3.
install_s3() {
  install_venv
  local kind=s3s-fs
  if [[ $S3_SERVER == minio ]]; then
    if install_minio; then kind=minio; else say "falling back to s3s-fs"; fi
  fi
  [[ $kind == s3s-fs ]] && install_s3s_fs
  echo "$kind" >"$RUN/s3/kind.next"
}

install_server() {
  case $1 in
    kafka) install_kafka ;;
    keycloak) install_keycloak ;;
    mongo) install_venv ;;
    s3) install_s3 ;;
  esac
}

# ---------------------------------------------------------------- processes

pid_file() { echo "$RUN/$1.pid"; }

# The pid recorded for a server, if that process is alive and is ours: it leads
# its own process group and its command line names our runtime dir.
server_pid() {
  local f pid
  f=$(pid_file "$1")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ $(ps -o pgid= -p "$pid" | tr -d ' ') == "$pid" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$RUN/" || return 1
  echo "$pid"
}

# Starts "$@" in a new session (so its pid is its process-group id) with output to a log.
launch() {
  local name=$1 log=$2
  shift 2
  local f
  f=$(pid_file "$name")
  rm -f "$f"
  printf '\n===== %s starting %s\n' "$(date -Is)" "$name" >>"$log"
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$f" "$@" >>"$log" 2>&1 </dev/null &
  local i
  for i in $(seq 50); do
    [[ -s $f ]] && return 0
    sleep 0.1
  done
  die "$name did not start (log: $log)"
}

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

stop_server() {
  local name=$1 pid i
  if ! pid=$(server_pid "$name"); then
    rm -f "$(pid_file "$name")"
    return 0
  fi
  say "stopping $name (process group $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_GRACE * 10; i++)); do
    group_alive "$pid" || break
    sleep 0.1
  done
  if group_alive "$pid"; then
    say "$name still running after ${STOP_GRACE}s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || true
    # A large JVM takes a moment to be reaped even after SIGKILL.
    for ((i = 0; i < 50; i++)); do
      group_alive "$pid" || break
      sleep 0.1
    done
  fi
  group_alive "$pid" && die "process group $pid of $name survived SIGKILL"
  rm -f "$(pid_file "$name")"
}

# Processes whose command line names our runtime dir, other than this script and its callers.
leftover_pids() {
  local pid ancestors=" " p=$$
  while [[ $p -gt 1 ]]; do
    ancestors+="$p "
    p=$(ps -o ppid= -p "$p" | tr -d ' ')
  done
  for pid in $(pgrep -f -- "$RUN/" || true); do
    [[ $ancestors == *" $pid "* ]] || echo "$pid"
  done
}

group_alive() { ps -eo pgid= | tr -d ' ' | grep -qx "$1"; }

# ---------------------------------------------------------------- health checks

health_kafka() {
  # A Metadata request (v1) that must list a broker and an active controller.
  python3 - "$HOST" "$KAFKA_PORT" <<'EOF'
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
client = b"jobq-infra"
req = struct.pack(">hhih", 3, 1, 7, len(client)) + client + struct.pack(">i", -1)
with socket.create_connection((host, port), timeout=3) as s:
    s.settimeout(3)
    s.sendall(struct.pack(">i", len(req)) + req)
    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                sys.exit("connection closed")
            buf += chunk
        return buf
    (size,) = struct.unpack(">i", read(4))
    resp = read(size)
corr, brokers = struct.unpack(">ii", resp[:8])
off = 8
for _ in range(brokers):
    off += 4
    (hl,) = struct.unpack(">h", resp[off:off + 2]); off += 2 + hl
    off += 4
    (rl,) = struct.unpack(">h", resp[off:off + 2]); off += 2 + max(rl, 0)
(controller,) = struct.unpack(">i", resp[off:off + 4])
sys.exit(0 if corr == 7 and brokers > 0 and controller >= 0 else 1)
EOF
}

health_keycloak() {
  curl -fsS --max-time 3 "http://$HOST:$KEYCLOAK_PORT/realms/jobq/.well-known/openid-configuration" 2>/dev/null |
    grep -qF "\"issuer\":\"http://$HOST:$KEYCLOAK_PORT/realms/jobq\""
}

health_mongo() {
  "$VENV/bin/python" - "mongodb://$HOST:$MONGO_PORT" <<'EOF'
import sys, pymongo
client = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=2000, connectTimeoutMS=2000)
sys.exit(0 if client.admin.command("ping").get("ok") == 1 else 1)
EOF
}

health_s3() {
  # A signed ListBuckets: proves the server is up and accepts our credentials.
  "$VENV/bin/python" - "http://$HOST:$S3_PORT" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" "$S3_REGION" <<'EOF'
import sys, boto3, botocore.config
endpoint, key, secret, region = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                  region_name=region, config=botocore.config.Config(
                      s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=3,
                      retries={"max_attempts": 1}))
s3.list_buckets()
EOF
}

healthy() { "health_$1" >/dev/null 2>&1; }

version_of() {
  local f=$RUN/$1/version
  if [[ -f $f ]]; then cat "$f"; else echo "?"; fi
}

# ---------------------------------------------------------------- servers

start_kafka() {
  local dir=$RUN/kafka
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<EOF
# Single-node KRaft: one process is broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
# jobq creates its topics through the admin API.
auto.create.topics.enable=false
# One broker: internal topics cannot have more than one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests join and leave groups all the time; do not wait for more members.
group.initial.rebalance.delay.ms=0
# KIP-848 consumer groups (jobq's workers): a member silent for 6 s is gone, so a killed
# worker's partitions move to the others before its lease (10 s) runs out; the defaults
# (45 s session, 5 s heartbeat) would hold them four times as long.
group.consumer.session.timeout.ms=6000
group.consumer.min.session.timeout.ms=3000
group.consumer.heartbeat.interval.ms=1000
group.consumer.min.heartbeat.interval.ms=500
EOF
  cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
  sed 's/^rootLogger.level = INFO/rootLogger.level = WARN/' "$dir/log4j2.properties" >"$dir/log4j2-tools.properties"
  if [[ ! -f $dir/data/meta.properties ]]; then
    local cluster_id
    cluster_id=$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
    if ! java -Xmx256m -Dlog4j2.configurationFile="$dir/log4j2-tools.properties" -cp "$KAFKA_HOME/libs/*" \
      kafka.tools.StorageTool format --cluster-id "$cluster_id" --config "$dir/server.properties" \
      >>"$LOGS/kafka.log" 2>&1; then
      tail -n 20 "$LOGS/kafka.log" >&2
      die "formatting Kafka storage failed"
    fi
  fi
  echo "Apache Kafka $KAFKA_VERSION (KRaft, combined broker+controller)" >"$dir/version"
  launch kafka "$LOGS/kafka.log" java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties"
}

# Keycloak's database survives `down` while the realm file is unchanged: a start on
# an existing database skips schema creation and import (about 10 s instead of 20 s).
keycloak_db() { echo "$RUN/keycloak-db"; }
realm_file() { echo "$REPO/deploy/keycloak/realm-jobq.json"; }

# Keycloak writes into its home (data/import, data/tmp, and lib/quarkus when it re-augments):
# each runtime dir gets a home of its own, sharing only the read-only jars and themes of
# the cached installation, so two instances (other ports, other JOBQ_INFRA_DIR) never meet.
keycloak_home() { echo "$RUN/keycloak-home-$KEYCLOAK_VERSION"; }

make_keycloak_home() {
  local home part
  home=$(keycloak_home)
  [[ -f $home/.made ]] && return 0
  rm -rf "$home"
  mkdir -p "$home/lib"
  cp -a "$KEYCLOAK_HOME/bin" "$KEYCLOAK_HOME/conf" "$KEYCLOAK_HOME/version.txt" "$home/"
  for part in app quarkus quarkus-run.jar; do
    cp -a "$KEYCLOAK_HOME/lib/$part" "$home/lib/"
  done
  ln -s "$KEYCLOAK_HOME/lib/lib" "$home/lib/lib"
  ln -s "$KEYCLOAK_HOME/themes" "$home/themes"
  ln -s "$KEYCLOAK_HOME/providers" "$home/providers"
  touch "$home/.made"
}

start_keycloak() {
  local dir=$RUN/keycloak db realm sum home
  db=$(keycloak_db)
  realm=$(realm_file)
  [[ -f $realm ]] || die "missing $realm"
  sum=$(sha256sum "$realm" | cut -d' ' -f1)
  if [[ $(cat "$db/realm.sha256" 2>/dev/null) != "$sum" ]]; then
    rm -rf "$db"
  fi
  make_keycloak_home
  home=$(keycloak_home)
  mkdir -p "$dir" "$db/h2" "$home/data/import"
  # --import-realm reads data/import of the home; a realm that exists is left alone.
  cp "$realm" "$home/data/import/realm-jobq.json"
  echo "Keycloak $(tr -d '\n' <"$home/version.txt" | sed 's/.*Version //')" >"$dir/version"
  launch keycloak "$LOGS/keycloak.log" env \
    KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD=admin \
    JAVA_OPTS_KC_HEAP="-Xms64m -Xmx768m" \
    "$home/bin/kc.sh" start-dev \
    --http-host="$HOST" --http-port="$KEYCLOAK_PORT" \
    --http-management-port="$KEYCLOAK_MGMT_PORT" \
    --db-url="jdbc:h2:file:$db/h2/keycloakdb;NON_KEYWORDS=VALUE" \
    --import-realm
}

# Whether Keycloak's database holds the current realm file (as marked once it served it).
realm_current() {
  [[ $(cat "$(keycloak_db)/realm.sha256" 2>/dev/null) == "$(sha256sum "$(realm_file)" | cut -d' ' -f1)" ]]
}

# Marks the database as holding the current realm, once Keycloak served it.
started_keycloak() {
  sha256sum "$(realm_file)" | cut -d' ' -f1 >"$(keycloak_db)/realm.sha256"
}

start_mongo() {
  local dir=$RUN/mongo
  mkdir -p "$dir/data"
  echo "nx-27017 $NX_VERSION (MongoDB wire, reports 7.0 / wire 25; SQLite files)" >"$dir/version"
  # nx-27017 0.8.1 (neosqlite 1.17.2) turns booleans into 1/0 and datetimes into text when an
  # update runs on its SQL fast path: the server runs through scripts/infra/nx27017_typed.py,
  # which corrects that (checked by `check-mongo-patch`; docs/infra.md lists every quirk).
  # --data-dir: one SQLite file per logical database, so databases are isolated and survive restarts.
  launch mongo "$LOGS/mongo.console.log" "$VENV/bin/python" -B "$REPO/scripts/infra/nx27017_typed.py" \
    --data-dir "$dir/data" --host "$HOST" -p "$MONGO_PORT" \
    --log-file "$LOGS/mongo.log" --pid-file "$dir/nx-27017.pid"
}

start_s3() {
  local dir=$RUN/s3 kind
  mkdir -p "$dir/data"
  kind=$(cat "$dir/kind.next" 2>/dev/null || echo "$S3_SERVER")
  echo "$kind" >"$dir/kind"
  case $kind in
    minio)
      echo "MinIO $MINIO_VERSION" >"$dir/version"
      launch s3 "$LOGS/s3.log" env \
        MINIO_ROOT_USER="$S3_ACCESS_KEY" MINIO_ROOT_PASSWORD="$S3_SECRET_KEY" \
        MINIO_SITE_REGION="$S3_REGION" MINIO_BROWSER=off MINIO_UPDATE=off \
        "$MINIO_DIR/minio" server "$dir/data" --quiet \
        --address "$HOST:$S3_PORT" --console-address "$HOST:$S3_CONSOLE_PORT"
      ;;
    s3s-fs)
      echo "s3s-fs $S3S_FS_VERSION" >"$dir/version"
      launch s3 "$LOGS/s3.log" "$S3S_DIR/bin/s3s-fs" \
        --host "$HOST" --port "$S3_PORT" \
        --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" "$dir/data"
      ;;
    *) die "unknown S3 server '$kind' (JOBQ_INFRA_S3_SERVER: minio or s3s-fs)" ;;
  esac
}

wait_limit() {
  case $1 in
    kafka) echo "$KAFKA_WAIT" ;;
    keycloak) echo "$KEYCLOAK_WAIT" ;;
    mongo) echo "$MONGO_WAIT" ;;
    s3) echo "$S3_WAIT" ;;
  esac
}

log_of() {
  case $1 in
    mongo) echo "$LOGS/mongo.console.log $LOGS/mongo.log" ;;
    *) echo "$LOGS/$1.log" ;;
  esac
}

fail_with_log() {
  local name=$1 f
  shift
  say "$*" >&2
  for f in $(log_of "$name"); do
    [[ -f $f ]] || continue
    say "last lines of $f:" >&2
    tail -n 40 "$f" >&2
  done
  exit 1
}

wait_healthy() {
  local name=$1 limit start pid
  limit=$(wait_limit "$name")
  start=$(now)
  while ! healthy "$name"; do
    if ! pid=$(server_pid "$name"); then
      fail_with_log "$name" "$name exited while starting"
    fi
    if (($(now) - start >= limit)); then
      fail_with_log "$name" "$name not healthy after ${limit}s (pid $pid; stop it with: $0 down)"
    fi
    sleep 0.5
  done
  if declare -F "started_$name" >/dev/null; then "started_$name"; fi
  say "healthy after $(($(now) - start))s: $(version_of "$name")"
}

port_of() {
  case $1 in
    kafka) echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT" ;;
    keycloak) echo "$KEYCLOAK_PORT" ;;
    mongo) echo "$MONGO_PORT" ;;
    s3) echo "$S3_PORT" ;;
  esac
}

# Installs, starts and waits for one server; leaves a healthy one alone.
bring_up() {
  local name=$1 pid port
  NAME=$name
  mkdir -p "$RUN/$name" "$LOGS"
  install_server "$name"
  if pid=$(server_pid "$name") && [[ $name == keycloak ]] && ! realm_current; then
    # Started with an older realm file: a running Keycloak never imports it again.
    say "running (pid $pid) with an older realm: restarting it"
    stop_server keycloak
  fi
  if pid=$(server_pid "$name"); then
    if healthy "$name"; then
      say "already running (pid $pid): $(version_of "$name")"
      return 0
    fi
    say "running (pid $pid) but not healthy yet: waiting"
  else
    for port in $(port_of "$name"); do
      port_in_use "$port" && die "$HOST:$port is taken by a process this script did not start"
    done
    "start_$name"
  fi
  wait_healthy "$name"
}

# ---------------------------------------------------------------- commands

# Runs `$SELF <lane> <server>` for every server at once, so installs and JVM
# start-ups overlap; fails naming the servers whose lane failed.
for_all_servers() {
  local lane=$1 name failed=() pids=() i
  mkdir -p "$RUN" "$LOGS"
  for name in "${SERVERS[@]}"; do
    bash "$SELF" "$lane" "$name" &
    pids+=($!)
  done
  for i in "${!SERVERS[@]}"; do
    wait "${pids[$i]}" || failed+=("${SERVERS[$i]}")
  done
  if ((${#failed[@]})); then
    say "failed: ${failed[*]} (logs: $LOGS)" >&2
    exit 1
  fi
}

cmd_install() {
  local start
  start=$(now)
  for_all_servers __install
  say "all servers installed in $(($(now) - start))s (cache: $CACHE)"
}

cmd_up() {
  local start
  start=$(now)
  for_all_servers __bring-up
  say "all servers healthy in $(($(now) - start))s; load the settings with: eval \"\$($0 env)\""
}

cmd_down() {
  local name leftovers pids=() stop_rc=0 pid
  # Stop all four at once: each may take seconds to shut down cleanly.
  for name in "${SERVERS[@]}"; do
    bash "$SELF" stop "$name" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || stop_rc=1
  done
  ((stop_rc == 0)) || die "could not stop every server"
  NAME=infra
  leftovers=$(leftover_pids)
  if [[ -n $leftovers ]]; then
    say "processes still running from $RUN:" >&2
    ps -o pid=,args= -p "$(paste -sd, <<<"$leftovers")" >&2 || true
    exit 1
  fi
  if [[ ${JOBQ_INFRA_KEEP_DATA:-0} != 1 ]]; then
    for name in "${SERVERS[@]}"; do
      rm -rf "${RUN:?}/$name"
    done
    [[ ${1:-} == --purge ]] && rm -rf "$(keycloak_db)" "$(keycloak_home)"
  fi
  say "all servers stopped (logs kept in $LOGS)"
}

cmd_status() {
  local name pid state ok=0
  for name in "${SERVERS[@]}"; do
    if pid=$(server_pid "$name"); then
      if healthy "$name"; then state=healthy; else
        state=unhealthy
        ok=1
      fi
      printf '%-9s %-10s pid %-7s %-16s %s\n' "$name" "$state" "$pid" \
        "$HOST:$(port_of "$name" | cut -d' ' -f1)" "$(version_of "$name")"
    else
      ok=1
      printf '%-9s %-10s\n' "$name" "stopped"
    fi
  done
  return "$ok"
}

cmd_env() {
  cat <<EOF
export JOBQ_KAFKA__BROKERS=$HOST:$KAFKA_PORT
export JOBQ_MONGO__URI=mongodb://$HOST:$MONGO_PORT
export JOBQ_S3__ENDPOINT=http://$HOST:$S3_PORT
export JOBQ_S3__REGION=$S3_REGION
export JOBQ_S3__ACCESS_KEY=$S3_ACCESS_KEY
export JOBQ_S3__SECRET_KEY=$S3_SECRET_KEY
export JOBQ_OIDC__ISSUER=http://$HOST:$KEYCLOAK_PORT/realms/jobq
export JOBQ_OIDC__CLIENT_ID=$OIDC_CLIENT_ID
export JOBQ_OIDC__CLIENT_SECRET=$OIDC_CLIENT_SECRET
export JOBQ_OIDC__AUDIENCE=$OIDC_CLIENT_ID
export JOBQ_TEST_INFRA=1
EOF
}

one_server() {
  local name=${1:-}
  [[ " ${SERVERS[*]} " == *" $name "* ]] || die "name a server: ${SERVERS[*]}"
}

usage() {
  sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'
  exit 2
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down "${2:-}" ;;
  status) cmd_status ;;
  env) cmd_env ;;
  stop)
    one_server "${2:-}"
    NAME=$2
    stop_server "$2"
    ;;
  start)
    one_server "${2:-}"
    bring_up "$2"
    ;;
  restart)
    one_server "${2:-}"
    NAME=$2
    stop_server "$2"
    bring_up "$2"
    ;;
  install) cmd_install ;;
  check-mongo-patch)
    install_venv
    "$VENV/bin/python" -B "$REPO/scripts/infra/nx27017_typed_check.py"
    ;;
  __install)
    NAME=$2
    mkdir -p "$RUN/$2"
    install_server "$2"
    ;;
  __bring-up) bring_up "$2" ;;
  *) usage ;;
esac
