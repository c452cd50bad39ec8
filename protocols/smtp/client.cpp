#include "protocols/smtp/client.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

#include "engine/io.h"
#include "engine/log.h"
#include "protocols/smtp/ascii.h"
#include "protocols/smtp/dot_stuffing.h"
#include "protocols/smtp/mime_downgrade.h"
#include "protocols/smtp/smtputf8.h"

namespace ringmail::smtp {

namespace {
// What is kept of a reply's text (logs, the queue, DSNs): a next hop may
// send kilobytes; Postfix truncates too.
constexpr size_t max_reply_text = 2000;

// Joins a multi-line reply into one line (for logs and DSNs), cut at
// max_reply_text.
std::string one_line(std::string_view raw) {
    std::string s;
    std::string_view rest = raw;
    std::string_view text;
    bool first = true;
    while (next_reply_line(rest, text) && s.size() < max_reply_text) {
        if (!first) s.push_back(' ');
        first = false;
        s.append(text.substr(0, max_reply_text - std::min(s.size(), max_reply_text)));
    }
    if (s.empty()) s.assign(raw.substr(0, max_reply_text));
    if (s.size() >= max_reply_text) {
        s.resize(max_reply_text);
        s.append("...");
    }
    return s;
}

// Replies a client takes in (RFC 5321 §4.5.3.1: a client should not limit
// reply lines; §4.2.1: replies may have many lines): far past the 512-octet
// line, but bounded, so a next hop cannot make us buffer without end.
constexpr size_t max_reply_line_bytes = 64 * 1024;
constexpr size_t max_reply_lines = 100'000;
constexpr size_t max_reply_bytes = 1024 * 1024;

// The codes a transaction step may end with (RFC 5321 §4.3.2): MAIL, RCPT,
// the end of data and BDAT get 2xx, 4xx or 5xx, never 3xx.
bool final_code(int code) { return code / 100 == 2 || code / 100 == 4 || code / 100 == 5; }
}  // namespace

client_options client_options::from_config(const relay_config& relay, std::string tls_name) {
    client_options o;
    o.tls = relay.tls;
    o.tls_verify = relay.tls_verify;
    o.tls_ca_file = relay.tls_ca_file;
    o.tls_name = std::move(tls_name);
    return o;
}

client_options client_options::without_tls() const {
    client_options o = *this;
    o.tls = tls_policy::none;
    return o;
}

client::client(const config& cfg, net::socket_address destination, client_options options)
    : _cfg(cfg), _dest(destination), _options(std::move(options)), _peer_name(destination.to_string()) {}

client::~client() {
    _tls.reset();  // before the fd it talks over
    if (_fd >= 0) ::close(_fd);
}

std::string client::tls_description() const { return _tls ? _tls->description() : std::string(); }

void client::abort() {
    if (_fd < 0) return;
    ::shutdown(_fd, SHUT_RDWR);
    // shutdown() does not end a connect in progress: cancel whatever is in flight.
    io_uring_sqe* s = engine::this_ring().sqe();
    io_uring_prep_cancel_fd(s, _fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data(s, nullptr);
}

void client::set_error(std::string_view stage, const reply& r) {
    // Postfix's wording: "lost connection with X while receiving the initial
    // greeting", "conversation with X timed out ...", "... in reply to RCPT TO".
    std::string when = stage == greeting_stage ? std::string("while receiving the initial greeting")
                                               : fmt::format("in reply to {}", stage);
    if (r.code != 0) _last_error = fmt::format("{} said: {} ({})", _peer_name, r.text, when);
    else if (r.text == timed_out) _last_error = fmt::format("conversation with {} timed out {}", _peer_name, when);
    else if (r.text == malformed) _last_error = fmt::format("protocol error: malformed reply from {} {}", _peer_name, when);
    else _last_error = fmt::format("lost connection with {} {}", _peer_name, when);
}

void client::set_protocol_error(std::string_view stage, const reply& r) {
    _last_error = fmt::format("protocol error: {} said: {} (in reply to {})", _peer_name, r.text, stage);
}

engine::task<client::reply> client::read_reply(bool keep_raw) {
    for (;;) {
        auto p = parse_reply(_in, max_reply_line_bytes, max_reply_lines);
        if (p.status == parse_status::need_more && _in.size() > max_reply_bytes) p.status = parse_status::error;
        if (p.status == parse_status::complete) {
            // 421: the server is closing the connection (RFC 5321 §3.8).
            if (p.code == 421) _closing = true;
            reply r{p.code, one_line(p.raw), {}};
            if (keep_raw) r.raw.assign(p.raw);
            // Keep the code visible in the text, as Postfix logs it.
            if (r.text.size() < 3 || r.text.compare(0, 3, std::to_string(p.code)) != 0)
                r.text = fmt::format("{} {}", p.code, r.text);
            _in.erase(0, p.consumed);
            co_return r;
        }
        if (p.status == parse_status::error) {
            _in.clear();
            _closing = true;
            co_return reply{0, std::string(malformed), {}};
        }
        int n = 0;
        if (_tls) {
            engine::tls::tls_result<size_t> got = co_await _tls->read(_buf, sizeof _buf, _cfg.relay.command_timeout);
            if (!got) {
                _closing = true;
                co_return reply{0, got.error().message, {}};
            }
            n = static_cast<int>(*got);
        } else {
            n = co_await engine::async_recv(_fd, _buf, sizeof _buf, _cfg.relay.command_timeout);
        }
        if (n <= 0) {
            _closing = true;
            co_return reply{0, std::string(n == -ETIMEDOUT ? timed_out : lost), {}};
        }
        _in.append(_buf, static_cast<size_t>(n));
    }
}

engine::task<bool> client::send_all(std::string_view data) {
    if (_tls) {
        engine::tls::tls_result<void> sent = co_await _tls->write(data, _cfg.relay.command_timeout);
        co_return sent.ok();
    }
    while (!data.empty()) {
        int n = co_await engine::async_send(_fd, data.data(), data.size(), _cfg.relay.command_timeout);
        if (n <= 0) co_return false;
        data.remove_prefix(static_cast<size_t>(n));
    }
    co_return true;
}

engine::task<bool> client::send_body(store::body_view body) {
    _iov.clear();
    const std::string_view pieces[] = {body.head, body.tail};
    dot_stuff_segments(pieces, _iov);
    co_return co_await send_iovecs();
}

engine::task<bool> client::send_iovecs() {
    if (_tls) {
        engine::tls::tls_result<void> sent = co_await _tls->write(std::span<const iovec>(_iov), _cfg.relay.command_timeout);
        co_return sent.ok();
    }
    size_t first = 0;
    while (first < _iov.size()) {
        size_t count = std::min<size_t>(_iov.size() - first, 1024);  // IOV_MAX
        int n = co_await engine::async_sendmsg(_fd, _iov.data() + first, count, _cfg.relay.command_timeout);
        if (n <= 0) co_return false;
        // Advance past what was sent (a short send leaves a partial iovec).
        size_t sent = static_cast<size_t>(n);
        while (sent > 0 && first < _iov.size()) {
            if (sent >= _iov[first].iov_len) {
                sent -= _iov[first].iov_len;
                ++first;
            } else {
                _iov[first].iov_base = static_cast<char*>(_iov[first].iov_base) + sent;
                _iov[first].iov_len -= sent;
                sent = 0;
            }
        }
    }
    co_return true;
}

engine::task<bool> client::open() {
    _fd = ::socket(_dest.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (_fd < 0) {
        _last_error = fmt::format("cannot create socket: {}", std::strerror(errno));
        co_return false;
    }
    int one = 1;
    ::setsockopt(_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (_options.source.family() != AF_UNSPEC) {
        if (_options.source.family() != _dest.family()) {
            _last_error = fmt::format("connect to {}: source address {} is of another address family",
                                      _peer_name, _options.source.host_string());
            co_return false;
        }
        // Bind the address only; the kernel picks the port at connect().
        ::setsockopt(_fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (::bind(_fd, _options.source.sockaddr_ptr(), _options.source.length()) != 0) {
            _last_error = fmt::format("connect to {}: cannot bind source address {}: {}", _peer_name,
                                      _options.source.host_string(), std::strerror(errno));
            co_return false;
        }
    }
    int rc = co_await engine::async_connect(_fd, _dest.sockaddr_ptr(), _dest.length(), _cfg.relay.connect_timeout);
    if (rc < 0) {
        _last_error = fmt::format("connect to {}: {}", _peer_name,
                                  rc == -ETIMEDOUT ? "Connection timed out" : std::strerror(-rc));
        co_return false;
    }
    reply greeting = co_await read_reply();
    if (greeting.code / 100 != 2) {
        set_error(greeting_stage, greeting);
        // RFC 5321 §3.1: after a 554 greeting the server waits for QUIT.
        if (!_closing) co_await quit();
        co_return false;
    }
    bool greeted = co_await ehlo();
    if (!greeted) co_return false;
    if (_loops_back) {
        co_await quit();
        co_return false;
    }
    if (_options.tls == tls_policy::none) co_return true;
    if (!_caps.starttls) {
        if (_options.tls == tls_policy::required) {
            _last_error = fmt::format("TLS is required but {} does not offer STARTTLS", _peer_name);
            co_return false;
        }
        co_return true;  // opportunistic: plain text
    }
    bool secured = co_await starttls();
    co_return secured;
}

engine::task<bool> client::ehlo() {
    const std::string& name = _options.ehlo_name.empty() ? _cfg.server.hostname : _options.ehlo_name;
    std::string ehlo_cmd = fmt::format("EHLO {}\r\n", name);
    bool sent = co_await send_all(ehlo_cmd);
    (void)sent;  // a failed send shows as a missing reply
    reply ehlo = co_await read_reply(true);
    if (ehlo.code == 0) {
        set_error("EHLO", ehlo);
        co_return false;
    }
    if (ehlo.code == 421) {
        set_error("EHLO", ehlo);
        co_return false;
    }
    if (ehlo.code / 100 != 2) {
        std::string helo_cmd = fmt::format("HELO {}\r\n", name);
        bool helo_sent = co_await send_all(helo_cmd);
        (void)helo_sent;
        reply helo = co_await read_reply();
        if (helo.code / 100 != 2) {
            set_error("HELO", helo);
            if (helo.code / 100 == 5) _helo_refusal = helo.text;
            if (!_closing) co_await quit();
            co_return false;
        }
        _ehlo_reply.clear();
        _caps = {};
        check_loop(helo.text);
    } else {
        _ehlo_reply = std::move(ehlo.raw);
        _caps = parse_ehlo_capabilities(_ehlo_reply);
        check_loop(ehlo.text);
    }
    co_return true;
}

// The first word of the EHLO/HELO reply is the server's name (RFC 5321
// §4.1.1.1); our own name there means we are talking to ourselves.
void client::check_loop(std::string_view reply_text) {
    std::string_view text = reply_text;  // "250-name greets you ..." or "250 name"
    if (text.size() <= 4) return;
    text.remove_prefix(4);
    size_t end = text.find_first_of(" \r\n");
    std::string_view name = text.substr(0, end);
    const std::string& mine = _cfg.server.hostname;
    if (name.empty() || !iequals(name, mine)) return;
    _loops_back = true;
    _last_error = fmt::format("{} greeted with my own hostname {}: mail loops back to myself", _peer_name, mine);
}

void client::tls_error(std::string what) {
    _tls_failed = true;
    _last_error = std::move(what);
}

engine::task<bool> client::starttls() {
    bool sent = co_await send_all("STARTTLS\r\n");
    (void)sent;
    reply r = co_await read_reply();
    if (r.code != 220) {
        if (r.code == 0) tls_error(fmt::format("lost connection with {} in reply to STARTTLS", _peer_name));
        else tls_error(fmt::format("{} said: {} (in reply to STARTTLS)", _peer_name, r.text));
        co_return false;
    }
    // RFC 3207 §4.2 / CVE-2011-0411: anything received after the 220 came
    // in the clear and must not be read as if it were protected.
    if (!_in.empty()) {
        tls_error(fmt::format("{} sent data in the clear after its 220 to STARTTLS", _peer_name));
        co_return false;
    }
    engine::tls::context_options copts;
    copts.verify = _options.tls_verify;
    copts.ca_file = _options.tls_verify ? _options.tls_ca_file : std::string();
    std::shared_ptr<engine::tls::context> ctx = _options.tls_context;
    if (!ctx) {
        auto shared = engine::tls::shared_client_context(copts);
        if (!shared) {
            tls_error(fmt::format("TLS with {}: {}", _peer_name, shared.error().message));
            co_return false;
        }
        ctx = *shared;
    }
    auto created = engine::tls::session::create(std::move(ctx), _fd);
    if (!created) {
        tls_error(fmt::format("TLS with {}: {}", _peer_name, created.error().message));
        co_return false;
    }
    std::unique_ptr<engine::tls::session> session = std::move(*created);
    std::string name = _options.tls_name.empty() ? _dest.host_string() : _options.tls_name;
    engine::tls::tls_result<void> shaken = co_await session->handshake(name, _cfg.relay.command_timeout);
    if (!shaken) {
        tls_error(fmt::format("TLS with {} ({}): {}", _peer_name, name, shaken.error().message));
        co_return false;
    }
    _tls = std::move(session);
    // RFC 3207 §4.2: forget what the server said before TLS; ask again.
    _caps = {};
    bool greeted = co_await ehlo();
    if (!greeted) co_return false;
    co_return true;
}

engine::task<bool> client::deliver(const outbound_message& m, std::vector<delivery_outcome>& outcomes) {
    bool in_step = co_await transaction(m, outcomes);
    // After a 421, a lost connection or a reply out of step, the next
    // message gets a new connection.
    co_return in_step && !_closing;
}

engine::task<bool> client::transaction(const outbound_message& m, std::vector<delivery_outcome>& outcomes) {
    const store::envelope& env = *m.envelope;
    outcomes.assign(m.recipients.size(), delivery_outcome{});
    // RFC 6152 §3: 8-bit content for a next hop without 8BITMIME is
    // converted to 7 bit (as Postfix, which also looks at the content, not
    // only at BODY=8BITMIME); a copy, on this rare path.
    store::body_view body = m.body;
    _converted.clear();
    if (!_caps.eight_bit_mime && (has_8bit_octets(m.body.head) || has_8bit_octets(m.body.tail))) {
        std::string joined;
        downgrade_result d = downgrade_8bit_mime(m.body.joined(joined));
        if (d.outcome == downgrade_result::status::unconvertible) {
            // RFC 3463 5.6.3: conversion required but not supported.
            std::string why = fmt::format("554 5.6.3 {} for {}", d.why, _peer_name);
            for (auto& o : outcomes) o = {554, why, {}};
            co_return true;
        }
        if (d.outcome == downgrade_result::status::converted) {
            _converted = std::move(d.message);
            body = store::body_view{_converted, {}};
        }
    }
    // A reply no step of the transaction can have (e.g. 250 to DATA, RFC
    // 5321 §4.3.2): the conversation is out of step (an extra or a missing
    // reply), so nothing said in it counts: every recipient is deferred
    // (Postfix: "protocol error") and the connection closed. Never taken as
    // delivered: the body may not have been sent at all.
    auto out_of_step = [&](std::string_view stage, const reply& r) {
        set_protocol_error(stage, r);
        _closing = true;
        for (auto& o : outcomes) o = delivery_outcome{};
    };

    _out.clear();
    fmt::format_to(std::back_inserter(_out), "MAIL FROM:<{}>", env.sender);
    if (_caps.size) fmt::format_to(std::back_inserter(_out), " SIZE={}", body.size());
    if (_caps.eight_bit_mime && env.body == store::body_type::eight_bit_mime) _out.append(" BODY=8BITMIME");
    if (_caps.smtputf8 && env.smtputf8) _out.append(" SMTPUTF8");
    if (_caps.dsn) {
        if (env.ret == store::dsn_ret::full) _out.append(" RET=FULL");
        if (env.ret == store::dsn_ret::hdrs) _out.append(" RET=HDRS");
        if (!env.envid.empty()) fmt::format_to(std::back_inserter(_out), " ENVID={}", env.envid);
    }
    _out.append("\r\n");
    if (_caps.size_limit != 0 && body.size() > _caps.size_limit) {
        // RFC 1870 §6: the server announced it would refuse it; do not send it.
        std::string why = fmt::format("552 5.3.4 message size {} exceeds size limit {} of {}", body.size(),
                                      _caps.size_limit, _peer_name);
        for (auto& o : outcomes) o = {552, why, {}};
        co_return true;
    }
    if (env.smtputf8 && !_caps.smtputf8 && needs_smtputf8(env, m.recipients, body)) {
        // RFC 6531 §3.5: cannot downgrade; a permanent failure for all.
        // (Flagged but plain ASCII where it matters: sent without the flag.)
        for (auto& o : outcomes) o = {550, "550 5.6.7 next hop does not support SMTPUTF8", {}};
        co_return true;
    }

    const bool pipelining = _caps.pipelining;
    // Non-pipelined: send each command and wait; pipelined: send the group.
    if (!pipelining) {
        if (!co_await send_all(_out)) co_return false;
        reply r = co_await read_reply();
        if (r.code == 0) co_return false;
        if (!final_code(r.code)) {
            out_of_step("MAIL FROM", r);
            co_return false;
        }
        if (r.code / 100 != 2) {
            set_error("MAIL FROM", r);
            for (auto& o : outcomes) o = {r.code, _last_error, r.text};
            co_return co_await reset();
        }
        _out.clear();
    }

    for (size_t i = 0; i < m.recipients.size(); ++i) {
        const auto& rc = env.recipients[m.recipients[i]];
        fmt::format_to(std::back_inserter(_out), "RCPT TO:<{}>", rc.address);
        if (_caps.dsn) {
            if (rc.notify != store::notify_unset) {
                if (rc.notify & store::notify_never) {
                    _out.append(" NOTIFY=NEVER");
                } else {
                    _out.append(" NOTIFY=");
                    bool first = true;
                    auto add = [&](const char* w) {
                        if (!first) _out.push_back(',');
                        _out.append(w);
                        first = false;
                    };
                    if (rc.notify & store::notify_success) add("SUCCESS");
                    if (rc.notify & store::notify_failure) add("FAILURE");
                    if (rc.notify & store::notify_delay) add("DELAY");
                }
            }
            if (!rc.orcpt.empty()) fmt::format_to(std::back_inserter(_out), " ORCPT={}", rc.orcpt);
        }
        _out.append("\r\n");
        if (!pipelining) {
            if (!co_await send_all(_out)) co_return false;
            _out.clear();
            reply r = co_await read_reply();
            if (r.code == 0) co_return false;
            if (!final_code(r.code)) {
                out_of_step("RCPT TO", r);
                co_return false;
            }
            if (r.code / 100 != 2) {
                set_error("RCPT TO", r);
                outcomes[i] = {r.code, _last_error, r.text};
            }
        }
    }
    // CHUNKING (RFC 3030) with PIPELINING: MAIL, RCPT, "BDAT n LAST" and the
    // body go out in one write and one round trip, the body straight from
    // the map without dot-stuffing (stored bodies are clean CRLF lines).
    const bool chunked = pipelining && _caps.chunking;
    if (chunked) {
        fmt::format_to(std::back_inserter(_out), "BDAT {} LAST\r\n", body.size());
        _iov.clear();
        _iov.push_back(iovec{_out.data(), _out.size()});
        for (std::string_view piece : {body.head, body.tail}) {
            if (!piece.empty()) _iov.push_back(iovec{const_cast<char*>(piece.data()), piece.size()});
        }
        if (!co_await send_iovecs()) co_return false;
    } else {
        _out.append("DATA\r\n");
        if (!co_await send_all(_out)) co_return false;
    }
    _out.clear();

    bool mail_ok = true;
    if (pipelining) {
        reply r = co_await read_reply();
        if (r.code == 0) co_return false;
        if (!final_code(r.code)) {
            out_of_step("MAIL FROM", r);
            co_return false;
        }
        if (r.code / 100 != 2) {
            mail_ok = false;
            set_error("MAIL FROM", r);
            for (auto& o : outcomes) o = {r.code, _last_error, r.text};
        }
        for (size_t i = 0; i < m.recipients.size(); ++i) {
            reply rr = co_await read_reply();
            if (rr.code == 0) co_return false;
            if (!final_code(rr.code)) {
                out_of_step("RCPT TO", rr);
                co_return false;
            }
            if (mail_ok && rr.code / 100 != 2) {
                set_error("RCPT TO", rr);
                outcomes[i] = {rr.code, _last_error, rr.text};
            }
        }
    }
    size_t accepted = 0;
    for (auto& o : outcomes) accepted += o.code == 0 ? 1 : 0;
    if (chunked) {
        // The BDAT reply is the final one; the server consumed the chunk even
        // when it refuses it (RFC 3030 §2), so the connection stays in step.
        reply fin = co_await read_reply();
        if (fin.code == 0) co_return false;
        if (!final_code(fin.code)) {
            out_of_step("BDAT command", fin);
            co_return false;
        }
        if (accepted > 0) {
            std::string text = fin.code / 100 == 2 ? fmt::format("{} ({})", _peer_name, fin.text)
                                                    : fmt::format("{} said: {} (in reply to BDAT command)",
                                                                  _peer_name, fin.text);
            for (auto& o : outcomes)
                if (o.code == 0) o = {fin.code, text, fin.text};
        }
        if (accepted > 0 && fin.code / 100 == 2) co_return true;
        co_return co_await reset();
    }
    reply data = co_await read_reply();
    if (data.code == 0) co_return false;
    if (data.code != 354) {
        if (data.code / 100 != 4 && data.code / 100 != 5) {
            out_of_step("DATA", data);
            co_return false;
        }
        if (accepted > 0) {
            set_error("DATA", data);
            for (auto& o : outcomes)
                if (o.code == 0) o = {data.code, _last_error, data.text};
        }
        co_return co_await reset();
    }
    if (accepted == 0) {
        // The server took DATA although no recipient was accepted: end it empty.
        co_await send_all(".\r\n");
        reply ignored = co_await read_reply();
        (void)ignored;
        co_return true;
    }
    if (!co_await send_body(body)) co_return false;
    reply fin = co_await read_reply();
    if (fin.code == 0) {
        // No final reply: the message may or may not have been taken; retry
        // later (a duplicate is allowed, a loss is not: RFC 5321 §6.1).
        co_return false;
    }
    if (!final_code(fin.code)) {
        out_of_step("end of DATA command", fin);
        co_return false;
    }
    std::string text = fin.code / 100 == 2 ? fmt::format("{} ({})", _peer_name, fin.text)
                                            : fmt::format("{} said: {} (in reply to end of DATA command)",
                                                          _peer_name, fin.text);
    for (auto& o : outcomes)
        if (o.code == 0) o = {fin.code, text, fin.text};
    co_return true;
}

// RSET after a refused transaction; the connection is reusable when it is
// accepted (not after a 421: the server is going away).
engine::task<bool> client::reset() {
    if (_closing) co_return false;
    bool sent = co_await send_all("RSET\r\n");
    if (!sent) co_return false;
    reply rr = co_await read_reply();
    co_return rr.code / 100 == 2;
}

engine::task<void> client::quit() {
    if (_fd < 0) co_return;
    // GCC 12 miscompiles a co_await inside an if condition whose branch
    // co_awaits a discarded result (SIGILL at run time): keep them apart.
    bool sent = co_await send_all("QUIT\r\n");
    if (sent) {
        reply bye = co_await read_reply();
        (void)bye;
    }
    if (_tls) {
        co_await _tls->shutdown(_cfg.relay.command_timeout);
        _tls.reset();
    }
    ::close(_fd);
    _fd = -1;
}

}  // namespace ringmail::smtp
