#!/usr/bin/env bash
# `make bench-server`: start a release node and load it with `kvstore bench`
# (100-byte values, 1 M key space, 50 connections, pipeline 16 then 1, put
# then get), once under --durability always and once under never. Client
# and server share the machine. Figures go to stdout; copy them into the
# "Server" section of docs/BENCHMARKS.md.
#
# Knobs: BENCH_N16 / BENCH_N1 (requests per test at pipeline 16 / 1).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
N16=${BENCH_N16:-2000000}
N1=${BENCH_N1:-300000}

$CARGO build --release --bin kvstore >&2
BIN=${CARGO_TARGET_DIR:-target}/release/kvstore
[ -x "$BIN" ] || { echo "bench-server: $BIN was not built" >&2; exit 1; }

work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "# kvstore bench-server $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)," \
  "$(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

for durability in always never; do
  ports="$work/ports-$durability"
  "$BIN" serve --data-dir "$work/data-$durability" --durability "$durability" \
    --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --port-file "$ports" \
    >"$work/server-$durability.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    [ -f "$ports" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/server-$durability.log" >&2; exit 1; }
    sleep 0.1
  done
  addr=$(sed -n 's/^listen=//p' "$ports")
  [ -n "$addr" ] || { echo "bench-server: no address in $ports" >&2; exit 1; }
  for pipeline in 16 1; do
    if [ "$pipeline" = 16 ]; then n=$N16; else n=$N1; fi
    echo "## durability=$durability pipeline=$pipeline (-c 50 -d 100 -r 1000000 -n $n)"
    "$BIN" bench --addr "$addr" -q -c 50 -n "$n" -d 100 -r 1000000 -P "$pipeline" -t put,get
  done
  kill -TERM "$pid"
  wait "$pid" || { echo "bench-server: server exited non-zero" >&2; exit 1; }
  pid=""
done
