# syntax=docker/dockerfile:1
# kvstore image: build with cargo (dependencies cached in their own layer),
# run as a non-root user from a small Debian base.
#   docker build -t yourregistry/kvstore:0.1.0 .
#   podman build --format docker -t yourregistry/kvstore:0.1.0 .
# (podman's default OCI format drops HEALTHCHECK.) Probes: HEALTHCHECK runs
# `kvstore ping`; on Kubernetes the StatefulSet's startup/liveness/readiness
# probes use /healthz and /readyz on port 9555.

# The two base images, each a name and a tag (always an explicit tag; a
# tag may end in @sha256:DIGEST to pin it). Leave them alone to build from
# the public images (Rust at the crate's rust-version, Cargo.toml), or
# point them at a mirror. `make image-test` passes local stand-ins built
# from Debian packages (scripts/image-bases.sh), because it cannot pull,
# and changes nothing else.
ARG BUILD_IMAGE=rust
ARG BUILD_TAG=1.89-slim-bookworm
ARG RUNTIME_IMAGE=debian
ARG RUNTIME_TAG=bookworm-slim

FROM ${BUILD_IMAGE}:${BUILD_TAG} AS build
# Tools the build runs, beyond the Rust image's cargo and C compiler:
# protoc and the protobuf well-known types it imports (google/protobuf/*.proto,
# in libprotobuf-dev, only recommended by protobuf-compiler), for crates
# that generate gRPC code at build time (etcd-client, the etcd
# coordinator's client). Unpinned on purpose: Debian stable changes a
# package only for fixes, and drops the old version from the archive when
# it does, so a pin would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# 1. Dependencies only: this layer is rebuilt only when Cargo.toml or
#    Cargo.lock change, not on every source edit. Cargo reads every target
#    the manifest names, so each gets a stub: the library, the binary and
#    every `[[bench]]` by its name (the bench stubs stay; the image never
#    builds them).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && sed -n '/^\[\[bench\]\]/{n;s/^name = "\(.*\)"$/\1/p}' Cargo.toml > /tmp/benches \
    && while read -r bench; do echo 'fn main() {}' > "benches/$bench.rs"; done < /tmp/benches \
    && cargo build --release --locked --bin kvstore \
    && rm -rf src
# 2. The crate itself. COPY keeps the files' own times, which may be older
#    than the stubs' build: touch the crate roots so cargo rebuilds them.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin kvstore \
    && strip target/release/kvstore

FROM ${RUNTIME_IMAGE}:${RUNTIME_TAG} AS runtime
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
