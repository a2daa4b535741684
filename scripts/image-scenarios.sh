#!/usr/bin/env bash
# The scenarios of `make image-test`, run by scripts/image-test.sh inside a
# network namespace of their own (`unshare --net`):
#
#   scripts/image-scenarios.sh IMAGE RUN WORKDIR
#
# IMAGE is the built image, RUN the prefix of every container and volume
# (image-test.sh removes them whatever happens), WORKDIR holds `kvstore`
# (the image's own binary, used here as the client from outside the pods)
# and `secrets/` (the Secret's files). Each container runs with the
# StatefulSet's command, environment, security context, limits and mounts
# (scripts/image-pod.py), on the host network of this namespace: the pods'
# DNS names resolve to 127.0.0.1 (--add-host), kvstore-0 keeps the
# ConfigMap's ports 5555 and 9555, pod N moves to 5555+N and 9555+N.
#
# Scenarios, one function each, every one from fresh volumes:
#   roles_from_configmap  manual roles: the ConfigMap's `kubernetes`
#                         coordinator needs an API server, and none runs
#                         here, so the pods get KVSTORE_COORDINATOR=none
#                         and MASTER_ORDINAL=0 over it (manual_roles).
#                         tests/it/k8s.rs runs the coordinator path against
#                         a stand-in of the API.
#
# Every wait polls with a deadline; a failed step stops the run with its
# reason, after the containers' logs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 3 ] || { echo "usage: scripts/image-scenarios.sh IMAGE RUN WORKDIR" >&2; exit 2; }
IMAGE=$1 RUN=$2 WORK=$3
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/scripts/image-containers.conf}"
POD=(.venv/bin/python scripts/image-pod.py)
SECRETS=$WORK/secrets
KV=$WORK/kvstore
GRACE=$("${POD[@]}" grace)
HEADLESS=kvstore-headless.kvstore.svc.cluster.local
KEYS=50

# Fd 3 is this script's stderr, also where a command's own is redirected.
exec 3>&2
say() { echo "image-test: $*"; }
die() {
  echo "image-test: FAILED: $*" >&3
  exit 1
}
# A failure prints the containers' logs before it returns.
on_exit() {
  local rc=$? c
  [ "$rc" -eq 0 ] && return
  for c in $(podman ps -a --format '{{.Names}}' --filter "name=^$RUN-"); do
    echo "----- podman logs $c (last 40 lines) -----" >&3
    # (not --tail: podman 4.3 reorders the parts of a long line with it)
    podman logs "$c" 2>&1 | tail -n 40 >&3 || true
  done
}
trap on_exit EXIT

# podman without its complaints that this machine has no systemd for
# health-check timers: its stderr is shown only if it fails.
podman_q() {
  podman "$@" 2>"$WORK/podman.err" || {
    cat "$WORK/podman.err" >&2
    return 1
  }
}

# wait_for SECONDS WHAT COMMAND...: polls COMMAND until it succeeds; on
# time-out, fails with what its last attempt printed.
wait_for() {
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + secs))
  until "$@" >"$WORK/wait.out" 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] \
      || die "$what: not within ${secs}s ($*: $(tail -n 3 "$WORK/wait.out"))"
    sleep 0.2
  done
}

# The CLI from outside the pods, as a client with the client token and CA.
client() { # PORT kvstore-args...
  local port=$1
  shift
  KVSTORE_AUTH_TOKEN_FILE=$SECRETS/client-token KVSTORE_TLS_CA=$SECRETS/ca.crt \
    "$KV" --addr "127.0.0.1:$port" "$@"
}
http_ok() { curl -fsS -o /dev/null --max-time 3 "http://127.0.0.1:$1$2"; } # PORT PATH
has_value() { [ "$(client "$1" read "$2")" = "$3" ]; }                     # PORT KEY VALUE
exited() { [ "$(podman inspect --format '{{.State.Status}}' "$1")" = exited ]; }
# Pod N's server answers 200 on PATH; fails the run at once if it exited.
up() { # N PATH
  local c=$RUN-kvstore-$1
  ! exited "$c" || die "kvstore-$1 exited with $(podman inspect --format '{{.State.ExitCode}}' "$c") before $2 answered"
  http_ok $((9555 + $1)) "$2"
}

# Pod N's ports: they share this network namespace (on Kubernetes each pod
# has its own), so all but kvstore-0 move theirs.
pod_ports() { # N
  local n=$1
  [ "$n" -eq 0 ] && return
  echo "--env=KVSTORE_LISTEN=0.0.0.0:$((5555 + n))"
  echo "--env=KVSTORE_HTTP_LISTEN=0.0.0.0:$((9555 + n))"
  echo "--env=KVSTORE_ADVERTISE_ADDR=kvstore-$n.$HEADLESS:$((5555 + n))"
}
# Manual roles over the ConfigMap's coordinator (see the header).
manual_roles() {
  echo "--env=KVSTORE_COORDINATOR=none"
  echo "--env=KVSTORE_ROLE=auto"
  echo "--env=MASTER_ORDINAL=0"
  echo "--env=KVSTORE_MASTER_ADDR=kvstore-{ordinal}.$HEADLESS:5555"
}
# `podman run` arguments of one of pod N's containers, up to the image.
pod_args() { # CONTAINER N
  local n=$2 opts extra
  mapfile -t opts < <("${POD[@]}" opts "$1" "kvstore-$n" "data=$RUN-data-$n" "secrets=$SECRETS")
  [ "${#opts[@]}" -gt 1 ] || die "scripts/image-pod.py gave no options for $1"
  mapfile -t extra < <(pod_ports "$n"; manual_roles)
  printf '%s\n' --hostname="kvstore-$n" --network=host \
    --add-host="kvstore-0.$HEADLESS:127.0.0.1" --add-host="kvstore-1.$HEADLESS:127.0.0.1" \
    "${opts[@]}" "${extra[@]}"
}

# The init container: `kvstore role` must print EXPECTED and exit 0.
init_pod() { # N EXPECTED
  local args cmd out
  mapfile -t args < <(pod_args init-kvstore "$1")
  mapfile -t cmd < <("${POD[@]}" cmd init-kvstore)
  out=$(podman run --rm --name "$RUN-init-$1" --no-healthcheck \
    "${args[@]}" "$IMAGE" "${cmd[@]}" 2>"$WORK/init.err") \
    || die "init container of kvstore-$1 failed: $(cat "$WORK/init.err")"
  [ "$out" = "$2" ] || die "init container of kvstore-$1 printed '$out', expected '$2'"
  say "kvstore-$1 init container: $out"
}

# Starts pod N's server and waits for the StatefulSet's probes to pass.
start_pod() { # N
  local n=$1 args cmd
  mapfile -t args < <(pod_args kvstore "$n")
  mapfile -t cmd < <("${POD[@]}" cmd kvstore)
  # --health-interval=disable: no health-check timer (podman would ask
  # systemd for one); the image's HEALTHCHECK is run with `podman
  # healthcheck run` instead.
  podman_q run -d --name "$RUN-kvstore-$n" --health-interval=disable \
    "${args[@]}" "$IMAGE" "${cmd[@]}" >/dev/null || die "podman run kvstore-$n failed"
  wait_for 60 "kvstore-$n /healthz" up "$n" /healthz
  wait_for 60 "kvstore-$n /readyz" up "$n" /readyz
  say "kvstore-$n is up: /healthz and /readyz answer 200"
}

# SIGTERM, as the kubelet sends it: the node must exit 0 within the grace
# period (after it the kubelet would SIGKILL it).
stop_pod() { # N
  local c=$RUN-kvstore-$1 start code
  start=$SECONDS
  podman_q kill --signal TERM "$c" >/dev/null || die "podman kill $c failed"
  wait_for "$GRACE" "kvstore-$1 to exit on SIGTERM (terminationGracePeriodSeconds)" exited "$c"
  code=$(podman inspect --format '{{.State.ExitCode}}' "$c")
  [ "$code" = 0 ] || die "kvstore-$1 exited with $code on SIGTERM, expected 0"
  say "kvstore-$1 exited 0 on SIGTERM in $((SECONDS - start))s (grace ${GRACE}s)"
  podman_q rm -v "$c" >/dev/null || die "podman rm $c failed"
}

put_keys() { # PORT FROM TO
  local i
  for ((i = $2; i < $3; i++)); do
    client "$1" put "key-$i" "value-$i" >/dev/null || die "put key-$i on port $1 failed"
  done
}
check_keys() { # PORT FROM TO WHERE
  local i got
  for ((i = $2; i < $3; i++)); do
    got=$(client "$1" read "key-$i") || die "read key-$i from $4 failed"
    [ "$got" = "value-$i" ] || die "key-$i on $4 is '$got', expected 'value-$i'"
  done
}

scenario_roles_from_configmap() {
  say "scenario: roles from the ConfigMap (MASTER_ORDINAL=0, no coordinator)"
  init_pod 0 "kvstore-0: role MASTER"
  start_pod 0
  podman healthcheck run "$RUN-kvstore-0" >/dev/null \
    || die "the image's HEALTHCHECK fails on a ready node: $(podman image inspect --format '{{.HealthCheck.Test}}' "$IMAGE")"
  say "the image's HEALTHCHECK passes: $(podman image inspect --format '{{.HealthCheck.Test}}' "$IMAGE")"

  put_keys 5555 0 "$KEYS"
  check_keys 5555 0 "$KEYS" kvstore-0
  say "put and read $KEYS keys through 127.0.0.1:5555 (client token, TLS)"

  stop_pod 0
  start_pod 0
  check_keys 5555 0 "$KEYS" "kvstore-0 after a restart on its volume"
  say "a new kvstore-0 container on the same volume has all $KEYS keys"

  init_pod 1 "kvstore-1: role REPLICA of kvstore-0.$HEADLESS:5555"
  start_pod 1 # ready = following kvstore-0, at most the allowed lag behind
  put_keys 5555 "$KEYS" $((KEYS + 10))
  wait_for 60 "kvstore-1 to replicate key-$((KEYS + 9))" \
    has_value 5556 "key-$((KEYS + 9))" "value-$((KEYS + 9))"
  check_keys 5556 0 $((KEYS + 10)) kvstore-1
  say "kvstore-1 follows kvstore-0 and has all $((KEYS + 10)) keys"

  stop_pod 1
  stop_pod 0
}

ip link set lo up
SCENARIOS=(roles_from_configmap)
for scenario in "${SCENARIOS[@]}"; do
  for n in 0 1; do
    podman volume rm -f "$RUN-data-$n" >/dev/null 2>&1 || true
    podman volume create "$RUN-data-$n" >/dev/null
  done
  "scenario_$scenario"
done
