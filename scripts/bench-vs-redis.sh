#!/usr/bin/env bash
# kvstore's RESP listener against Redis, same machine, same load generator:
#
#   redis-benchmark -t set (then -t get) -n $N -r 1000000 -d 100 -c 50 -P {1,16}
#
# in three durability pairings (Redis AOF appendfsync always vs kvstore
# --durability always; appendfsync everysec vs --durability interval with
# --fsync-interval-ms 1000; Redis without persistence vs --durability
# never). ROUNDS rounds (default 3): each round runs
# both servers at each depth, and the server that goes first alternates
# from round to round (and from depth to depth), so drift in the machine's
# speed weighs on both. Between the two, the same load goes to kvstore's
# binary protocol with `kvstore bench` (same connections, pipeline, value
# size and key space; its PUT stands for SET). Prints one table: each
# round's ratio kvstore/Redis and the median of those same-round ratios,
# and the binary protocol's median ratio beside it, with the machine, load
# average and date (benches/bench-env.sh); writes the rounds to the chart
# data (docs/charts/data/vs-redis.csv) and redraws the charts.
#
# Beside throughput it reports each server's CPU time per request (user +
# system from /proc, read around each test), the figure that says which
# server does less work, and the load generator's CPU time as a share of
# one CPU over its run (user + system of the redis-benchmark process, from
# the shell's `time`): redis-benchmark is one thread, so near 100 % it is
# the bottleneck and the throughput measures the client, whichever server
# answers (at -P 1 most of that time is the client's own system calls on
# loopback TCP, which no server can make cheaper). And, for
# the `always` pairing, the fsync cap: at most 50 / (fdatasync latency of a
# round of 50 writes) SETs a second for a server that acknowledges only
# fsynced writes, measured with dd on the same disk each round; the SET at
# -P 1 is held to min(1.1x Redis, 0.95x that cap).
#
#   N=1000000 scripts/bench-vs-redis.sh        (make bench-vs-redis)
#   TTL=60 N=1000000 scripts/bench-vs-redis.sh (make bench-vs-redis-ttl)
#
# With TTL set, the SET test is `SET key:__rand_int__ <100 bytes> EX $TTL`
# and the GET test reads those keys (`GET key:__rand_int__`): the expiring
# writes, whose ratios should match the plain ones.
#
# Env: N (requests per test, default 1000000), ROUNDS (default 3),
# PAIRINGS (default "always everysec never"), TTL
# (seconds; unset: plain SET), CHARTS=0 (leave the charts alone), KVSTORE_BIN (default $CARGO_TARGET_DIR or target,
# /release/kvstore), OUT (raw CSV dir, kept).
# Needs redis-server and redis-tools (make deps installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/bench-env.sh
source benches/bench-env.sh

N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
PAIRINGS=${PAIRINGS:-always everysec never}
TTL=${TTL:-}
BIN=${KVSTORE_BIN:-${CARGO_TARGET_DIR:-target}/release/kvstore}
die() { echo "bench-vs-redis: $*" >&2; exit 1; }
[[ -z $TTL || $TTL =~ ^[1-9][0-9]*$ ]] || die "TTL must be a whole number of seconds, not $TTL"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive whole number, not $ROUNDS"
for pairing in $PAIRINGS; do
  [[ $pairing =~ ^(always|everysec|never)$ ]] || die "PAIRINGS takes always, everysec and never, not $pairing"
done

[[ -x $BIN ]] || die "$BIN not built (make bench-vs-redis builds it)"
for tool in redis-server redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || die "$tool not found: run \`make deps\`"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-vs-redis.XXXXXX")
OUT=${OUT:-$work/results}
mkdir -p "$OUT"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work/redis-"* "$work/kv-"*
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ping() { # port
  for _ in $(seq 1 200); do
    [[ $(redis-cli -p "$1" PING 2>/dev/null) == PONG ]] && return 0
    sleep 0.05
  done
  die "nothing answers PING on port $1"
}

start_redis() { # name appendfsync|none -> sets REDIS_PORT, REDIS_PID
  local dir=$work/redis-$1
  mkdir -p "$dir"
  REDIS_PORT=$(free_port)
  local aof=(--appendonly yes --appendfsync "$2")
  [[ $2 != none ]] || aof=(--appendonly no)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" --save '' \
    "${aof[@]}" --daemonize no --logfile "$dir/log" &
  REDIS_PID=$!
  pids+=("$REDIS_PID")
  wait_ping "$REDIS_PORT"
}

start_kvstore() { # name durability-flags... -> sets KV_PORT, KV_ADDR, KV_PID
  local name=$1; shift
  local dir=$work/kv-$name
  mkdir -p "$dir"
  "$BIN" serve --data-dir "$dir/data" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --resp-listen 127.0.0.1:0 --port-file "$dir/ports" "$@" >"$dir/log" 2>&1 &
  KV_PID=$!
  pids+=("$KV_PID")
  for _ in $(seq 1 200); do [[ -s $dir/ports ]] && grep -q '^resp=' "$dir/ports" && break; sleep 0.05; done
  KV_PORT=$(sed -n 's/^resp=.*:\([0-9]*\)$/\1/p' "$dir/ports")
  [[ -n $KV_PORT ]] || die "kvstore did not write resp= to its port file"
  KV_ADDR=$(sed -n 's/^listen=//p' "$dir/ports")
  [[ -n $KV_ADDR ]] || die "kvstore did not write listen= to its port file"
  wait_ping "$KV_PORT"
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# CPU time (user + system) a process has used so far, in clock ticks.

bench() { # label server port P round server-pid
  local file=$OUT/$1-$2-P$4-r$5.csv cpu=$OUT/$1-$2-P$4-r$5.cpu
  echo "bench-vs-redis: round $5: $1 $2 -P $4 (N=$N${TTL:+, EX $TTL})" >&2
  # SET, then GET, each its own redis-benchmark run so that the server's
  # CPU time can be read around each: microseconds of server CPU per
  # request, a figure the load generator's own speed does not move.
  # A custom command's CSV row is named by its text: name them SET and GET
  # as -t does, so the table below reads both modes alike.
  local value
  value=$(printf '%0100d' 0)
  local common=(-p "$3" -n "$N" -r 1000000 -c 50 -P "$4" --csv)
  local set=(-t set -d 100) get=(-t get -d 100) before
  [[ -z $TTL ]] || set=(SET key:__rand_int__ "$value" EX "$TTL") get=(GET key:__rand_int__)
  : >"$cpu"
  : >"$cpu.gen"
  local out=$OUT/$1-$2-P$4-r$5.out
  before=$(bench_cpu_s "$6")
  generate "$out" "$cpu.gen" SET "${common[@]}" "${set[@]}"
  sed '2s/^"[^"]*"/"SET"/' "$out" >"$file"
  echo "SET $(per_request_us "$before" "$(bench_cpu_s "$6")")" >>"$cpu"
  before=$(bench_cpu_s "$6")
  generate "$out" "$cpu.gen" GET "${common[@]}" "${get[@]}"
  sed -n '2s/^"[^"]*"/"GET"/p' "$out" >>"$file"
  echo "GET $(per_request_us "$before" "$(bench_cpu_s "$6")")" >>"$cpu"
  rm -f "$out"
}
per_request_us() { # CPU-s-before CPU-s-after -> server CPU µs per request
  awk -v a="$1" -v b="$2" -v n="$N" 'BEGIN { printf "%.2f", (b - a) * 1e6 / n }'
}
# Runs redis-benchmark with ARGS, its output to OUT, and appends
# "TEST <percent>" to GEN: its CPU time (user + system) as a share of one
# CPU over the run.
generate() { # OUT GEN TEST ARGS...
  local TIMEFORMAT='%U %S %R' times
  times=$( { time redis-benchmark "${@:4}" >"$1" 2>&3; } 3>&2 2>&1 )
  awk -v t="$3" '{ printf "%s %.0f\n", t, ($3 > 0 ? 100 * ($1 + $2) / $3 : 0) }' <<<"$times" >>"$2"
}

# What fsync allows a server that acknowledges a SET only once it is
# fdatasynced: with 50 clients waiting, at most 50 writes share one
# fdatasync, so it serves at most 50 / (fdatasync latency) SETs a second.
# The latency is that of appending one such round (50 records of a 16-byte
# key and a 100-byte value, 133 bytes each in kvstore's log) and
# fdatasyncing it, on the disk both servers write to, in this round.
fsync_cap() { # round -> prints the cap in requests/s
  local file=$work/fsync-cap count=1000 secs
  echo "bench-vs-redis: round $1: fdatasync latency of a 50-write round (dd oflag=dsync)" >&2
  secs=$(timeout 60 dd if=/dev/zero of="$file" bs=$((50 * 133)) count=$count oflag=dsync 2>&1 \
    | sed -n 's/.* copied, \([0-9.]*\) s,.*/\1/p')
  rm -f "$file"
  awk -v s="$secs" -v c="$count" 'BEGIN { if (s > 0) printf "%.0f", 50 * c / s; else print "n/a" }'
}

# The binary protocol under the same load: `kvstore bench`, whose summary
# lines read "PUT: N requests per second, p50=...".
binbench() { # label addr P round
  local file=$OUT/$1-binary-P$3-r$4.txt
  echo "bench-vs-redis: round $4: $1 kvstore binary protocol -P $3 (N=$N)" >&2
  [[ -z $TTL ]] || { : >"$file"; return; }
  "$BIN" bench --addr "$2" -q -c 50 -n "$N" -d 100 -r 1000000 -P "$3" -t put,get >"$file"
}

bench_env
for pairing in $PAIRINGS; do
  case $pairing in
    always)
      start_redis always always
      start_kvstore always --durability always ;;
    everysec)
      start_redis everysec everysec
      start_kvstore interval --durability interval --fsync-interval-ms 1000 ;;
    never)
      start_redis never none
      start_kvstore never --durability never ;;
  esac
  for round in $(seq 1 "$ROUNDS"); do
    [[ $pairing != always ]] || fsync_cap "$round" >"$OUT/fsync-cap-r$round.txt"
    for P in 1 16; do
      # Who goes first alternates each round, and between the two depths.
      if (( (round + P) % 2 == 0 )); then
        bench "$pairing" redis "$REDIS_PORT" "$P" "$round" "$REDIS_PID"
        binbench "$pairing" "$KV_ADDR" "$P" "$round"
        bench "$pairing" kvstore "$KV_PORT" "$P" "$round" "$KV_PID"
      else
        bench "$pairing" kvstore "$KV_PORT" "$P" "$round" "$KV_PID"
        binbench "$pairing" "$KV_ADDR" "$P" "$round"
        bench "$pairing" redis "$REDIS_PORT" "$P" "$round" "$REDIS_PID"
      fi
    done
  done
  stop "$REDIS_PID"; stop "$KV_PID"
done

rps() { # file test -> requests/s
  awk -F'","' -v t="$2" '{gsub(/"/,"",$1); gsub(/"/,"",$2)} $1==t {print $2}' "$1"
}
binrps() { # file SET|GET -> requests/s of kvstore bench's PUT or GET line
  local op=$2; [[ $op != SET ]] || op=PUT
  sed -n "s/^$op: \([0-9.]*\) requests per second.*/\1/p" "$1"
}
recorded() { sed -n "s/^$2 //p" "$1" 2>/dev/null; } # file SET|GET -> the figure bench recorded for that test (.cpu: server CPU µs/request; .cpu.gen: the generator's CPU %)
p50() { awk -F'","' -v t="$2" '{gsub(/"/,"",$1); gsub(/"/,"",$5)} $1==t {print $5}' "$1"; }
# median of the numbers on stdin, one a line
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { printf '%s\n' "$@" | grep -v '^n/a$' | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a ~ /^[0-9.]+$/) printf "%.2f", a / b; else print "n/a" }'; }

# The chart is of plain SET/GET; a TTL run keeps its rounds beside the raw CSVs.
if [[ -z $TTL ]]; then csv=$(bench_csv vs-redis); else csv=$OUT/vs-redis-ttl.csv; fi
when=$(bench_date)
echo "date,pairing,pipeline,test,round,redis_rps,kvstore_rps,ratio,binary_rps,binary_ratio,redis_cpu_us,kvstore_cpu_us,redis_client_cpu_pct,kvstore_client_cpu_pct" >"$csv"
echo
echo "redis-benchmark ${TTL:+(SET ... EX $TTL, GET) }-t set, then -t get, -n $N -r 1000000 -d 100 -c 50, $ROUNDS rounds; ratio = kvstore / Redis in the same round"
bench_env
row='| %-34s | %-3s | %-4s | %-22s | %6s | %12s | %12s | %9s | %9s | %8s | %8s | %9s | %12s | %6s |\n'
# shellcheck disable=SC2059 # the format is the one above
printf "$row" "pairing" "P" "test" "ratio per round" "median" "Redis rps" "kvstore rps" "Redis p50" "kv p50" "Redis us" "kv us" "client %" "binary rps" "binary"
printf '|%s|\n' "------------------------------------|-----|------|------------------------|--------|--------------|--------------|-----------|-----------|----------|----------|-----------|--------------|-------"
for pairing in $PAIRINGS; do
  case $pairing in
    always) label="appendfsync always / always"; short=always ;;
    everysec) label="appendfsync everysec / interval 1s"; short=interval ;;
    never) label="no persistence / never"; short=never ;;
  esac
  for P in 1 16; do
    for t in SET GET; do
      ratios=() rs=() ks=() rps50=() kps50=() bs=() bratios=() rcpu=() kcpu=() rgen=() kgen=()
      for round in $(seq 1 "$ROUNDS"); do
        rf=$OUT/$pairing-redis-P$P-r$round.csv kf=$OUT/$pairing-kvstore-P$P-r$round.csv
        r=$(rps "$rf" "$t"); k=$(rps "$kf" "$t")
        ratios+=("$(ratio "$k" "$r")"); rs+=("$r"); ks+=("$k")
        rps50+=("$(p50 "$rf" "$t")"); kps50+=("$(p50 "$kf" "$t")")
        b=$(binrps "$OUT/$pairing-binary-P$P-r$round.txt" "$t"); b=${b:-n/a}
        bs+=("$b"); bratios+=("$(ratio "$b" "$r")")
        rc=$(recorded "${rf%.csv}.cpu" "$t"); kc=$(recorded "${kf%.csv}.cpu" "$t")
        rcpu+=("${rc:-n/a}"); kcpu+=("${kc:-n/a}")
        rg=$(recorded "${rf%.csv}.cpu.gen" "$t"); kg=$(recorded "${kf%.csv}.cpu.gen" "$t")
        rgen+=("${rg:-n/a}"); kgen+=("${kg:-n/a}")
        echo "$when,$short,$P,$t,$round,$r,$k,${ratios[-1]},${b/n\/a/},${bratios[-1]/n\/a/},$rc,$kc,$rg,$kg" >>"$csv"
      done
      # shellcheck disable=SC2059 # the format is the one above
      printf "$row" "$label" "$P" "$t" \
        "$(IFS=,; all="${ratios[*]}"; echo "${all//,/, }")" "$(med "${ratios[@]}")" \
        "$(med "${rs[@]}")" "$(med "${ks[@]}")" "$(med "${rps50[@]}")" "$(med "${kps50[@]}")" \
        "$(med "${rcpu[@]}")" "$(med "${kcpu[@]}")" "$(med "${rgen[@]}")/$(med "${kgen[@]}")" \
        "$(med "${bs[@]}")" "$(med "${bratios[@]}")"
    done
  done
done
echo "(Redis rps, kvstore rps and p50: medians over the rounds; Redis us, kv us: the server process's CPU time (user + system) per request, median over the rounds; client %: the load generator's CPU time as a share of one CPU, against Redis/against kvstore, medians over the rounds (near 100: redis-benchmark, one thread, is the bottleneck); binary: kvstore bench on the binary protocol, its rps and the median of its same-round ratios to Redis)"
if [[ " $PAIRINGS " == *" always "* ]]; then
  # The always SET at -P 1 is held to min(1.1x Redis, 0.95x the fsync cap).
  caps=() targets=() met=()
  for round in $(seq 1 "$ROUNDS"); do
    cap=$(cat "$OUT/fsync-cap-r$round.txt" 2>/dev/null); cap=${cap:-n/a}
    r=$(rps "$OUT/always-redis-P1-r$round.csv" SET); k=$(rps "$OUT/always-kvstore-P1-r$round.csv" SET)
    target=$(awk -v r="$r" -v c="$cap" 'BEGIN { t = 1.1 * r; if (c ~ /^[0-9.]+$/ && 0.95 * c < t) t = 0.95 * c; printf "%.0f", t }')
    caps+=("$cap"); targets+=("$target"); met+=("$(ratio "$k" "$target")")
  done
  echo "fsync cap (50 clients / fdatasync latency of a 50-write round, dd oflag=dsync on the same disk): $(IFS=,; all="${caps[*]}"; echo "${all//,/, }") rps per round"
  echo "always SET -P 1: target min(1.1x Redis, 0.95x cap) = $(IFS=,; all="${targets[*]}"; echo "${all//,/, }") rps; kvstore / target $(IFS=,; all="${met[*]}"; echo "${all//,/, }"), median $(med "${met[@]}")"
fi
echo "raw CSV: $OUT; rounds: $csv"
[[ -n $TTL ]] || bench_charts
