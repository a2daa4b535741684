# syntax=docker/dockerfile:1
# kvstore image: build with cargo (dependencies cached in their own layer),
# run as a non-root user from a small Debian base.
#   docker build -t yourregistry/kvstore:0.1.0 .
# Probes: HEALTHCHECK runs `kvstore ping`; on Kubernetes the StatefulSet's
# startup/liveness/readiness probes use /healthz and /readyz on port 9555.

ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# protoc: the etcd coordinator's client (etcd-client) generates its gRPC
# code at build time. Versions come from the pinned Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# 1. Dependencies only: this layer is rebuilt only when Cargo.toml or
#    Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/engine.rs \
    && cargo build --release --locked --bin kvstore \
    && rm -rf src benches
# 2. The crate itself.
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin kvstore \
    && strip target/release/kvstore

FROM debian:bookworm-slim AS runtime
# No extra packages: the health check uses kvstore itself. The shell and
# coreutils of the base stay for `kubectl exec` troubleshooting (df, ls).
RUN groupadd --system --gid 10001 kvstore \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin kvstore \
    && mkdir -p /data /backup \
    && chown kvstore:kvstore /data /backup
COPY --from=build /src/target/release/kvstore /usr/local/bin/kvstore
USER 10001:10001
ENV KVSTORE_DATA_DIR=/data \
    KVSTORE_LISTEN=0.0.0.0:5555 \
    KVSTORE_HTTP_LISTEN=0.0.0.0:9555
WORKDIR /data
VOLUME ["/data"]
EXPOSE 5555 9555
# Docker's own health check: the node answers PING on its client port.
# Kubernetes ignores HEALTHCHECK and uses the HTTP probes of the StatefulSet.
# With TLS on, set KVSTORE_TLS_CA in the environment so the ping sees it
# (docs/SECURITY.md).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["kvstore", "ping", "--addr", "127.0.0.1:5555"]
ENTRYPOINT ["kvstore"]
CMD ["serve"]
