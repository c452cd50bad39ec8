// common: pieces shared by `ringmail-blast send` and `ringmail-blast sink`.
//
// Contract
//   - The checksum header is "X-Blast-Checksum: <16 lower-case hex digits>",
//     the FNV-1a 64-bit hash of the message body: every byte after the first
//     CRLFCRLF (the header/body separator), as the receiver sees it after
//     dot-unstuffing (RFC 5321 §4.5.2) or verbatim for BDAT. FNV-1a is a
//     streaming hash, so the sender caches the state after a body prefix that
//     several messages share and hashes only the part that differs.
//   - latency_histogram: log-linear buckets over microseconds (64 sub-buckets
//     per power of two: ≤ 1.6 % relative error), fixed size, no allocation
//     per sample. One writer (a shard thread); readers on other threads get
//     approximate live values through relaxed atomics.
//   - Addresses: both tools talk to loopback only (127.0.0.0/8, ::1); every
//     address given on the command line is checked with require_loopback().
#pragma once

#include <atomic>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/net_address.h"

namespace ringmail::blast {

inline constexpr uint64_t fnv_offset = 0xcbf29ce484222325ULL;
inline constexpr uint64_t fnv_prime = 0x100000001b3ULL;

inline uint64_t fnv1a(uint64_t h, std::string_view bytes) {
    for (unsigned char c : bytes) {
        h ^= c;
        h *= fnv_prime;
    }
    return h;
}

inline constexpr std::string_view checksum_header = "X-Blast-Checksum";

// Single-writer counter readable from other threads (no lock prefix on x86).
struct counter {
    std::atomic<uint64_t> v{0};
    void add(uint64_t n = 1) { v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
    uint64_t get() const { return v.load(std::memory_order_relaxed); }
};

class latency_histogram {
public:
    static constexpr unsigned sub_bits = 6;
    static constexpr unsigned sub = 1u << sub_bits;
    static constexpr unsigned buckets = 40 * sub;  // up to ~2^40 µs

    void record_us(uint64_t us) { _b[index(us)].add(); }
    uint64_t count() const {
        uint64_t n = 0;
        for (const auto& c : _b) n += c.get();
        return n;
    }
    // Adds this histogram's counts to `into` (index-aligned).
    void add_to(std::vector<uint64_t>& into) const {
        into.resize(buckets, 0);
        for (unsigned i = 0; i < buckets; ++i) into[i] += _b[i].get();
    }
    // Percentile (0..100) in milliseconds over merged counts; 0 when empty.
    static double percentile_ms(const std::vector<uint64_t>& counts, double p) {
        uint64_t total = 0;
        for (uint64_t c : counts) total += c;
        if (total == 0) return 0.0;
        uint64_t rank = static_cast<uint64_t>(p / 100.0 * double(total) + 0.5);
        if (rank == 0) rank = 1;
        uint64_t seen = 0;
        for (unsigned i = 0; i < counts.size(); ++i) {
            seen += counts[i];
            if (seen >= rank) return double(upper(i)) / 1000.0;
        }
        return double(upper(buckets - 1)) / 1000.0;
    }

private:
    static unsigned index(uint64_t v) {
        if (v < sub) return static_cast<unsigned>(v);
        unsigned msb = 63 - static_cast<unsigned>(__builtin_clzll(v));
        unsigned shift = msb - sub_bits;
        unsigned i = (shift + 1) * sub + static_cast<unsigned>((v >> shift) & (sub - 1));
        return i < buckets ? i : buckets - 1;
    }
    // Upper bound (µs) of bucket i.
    static uint64_t upper(unsigned i) {
        if (i < sub) return i;
        unsigned shift = i / sub - 1;
        uint64_t base = (uint64_t(sub) | (i % sub)) << shift;
        return base + (uint64_t(1) << shift) - 1;
    }
    std::array<counter, buckets> _b{};
};

// Throws std::runtime_error unless `text` is a numeric loopback host:port.
inline net::socket_address require_loopback(std::string_view text, std::string_view what) {
    auto a = net::parse_socket_address(text);
    if (!a) {
        throw std::runtime_error(std::string(what) + " '" + std::string(text) +
                                 "': " + std::string(net::describe(a.error())));
    }
    static const auto v4 = net::parse_cidr("127.0.0.0/8").value();
    static const auto v6 = net::parse_cidr("::1/128").value();
    if (!v4.contains(*a) && !v6.contains(*a)) {
        throw std::runtime_error(std::string(what) + " '" + std::string(text) +
                                 "': not a loopback address (ringmail-blast only uses 127.0.0.0/8 and ::1)");
    }
    if (a->is_v4_mapped()) {
        // [::ffff:127.x.y.z] is 127.x.y.z: an IPv6 socket could not bind or
        // reach it where IPv6 sockets are v6-only.
        std::string host = a->host_string();
        return *net::parse_socket_address(host.substr(host.rfind(':') + 1) + ":" + std::to_string(a->port()));
    }
    return *a;
}

// Splits "a,b,c" (empty items dropped).
inline std::vector<std::string> split_list(std::string_view s) {
    std::vector<std::string> out;
    while (!s.empty()) {
        size_t c = s.find(',');
        std::string_view item = s.substr(0, c);
        if (!item.empty()) out.emplace_back(item);
        if (c == std::string_view::npos) break;
        s.remove_prefix(c + 1);
    }
    return out;
}

// splitmix64: deterministic decisions from a seed.
inline uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

}  // namespace ringmail::blast
