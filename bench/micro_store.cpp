// Micro-benchmarks for the store: envelope record encode/decode and the
// durable LMDB group commit (spool::apply, fsync on every commit).
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "bench/micro_alloc.h"
#include "store/envelope.h"
#include "store/spool.h"

namespace {

using namespace ringmail::store;
using ringmail::bench::alloc_calls;
using ringmail::bench::report_allocs;

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "ringmail_micro: %s\n", what);
    std::abort();
}

envelope make_envelope(int recipients) {
    envelope env;
    env.id = 0x0123456789abcdefULL;
    env.received_at = 1'764'000'000;
    env.client_address = "203.0.113.57";
    env.helo = "mail-out-17.sender.example.org";
    env.sender = "bounces+123456-abcd-user=example.net@sender.example.org";
    env.size = 4096;
    env.body = body_type::eight_bit_mime;
    env.ret = dsn_ret::hdrs;
    env.envid = "QQ314159";
    for (int i = 0; i < recipients; ++i) {
        recipient r;
        r.address = "recipient" + std::to_string(i) + ".name@example.net";
        r.orcpt = "rfc822;" + r.address;
        r.notify = notify_success | notify_failure;
        env.recipients.push_back(std::move(r));
    }
    return env;
}

// ---- 4. envelope records --------------------------------------------------

void BM_envelope_encode(benchmark::State& state) {
    const envelope env = make_envelope(static_cast<int>(state.range(0)));
    std::string out;
    out.reserve(encoded_size(env));  // reused buffer, as the commit path does
    const std::uint64_t a0 = alloc_calls();
    for (auto _ : state) {
        out.clear();
        encode(env, out);
        benchmark::DoNotOptimize(out.data());
    }
    report_allocs(state, a0);
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * out.size()));
    state.counters["record_bytes"] = static_cast<double>(out.size());
}
BENCHMARK(BM_envelope_encode)->ArgName("rcpts")->Arg(1)->Arg(10);

void BM_envelope_decode(benchmark::State& state) {
    const envelope env = make_envelope(static_cast<int>(state.range(0)));
    std::string rec;
    encode(env, rec);
    const std::uint64_t a0 = alloc_calls();
    for (auto _ : state) {
        auto r = decode(rec);
        if (!r) die("envelope did not decode");
        benchmark::DoNotOptimize(r);
    }
    report_allocs(state, a0);
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * rec.size()));
}
BENCHMARK(BM_envelope_decode)->ArgName("rcpts")->Arg(1)->Arg(10);

// ---- 5. LMDB group commit -------------------------------------------------

constexpr std::size_t k_map_size = 8ULL << 30;  // 8 GiB
constexpr std::size_t k_message_bytes = 4096;

// Temp directories made by this process; removed at exit (and after each
// benchmark), also if a benchmark aborts the run through exit().
struct temp_dirs {
    std::vector<std::string> dirs;
    ~temp_dirs() {
        for (const auto& d : dirs) {
            std::error_code ec;
            std::filesystem::remove_all(d, ec);
        }
    }
    std::string make() {
        char tmpl[] = "/tmp/ringmail-micro-spool-XXXXXX";
        if (mkdtemp(tmpl) == nullptr) die("mkdtemp failed");
        dirs.emplace_back(tmpl);
        return tmpl;
    }
};
temp_dirs g_temp_dirs;

// Each iteration = ONE spool::apply() of `batch` puts (4 KiB body + 1-rcpt
// envelope each), i.e. one write transaction and one fsync'd commit. The
// messages are removed again in an untimed apply() so the spool stays small.
void BM_spool_apply_put_batch(benchmark::State& state) {
    const std::size_t batch = static_cast<std::size_t>(state.range(0));
    const std::string dir = g_temp_dirs.make();
    {
        auto opened = spool::open(dir, k_map_size);
        if (!opened) die("spool::open failed");
        spool sp = std::move(*opened);

        envelope env = make_envelope(1);
        std::string record;
        encode(env, record);
        const std::string body(k_message_bytes, 'x');
        const std::string_view body_view = body;
        std::vector<spool_op> puts(batch), removes(batch);
        std::uint64_t next_id = 1;

        for (auto _ : state) {
            for (std::size_t i = 0; i < batch; ++i) {
                puts[i] = spool_op{spool_op::kind::put, next_id + i, record,
                                   std::span<const std::string_view>(&body_view, 1)};
            }
            auto r = sp.apply(puts);
            if (!r) die(to_string(r.error()));

            state.PauseTiming();
            for (std::size_t i = 0; i < batch; ++i)
                removes[i] = spool_op{spool_op::kind::remove, next_id + i, {}, {}};
            auto rr = sp.apply(removes);
            if (!rr) die(to_string(rr.error()));
            next_id += batch;
            state.ResumeTiming();
        }
        state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
        state.SetBytesProcessed(
            static_cast<std::int64_t>(state.iterations() * batch * k_message_bytes));
        state.counters["commits_per_s"] =
            benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
}
BENCHMARK(BM_spool_apply_put_batch)
    ->ArgName("batch")->Arg(1)->Arg(10)->Arg(100)->Arg(1000)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();  // the cost is the fsync wait, not CPU

}  // namespace
