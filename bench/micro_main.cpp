// ringmail_micro entry point (Google Benchmark's standard main; libbenchmark_main
// has no pkg-config file on Debian 12, so it is spelled out here).
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
