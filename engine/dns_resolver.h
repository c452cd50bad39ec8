// dns_resolver: c-ares driven by the calling shard's io_uring.
//
// Contract:
//  - One resolver (one c-ares channel) per shard; created, used and destroyed
//    on that shard's thread, whose ring is this_ring(). No blocking, no threads.
//  - Each c-ares socket is watched with a one-shot IORING_OP_POLL_ADD, re-armed
//    after each readiness event and removed (POLL_REMOVE) when c-ares closes
//    the socket; readiness is handed to ares_process_fd(). c-ares timeouts run
//    on a ring timer computed from ares_timeout().
//  - query_mx()/query_a_aaaa() resume their caller after the ring's current CQE
//    batch (ring::post), never from inside c-ares, so a caller may start new
//    queries or destroy its own state freely.
//  - The resolver must outlive its pending queries (destroying it with queries
//    in flight completes them with `temporary`). Poll and timer completions
//    are heap objects that free themselves on their last CQE, so destruction
//    never leaves the ring pointing at freed memory.
//  - Queries go straight to the configured servers (no /etc/hosts, no search
//    domains). A query that gets no answer ends `temporary`; with one server
//    c-ares 1.18 doubles the wait on each try, so that takes about
//    timeout * (2^tries - 1).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/mx_order.h"
#include "engine/net_address.h"
#include "engine/result.h"
#include "engine/task.h"

namespace ringmail::engine::dns {

struct resolver_options {
    // "ip:port" strings ("127.0.0.1:5353", "[::1]:53"); empty -> /etc/resolv.conf.
    std::vector<std::string> servers;
    std::chrono::milliseconds timeout{2000};  // per try
    int tries = 2;
    // Queries sent at once (an MX lookup is one, an address lookup two); later
    // lookups wait in order, so a burst does not overrun the server. >= 2.
    unsigned max_in_flight = 100;
};

enum class resolver_error {
    init_failed,   // ares_library_init / ares_init_options failed
    bad_servers,   // ares_set_servers_ports_csv rejected the list
};
std::string_view describe(resolver_error e);

struct mx_answer {
    dns_outcome outcome = dns_outcome::temporary;
    std::vector<mx_record> records;  // outcome ok: at least one record
};

struct address_record {
    net::socket_address address;  // port 0
    uint32_t ttl = 0;             // seconds
};

struct address_answer {
    // ok when either family returned addresses; nxdomain only when both said
    // so; temporary when neither returned addresses and one failed temporarily.
    dns_outcome outcome = dns_outcome::temporary;
    std::vector<address_record> addresses;  // IPv6 first, then IPv4
};

class resolver {
public:
    static result<std::unique_ptr<resolver>, resolver_error> create(const resolver_options& options);
    ~resolver();
    resolver(const resolver&) = delete;
    resolver& operator=(const resolver&) = delete;

    task<mx_answer> query_mx(std::string domain);
    task<address_answer> query_a_aaaa(std::string host);

    // Number of c-ares sockets currently watched (for tests).
    std::size_t watched_sockets() const;

    struct impl;  // public so the C callbacks in the .cpp can name it

private:
    explicit resolver(std::unique_ptr<impl> p);
    std::unique_ptr<impl> _impl;
};

}  // namespace ringmail::engine::dns
