# syntax=docker/dockerfile:1
#
# jobq-frontend: the REST API.
# Build from the repository root:
#   docker build -f deploy/docker/frontend.Dockerfile -t jobq-frontend .

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
    cargo build --release --locked -p jobq-frontend --bin jobq-frontend \
 && install -D -m 0755 target/release/jobq-frontend /out/jobq-frontend

FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tini libssl3 zlib1g libzstd1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 jobq \
 && useradd --system --uid 10001 --gid jobq --home-dir /home/jobq --create-home --shell /usr/sbin/nologin jobq
COPY --from=builder /out/jobq-frontend /usr/local/bin/jobq-frontend
USER 10001:10001
ENV JOBQ_FRONTEND__LISTEN=0.0.0.0:8080 \
    JOBQ_LOG_FORMAT=json
EXPOSE 8080
# The frontend answers GET /health/ on its API port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health/ > /dev/null || exit 1
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/jobq-frontend"]
