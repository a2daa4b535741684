#!/usr/bin/env bash
# `make bench-failover` / `make bench-failover-kube`: unplanned failover
# time (docs/BENCHMARKS.md, "Unplanned failover"; the target is p99 <=
# TTL + 1 s with etcd, TTL + 2 s with the Kubernetes Lease API).
#
# COORDINATOR=etcd (default): one etcd member (Debian's etcd-server).
# COORDINATOR=kubernetes: the Kubernetes API stand-in of the integration
# tests (no API server runs here), served over TLS by the test binary
# STANDIN_BIN (`it`, built by `cargo test --no-run`) running its ignored
# test `failover_kube::serve_the_stand_in_for_benches`; the nodes reach it
# with --kube-api-url/--kube-token-file/--kube-ca-file, as a node outside a
# cluster would. Three nodes on loopback, async mode, lease TTL TTL_MS
# (default 5000 with etcd, 15000 with kubernetes: each backend's default).
# FAILOVERS times (default 20): find the master, SIGKILL it, then try a
# PUT on each surviving node in turn (`kvstore put`, which follows
# REDIRECT) until one is acknowledged; the time from the kill to that
# first acknowledged write is one sample. The killed node is restarted on
# its data directory and rejoins as a replica before the next round.
# Prints the machine, load average and date (benches/bench-env.sh), every
# sample, then p50, p99 and max against the target. With etcd it writes the
# samples to the chart data (docs/charts/data/failover.csv; CHARTS=0 leaves
# it alone) and redraws the charts; the chart shows etcd's failovers only.
#
# Bounded: each round gives up after ROUND_TIMEOUT s (default 60, or
# 3 x TTL when that is longer) and the script fails. Needs python3, and
# etcd (apt-get install etcd-server) for COORDINATOR=etcd.
set -euo pipefail
# shellcheck source=benches/bench-env.sh
source "$(dirname "$0")/bench-env.sh"

BIN=${KVSTORE_BIN:-target/release/kvstore}
COORDINATOR=${COORDINATOR:-etcd}
ETCD=${ETCD_BIN:-/usr/bin/etcd}
FAILOVERS=${FAILOVERS:-20}
case "$COORDINATOR" in
  etcd) TTL_MS=${TTL_MS:-5000}; SLACK_MS=1000 ;;
  kubernetes) TTL_MS=${TTL_MS:-15000}; SLACK_MS=2000 ;;
  *) echo "error: COORDINATOR must be etcd or kubernetes, not $COORDINATOR" >&2; exit 1 ;;
esac
ROUND_TIMEOUT=${ROUND_TIMEOUT:-$(( TTL_MS * 3 / 1000 > 60 ? TTL_MS * 3 / 1000 : 60 ))}
[ -x "$BIN" ] || { echo "error: $BIN not built (cargo build --release)" >&2; exit 1; }
if [ "$COORDINATOR" = etcd ]; then
  [ -x "$ETCD" ] || { echo "error: $ETCD missing (apt-get install etcd-server)" >&2; exit 1; }
else
  [ -x "${STANDIN_BIN:-}" ] || {
    echo "error: STANDIN_BIN must name the integration test binary (make bench-failover-kube finds it)" >&2
    exit 1
  }
fi
command -v python3 >/dev/null || { echo "error: python3 is required" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvfailover-bench.XXXXXX")
declare -A NODE_PID ADDR
ETCD_PID=
STANDIN_PID=

cleanup() {
  for i in 0 1 2; do
    [ -n "${NODE_PID[$i]:-}" ] && kill -9 "${NODE_PID[$i]}" 2>/dev/null || true
  done
  [ -n "$ETCD_PID" ] && kill "$ETCD_PID" 2>/dev/null || true
  [ -n "$STANDIN_PID" ] && kill "$STANDIN_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=benches/etcd.sh
. "$(dirname "$0")/etcd.sh"

echo "coordinator: $COORDINATOR, lease TTL $TTL_MS ms, $FAILOVERS failovers"

if [ "$COORDINATOR" = etcd ]; then
  start_etcd
  COORD_ARGS=(--coordinator etcd --etcd-endpoints "$ENDPOINT")
else
  # The stand-in writes url, token and ca.pem into the directory (url
  # last) and serves until killed or until a file named stop appears.
  mkdir "$WORK/standin"
  KVSTORE_STANDIN_DIR="$WORK/standin" "$STANDIN_BIN" --ignored --exact \
    failover_kube::serve_the_stand_in_for_benches --nocapture >"$WORK/standin.log" 2>&1 &
  STANDIN_PID=$!
  deadline=$(( $(date +%s) + 60 ))
  until [ -s "$WORK/standin/url" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "error: the stand-in did not start; see $WORK/standin.log" >&2; trap - EXIT; exit 1; }
    sleep 0.1
  done
  COORD_ARGS=(--coordinator kubernetes --kube-api-url "$(cat "$WORK/standin/url")"
    --kube-token-file "$WORK/standin/token" --kube-ca-file "$WORK/standin/ca.pem"
    --kube-namespace bench)
fi

# Node i on a fixed client port (so a restarted node keeps its address).
start_node() {
  local i=$1
  [ -n "${ADDR[$i]:-}" ] || ADDR[$i]=127.0.0.1:$(free_port)
  "$BIN" serve --data-dir "$WORK/data$i" --listen "${ADDR[$i]}" \
    --http-listen 127.0.0.1:0 "${COORD_ARGS[@]}" \
    --node-id "n$i" --lease-ttl-ms "$TTL_MS" >>"$WORK/node$i.log" 2>&1 &
  NODE_PID[$i]=$!
}

# The index of the node that reports itself master, if any.
master_index() {
  for i in 0 1 2; do
    if "$BIN" stats --json --addr "${ADDR[$i]}" 2>/dev/null |
      python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["replication"]["role"]=="master" else 1)' 2>/dev/null; then
      echo "$i"
      return 0
    fi
  done
  return 1
}

# Waits (bounded) until some node is master and takes a write.
wait_writable() {
  local deadline=$(( $(now_ms) + ROUND_TIMEOUT * 1000 )) key=$1
  shift
  while [ "$(now_ms)" -lt "$deadline" ]; do
    for i in "$@"; do
      if "$BIN" put --addr "${ADDR[$i]}" "bench-$key-$(now_ms)" v >/dev/null 2>&1; then
        return 0
      fi
    done
    sleep 0.01
  done
  echo "error: no writable master within ${ROUND_TIMEOUT}s; logs in $WORK" >&2
  trap - EXIT
  exit 1
}

bench_env
for i in 0 1 2; do start_node "$i"; done
wait_writable start 0 1 2

SAMPLES=()
for round in $(seq 1 "$FAILOVERS"); do
  m=$(master_index) || { echo "error: no master before round $round" >&2; exit 1; }
  survivors=()
  for i in 0 1 2; do [ "$i" != "$m" ] && survivors+=("$i"); done
  t0=$(now_ms)
  kill -9 "${NODE_PID[$m]}"
  wait "${NODE_PID[$m]}" 2>/dev/null || true
  wait_writable "r$round" "${survivors[@]}"
  t1=$(now_ms)
  SAMPLES+=($(( t1 - t0 )))
  echo "failover $round: node n$m killed, first acknowledged write after $(( t1 - t0 )) ms"
  start_node "$m"
  # Let the restarted node rejoin before the next kill.
  deadline=$(( $(now_ms) + ROUND_TIMEOUT * 1000 ))
  until "$BIN" stats --json --addr "${ADDR[$m]}" 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["replication"]; sys.exit(0 if r["link_up"] else 1)' 2>/dev/null; do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "error: n$m did not rejoin" >&2; exit 1; }
    sleep 0.05
  done
done

if [ "$COORDINATOR" = etcd ]; then
  csv=$(bench_csv failover)
  when=$(bench_date)
  echo "date,ttl_ms,failover,gap_ms" >"$csv"
  for i in "${!SAMPLES[@]}"; do echo "$when,$TTL_MS,$((i + 1)),${SAMPLES[$i]}" >>"$csv"; done
fi
bench_env
printf '%s\n' "${SAMPLES[@]}" | python3 -c '
import sys
ttl, slack = '"$TTL_MS"', '"$SLACK_MS"'
xs = sorted(int(l) for l in sys.stdin if l.strip())
def q(p):
    return xs[min(len(xs) - 1, max(0, -(-p * len(xs) // 100) - 1))]
target = ttl + slack
verdict = "met" if q(99) <= target else "NOT met"
print(f"unplanned failover ('"$COORDINATOR"', TTL {ttl} ms, {len(xs)} failovers): "
      f"p50 {q(50)} ms, p99 {q(99)} ms, max {xs[-1]} ms; "
      f"target p99 <= TTL + {slack} ms = {target} ms: {verdict}")
'
bench_charts
