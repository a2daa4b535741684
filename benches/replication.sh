#!/usr/bin/env bash
# `make bench-replication`: what replication costs and how far replicas
# trail, on this machine (docs/BENCHMARKS.md, "Replication: group commit").
#
# 1. Sync against async: redis-benchmark through the RESP listener
#    (`-t set -d 100 -r 1000000`) against a master with one replica, both
#    `--durability always`; async, then sync (`--min-acks 1`), at each load
#    (-c1 -P1, -c20 -P4, -c50 -P16). Prints SET/s, p50, p99 and the
#    sync/async throughput ratio of the same run. A fresh pair of nodes
#    for every measurement.
# 2. Replica lag: a master with two async replicas, all `always` (and one
#    row with all `never`), under redis-benchmark SET load at -c20 -P4 and
#    -c50 -P16; meanwhile repl_lag_sampler.py writes a probe key to the
#    master every 20 ms and polls both replicas (GET, RESP) until it
#    appears. Prints lag p50/p99/max per replica.
# 4. Master CPU per write (printed before part 3): a master alone, then
#    with two async replicas, all `never` (so the figure is CPU, not
#    fsync), SET -c50 -P16 -n CPU_N; the master's user + system CPU
#    seconds from /proc/PID/stat across the load, per write, and the ratio
#    with 2 / alone of the same round; CPU_ROUNDS rounds.
# 3. Catch-up at disk speed (skipped with CATCHUP_MB=0): a master
#    (`--durability never`, CATCHUP_SEGMENT_BYTES segments) gets
#    CATCHUP_MB of 64 KiB values while its replica is stopped; then, in
#    CATCHUP_ROUNDS rounds whose order alternates, each timed on its own:
#    - partial: the replica restarts from its stopped data directory (a
#      saved copy, so every round resumes from the same offset) and is
#      timed from its process start until its *durable* offset (fsynced,
#      replica `--durability always`) reaches the master's end;
#    - TLS partial: the same, with the master restarted on the same data
#      with a certificate (made here with openssl) and the replica
#      verifying it (`--tls-ca`);
#    - full: a new replica with an empty data directory (full resync),
#      timed the same way;
#    - cp: the reference, `cp` of the master's segment files that the
#      catch-up covers (for full: every data file) into a fresh directory
#      on the same file system, then `sync FILES` (fsync of each copy).
#    Prints MB/s of each and the ratios catch-up / cp and TLS / plaintext
#    of the same round, and for each catch-up the replica's CPU seconds
#    and minor page faults (from /proc/PID/stat when it ended), which
#    other load on the machine moves less than the seconds. The master's files are in the page cache for both
#    (just written), so both read from memory and write to the disk.
#
# ONLY_CATCHUP=1 skips parts 1, 2 and 4; ONLY_CPU=1 runs part 4 alone
# (with CATCHUP_MB=0). Every load is bounded: a request
# count per run (N_C1 for -c1 -P1, N for the others, LAG_N under the lag
# probe, CATCHUP_MB in part 3), `timeout` (RUN_TIMEOUT s) on every load
# generator and copy, CATCHUP_TIMEOUT s (600) on every catch-up. Needs python3, curl, redis-benchmark (installed
# from Debian with apt-get when missing). Prints the machine, load average
# and date at the start and the end (benches/bench-env.sh); the lag of
# every probe of part 2 goes to the chart data
# (docs/charts/data/replication-lag.csv; CHARTS=0 leaves it alone) and the
# charts are redrawn.
set -euo pipefail
# shellcheck source=benches/bench-env.sh
source "$(dirname "$0")/bench-env.sh"

BIN=${KVSTORE_BIN:-target/release/kvstore}
N_C1=${N_C1:-20000}
N=${N:-500000}
LAG_N=${LAG_N:-1000000}
CPU_N=${CPU_N:-500000}
CPU_ROUNDS=${CPU_ROUNDS:-3}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}
CATCHUP_MB=${CATCHUP_MB:-1024}
CATCHUP_ROUNDS=${CATCHUP_ROUNDS:-2}
CATCHUP_SEGMENT_BYTES=${CATCHUP_SEGMENT_BYTES:-268435456}
[ -x "$BIN" ] || { echo "error: $BIN not built (cargo build --release)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 is required" >&2; exit 1; }
if ! command -v redis-benchmark >/dev/null; then
  apt-get update -q && apt-get install -y -q redis-tools
fi
command -v redis-benchmark >/dev/null || { echo "error: redis-benchmark is required" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvrepl-bench.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME ARGS... : starts a node in $WORK/NAME; sets ADDR, HTTP, RESP.
start() {
  local name=$1; shift
  mkdir -p "$WORK/$name"
  rm -f "$WORK/$name/ports"
  "$BIN" serve --data-dir "$WORK/$name/data" --listen "${LISTEN:-127.0.0.1:0}" \
    --http-listen 127.0.0.1:0 --resp-listen 127.0.0.1:0 --port-file "$WORK/$name/ports" "$@" \
    >>"$WORK/$name/log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  eval "PID_$name=$pid"
  for _ in $(seq 1 500); do
    [ -s "$WORK/$name/ports" ] && grep -q '^resp=' "$WORK/$name/ports" && break
    sleep 0.02
  done
  ADDR=$(sed -n 's/^listen=//p' "$WORK/$name/ports")
  HTTP=$(sed -n 's/^http=//p' "$WORK/$name/ports")
  RESP=$(sed -n 's/^resp=//p' "$WORK/$name/ports")
  [ -n "$RESP" ] || { echo "error: $name did not start; its log:" >&2; cat "$WORK/$name/log" >&2; exit 1; }
}

stop() { # stop NAME...
  local name pid
  for name in "$@"; do
    pid=$(eval echo "\$PID_$name")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "${WORK:?}/$name/data"
  done
}

wait_ready() { # wait_ready HTTP
  for _ in $(seq 1 1500); do
    curl -sf "http://$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.02
  done
  echo "error: $1 never got ready" >&2; exit 1
}

# set_load RESP C P N : redis-benchmark SET, prints "rps p50 p99".
set_load() {
  local port=${1##*:}
  timeout "$RUN_TIMEOUT" redis-benchmark -h 127.0.0.1 -p "$port" -t set -d 100 -r 1000000 \
    -c "$2" -P "$3" -n "$4" --csv 2>/dev/null \
    | python3 -c '
import csv, sys
for row in csv.reader(sys.stdin):
    if row and row[0] == "SET":
        print(row[1], row[4], row[6])'
}

# cluster TAG REPLICAS FLAGS... : a master and REPLICAS replicas, all with
# FLAGS; sets M_RESP and R_RESPS.
cluster() {
  local tag=$1 replicas=$2; shift 2
  start "m$tag" --role master "$@"
  M_RESP=$RESP
  local maddr=$ADDR mhttp=$HTTP
  wait_ready "$mhttp"
  R_RESPS=()
  NODES=("m$tag")
  for r in $(seq 1 "$replicas"); do
    start "r$r$tag" --role replica --master-addr "$maddr" "$@"
    wait_ready "$HTTP"
    R_RESPS+=("$RESP")
    NODES+=("r$r$tag")
  done
}

bench_env
echo "kvstore: $("$BIN" --version 2>/dev/null || echo "$BIN")"
echo

# ONLY_CATCHUP=1 runs part 3 alone.
if [ "${ONLY_CATCHUP:-0}" != 1 ]; then
run=0
if [ "${ONLY_CPU:-0}" != 1 ]; then
echo "## 1. Sync vs async: master + 1 replica, both --durability always, SET -d 100 (redis-benchmark via RESP)"
echo
echo "| replication | load | SET/s | p50 | p99 | sync/async |"
echo "|---|---|---|---|---|---|"
run=0
for load in "1 1 $N_C1" "20 4 $N" "50 16 $N"; do
  read -r c p n <<<"$load"
  declare -A rps=()
  for mode in async sync; do
    run=$((run + 1))
    flags=(--durability always)
    [ "$mode" = sync ] && flags+=(--replication-mode sync --min-acks 1)
    cluster "t$run" 1 "${flags[@]}"
    read -r r p50 p99 < <(set_load "$M_RESP" "$c" "$p" "$n") || true
    stop "${NODES[@]}"
    rps[$mode]=${r:-0}
    label=$mode
    # shellcheck disable=SC2016 # the backquotes are Markdown, printed as is
    [ "$mode" = sync ] && label='sync, `--min-acks 1`'
    ratio=""
    [ "$mode" = sync ] && ratio=$(python3 -c "a,s=float('${rps[async]}'),float('${rps[sync]}'); print(f'{s/a:.2f}x' if a else 'n/a')")
    printf '| %s | -c%s -P%s | %.0f | %s ms | %s ms | %s |\n' "$label" "$c" "$p" "${r:-0}" "${p50:-?}" "${p99:-?}" "$ratio"
  done
  unset rps
done
echo

echo "## 2. Replica lag: master + 2 async replicas, probe every 20 ms (write on the master, GET on each replica)"
echo
echo "| all nodes' durability | load on the master | replica 1 lag p50 / p99 / max | replica 2 lag p50 / p99 / max | probes |"
echo "|---|---|---|---|---|"
lag_csv=$(bench_csv replication-lag)
echo "date,config,replica,t_s,lag_ms" >"$lag_csv"
for row in "always 20 4" "always 50 16" "never 20 4"; do
  read -r dur c p <<<"$row"
  run=$((run + 1))
  cluster "l$run" 2 --durability "$dur"
  LAG_CSV=$lag_csv LAG_DATE=$(bench_date) LAG_LABEL="$dur -c$c -P$p" \
    python3 "$HERE/repl_lag_sampler.py" probe "$RUN_TIMEOUT" "$M_RESP" "${R_RESPS[@]}" >"$WORK/lag.txt" &
  sampler=$!
  for _ in $(seq 1 500); do grep -q '^probing' "$WORK/lag.txt" && break; sleep 0.02; done
  read -r r _ _ < <(set_load "$M_RESP" "$c" "$p" "$LAG_N") || true
  kill -INT "$sampler" 2>/dev/null || true
  wait "$sampler" || true
  stop "${NODES[@]}"
  cells=$(python3 -c '
import re, sys
rows = open(sys.argv[1]).read().splitlines()
cells, samples = [], 0
for line in rows:
    m = re.search(r"(\d+) samples, lag p50 ([\d.na]+) ms, p99 ([\d.na]+) ms, max ([\d.na]+) ms, missed (\d+)", line)
    if m:
        cells.append(f"{m[2]} / {m[3]} / {m[4]} ms" + (f" ({m[5]} missed)" if m[5] != "0" else ""))
        samples = max(samples, int(m[1]))
print(" | ".join(cells + ["?"] * (2 - len(cells))) + f" | {samples}")' "$WORK/lag.txt")
  printf '| %s | SET -c%s -P%s (%.0f SET/s) | %s |\n' "$dur" "$c" "$p" "${r:-0}" "$cells"
done
echo

fi # ONLY_CPU

echo "## 4. Master CPU per write: alone against 2 async replicas, --durability never, SET -c50 -P16 -n $CPU_N"
echo
echo "| round | replicas | SET/s | master CPU s during the load | µs of master CPU per write | with 2 / alone |"
echo "|---|---|---|---|---|---|"
for round in $(seq 1 "$CPU_ROUNDS"); do
  alone=""
  for replicas in 0 2; do
    run=$((run + 1))
    cluster "c$run" "$replicas" --durability never
    mpid=$(eval echo "\$PID_mc$run")
    before=$(bench_cpu_s "$mpid")
    read -r r _ _ < <(set_load "$M_RESP" 50 16 "$CPU_N") || true
    after=$(bench_cpu_s "$mpid")
    stop "${NODES[@]}"
    per=$(python3 -c "print(f'{($after - $before) / $CPU_N * 1e6:.2f}')")
    ratio=""
    [ "$replicas" = 2 ] && ratio=$(python3 -c "print(f'{$per / $alone:.2f}x')")
    [ "$replicas" = 0 ] && alone=$per
    printf '| %s | %s | %.0f | %.2f | %s | %s |\n' "$round" "$replicas" "${r:-0}" \
      "$(python3 -c "print($after - $before)")" "$per" "$ratio"
  done
done
echo
bench_charts
bench_env
fi

[ "$CATCHUP_MB" -gt 0 ] || exit 0
command -v openssl >/dev/null || { echo "error: openssl is required for the TLS round of part 3" >&2; exit 1; }
export CATCHUP_TIMEOUT=${CATCHUP_TIMEOUT:-600}
echo
echo "## 3. Catch-up against cp: a replica $CATCHUP_MB MB behind; master --durability never, replica always; $CATCHUP_ROUNDS rounds, order alternating"
echo
# A CA and a certificate for 127.0.0.1, for the TLS round.
tls=$WORK/tls
mkdir -p "$tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
  -keyout "$tls/node.key" -out "$tls/node.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$tls/ext"
openssl x509 -req -in "$tls/node.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
  -days 2 -extfile "$tls/ext" -out "$tls/node.pem" 2>/dev/null
seg_flags=(--segment-max-bytes "$CATCHUP_SEGMENT_BYTES")
cm_addr=127.0.0.1:0

master_up() { # master_up [FLAGS...]: (re)starts the master on its data, at the same address
  LISTEN=$cm_addr start cm --role master --durability never "${seg_flags[@]}" "$@"
  cm_addr=$ADDR; cm_http=$HTTP
  wait_ready "$cm_http"
}
master_down() { # stops the master, keeping its data
  # shellcheck disable=SC2154 # PID_cm is set by start (eval)
  kill "$PID_cm"; wait "$PID_cm" 2>/dev/null || true
}
master_end() { # the master's end once it stops moving (its writer drains)
  local a b
  a=$(python3 "$HERE/repl_lag_sampler.py" --end "$cm_http")
  for _ in $(seq 1 100); do
    sleep 0.05
    b=$(python3 "$HERE/repl_lag_sampler.py" --end "$cm_http")
    [ "$a" = "$b" ] && break
    a=$b
  done
  echo "$a"
}
# replica_at FROM [FLAGS...]: starts the replica (always durable) and sets
# result to "MB SECONDS RESYNC CPU FAULTS" once its durable offset holds the
# master's end: MB from FROM, seconds from its process start, the kind of
# resync it made, its CPU seconds and minor page faults until then. Then stops it and removes its data. (Results go through a variable,
# not $(...), so every process is started by this shell and its cleanup.)
replica_at() {
  local from=$1 t0 out kind usage
  shift
  t0=$(date +%s.%N)
  start cr --role replica --master-addr "$cm_addr" --durability always "${seg_flags[@]}" "$@"
  out=$(python3 "$HERE/repl_lag_sampler.py" --catchup "$cm_http" "$RESP" "$t0" "$from" durable)
  # The replica's CPU seconds (user + system) and minor page faults so
  # far: less sensitive to other load on the machine than the seconds.
  # shellcheck disable=SC2154 # PID_cr is set by start (eval)
  usage=$(python3 - "$PID_cr" <<'PY'
import os, sys
f = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print(f"{(int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK'):.2f} {f[7]}")
PY
)
  kind=$(curl -s "http://$HTTP/metrics" | awk '
    /^kvstore_replication_full_resyncs_total / && $2 > 0 { k = "full" }
    /^kvstore_replication_partial_resyncs_total / && $2 > 0 && k == "" { k = "partial" }
    END { print (k == "" ? "?" : k) }')
  stop cr
  result="$out $kind $usage"
}
partial() { # partial [FLAGS...]: from the saved replica directory
  mkdir -p "$WORK/cr"
  cp -a "$WORK/cr-base" "$WORK/cr/data"
  replica_at "$base" "$@"
}
# cp_ref FILE...: sets result to "MB SECONDS -" of cp of FILES into a fresh directory
# on the same file system, then fsync of every copy (`sync FILE...`).
cp_ref() {
  local dest=$WORK/cp-ref t0 t1 bytes
  rm -rf "$dest"; mkdir "$dest"
  bytes=$(du -cb "$@" | tail -1 | cut -f1)
  t0=$(date +%s.%N)
  timeout "$RUN_TIMEOUT" cp "$@" "$dest/"
  sync "$dest"/*
  t1=$(date +%s.%N)
  rm -rf "$dest"
  result="$(python3 -c "print(f'{$bytes / 1e6:.1f} {$t1 - $t0:.3f}')") -"
}
# covered FROM: the master's segment files holding log bytes from FROM on.
covered() {
  python3 - "$WORK/cm/data" "$1" <<'PY'
import os, sys
d, start = sys.argv[1], int(sys.argv[2])
segs = sorted((int(n[:-4]), n) for n in os.listdir(d) if n.endswith(".seg"))
for i, (b, n) in enumerate(segs):
    if i + 1 == len(segs) or segs[i + 1][0] > start:
        print(os.path.join(d, n))
PY
}

master_up
start cr --role replica --master-addr "$cm_addr" --durability always "${seg_flags[@]}"
wait_ready "$HTTP"
# A few records first, so the replica has an epoch and a log to resume
# from (an empty replica is seeded by a full resync instead); its data,
# stopped there, is saved for every partial round.
"$BIN" bench --addr "$cm_addr" -t put -P 16 -c 1 -n 1000 -d 100 -q >/dev/null
base=$(master_end)
python3 "$HERE/repl_lag_sampler.py" --catchup "$cm_http" "$RESP" "$(date +%s.%N)" "$base" durable >/dev/null
# shellcheck disable=SC2154 # PID_cr is set by start (eval)
kill "$PID_cr"; wait "$PID_cr" 2>/dev/null || true
mv "$WORK/cr/data" "$WORK/cr-base"
values=$(( CATCHUP_MB * 16 ))   # 64 KiB values
timeout "$RUN_TIMEOUT" "$BIN" bench --addr "$cm_addr" -t put -P 16 -c 2 -n "$values" -d 65536 -r 100000000 -q >/dev/null
end=$(master_end)
mapfile -t part_files < <(covered "$base")
mapfile -t all_files < <(covered 0)
echo "master log: offset $base (the stopped replica) to $end; ${#all_files[@]} segment files, the catch-up covers ${#part_files[@]}"
echo
echo "| round | what | MB | seconds | MB/s | resync | ratio (same round) | replica CPU s | replica minor faults |"
echo "|---|---|---|---|---|---|---|---|---|"
mbs() { python3 -c "print(f'{$1 / $2:.0f}' if $2 > 0 else 'n/a')"; }
ratio() { python3 -c "a, b = $1 / $2, $3 / $4; print(f'{a / b:.2f}x' if b > 0 else 'n/a')"; }
declare -A got=()
for round in $(seq 1 "$CATCHUP_ROUNDS"); do
  order=(partial cp_partial tls full cp_full)
  if [ $((round % 2)) = 0 ]; then order=(cp_full full tls cp_partial partial); fi
  for what in "${order[@]}"; do
    case $what in
      partial) partial ;;
      tls)
        master_down
        master_up --tls-cert "$tls/node.pem" --tls-key "$tls/node.key"
        partial --tls-ca "$tls/ca.pem"
        master_down
        master_up
        ;;
      full) replica_at 0 ;;
      cp_partial) cp_ref "${part_files[@]}" ;;
      cp_full) cp_ref "${all_files[@]}" ;;
    esac
    got[$what]=$result
  done
  read -r p_mb p_s p_kind p_cpu p_flt <<<"${got[partial]}"
  read -r cp_mb cp_s _ <<<"${got[cp_partial]}"
  read -r t_mb t_s t_kind t_cpu t_flt <<<"${got[tls]}"
  read -r f_mb f_s f_kind f_cpu f_flt <<<"${got[full]}"
  read -r cf_mb cf_s _ <<<"${got[cp_full]}"
  printf '| %s | partial catch-up, plaintext | %s | %s | %s | %s | %s of cp | %s | %s |\n' \
    "$round" "$p_mb" "$p_s" "$(mbs "$p_mb" "$p_s")" "$p_kind" "$(ratio "$p_mb" "$p_s" "$cp_mb" "$cp_s")" \
    "$p_cpu" "$p_flt"
  printf '| %s | cp + fsync of the %s files it covers | %s | %s | %s | | reference | | |\n' \
    "$round" "${#part_files[@]}" "$cp_mb" "$cp_s" "$(mbs "$cp_mb" "$cp_s")"
  printf '| %s | partial catch-up, TLS | %s | %s | %s | %s | %s of cp, %s of plaintext | %s | %s |\n' \
    "$round" "$t_mb" "$t_s" "$(mbs "$t_mb" "$t_s")" "$t_kind" \
    "$(ratio "$t_mb" "$t_s" "$cp_mb" "$cp_s")" "$(ratio "$t_mb" "$t_s" "$p_mb" "$p_s")" "$t_cpu" "$t_flt"
  printf '| %s | full resync, plaintext | %s | %s | %s | %s | %s of cp | %s | %s |\n' \
    "$round" "$f_mb" "$f_s" "$(mbs "$f_mb" "$f_s")" "$f_kind" "$(ratio "$f_mb" "$f_s" "$cf_mb" "$cf_s")" \
    "$f_cpu" "$f_flt"
  printf '| %s | cp + fsync of all %s segment files | %s | %s | %s | | reference | | |\n' \
    "$round" "${#all_files[@]}" "$cf_mb" "$cf_s" "$(mbs "$cf_mb" "$cf_s")"
done
echo
echo "Catch-up MB: the log bytes the replica lacked (master end - its end), timed from the replica's"
echo "process start until its durable (fsynced) offset reached the master's end. cp MB: the sizes of"
echo "the files copied (whole segments, headers included). Both read the master's files from the page cache."
echo "Replica CPU s and minor faults: from /proc/PID/stat when the catch-up ended (process start included)."
master_down
bench_env
