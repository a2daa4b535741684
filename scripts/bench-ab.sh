#!/usr/bin/env bash
# Two kvstore builds under the same RESP load, alternating: which one does
# less work per request. `make bench-ab A=path/to/kvstore B=path/to/kvstore`.
#
# Each round starts each binary in turn (the order alternates every round)
# on a fresh data directory with `--durability $DURABILITY`, writes keys with
# one pipelined SET run, then runs redis-benchmark (50 connections, 100-byte
# values, 1 M-key space) for SET and GET at pipeline 1 and 16, reading the
# server's CPU time (user + system, /proc) around each test. It prints every
# round, then per test the medians of each binary's requests/s and CPU µs per
# request and the median of the same-round ratios B/A: on a shared machine
# the ratio of two runs taken seconds apart is steadier than either figure.
#
# LOAD=binary runs the same tests over the binary protocol instead, with
# B's `kvstore bench` as the load generator for both builds (PUT for SET).
#
# MIXED=1 adds, after those tests, reads beside writes: 3 x N1 -P 1 SETs
# (50 connections) with N1 / 2 GETs (10 connections) started half a second
# into them; per build the SETs/s, the GETs/s and the GETs' p50 latency,
# and the server CPU per request of both together. (Under `always` a
# connection thread runs its own group commits when it has served only
# writes: this shows what the reads beside them pay.)
#
# Knobs: ROUNDS (10), DURABILITY (never), N1 (100000 requests at -P 1),
# N16 (1000000 at -P 16), LOAD (resp or binary), MIXED (0). Needs
# redis-benchmark and redis-cli (make deps).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/bench-env.sh
source benches/bench-env.sh

die() { echo "bench-ab: $*" >&2; exit 1; }
A=${A:-}; B=${B:-}
[[ -x $A && -x $B ]] || die "give two kvstore binaries: make bench-ab A=path B=path"
ROUNDS=${ROUNDS:-10}
DURABILITY=${DURABILITY:-never}
N1=${N1:-100000}
N16=${N16:-1000000}
LOAD=${LOAD:-resp}
MIXED=${MIXED:-0}
[[ $LOAD == resp || $LOAD == binary ]] || die "LOAD is resp or binary, not $LOAD"
[[ $MIXED == 0 || $LOAD == resp ]] || die "MIXED=1 runs over RESP only"
for tool in redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || die "$tool not found (make deps installs it)"
done

work=$(mktemp -d)
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start() { # binary name -> sets PID, PORT
  local dir=$work/$2
  rm -rf "$dir"; mkdir -p "$dir"
  "$1" serve --data-dir "$dir/data" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --resp-listen 127.0.0.1:0 --port-file "$dir/ports" --durability "$DURABILITY" >"$dir/log" 2>&1 &
  PID=$!
  PORT=
  for _ in $(seq 1 200); do
    PORT=$(sed -n 's/^resp=.*:\([0-9]*\)$/\1/p' "$dir/ports" 2>/dev/null || true)
    BPORT=$(sed -n 's/^listen=.*:\([0-9]*\)$/\1/p' "$dir/ports" 2>/dev/null || true)
    [[ -n $PORT && -n $BPORT ]] && redis-cli -p "$PORT" ping >/dev/null 2>&1 && return
    sleep 0.05
  done
  die "$1 did not answer PING within 10 s (log: $dir/log)"
}

load() { # test pipeline n -> the load generator's summary lines
  if [[ $LOAD == binary ]]; then
    local t=$1; [[ $t == set ]] && t=put
    "$B" bench --addr "127.0.0.1:$BPORT" -t "$t" -P "$2" -n "$3" -r 1000000 -d 100 -c 50 -q
  else
    redis-benchmark -p "$PORT" -t "$1" -P "$2" -n "$3" -r 1000000 -d 100 -c 50 -q
  fi
}

run_test() { # test pipeline n -> "rps us-per-request"
  local before after rps
  before=$(bench_cpu_s "$PID")
  rps=$(load "$1" "$2" "$3" 2>/dev/null | tr '\r' '\n' \
    | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1)
  after=$(bench_cpu_s "$PID")
  [[ -n $rps ]] || die "redis-benchmark -t $1 -P $2 gave no figure"
  awk -v a="$before" -v b="$after" -v n="$3" -v r="$rps" \
    'BEGIN { printf "%.0f %.2f", r, (b - a) * 1e6 / n }'
}

# Reads beside writes -> "set-rps get-rps get-p50-ms us-per-request"
run_mixed() {
  local before after sets gets writer
  before=$(bench_cpu_s "$PID")
  redis-benchmark -p "$PORT" -t set -n $((N1 * 3)) -r 1000000 -d 100 -c 50 -q \
    >"$work/mixed-sets" 2>&1 &
  writer=$!
  sleep 0.5
  gets=$(redis-benchmark -p "$PORT" -t get -n $((N1 / 2)) -r 1000000 -d 100 -c 10 -q 2>/dev/null \
    | tr '\r' '\n' | sed -n 's/.*: \([0-9.]*\) requests per second, p50=\([0-9.]*\).*/\1 \2/p' | tail -1)
  kill -0 "$writer" 2>/dev/null || die "the SETs ended before the GETs: raise N1"
  wait "$writer"
  after=$(bench_cpu_s "$PID")
  sets=$(tr '\r' '\n' <"$work/mixed-sets" | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1)
  [[ -n $sets && -n $gets ]] || die "redis-benchmark gave no figure for reads beside writes"
  awk -v a="$before" -v b="$after" -v n=$((N1 * 3 + N1 / 2)) -v s="$sets" -v g="$gets" \
    'BEGIN { split(g, x, " "); printf "%.0f %.0f %.3f %.2f", s, x[1], x[2], (b - a) * 1e6 / n }'
}

bench_env
echo "# A: $A"
echo "# B: $B"
generator="redis-benchmark"; [[ $LOAD == binary ]] && generator="kvstore bench (B's)"
echo "# $ROUNDS rounds, --durability $DURABILITY, $generator -c 50 -d 100 -r 1000000, N = $N1 at -P 1, $N16 at -P 16"
rows=$work/rows
echo "round build test pipeline rps us_per_request"
for round in $(seq 1 "$ROUNDS"); do
  order="A B"; (( round % 2 )) || order="B A"
  for build in $order; do
    bin=$A; [[ $build == B ]] && bin=$B
    start "$bin" "$build"
    redis-benchmark -p "$PORT" -t set -P 16 -n 200000 -r 1000000 -d 100 -c 50 -q >/dev/null 2>&1
    for spec in "set 1 $N1" "get 1 $N1" "set 16 $N16" "get 16 $N16"; do
      read -r test pipeline n <<<"$spec"
      echo "$round $build $test $pipeline $(run_test "$test" "$pipeline" "$n")" | tee -a "$rows"
    done
    if [[ $MIXED == 1 ]]; then
      echo "$round $build mixed 1 $(run_mixed)" | tee -a "$rows"
    fi
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  done
done

echo
echo "| test | -P | A rps | B rps | B/A rps | A µs/req | B µs/req | B/A µs/req |"
echo "|---|---|---|---|---|---|---|---|"
for spec in "set 1" "get 1" "set 16" "get 16"; do
  read -r test pipeline <<<"$spec"
  awk -v t="$test" -v p="$pipeline" '
    function median(v, n,   i, j, x) {
      for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    $3 == t && $4 == p { rps[$2, $1] = $5; us[$2, $1] = $6; rounds[$1] = 1 }
    END {
      for (r in rounds) {
        n++; ar[n] = rps["A", r]; br[n] = rps["B", r]; au[n] = us["A", r]; bu[n] = us["B", r]
        rr[n] = rps["B", r] / rps["A", r]; ru[n] = us["B", r] / us["A", r]
      }
      printf "| %s | %s | %.0f | %.0f | %.3f | %.2f | %.2f | %.3f |\n", toupper(t), p,
        median(ar, n), median(br, n), median(rr, n), median(au, n), median(bu, n), median(ru, n)
    }' "$rows"
done
echo "(medians over the rounds; B/A: median of the same-round ratios)"
if [[ $MIXED == 1 ]]; then
  echo
  echo "Reads beside writes: $((N1 * 3)) SETs -P 1 (50 connections), $((N1 / 2)) GETs (10 connections) during them"
  echo
  echo "| figure | A | B | B/A |"
  echo "|---|---|---|---|"
  awk '
    function median(v, n,   i, j, x) {
      for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    $3 == "mixed" { for (f = 5; f <= 8; f++) val[$2, $1, f] = $f; rounds[$1] = 1 }
    END {
      split("SETs/s,GETs/s,GET p50 ms,CPU us per request", name, ",")
      for (f = 5; f <= 8; f++) {
        n = 0
        for (r in rounds) { n++; a[n] = val["A", r, f]; b[n] = val["B", r, f]; q[n] = val["B", r, f] / val["A", r, f] }
        printf "| %s | %s | %s | %.3f |\n", name[f - 4], median(a, n), median(b, n), median(q, n)
      }
    }' "$rows"
fi
bench_env
