// The c-ares resolver on a real io_uring against a loopback DNS responder
// running on a thread of this test (127.0.0.1, a free port). No real domain or
// server is ever contacted.
#include "engine/dns_resolver.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "engine/ring.h"
#include "engine/task.h"
#include "tests/unit/engine/test_dns_server.h"

using namespace ringmail;
using namespace ringmail::engine;
using namespace ringmail::engine::dns;
using ringmail::test_support::test_dns_server;
using namespace std::chrono_literals;

namespace {

class DnsResolverTest : public ::testing::Test {
protected:
    void SetUp() override { set_this_ring(&_ring); }
    void TearDown() override {
        _resolver.reset();
        drain();
        set_this_ring(nullptr);
    }

    resolver& make(std::chrono::milliseconds timeout = 1000ms, int tries = 2, unsigned max_in_flight = 100) {
        resolver_options o;
        o.servers = {_server.address()};
        o.timeout = timeout;
        o.tries = tries;
        o.max_in_flight = max_in_flight;
        auto r = resolver::create(o);
        EXPECT_TRUE(r.ok());
        _resolver = std::move(*r);
        return *_resolver;
    }

    // Runs the ring until `t` finishes (or 10 s pass).
    template <class T>
    std::optional<T> run(task<T> t) {
        std::optional<T> out;
        spawn([](task<T> t, std::optional<T>& out) -> task<void> { out.emplace(co_await std::move(t)); }(std::move(t), out));
        auto deadline = std::chrono::steady_clock::now() + 10s;
        while (!out && std::chrono::steady_clock::now() < deadline) _ring.run_once(50ms);
        return out;
    }
    void drain() {
        for (int i = 0; i < 5; ++i) _ring.run_once(10ms);
    }

    ring _ring{256};
    test_dns_server _server;
    std::unique_ptr<resolver> _resolver;
};

std::vector<std::string> hosts_of(const mx_answer& a) {
    std::vector<std::string> h;
    for (const auto& r : a.records) h.push_back(r.host + "/" + std::to_string(r.preference) + "/" + std::to_string(r.ttl));
    std::sort(h.begin(), h.end());
    return h;
}

std::vector<std::string> addrs_of(const address_answer& a) {
    std::vector<std::string> v;
    for (const auto& r : a.addresses) v.push_back(r.address.host_string() + "/" + std::to_string(r.ttl));
    return v;
}

}  // namespace

TEST_F(DnsResolverTest, MxWithEqualAndLowerPreferences) {
    auto& r = make();
    auto a = run(r.query_mx("mx.test"));
    ASSERT_TRUE(a);
    EXPECT_EQ(a->outcome, dns_outcome::ok);
    EXPECT_EQ(hosts_of(*a), (std::vector<std::string>{"a.mx.test/10/300", "b.mx.test/10/300", "low.mx.test/5/600"}));
    mx_plan p = plan_mx("mx.test", a->outcome, a->records, [](std::size_t) { return std::size_t(0); });
    ASSERT_EQ(p.decision, mx_decision::deliver);
    ASSERT_EQ(p.hosts.size(), 3u);
    EXPECT_EQ(p.hosts[0], "low.mx.test");
}

TEST_F(DnsResolverTest, NullMx) {
    auto& r = make();
    auto a = run(r.query_mx("nullmx.test"));
    ASSERT_TRUE(a);
    EXPECT_EQ(a->outcome, dns_outcome::ok);
    ASSERT_EQ(a->records.size(), 1u);
    EXPECT_EQ(plan_mx("nullmx.test", a->outcome, a->records, default_random_index).decision,
              mx_decision::bounce_null_mx);
}

TEST_F(DnsResolverTest, NoMxFallsBackToAddress) {
    auto& r = make();
    auto a = run(r.query_mx("aonly.test"));
    ASSERT_TRUE(a);
    EXPECT_EQ(a->outcome, dns_outcome::nodata);
    mx_plan p = plan_mx("aonly.test", a->outcome, a->records, default_random_index);
    EXPECT_TRUE(p.implicit);
    EXPECT_EQ(p.hosts, std::vector<std::string>{"aonly.test"});
    auto addr = run(r.query_a_aaaa(p.hosts[0]));
    ASSERT_TRUE(addr);
    EXPECT_EQ(addr->outcome, dns_outcome::ok);
    EXPECT_EQ(addrs_of(*addr), std::vector<std::string>{"127.0.0.7/60"});
    EXPECT_EQ(addr->addresses[0].address.family(), AF_INET);
}

TEST_F(DnsResolverTest, BothAddressFamilies) {
    auto& r = make();
    auto addr = run(r.query_a_aaaa("dual.test"));
    ASSERT_TRUE(addr);
    EXPECT_EQ(addr->outcome, dns_outcome::ok);
    EXPECT_EQ(addrs_of(*addr), (std::vector<std::string>{"::1/90", "127.0.0.8/120", "127.0.0.9/120"}));
    auto v6 = run(r.query_a_aaaa("v6only.test"));
    ASSERT_TRUE(v6);
    EXPECT_EQ(v6->outcome, dns_outcome::ok);
    EXPECT_EQ(addrs_of(*v6), std::vector<std::string>{"2001:db8::25/30"});
}

TEST_F(DnsResolverTest, Nxdomain) {
    auto& r = make();
    auto a = run(r.query_mx("nx.test"));
    ASSERT_TRUE(a);
    EXPECT_EQ(a->outcome, dns_outcome::nxdomain);
    EXPECT_EQ(plan_mx("nx.test", a->outcome, a->records, default_random_index).decision, mx_decision::bounce_nxdomain);
    auto addr = run(r.query_a_aaaa("nx.test"));
    ASSERT_TRUE(addr);
    EXPECT_EQ(addr->outcome, dns_outcome::nxdomain);
}

TEST_F(DnsResolverTest, ServfailAndRefusedAreTemporary) {
    auto& r = make(500ms, 2);
    for (const char* d : {"servfail.test", "refused.test"}) {
        SCOPED_TRACE(d);
        auto a = run(r.query_mx(d));
        ASSERT_TRUE(a);
        EXPECT_EQ(a->outcome, dns_outcome::temporary);
        EXPECT_EQ(plan_mx(d, a->outcome, a->records, default_random_index).decision, mx_decision::retry);
        auto addr = run(r.query_a_aaaa(d));
        ASSERT_TRUE(addr);
        EXPECT_EQ(addr->outcome, dns_outcome::temporary);
    }
}

TEST_F(DnsResolverTest, SilentServerTimesOutAsTemporary) {
    auto& r = make(300ms, 1);
    auto start = std::chrono::steady_clock::now();
    auto a = run(r.query_mx("timeout.test"));
    auto elapsed = std::chrono::steady_clock::now() - start;
    ASSERT_TRUE(a);
    EXPECT_EQ(a->outcome, dns_outcome::temporary);
    EXPECT_GE(elapsed, 250ms);
    EXPECT_LT(elapsed, 2000ms);
}

TEST_F(DnsResolverTest, SilentServerIsRetriedThenTemporary) {
    auto& r = make(200ms, 2);
    auto start = std::chrono::steady_clock::now();
    auto a = run(r.query_mx("timeout.test"));
    auto elapsed = std::chrono::steady_clock::now() - start;
    ASSERT_TRUE(a);
    EXPECT_EQ(a->outcome, dns_outcome::temporary);
    EXPECT_EQ(_server.queries(), 2);  // the ring timer drove c-ares's retry
    EXPECT_GE(elapsed, 350ms);
    EXPECT_LT(elapsed, 3000ms);
}

TEST_F(DnsResolverTest, ManyConcurrentQueries) {
    auto& r = make();
    constexpr int n = 40;
    int done = 0, ok = 0;
    for (int i = 0; i < n; ++i) {
        spawn([](resolver& r, int i, int& done, int& ok) -> task<void> {
            if (i % 2 == 0) {
                auto a = co_await r.query_mx("mx.test");
                ok += a.outcome == dns_outcome::ok && a.records.size() == 3;
            } else {
                auto a = co_await r.query_a_aaaa("dual.test");
                ok += a.outcome == dns_outcome::ok && a.addresses.size() == 3;
            }
            ++done;
        }(r, i, done, ok));
    }
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (done < n && std::chrono::steady_clock::now() < deadline) _ring.run_once(50ms);
    EXPECT_EQ(done, n);
    EXPECT_EQ(ok, n);
    drain();
    EXPECT_EQ(r.watched_sockets(), 0u);  // c-ares closed its socket, the poll was removed
}

TEST_F(DnsResolverTest, DestroyWithQueryInFlight) {
    auto& r = make(5000ms, 1);
    std::optional<mx_answer> out;
    spawn([](resolver& r, std::optional<mx_answer>& out) -> task<void> {
        out.emplace(co_await r.query_mx("timeout.test"));
    }(r, out));
    for (int i = 0; i < 3; ++i) _ring.run_once(10ms);  // the query is sent and watched
    EXPECT_FALSE(out);
    EXPECT_EQ(r.watched_sockets(), 1u);
    _resolver.reset();
    drain();
    ASSERT_TRUE(out);
    EXPECT_EQ(out->outcome, dns_outcome::temporary);
}

// Spawned MX lookup that stores its answer in `out`.
task<void> ask_mx(resolver& r, std::string name, std::optional<mx_answer>& out) {
    out.emplace(co_await r.query_mx(std::move(name)));
}

// Two lookups of a name that is never answered, then one of mx.test: with a
// cap of 2 the last one has to wait.
void fill_cap_of_two(resolver& r, std::optional<mx_answer>& silent1, std::optional<mx_answer>& silent2,
                     std::optional<mx_answer>& third) {
    spawn(ask_mx(r, "timeout.test", silent1));
    spawn(ask_mx(r, "timeout.test", silent2));
    spawn(ask_mx(r, "mx.test", third));
}

TEST_F(DnsResolverTest, QueriesBeyondTheCapWaitForAnAnswer) {
    // Two silent lookups fill a cap of 2; the third is not sent until one of
    // them gives up, then it is sent and answered.
    auto& r = make(300ms, 1, 2);
    std::optional<mx_answer> silent1, silent2, third;
    fill_cap_of_two(r, silent1, silent2, third);
    for (int i = 0; i < 10; ++i) _ring.run_once(10ms);
    EXPECT_EQ(_server.queries(), 2);  // the cap holds: mx.test waits
    EXPECT_EQ(_server.queries("mx.test", 15), 0);
    EXPECT_FALSE(third);
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!third && std::chrono::steady_clock::now() < deadline) _ring.run_once(50ms);
    ASSERT_TRUE(silent1 && silent2 && third);
    EXPECT_EQ(silent1->outcome, dns_outcome::temporary);
    EXPECT_EQ(third->outcome, dns_outcome::ok);
    EXPECT_EQ(third->records.size(), 3u);
}

TEST_F(DnsResolverTest, BurstBeyondTheCapAllAnswered) {
    // 60 lookups (an address lookup counts two) through a cap of 4: all answered.
    auto& r = make(1000ms, 2, 4);
    std::vector<std::optional<mx_answer>> mx(40);
    std::vector<std::optional<address_answer>> addr(20);
    for (auto& o : mx) spawn(ask_mx(r, "mx.test", o));
    for (auto& o : addr)
        spawn([](resolver& r, std::optional<address_answer>& out) -> task<void> {
            out.emplace(co_await r.query_a_aaaa("dual.test"));
        }(r, o));
    auto done = [&] {
        return std::all_of(mx.begin(), mx.end(), [](auto& o) { return o.has_value(); }) &&
               std::all_of(addr.begin(), addr.end(), [](auto& o) { return o.has_value(); });
    };
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done() && std::chrono::steady_clock::now() < deadline) _ring.run_once(50ms);
    ASSERT_TRUE(done());
    for (auto& o : mx) EXPECT_EQ(o->outcome, dns_outcome::ok);
    for (auto& o : addr) EXPECT_EQ(o->addresses.size(), 3u);
    EXPECT_EQ(_server.queries(), 80);
}

TEST_F(DnsResolverTest, DestroyWithQueriesWaitingForTheCap) {
    auto& r = make(5000ms, 1, 2);
    std::optional<mx_answer> a, b, waiting;
    fill_cap_of_two(r, a, b, waiting);
    for (int i = 0; i < 3; ++i) _ring.run_once(10ms);
    EXPECT_FALSE(waiting);
    _resolver.reset();
    drain();
    ASSERT_TRUE(a && b && waiting);
    EXPECT_EQ(waiting->outcome, dns_outcome::temporary);
    EXPECT_EQ(_server.queries("mx.test", 15), 0);
}

TEST(DnsResolverCreate, RejectsBadServerList) {
    ring rg{64};
    set_this_ring(&rg);
    resolver_options o;
    o.servers = {"not an address"};
    auto r = resolver::create(o);
    EXPECT_FALSE(r.ok());
    if (!r.ok()) {
        EXPECT_EQ(r.error(), resolver_error::bad_servers);
    }
    set_this_ring(nullptr);
}
