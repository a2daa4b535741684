#!/usr/bin/env bash
# `make bench-failover`: unplanned failover time with `--coordinator etcd`
# (docs/BENCHMARKS.md, "Unplanned failover"; the target is p99 <= TTL + 1 s).
#
# One etcd member (Debian's etcd-server) and three nodes on loopback, async
# mode, lease TTL TTL_MS (default 5000). FAILOVERS times (default 20): find
# the master, SIGKILL it, then try a PUT on each surviving node in turn
# (`kvstore put`, which follows REDIRECT) until one is acknowledged; the
# time from the kill to that first acknowledged write is one sample. The
# killed node is restarted on its data directory and rejoins as a replica
# before the next round. Prints every sample, then p50, p99 and max, with
# the machine, load average and date (benches/bench-env.sh); writes the
# samples to the chart data (docs/charts/data/failover.csv; CHARTS=0
# leaves it alone) and redraws the charts.
#
# Bounded: each round gives up after ROUND_TIMEOUT s (default 60) and the
# script fails. Needs python3 and etcd (apt-get install etcd-server).
set -euo pipefail
# shellcheck source=benches/bench-env.sh
source "$(dirname "$0")/bench-env.sh"

BIN=${KVSTORE_BIN:-target/release/kvstore}
ETCD=${ETCD_BIN:-/usr/bin/etcd}
FAILOVERS=${FAILOVERS:-20}
TTL_MS=${TTL_MS:-5000}
ROUND_TIMEOUT=${ROUND_TIMEOUT:-60}
[ -x "$BIN" ] || { echo "error: $BIN not built (cargo build --release)" >&2; exit 1; }
[ -x "$ETCD" ] || { echo "error: $ETCD missing (apt-get install etcd-server)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 is required" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvfailover-bench.XXXXXX")
declare -A NODE_PID ADDR
ETCD_PID=

cleanup() {
  for i in 0 1 2; do
    [ -n "${NODE_PID[$i]:-}" ] && kill -9 "${NODE_PID[$i]}" 2>/dev/null || true
  done
  [ -n "$ETCD_PID" ] && kill "$ETCD_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

now_ms() { date +%s%3N; }

CLIENT_PORT=$(free_port)
PEER_PORT=$(free_port)
ENDPOINT="http://127.0.0.1:$CLIENT_PORT"
"$ETCD" --name bench --data-dir "$WORK/etcd" \
  --listen-client-urls "$ENDPOINT" --advertise-client-urls "$ENDPOINT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "bench=http://127.0.0.1:$PEER_PORT" \
  --heartbeat-interval 100 --election-timeout 1000 >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!

# Node i on a fixed client port (so a restarted node keeps its address).
start_node() {
  local i=$1
  [ -n "${ADDR[$i]:-}" ] || ADDR[$i]=127.0.0.1:$(free_port)
  "$BIN" serve --data-dir "$WORK/data$i" --listen "${ADDR[$i]}" \
    --http-listen 127.0.0.1:0 --coordinator etcd --etcd-endpoints "$ENDPOINT" \
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

csv=$(bench_csv failover)
when=$(bench_date)
echo "date,ttl_ms,failover,gap_ms" >"$csv"
for i in "${!SAMPLES[@]}"; do echo "$when,$TTL_MS,$((i + 1)),${SAMPLES[$i]}" >>"$csv"; done
bench_env
printf '%s\n' "${SAMPLES[@]}" | python3 -c '
import sys
xs = sorted(int(l) for l in sys.stdin if l.strip())
def q(p):
    return xs[min(len(xs) - 1, max(0, -(-p * len(xs) // 100) - 1))]
print(f"unplanned failover (TTL '"$TTL_MS"' ms, {len(xs)} failovers): "
      f"p50 {q(50)} ms, p99 {q(99)} ms, max {xs[-1]} ms")
'
bench_charts
