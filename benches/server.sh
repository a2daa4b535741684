#!/usr/bin/env bash
# `make bench-server`: start a release node and load it with `kvstore bench`
# (100-byte values, 1 M key space, 50 connections, pipeline 16 then 1, put
# then get), once under --durability always and once under never. Then TLS
# against plaintext: two nodes under --durability never (so the figures
# are CPU, not fsync), one with a certificate (generated here with
# openssl), loaded alternately, plain then TLS, BENCH_TLS_ROUNDS times
# (default 3), at pipeline 16 and 1; the ratio TLS/plain is printed per
# line. The client encrypts too, on the same cores. Client and server share the
# machine. Figures go to stdout, with the machine, load average and date
# (benches/bench-env.sh); copy them into the "Server" section of
# docs/BENCHMARKS.md. The latency percentiles of the first part go to the
# chart data (docs/charts/data/latency.csv; CHARTS=0 leaves it alone) and
# the charts are redrawn.
#
# Knobs: BENCH_N16 / BENCH_N1 (requests per test at pipeline 16 / 1),
# BENCH_SKIP_DURABILITY=1 to run only the TLS comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/bench-env.sh
source benches/bench-env.sh

CARGO=${CARGO:-cargo}
N16=${BENCH_N16:-2000000}
N1=${BENCH_N1:-300000}

$CARGO build --release --bin kvstore >&2
BIN=${CARGO_TARGET_DIR:-target}/release/kvstore
[ -x "$BIN" ] || { echo "bench-server: $BIN was not built" >&2; exit 1; }

work=$(mktemp -d)
pid="" plain_pid="" tls_pid=""
cleanup() {
  for p in $pid $plain_pid $tls_pid; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "# kvstore bench-server"
bench_env

# start_node NAME FLAGS...: starts a node, sets $addr and $pid.
start_node() {
  local name=$1
  shift
  local ports="$work/ports-$name"
  "$BIN" serve --data-dir "$work/data-$name" --listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0 --port-file "$ports" "$@" \
    >"$work/server-$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    [ -f "$ports" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/server-$name.log" >&2; exit 1; }
    sleep 0.1
  done
  addr=$(sed -n 's/^listen=//p' "$ports")
  [ -n "$addr" ] || { echo "bench-server: no address in $ports" >&2; exit 1; }
}

stop_node() {
  kill -TERM "$1"
  wait "$1" || { echo "bench-server: server exited non-zero" >&2; exit 1; }
}

# latency_rows DURABILITY PIPELINE OUTPUT: chart rows from `bench -q` lines
# ("PUT: N requests per second, p50=A ms p99=B ms p99.9=C ms max=D ms").
latency_rows() {
  sed -n "s/^\([A-Z]*\): .* p50=\([0-9.]*\) ms p99=\([0-9.]*\) ms p99.9=\([0-9.]*\) ms max=\([0-9.]*\) ms.*/$when,$1,$2,\1,\2,\3,\4,\5/p" <<<"$3"
}

if [ "${BENCH_SKIP_DURABILITY:-0}" != 1 ]; then
  csv=$(bench_csv latency)
  when=$(bench_date)
  echo "date,durability,pipeline,op,p50_ms,p99_ms,p999_ms,max_ms" >"$csv"
  for durability in always never; do
    start_node "$durability" --durability "$durability"
    for pipeline in 16 1; do
      if [ "$pipeline" = 16 ]; then n=$N16; else n=$N1; fi
      echo "## durability=$durability pipeline=$pipeline (-c 50 -d 100 -r 1000000 -n $n)"
      out=$("$BIN" bench --addr "$addr" -q -c 50 -n "$n" -d 100 -r 1000000 -P "$pipeline" -t put,get)
      echo "$out"
      latency_rows "$durability" "$pipeline" "$out" >>"$csv"
    done
    stop_node "$pid"
    pid=""
  done
  echo "# latency chart data: $csv"
  bench_charts
fi

# TLS against plaintext.
command -v openssl >/dev/null || { echo "bench-server: openssl is needed for the TLS run" >&2; exit 1; }
pki="$work/pki"
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=kvstore bench CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$pki/key.pem" -out "$pki/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$pki/ext"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
  -CAcreateserial -days 2 -extfile "$pki/ext" -out "$pki/cert.pem" 2>/dev/null

start_node plain --durability never
plain_pid=$pid plain_addr=$addr
start_node tls --durability never --tls-cert "$pki/cert.pem" --tls-key "$pki/key.pem"
tls_pid=$pid tls_addr=$addr
pid=""
# rps TEST OUTPUT: the requests/s figure of one test line of `bench -q`.
rps() { sed -n "s/^$1: *\([0-9.]*\) requests per second.*/\1/p" <<<"$2" | head -1; }
for pipeline in 16 1; do
  if [ "$pipeline" = 16 ]; then n=$N16; else n=$N1; fi
  for round in $(seq "${BENCH_TLS_ROUNDS:-3}"); do
    plain=$("$BIN" bench --addr "$plain_addr" -q -c 50 -n "$n" -d 100 -r 1000000 -P "$pipeline" -t put,get)
    tls=$("$BIN" --tls-ca "$pki/ca.pem" bench --addr "$tls_addr" -q -c 50 -n "$n" -d 100 -r 1000000 -P "$pipeline" -t put,get)
    echo "## TLS vs plain, durability=never pipeline=$pipeline round $round (-c 50 -d 100 -r 1000000 -n $n)"
    for t in PUT GET; do
      p=$(rps "$t" "$plain") s=$(rps "$t" "$tls")
      printf '%-4s plain %12s  tls %12s  tls/plain %s\n' "$t" "$p" "$s" \
        "$(awk -v a="$s" -v b="$p" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')"
    done
  done
done
stop_node "$plain_pid"
plain_pid=""
stop_node "$tls_pid"
tls_pid=""
bench_env
