// The c-ares resolver on a real io_uring against a loopback DNS responder
// running on a thread of this test (127.0.0.1, a free port). No real domain or
// server is ever contacted.
#include "engine/dns_resolver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/ring.h"
#include "engine/task.h"

using namespace ringmail;
using namespace ringmail::engine;
using namespace ringmail::engine::dns;
using namespace std::chrono_literals;

namespace {

constexpr uint16_t t_a = 1, t_mx = 15, t_aaaa = 28;

std::vector<unsigned char> encode_name(const std::string& name) {
    std::vector<unsigned char> out;
    size_t start = 0;
    while (start < name.size()) {
        size_t dot = name.find('.', start);
        if (dot == std::string::npos) dot = name.size();
        out.push_back(static_cast<unsigned char>(dot - start));
        out.insert(out.end(), name.begin() + long(start), name.begin() + long(dot));
        start = dot + 1;
    }
    out.push_back(0);
    return out;
}

// A tiny authoritative UDP DNS server for the test zones.
class test_dns_server {
public:
    test_dns_server() {
        _fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sin.sin_port = 0;  // free port
        if (::bind(_fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) std::abort();
        socklen_t len = sizeof sin;
        ::getsockname(_fd, reinterpret_cast<sockaddr*>(&sin), &len);
        _port = ntohs(sin.sin_port);
        _thread = std::thread([this] { serve(); });
    }
    ~test_dns_server() {
        _stop = true;
        _thread.join();
        ::close(_fd);
    }
    std::string address() const { return "127.0.0.1:" + std::to_string(_port); }
    int queries() const { return _queries; }

private:
    struct rr {
        uint16_t type;
        uint32_t ttl;
        std::vector<unsigned char> rdata;
    };
    static rr mx(uint16_t pref, const std::string& host, uint32_t ttl) {
        rr r{t_mx, ttl, {static_cast<unsigned char>(pref >> 8), static_cast<unsigned char>(pref)}};
        auto n = encode_name(host);
        r.rdata.insert(r.rdata.end(), n.begin(), n.end());
        return r;
    }
    static rr a(const char* ip, uint32_t ttl) {
        rr r{t_a, ttl, std::vector<unsigned char>(4)};
        inet_pton(AF_INET, ip, r.rdata.data());
        return r;
    }
    static rr aaaa(const char* ip, uint32_t ttl) {
        rr r{t_aaaa, ttl, std::vector<unsigned char>(16)};
        inet_pton(AF_INET6, ip, r.rdata.data());
        return r;
    }

    // Returns the rcode (or -1: never answer) and fills `answers`.
    static int lookup(std::string name, uint16_t type, std::vector<rr>& answers) {
        std::transform(name.begin(), name.end(), name.begin(), ::tolower);
        if (name == "timeout.test") return -1;
        if (name == "servfail.test") return 2;
        if (name == "refused.test") return 5;
        if (name == "mx.test") {
            if (type == t_mx) answers = {mx(10, "a.mx.test", 300), mx(10, "b.mx.test", 300), mx(5, "low.mx.test", 600)};
            return 0;
        }
        if (name == "nullmx.test") {
            if (type == t_mx) answers = {mx(0, "", 3600)};
            return 0;
        }
        if (name == "aonly.test") {
            if (type == t_a) answers = {a("127.0.0.7", 60)};
            return 0;
        }
        if (name == "dual.test") {
            if (type == t_a) answers = {a("127.0.0.8", 120), a("127.0.0.9", 120)};
            if (type == t_aaaa) answers = {aaaa("::1", 90)};
            return 0;
        }
        if (name == "v6only.test") {
            if (type == t_aaaa) answers = {aaaa("2001:db8::25", 30)};
            return 0;
        }
        return 3;  // NXDOMAIN
    }

    void serve() {
        unsigned char q[512];
        while (!_stop) {
            pollfd p{_fd, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            sockaddr_storage from{};
            socklen_t fromlen = sizeof from;
            ssize_t n = ::recvfrom(_fd, q, sizeof q, 0, reinterpret_cast<sockaddr*>(&from), &fromlen);
            if (n < 12) continue;
            ++_queries;
            // Question: labels, then type and class.
            size_t off = 12;
            std::string name;
            while (off < size_t(n) && q[off] != 0) {
                size_t l = q[off];
                if (!name.empty()) name += '.';
                name.append(reinterpret_cast<char*>(q + off + 1), l);
                off += l + 1;
            }
            off += 1;
            if (off + 4 > size_t(n)) continue;
            uint16_t type = uint16_t((q[off] << 8) | q[off + 1]);
            size_t qend = off + 4;

            std::vector<rr> answers;
            int rcode = lookup(name, type, answers);
            if (rcode < 0) continue;  // the server that never answers
            std::vector<unsigned char> r(q, q + qend);
            r[2] = static_cast<unsigned char>(0x84 | (q[2] & 0x01));  // QR, AA, RD copied
            r[3] = static_cast<unsigned char>(0x80 | rcode);         // RA, rcode
            r[4] = 0; r[5] = 1;                                      // qdcount
            r[6] = 0; r[7] = static_cast<unsigned char>(answers.size());
            r[8] = r[9] = r[10] = r[11] = 0;
            for (const auto& a : answers) {
                unsigned char h[12] = {0xC0, 0x0C, static_cast<unsigned char>(a.type >> 8), static_cast<unsigned char>(a.type),
                                       0, 1,
                                       static_cast<unsigned char>(a.ttl >> 24), static_cast<unsigned char>(a.ttl >> 16),
                                       static_cast<unsigned char>(a.ttl >> 8), static_cast<unsigned char>(a.ttl),
                                       static_cast<unsigned char>(a.rdata.size() >> 8), static_cast<unsigned char>(a.rdata.size())};
                r.insert(r.end(), h, h + 12);
                r.insert(r.end(), a.rdata.begin(), a.rdata.end());
            }
            ::sendto(_fd, r.data(), r.size(), 0, reinterpret_cast<sockaddr*>(&from), fromlen);
        }
    }

    int _fd = -1;
    uint16_t _port = 0;
    std::atomic<bool> _stop{false};
    std::atomic<int> _queries{0};
    std::thread _thread;
};

class DnsResolverTest : public ::testing::Test {
protected:
    void SetUp() override { set_this_ring(&_ring); }
    void TearDown() override {
        _resolver.reset();
        drain();
        set_this_ring(nullptr);
    }

    resolver& make(std::chrono::milliseconds timeout = 1000ms, int tries = 2) {
        resolver_options o;
        o.servers = {_server.address()};
        o.timeout = timeout;
        o.tries = tries;
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
