# syntax=docker/dockerfile:1
#
# jobq-observer: measures the queue, decides the fleet size, drives a scaler.
# Build from the repository root:
#   docker build -f deploy/docker/observer.Dockerfile -t jobq-observer .

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

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
    cargo build --release --locked -p jobq-observer --bin jobq-observer \
 && install -D -m 0755 target/release/jobq-observer /out/jobq-observer

FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tini libssl3 zlib1g libzstd1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 jobq \
 && useradd --system --uid 10001 --gid jobq --home-dir /home/jobq --create-home --shell /usr/sbin/nologin jobq
COPY --from=builder /out/jobq-observer /usr/local/bin/jobq-observer
USER 10001:10001
ENV JOBQ_METRICS__LISTEN=0.0.0.0:9464 \
    JOBQ_LOG_FORMAT=json
EXPOSE 9464
# The observer serves GET /health and GET /metrics on JOBQ_METRICS__LISTEN.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9464/health > /dev/null || exit 1
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/jobq-observer"]
