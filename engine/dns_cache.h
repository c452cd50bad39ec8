// dns_cache: per-shard DNS cache that turns a recipient domain into a route.
//
// Contract:
//  - One cache per shard, over that shard's resolver; created, used and
//    destroyed on the shard's thread (this_ring() must be set when it is
//    constructed). No locks.
//  - resolve(domain): MX lookup, plan_mx() (RFC 5321 §5.1, RFC 7505), then the
//    A/AAAA of every MX host, looked up concurrently. Outcomes:
//      MX NXDOMAIN                         -> bounce_nxdomain
//      null MX                             -> bounce_null_mx
//      MX temporary (SERVFAIL, timeout...) -> retry
//      no MX                               -> implicit: the domain itself
//      hosts with addresses                -> deliver, to those hosts only
//      no host has an address, one of them temporary -> retry
//      no host has an address, none temporary         -> bounce_nxdomain
//                                                        (Postfix does too)
//    The delivery order (random among equal preferences) is drawn anew on
//    every call, cache hit or not.
//  - Cached: each MX answer by domain and each A/AAAA answer by host name.
//    Positive answers live for their smallest record TTL clamped to
//    [min_ttl, max_ttl]; NXDOMAIN/no-data for negative_ttl; temporary
//    failures for temporary_ttl (0: not cached); all capped by max_ttl.
//    Expiry is checked on lookup against `now` (a steady clock).
//  - Coalescing: a lookup for a name already being queried waits for that
//    query instead of sending another (stats().coalesced). Waiters are resumed
//    after the ring's current CQE batch (ring::post), each with its own
//    reference to the answer, so a resumed caller may start new lookups or
//    destroy its own state freely.
//  - Size: beyond max_entries (MX + address entries), all expired entries are
//    dropped, then the oldest by insertion, down to max_entries - max_entries/16
//    so the sweep is paid for at most once per max_entries/16 insertions.
//    Queries in flight are not entries and are never evicted.
//  - clear() drops every entry and forgets the queries in flight: their
//    waiters still get their answers, but the answers are not stored and new
//    calls query again.
//  - The cache must outlive its pending resolve() calls, and the resolver the
//    cache (same rule as the resolver's). Domain literals ("[192.0.2.1]") are
//    the caller's business: resolve() takes DNS names only.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <coroutine>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/dns_resolver.h"
#include "engine/mx_order.h"
#include "engine/net_address.h"
#include "engine/task.h"

namespace ringmail::engine {
class ring;
}

namespace ringmail::engine::dns {

struct cache_options {
    std::chrono::seconds min_ttl{60};        // TTL floor for positive answers
    std::chrono::seconds max_ttl{86400};     // TTL ceiling
    std::chrono::seconds negative_ttl{300};  // NXDOMAIN / no-data answers (capped by max_ttl)
    std::chrono::seconds temporary_ttl{30};  // SERVFAIL/timeout remembered this long (0 = not cached),
                                             // so a dead DNS is not hammered by every queued message
    std::size_t max_entries = 100000;        // beyond this, expired entries go first, then the oldest
    // Clock for expiry; empty: std::chrono::steady_clock::now. Tests inject one.
    std::function<std::chrono::steady_clock::time_point()> now;
};

struct mx_host {
    std::string name;                             // normalized (lower case, no trailing dot)
    uint16_t preference = 0;
    std::vector<net::socket_address> addresses;   // port 0; IPv6 first, then IPv4
};

struct route {
    mx_decision decision = mx_decision::retry;
    // deliver: in delivery order (preference, random among equals); hosts
    // without any address are left out.
    std::vector<mx_host> hosts;
    bool implicit = false;  // no MX: the domain itself
    // Why, when not deliver (for logs and DSNs), e.g.
    // "Name service error for name=x.test type=MX: Host not found".
    std::string detail;
    // Destination key: the sorted, comma-joined names of `hosts`, so domains
    // sharing MX hosts share it. Empty unless deliver.
    std::string key;
};

class cache {
public:
    cache(resolver& r, cache_options o, random_index rnd = default_random_index);
    ~cache();
    cache(const cache&) = delete;
    cache& operator=(const cache&) = delete;

    // `domain` as in the address: any case, maybe a trailing dot.
    task<route> resolve(std::string domain);

    // Drops everything (SIGHUP, tests).
    void clear();

    // Entries (MX + address), for tests and metrics.
    std::size_t size() const { return _entries.size(); }

    // Per lookup (one MX or one host's A/AAAA): served from the cache, sent
    // to DNS, or joined a query already in flight.
    struct counters {
        uint64_t hits = 0, misses = 0, coalesced = 0;
    };
    counters stats() const { return _stats; }

private:
    using clock = std::chrono::steady_clock;
    struct answer;  // what one lookup came to (outcome + records), shared by its callers
    using answer_ptr = std::shared_ptr<const answer>;
    struct entry {
        answer_ptr value;
        clock::time_point expires;
        std::list<const std::string*>::iterator age;  // position in _age
    };
    struct waiter;
    struct flight {  // one query in flight; lives in the querying frame
        std::vector<waiter*> waiters;
    };
    struct join;

    task<answer_ptr> lookup(char kind, std::string name);
    task<void> lookup_into(std::string host, answer_ptr& out, join& j);
    answer_ptr cached(const std::string& key);
    void store(const std::string& key, answer_ptr value);
    void evict();
    clock::time_point now() const { return _options.now ? _options.now() : clock::now(); }

    resolver& _resolver;
    ring* _ring;
    cache_options _options;
    random_index _rnd;
    std::unordered_map<std::string, entry> _entries;  // key: kind letter + name
    std::list<const std::string*> _age;               // entry keys, oldest first
    std::unordered_map<std::string, flight*> _flights;
    uint64_t _generation = 0;                         // bumped by clear()
    counters _stats;
};

}  // namespace ringmail::engine::dns
