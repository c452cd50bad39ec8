// connection_limiter: daemon-wide caps on concurrent connections, in total and
// per client IP, shared by all shards without locks.
//
// Per-IP counts live in a fixed table of atomic counters indexed by a hash of
// the address: two addresses that collide share a counter, which can only make
// the limit stricter, never looser. Touched once per connection, not per
// message.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string_view>

#include "engine/net_address.h"

namespace ringmail::engine {

class connection_limiter {
public:
    enum class verdict { ok, total_exceeded, per_ip_exceeded };

    void set_limits(unsigned max_total, unsigned max_per_ip) {
        _max_total.store(max_total, std::memory_order_relaxed);
        _max_per_ip.store(max_per_ip, std::memory_order_relaxed);
    }

    // On ok the caller must call leave() with the same address when done.
    verdict enter(const net::socket_address& peer) {
        unsigned total = _total.fetch_add(1, std::memory_order_relaxed) + 1;
        auto& slot = _per_ip[bucket(peer)];
        unsigned ip = slot.fetch_add(1, std::memory_order_relaxed) + 1;
        unsigned max_total = _max_total.load(std::memory_order_relaxed);
        unsigned max_ip = _max_per_ip.load(std::memory_order_relaxed);
        verdict v = verdict::ok;
        if (max_total != 0 && total > max_total) v = verdict::total_exceeded;
        else if (max_ip != 0 && ip > max_ip) v = verdict::per_ip_exceeded;
        if (v != verdict::ok) leave(peer);
        return v;
    }
    void leave(const net::socket_address& peer) {
        _total.fetch_sub(1, std::memory_order_relaxed);
        _per_ip[bucket(peer)].fetch_sub(1, std::memory_order_relaxed);
    }
    unsigned total() const { return _total.load(std::memory_order_relaxed); }

private:
    static constexpr size_t buckets = 4096;
    static size_t bucket(const net::socket_address& peer) {
        std::string_view host;
        const sockaddr* sa = peer.sockaddr_ptr();
        if (sa->sa_family == AF_INET) {
            auto* in = reinterpret_cast<const sockaddr_in*>(sa);
            host = {reinterpret_cast<const char*>(&in->sin_addr), sizeof in->sin_addr};
        } else if (sa->sa_family == AF_INET6) {
            auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
            // IPv4-mapped addresses count with their IPv4 form.
            size_t off = peer.is_v4_mapped() ? 12 : 0;
            host = {reinterpret_cast<const char*>(&in6->sin6_addr) + off, sizeof in6->sin6_addr - off};
        }
        return std::hash<std::string_view>{}(host) % buckets;
    }

    std::atomic<unsigned> _total{0};
    std::atomic<unsigned> _max_total{0}, _max_per_ip{0};
    std::atomic<unsigned> _per_ip[buckets]{};
};

}  // namespace ringmail::engine
