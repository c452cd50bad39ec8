// micro_alloc: allocation counting for the micro-benchmarks.
//
// micro_alloc.cpp replaces the global operator new/delete of the
// ringmail_micro binary; every call to operator new (any form) bumps a
// counter. Benchmarks read it before and after the timed loop and report
// allocations per iteration as state.counters["allocs_per_op"].
#pragma once

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>

namespace ringmail::bench {

extern std::atomic<std::uint64_t> g_alloc_calls;

inline std::uint64_t alloc_calls() { return g_alloc_calls.load(std::memory_order_relaxed); }

// Sets allocs_per_op = (allocations since `start`) / iterations.
inline void report_allocs(benchmark::State& state, std::uint64_t start) {
    const std::uint64_t n = alloc_calls() - start;
    state.counters["allocs_per_op"] = benchmark::Counter(
        static_cast<double>(n), benchmark::Counter::kAvgIterations);
}

}  // namespace ringmail::bench
