#include "engine/dns_cache.h"

#include <algorithm>
#include <limits>

#include "engine/ring.h"

namespace ringmail::engine::dns {

struct cache::answer {
    dns_outcome outcome = dns_outcome::temporary;
    std::vector<mx_record> mx;              // MX lookups
    std::vector<address_record> addresses;  // A/AAAA lookups
};

// A lookup waiting for the query another lookup of the same name sent. Lives
// in the waiting frame, which stays suspended until the querying lookup has
// filled `value` and posted `h`.
struct cache::waiter {
    flight* f;
    answer_ptr value;
    std::coroutine_handle<> h;

    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> handle) {
        h = handle;
        f->waiters.push_back(this);
    }
    answer_ptr await_resume() { return std::move(value); }
};

// Waits for the spawned address lookups of one resolve(); the last to finish
// resumes it (posted, after the current CQE batch).
struct cache::join {
    ring* r;
    int pending = 0;
    std::coroutine_handle<> parent;

    void done() {
        if (--pending == 0 && parent) r->post(parent);
    }
    bool await_ready() const noexcept { return pending == 0; }
    void await_suspend(std::coroutine_handle<> h) noexcept { parent = h; }
    void await_resume() const noexcept {}
};

namespace {

constexpr char kind_mx = 'm';
constexpr char kind_address = 'a';

std::string make_key(char kind, const std::string& name) {
    std::string key(1, kind);
    key += name;
    return key;
}

// Postfix-style texts, e.g. "Name service error for name=x.test type=MX: Host not found".
std::string failure_text(const std::string& name, const char* type, dns_outcome o) {
    if (o == dns_outcome::temporary)
        return "DNS temporary failure (SERVFAIL or timeout) for name=" + name + " type=" + type;
    return "Name service error for name=" + name + " type=" + type + ": " +
           (o == dns_outcome::nxdomain ? "Host not found" : "Host found but no address");
}

uint16_t preference_of(const std::vector<mx_record>& records, const std::string& host) {
    uint16_t best = std::numeric_limits<uint16_t>::max();
    for (const auto& r : records)
        if (r.preference < best && normalize_host(r.host) == host) best = r.preference;
    return best;
}

}  // namespace

cache::cache(resolver& r, cache_options o, random_index rnd)
    : _resolver(r), _ring(&this_ring()), _options(std::move(o)), _rnd(std::move(rnd)) {}

cache::~cache() = default;

void cache::clear() {
    _entries.clear();
    _age.clear();
    _flights.clear();  // their waiters are still answered by the querying lookups
    ++_generation;
}

cache::answer_ptr cache::cached(const std::string& key) {
    auto it = _entries.find(key);
    if (it == _entries.end()) return nullptr;
    if (now() < it->second.expires) return it->second.value;
    _age.erase(it->second.age);
    _entries.erase(it);
    return nullptr;
}

void cache::store(const std::string& key, answer_ptr value) {
    using std::chrono::seconds;
    seconds ttl{0};
    switch (value->outcome) {
        case dns_outcome::ok: {
            uint32_t least = std::numeric_limits<uint32_t>::max();
            for (const auto& r : value->mx) least = std::min(least, r.ttl);
            for (const auto& r : value->addresses) least = std::min(least, r.ttl);
            ttl = std::clamp(seconds(least), _options.min_ttl, std::max(_options.min_ttl, _options.max_ttl));
            break;
        }
        case dns_outcome::nxdomain:
        case dns_outcome::nodata: ttl = _options.negative_ttl; break;
        case dns_outcome::temporary: ttl = _options.temporary_ttl; break;
    }
    ttl = std::min(ttl, _options.max_ttl);
    if (ttl <= seconds(0)) return;

    auto [it, fresh] = _entries.try_emplace(key);
    it->second.value = std::move(value);
    it->second.expires = now() + ttl;
    if (fresh)
        it->second.age = _age.insert(_age.end(), &it->first);
    else
        _age.splice(_age.end(), _age, it->second.age);
    if (_entries.size() > _options.max_entries) evict();
}

void cache::evict() {
    const auto t = now();
    for (auto it = _entries.begin(); it != _entries.end();) {
        if (it->second.expires <= t) {
            _age.erase(it->second.age);
            it = _entries.erase(it);
        } else {
            ++it;
        }
    }
    // Some slack so that a full cache does not sweep on every insertion.
    const std::size_t target = _options.max_entries - _options.max_entries / 16;
    while (_entries.size() > target) {
        auto it = _entries.find(*_age.front());
        _age.pop_front();
        _entries.erase(it);
    }
}

task<cache::answer_ptr> cache::lookup(char kind, std::string name) {
    std::string key = make_key(kind, name);
    answer_ptr hit = cached(key);
    if (hit) {
        ++_stats.hits;
        co_return hit;
    }
    auto in_flight = _flights.find(key);
    if (in_flight != _flights.end()) {
        ++_stats.coalesced;
        waiter w{in_flight->second, nullptr, {}};
        answer_ptr shared = co_await w;
        co_return shared;
    }

    ++_stats.misses;
    flight f;
    _flights.emplace(key, &f);
    const uint64_t generation = _generation;
    auto fetched = std::make_shared<answer>();
    if (kind == kind_mx) {
        mx_answer mx = co_await _resolver.query_mx(name);
        fetched->outcome = mx.outcome;
        fetched->mx = std::move(mx.records);
    } else {
        address_answer addr = co_await _resolver.query_a_aaaa(name);
        fetched->outcome = addr.outcome;
        fetched->addresses = std::move(addr.addresses);
    }
    answer_ptr value = std::move(fetched);
    if (generation == _generation) {  // else clear() ran: forget this answer
        _flights.erase(key);
        store(key, value);
    }
    for (waiter* w : f.waiters) {
        w->value = value;
        _ring->post(w->h);
    }
    co_return value;
}

task<void> cache::lookup_into(std::string host, answer_ptr& out, join& j) {
    answer_ptr a = co_await lookup(kind_address, std::move(host));
    out = std::move(a);
    j.done();
}

task<route> cache::resolve(std::string domain) {
    const std::string name = normalize_host(domain);
    route out;
    if (name.empty()) {
        out.decision = mx_decision::bounce_nxdomain;
        out.detail = "empty domain name";
        co_return out;
    }

    answer_ptr mx = co_await lookup(kind_mx, name);
    mx_plan plan = plan_mx(name, mx->outcome, mx->mx, _rnd);
    out.decision = plan.decision;
    out.implicit = plan.implicit;
    if (plan.decision == mx_decision::bounce_nxdomain) {
        out.detail = failure_text(name, "MX", dns_outcome::nxdomain);
        co_return out;
    }
    if (plan.decision == mx_decision::bounce_null_mx) {
        out.detail = "Domain " + name + " does not accept mail (null MX)";
        co_return out;
    }
    if (plan.decision == mx_decision::retry) {
        out.detail = failure_text(name, "MX", dns_outcome::temporary);
        co_return out;
    }

    // Addresses of every host: cache hits now, the rest concurrently.
    std::vector<answer_ptr> addresses(plan.hosts.size());
    join j{_ring, 0, {}};
    for (std::size_t i = 0; i < plan.hosts.size(); ++i) {
        addresses[i] = cached(make_key(kind_address, plan.hosts[i]));
        if (addresses[i]) {
            ++_stats.hits;
            continue;
        }
        ++j.pending;
        spawn(lookup_into(plan.hosts[i], addresses[i], j));
    }
    co_await j;

    const std::string* failed_host = nullptr;  // first host without address, for `detail`
    dns_outcome failed = dns_outcome::ok;
    for (std::size_t i = 0; i < plan.hosts.size(); ++i) {
        const answer& a = *addresses[i];
        if (a.addresses.empty()) {
            // A temporary failure decides the text: it is why we retry.
            if (failed_host == nullptr || (a.outcome == dns_outcome::temporary && failed != dns_outcome::temporary)) {
                failed_host = &plan.hosts[i];
                failed = a.outcome;
            }
            continue;
        }
        mx_host h;
        h.name = plan.hosts[i];
        h.preference = plan.implicit ? 0 : preference_of(mx->mx, h.name);
        h.addresses.reserve(a.addresses.size());
        for (const auto& r : a.addresses) h.addresses.push_back(r.address);
        out.hosts.push_back(std::move(h));
    }
    if (out.hosts.empty()) {
        std::string why = failure_text(*failed_host, "A", failed);
        if (failed == dns_outcome::temporary) {
            out.decision = mx_decision::retry;
            out.detail = std::move(why);
        } else {  // every host is NXDOMAIN or has no address: bounce, like Postfix
            out.decision = mx_decision::bounce_nxdomain;
            out.detail = plan.implicit ? std::move(why) : "MX host(s) of " + name + " have no address: " + why;
        }
        co_return out;
    }

    std::vector<const std::string*> names;
    names.reserve(out.hosts.size());
    for (const auto& h : out.hosts) names.push_back(&h.name);
    std::sort(names.begin(), names.end(), [](const std::string* a, const std::string* b) { return *a < *b; });
    for (const std::string* n : names) {
        if (!out.key.empty()) out.key += ',';
        out.key += *n;
    }
    co_return out;
}

}  // namespace ringmail::engine::dns
