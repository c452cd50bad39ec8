#include "tools/ringmail-blast/sink.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/io.h"
#include "engine/log.h"
#include "engine/shard.h"
#include "engine/task.h"
#include "protocols/smtp/address.h"
#include "protocols/smtp/ascii.h"
#include "protocols/smtp/command_parser.h"
#include "protocols/smtp/data_reader.h"
#include "tools/ringmail-blast/common.h"

namespace ringmail::blast {

namespace {

using namespace std::chrono_literals;
using smtp::iequals;
using smtp::parse_status;
using smtp::verb;

constexpr auto command_timeout = std::chrono::milliseconds(300'000);
constexpr size_t max_header_bytes = 256 * 1024;  // beyond this the body is not verified

struct string_hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// A set of 64-bit hashes: open addressing, linear probing, no allocation per
// insert (the table doubles at half load). 0 marks an empty slot, so the
// value 0 is kept aside in a flag.
class hash_set64 {
public:
    // True when `v` was not in the set before.
    bool insert(uint64_t v) {
        if (v == 0) {
            bool fresh = !_has_zero;
            _has_zero = true;
            return fresh;
        }
        if ((_count + 1) * 2 > _slots.size()) grow();
        if (!place(_slots, v)) return false;
        ++_count;
        return true;
    }

    // Inserts every value of `v`; returns how many were already present. The
    // table is mostly out of cache: prefetching every home slot first lets
    // the misses overlap.
    size_t insert_many(const uint64_t* v, size_t n) {
        while ((_count + n + 1) * 2 > _slots.size()) grow();
        size_t mask = _slots.size() - 1;
        for (size_t i = 0; i < n; ++i) __builtin_prefetch(&_slots[size_t(mix(v[i])) & mask]);
        size_t dup = 0;
        for (size_t i = 0; i < n; ++i) dup += insert(v[i]) ? 0 : 1;
        return dup;
    }

private:
    static bool place(std::vector<uint64_t>& slots, uint64_t v) {
        size_t mask = slots.size() - 1;
        for (size_t i = size_t(mix(v)) & mask;; i = (i + 1) & mask) {
            if (slots[i] == v) return false;
            if (slots[i] == 0) {
                slots[i] = v;
                return true;
            }
        }
    }
    void grow() {
        std::vector<uint64_t> bigger(_slots.empty() ? 1024 : _slots.size() * 2, 0);
        for (uint64_t v : _slots)
            if (v != 0) place(bigger, v);
        _slots.swap(bigger);
    }
    std::vector<uint64_t> _slots;
    size_t _count = 0;
    bool _has_zero = false;
};

// Counters and sets shared by every shard. Counters are atomics touched once
// per message; the sets, the per-domain map and the ids file sit behind one
// mutex taken once per counted message (uncontended with a shard or two).
struct sink_state {
    const sink_options* opts = nullptr;
    std::atomic<uint64_t> messages{0}, bytes{0}, checksum_failures{0}, checksum_ok{0}, unverified{0}, duplicates{0},
        dropped{0}, tempfailed{0}, permfailed{0}, greylisted{0}, connections_total{0}, refused_connections{0},
        over_expect{0};
    // --expect N: messages take a number here before they are counted, so
    // exactly N are accepted however many shards race; the rest get 421.
    std::atomic<uint64_t> reserved{0};
    std::atomic<int> connections_open{0};
    std::atomic<double> expect_reached_at{0};  // wall clock (Unix seconds) of the --expect'th message
    // Wall clock of the first and the latest accepted message: the rate is
    // taken over that span, not from when the sink started listening.
    std::atomic<double> first_message_at{0}, last_message_at{0};

    std::mutex mutex;
    hash_set64 ids, grey;
    // Per shard: accepted recipients per domain. Only that shard writes; it
    // adds a domain under `mutex`, so readers (the summary) take `mutex` and
    // read the counters.
    using domain_counts = std::unordered_map<std::string, counter, string_hash, std::equal_to<>>;
    std::vector<std::unique_ptr<domain_counts>> per_domain;
    FILE* ids_file = nullptr;
};

double unix_seconds_now() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
        s.remove_suffix(1);
    return s;
}

// Streams a message's content: keeps the header block (bounded), hashes the
// body after the first CRLFCRLF. The last body piece may be kept as a view
// (`deferred`) instead of hashed at once, so that several messages that end
// in one receive buffer are hashed together (fnv1a_many); the caller either
// takes it at the end of the message or calls settle() before the input the
// view points into goes away.
struct body_check {
    std::string headers;
    bool in_body = false;
    bool overflow = false;  // header block larger than max_header_bytes
    uint64_t hash = fnv_offset;
    uint64_t bytes = 0;
    std::string_view deferred;

    void reset() {
        headers.clear();
        in_body = overflow = false;
        hash = fnv_offset;
        bytes = 0;
        deferred = {};
    }
    void settle() {
        if (!deferred.empty()) hash = fnv1a(hash, deferred);
        deferred = {};
    }
    void feed(std::string_view piece) {
        bytes += piece.size();
        if (in_body) {
            settle();
            deferred = piece;
            return;
        }
        if (overflow) return;
        // Where the body starts in `piece`, if the CRLFCRLF ends in it (it
        // may straddle pieces: up to 3 of its bytes are in `headers`).
        size_t body_at = std::string_view::npos;
        size_t back = std::min<size_t>(3, headers.size());
        if (back > 0) {
            char joint[6];
            size_t fwd = std::min<size_t>(3, piece.size());
            std::memcpy(joint, headers.data() + headers.size() - back, back);
            std::memcpy(joint + back, piece.data(), fwd);
            size_t j = std::string_view(joint, back + fwd).find("\r\n\r\n");
            if (j != std::string_view::npos) body_at = j + 4 - back;
        }
        if (body_at == std::string_view::npos) {
            size_t i = piece.find("\r\n\r\n");
            if (i != std::string_view::npos) body_at = i + 4;
        }
        if (body_at == std::string_view::npos) {
            if (headers.size() + piece.size() > max_header_bytes) overflow = true;
            else headers.append(piece);
            return;
        }
        headers.append(piece.substr(0, body_at));
        headers.resize(headers.size() - 2);  // keep the CRLF of the last field
        in_body = true;
        deferred = piece.substr(body_at);
    }
    // Values of the X-Blast-Checksum and Message-ID fields (first of each,
    // unfolded lines only), in one pass over the header block.
    void fields(std::string_view& sum, std::string_view& msgid) const {
        sum = msgid = {};
        std::string_view rest = headers;
        while (!rest.empty() && (sum.empty() || msgid.empty())) {
            size_t e = rest.find("\r\n");
            std::string_view line = rest.substr(0, e);
            rest = e == std::string_view::npos ? std::string_view{} : rest.substr(e + 2);
            size_t colon = line.find(':');
            if (colon == std::string_view::npos) continue;
            std::string_view name = trim(line.substr(0, colon));
            if (sum.empty() && iequals(name, checksum_header)) sum = trim(line.substr(colon + 1));
            else if (msgid.empty() && iequals(name, "Message-ID")) msgid = trim(line.substr(colon + 1));
        }
    }
};

// A body whose hash is finished later: state `h` still to run over `tail`.
struct pending_check {
    uint64_t want;
    uint64_t h;
    std::string_view tail;
};

// Finishes the hashes of several bodies at once: FNV-1a is one serial chain
// per body (xor, multiply), so four chains side by side keep the multiplier
// busy where one would wait on it.
void fnv1a_many(pending_check* c, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        pending_check *a = c + i, *b = c + i + 1, *d = c + i + 2, *e = c + i + 3;
        size_t common = std::min(std::min(a->tail.size(), b->tail.size()), std::min(d->tail.size(), e->tail.size()));
        const unsigned char *pa = reinterpret_cast<const unsigned char*>(a->tail.data()),
                            *pb = reinterpret_cast<const unsigned char*>(b->tail.data()),
                            *pd = reinterpret_cast<const unsigned char*>(d->tail.data()),
                            *pe = reinterpret_cast<const unsigned char*>(e->tail.data());
        uint64_t ha = a->h, hb = b->h, hd = d->h, he = e->h;
        for (size_t k = 0; k < common; ++k) {
            ha = (ha ^ pa[k]) * fnv_prime;
            hb = (hb ^ pb[k]) * fnv_prime;
            hd = (hd ^ pd[k]) * fnv_prime;
            he = (he ^ pe[k]) * fnv_prime;
        }
        a->h = fnv1a(ha, a->tail.substr(common));
        b->h = fnv1a(hb, b->tail.substr(common));
        d->h = fnv1a(hd, d->tail.substr(common));
        e->h = fnv1a(he, e->tail.substr(common));
    }
    for (; i < n; ++i) c[i].h = fnv1a(c[i].h, c[i].tail);
}

struct shard_ctx;

class sink_session {
public:
    sink_session(shard_ctx& ctx, int fd);
    ~sink_session();
    engine::task<void> run();
    void shutdown() { ::shutdown(_fd, SHUT_RDWR); }
    sink_session* next = nullptr;
    sink_session* prev = nullptr;

private:
    enum class phase { command, skip_line, data, bdat };
    enum class action { need_more, close };

    action process(std::string_view in, size_t& consumed);
    action process_input(std::string_view in, size_t& consumed);
    void finish_checks();
    action on_command(const smtp::command_parse& p);
    action on_rcpt(std::string_view arg);
    action start_content();
    void end_of_message();
    // --expect N reached: no more mail is taken on this connection.
    bool expect_reached() const;
    void reset_transaction() {
        _has_mail = false;
        _rcpt_count = 0;
        _domains.clear();
        _bdat_started = false;
        _bdat_error = nullptr;
    }
    void reply(std::string_view line) {
        _out.append(line);
        _out.append("\r\n");
        ++_replies;
    }
    // Formats straight into the output buffer: no temporary string per reply.
    template <class... Args>
    void replyf(fmt::format_string<Args...> f, Args&&... args) {
        fmt::format_to(std::back_inserter(_out), f, std::forward<Args>(args)...);
        _out.append("\r\n");
        ++_replies;
    }
    engine::task<bool> flush();
    bool decide(double percent, uint64_t salt);

    shard_ctx& _ctx;
    const sink_options& _opts;
    int _fd;
    phase _phase = phase::command;
    std::string _pending, _out;
    unsigned _replies = 0;
    bool _close_after_reply = false;  // a 421 went out: close once it is sent
    bool _has_mail = false;
    unsigned _rcpt_count = 0;
    std::string _domains;  // accepted recipient domains, '\n'-terminated each
    smtp::data_reader _reader{1u << 20};  // the sink does not police line length
    body_check _body;
    std::vector<pending_check> _checks;  // bodies that ended in the input being processed
    std::vector<uint64_t> _ids;          // their Message-ID hashes, for the duplicate count
    bool _drop = false;
    uint64_t _bdat_remaining = 0;
    bool _bdat_last = false;
    bool _bdat_started = false;
    const char* _bdat_error = nullptr;
};

struct shard_ctx {
    engine::shard* shard = nullptr;
    sink_state* state = nullptr;
    sink_session* sessions = nullptr;
    uint64_t decisions = 0;  // per-shard sequence for deterministic decisions
};

sink_session::sink_session(shard_ctx& ctx, int fd) : _ctx(ctx), _opts(*ctx.state->opts), _fd(fd) {
    next = ctx.sessions;
    if (next) next->prev = this;
    ctx.sessions = this;
    ctx.shard->hold();
    ctx.state->connections_open.fetch_add(1, std::memory_order_relaxed);
    ctx.state->connections_total.fetch_add(1, std::memory_order_relaxed);
}

sink_session::~sink_session() {
    if (prev) prev->next = next;
    else _ctx.sessions = next;
    if (next) next->prev = prev;
    ::close(_fd);
    _ctx.state->connections_open.fetch_sub(1, std::memory_order_relaxed);
    _ctx.shard->release();
}

bool sink_session::decide(double percent, uint64_t salt) {
    if (percent <= 0) return false;
    uint64_t h = mix(_opts.seed ^ mix((uint64_t(_ctx.shard->index()) << 56) ^ (salt << 48) ^ _ctx.decisions++));
    return double(h % 1'000'000) < percent * 10'000.0;
}

engine::task<bool> sink_session::flush() {
    if (_opts.delay_ms > 0 && _replies > 0)
        co_await engine::sleep_op(std::chrono::milliseconds(uint64_t(_opts.delay_ms) * _replies));
    _replies = 0;
    size_t off = 0;
    while (off < _out.size()) {
        int n = co_await engine::async_send(_fd, _out.data() + off, _out.size() - off, command_timeout);
        if (n <= 0) {
            _out.clear();
            co_return false;
        }
        off += size_t(n);
    }
    _out.clear();
    co_return true;
}

engine::task<void> sink_session::run() {
    int one = 1;
    ::setsockopt(_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto& st = *_ctx.state;
    if (_opts.max_connections > 0 && st.connections_open.load() > int(_opts.max_connections)) {
        st.refused_connections.fetch_add(1, std::memory_order_relaxed);
        _out.clear();
        reply("421 4.7.0 sink: too many connections");
        _replies = 0;
        co_await flush();
        co_return;
    }
    reply(fmt::format("220 {} ESMTP ringmail-blast sink", _opts.hostname));
    auto& buffers = _ctx.shard->buffers();
    for (;;) {
        if (!_pending.empty()) {
            size_t consumed = 0;
            action a = process(_pending, consumed);
            _pending.erase(0, consumed);
            if (a == action::close) break;
        }
        // Out of input: send what the pipelined group earned (RFC 2920 §3.1).
        if (!_out.empty() && !co_await flush()) break;
        auto r = co_await engine::async_recv_buffered(_fd, buffers.group(), command_timeout);
        if (r.res == -ENOBUFS) {
            co_await engine::sleep_op(1ms);
            continue;
        }
        if (r.res <= 0) {
            if (r.buffer_id >= 0) buffers.recycle(r.buffer_id);
            break;
        }
        std::string_view in = buffers.view(r.buffer_id, size_t(r.res));
        action a = action::need_more;
        if (_pending.empty()) {
            size_t consumed = 0;
            a = process(in, consumed);
            if (a != action::close) _pending.assign(in.substr(consumed));
        } else {
            _pending.append(in);
        }
        buffers.recycle(r.buffer_id);  // before any wait: a dry ring stalls the shard
        if (a == action::close) break;
    }
    if (!_out.empty()) co_await flush();
}

// Every view into `in` (deferred body pieces) is used up before returning.
sink_session::action sink_session::process(std::string_view in, size_t& consumed) {
    action a = process_input(in, consumed);
    finish_checks();
    _body.settle();
    return a;
}

void sink_session::finish_checks() {
    if (!_ids.empty()) {
        auto& st = *_ctx.state;
        size_t dup;
        {
            std::lock_guard lock(st.mutex);
            dup = st.ids.insert_many(_ids.data(), _ids.size());
        }
        _ids.clear();
        if (dup) st.duplicates.fetch_add(dup, std::memory_order_relaxed);
    }
    if (_checks.empty()) return;
    fnv1a_many(_checks.data(), _checks.size());
    uint64_t ok = 0, failed = 0;
    for (auto& c : _checks) (c.h == c.want ? ok : failed) += 1;
    _checks.clear();
    if (ok) _ctx.state->checksum_ok.fetch_add(ok, std::memory_order_relaxed);
    if (failed) _ctx.state->checksum_failures.fetch_add(failed, std::memory_order_relaxed);
}

sink_session::action sink_session::process_input(std::string_view in, size_t& consumed) {
    consumed = 0;
    while (consumed < in.size()) {
        std::string_view rest = in.substr(consumed);
        switch (_phase) {
            case phase::command: {
                auto p = smtp::parse_command(rest);
                if (p.status == parse_status::need_more) return action::need_more;
                consumed += p.consumed;
                if (p.status == parse_status::error) {
                    if (p.error == smtp::command_error::line_too_long && !p.line_ended) _phase = phase::skip_line;
                    reply("500 5.5.2 Error: bad command line");
                    continue;
                }
                if (on_command(p) == action::close) return action::close;
                break;
            }
            case phase::skip_line: {
                auto s = smtp::skip_line(rest);
                consumed += s.consumed;
                if (!s.found_crlf) return action::need_more;
                _phase = phase::command;
                break;
            }
            case phase::data: {
                if (_drop) {
                    // Replies already earned (earlier pipelined messages) still go out.
                    _ctx.state->dropped.fetch_add(1, std::memory_order_relaxed);
                    return action::close;
                }
                auto r = _reader.feed(rest, [&](std::string_view piece) { _body.feed(piece); });
                consumed += r.consumed;
                if (!r.done) return action::need_more;
                _phase = phase::command;
                end_of_message();
                if (_close_after_reply) return action::close;
                break;
            }
            case phase::bdat: {
                if (_drop) {
                    // Replies already earned (earlier pipelined messages) still go out.
                    _ctx.state->dropped.fetch_add(1, std::memory_order_relaxed);
                    return action::close;
                }
                size_t n = size_t(std::min<uint64_t>(rest.size(), _bdat_remaining));
                if (_bdat_error == nullptr) _body.feed(rest.substr(0, n));
                consumed += n;
                _bdat_remaining -= n;
                if (_bdat_remaining > 0) return action::need_more;
                _phase = phase::command;
                if (_bdat_error != nullptr) {
                    reply(_bdat_error);
                    if (_bdat_last) reset_transaction();
                } else if (_bdat_last) {
                    end_of_message();
                    if (_close_after_reply) return action::close;
                } else {
                    replyf("250 2.0.0 {} octets received", _body.bytes);
                }
                break;
            }
        }
    }
    return action::need_more;
}

sink_session::action sink_session::on_command(const smtp::command_parse& p) {
    switch (p.cmd) {
        case verb::ehlo:
            if (trim(p.argument).empty()) {
                reply("501 5.5.4 Syntax: EHLO hostname");
                return action::need_more;
            }
            reset_transaction();
            reply(fmt::format("250-{}", _opts.hostname));
            reply("250-PIPELINING");
            reply(fmt::format("250-SIZE {}", _opts.size_limit));
            reply("250-8BITMIME");
            reply("250-ENHANCEDSTATUSCODES");
            reply("250 CHUNKING");
            _replies -= 5;  // one reply, six lines
            return action::need_more;
        case verb::helo:
            if (trim(p.argument).empty()) {
                reply("501 5.5.4 Syntax: HELO hostname");
                return action::need_more;
            }
            reset_transaction();
            reply(fmt::format("250 {}", _opts.hostname));
            return action::need_more;
        case verb::mail: {
            if (_has_mail) {
                reply("503 5.5.1 Error: nested MAIL command");
                return action::need_more;
            }
            if (expect_reached()) {
                _ctx.state->over_expect.fetch_add(1, std::memory_order_relaxed);
                reply("421 4.3.2 sink: the expected number of messages has arrived, closing");
                return action::close;
            }
            auto m = smtp::parse_mail_from(p.argument);
            if (!m) {
                reply("501 5.5.4 Syntax error in MAIL FROM");
                return action::need_more;
            }
            if (m->params.has_size && _opts.size_limit != 0 && m->params.size > _opts.size_limit) {
                reply("552 5.3.4 Message size exceeds fixed limit");
                return action::need_more;
            }
            reset_transaction();
            _has_mail = true;
            reply("250 2.1.0 Ok");
            return action::need_more;
        }
        case verb::rcpt: return on_rcpt(p.argument);
        case verb::data:
            if (_bdat_started) {
                // RFC 3030 §2: a transaction uses BDAT or DATA, never both.
                reply("503 5.5.1 Error: BDAT in progress, DATA not allowed");
                return action::need_more;
            }
            if (!_has_mail) {
                reply("503 5.5.1 Error: need MAIL command");
                return action::need_more;
            }
            if (_rcpt_count == 0) {
                reply("554 5.5.1 Error: no valid recipients");
                return action::need_more;
            }
            reply("354 End data with <CR><LF>.<CR><LF>");
            _reader.reset();
            _phase = phase::data;
            return start_content();
        case verb::bdat: {
            // RFC 3030 §2: "BDAT" SP chunk-size [SP "LAST"]
            std::string_view arg = p.argument;
            uint64_t n = 0;
            auto [ptr, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), n);
            std::string_view tail = trim(arg.substr(size_t(ptr - arg.data())));
            if (ec != std::errc{} || ptr == arg.data() || !(tail.empty() || iequals(tail, "LAST"))) {
                reply("501 5.5.4 Syntax: BDAT chunk-size [LAST]");
                return action::close;  // the chunk length is unknown: cannot resynchronise
            }
            _bdat_remaining = n;
            _bdat_last = !tail.empty();
            _phase = phase::bdat;
            if (!_bdat_started) {
                if (!_has_mail) _bdat_error = "503 5.5.1 Error: need MAIL command";
                else if (_rcpt_count == 0) _bdat_error = "554 5.5.1 Error: no valid recipients";
                _bdat_started = true;
                if (_bdat_error == nullptr) start_content();
            }
            if (n == 0 && _bdat_last) {
                _phase = phase::command;
                if (_bdat_error) {
                    reply(_bdat_error);
                    reset_transaction();
                } else {
                    end_of_message();
                    if (_close_after_reply) return action::close;
                }
            } else if (n == 0) {
                _phase = phase::command;
                reply("250 2.0.0 0 octets received");
            }
            return action::need_more;
        }
        case verb::rset:
            reset_transaction();
            reply("250 2.0.0 Ok");
            return action::need_more;
        case verb::noop:
            reply("250 2.0.0 Ok");
            return action::need_more;
        case verb::quit:
            reply("221 2.0.0 Bye");
            return action::close;
        case verb::vrfy:
            reply("252 2.0.0 Cannot VRFY user");
            return action::need_more;
        default:
            reply("502 5.5.1 Error: command not implemented");
            return action::need_more;
    }
}

sink_session::action sink_session::on_rcpt(std::string_view arg) {
    auto& st = *_ctx.state;
    if (!_has_mail) {
        reply("503 5.5.1 Error: need MAIL command");
        return action::need_more;
    }
    auto r = smtp::parse_rcpt_to(arg);
    if (!r) {
        reply("501 5.1.3 Bad recipient address syntax");
        return action::need_more;
    }
    std::string_view local = r->path.local_part;
    if (iequals(local, "tempfail") || decide(_opts.tempfail_percent, 1)) {
        st.tempfailed.fetch_add(1, std::memory_order_relaxed);
        reply("451 4.7.1 sink: recipient temporarily refused");
        return action::need_more;
    }
    if (iequals(local, "permfail") || decide(_opts.permfail_percent, 2)) {
        st.permfailed.fetch_add(1, std::memory_order_relaxed);
        reply("550 5.1.1 sink: no such user");
        return action::need_more;
    }
    ++_rcpt_count;
    // Domains are case-insensitive (RFC 5321 §2.4): counted in lower case.
    size_t from = _domains.size();
    _domains.append(r->path.domain.empty() ? std::string_view("(none)") : r->path.domain);
    for (size_t i = from; i < _domains.size(); ++i)
        if (_domains[i] >= 'A' && _domains[i] <= 'Z') _domains[i] = char(_domains[i] - 'A' + 'a');
    _domains.push_back('\n');
    reply("250 2.1.5 Ok");
    return action::need_more;
}

bool sink_session::expect_reached() const {
    return _opts.expect > 0 && _ctx.state->reserved.load(std::memory_order_relaxed) >= _opts.expect;
}

sink_session::action sink_session::start_content() {
    _body.reset();
    _drop = decide(_opts.drop_percent, 3);
    return action::need_more;
}

void sink_session::end_of_message() {
    auto& st = *_ctx.state;
    if (_opts.size_limit != 0 && _body.bytes > _opts.size_limit) {
        // Over the SIZE it announced (a client that sent no SIZE=, or lied).
        reply("552 5.3.4 Message size exceeds fixed limit");
        reset_transaction();
        return;
    }
    std::string_view sum, msgid;
    _body.fields(sum, msgid);
    uint64_t want = 0;
    bool sum_valid = false;
    if (!sum.empty()) {
        auto [ptr, ec] = std::from_chars(sum.data(), sum.data() + sum.size(), want, 16);
        sum_valid = ec == std::errc{} && ptr == sum.data() + sum.size() && _body.in_body;
    }
    uint64_t id_hash = msgid.empty() ? 0 : fnv1a(fnv_offset, msgid);

    bool greylisted = false;
    if (_opts.greylist && !msgid.empty()) {
        std::lock_guard lock(st.mutex);
        greylisted = st.grey.insert(id_hash);
    }
    if (!greylisted && _opts.expect > 0 && st.reserved.fetch_add(1, std::memory_order_relaxed) >= _opts.expect) {
        // Past --expect: refused, not counted (the client learns it was not taken).
        st.over_expect.fetch_add(1, std::memory_order_relaxed);
        reply("421 4.3.2 sink: the expected number of messages has arrived, closing");
        _close_after_reply = true;
        reset_transaction();
        return;
    }
    if (!greylisted) {
        // Duplicates are counted in finish_checks(), for all the messages of
        // this input at once (no reply depends on them).
        if (!msgid.empty()) _ids.push_back(id_hash);
        auto& domains = *st.per_domain[_ctx.shard->index()];
        std::string_view rest = _domains;
        while (!rest.empty()) {
            size_t e = rest.find('\n');
            std::string_view d = rest.substr(0, e);
            rest.remove_prefix(e + 1);
            auto it = domains.find(d);  // only this shard changes its map
            if (it == domains.end()) {
                std::lock_guard lock(st.mutex);
                it = domains.try_emplace(std::string(d)).first;
            }
            it->second.add();
        }
        if (st.ids_file != nullptr && !msgid.empty()) {
            std::lock_guard lock(st.mutex);
            std::fwrite(msgid.data(), 1, msgid.size(), st.ids_file);
            std::fputc('\n', st.ids_file);
        }
    }
    if (greylisted) {
        st.greylisted.fetch_add(1, std::memory_order_relaxed);
        reply("451 4.7.1 sink: greylisted, try again later");
    } else {
        if (sum.empty()) {
            st.unverified.fetch_add(1, std::memory_order_relaxed);
        } else if (sum_valid && !_body.deferred.empty()) {
            // Verified with the other bodies of this input (finish_checks).
            _checks.push_back({want, _body.hash, _body.deferred});
            _body.deferred = {};
        } else {
            _body.settle();
            (sum_valid && want == _body.hash ? st.checksum_ok : st.checksum_failures)
                .fetch_add(1, std::memory_order_relaxed);
        }
        st.bytes.fetch_add(_body.bytes, std::memory_order_relaxed);
        uint64_t n = st.messages.fetch_add(1, std::memory_order_relaxed) + 1;
        const double now = unix_seconds_now();
        double unset = 0;
        st.first_message_at.compare_exchange_strong(unset, now, std::memory_order_relaxed);
        for (double seen = st.last_message_at.load(std::memory_order_relaxed);
             seen < now && !st.last_message_at.compare_exchange_weak(seen, now, std::memory_order_relaxed);) {
        }
        // Benchmarks time the run to this moment (the process exits up to a
        // poll later, after the senders' QUIT).
        if (n == _opts.expect) st.expect_reached_at.store(now, std::memory_order_relaxed);
        char line[48] = "250 2.0.0 Ok: queued as ";
        auto r = std::to_chars(line + 24, line + sizeof line, n, 16);
        reply(std::string_view(line, size_t(r.ptr - line)));
    }
    reset_transaction();
}

engine::task<void> serve(shard_ctx& ctx, int fd) {
    sink_session s(ctx, fd);
    co_await s.run();
}

nlohmann::json summary_json(sink_state& st, double seconds) {
    nlohmann::json j;
    uint64_t n = st.messages.load();
    j["messages"] = n;
    // seconds: the sink's run; msgs_per_sec: the arrival rate from the first
    // to the latest message, n - 1 gaps in that span (over the whole run
    // when there is only one message).
    const double first = st.first_message_at.load(), last = st.last_message_at.load();
    const bool spread = n >= 2 && last > first;
    const double active = spread ? last - first : seconds;
    j["seconds"] = seconds;
    j["receiving_seconds"] = active;
    j["msgs_per_sec"] = active > 0 ? double(spread ? n - 1 : n) / active : 0.0;
    j["bytes"] = st.bytes.load();
    if (double t = st.expect_reached_at.load(); t > 0) j["expect_reached_at"] = t;
    j["checksum_failures"] = st.checksum_failures.load();
    j["checksum_ok"] = st.checksum_ok.load();
    j["unverified"] = st.unverified.load();
    j["duplicates"] = st.duplicates.load();
    j["dropped"] = st.dropped.load();
    j["over_expect"] = st.over_expect.load();  // refused with 421: --expect had been reached
    j["tempfailed_rcpts"] = st.tempfailed.load();
    j["permfailed_rcpts"] = st.permfailed.load();
    j["greylisted"] = st.greylisted.load();
    j["connections"] = st.connections_total.load();
    j["refused_connections"] = st.refused_connections.load();
    nlohmann::json d = nlohmann::json::object();
    {
        std::lock_guard lock(st.mutex);
        std::map<std::string, uint64_t> sorted;
        for (auto& shard : st.per_domain)
            for (auto& [k, v] : *shard) sorted[k] += v.get();
        for (auto& [k, v] : sorted) d[k] = v;
    }
    j["per_domain"] = d;
    return j;
}

std::string summary_text(sink_state& st, double seconds) {
    auto j = summary_json(st, seconds);
    std::string s = fmt::format(
        "sink: {} messages in {:.2f} s ({:.0f} msg/s over {:.2f} s from the first to the last), {} bytes; "
        "checksum ok {} failed {} unverified {}; "
        "duplicates {}; dropped {}; tempfail rcpts {}; permfail rcpts {}; greylisted {}; over --expect {}; "
        "connections {} (refused {})\n",
        j["messages"].get<uint64_t>(), seconds, j["msgs_per_sec"].get<double>(), j["receiving_seconds"].get<double>(),
        j["bytes"].get<uint64_t>(),
        j["checksum_ok"].get<uint64_t>(), j["checksum_failures"].get<uint64_t>(), j["unverified"].get<uint64_t>(),
        j["duplicates"].get<uint64_t>(), j["dropped"].get<uint64_t>(), j["tempfailed_rcpts"].get<uint64_t>(),
        j["permfailed_rcpts"].get<uint64_t>(), j["greylisted"].get<uint64_t>(), j["over_expect"].get<uint64_t>(),
        j["connections"].get<uint64_t>(),
        j["refused_connections"].get<uint64_t>());
    for (auto& [k, v] : j["per_domain"].items()) s += fmt::format("  {} {}\n", k, v.get<uint64_t>());
    return s;
}

}  // namespace

int run_sink(const sink_options& opts) {
    log::set_program_name("ringmail-blast");
    std::vector<net::socket_address> addrs;
    try {
        for (const auto& a : split_list(opts.listen)) addrs.push_back(require_loopback(a, "--listen"));
        if (addrs.empty()) throw std::runtime_error("--listen: no address given");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ringmail-blast sink: %s\n", e.what());
        return 2;
    }
    auto fail = [](const char* why) {
        std::fprintf(stderr, "ringmail-blast sink: %s\n", why);
        return 2;
    };
    for (double p : {opts.tempfail_percent, opts.permfail_percent, opts.drop_percent}) {
        if (!(p >= 0 && p <= 100)) return fail("percentages must be within 0..100");
    }
    if (opts.tempfail_percent + opts.permfail_percent > 100)
        return fail("--tempfail-percent and --permfail-percent add up to more than 100");
    if (!(std::isfinite(opts.duration_s) && opts.duration_s >= 0))
        return fail("--duration must be a number of seconds (0 = no limit)");
    if (opts.threads == 0) return fail("--threads must be at least 1");
    unsigned threads = opts.threads;

    sink_state st;
    st.opts = &opts;
    for (unsigned i = 0; i < threads; ++i) st.per_domain.push_back(std::make_unique<sink_state::domain_counts>());
    if (!opts.ids_file.empty()) {
        st.ids_file = std::fopen(opts.ids_file.c_str(), "a");
        if (st.ids_file == nullptr) {
            std::fprintf(stderr, "ringmail-blast sink: cannot open --ids-file %s: %s\n", opts.ids_file.c_str(),
                         std::strerror(errno));
            return 2;
        }
    }

    sigset_t signals;
    sigemptyset(&signals);
    for (int s : {SIGTERM, SIGINT, SIGUSR1}) sigaddset(&signals, s);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    // Listening sockets are made here so errors are reported before any thread
    // starts; port 0 is resolved once so every shard shares the same port.
    std::vector<std::vector<int>> fds(threads);
    try {
        for (auto& a : addrs) {
            std::vector<int> group = engine::make_listen_group(a, threads);
            for (unsigned i = 0; i < threads; ++i) fds[i].push_back(group[i]);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ringmail-blast sink: %s\n", e.what());
        return 1;
    }

    engine::shard_options so;
    so.shutdown_timeout = std::chrono::milliseconds(2000);
    std::vector<std::unique_ptr<engine::shard>> shards;
    std::vector<std::unique_ptr<shard_ctx>> ctxs;
    for (unsigned i = 0; i < threads; ++i) {
        shards.push_back(std::make_unique<engine::shard>(i, -1, so));  // unpinned: shares cores with the sender
        ctxs.push_back(std::make_unique<shard_ctx>());
        ctxs.back()->state = &st;
    }
    for (unsigned i = 0; i < threads; ++i) {
        shards[i]->start([ctx = ctxs[i].get(), my_fds = fds[i]](engine::shard& s) {
            ctx->shard = &s;
            for (int fd : my_fds) s.listen(fd, [ctx](int client) { engine::spawn(serve(*ctx, client)); });
            s.on_stop([ctx] {
                for (auto* p = ctx->sessions; p; p = p->next) p->shutdown();
            });
        });
    }
    for (auto& s : shards) {
        if (!s->wait_ready()) {
            std::fprintf(stderr, "ringmail-blast sink: shard %u: %s\n", s->index(), s->setup_error().c_str());
            for (auto& t : shards) t->request_stop();
            for (auto& t : shards) t->join();
            return 1;
        }
    }
    for (auto& a : addrs) std::fprintf(stderr, "ringmail-blast sink: listening on %s\n", a.to_string().c_str());
    std::fflush(stderr);

    using clock = std::chrono::steady_clock;
    auto start = clock::now();
    auto seconds = [&] { return std::chrono::duration<double>(clock::now() - start).count(); };
    auto next_progress = start + 1s;
    uint64_t last_messages = 0;
    bool interactive = ::isatty(2);
    auto flush_ids = [&] {
        if (st.ids_file == nullptr) return;
        std::lock_guard lock(st.mutex);
        std::fflush(st.ids_file);
    };
    clock::time_point expect_seen{};
    for (;;) {
        timespec ts{0, expect_seen == clock::time_point{} ? 100'000'000 : 20'000'000};
        int sig = sigtimedwait(&signals, nullptr, &ts);
        if (sig == SIGTERM || sig == SIGINT) break;
        if (sig == SIGUSR1) {
            flush_ids();
            std::fputs(summary_text(st, seconds()).c_str(), stderr);
            std::fflush(stderr);
        }
        if (opts.expect > 0 && st.messages.load() >= opts.expect) {
            // The last replies are on their way: the senders' connections
            // close after them (QUIT, or the 421 that refuses more mail);
            // connections that stay open idle are cut after 200 ms.
            if (expect_seen == clock::time_point{}) expect_seen = clock::now();
            if (st.connections_open.load() == 0 || clock::now() - expect_seen >= 200ms) break;
        }
        if (opts.duration_s > 0 && seconds() >= opts.duration_s) break;
        auto now = clock::now();
        if (now >= next_progress) {
            next_progress += 1s;
            flush_ids();  // a reader of the file sees it grow
            if (!opts.quiet) {
                uint64_t m = st.messages.load();
                std::fprintf(stderr, "%ssink: %.0fs %llu msgs (%llu/s) conns %d ckfail %llu dup %llu%s",
                             interactive ? "\r" : "", seconds(), (unsigned long long)m,
                             (unsigned long long)(m - last_messages), st.connections_open.load(),
                             (unsigned long long)st.checksum_failures.load(), (unsigned long long)st.duplicates.load(),
                             interactive ? "   " : "\n");
                std::fflush(stderr);
                last_messages = m;
            }
        }
    }
    double elapsed = seconds();
    if (interactive && !opts.quiet) std::fputc('\n', stderr);
    for (auto& s : shards) s->request_stop();
    for (auto& s : shards) s->join();
    if (st.ids_file) std::fclose(st.ids_file);
    if (opts.json) std::printf("%s\n", summary_json(st, elapsed).dump().c_str());
    else std::fputs(summary_text(st, elapsed).c_str(), stdout);
    std::fflush(stdout);
    return 0;
}

}  // namespace ringmail::blast
