#!/usr/bin/env bash
# `make image-test` (part of `make test`): builds the container image with
# the repository's Dockerfile and runs it as k8s/statefulset.yaml would
# (docs/KUBERNETES.md, "The image").
#
#  1. Base images: local stand-ins for the public ones, which cannot be
#     pulled here (scripts/image-bases.sh; built once, then cached). The
#     Dockerfile is used as it is; only its base-image arguments change.
#  2. Build with podman (--format docker: the OCI format drops HEALTHCHECK).
#     podman's layer cache keeps the dependency layer between runs, so only
#     a changed Cargo.toml/Cargo.lock rebuilds the dependencies. Prints the
#     build time and the image size.
#  3. Run it as the StatefulSet would, in a network namespace of its own
#     (`unshare --net`): scripts/image-scenarios.sh says what it proves.
#     The client is the image's own kvstore binary; the Secret's files come
#     from k8s/gen-secrets.sh, with the mode and group the kubelet gives them.
#
# Containers, volumes and tags of the run are removed at the end, whatever
# happened. Needs root (rootful podman, unshare), as CI has.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/scripts/image-containers.conf}"
PY=.venv/bin/python

say() { echo "image-test: $*"; }
die() {
  echo "image-test: FAILED: $*" >&2
  exit 1
}

[ $# -eq 0 ] || die "usage: scripts/image-test.sh"
[ "$(id -u)" -eq 0 ] || die "needs root (rootful podman, unshare --net); CI runs as root"
for tool in podman unshare ip curl openssl flock; do
  command -v "$tool" >/dev/null || die "$tool not found: run \`make deps\`"
done
[ -x "$PY" ] || die "$PY not found: run \`make deps\`"
"$PY" -c 'import yaml' || die "$PY has no PyYAML: run \`make deps\`"
.venv/bin/shellcheck scripts/image-bases.sh scripts/image-test.sh scripts/image-scenarios.sh \
  || die "shellcheck finds fault with the image scripts (above)"

RUN=kvstore-it-$$
TAGS=(localhost/kvstore-image-test/kvstore:"$RUN" localhost/kvstore-image-test/build:"$RUN")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/$RUN.XXXXXX")
cleanup() {
  local c v
  for c in $(podman ps -a --format '{{.Names}}' --filter "name=^$RUN-" 2>/dev/null); do
    podman rm -f "$c" >/dev/null 2>&1 || echo "image-test: could not remove container $c" >&2
  done
  for v in $(podman volume ls --format '{{.Name}}' --filter "name=^$RUN-" 2>/dev/null); do
    podman volume rm -f "$v" >/dev/null 2>&1 || echo "image-test: could not remove volume $v" >&2
  done
  # The run's tags become :last (the image to try by hand, and what keeps
  # its layers out of a `podman image prune`), then go.
  for t in "${TAGS[@]}"; do
    podman image exists "$t" || continue
    podman tag "$t" "${t%:*}:last" >/dev/null 2>&1 || true
    podman untag "$t" "$t" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. base images ----------------------------------------------------------
t0=$SECONDS
bases=$(scripts/image-bases.sh) || die "scripts/image-bases.sh failed"
declare -A base=()
build_args=()
while IFS= read -r line; do
  [[ "$line" =~ ^(BUILD|RUNTIME)_(IMAGE|TAG)=.+$ ]] || die "image-bases.sh printed '$line'"
  base[${line%%=*}]=${line#*=}
  build_args+=(--build-arg "$line")
done <<<"$bases"
[ "${#base[@]}" -eq 4 ] || die "image-bases.sh printed ${#base[@]} build arguments, expected 4"
say "base images ready in $((SECONDS - t0))s: ${base[BUILD_IMAGE]}:${base[BUILD_TAG]}," \
  "${base[RUNTIME_IMAGE]}:${base[RUNTIME_TAG]}"

# --- 2. build ------------------------------------------------------------------
# One build at a time on this machine (the cache is shared, and the prune
# below must not meet another run's half-built layers).
exec 8>/tmp/kvstore-image-build.lock
flock -w 3600 8 || die "another image build has held the lock for an hour"
t0=$SECONDS
build() { # LOG podman-build-arguments...
  local log=$WORK/$1
  shift
  podman build --format docker --network host --layers \
    "${build_args[@]}" "$@" . >"$log" 2>&1 || {
    tail -40 "$log" >&2
    die "podman build $* failed (log above)"
  }
}
# "K/N steps cached" for the steps (FROM aside) of LOG whose line starts
# with PREFIX.
cached() { # LOG PREFIX
  awk -v p="$2" 'index($0, p) == 1 && /STEP [0-9]+\/[0-9]+: / && !/: FROM / { n++; s = 1; next }
    s && /^--> Using cache/ { k++ } { s = 0 } END { printf "%d/%d steps cached", k, n }' "$WORK/$1"
}
# The build stage gets a tag of its own too, so its layers (the dependency
# cache) are kept for the next run instead of being pruned as dangling.
build build.log --target build -t "${TAGS[1]}"
build runtime.log -t "${TAGS[0]}"
build_secs=$((SECONDS - t0))
cached="build stage $(cached build.log STEP), runtime stage $(cached runtime.log '[2/2]')"
IMAGE_ID=$(podman image inspect --format '{{.Id}}' "${TAGS[0]}")
size=$(podman image inspect --format '{{.Size}}' "$IMAGE_ID")
say "image built in ${build_secs}s ($cached): $((size / 1000000)) MB"
[ "$(podman image inspect --format '{{.Config.User}}' "$IMAGE_ID")" = 10001:10001 ] \
  || die "the image does not run as 10001:10001"
podman image inspect --format '{{.HealthCheck.Test}}' "$IMAGE_ID" | grep -q kvstore \
  || die "the image has no HEALTHCHECK (an OCI-format build drops it: use --format docker)"

# Frees the layers of older runs: untagged images built on the stand-ins
# (they carry the stand-ins' label) that no other image is built on.
# Repeats, as removing a leaf can leave its parent dangling; an image a
# container still uses stays.
for _ in $(seq 1 100); do
  mapfile -t stale < <(podman images -a -q --filter dangling=true \
    --filter label=io.kvstore.image-test.stand-in)
  removed=0
  for id in "${stale[@]}"; do
    podman rmi "$id" >/dev/null 2>&1 && removed=$((removed + 1))
  done
  [ "$removed" -gt 0 ] || break
done
flock -u 8

# --- 3. run ------------------------------------------------------------------
cid=$(podman create --no-healthcheck "$IMAGE_ID")
podman cp "$cid:/usr/local/bin/kvstore" "$WORK/kvstore" || die "no /usr/local/bin/kvstore in the image"
podman rm -v "$cid" >/dev/null
"$WORK/kvstore" --version >/dev/null || die "the image's kvstore does not run here"

# The Secret, as the kubelet mounts it: the files of k8s/gen-secrets.sh,
# mode 0440 (defaultMode 288), group fsGroup 10001.
k8s/gen-secrets.sh --out "$WORK/secrets" >"$WORK/secrets.log" 2>&1 \
  || die "k8s/gen-secrets.sh failed: $(tail -5 "$WORK/secrets.log")"
chmod 0755 "$WORK/secrets"
chgrp 10001 "$WORK/secrets"/*
chmod 0440 "$WORK/secrets"/*

t0=$SECONDS
unshare --net -- scripts/image-scenarios.sh "$IMAGE_ID" "$RUN" "$WORK" || die "a scenario failed (above)"
say "all scenarios passed in $((SECONDS - t0))s; ${SECONDS}s in all (build ${build_secs}s, image $((size / 1000000)) MB)"
