#include "engine/dns_resolver.h"

#include <ares.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <poll.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <mutex>
#include <unordered_map>

#include "engine/ring.h"

namespace ringmail::engine::dns {

std::string_view describe(resolver_error e) {
    switch (e) {
        case resolver_error::init_failed: return "c-ares initialisation failed";
        case resolver_error::bad_servers: return "invalid DNS server list (expected ip:port entries)";
    }
    return "?";
}

namespace {

int64_t steady_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

struct query_batch;

}  // namespace

struct resolver::impl {
    struct fd_watch;
    struct timer;

    ring* r = nullptr;
    ares_channel channel = nullptr;
    std::unordered_map<int, fd_watch*> watches;
    timer* armed_timer = nullptr;
    // At most max_in_flight queries are sent at once; later batches wait here
    // (FIFO) so that a burst (a flushed queue over thousands of domains) does
    // not overrun the resolver, which would drop queries and fail them all.
    unsigned max_in_flight = 100;
    unsigned in_flight = 0;
    std::deque<query_batch*> waiting;

    ~impl();
    void on_sock_state(int fd, bool readable, bool writable);
    void process(ares_socket_t rfd, ares_socket_t wfd);
    void start_waiting();
    void update_timer();
    void cancel_timer();
};

// One c-ares socket, watched with one-shot POLL_ADDs. Frees itself on its last
// CQE once orphaned (socket closed or resolver gone).
struct resolver::impl::fd_watch final : completion {
    impl* owner;
    int fd;
    unsigned want = 0;
    unsigned armed_mask = 0;
    bool armed = false;
    bool removing = false;
    bool dispatching = false;

    fd_watch(impl* o, int f) : owner(o), fd(f) {}

    void arm() {
        io_uring_sqe* s = owner->r->sqe();
        io_uring_prep_poll_add(s, fd, want);
        io_uring_sqe_set_data(s, static_cast<completion*>(this));
        armed = true;
        armed_mask = want;
    }
    // Cancels the armed poll; its CQE (-ECANCELED, or readiness) follows.
    void remove(ring* rg) {
        if (!armed || removing) return;
        removing = true;
        io_uring_sqe* s = rg->sqe();
        io_uring_prep_poll_remove(s, reinterpret_cast<__u64>(static_cast<completion*>(this)));
        io_uring_sqe_set_data(s, nullptr);
    }
    // The socket is closed or the resolver is going away: stop watching and
    // free this now, or on the last CQE if a poll is armed or being dispatched.
    void orphan(ring* rg) {
        owner = nullptr;
        want = 0;
        if (armed)
            remove(rg);
        else if (!dispatching)
            delete this;
    }
    void on_cqe(int res, uint32_t) override {
        armed = false;
        removing = false;
        if (owner == nullptr) {
            delete this;
            return;
        }
        dispatching = true;
        if (res > 0) {
            bool rd = (res & (POLLIN | POLLERR | POLLHUP)) != 0;
            bool wr = (res & (POLLOUT | POLLERR | POLLHUP)) != 0;
            owner->process(rd ? fd : ARES_SOCKET_BAD, wr ? fd : ARES_SOCKET_BAD);
        } else if (res != -ECANCELED) {
            // Unexpected poll error: let c-ares read the socket and notice.
            owner->process(fd, ARES_SOCKET_BAD);
        }
        dispatching = false;
        if (owner == nullptr) {  // closed while processing
            delete this;
            return;
        }
        if (want != 0) arm();
    }
};

// A c-ares timeout. Exactly one CQE (fired or removed); frees itself on it.
struct resolver::impl::timer final : completion {
    impl* owner;
    __kernel_timespec ts{};
    int64_t deadline_ms;

    timer(impl* o, int64_t delay_ms) : owner(o), deadline_ms(steady_ms() + delay_ms) {
        ts.tv_sec = delay_ms / 1000;
        ts.tv_nsec = (delay_ms % 1000) * 1000000;
    }
    void on_cqe(int, uint32_t) override {
        impl* o = owner;
        delete this;
        if (o == nullptr) return;
        o->armed_timer = nullptr;
        o->process(ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // runs c-ares timeouts
    }
};

void resolver::impl::on_sock_state(int fd, bool readable, bool writable) {
    unsigned want = (readable ? POLLIN : 0u) | (writable ? POLLOUT : 0u);
    auto it = watches.find(fd);
    if (want == 0) {  // c-ares is closing the socket
        if (it == watches.end()) return;
        fd_watch* w = it->second;
        watches.erase(it);
        w->orphan(r);
        return;
    }
    if (it == watches.end()) {
        auto* w = new fd_watch(this, fd);
        watches.emplace(fd, w);
        w->want = want;
        w->arm();
        return;
    }
    fd_watch* w = it->second;
    w->want = want;
    if (w->armed && w->armed_mask != want) w->remove(r);  // re-armed with `want` on its CQE
    // Not armed: it is dispatching and re-arms with `want` when done.
}

void resolver::impl::process(ares_socket_t rfd, ares_socket_t wfd) {
    ares_process_fd(channel, rfd, wfd);
    start_waiting();  // outside c-ares: answers above made room
    update_timer();
}

void resolver::impl::cancel_timer() {
    if (armed_timer == nullptr) return;
    armed_timer->owner = nullptr;
    io_uring_sqe* s = r->sqe();
    io_uring_prep_timeout_remove(s, reinterpret_cast<__u64>(static_cast<completion*>(armed_timer)), 0);
    io_uring_sqe_set_data(s, nullptr);
    armed_timer = nullptr;
}

void resolver::impl::update_timer() {
    timeval tv{};
    if (ares_timeout(channel, nullptr, &tv) == nullptr) {
        cancel_timer();  // nothing pending
        return;
    }
    int64_t delay = int64_t(tv.tv_sec) * 1000 + (tv.tv_usec + 999) / 1000;
    if (delay < 1) delay = 1;
    int64_t due = steady_ms() + delay;
    // An armed timer that fires no later than needed is kept (an early wake-up
    // only makes c-ares check its timeouts once more).
    if (armed_timer != nullptr && armed_timer->deadline_ms <= due) return;
    cancel_timer();
    auto* t = new timer(this, delay);
    io_uring_sqe* s = r->sqe();
    io_uring_prep_timeout(s, &t->ts, 0, 0);
    io_uring_sqe_set_data(s, static_cast<completion*>(t));
    armed_timer = t;
}

namespace {

void sock_state_cb(void* data, ares_socket_t fd, int readable, int writable) {
    static_cast<resolver::impl*>(data)->on_sock_state(fd, readable != 0, writable != 0);
}

// Up to two queries in flight together; resumes the coroutine (via
// ring::post, outside c-ares) when all have answered.
struct query_batch {
    struct one {
        query_batch* parent = nullptr;
        int type = 0;
        int status = ARES_ETIMEOUT;
        std::vector<unsigned char> answer;
    };
    resolver::impl* r = nullptr;
    const std::string* name = nullptr;
    std::array<one, 2> q{};
    int count = 0;
    int remaining = 0;
    bool submitting = false;
    std::coroutine_handle<> waiter;

    static void callback(void* arg, int status, int, unsigned char* abuf, int alen) {
        auto* o = static_cast<one*>(arg);
        o->status = status;
        if (abuf != nullptr && alen > 0) o->answer.assign(abuf, abuf + alen);
        query_batch* p = o->parent;
        --p->r->in_flight;
        if (--p->remaining == 0 && !p->submitting) p->r->r->post(p->waiter);
    }

    // Sends the queries; false when they all ended at once (no callback to wait for).
    bool submit() {
        remaining = count;
        submitting = true;
        for (int i = 0; i < count; ++i) {
            q[i].parent = this;
            ++r->in_flight;
            ares_query(r->channel, name->c_str(), ns_c_in, q[i].type, &callback, &q[i]);
        }
        submitting = false;
        return remaining != 0;
    }

    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
        waiter = h;
        if (!r->waiting.empty() || r->in_flight + static_cast<unsigned>(count) > r->max_in_flight) {
            r->waiting.push_back(this);  // started by start_waiting() when answers make room
            return true;
        }
        if (!submit()) return false;  // all failed synchronously
        r->update_timer();
        return true;
    }
    void await_resume() const noexcept {}
};

}  // namespace

resolver::impl::~impl() {
    // Batches never sent end `temporary` (their status stays ARES_ETIMEOUT).
    for (query_batch* b : waiting) r->post(b->waiter);
    waiting.clear();
    if (channel != nullptr) ares_destroy(channel);  // pending queries end with ARES_EDESTRUCTION
    for (auto& [fd, w] : watches) w->orphan(r);
    watches.clear();
    cancel_timer();
}

void resolver::impl::start_waiting() {
    while (!waiting.empty() && in_flight + static_cast<unsigned>(waiting.front()->count) <= max_in_flight) {
        query_batch* b = waiting.front();
        waiting.pop_front();
        if (!b->submit()) r->post(b->waiter);  // ended at once: resume it like an answer
    }
}

namespace {

// Walks the answer section of a DNS response, calling f(type, ttl, rdata,
// rdlen) for each IN record. Returns false on a malformed message.
template <class F>
bool for_each_answer(const std::vector<unsigned char>& msg, F&& f) {
    const unsigned char* buf = msg.data();
    const int len = static_cast<int>(msg.size());
    if (len < HFIXEDSZ) return false;
    int qdcount = (buf[4] << 8) | buf[5];
    int ancount = (buf[6] << 8) | buf[7];
    const unsigned char* p = buf + HFIXEDSZ;
    auto skip_name = [&]() -> bool {
        char* name = nullptr;
        long enclen = 0;
        if (ares_expand_name(p, buf, len, &name, &enclen) != ARES_SUCCESS) return false;
        ares_free_string(name);
        p += enclen;
        return true;
    };
    for (int i = 0; i < qdcount; ++i) {
        if (!skip_name() || p + QFIXEDSZ > buf + len) return false;
        p += QFIXEDSZ;
    }
    for (int i = 0; i < ancount; ++i) {
        if (!skip_name() || p + RRFIXEDSZ > buf + len) return false;
        int type = (p[0] << 8) | p[1];
        int cls = (p[2] << 8) | p[3];
        uint32_t ttl = (uint32_t(p[4]) << 24) | (uint32_t(p[5]) << 16) | (uint32_t(p[6]) << 8) | p[7];
        int rdlen = (p[8] << 8) | p[9];
        p += RRFIXEDSZ;
        if (p + rdlen > buf + len) return false;
        if (cls == ns_c_in && !f(type, ttl, p, rdlen)) return false;
        p += rdlen;
    }
    return true;
}

}  // namespace

resolver::resolver(std::unique_ptr<impl> p) : _impl(std::move(p)) {}
resolver::~resolver() = default;

std::size_t resolver::watched_sockets() const { return _impl->watches.size(); }

result<std::unique_ptr<resolver>, resolver_error> resolver::create(const resolver_options& options) {
    static std::once_flag once;
    static int lib_rc = ARES_SUCCESS;
    std::call_once(once, [] { lib_rc = ares_library_init(ARES_LIB_INIT_ALL); });
    if (lib_rc != ARES_SUCCESS) return unexpected(resolver_error::init_failed);

    auto p = std::make_unique<impl>();
    p->r = &this_ring();
    ares_options o{};
    char lookups[] = "b";  // DNS only: no /etc/hosts
    o.sock_state_cb = &sock_state_cb;
    o.sock_state_cb_data = p.get();
    o.timeout = static_cast<int>(options.timeout.count());
    o.tries = options.tries;
    p->max_in_flight = std::max(2u, options.max_in_flight);
    o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    o.lookups = lookups;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS | ARES_OPT_LOOKUPS;
    if (ares_init_options(&p->channel, &o, mask) != ARES_SUCCESS) {
        p->channel = nullptr;
        return unexpected(resolver_error::init_failed);
    }
    if (!options.servers.empty()) {
        std::string csv;
        for (const auto& s : options.servers) {
            if (!csv.empty()) csv += ',';
            csv += s;
        }
        if (ares_set_servers_ports_csv(p->channel, csv.c_str()) != ARES_SUCCESS)
            return unexpected(resolver_error::bad_servers);
    }
    return std::unique_ptr<resolver>(new resolver(std::move(p)));
}

task<mx_answer> resolver::query_mx(std::string domain) {
    query_batch b;
    b.r = _impl.get();
    b.name = &domain;
    b.count = 1;
    b.q[0].type = ns_t_mx;
    co_await b;

    mx_answer out;
    out.outcome = classify_ares_status(b.q[0].status);
    if (out.outcome != dns_outcome::ok) co_return out;
    const auto& msg = b.q[0].answer;
    bool well_formed = for_each_answer(msg, [&](int type, uint32_t ttl, const unsigned char* rd, int rdlen) {
        if (type != ns_t_mx) return true;  // CNAMEs etc.
        if (rdlen < 3) return false;
        char* host = nullptr;
        long enclen = 0;
        if (ares_expand_name(rd + 2, msg.data(), static_cast<int>(msg.size()), &host, &enclen) != ARES_SUCCESS)
            return false;
        out.records.push_back({static_cast<uint16_t>((rd[0] << 8) | rd[1]), host, ttl});
        ares_free_string(host);
        return true;
    });
    if (!well_formed) {
        out.records.clear();
        out.outcome = dns_outcome::temporary;
    } else if (out.records.empty()) {
        out.outcome = dns_outcome::nodata;
    }
    co_return out;
}

task<address_answer> resolver::query_a_aaaa(std::string host) {
    query_batch b;
    b.r = _impl.get();
    b.name = &host;
    b.count = 2;
    b.q[0].type = ns_t_aaaa;
    b.q[1].type = ns_t_a;
    co_await b;

    address_answer out;
    std::array<dns_outcome, 2> outcomes{};
    for (int i = 0; i < 2; ++i) {
        outcomes[i] = classify_ares_status(b.q[i].status);
        if (outcomes[i] != dns_outcome::ok) continue;
        std::size_t before = out.addresses.size();
        bool well_formed = for_each_answer(b.q[i].answer, [&](int type, uint32_t ttl, const unsigned char* rd, int rdlen) {
            address_record rec;
            rec.ttl = ttl;
            if (type == ns_t_a && rdlen == 4) {
                sockaddr_in sin{};
                sin.sin_family = AF_INET;
                std::memcpy(&sin.sin_addr, rd, 4);
                rec.address = net::socket_address::from_sockaddr(reinterpret_cast<sockaddr*>(&sin), sizeof sin);
            } else if (type == ns_t_aaaa && rdlen == 16) {
                sockaddr_in6 sin6{};
                sin6.sin6_family = AF_INET6;
                std::memcpy(&sin6.sin6_addr, rd, 16);
                rec.address = net::socket_address::from_sockaddr(reinterpret_cast<sockaddr*>(&sin6), sizeof sin6);
            } else {
                return true;  // CNAME or a record of the wrong size
            }
            out.addresses.push_back(rec);
            return true;
        });
        if (!well_formed) {
            out.addresses.resize(before);
            outcomes[i] = dns_outcome::temporary;
        } else if (out.addresses.size() == before) {
            outcomes[i] = dns_outcome::nodata;
        }
    }
    if (!out.addresses.empty())
        out.outcome = dns_outcome::ok;
    else if (outcomes[0] == dns_outcome::temporary || outcomes[1] == dns_outcome::temporary)
        out.outcome = dns_outcome::temporary;
    else if (outcomes[0] == dns_outcome::nxdomain && outcomes[1] == dns_outcome::nxdomain)
        out.outcome = dns_outcome::nxdomain;
    else
        out.outcome = dns_outcome::nodata;
    co_return out;
}

}  // namespace ringmail::engine::dns
