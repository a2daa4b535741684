#!/usr/bin/env bash
# Local stand-ins for the Dockerfile's two public base images, which this
# machine cannot pull (docs/KUBERNETES.md, "The image"). Prints the build
# arguments that select them, one NAME=VALUE a line:
#
#   RUNTIME_IMAGE, RUNTIME_TAG   for debian:bookworm-slim: `debootstrap
#       --variant=minbase bookworm` from the Debian archive, slimmed as the
#       public image is (no docs, man pages, locales or apt lists), with the
#       public image's apt sources (bookworm, -updates, -security).
#   BUILD_IMAGE, BUILD_TAG       for rust:VERSION-slim-bookworm: built FROM
#       that runtime stand-in as the public Rust image is FROM
#       debian:bookworm-slim: gcc, libc6-dev and ca-certificates from Debian,
#       and a Rust toolchain with rustup under /usr/local/rustup and
#       /usr/local/cargo (the same paths, environment and minimal profile:
#       rustc, cargo, rust-std). Rust cannot be downloaded here (only the
#       package registries are reachable), so the toolchain is COPIED from
#       the one this machine's own cargo uses (`rustup which cargo`); its
#       version is in the tag.
#
# Nothing else goes in: a tool the build needs (protoc) is installed by the
# Dockerfile itself, as it must be for users of the public images. One
# thing of this machine's does: the certificate authorities it adds to
# Debian's (/usr/local/share/ca-certificates), which its network needs for
# HTTPS (crates.io) as a network behind a TLS-inspecting proxy does; a user
# there would build on a base image that trusts them too.
#
# Each stand-in is built once and kept in podman's image store, tagged with
# a hash of this script's code (and, for the Rust one, of the toolchain and
# the added certificate authorities), so a
# second run prints the same names in a second and a changed recipe builds
# new ones (older stand-ins are untagged). Needs root (debootstrap, podman),
# the Debian archive (~1 min) and ~2 GB of disk while it builds.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/scripts/image-containers.conf}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
REPO=localhost/kvstore-base
# Every image built on a stand-in inherits this label (scripts/image-test.sh
# prunes by it, and it marks an image as not for release).
LABEL=io.kvstore.image-test.stand-in

die() { echo "image-bases: $*" >&2; exit 1; }
log() { echo "image-bases: $*" >&2; }
# quietly CMD...: runs CMD with its output in $work/log, shown if it fails.
quietly() {
  "$@" >>"$work/log" 2>&1 || {
    tail -40 "$work/log" >&2
    die "failed: $* (its output above)"
  }
}
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, rootful podman)"
for tool in podman debootstrap rustup tar sha256sum flock; do
  command -v "$tool" >/dev/null || die "$tool not found: run \`make deps\`"
done

# --- the toolchain this machine's cargo uses ---------------------------------
cargo_path=$(rustup which cargo) || die "rustup which cargo failed"
toolchain=$(dirname "$(dirname "$cargo_path")")
rustc_vv=$("$toolchain/bin/rustc" -vV) || die "$toolchain/bin/rustc does not run"
host=$(sed -n 's/^host: //p' <<<"$rustc_vv")
rust_version=$(sed -n 's/^release: //p' <<<"$rustc_vv")
[ -n "$host" ] && [ -n "$rust_version" ] || die "cannot read host/release from rustc -vV"
rustup_bin=$(readlink -f "$(command -v rustup)")

# The recipe is this script's code: its comments can change freely.
recipe_text=$(grep -v '^[[:space:]]*#' "$0")
recipe=$(sha256sum <<<"$recipe_text" | cut -c1-12)
EXTRA_CA_DIR=/usr/local/share/ca-certificates
extra_cas() { [ -d "$EXTRA_CA_DIR" ] && find "$EXTRA_CA_DIR" -type f -name '*.crt' | sort; }
tool_id=$( (
  echo "$recipe_text"
  echo "$rustc_vv"
  "$rustup_bin" --version 2>/dev/null
  extra_cas | while read -r f; do cat "$f"; done
) | sha256sum | cut -c1-12)
runtime_ref="$REPO/debian:$SUITE-slim-$recipe"
build_ref="$REPO/rust:$rust_version-slim-$SUITE-$tool_id"

# One builder at a time (another worktree may run this too); the second
# waits and then finds the images built.
exec 9>/tmp/kvstore-image-bases.lock
flock -w 1800 9 || die "another image-bases.sh has held the lock for 30 minutes"

work=""
cleanup() { [ -z "$work" ] || rm -rf "$work"; }
trap cleanup EXIT
workdir() { [ -n "$work" ] || work=$(mktemp -d "${TMPDIR:-/tmp}/kvstore-bases.XXXXXX"); }

# Removes what the public slim image leaves out, and keeps it out of later
# installs (the image's dpkg and apt settings).
slim() { # rootfs
  local root=$1
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT::Install-Recommends "false";
CFG
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<CFG
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
CFG
  find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{man,info,locale,lintian}/* \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
    "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/var/cache/debconf/*-old
  # debootstrap copies the host's; the container runtime provides its own.
  rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
}

build_runtime() {
  workdir
  log "building $runtime_ref: debootstrap --variant=minbase $SUITE ($MIRROR)"
  quietly debootstrap --variant=minbase "$SUITE" "$work/rootfs" "$MIRROR"
  slim "$work/rootfs"
  tar -C "$work/rootfs" --numeric-owner -cf - . \
    | podman import --change 'CMD ["bash"]' --change "LABEL $LABEL=debian:$SUITE-slim" \
      --message "kvstore stand-in for debian:$SUITE-slim (scripts/image-bases.sh)" \
      - "$runtime_ref" >>"$work/log" 2>&1 || die "podman import of $runtime_ref failed"
  rm -rf "$work/rootfs"
}

# The rustc, cargo and rust-std components of the toolchain (rustup's
# minimal profile, as in the public image), under RUSTUP_HOME in $1.
stage_toolchain() { # rustup-home
  local dest="$1/toolchains/$rust_version-$host" lib="$toolchain/lib/rustlib" c
  local components=(rustc cargo rust-std)
  mkdir -p "$dest/lib/rustlib"
  for c in "${components[@]}"; do
    [ -f "$lib/manifest-$c-$host" ] || die "$toolchain has no $c component"
  done
  # Manifest lines are file:PATH or dir:PATH, relative to the toolchain.
  for c in "${components[@]}"; do
    sed -E 's/^(file|dir)://' "$lib/manifest-$c-$host"
  done | tar -C "$toolchain" -cf - -T - | tar -C "$dest" -xf -
  for c in "${components[@]}"; do
    cp "$lib/manifest-$c-$host" "$dest/lib/rustlib/"
    echo "$c-$host"
  done >"$dest/lib/rustlib/components"
  cp "$lib/rust-installer-version" "$lib/multirust-channel-manifest.toml" "$dest/lib/rustlib/"
  {
    echo 'config_version = "1"'
    for c in "${components[@]}"; do
      printf '\n[[components]]\npkg = "%s"\ntarget = "%s"\nis_extension = false\n' "$c" "$host"
    done
  } >"$dest/lib/rustlib/multirust-config.toml"
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n' \
    "$rust_version-$host" >"$1/settings.toml"
}

build_builder() {
  workdir
  log "building $build_ref: gcc from Debian, Rust $rust_version copied from $toolchain"
  mkdir -p "$work/ctx"
  stage_toolchain "$work/ctx/rustup"
  cp "$rustup_bin" "$work/ctx/rustup-bin"
  mkdir -p "$work/ctx/extra-ca"
  extra_cas | while read -r f; do cp "$f" "$work/ctx/extra-ca/"; done
  cat >"$work/ctx/Containerfile" <<CFG
FROM $runtime_ref
LABEL $LABEL=rust:$rust_version-slim-$SUITE
ENV RUSTUP_HOME=/usr/local/rustup \\
    CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    RUST_VERSION=$rust_version
COPY extra-ca/ /usr/local/share/ca-certificates/
RUN apt-get update \\
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \\
    && rm -rf /var/lib/apt/lists/* \\
    && update-ca-certificates
COPY rustup /usr/local/rustup
COPY rustup-bin /usr/local/cargo/bin/rustup
RUN set -eux; cd /usr/local/cargo/bin; \\
    for p in cargo cargo-clippy cargo-fmt cargo-miri clippy-driver rls rust-analyzer \\
        rust-gdb rust-gdbgui rust-lldb rustc rustdoc rustfmt; do ln rustup "\$p"; done; \\
    chmod -R a+w "\$RUSTUP_HOME" "\$CARGO_HOME"; \\
    rustup --version; cargo --version; rustc --version
CMD ["bash"]
CFG
  quietly podman build --network host --format docker --layers=false -t "$build_ref" \
    -f "$work/ctx/Containerfile" "$work/ctx"
}

# Untags this script's older stand-ins; podman frees their layers once no
# image is built on them (scripts/image-test.sh prunes).
untag_old() { # current refs...
  local ref keep
  while read -r ref; do
    keep=false
    for cur in "$@"; do [ "$ref" = "$cur" ] && keep=true; done
    $keep || { log "untagging old $ref"; podman untag "$ref" "$ref" >&2 || true; }
  done < <(podman images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$REPO/*")
}

podman image exists "$runtime_ref" || build_runtime
podman image exists "$build_ref" || build_builder
untag_old "$runtime_ref" "$build_ref"

echo "BUILD_IMAGE=${build_ref%:*}"
echo "BUILD_TAG=${build_ref##*:}"
echo "RUNTIME_IMAGE=${runtime_ref%:*}"
echo "RUNTIME_TAG=${runtime_ref##*:}"
