// Micro-benchmarks for the SMTP parsers: command lines, MAIL/RCPT arguments,
// DATA decoding (dot-unstuffing + bare CR/LF checks) and outbound
// dot-stuffing. They print numbers; they check nothing beyond aborting if an
// input that must parse does not (so a broken parser cannot look fast).
#include <benchmark/benchmark.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "bench/micro_alloc.h"
#include "protocols/smtp/address.h"
#include "protocols/smtp/command_parser.h"
#include "protocols/smtp/data_reader.h"
#include "protocols/smtp/dot_stuffing.h"

namespace {

using namespace ringmail::smtp;
using ringmail::bench::alloc_calls;
using ringmail::bench::report_allocs;

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "ringmail_micro: %s\n", what);
    std::abort();
}

// One pipelined transaction as a real client sends it (Postfix/Exim style).
constexpr std::string_view k_session =
    "EHLO mail-out-17.sender.example.org\r\n"
    "MAIL FROM:<bounces+123456-abcd-user=example.net@sender.example.org> SIZE=4096 BODY=8BITMIME\r\n"
    "RCPT TO:<alice.smith@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice.smith@example.net\r\n"
    "RCPT TO:<bob@example.net> NOTIFY=FAILURE,DELAY ORCPT=rfc822;bob@example.net\r\n"
    "DATA\r\n"
    "QUIT\r\n";
constexpr int k_session_commands = 6;

// ---- 1. command parsing -------------------------------------------------

// parse_command + parse_mail_from / parse_rcpt_to over the whole mix.
void BM_smtp_command_mix(benchmark::State& state) {
    const std::string buf(k_session);
    const std::uint64_t a0 = alloc_calls();
    for (auto _ : state) {
        std::string_view in = buf;
        while (!in.empty()) {
            command_parse c = parse_command(in);
            if (c.status != parse_status::complete) die("command mix did not parse");
            if (c.cmd == verb::mail) {
                auto m = parse_mail_from(c.argument);
                if (!m) die("MAIL FROM did not parse");
                benchmark::DoNotOptimize(m);
            } else if (c.cmd == verb::rcpt) {
                auto r = parse_rcpt_to(c.argument);
                if (!r) die("RCPT TO did not parse");
                benchmark::DoNotOptimize(r);
            }
            benchmark::DoNotOptimize(c);
            in.remove_prefix(c.consumed);
        }
    }
    report_allocs(state, a0);
    state.counters["allocs_per_op"] = benchmark::Counter(
        state.counters["allocs_per_op"].value / k_session_commands);
    state.SetItemsProcessed(state.iterations() * k_session_commands);
    state.SetLabel("items = commands; allocs_per_op per command");
}
BENCHMARK(BM_smtp_command_mix);

// parse_command alone (line framing + verb lookup), same mix.
void BM_smtp_parse_command_only(benchmark::State& state) {
    const std::string buf(k_session);
    const std::uint64_t a0 = alloc_calls();
    for (auto _ : state) {
        std::string_view in = buf;
        while (!in.empty()) {
            command_parse c = parse_command(in);
            benchmark::DoNotOptimize(c);
            in.remove_prefix(c.consumed);
        }
    }
    report_allocs(state, a0);
    state.counters["allocs_per_op"] = benchmark::Counter(
        state.counters["allocs_per_op"].value / k_session_commands);
    state.SetItemsProcessed(state.iterations() * k_session_commands);
    state.SetLabel("items = commands");
}
BENCHMARK(BM_smtp_parse_command_only);

void BM_smtp_parse_mail_from(benchmark::State& state) {
    const std::string arg =
        "FROM:<bounces+123456-abcd-user=example.net@sender.example.org> SIZE=4096 BODY=8BITMIME";
    const std::uint64_t a0 = alloc_calls();
    for (auto _ : state) {
        auto m = parse_mail_from(arg);
        benchmark::DoNotOptimize(m);
    }
    report_allocs(state, a0);
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_smtp_parse_mail_from);

void BM_smtp_parse_rcpt_to(benchmark::State& state) {
    const std::string arg =
        "TO:<alice.smith@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice.smith@example.net";
    const std::uint64_t a0 = alloc_calls();
    for (auto _ : state) {
        auto r = parse_rcpt_to(arg);
        benchmark::DoNotOptimize(r);
    }
    report_allocs(state, a0);
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_smtp_parse_rcpt_to);

// ---- message bodies ------------------------------------------------------

// A body of exactly `size` bytes (size >= 2) made of 78-character lines +
// CRLF (the last line shorter so the total is exact); ends in CRLF. With
// dots, EVERY line starts with '.' (the worst case for (un)stuffing).
std::string make_body(std::size_t size, bool dots) {
    std::string body;
    body.reserve(size);
    std::size_t line_no = 0;
    while (body.size() < size) {
        std::size_t room = size - body.size();
        std::size_t len = std::min<std::size_t>(78, room - 2);
        if (room - (len + 2) == 1) len -= 1;  // never leave 1 byte (no room for CRLF)
        for (std::size_t i = 0; i < len; ++i)
            body.push_back(static_cast<char>('a' + (i + line_no) % 26));
        if (dots && len > 0) body[body.size() - len] = '.';
        body += "\r\n";
        ++line_no;
    }
    if (body.size() != size) die("make_body size mismatch");
    return body;
}

// ---- 2. DATA decoding ----------------------------------------------------

constexpr std::size_t k_feed_buffer = 16 * 1024;

// Wire data (stuffed body + terminator) fed to data_reader in 16 KiB buffers,
// as the receive path hands them over. Bytes = wire bytes.
void BM_smtp_data_reader_feed(benchmark::State& state) {
    const std::size_t size = static_cast<std::size_t>(state.range(0));
    const bool dots = state.range(1) != 0;
    const std::string body = make_body(size, dots);
    const std::string wire = dot_stuff(body);
    data_reader reader;
    std::uint64_t sum = 0;
    const std::uint64_t a0 = alloc_calls();
    for (auto _ : state) {
        reader.reset();
        std::string_view in = wire;
        bool done = false;
        while (!in.empty() && !done) {
            std::string_view buf = in.substr(0, k_feed_buffer);
            data_feed_result r = reader.feed(buf, [&](std::string_view piece) {
                sum += piece.size();
            });
            done = r.done;
            in.remove_prefix(r.consumed);
        }
        if (!done || reader.content_bytes() != body.size()) die("data_reader did not round-trip");
        benchmark::DoNotOptimize(sum);
    }
    report_allocs(state, a0);
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * wire.size()));
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_smtp_data_reader_feed)
    ->ArgNames({"body", "dots"})
    ->Args({4096, 0})->Args({4096, 1})
    ->Args({1 << 20, 0})->Args({1 << 20, 1});

// BDAT path for comparison: flags only, same bodies.
void BM_smtp_check_chunk(benchmark::State& state) {
    const std::size_t size = static_cast<std::size_t>(state.range(0));
    const std::string body = make_body(size, false);
    for (auto _ : state) {
        chunk_state st;
        std::string_view in = body;
        while (!in.empty()) {
            check_chunk(in.substr(0, k_feed_buffer), st);
            in.remove_prefix(std::min(in.size(), k_feed_buffer));
        }
        finish_chunks(st);
        benchmark::DoNotOptimize(st);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_smtp_check_chunk)->ArgName("body")->Arg(4096)->Arg(1 << 20);

// ---- 3. outbound dot-stuffing ------------------------------------------

void BM_smtp_dot_stuff_segments(benchmark::State& state) {
    const std::size_t size = static_cast<std::size_t>(state.range(0));
    const bool dots = state.range(1) != 0;
    const std::string body = make_body(size, dots);
    std::vector<iovec> out;
    out.reserve(dots ? 2 * (size / 80 + 4) : 8);  // one vector per connection, capacity kept
    const std::uint64_t a0 = alloc_calls();
    for (auto _ : state) {
        out.clear();
        dot_stuff_segments(body, out);
        benchmark::DoNotOptimize(out.data());
    }
    report_allocs(state, a0);
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * body.size()));
    state.counters["iovecs"] = static_cast<double>(out.size());
}
BENCHMARK(BM_smtp_dot_stuff_segments)
    ->ArgNames({"body", "dots"})
    ->Args({4096, 0})->Args({4096, 1})
    ->Args({1 << 20, 0})->Args({1 << 20, 1});

}  // namespace
