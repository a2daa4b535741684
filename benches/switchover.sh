#!/usr/bin/env bash
# `make bench-switchover`: planned switchover under a steady write load
# with `--coordinator etcd` (docs/BENCHMARKS.md, "Planned switchover"; the
# target is a write gap p99 <= 1 s over >= 20 switchovers).
#
# One etcd member (Debian's etcd-server) and three nodes on loopback, sync
# mode with --min-acks 1, lease TTL TTL_MS (default 5000). A writer (one
# RESP connection, python3) SETs unique keys one at a time to whichever
# node takes them, moving to the next node on any refusal, and logs the
# time of each acknowledgement. SWITCHOVERS times (default 20), every
# INTERVAL s (default 2): `kvstore switchover` against any node (it follows
# REDIRECT to the master). The write gap of a switchover is the longest
# time between two consecutive acknowledgements around it (last ack before
# -> first ack after, as the writer saw them). At the end every
# acknowledged key is read back from the final master: any missing one is
# an acknowledged write lost. Prints each sample, p50/p99/max, the losses,
# the machine, its load average, the date and the commit at the start and
# the end (benches/bench-env.sh).
#
# Bounded: each switchover gives up after ROUND_TIMEOUT s (default 60) and
# the script fails; the writer stops after the last round or MAX_SECONDS.
# Needs python3 and etcd (apt-get install etcd-server).
set -euo pipefail

BIN=${KVSTORE_BIN:-target/release/kvstore}
ETCD=${ETCD_BIN:-/usr/bin/etcd}
SWITCHOVERS=${SWITCHOVERS:-20}
INTERVAL=${INTERVAL:-2}
TTL_MS=${TTL_MS:-5000}
ROUND_TIMEOUT=${ROUND_TIMEOUT:-60}
MAX_SECONDS=${MAX_SECONDS:-$(( SWITCHOVERS * (INTERVAL + ROUND_TIMEOUT) + 60 ))}
[ -x "$BIN" ] || { echo "error: $BIN not built (cargo build --release)" >&2; exit 1; }
[ -x "$ETCD" ] || { echo "error: $ETCD missing (apt-get install etcd-server)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 is required" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvswitchover-bench.XXXXXX")
declare -A NODE_PID ADDR RESP
ETCD_PID=
WRITER_PID=

stop_all() {
  [ -n "$WRITER_PID" ] && kill "$WRITER_PID" 2>/dev/null || true
  for i in 0 1 2; do
    [ -n "${NODE_PID[$i]:-}" ] && kill -9 "${NODE_PID[$i]}" 2>/dev/null || true
  done
  [ -n "$ETCD_PID" ] && kill "$ETCD_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}

cleanup() {
  stop_all
  rm -rf "$WORK"
}
trap cleanup EXIT

# Stops everything but keeps the logs for a look.
fail() {
  echo "error: $*; logs in $WORK" >&2
  trap - EXIT
  stop_all
  exit 1
}

# shellcheck source=benches/etcd.sh
. "$(dirname "$0")/etcd.sh"
# shellcheck source=benches/bench-env.sh
. "$(dirname "$0")/bench-env.sh"
bench_env
start_etcd

for i in 0 1 2; do
  ADDR[$i]=127.0.0.1:$(free_port)
  RESP[$i]=127.0.0.1:$(free_port)
  "$BIN" serve --data-dir "$WORK/data$i" --listen "${ADDR[$i]}" \
    --resp-listen "${RESP[$i]}" --http-listen 127.0.0.1:0 \
    --coordinator etcd --etcd-endpoints "$ENDPOINT" --node-id "n$i" \
    --lease-ttl-ms "$TTL_MS" --replication-mode sync --min-acks 1 \
    >>"$WORK/node$i.log" 2>&1 &
  NODE_PID[$i]=$!
done

# The writer: `<unix ms> <key>` per acknowledged SET in $WORK/acks, until
# $WORK/stop exists or MAX_SECONDS.
cat >"$WORK/writer.py" <<'EOF'
import os, socket, sys, time
nodes, acks, stop, max_s = sys.argv[1].split(","), sys.argv[2], sys.argv[3], float(sys.argv[4])
def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=2)
    s.settimeout(10)
    return s, s.makefile("rb")
out = open(acks, "w", buffering=1)
turn, conn, i, started = 0, None, 0, time.time()
while not os.path.exists(stop) and time.time() - started < max_s:
    try:
        if conn is None:
            conn = connect(nodes[turn % len(nodes)])
        key = f"sw-{i:08d}"
        conn[0].sendall(f"*3\r\n$3\r\nSET\r\n${len(key)}\r\n{key}\r\n$1\r\nv\r\n".encode())
        line = conn[1].readline()
        if line == b"+OK\r\n":
            out.write(f"{int(time.time() * 1000)} {key}\n")
            i += 1
            continue
        if not line:
            raise ConnectionError("closed")
    except OSError:
        pass
    # Refused (a replica, a paused or fenced master) or broken: next node.
    if conn is not None:
        conn[0].close()
    conn, turn = None, turn + 1
    time.sleep(0.005)
EOF

# Waits (bounded) until the writer logs an acknowledgement after $1 (ms).
wait_ack_after() {
  local since=$1 last deadline=$(( $(now_ms) + ROUND_TIMEOUT * 1000 ))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    last=$(tail -n 1 "$WORK/acks" | cut -d' ' -f1)
    if [ -n "$last" ] && [ "$last" -gt "$since" ]; then return 0; fi
    sleep 0.05
  done
  fail "no acknowledged write within ${ROUND_TIMEOUT}s"
}

NODES="${RESP[0]},${RESP[1]},${RESP[2]}"
: >"$WORK/acks"
python3 "$WORK/writer.py" "$NODES" "$WORK/acks" "$WORK/stop" "$MAX_SECONDS" &
WRITER_PID=$!
wait_ack_after 0
# Every node in the in-sync set before the first switchover.
deadline=$(( $(now_ms) + ROUND_TIMEOUT * 1000 ))
until for i in 0 1 2; do "$BIN" stats --json --addr "${ADDR[$i]}" 2>/dev/null; done |
  python3 -c 'import json,sys
for l in sys.stdin:
    r = json.loads(l)["replication"]
    if r["role"] == "master" and len(r.get("in_sync") or []) == 3: sys.exit(0)
sys.exit(1)' 2>/dev/null; do
  [ "$(now_ms)" -lt "$deadline" ] || fail "the in-sync set never held all three nodes"
  sleep 0.1
done

: >"$WORK/rounds"
for round in $(seq 1 "$SWITCHOVERS"); do
  sleep "$INTERVAL"
  t0=$(now_ms)
  out=$(timeout "$ROUND_TIMEOUT" "$BIN" switchover --addr "${ADDR[$(( round % 3 ))]}" 2>&1) ||
    fail "switchover $round: $out"
  t1=$(now_ms)
  wait_ack_after "$t1"
  echo "$t0 $t1" >>"$WORK/rounds"
  echo "switchover $round: $out ($(( t1 - t0 )) ms)"
done
touch "$WORK/stop"
wait "$WRITER_PID" || true
WRITER_PID=

# The master now, for the read-back.
MASTER=
for i in 0 1 2; do
  if "$BIN" stats --json --addr "${ADDR[$i]}" 2>/dev/null |
    python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["replication"]["role"]=="master" else 1)' 2>/dev/null; then
    MASTER=${RESP[$i]}
  fi
done
[ -n "$MASTER" ] || fail "no master after the last switchover"

python3 - "$WORK/acks" "$WORK/rounds" "$MASTER" "$TTL_MS" <<'EOF'
import socket, sys
acks = [(int(t), k) for t, k in (l.split() for l in open(sys.argv[1]) if l.strip())]
rounds = [tuple(map(int, l.split())) for l in open(sys.argv[2]) if l.strip()]
times = [t for t, _ in acks]
gaps = []
for n, (start, end) in enumerate(rounds, 1):
    # The longest pause between consecutive acks that spans the switchover.
    gap = max(b - a for a, b in zip(times, times[1:]) if b > start and a < end)
    gaps.append(gap)
    print(f"switchover {n}: write gap {gap} ms")
host, port = sys.argv[3].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
f = s.makefile("rb")
lost = 0
for i in range(0, len(acks), 500):
    chunk = acks[i:i + 500]
    s.sendall(b"".join(f"*2\r\n$3\r\nGET\r\n${len(k)}\r\n{k}\r\n".encode() for _, k in chunk))
    for _ in chunk:
        line = f.readline()
        if line.startswith(b"$-1"):
            lost += 1
        elif line.startswith(b"$"):
            f.readline()
        else:
            raise SystemExit(f"unexpected answer {line!r}")
xs = sorted(gaps)
def q(p):
    return xs[min(len(xs) - 1, max(0, -(-p * len(xs) // 100) - 1))]
print(f"planned switchover (etcd, sync, min-acks 1, TTL {sys.argv[4]} ms, {len(xs)} switchovers): "
      f"write gap p50 {q(50)} ms, p99 {q(99)} ms, max {xs[-1]} ms")
print(f"acknowledged writes: {len(acks)}, lost: {lost}")
if lost:
    sys.exit(1)
EOF
bench_env
