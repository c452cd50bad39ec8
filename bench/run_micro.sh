#!/usr/bin/env bash
# run_micro.sh: builds ringmail (release) and runs the Google Benchmark
# micro-benchmarks (bench/micro_*.cpp -> ringmail_micro).
#
#   bash bench/run_micro.sh                              # everything, < 1 minute
#   bash bench/run_micro.sh --benchmark_filter=spool     # extra args go to ringmail_micro
#   BUILD_DIR=build-bench MIN_TIME=0.5 bash bench/run_micro.sh
#
# Prints the console table and writes JSON to bench/results/micro-<UTC date>.json.
# Benchmarks print numbers; they are not tests and never fail on "slow".
# The spool benchmark creates /tmp/ringmail-micro-spool-XXXXXX directories
# (one LMDB spool each, 8 GiB map, sparse) and removes them before exiting.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build_dir=${BUILD_DIR:-build-bench}
min_time=${MIN_TIME:-0.2}
case "$build_dir" in /*) ;; *) build_dir="$root/$build_dir" ;; esac

if [[ ! -f "$build_dir/build.ninja" ]]; then
    meson setup "$build_dir" "$root" -Dbuildtype=release -Dbench=enabled
else
    meson configure "$build_dir" -Dbuildtype=release -Dbench=enabled >/dev/null
fi
ninja -C "$build_dir" bench/ringmail_micro

results="$root/bench/results"
mkdir -p "$results"
out="$results/micro-$(date -u +%Y%m%dT%H%M%SZ).json"

# The numbers move with other work on the machine: say how busy it was.
read -r l1 l5 _ < /proc/loadavg
echo "load average before the run: $l1 (1 min), $l5 (5 min) on $(nproc) CPUs"
if awk -v l="$l1" -v n="$(nproc)" 'BEGIN { exit !(l > 0.5 * n) }'; then
    echo "WARNING: the machine is busy; CPU-bound results are per CPU-second (the"
    echo "         'CPU' column), the spool results are wall time and include waiting."
fi

cmd=("$build_dir/bench/ringmail_micro"
     "--benchmark_min_time=$min_time"
     "--benchmark_out=$out" "--benchmark_out_format=json"
     "--benchmark_counters_tabular=false"
     "$@")
echo "+ ${cmd[*]}"
"${cmd[@]}"
echo
echo "JSON: $out"
