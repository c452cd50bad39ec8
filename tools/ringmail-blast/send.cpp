#include "tools/ringmail-blast/send.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <sys/resource.h>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/io.h"
#include "engine/log.h"
#include "engine/shard.h"
#include "engine/task.h"
#include "engine/tls.h"
#include "protocols/smtp/dot_stuffing.h"
#include "protocols/smtp/reply_parser.h"
#include "tools/ringmail-blast/common.h"

namespace ringmail::blast {

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
constexpr size_t line_bytes = 78;  // 76 printable characters + CRLF

// Read-only after start; shared by every shard.
struct send_state {
    const send_options* opts = nullptr;
    std::vector<net::socket_address> to;
    std::vector<size_class> sizes;
    std::vector<double> cumulative;  // of size weights, for the pick
    std::vector<std::string> domains;
    std::string body_template;  // lines of printable text, some starting with "."
    bool pipelining = true;
    clock_type::time_point start;

    // --auth, base64 (RFC 4648): the PLAIN initial response (RFC 4616:
    // empty authzid NUL user NUL password) and LOGIN's user and password.
    std::string auth_plain, auth_user, auth_password;

    std::atomic<uint64_t> next_index{0};
    std::atomic<bool> stop{false};
    std::atomic<unsigned> finished{0};
    // --bdat, but a server did not offer CHUNKING: DATA was used (reported).
    std::atomic<bool> bdat_unavailable{false};

    // A condition that makes the whole run meaningless (e.g. --starttls and
    // the server does not offer it): the first one is kept and the run stops.
    std::mutex fatal_mu;
    std::string fatal;
    void set_fatal(std::string why) {
        {
            std::lock_guard<std::mutex> lock(fatal_mu);
            if (fatal.empty()) fatal = std::move(why);
        }
        stop.store(true);
    }
};

// Counters of one shard (single writer: that shard's thread).
struct shard_stats {
    counter attempted, accepted, refused, lost, rcpt_refusals, bytes, connect_errors;
    counter tls_connections;   // STARTTLS handshakes completed
    counter auth_connections;  // connections that got a 235 to AUTH
    counter auth_failures;     // connections whose AUTH got anything else (each gave up)
    std::array<counter, 600> codes{};  // outcome reply code per message
    latency_histogram latency;
};

struct shard_ctx {
    engine::shard* shard = nullptr;
    send_state* state = nullptr;
    shard_stats stats;
    std::vector<int> fds;  // per connection slot on this shard; -1 when closed
    // Written by this shard's thread, read after it was joined.
    std::string last_error;       // why the last connection attempt failed
    std::string last_auth_error;  // the last reply that refused AUTH
};

std::string base64(std::string_view in) {
    static constexpr char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= in.size(); i += 3) {
        uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
        out.push_back(digits[v >> 18]);
        out.push_back(digits[(v >> 12) & 63]);
        out.push_back(digits[(v >> 6) & 63]);
        out.push_back(digits[v & 63]);
    }
    if (size_t rest = in.size() - i) {
        uint32_t v = uint32_t(uint8_t(in[i])) << 16 | (rest == 2 ? uint32_t(uint8_t(in[i + 1])) << 8 : 0);
        out.push_back(digits[v >> 18]);
        out.push_back(digits[(v >> 12) & 63]);
        out.push_back(rest == 2 ? digits[(v >> 6) & 63] : '=');
        out.push_back('=');
    }
    return out;
}

std::string make_body_template(size_t bytes) {
    std::string t;
    t.reserve(bytes + line_bytes);
    static constexpr std::string_view words =
        "the quick brown fox jumps over the lazy dog while ringmail blasts mail through io_uring "
        "and every byte is counted checked and thrown away by the sink at the other end ";
    size_t w = 0;
    for (size_t line = 0; t.size() < bytes; ++line) {
        // Every seventh line starts with "." (and one with ".."): dot-stuffing must be exact.
        size_t start = t.size();
        if (line % 7 == 3) t.push_back('.');
        if (line % 49 == 10) t.append("..");
        while (t.size() - start < line_bytes - 2) {
            t.push_back(words[w]);
            w = (w + 1) % words.size();
        }
        t.append("\r\n");
    }
    return t;
}

// Appends the decimal digits of `v` (build_message is on the hot path: no fmt).
inline void append_dec(std::string& out, uint64_t v) {
    char num[24];
    auto r = std::to_chars(num, num + sizeof num, v);
    out.append(num, size_t(r.ptr - num));
}

inline void append_hex16(std::string& out, uint64_t v) {
    static constexpr char digits[] = "0123456789abcdef";
    char h[16];
    for (int i = 15; i >= 0; --i, v >>= 4) h[i] = digits[v & 15];
    out.append(h, 16);
}

class connection {
public:
    connection(shard_ctx& ctx, unsigned global_index, unsigned slot)
        : _ctx(ctx), _st(*ctx.state), _opts(*ctx.state->opts), _conn(global_index), _slot(slot),
          _timeout(std::chrono::milliseconds(uint64_t(_opts.timeout_s) * 1000)) {}

    engine::task<void> run();

private:
    enum class outcome { accepted, refused, lost };
    // failed: count a connect error and retry; give_up: end this connection
    // (AUTH refused, or a fatal condition was set).
    enum class open_result { ok, failed, give_up };

    engine::task<open_result> open();
    // EHLO (HELO when refused); learns the capabilities.
    engine::task<bool> ehlo();
    // STARTTLS, the handshake, EHLO again.
    engine::task<bool> starttls(const net::socket_address& dest);
    // AUTH PLAIN (initial response) when offered, else AUTH LOGIN.
    engine::task<open_result> authenticate(const net::socket_address& dest);
    engine::task<void> quit();
    void note_error(std::string what) { _ctx.last_error = std::move(what); }
    void close_fd() {
        _tls.reset();  // before the fd it talks over
        if (_fd >= 0) ::close(_fd);
        _fd = -1;
        _ctx.fds[_slot] = -1;
        _rbeg = _rend = 0;
    }
    // Reads one reply; 0 when the connection failed or the reply was malformed.
    // `text`, when given, gets the reply's lines (joined by " / ").
    engine::task<int> read_reply(bool keep_caps = false, std::string* text = nullptr);
    engine::task<bool> send_all(std::string_view data);
    engine::task<int> command(std::string line, std::string* text);
    engine::task<bool> send_iov(std::vector<iovec>& iov);
    bool take_index(uint64_t& idx);
    bool work_left() const;  // messages not yet taken, and no stop
    void build_message(uint64_t idx);
    engine::task<outcome> transact(int& code);
    // Pipelining across messages (--window > 1); false when the connection was lost.
    engine::task<bool> run_bdat_batches(bool& done);
    engine::task<bool> run_data_chain(bool& done);
    void append_commands(std::string& out, bool bdat);
    void record_latency(clock_type::time_point t0) {
        _ctx.stats.latency.record_us(
            uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0).count()));
    }
    // Counts one message's outcome (after attempted was counted).
    void count(outcome o, int code, size_t bytes) {
        auto& stats = _ctx.stats;
        if (o == outcome::lost) {
            stats.lost.add();
            return;
        }
        if (code > 0 && code < 600) stats.codes[size_t(code)].add();
        if (o == outcome::accepted) {
            stats.accepted.add();
            stats.bytes.add(bytes);
        } else {
            stats.refused.add();
        }
    }

    shard_ctx& _ctx;
    send_state& _st;
    const send_options& _opts;
    unsigned _conn;
    unsigned _failed_opens = 0;  // moves this connection to the next target
    unsigned _slot;
    std::chrono::milliseconds _timeout;
    int _fd = -1;
    std::unique_ptr<engine::tls::session> _tls;  // after STARTTLS: every byte goes through it
    bool _pipelining = false;
    bool _bdat = false;
    bool _size_offered = false;  // SIZE= only to a server that offers SIZE (RFC 1870)
    bool _starttls_offered = false;
    bool _auth_offered = false, _auth_plain = false, _auth_login = false;
    std::string _auth_mechanisms;
    uint64_t _seq = 0;

    // Replies: received straight into _rbuf, parsed from _rbeg up to _rend.
    std::unique_ptr<char[]> _rbuf{new char[rbuf_bytes]};
    size_t _rbeg = 0, _rend = 0;
    static constexpr size_t rbuf_bytes = 64 * 1024;
    std::string _batch;    // pipelined commands and messages of one write (--window)
    std::vector<size_t> _sizes;  // message sizes of the batch in flight
    std::string _cmd;      // MAIL/RCPT/DATA group
    std::string _msg;      // the message, reused
    std::string _tail;     // varying end of the body
    std::vector<iovec> _iov;
    std::vector<std::pair<size_t, uint64_t>> _prefix_hash;  // template prefix length -> FNV state
    std::vector<std::string_view> _rcpt_list;
    std::string _rcpt_store;
};

engine::task<bool> connection::send_all(std::string_view data) {
    if (_tls) {
        engine::tls::tls_result<void> sent = co_await _tls->write(data, _timeout);
        co_return sent.ok();
    }
    while (!data.empty()) {
        int n = co_await engine::async_send(_fd, data.data(), data.size(), _timeout);
        if (n <= 0) co_return false;
        data.remove_prefix(size_t(n));
    }
    co_return true;
}

engine::task<bool> connection::send_iov(std::vector<iovec>& iov) {
    if (_tls) {
        engine::tls::tls_result<void> sent = co_await _tls->write(std::span<const iovec>(iov), _timeout);
        co_return sent.ok();
    }
    size_t first = 0;
    while (first < iov.size()) {
        size_t count = std::min<size_t>(iov.size() - first, 1024);  // IOV_MAX
        int n = co_await engine::async_sendmsg(_fd, iov.data() + first, count, _timeout);
        if (n <= 0) co_return false;
        size_t sent = size_t(n);
        while (sent > 0 && first < iov.size()) {
            if (sent >= iov[first].iov_len) {
                sent -= iov[first].iov_len;
                ++first;
            } else {
                iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + sent;
                iov[first].iov_len -= sent;
                sent = 0;
            }
        }
    }
    co_return true;
}

engine::task<int> connection::read_reply(bool keep_caps, std::string* text) {
    for (;;) {
        auto p = smtp::parse_reply(std::string_view(_rbuf.get() + _rbeg, _rend - _rbeg));
        if (p.status == smtp::parse_status::complete) {
            if (keep_caps && p.code / 100 == 2) {
                auto caps = smtp::parse_ehlo_capabilities(p.raw);
                _pipelining = caps.pipelining && _st.pipelining;
                _bdat = caps.chunking && _opts.bdat;
                _size_offered = caps.size;
                _starttls_offered = caps.starttls;
                _auth_offered = caps.auth;
                _auth_mechanisms.assign(caps.auth_mechanisms);
                _auth_plain = caps.auth && smtp::auth_has_mechanism(caps.auth_mechanisms, "PLAIN");
                _auth_login = caps.auth && smtp::auth_has_mechanism(caps.auth_mechanisms, "LOGIN");
            }
            if (text) {
                text->clear();
                std::string_view rest = p.raw, line;
                while (smtp::next_reply_line(rest, line)) {
                    if (!text->empty()) text->append(" / ");
                    text->append(std::to_string(p.code)).push_back(' ');
                    text->append(line);
                }
            }
            _rbeg += p.consumed;
            if (_rbeg == _rend) _rbeg = _rend = 0;
            co_return p.code;
        }
        if (p.status == smtp::parse_status::error) co_return 0;
        if (_rend == rbuf_bytes) {
            if (_rbeg == 0) co_return 0;  // one reply larger than the buffer
            std::memmove(_rbuf.get(), _rbuf.get() + _rbeg, _rend - _rbeg);
            _rend -= _rbeg;
            _rbeg = 0;
        }
        int n = 0;
        if (_tls) {
            engine::tls::tls_result<size_t> got = co_await _tls->read(_rbuf.get() + _rend, rbuf_bytes - _rend, _timeout);
            if (!got) co_return 0;
            n = int(*got);
        } else {
            n = co_await engine::async_recv(_fd, _rbuf.get() + _rend, rbuf_bytes - _rend, _timeout);
        }
        if (n <= 0) co_return 0;
        _rend += size_t(n);
    }
}

engine::task<connection::open_result> connection::open() {
    // A connection whose target refused it tries the next one: a dead target
    // among several costs connect errors, not connections.
    const auto& dest = _st.to[(_conn + _failed_opens) % _st.to.size()];
    _fd = ::socket(dest.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (_fd < 0) {
        note_error(fmt::format("socket: {}", std::strerror(errno)));
        co_return open_result::failed;
    }
    _ctx.fds[_slot] = _fd;
    int one = 1;
    ::setsockopt(_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = co_await engine::async_connect(_fd, dest.sockaddr_ptr(), dest.length(), _timeout);
    if (rc < 0) {
        note_error(fmt::format("connect to {}: {}", dest.to_string(), std::strerror(-rc)));
        co_return open_result::failed;
    }
    std::string text;
    int greeting = co_await read_reply(false, &text);
    if (greeting != 220) {
        std::string why = greeting == 0 ? std::string("no greeting") : text;
        note_error(fmt::format("{}: {}", dest.to_string(), why));
        co_return open_result::failed;
    }
    bool greeted = co_await ehlo();
    if (!greeted) {
        note_error(fmt::format("{}: EHLO and HELO failed", dest.to_string()));
        co_return open_result::failed;
    }
    if (_opts.starttls) {
        if (!_starttls_offered) {
            _st.set_fatal(fmt::format("--starttls: {} does not offer STARTTLS", dest.to_string()));
            co_return open_result::give_up;
        }
        bool secured = co_await starttls(dest);
        if (!secured) co_return open_result::failed;
    }
    if (!_opts.auth.empty()) {
        open_result authed = co_await authenticate(dest);
        co_return authed;
    }
    co_return open_result::ok;
}

engine::task<bool> connection::ehlo() {
    _pipelining = _bdat = _starttls_offered = _size_offered = false;
    _auth_offered = _auth_plain = _auth_login = false;
    std::string cmd = fmt::format("EHLO {}\r\n", _opts.helo);
    bool sent = co_await send_all(cmd);
    if (!sent) co_return false;
    int code = co_await read_reply(true);
    if (code == 0) co_return false;
    if (code / 100 != 2) {
        std::string helo = fmt::format("HELO {}\r\n", _opts.helo);
        bool helo_sent = co_await send_all(helo);
        if (!helo_sent) co_return false;
        int helo_code = co_await read_reply();
        if (helo_code / 100 != 2) co_return false;
    }
    co_return true;
}

engine::task<bool> connection::starttls(const net::socket_address& dest) {
    std::string peer = dest.to_string();
    bool sent = co_await send_all("STARTTLS\r\n");
    if (!sent) {
        note_error(fmt::format("{}: connection lost sending STARTTLS", peer));
        co_return false;
    }
    std::string text;
    int code = co_await read_reply(false, &text);
    if (code != 220) {
        std::string why = code == 0 ? std::string("connection lost") : text;
        note_error(fmt::format("{}: STARTTLS: {}", peer, why));
        co_return false;
    }
    // RFC 3207 §4.2: nothing may come in the clear after the 220.
    if (_rend != _rbeg) {
        note_error(fmt::format("{}: data in the clear after the 220 to STARTTLS", peer));
        co_return false;
    }
    // A load tool on loopback: encrypt, accept any certificate.
    auto ctx = engine::tls::shared_client_context(engine::tls::context_options{});
    if (!ctx) {
        note_error(fmt::format("TLS: {}", ctx.error().message));
        co_return false;
    }
    auto created = engine::tls::session::create(ctx.value(), _fd);
    if (!created) {
        note_error(fmt::format("TLS: {}", created.error().message));
        co_return false;
    }
    std::unique_ptr<engine::tls::session> session = std::move(*created);
    std::string name = dest.host_string();  // SNI (not sent for an address literal, RFC 6066 §3)
    engine::tls::tls_result<void> shaken = co_await session->handshake(name, _timeout);
    if (!shaken) {
        note_error(fmt::format("{}: {}", peer, shaken.error().message));
        co_return false;
    }
    _tls = std::move(session);
    _ctx.stats.tls_connections.add();
    // RFC 3207 §4.2: forget the capabilities learnt in the clear; ask again.
    bool greeted = co_await ehlo();
    if (!greeted) note_error(fmt::format("{}: EHLO after STARTTLS failed", peer));
    co_return greeted;
}

engine::task<connection::open_result> connection::authenticate(const net::socket_address& dest) {
    std::string peer = dest.to_string();
    if (!_auth_offered) {
        std::string hint = _tls ? std::string() : std::string(" (many servers offer AUTH only after STARTTLS: try --starttls)");
        _st.set_fatal(fmt::format("--auth: {} does not offer AUTH{}", peer, hint));
        co_return open_result::give_up;
    }
    if (!_auth_plain && !_auth_login) {
        _st.set_fatal(fmt::format("--auth: {} offers AUTH {} but neither PLAIN nor LOGIN", peer, _auth_mechanisms));
        co_return open_result::give_up;
    }
    std::string text;
    int code = 0;
    if (_auth_plain) {
        // RFC 4954 §4: the initial response saves a round trip.
        std::string cmd = "AUTH PLAIN " + _st.auth_plain + "\r\n";  // named: no temporaries in co_await (GCC 12)
        int reply = co_await command(cmd, &text);
        code = reply;
    } else {
        // LOGIN: 334 for the user name, 334 for the password, then the verdict.
        int reply = co_await command("AUTH LOGIN\r\n", &text);
        if (reply == 334) {
            std::string user = _st.auth_user + "\r\n";
            int after_user = co_await command(user, &text);
            reply = after_user;
        }
        if (reply == 334) {
            std::string password = _st.auth_password + "\r\n";
            int after_password = co_await command(password, &text);
            reply = after_password;
        }
        code = reply;
    }
    if (code == 235) {
        _ctx.stats.auth_connections.add();
        co_return open_result::ok;
    }
    // Anything else ends this connection: retrying the same credentials would
    // only repeat the refusal.
    _ctx.stats.auth_failures.add();
    std::string mechanism = _auth_plain ? std::string("PLAIN") : std::string("LOGIN");
    std::string why = code == 0 ? std::string("no reply (connection lost or timeout)") : text;
    _ctx.last_auth_error = fmt::format("{}: AUTH {}: {}", peer, mechanism, why);
    co_return open_result::give_up;
}

// One command line and its reply code; 0 when the connection was lost.
engine::task<int> connection::command(std::string line, std::string* text) {
    bool sent = co_await send_all(line);
    if (!sent) co_return 0;
    int code = co_await read_reply(false, text);
    co_return code;
}

engine::task<void> connection::quit() {
    bool sent = co_await send_all("QUIT\r\n");
    if (sent) {
        int code = co_await read_reply();
        (void)code;
    }
}

bool connection::work_left() const {
    if (_st.stop.load(std::memory_order_relaxed)) return false;
    return _opts.messages == 0 || _st.next_index.load(std::memory_order_relaxed) < _opts.messages;
}

bool connection::take_index(uint64_t& idx) {
    if (_st.stop.load(std::memory_order_relaxed)) return false;
    idx = _st.next_index.fetch_add(1, std::memory_order_relaxed);
    if (_opts.messages > 0 && idx >= _opts.messages) return false;
    return true;
}

void connection::build_message(uint64_t idx) {
    // Size: a weighted pick from the distribution, a function of the seed and
    // the message's number, so a seed gives the same sizes whichever
    // connection sends which message.
    const uint64_t pick = mix(_opts.seed ^ mix(idx + 1));
    double r = double(pick >> 11) / double(1ULL << 53) * _st.cumulative.back();
    size_t k = size_t(std::lower_bound(_st.cumulative.begin(), _st.cumulative.end(), r) - _st.cumulative.begin());
    uint64_t target = _st.sizes[std::min(k, _st.sizes.size() - 1)].bytes;

    // Recipients, spread over the domains.
    _rcpt_store.clear();
    for (unsigned i = 0; i < _opts.rcpts; ++i) {
        uint64_t n = idx * _opts.rcpts + i;
        _rcpt_store.push_back('u');
        append_dec(_rcpt_store, n % 1000);
        _rcpt_store.push_back('@');
        _rcpt_store.append(_st.domains[n % _st.domains.size()]);
        _rcpt_store.push_back('\n');
    }
    _rcpt_list.clear();
    for (std::string_view rest = _rcpt_store; !rest.empty();) {
        size_t e = rest.find('\n');
        _rcpt_list.push_back(rest.substr(0, e));
        rest.remove_prefix(e + 1);
    }

    // Headers first (without the checksum) to learn their length.
    ++_seq;
    _msg.clear();
    _msg.append("From: <").append(_opts.from).append(">\r\nTo: <").append(_rcpt_list[0]);
    _msg.append(">\r\nSubject: blast ");
    append_dec(_msg, idx);
    _msg.append("\r\nMessage-ID: <");  // <seed>-<message number>: one per message, the same set per seed
    append_dec(_msg, _opts.seed);
    _msg.push_back('-');
    append_dec(_msg, idx);
    _msg.append("@blast>\r\nDate: Mon, 24 Nov 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n");
    size_t headers_len = _msg.size() + checksum_header.size() + 2 + 16 + 2 + 2;
    uint64_t body_len = target > headers_len + 40 ? target - headers_len : 40;

    // Body: a prefix of the shared template (hash state cached) and a tail that
    // names the message, so every body differs.
    size_t prefix = body_len > 2 * line_bytes ? size_t((body_len - line_bytes) / line_bytes) * line_bytes : 0;
    size_t rest = size_t(body_len - prefix);
    _tail.clear();
    _tail.append("blast message ");
    append_dec(_tail, idx);
    _tail.append(" connection ");
    append_dec(_tail, _conn);
    _tail.append(" sequence ");
    append_dec(_tail, _seq);
    _tail.append(" seed ");
    append_dec(_tail, _opts.seed);
    size_t first = std::min<size_t>(_tail.size(), 76);
    _tail.resize(first);
    if (rest >= first + 2) {
        size_t pad = std::min<size_t>(76, rest - 2) - first;
        _tail.append(pad, '-');
        _tail.append("\r\n");
        rest -= _tail.size();
        while (rest >= 3) {
            size_t n = std::min<size_t>(76, rest - 2);
            _tail.append(n, 'z');
            _tail.append("\r\n");
            rest -= n + 2;
        }
    } else {
        _tail.append("\r\n");
    }
    uint64_t h = fnv_offset;
    if (prefix > 0) {
        auto it = std::find_if(_prefix_hash.begin(), _prefix_hash.end(), [&](auto& p) { return p.first == prefix; });
        if (it == _prefix_hash.end()) {
            _prefix_hash.emplace_back(prefix, fnv1a(fnv_offset, std::string_view(_st.body_template).substr(0, prefix)));
            it = _prefix_hash.end() - 1;
        }
        h = it->second;
    }
    h = fnv1a(h, _tail);
    _msg.append(checksum_header).append(": ");
    append_hex16(_msg, h);
    _msg.append("\r\n\r\n");
    _msg.append(_st.body_template, 0, prefix);
    _msg.append(_tail);
}

// A 2xx or 3xx to DATA other than 354 is out of step (RFC 5321 §4.3.2): the
// server did not take a body, nor did it refuse one; the state of the
// connection is unknown, so the message counts as lost and it is closed.
bool out_of_step_data_reply(int c) { return c != 354 && (c / 100 == 2 || c / 100 == 3); }

engine::task<connection::outcome> connection::transact(int& code) {
    auto& stats = _ctx.stats;
    _cmd.clear();
    if (_size_offered) fmt::format_to(std::back_inserter(_cmd), "MAIL FROM:<{}> SIZE={}\r\n", _opts.from, _msg.size());
    else fmt::format_to(std::back_inserter(_cmd), "MAIL FROM:<{}>\r\n", _opts.from);
    size_t mail_end = _cmd.size();
    for (auto r : _rcpt_list) fmt::format_to(std::back_inserter(_cmd), "RCPT TO:<{}>\r\n", r);
    size_t rcpts_end = _cmd.size();
    size_t accepted = 0;
    int mail_code = 0, last_rcpt_code = 0;

    if (_pipelining) {
        // RFC 2920: MAIL, RCPTs and DATA (or BDAT with its chunk) in one write.
        _iov.clear();
        if (_bdat) {
            fmt::format_to(std::back_inserter(_cmd), "BDAT {} LAST\r\n", _msg.size());
            _iov.push_back({_cmd.data(), _cmd.size()});
            _iov.push_back({_msg.data(), _msg.size()});
        } else {
            _cmd.append("DATA\r\n");
            _iov.push_back({_cmd.data(), _cmd.size()});
        }
        if (!co_await send_iov(_iov)) co_return outcome::lost;
        auto t0 = clock_type::now();
        mail_code = co_await read_reply();
        if (mail_code == 0) co_return outcome::lost;
        for (size_t i = 0; i < _rcpt_list.size(); ++i) {
            int c = co_await read_reply();
            if (c == 0) co_return outcome::lost;
            if (c / 100 == 2) ++accepted;
            else {
                // After a refused MAIL the RCPT replies (503) refuse nobody.
                if (mail_code / 100 == 2) stats.rcpt_refusals.add();
                last_rcpt_code = c;
            }
        }
        int c = co_await read_reply();
        if (c == 0) co_return outcome::lost;
        if (_bdat) {
            if (mail_code / 100 == 2 && accepted > 0 && c / 100 == 2) {
                stats.latency.record_us(uint64_t(
                    std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0).count()));
                code = c;
                co_return outcome::accepted;
            }
            code = mail_code / 100 != 2 ? mail_code : accepted == 0 ? last_rcpt_code : c;
            co_return outcome::refused;
        }
        if (out_of_step_data_reply(c)) co_return outcome::lost;
        if (c != 354) {
            code = mail_code / 100 != 2 ? mail_code : accepted == 0 ? last_rcpt_code : c;
            co_return outcome::refused;
        }
        if (mail_code / 100 != 2 || accepted == 0) {
            // DATA was taken although nothing else was: end it empty.
            if (!co_await send_all(".\r\n") || co_await read_reply() == 0) co_return outcome::lost;
            code = mail_code / 100 != 2 ? mail_code : last_rcpt_code;
            co_return outcome::refused;
        }
    } else {
        if (!co_await send_all(std::string_view(_cmd).substr(0, mail_end))) co_return outcome::lost;
        mail_code = co_await read_reply();
        if (mail_code == 0) co_return outcome::lost;
        if (mail_code / 100 != 2) {
            code = mail_code;
            co_return outcome::refused;
        }
        size_t off = mail_end;
        for (size_t i = 0; i < _rcpt_list.size(); ++i) {
            size_t e = _cmd.find("\r\n", off) + 2;
            if (!co_await send_all(std::string_view(_cmd).substr(off, e - off))) co_return outcome::lost;
            off = e;
            int c = co_await read_reply();
            if (c == 0) co_return outcome::lost;
            if (c / 100 == 2) ++accepted;
            else {
                stats.rcpt_refusals.add();
                last_rcpt_code = c;
            }
        }
        (void)rcpts_end;
        if (accepted == 0) {
            code = last_rcpt_code;
            co_return outcome::refused;
        }
        if (_bdat) {
            _cmd.clear();
            fmt::format_to(std::back_inserter(_cmd), "BDAT {} LAST\r\n", _msg.size());
            _iov.clear();
            _iov.push_back({_cmd.data(), _cmd.size()});
            _iov.push_back({_msg.data(), _msg.size()});
            if (!co_await send_iov(_iov)) co_return outcome::lost;
            auto t0 = clock_type::now();
            int c = co_await read_reply();
            if (c == 0) co_return outcome::lost;
            code = c;
            if (c / 100 != 2) co_return outcome::refused;
            stats.latency.record_us(
                uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0).count()));
            co_return outcome::accepted;
        }
        if (!co_await send_all("DATA\r\n")) co_return outcome::lost;
        int c = co_await read_reply();
        if (c == 0 || out_of_step_data_reply(c)) co_return outcome::lost;
        if (c != 354) {
            code = c;
            co_return outcome::refused;
        }
    }
    // The content, dot-stuffed (RFC 5321 §4.5.2) and terminated.
    _iov.clear();
    smtp::dot_stuff_segments(_msg, _iov);
    if (!co_await send_iov(_iov)) co_return outcome::lost;
    auto t0 = clock_type::now();
    int c = co_await read_reply();
    if (c == 0) co_return outcome::lost;
    code = c;
    if (c / 100 != 2) co_return outcome::refused;
    stats.latency.record_us(
        uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0).count()));
    co_return outcome::accepted;
}

// MAIL, RCPTs and DATA or "BDAT <size> LAST" of the message in _msg.
void connection::append_commands(std::string& out, bool bdat) {
    char num[24];
    auto size_text = [&](uint64_t v) {
        auto r = std::to_chars(num, num + sizeof num, v);
        return std::string_view(num, size_t(r.ptr - num));
    };
    out.append("MAIL FROM:<").append(_opts.from).append(">");
    if (_size_offered) out.append(" SIZE=").append(size_text(_msg.size()));
    out.append("\r\n");
    for (auto r : _rcpt_list) out.append("RCPT TO:<").append(r).append(">\r\n");
    if (bdat) out.append("BDAT ").append(size_text(_msg.size())).append(" LAST\r\n");
    else out.append("DATA\r\n");
}

// --window N with BDAT: up to N whole transactions (MAIL, RCPTs, BDAT LAST and
// the content) in one write, then their replies in order (RFC 2920 allows
// every command of a group to be pipelined; RFC 3030 §4.2 lets BDAT be one
// of them). A refused transaction is followed by RSET once the group is done.
engine::task<bool> connection::run_bdat_batches(bool& done) {
    auto& stats = _ctx.stats;
    for (;;) {
        _batch.clear();
        _sizes.clear();
        uint64_t idx = 0;
        while (_sizes.size() < _opts.window && take_index(idx)) {
            build_message(idx);
            stats.attempted.add();
            append_commands(_batch, true);
            _batch.append(_msg);
            _sizes.push_back(_msg.size());
        }
        if (_sizes.empty()) {
            done = true;
            co_return true;
        }
        size_t n = _sizes.size();
        if (!co_await send_all(_batch)) {
            for (size_t i = 0; i < n; ++i) count(outcome::lost, 0, 0);
            co_return false;
        }
        auto t0 = clock_type::now();
        bool any_refused = false;
        for (size_t i = 0; i < n; ++i) {
            int mail_code = co_await read_reply();
            size_t accepted = 0;
            int last_rcpt_code = 0, c = 0;
            if (mail_code != 0) {
                for (size_t r = 0; r < _rcpt_list.size(); ++r) {
                    c = co_await read_reply();
                    if (c == 0) break;
                    if (c / 100 == 2) ++accepted;
                    else {
                        if (mail_code / 100 == 2) stats.rcpt_refusals.add();
                        last_rcpt_code = c;
                    }
                }
                if (c != 0 || _rcpt_list.empty()) c = co_await read_reply();
            }
            if (mail_code == 0 || c == 0) {
                for (size_t j = i; j < n; ++j) count(outcome::lost, 0, 0);
                co_return false;
            }
            if (mail_code / 100 == 2 && accepted > 0 && c / 100 == 2) {
                record_latency(t0);
                count(outcome::accepted, c, _sizes[i]);
            } else {
                any_refused = true;
                count(outcome::refused, mail_code / 100 != 2 ? mail_code : accepted == 0 ? last_rcpt_code : c, 0);
            }
        }
        if (any_refused && (!co_await send_all("RSET\r\n") || co_await read_reply() / 100 != 2)) co_return false;
    }
}

// --window N (N >= 2) with DATA: the content must wait for 354 (RFC 2920
// §3.1: DATA ends a group), but the next message's MAIL, RCPTs and DATA
// follow the end-of-data dot in the same write, so each message costs one
// round trip.
engine::task<bool> connection::run_data_chain(bool& done) {
    auto& stats = _ctx.stats;
    uint64_t idx = 0;
    if (!take_index(idx)) {
        done = true;
        co_return true;
    }
    build_message(idx);
    stats.attempted.add();
    _batch.clear();
    append_commands(_batch, false);
    if (!co_await send_all(_batch)) {
        count(outcome::lost, 0, 0);
        co_return false;
    }
    for (;;) {
        // Replies to the current message's MAIL, RCPTs and DATA.
        int mail_code = co_await read_reply();
        size_t accepted = 0;
        int last_rcpt_code = 0, c = mail_code;
        for (size_t r = 0; c != 0 && r < _rcpt_list.size(); ++r) {
            c = co_await read_reply();
            if (c == 0) break;
            if (c / 100 == 2) ++accepted;
            else {
                if (mail_code / 100 == 2) stats.rcpt_refusals.add();
                last_rcpt_code = c;
            }
        }
        if (c != 0) c = co_await read_reply();
        if (c == 0 || out_of_step_data_reply(c)) {
            count(outcome::lost, 0, 0);
            co_return false;
        }
        bool refused = c != 354 || mail_code / 100 != 2 || accepted == 0;
        if (refused) {
            if (c == 354) {
                // DATA was taken although nothing else was: end it empty.
                if (!co_await send_all(".\r\n") || co_await read_reply() == 0) {
                    count(outcome::lost, 0, 0);
                    co_return false;
                }
            }
            count(outcome::refused, mail_code / 100 != 2 ? mail_code : accepted == 0 ? last_rcpt_code : c, 0);
            if (!co_await send_all("RSET\r\n") || co_await read_reply() / 100 != 2) co_return false;
            if (!take_index(idx)) {
                done = true;
                co_return true;
            }
            build_message(idx);
            stats.attempted.add();
            _batch.clear();
            append_commands(_batch, false);
            if (!co_await send_all(_batch)) {
                count(outcome::lost, 0, 0);
                co_return false;
            }
            continue;
        }
        // The content, dot-stuffed, then the next message's commands.
        _batch.clear();
        _iov.clear();
        smtp::dot_stuff_segments(_msg, _iov);
        for (auto& v : _iov) _batch.append(static_cast<const char*>(v.iov_base), v.iov_len);
        size_t size = _msg.size();
        bool more = take_index(idx);
        if (more) {
            build_message(idx);
            stats.attempted.add();
            append_commands(_batch, false);
        }
        if (!co_await send_all(_batch)) {
            count(outcome::lost, 0, 0);
            if (more) count(outcome::lost, 0, 0);
            co_return false;
        }
        auto t0 = clock_type::now();
        c = co_await read_reply();
        if (c == 0) {
            count(outcome::lost, 0, 0);
            if (more) count(outcome::lost, 0, 0);
            co_return false;
        }
        if (c / 100 == 2) record_latency(t0);
        count(c / 100 == 2 ? outcome::accepted : outcome::refused, c, size);
        // A final reply ends the transaction either way (RFC 5321 §4.1.1.4),
        // so the next message's commands, already sent, need no RSET.
        if (!more) {
            done = true;
            co_return true;
        }
    }
}

engine::task<void> connection::run() {
    _ctx.shard->hold();
    auto& stats = _ctx.stats;
    unsigned failures = 0;
    bool done = false;
    while (!done && !_st.stop.load(std::memory_order_relaxed)) {
        open_result opened = co_await open();
        if (opened != open_result::ok) {
            close_fd();
            if (opened == open_result::give_up) break;
            stats.connect_errors.add();
            ++_failed_opens;
            // Every target failed several times: they are gone, give up this connection.
            if (++failures >= 10 * _st.to.size()) break;
            // Nothing left to send (the other connections took it all): done.
            if (!work_left()) break;
            if (failures % _st.to.size() == 0) co_await engine::sleep_op(200ms);  // each target tried once
            continue;
        }
        failures = 0;
        if (_opts.bdat && !_bdat) _st.bdat_unavailable.store(true, std::memory_order_relaxed);
        if (_pipelining && _opts.window > 1 && _opts.rate <= 0) {
            bool ok = _bdat ? co_await run_bdat_batches(done) : co_await run_data_chain(done);
            if (ok && done) co_await quit();
            close_fd();
            continue;
        }
        for (;;) {
            uint64_t idx = 0;
            if (!take_index(idx)) {
                done = true;
                co_await quit();
                break;
            }
            if (_opts.rate > 0) {
                // Paced in slices of at most 100 ms, so that a stop (SIGTERM,
                // --duration) is seen at once and nothing due later goes out early.
                auto due = _st.start + std::chrono::duration_cast<clock_type::duration>(
                                           std::chrono::duration<double>(double(idx) / _opts.rate));
                for (;;) {
                    auto now = clock_type::now();
                    if (due <= now || _st.stop.load(std::memory_order_relaxed)) break;
                    auto ms = std::chrono::ceil<std::chrono::milliseconds>(due - now);
                    co_await engine::sleep_op(std::min<std::chrono::milliseconds>(ms, 100ms));
                }
                if (_st.stop.load(std::memory_order_relaxed)) {  // never attempted: counted as unsent
                    done = true;
                    co_await quit();
                    break;
                }
            }
            build_message(idx);
            stats.attempted.add();
            int code = 0;
            outcome o = co_await transact(code);
            count(o, code, _msg.size());
            if (o == outcome::lost) break;  // reconnect
            if (o == outcome::accepted) continue;
            if (!co_await send_all("RSET\r\n") || co_await read_reply() / 100 != 2) break;
        }
        close_fd();
    }
    close_fd();
    // The last connection wakes the main thread at once (it polls every 50 ms),
    // so the measured time ends with the last reply, not the next poll.
    if (_st.finished.fetch_add(1) + 1 == _st.opts->connections) ::kill(::getpid(), SIGUSR2);
    _ctx.shard->release();
}

engine::task<void> run_connection(shard_ctx& ctx, unsigned global_index, unsigned slot) {
    connection c(ctx, global_index, slot);
    co_await c.run();
}

uint64_t parse_bytes(std::string_view s) {
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc{} || p == s.data()) throw std::runtime_error("bad size '" + std::string(s) + "'");
    std::string_view unit = s.substr(size_t(p - s.data()));
    uint64_t mult = 1;
    if (unit.empty() || unit == "b" || unit == "B") mult = 1;
    else if (unit == "k" || unit == "K" || unit == "KiB") mult = 1024;
    else if (unit == "m" || unit == "M" || unit == "MiB") mult = 1024 * 1024;
    else throw std::runtime_error("bad size unit in '" + std::string(s) + "' (use k or m)");
    if (n == 0) throw std::runtime_error("size must be positive: '" + std::string(s) + "'");
    if (n > UINT64_MAX / mult) throw std::runtime_error("size too large: '" + std::string(s) + "'");
    return n * mult;
}

struct totals {
    uint64_t attempted = 0, accepted = 0, refused = 0, lost = 0, rcpt_refusals = 0, bytes = 0, connect_errors = 0;
    uint64_t tls_connections = 0, auth_connections = 0, auth_failures = 0;
    std::map<int, uint64_t> codes;
    std::vector<uint64_t> hist;
};

totals collect(const std::vector<std::unique_ptr<shard_ctx>>& ctxs) {
    totals t;
    for (auto& c : ctxs) {
        auto& s = c->stats;
        t.attempted += s.attempted.get();
        t.accepted += s.accepted.get();
        t.refused += s.refused.get();
        t.lost += s.lost.get();
        t.rcpt_refusals += s.rcpt_refusals.get();
        t.bytes += s.bytes.get();
        t.connect_errors += s.connect_errors.get();
        t.tls_connections += s.tls_connections.get();
        t.auth_connections += s.auth_connections.get();
        t.auth_failures += s.auth_failures.get();
        for (int i = 0; i < 600; ++i)
            if (uint64_t n = s.codes[size_t(i)].get()) t.codes[i] += n;
        s.latency.add_to(t.hist);
    }
    return t;
}

std::string codes_text(const totals& t) {
    std::string s;
    for (auto& [code, n] : t.codes) {
        if (code / 100 == 2) continue;
        fmt::format_to(std::back_inserter(s), " {}:{}", code, n);
    }
    if (t.lost) fmt::format_to(std::back_inserter(s), " lost:{}", t.lost);
    return s.empty() ? " none" : s;
}

}  // namespace

std::vector<size_class> parse_sizes(const std::string& text) {
    std::vector<size_class> out;
    size_t weighted = 0;
    for (const auto& item : split_list(text)) {
        size_t colon = item.find(':');
        size_class c{parse_bytes(std::string_view(item).substr(0, colon)), 1.0};
        if (colon != std::string::npos) {
            // The whole rest must be the number: "1k:70:5" or "1k:7x" are typos.
            std::string w = item.substr(colon + 1);
            size_t used = 0;
            try {
                c.weight = std::stod(w, &used);
            } catch (const std::exception&) {
                used = 0;
            }
            if (w.empty() || used != w.size()) throw std::runtime_error("--size: bad weight in '" + item + "'");
            if (!(c.weight > 0 && c.weight <= 1e9))
                throw std::runtime_error("--size: the weight in '" + item + "' must be above 0 and at most 1e9");
            ++weighted;
        }
        if (c.bytes > 64 * 1024 * 1024) throw std::runtime_error("--size: above 64m: '" + item + "'");
        out.push_back(c);
    }
    if (out.empty()) throw std::runtime_error("--size: nothing given");
    if (out.size() > 1 && weighted != out.size())
        throw std::runtime_error("--size: give every size of a distribution a weight (1k:70,16k:30), '" + text + "'");
    return out;
}

int run_send(const send_options& given) {
    send_options opts = given;
    if (!opts.seed_given)
        opts.seed = mix(uint64_t(std::chrono::system_clock::now().time_since_epoch().count()) ^ uint64_t(::getpid())) % 1000000000ULL + 1;
    log::set_program_name("ringmail-blast");
    auto fail = [](const std::string& why) {
        std::fprintf(stderr, "ringmail-blast send: %s\n", why.c_str());
        return 2;
    };
    std::string auth_user, auth_password;
    if (!opts.auth.empty()) {
        size_t colon = opts.auth.find(':');
        if (colon == std::string::npos || colon == 0) return fail("--auth: give USER:PASSWORD");
        auth_user = opts.auth.substr(0, colon);
        auth_password = opts.auth.substr(colon + 1);
        if (opts.auth.find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos)
            return fail("--auth: no NUL, CR or LF in USER:PASSWORD");
    }
    if (!(std::isfinite(opts.duration_s) && opts.duration_s >= 0))
        return fail("--duration must be a number of seconds (above 0)");
    if (opts.messages == 0 && opts.duration_s == 0) return fail("give --messages N (N > 0) or --duration S (S > 0)");
    if (!(std::isfinite(opts.rate) && opts.rate >= 0))
        return fail("--rate must be a number of messages per second (0 or none = closed loop)");
    if (opts.timeout_s == 0) return fail("--timeout must be at least 1 second");
    if (opts.threads == 0) return fail("--threads must be at least 1");
    if (opts.domains == 0 && opts.domain_list.empty()) return fail("--domains must be at least 1");
    if (opts.helo.empty() || opts.helo.find_first_of(" \t\r\n") != std::string::npos)
        return fail("--helo: give a name without spaces");
    if (opts.from.find_first_of(" \t\r\n<>") != std::string::npos)
        return fail("--from: give an address without spaces or angle brackets (empty = the null sender <>)");
    if (opts.connections == 0) return fail("--connections must be at least 1");
    {
        // One descriptor per connection, and some for the rings and stdio.
        rlimit lim{};
        const rlim_t need = rlim_t(opts.connections) + 64;
        if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < need) {
            lim.rlim_cur = std::min(need, lim.rlim_max);
            if (::setrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur < need)
                return fail(fmt::format("--connections {} needs about {} open files; the limit is {} (ulimit -n)",
                                        opts.connections, need, lim.rlim_max));
        }
    }
    if (opts.rcpts == 0 || opts.rcpts > 1000) return fail("--rcpts must be within 1..1000");
    if (opts.pipelining != "on" && opts.pipelining != "off") return fail("--pipelining must be on or off");

    send_state st;
    st.opts = &opts;
    st.pipelining = opts.pipelining == "on";
    if (!opts.auth.empty()) {
        std::string plain;
        plain.push_back('\0');
        plain.append(auth_user).push_back('\0');
        plain.append(auth_password);
        st.auth_plain = base64(plain);
        st.auth_user = base64(auth_user);
        st.auth_password = base64(auth_password);
        if (!opts.starttls)
            std::fprintf(stderr, "ringmail-blast send: warning: --auth without --starttls sends the password in the clear\n");
    }
    try {
        for (const auto& t : opts.to)
            for (const auto& a : split_list(t)) {
                st.to.push_back(require_loopback(a, "--to"));
                if (st.to.back().port() == 0) throw std::runtime_error("--to '" + a + "': port 0");
            }
        if (st.to.empty()) throw std::runtime_error("--to: no address given");
        st.sizes = parse_sizes(opts.size);
    } catch (const std::exception& e) {
        return fail(e.what());
    }
    double sum = 0;
    uint64_t max_size = 0;
    for (auto& c : st.sizes) {
        sum += c.weight;
        st.cumulative.push_back(sum);
        max_size = std::max(max_size, c.bytes);
    }
    if (!opts.domain_list.empty()) {
        st.domains = split_list(opts.domain_list);
        if (st.domains.empty()) return fail("--domain-list: no domain given");
        for (const auto& d : st.domains)
            if (d.find_first_of(" \t\r\n<>@") != std::string::npos) return fail("--domain-list: bad domain '" + d + "'");
    }
    if (st.domains.empty())
        for (unsigned i = 1; i <= std::max(1u, opts.domains); ++i) st.domains.push_back(fmt::format("d{}.example.test", i));
    st.body_template = make_body_template(size_t(max_size) + 2 * line_bytes);

    sigset_t signals;
    sigemptyset(&signals);
    for (int s : {SIGTERM, SIGINT, SIGUSR2}) sigaddset(&signals, s);  // USR2: all connections done
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    unsigned threads = std::max(1u, std::min(opts.threads, opts.connections));
    engine::shard_options so;
    so.recv_buffers = 16;  // the sender reads replies into its own small buffers
    so.shutdown_timeout = std::chrono::milliseconds(2000);
    std::vector<std::unique_ptr<engine::shard>> shards;
    std::vector<std::unique_ptr<shard_ctx>> ctxs;
    for (unsigned i = 0; i < threads; ++i) {
        shards.push_back(std::make_unique<engine::shard>(i, -1, so));
        ctxs.push_back(std::make_unique<shard_ctx>());
        ctxs.back()->state = &st;
    }
    st.start = clock_type::now();
    for (unsigned i = 0; i < threads; ++i) {
        shards[i]->start([ctx = ctxs[i].get(), i, threads, n = opts.connections](engine::shard& s) {
            ctx->shard = &s;
            std::vector<unsigned> mine;
            for (unsigned c = i; c < n; c += threads) mine.push_back(c);
            ctx->fds.assign(mine.size(), -1);
            s.on_stop([ctx] {
                for (int fd : ctx->fds)
                    if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
            });
            for (unsigned slot = 0; slot < mine.size(); ++slot) engine::spawn(run_connection(*ctx, mine[slot], slot));
        });
    }
    for (auto& s : shards) {
        if (!s->wait_ready()) {
            std::fprintf(stderr, "ringmail-blast send: shard %u: %s\n", s->index(), s->setup_error().c_str());
            st.stop = true;
            for (auto& t : shards) t->request_stop();
            for (auto& t : shards) t->join();
            return 1;
        }
    }

    auto seconds = [&] { return std::chrono::duration<double>(clock_type::now() - st.start).count(); };
    bool interactive = ::isatty(2);
    auto next_progress = st.start + 1s;
    uint64_t last_accepted = 0;
    clock_type::time_point stop_at{};
    bool interrupted = false;
    bool duration_reached = false;
    while (st.finished.load() < opts.connections) {
        timespec ts{0, 50'000'000};
        int sig = sigtimedwait(&signals, nullptr, &ts);
        if ((sig == SIGTERM || sig == SIGINT) && !st.stop) {
            st.stop = true;
            interrupted = true;
            stop_at = clock_type::now() + 3s;
        }
        if (opts.duration_s > 0 && !st.stop && seconds() >= opts.duration_s) {
            // In-flight transactions get 3 s (or --timeout, when shorter) to
            // finish, as after SIGTERM: the run ends close to --duration.
            st.stop = true;
            duration_reached = true;
            stop_at = clock_type::now() + std::min<std::chrono::seconds>(3s, std::chrono::seconds(opts.timeout_s));
        }
        // A fatal condition set by a connection: give the others a moment to finish.
        if (st.stop && stop_at == clock_type::time_point{}) stop_at = clock_type::now() + 3s;
        if (st.stop && clock_type::now() >= stop_at) break;  // request_stop() closes what is left
        auto now = clock_type::now();
        if (!opts.quiet && now >= next_progress) {
            next_progress += 1s;
            totals t = collect(ctxs);
            std::string connect_errors =
                t.connect_errors > 0 ? fmt::format(" connect errors {}", t.connect_errors) : std::string();
            std::fprintf(stderr,
                         "%ssend: %.0fs %llu/s ok %llu errors %llu (%s)%s p50 %.2f ms p99 %.2f ms%s",
                         interactive ? "\r" : "", seconds(), (unsigned long long)(t.accepted - last_accepted),
                         (unsigned long long)t.accepted, (unsigned long long)(t.refused + t.lost),
                         codes_text(t).c_str() + 1, connect_errors.c_str(), latency_histogram::percentile_ms(t.hist, 50),
                         latency_histogram::percentile_ms(t.hist, 99), interactive ? "   " : "\n");
            std::fflush(stderr);
            last_accepted = t.accepted;
        }
    }
    double elapsed = seconds();
    if (interactive && !opts.quiet) std::fputc('\n', stderr);
    for (auto& s : shards) s->request_stop();
    for (auto& s : shards) s->join();

    totals t = collect(ctxs);
    uint64_t unsent = opts.messages > 0 && t.attempted < opts.messages ? opts.messages - t.attempted : 0;
    // Stopped by the user: what was not sent is not an error (but is reported).
    uint64_t errors = t.refused + t.lost + (interrupted ? 0 : unsent);
    const double achieved = elapsed > 0 ? double(t.accepted) / elapsed : 0.0;
    const bool rate_missed = opts.rate > 0 && !interrupted && achieved < 0.9 * opts.rate;
    double p50 = latency_histogram::percentile_ms(t.hist, 50), p99 = latency_histogram::percentile_ms(t.hist, 99);
    std::string fatal;
    {
        std::lock_guard<std::mutex> lock(st.fatal_mu);
        fatal = st.fatal;
    }
    std::string last_error, last_auth_error;
    for (auto& c : ctxs) {
        if (!c->last_error.empty()) last_error = c->last_error;
        if (!c->last_auth_error.empty()) last_auth_error = c->last_auth_error;
    }
    bool nobody_authenticated = !opts.auth.empty() && t.auth_connections == 0;
    // A --duration run whose connections all gave up (dead target, refused
    // greetings) before the time was up measured nothing: a failure.
    const bool ended_early = opts.duration_s > 0 && !interrupted && !duration_reached && fatal.empty();
    if (opts.json) {
        nlohmann::json j;
        j["messages"] = t.accepted;
        j["requested"] = opts.messages;  // 0: a --duration run
        j["interrupted"] = interrupted;
        if (opts.rate > 0) {
            j["rate_target"] = opts.rate;
            j["rate_missed"] = rate_missed;
        }
        j["seed"] = opts.seed;
        j["attempted"] = t.attempted;
        j["seconds"] = elapsed;
        j["msgs_per_sec"] = achieved;
        j["errors"] = errors;
        j["refused"] = t.refused;
        j["lost"] = t.lost;
        j["unsent"] = unsent;
        j["rcpt_refusals"] = t.rcpt_refusals;
        j["connect_errors"] = t.connect_errors;
        j["tls_connections"] = t.tls_connections;
        j["auth_connections"] = t.auth_connections;
        j["auth_failures"] = t.auth_failures;
        j["ended_early"] = ended_early;
        if (opts.bdat) j["bdat_unavailable"] = st.bdat_unavailable.load();
        if (!fatal.empty()) j["error"] = fatal;
        if (!last_error.empty()) j["last_connect_error"] = last_error;
        if (!last_auth_error.empty()) j["last_auth_error"] = last_auth_error;
        j["bytes"] = t.bytes;
        j["latency_p50_ms"] = p50;
        j["latency_p99_ms"] = p99;
        nlohmann::json r = nlohmann::json::object();
        for (auto& [code, n] : t.codes) r[std::to_string(code)] = n;
        j["replies"] = r;
        std::printf("%s\n", j.dump().c_str());
    } else {
        std::string secure;
        if (opts.starttls) fmt::format_to(std::back_inserter(secure), "; tls connections {}", t.tls_connections);
        if (!opts.auth.empty())
            fmt::format_to(std::back_inserter(secure), "; authenticated connections {}; auth failures {}",
                           t.auth_connections, t.auth_failures);
        if (interrupted) std::printf("send: interrupted (SIGTERM/SIGINT) after %.2f s\n", elapsed);
        std::printf(
            "send: %llu messages accepted of %llu attempted in %.2f s (%.0f msg/s, %.1f MB/s); errors %llu "
            "(refused %llu, lost %llu, unsent %llu); rcpt refusals %llu; connect errors %llu%s; non-2xx replies:%s; "
            "latency p50 %.2f ms p99 %.2f ms; seed %llu\n",
            (unsigned long long)t.accepted, (unsigned long long)t.attempted, elapsed,
            achieved, elapsed > 0 ? double(t.bytes) / elapsed / 1e6 : 0.0,
            (unsigned long long)errors, (unsigned long long)t.refused, (unsigned long long)t.lost,
            (unsigned long long)unsent, (unsigned long long)t.rcpt_refusals, (unsigned long long)t.connect_errors,
            secure.c_str(), codes_text(t).c_str(), p50, p99, (unsigned long long)opts.seed);
    }
    std::fflush(stdout);
    if (!fatal.empty()) std::fprintf(stderr, "ringmail-blast send: %s\n", fatal.c_str());
    if (t.auth_failures > 0)
        std::fprintf(stderr, "ringmail-blast send: AUTH failed on %llu connection(s); last: %s\n",
                     (unsigned long long)t.auth_failures, last_auth_error.c_str());
    if (nobody_authenticated && fatal.empty())
        std::fprintf(stderr, "ringmail-blast send: no connection could authenticate\n");
    if (rate_missed)
        std::fprintf(stderr,
                     "ringmail-blast send: warning: the target rate of %.0f msg/s was not reached (%.0f msg/s): the "
                     "server or --connections %u held it back (the run was closed loop at times)\n",
                     opts.rate, achieved, opts.connections);
    if (t.connect_errors > 0 && !last_error.empty())
        std::fprintf(stderr, "ringmail-blast send: %llu connection attempt(s) failed; last: %s\n",
                     (unsigned long long)t.connect_errors, last_error.c_str());
    if (st.bdat_unavailable.load())
        std::fprintf(stderr, "ringmail-blast send: warning: --bdat, but a server did not offer CHUNKING: DATA was used\n");
    if (ended_early)
        std::fprintf(stderr, "ringmail-blast send: every connection gave up after %.1f s, before --duration %.0f s ended\n",
                     elapsed, opts.duration_s);
    const bool nothing_sent = !interrupted && t.attempted == 0;
    if (nothing_sent && !ended_early) std::fprintf(stderr, "ringmail-blast send: no message was sent\n");
    // A run that measured something else than asked (no TLS, nobody
    // authenticated) or nothing at all fails even with --allow-failures.
    if (!fatal.empty() || nobody_authenticated || ended_early || nothing_sent) return 1;
    // A recipient refused is a message that did not reach everyone it was for.
    return (errors > 0 || t.rcpt_refusals > 0 || t.auth_failures > 0) && !opts.allow_failures ? 1 : 0;
}

}  // namespace ringmail::blast
