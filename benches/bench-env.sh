#!/usr/bin/env bash
# What every benchmark prints beside its figures, and where its chart data
# goes: one copy, sourced by the bench scripts and run by the bench
# binaries (benches/common/machine.rs).
#
#   source benches/bench-env.sh; bench_env      (in a script)
#   benches/bench-env.sh                          (prints the same lines)
#
# bench_env prints, as `# `-comment lines: the machine (CPUs, model,
# memory, kernel), the load average, the date (UTC) and the commit. Call it
# again at the end of a long run: the load average then shows whether the
# machine stayed quiet.
#
# Chart data: bench_csv NAME prints the path of the CSV a script writes
# its figures to for chart NAME (docs/charts/data/NAME.csv, or
# $CHARTS_DIR/data/NAME.csv), and bench_charts regenerates the SVG charts
# from every CSV there (scripts/charts.py). CHARTS=0 leaves both alone
# (bench_csv then prints a scratch path), for smoke runs.
#
# bench_cpu_s PID prints the CPU seconds a process has used so far, for a
# server's CPU per request.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

bench_env() {
  local model mem
  model=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo 2>/dev/null | head -1)
  mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null)
  echo "# machine: $(nproc) CPUs, ${model:-unknown CPU}, ${mem:-unknown} RAM, $(uname -sr)"
  echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown) (1, 5, 15 min)"
  echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "# commit: $(git -C "$BENCH_ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
}

# CPU seconds (user + system, /proc/PID/stat fields 14 and 15) process PID
# has used so far: read around a load to get a server's CPU per request.
bench_cpu_s() { # PID
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# The date column of chart CSVs: the day and hour of the run.
bench_date() { date -u '+%Y-%m-%d %H:%M UTC'; }

bench_csv() { # NAME
  if [ "${CHARTS:-1}" = 0 ]; then
    mkdir -p "${TMPDIR:-/tmp}/kvstore-bench-charts"
    echo "${TMPDIR:-/tmp}/kvstore-bench-charts/$1.csv"
    return
  fi
  local dir=${CHARTS_DIR:-$BENCH_ROOT/docs/charts}/data
  mkdir -p "$dir"
  echo "$dir/$1.csv"
}

bench_charts() {
  [ "${CHARTS:-1}" = 0 ] && return 0
  python3 "$BENCH_ROOT/scripts/charts.py" "${CHARTS_DIR:-$BENCH_ROOT/docs/charts}"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  bench_env
fi
