// The per-shard DNS cache over the c-ares resolver on a real io_uring, against
// the loopback test DNS server (which counts the queries it receives). Expiry
// runs on an injected clock, so no test sleeps through a TTL.
#include "engine/dns_cache.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/ring.h"
#include "engine/task.h"
#include "tests/unit/engine/test_dns_server.h"

using namespace ringmail;
using namespace ringmail::engine;
using namespace ringmail::engine::dns;
using namespace ringmail::test_support;
using namespace std::chrono_literals;

namespace {

using srv = test_dns_server;

class DnsCacheTest : public ::testing::Test {
protected:
    void SetUp() override {
        set_this_ring(&_ring);
        _server.set("mx1.hosting.test", 0, {srv::a("192.0.2.1", 3600), srv::aaaa("2001:db8::1", 3600)});
        _server.set("mx2.hosting.test", 0, {srv::a("192.0.2.2", 3600)});
        _server.set("backup.hosting.test", 0, {srv::a("192.0.2.3", 3600)});
        _server.set("empty.hosting.test", 0);  // exists, no address
        _server.set("shop.test", 0, {srv::mx(10, "mx1.hosting.test", 600), srv::mx(10, "mx2.hosting.test", 600),
                                     srv::mx(20, "backup.hosting.test", 600)});
        _server.set("other.test", 0, {srv::mx(20, "backup.hosting.test", 900), srv::mx(5, "MX2.Hosting.Test.", 900),
                                      srv::mx(5, "mx1.hosting.test", 900)});
        _server.set("bare.test", 0);  // no MX, no address

        resolver_options o;
        o.servers = {_server.address()};
        o.timeout = 1000ms;
        o.tries = 1;
        auto r = resolver::create(o);
        ASSERT_TRUE(r.ok());
        _resolver = std::move(*r);
    }
    void TearDown() override {
        _cache.reset();
        _resolver.reset();
        drain();
        set_this_ring(nullptr);
    }

    cache& make(cache_options o = {}, random_index rnd = default_random_index) {
        o.now = [this] { return _now; };
        _cache = std::make_unique<cache>(*_resolver, std::move(o), std::move(rnd));
        return *_cache;
    }

    // Runs the ring until the resolve finishes (or 10 s pass).
    route run(task<route> t) {
        std::optional<route> out;
        spawn([](task<route> t, std::optional<route>& out) -> task<void> {
            route r = co_await std::move(t);
            out.emplace(std::move(r));
        }(std::move(t), out));
        auto deadline = std::chrono::steady_clock::now() + 10s;
        while (!out && std::chrono::steady_clock::now() < deadline) _ring.run_once(50ms);
        EXPECT_TRUE(out) << "resolve did not finish";
        return out ? std::move(*out) : route{};
    }
    void drain() {
        for (int i = 0; i < 5; ++i) _ring.run_once(10ms);
    }
    int mx_queries(const std::string& name) const { return _server.queries(name, t_mx); }

    ring _ring{256};
    test_dns_server _server;
    std::unique_ptr<resolver> _resolver;
    std::unique_ptr<cache> _cache;
    std::chrono::steady_clock::time_point _now{std::chrono::hours(1000)};
};

std::vector<std::string> names_of(const route& r) {
    std::vector<std::string> v;
    for (const auto& h : r.hosts) v.push_back(h.name);
    return v;
}

std::vector<std::string> addresses_of(const mx_host& h) {
    std::vector<std::string> v;
    for (const auto& a : h.addresses) v.push_back(a.host_string() + "/" + std::to_string(a.port()));
    return v;
}

// Yields the scripted values in turn (then repeats the last).
random_index scripted(std::vector<std::size_t> values) {
    return [values = std::move(values), i = std::size_t(0)](std::size_t bound) mutable {
        std::size_t v = values[std::min(i, values.size() - 1)];
        ++i;
        return v % bound;
    };
}

const char* const shop_key = "backup.hosting.test,mx1.hosting.test,mx2.hosting.test";

}  // namespace

TEST_F(DnsCacheTest, MxWithAddresses) {
    auto& c = make({}, scripted({1}));  // 1 keeps mx1 before mx2
    route r = run(c.resolve("Shop.TEST."));
    EXPECT_EQ(r.decision, mx_decision::deliver);
    EXPECT_FALSE(r.implicit);
    EXPECT_EQ(r.detail, "");
    EXPECT_EQ(r.key, shop_key);
    ASSERT_EQ(names_of(r), (std::vector<std::string>{"mx1.hosting.test", "mx2.hosting.test", "backup.hosting.test"}));
    EXPECT_EQ(r.hosts[0].preference, 10);
    EXPECT_EQ(r.hosts[1].preference, 10);
    EXPECT_EQ(r.hosts[2].preference, 20);
    EXPECT_EQ(addresses_of(r.hosts[0]), (std::vector<std::string>{"2001:db8::1/0", "192.0.2.1/0"}));
    EXPECT_EQ(addresses_of(r.hosts[2]), std::vector<std::string>{"192.0.2.3/0"});
    EXPECT_EQ(c.size(), 4u);  // one MX entry, three address entries
    EXPECT_EQ(c.stats().misses, 4u);
    EXPECT_EQ(mx_queries("shop.test"), 1);
    EXPECT_EQ(_server.queries("mx1.hosting.test", t_a), 1);
    EXPECT_EQ(_server.queries("mx1.hosting.test", t_aaaa), 1);
}

TEST_F(DnsCacheTest, EqualPreferencesReshuffledOnEveryCallFromCache) {
    auto& c = make({}, scripted({0, 1, 0, 1}));
    route first = run(c.resolve("shop.test"));
    int queries = _server.queries();
    route second = run(c.resolve("shop.test"));
    route third = run(c.resolve("shop.test"));
    EXPECT_EQ(_server.queries(), queries);  // all from the cache
    EXPECT_EQ(c.stats().hits, 8u);          // 2 x (1 MX + 3 hosts)
    EXPECT_EQ(names_of(first), (std::vector<std::string>{"mx2.hosting.test", "mx1.hosting.test", "backup.hosting.test"}));
    EXPECT_EQ(names_of(second), (std::vector<std::string>{"mx1.hosting.test", "mx2.hosting.test", "backup.hosting.test"}));
    EXPECT_EQ(names_of(third), names_of(first));
    EXPECT_EQ(first.key, second.key);
}

TEST_F(DnsCacheTest, TtlFloor) {
    _server.set("short.test", 0, {srv::mx(10, "mx1.hosting.test", 1)});
    cache_options o;
    o.min_ttl = 60s;
    auto& c = make(o);
    EXPECT_EQ(run(c.resolve("short.test")).decision, mx_decision::deliver);
    EXPECT_EQ(mx_queries("short.test"), 1);
    _now += 59s;
    EXPECT_EQ(run(c.resolve("short.test")).decision, mx_decision::deliver);
    EXPECT_EQ(mx_queries("short.test"), 1);  // TTL 1 was raised to 60
    _now += 1s;
    EXPECT_EQ(run(c.resolve("short.test")).decision, mx_decision::deliver);
    EXPECT_EQ(mx_queries("short.test"), 2);
}

TEST_F(DnsCacheTest, TtlCeiling) {
    _server.set("long.test", 0, {srv::mx(10, "mx1.hosting.test", 2000000000)});
    cache_options o;
    o.max_ttl = 7200s;
    auto& c = make(o);
    run(c.resolve("long.test"));
    _now += 7199s;
    run(c.resolve("long.test"));
    EXPECT_EQ(mx_queries("long.test"), 1);
    _now += 1s;
    EXPECT_EQ(run(c.resolve("long.test")).decision, mx_decision::deliver);
    EXPECT_EQ(mx_queries("long.test"), 2);
}

TEST_F(DnsCacheTest, NxdomainCachedForNegativeTtl) {
    cache_options o;
    o.negative_ttl = 300s;
    auto& c = make(o);
    route r = run(c.resolve("nowhere.test"));
    EXPECT_EQ(r.decision, mx_decision::bounce_nxdomain);
    EXPECT_EQ(r.detail, "Name service error for name=nowhere.test type=MX: Host not found");
    EXPECT_TRUE(r.hosts.empty());
    EXPECT_EQ(r.key, "");
    _now += 299s;
    EXPECT_EQ(run(c.resolve("NOWHERE.test")).decision, mx_decision::bounce_nxdomain);
    EXPECT_EQ(mx_queries("nowhere.test"), 1);
    _now += 1s;
    EXPECT_EQ(run(c.resolve("nowhere.test")).decision, mx_decision::bounce_nxdomain);
    EXPECT_EQ(mx_queries("nowhere.test"), 2);
}

TEST_F(DnsCacheTest, NegativeTtlCappedByMaxTtl) {
    cache_options o;
    o.negative_ttl = 300s;
    o.max_ttl = 100s;
    auto& c = make(o);
    run(c.resolve("nowhere.test"));
    _now += 100s;
    run(c.resolve("nowhere.test"));
    EXPECT_EQ(mx_queries("nowhere.test"), 2);
}

TEST_F(DnsCacheTest, ServfailRetriesAndIsCachedForTemporaryTtl) {
    cache_options o;
    o.temporary_ttl = 30s;
    auto& c = make(o);
    route r = run(c.resolve("servfail.test"));
    EXPECT_EQ(r.decision, mx_decision::retry);
    EXPECT_EQ(r.detail, "DNS temporary failure (SERVFAIL or timeout) for name=servfail.test type=MX");
    const int sent = mx_queries("servfail.test");
    EXPECT_GE(sent, 1);
    _now += 29s;
    EXPECT_EQ(run(c.resolve("servfail.test")).decision, mx_decision::retry);
    EXPECT_EQ(mx_queries("servfail.test"), sent);
    _now += 1s;
    EXPECT_EQ(run(c.resolve("servfail.test")).decision, mx_decision::retry);
    EXPECT_GT(mx_queries("servfail.test"), sent);
}

TEST_F(DnsCacheTest, TemporaryTtlZeroIsNotCached) {
    cache_options o;
    o.temporary_ttl = 0s;
    auto& c = make(o);
    run(c.resolve("servfail.test"));
    const int sent = mx_queries("servfail.test");
    run(c.resolve("servfail.test"));
    EXPECT_GT(mx_queries("servfail.test"), sent);
    EXPECT_EQ(c.size(), 0u);
}

TEST_F(DnsCacheTest, NullMxBounces) {
    auto& c = make();
    route r = run(c.resolve("nullmx.test"));
    EXPECT_EQ(r.decision, mx_decision::bounce_null_mx);
    EXPECT_EQ(r.detail, "Domain nullmx.test does not accept mail (null MX)");
    EXPECT_TRUE(r.hosts.empty());
    EXPECT_EQ(r.key, "");
}

TEST_F(DnsCacheTest, NoMxFallsBackToTheDomainsAddress) {
    auto& c = make();
    route r = run(c.resolve("aonly.test"));
    EXPECT_EQ(r.decision, mx_decision::deliver);
    EXPECT_TRUE(r.implicit);
    ASSERT_EQ(names_of(r), std::vector<std::string>{"aonly.test"});
    EXPECT_EQ(r.hosts[0].preference, 0);
    EXPECT_EQ(addresses_of(r.hosts[0]), std::vector<std::string>{"127.0.0.7/0"});
    EXPECT_EQ(r.key, "aonly.test");

    route bare = run(c.resolve("bare.test"));  // neither MX nor address
    EXPECT_EQ(bare.decision, mx_decision::bounce_nxdomain);
    EXPECT_TRUE(bare.implicit);
    EXPECT_TRUE(bare.hosts.empty());
    EXPECT_EQ(bare.key, "");
    EXPECT_EQ(bare.detail, "Name service error for name=bare.test type=A: Host found but no address");
}

TEST_F(DnsCacheTest, MxHostsWithoutAddressAreSkipped) {
    _server.set("half.test", 0, {srv::mx(5, "gone.hosting.test", 600), srv::mx(10, "mx2.hosting.test", 600)});
    auto& c = make();
    route r = run(c.resolve("half.test"));
    EXPECT_EQ(r.decision, mx_decision::deliver);
    EXPECT_EQ(names_of(r), std::vector<std::string>{"mx2.hosting.test"});
    EXPECT_EQ(r.key, "mx2.hosting.test");
}

TEST_F(DnsCacheTest, NoMxHostWithAddressBouncesOrRetries) {
    _server.set("noaddr.test", 0, {srv::mx(10, "gone.hosting.test", 600), srv::mx(20, "empty.hosting.test", 600)});
    _server.set("tempaddr.test", 0, {srv::mx(10, "gone.hosting.test", 600), srv::mx(20, "servfail.test", 600)});
    auto& c = make();
    route r = run(c.resolve("noaddr.test"));
    EXPECT_EQ(r.decision, mx_decision::bounce_nxdomain);
    EXPECT_FALSE(r.implicit);
    EXPECT_TRUE(r.hosts.empty());
    EXPECT_EQ(r.key, "");
    EXPECT_EQ(r.detail, "MX host(s) of noaddr.test have no address: "
                        "Name service error for name=gone.hosting.test type=A: Host not found");

    route t = run(c.resolve("tempaddr.test"));  // one host might still have one
    EXPECT_EQ(t.decision, mx_decision::retry);
    EXPECT_EQ(t.detail, "DNS temporary failure (SERVFAIL or timeout) for name=servfail.test type=A");
}

TEST_F(DnsCacheTest, ConcurrentResolvesShareOneQuery) {
    auto& c = make();
    constexpr int n = 50;
    int done = 0, delivered = 0;
    for (int i = 0; i < n; ++i) {
        spawn([](cache& c, int& done, int& delivered) -> task<void> {
            route r = co_await c.resolve("shop.test");
            delivered += r.decision == mx_decision::deliver && r.hosts.size() == 3 && r.key == shop_key;
            ++done;
        }(c, done, delivered));
    }
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (done < n && std::chrono::steady_clock::now() < deadline) _ring.run_once(50ms);
    EXPECT_EQ(done, n);
    EXPECT_EQ(delivered, n);
    EXPECT_EQ(mx_queries("shop.test"), 1);
    for (const char* h : {"mx1.hosting.test", "mx2.hosting.test", "backup.hosting.test"}) {
        EXPECT_EQ(_server.queries(h, t_a), 1) << h;
        EXPECT_EQ(_server.queries(h, t_aaaa), 1) << h;
    }
    EXPECT_EQ(c.stats().misses, 4u);                  // 1 MX + 3 hosts
    EXPECT_EQ(c.stats().coalesced, (n - 1) * 4u);     // everyone else joined those
    EXPECT_EQ(c.stats().hits, 0u);
    EXPECT_EQ(c.size(), 4u);
}

TEST_F(DnsCacheTest, DomainsSharingMxHostsShareTheKey) {
    auto& c = make();
    route shop = run(c.resolve("shop.test"));
    route other = run(c.resolve("other.test"));
    EXPECT_EQ(shop.key, shop_key);
    EXPECT_EQ(other.key, shop_key);
    EXPECT_EQ(other.hosts.back().name, "backup.hosting.test");
    EXPECT_EQ(_server.queries("mx1.hosting.test", t_a), 1);  // host addresses are shared too
}

TEST_F(DnsCacheTest, EvictsTheOldestBeyondMaxEntries) {
    cache_options o;
    o.max_entries = 3;
    auto& c = make(o);
    for (const char* d : {"nx1.test", "nx2.test", "nx3.test", "nx4.test"}) run(c.resolve(d));
    EXPECT_EQ(c.size(), 3u);
    run(c.resolve("nx2.test"));
    EXPECT_EQ(mx_queries("nx2.test"), 1);  // still cached
    run(c.resolve("nx1.test"));
    EXPECT_EQ(mx_queries("nx1.test"), 2);  // was the oldest
    EXPECT_EQ(c.size(), 3u);
}

TEST_F(DnsCacheTest, EvictsExpiredEntriesFirst) {
    cache_options o;
    o.max_entries = 3;
    o.temporary_ttl = 30s;
    o.negative_ttl = 300s;
    auto& c = make(o);
    run(c.resolve("servfail.test"));  // the oldest, but expires first
    run(c.resolve("nx1.test"));
    run(c.resolve("nx2.test"));
    _now += 31s;
    run(c.resolve("nx3.test"));
    EXPECT_EQ(c.size(), 3u);
    run(c.resolve("nx1.test"));
    run(c.resolve("nx2.test"));
    EXPECT_EQ(mx_queries("nx1.test"), 1);
    EXPECT_EQ(mx_queries("nx2.test"), 1);
}

TEST_F(DnsCacheTest, ClearDropsEntriesAndQueriesInFlight) {
    auto& c = make();
    run(c.resolve("shop.test"));
    EXPECT_EQ(c.size(), 4u);
    c.clear();
    EXPECT_EQ(c.size(), 0u);

    // A query in flight when clear() runs still answers its callers, but is
    // not stored, and later callers query again.
    std::optional<route> before, after;
    auto resolve_into = [](cache& c, std::optional<route>& out) -> task<void> {
        route r = co_await c.resolve("shop.test");
        out.emplace(std::move(r));
    };
    spawn(resolve_into(c, before));
    EXPECT_FALSE(before);
    c.clear();
    spawn(resolve_into(c, after));
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!(before && after) && std::chrono::steady_clock::now() < deadline) _ring.run_once(50ms);
    ASSERT_TRUE(before && after);
    EXPECT_EQ(before->decision, mx_decision::deliver);
    EXPECT_EQ(after->decision, mx_decision::deliver);
    EXPECT_EQ(mx_queries("shop.test"), 3);
    EXPECT_EQ(c.size(), 4u);  // only the second query's answers
}
