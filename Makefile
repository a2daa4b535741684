# kvstore — every command a developer or CI needs.
# `make test` is exactly what CI runs (through .ci/run).

CARGO ?= cargo
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_SECONDS ?= 60

.PHONY: run build test lint unit k8s-check fuzz-smoke fuzz bench-engine bench-server bench-compare clean

run:
	$(CARGO) run --release --bin kvstore -- serve --data-dir ./data

build:
	$(CARGO) build --release

test: lint unit k8s-check fuzz-smoke

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) build --bin kvstore
	$(CARGO) nextest run --no-fail-fast

# Kubernetes manifests, Dockerfile: schemas, kustomize rendering, checkov,
# hadolint (tools from PyPI, installed by .ci/k8s-tools.sh).
k8s-check:
	./.ci/k8s-check.sh

fuzz-smoke:
	./fuzz/run.sh $(FUZZ_SMOKE_SECONDS)

fuzz:
	./fuzz/run.sh $(FUZZ_SECONDS)

bench-engine:
	$(CARGO) bench --bench engine

# Starts a release node and runs `kvstore bench` against it (docs/BENCHMARKS.md, "Server").
bench-server:
	CARGO=$(CARGO) ./benches/server.sh

bench-compare:
	cd benches/compare && $(CARGO) run --release

clean:
	$(CARGO) clean
