// test_dns_server: a tiny authoritative UDP DNS server on 127.0.0.1 (a free
// port), run on a thread of the test, so resolver and cache tests never
// contact a real domain or server.
//
// - Zones are a table name -> (rcode, records); set() adds or replaces a name
//   at any time (guarded by a mutex). A query for a listed name returns its
//   records of the asked type (none: NODATA); an unlisted name is NXDOMAIN.
//   rcode -1 means "never answer" (a silent server).
// - The constructor loads the zone used by dns_resolver_test.
// - queries() counts every query received; queries(name, type) one name/type.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace ringmail::test_support {

constexpr uint16_t t_a = 1, t_mx = 15, t_aaaa = 28;

inline std::vector<unsigned char> encode_name(const std::string& name) {
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

class test_dns_server {
public:
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

    test_dns_server() {
        set("timeout.test", -1);
        set("servfail.test", 2);
        set("refused.test", 5);
        set("mx.test", 0, {mx(10, "a.mx.test", 300), mx(10, "b.mx.test", 300), mx(5, "low.mx.test", 600)});
        set("nullmx.test", 0, {mx(0, "", 3600)});
        set("aonly.test", 0, {a("127.0.0.7", 60)});
        set("dual.test", 0, {a("127.0.0.8", 120), a("127.0.0.9", 120), aaaa("::1", 90)});
        set("v6only.test", 0, {aaaa("2001:db8::25", 30)});

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
    test_dns_server(const test_dns_server&) = delete;
    test_dns_server& operator=(const test_dns_server&) = delete;

    std::string address() const { return "127.0.0.1:" + std::to_string(_port); }

    // Adds or replaces `name` (lower case, no trailing dot).
    void set(const std::string& name, int rcode, std::vector<rr> records = {}) {
        std::lock_guard lock(_mutex);
        _zone[name] = {rcode, std::move(records)};
    }

    int queries() const { return _queries; }
    int queries(const std::string& name, uint16_t type) const {
        std::lock_guard lock(_mutex);
        auto it = _counts.find({name, type});
        return it == _counts.end() ? 0 : it->second;
    }

private:
    struct zone_entry {
        int rcode = 0;
        std::vector<rr> records;
    };

    // Returns the rcode (or -1: never answer) and fills `answers`.
    int lookup(std::string name, uint16_t type, std::vector<rr>& answers) {
        std::transform(name.begin(), name.end(), name.begin(), ::tolower);
        std::lock_guard lock(_mutex);
        ++_counts[{name, type}];
        auto it = _zone.find(name);
        if (it == _zone.end()) return 3;  // NXDOMAIN
        for (const auto& r : it->second.records)
            if (r.type == type) answers.push_back(r);
        return it->second.rcode;
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
    mutable std::mutex _mutex;
    std::map<std::string, zone_entry> _zone;
    std::map<std::pair<std::string, uint16_t>, int> _counts;
    std::thread _thread;
};

}  // namespace ringmail::test_support
