#!/usr/bin/env bash
# `make bench-replication`: replication cost and lag on this machine.
#
# 1. Master throughput, sustained puts at pipeline 16 (kvstore bench), with
#    replication off (no replica), async (2 replicas) and sync (2 replicas,
#    min-acks 1).
# 2. Replica lag in ms during the async run: a sampler polls the end
#    offsets of master and replicas (/metrics) and measures, for each
#    master sample, how long until each replica reached that offset.
# 3. Catch-up: a replica stopped while CATCHUP_MB of log is written, then
#    restarted (partial resync); MB/s until it holds the master's end,
#    next to `dd` sequential read speed of a master segment.
#
# Sizes: REQUESTS (default 300000 puts of 100 B per run), CATCHUP_MB
# (default 1024). Needs python3. Prints a summary at the end.
set -euo pipefail

BIN=${KVSTORE_BIN:-target/release/kvstore}
REQUESTS=${REQUESTS:-300000}
CATCHUP_MB=${CATCHUP_MB:-1024}
CONNS=${CONNS:-4}
DURABILITY=${DURABILITY:-interval}
[ -x "$BIN" ] || { echo "error: $BIN not built (cargo build --release)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 is required" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvrepl-bench.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME ARGS... : starts a node in $WORK/NAME; sets ADDR and HTTP.
start() {
  local name=$1; shift
  mkdir -p "$WORK/$name"
  rm -f "$WORK/$name/ports"
  "$BIN" serve --data-dir "$WORK/$name/data" --listen "${LISTEN:-127.0.0.1:0}" \
    --http-listen 127.0.0.1:0 --port-file "$WORK/$name/ports" "$@" \
    >>"$WORK/$name/log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  eval "PID_$name=$pid"
  for _ in $(seq 1 500); do
    [ -s "$WORK/$name/ports" ] && grep -q '^http=' "$WORK/$name/ports" && break
    sleep 0.02
  done
  ADDR=$(sed -n 's/^listen=//p' "$WORK/$name/ports")
  HTTP=$(sed -n 's/^http=//p' "$WORK/$name/ports")
  eval "ADDR_$name=$ADDR; HTTP_$name=$HTTP"
}

stop() { # stop NAME
  local pid; pid=$(eval echo "\$PID_$1")
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

wait_ready() { # wait_ready HTTP
  for _ in $(seq 1 1500); do
    curl -sf "http://$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.02
  done
  echo "error: $1 never got ready" >&2; exit 1
}

put_bench() { # put_bench ADDR -> requests per second
  "$BIN" bench --addr "$1" -t put -P 16 -c "$CONNS" -n "$REQUESTS" -d 100 -r 1000000 -q \
    | sed -n 's/^[Pp][Uu][Tt]: \([0-9]*\) requests per second.*/\1/p'
}

run_mode() { # run_mode off|async|sync
  local mode=$1 tag=$1
  local flags=(--durability "$DURABILITY")
  local rflags=(--durability "$DURABILITY")
  if [ "$mode" = sync ]; then
    flags+=(--replication-mode sync --min-acks 1)
    rflags=(--durability always)
  fi
  start "m_$tag" --role master "${flags[@]}"
  local maddr=$ADDR mhttp=$HTTP
  wait_ready "$mhttp"
  local rhttps=()
  if [ "$mode" != off ]; then
    for r in 1 2; do
      start "r${r}_$tag" --role replica --master-addr "$maddr" "${rflags[@]}"
      wait_ready "$HTTP"
      rhttps+=("$HTTP")
    done
  fi
  local sampler=""
  if [ "$mode" = async ]; then
    python3 "$HERE/repl_lag_sampler.py" "$mhttp" "${rhttps[@]}" >"$WORK/lag.txt" &
    sampler=$!
  fi
  local rate; rate=$(put_bench "$maddr")
  if [ -n "$sampler" ]; then
    sleep 0.5
    kill -INT "$sampler"; wait "$sampler" || true
  fi
  eval "RATE_$mode=$rate"
  echo "mode $mode: $rate puts/s"
  stop "m_$tag"
  [ "$mode" = off ] || { stop "r1_$tag"; stop "r2_$tag"; }
}

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); $(date -u +%F)"
echo "durability $DURABILITY, $REQUESTS puts of 100 B, $CONNS connections x pipeline 16"
run_mode off
run_mode async
run_mode sync
echo "replica lag (async run):"; cat "$WORK/lag.txt"

# Catch-up of a replica 1 GiB behind.
start cm --role master --durability never
cm_addr=$ADDR; cm_http=$HTTP
wait_ready "$cm_http"
LISTEN=127.0.0.1:0 start cr --role replica --master-addr "$cm_addr" --durability never
cr_addr=$ADDR; cr_http=$HTTP
wait_ready "$cr_http"
# A few records first, so the replica has an epoch and a log to resume
# from (an empty replica is seeded by a full resync instead).
"$BIN" bench --addr "$cm_addr" -t put -P 16 -c 1 -n 1000 -d 100 -q >/dev/null
base=$(python3 "$HERE/repl_lag_sampler.py" --end "$cm_http")
python3 "$HERE/repl_lag_sampler.py" --catchup "$cm_http" "$cr_http" "$(date +%s.%N)" "$base" >/dev/null
stop cr
values=$(( CATCHUP_MB * 16 ))   # 64 KiB values
"$BIN" bench --addr "$cm_addr" -t put -P 16 -c 2 -n "$values" -d 65536 -r 100000000 -q >/dev/null
t0=$(date +%s.%N)
LISTEN=$cr_addr start cr --role replica --master-addr "$cm_addr" --durability never
python3 "$HERE/repl_lag_sampler.py" --catchup "$cm_http" "$HTTP" "$t0" "$base" | tee "$WORK/catchup.txt"
echo "replica resyncs: $(curl -s "http://$HTTP/metrics" | grep -E '^kvstore_replication_(full|partial)_resyncs_total' | tr '\n' ' ')"
seg=$(ls -S "$WORK/cm/data/"*.seg | head -1)
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null && cold=yes || cold=no
echo "dd sequential read of $(basename "$seg") (page cache dropped: $cold):"
dd if="$seg" of=/dev/null bs=1M 2>&1 | tail -1
echo "dd again (page cache warm):"
dd if="$seg" of=/dev/null bs=1M 2>&1 | tail -1
stop cr; stop cm
