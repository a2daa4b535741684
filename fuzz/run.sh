#!/usr/bin/env bash
# Runs the fuzz targets for a fixed time each; exits non-zero on any crash.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# With no TARGET, runs every target in TARGETS below. Each run starts from a
# temporary copy of the checked-in seed corpus fuzz/corpus/<target>/, so a
# run never changes what is committed. A crash, leak, timeout or OOM input
# lands in fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail

# Every fuzz target, one per line. A target must also be a [[bin]] in
# fuzz/Cargo.toml and have a seed corpus in fuzz/corpus/<target>/; the script
# fails if either is missing, or if Cargo.toml has a target not listed here.
TARGETS=(
  record_decode
  resp_decode
  frame_decode
  hint_decode
  segment_recovery
  engine_model
)

# Seconds one input may take before libFuzzer calls it a hang.
PER_INPUT_TIMEOUT=${FUZZ_TIMEOUT:-20}

die() { echo "fuzz/run.sh: $*" >&2; exit 1; }

[[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]] || die "usage: fuzz/run.sh SECONDS [TARGET...]"
seconds=$1
shift

cd "$(dirname "$0")"
command -v cargo >/dev/null || die "cargo not found"
cargo +nightly fuzz --version >/dev/null 2>&1 \
  || die "cargo-fuzz or the nightly toolchain is missing (run `make deps`: scripts/setup.sh installs both)"

# The targets cargo-fuzz knows (the [[bin]] entries of fuzz/Cargo.toml)
# against the list above, both ways: nothing listed may be missing, nothing
# defined may be skipped without anyone noticing.
listing=$(cargo +nightly fuzz list) || die "cargo fuzz list failed: is fuzz/Cargo.toml valid?"
mapfile -t defined <<<"$listing"
for t in "${TARGETS[@]}"; do
  printf '%s\n' "${defined[@]}" | grep -qxF -- "$t" \
    || die "target '$t' is listed in run.sh but is not a [[bin]] in fuzz/Cargo.toml"
done
for t in "${defined[@]}"; do
  printf '%s\n' "${TARGETS[@]}" | grep -qxF -- "$t" \
    || die "target '$t' is in fuzz/Cargo.toml but not in TARGETS in fuzz/run.sh"
done

if [[ $# -gt 0 ]]; then
  selected=("$@")
  for t in "${selected[@]}"; do
    printf '%s\n' "${TARGETS[@]}" | grep -qxF -- "$t" || die "unknown target '$t'"
  done
else
  selected=("${TARGETS[@]}")
fi

for t in "${selected[@]}"; do
  [[ -d corpus/$t && -n $(ls -A "corpus/$t") ]] \
    || die "target '$t' has no seed corpus in fuzz/corpus/$t/"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/kvstore-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

# One build of every target up front, so a compile error is
# reported as such and the timed runs below only fuzz.
# `cargo fuzz build` with no name builds every target in one cargo run.
cargo +nightly fuzz build

for t in "${selected[@]}"; do
  mkdir -p "$work/$t"
  cp -R "corpus/$t/." "$work/$t/"
  echo "fuzz/run.sh: $t for ${seconds}s (seeds: $(ls "corpus/$t" | wc -l))"
  start=$SECONDS
  if ! cargo +nightly fuzz run "$t" "$work/$t" -- \
      -max_total_time="$seconds" -timeout="$PER_INPUT_TIMEOUT" -print_final_stats=1; then
    die "target '$t' FAILED; the input that failed is in fuzz/artifacts/$t/ (reproduce: cargo +nightly fuzz run $t fuzz/artifacts/$t/<file>)"
  fi
  echo "fuzz/run.sh: $t ok after $((SECONDS - start))s; $(ls "$work/$t" | wc -l) inputs in the corpus copy"
done
echo "fuzz/run.sh: all ${#selected[@]} target(s) ran ${seconds}s each without a failure"
