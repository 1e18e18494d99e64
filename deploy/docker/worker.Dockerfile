# syntax=docker/dockerfile:1
#
# jobq-worker: takes jobs from Kafka and runs them (git clone, npm run start).
# Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile -t jobq-worker .
#
# The runtime is the official Node.js image on Debian bookworm-slim, so jobs get
# a current node and npm; git is added from Debian, and bubblewrap, the sandbox
# every job runs in (the worker refuses to start without it).

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=node:22-bookworm-slim

FROM ${RUST_IMAGE} AS builder
# librdkafka is built from source by rdkafka-sys (configure + make, or cmake);
# libgit2 and aws-lc are built by their -sys crates with the C toolchain.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config perl python3 zlib1g-dev libssl-dev libzstd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p jobq-worker --bin jobq-worker \
 && install -D -m 0755 target/release/jobq-worker /out/jobq-worker
# The job shim and init, started twice per job: the worker finds it beside its executable.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p jobq-job-shim --bin jobq-job-shim \
 && install -D -m 0755 target/release/jobq-job-shim /out/jobq-job-shim

FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git tini libssl3 zlib1g libzstd1 bubblewrap \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 jobq \
 && useradd --system --uid 10001 --gid jobq --home-dir /home/jobq --create-home --shell /usr/sbin/nologin jobq \
 && install -d -o jobq -g jobq -m 0750 /var/lib/jobq/work \
 && node --version && npm --version && git --version && bwrap --version
COPY --from=builder /out/jobq-worker /out/jobq-job-shim /usr/local/bin/
USER 10001:10001
# The worker runs as this user; each job runs in a bubblewrap sandbox of its own
# (user, mount, PID, IPC, UTS namespaces) that sees only the toolchain and its
# own directory under JOBQ_WORKER__WORK_DIR, mounted at /job (its HOME).
ENV HOME=/home/jobq \
    JOBQ_WORKER__WORK_DIR=/var/lib/jobq/work \
    JOBQ_METRICS__LISTEN=0.0.0.0:9464 \
    JOBQ_LOG_FORMAT=json \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false
WORKDIR /var/lib/jobq
EXPOSE 9464
# The worker serves GET /health and GET /metrics on JOBQ_METRICS__LISTEN.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9464/health > /dev/null || exit 1
# tini is PID 1: it forwards SIGTERM to the worker (which drains) and reaps
# orphaned grandchildren of jobs.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/jobq-worker"]
