#include "protocols/smtp/server_session.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <iterator>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "engine/io.h"
#include "engine/log.h"
#include "protocols/smtp/address.h"
#include "protocols/smtp/command_parser.h"
#include "protocols/smtp/data_reader.h"
#include "protocols/smtp/hop_count.h"
#include "protocols/smtp/relay_scheduler.h"
#include "protocols/smtp/request_deadline.h"
#include "store/envelope.h"

namespace ringmail::smtp {

namespace {

// The reply to a message that did not fit [smtp] receive_memory.
constexpr const char* no_memory_reply = "452 4.3.1 Error: insufficient system resources, try again later";

int64_t unix_now() { return std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count(); }
uint64_t unix_now_us() { return std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count(); }

// RFC 5322 §3.3 date-time in UTC.
void append_rfc5322_date(std::string& out, int64_t t) {
    time_t tt = static_cast<time_t>(t);
    tm parts{};
    gmtime_r(&tt, &parts);
    char buf[64];
    size_t n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &parts);
    out.append(buf, n);
}

// Client-supplied text going into a header: printable ASCII only, bounded.
// `utf8`: s is valid UTF-8 (an address the parser checked under SMTPUTF8),
// which a header may carry (RFC 6532); kept whole when it fits, never cut
// inside a character.
void append_header_safe(std::string& out, std::string_view s, size_t max = 255, bool utf8 = false) {
    const bool keep_8bit = utf8 && s.size() <= max;
    for (size_t i = 0; i < s.size() && i < max; ++i) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        bool ok = (c > 0x20 && c < 0x7f && c != '(' && c != ')') || (c >= 0x80 && keep_8bit);
        out.push_back(ok ? char(c) : '_');
    }
}

store::body_type to_store(body_type b) {
    switch (b) {
        case body_type::eight_bit_mime: return store::body_type::eight_bit_mime;
        case body_type::binary_mime: return store::body_type::binary_mime;
        default: return store::body_type::seven_bit;
    }
}

// Maps an address parse error to the reply RFC 5321 / RFC 3463 ask for.
std::string_view address_reply(address_error e, bool is_sender) {
    switch (e) {
        case address_error::unknown_param: return "555 5.5.4 Unsupported parameter";
        case address_error::bad_utf8: return "553 5.6.7 Malformed UTF-8 in address";
        case address_error::local_part_too_long:
        case address_error::domain_too_long:
        case address_error::path_too_long: return "553 5.1.3 Address too long";
        case address_error::missing_prefix:
        case address_error::trailing_garbage:
        case address_error::bad_param_syntax:
        case address_error::too_many_params:
        case address_error::duplicate_param:
        case address_error::bad_size:
        case address_error::bad_body:
        case address_error::bad_smtputf8:
        case address_error::bad_ret:
        case address_error::bad_envid:
        case address_error::bad_auth:
        case address_error::bad_notify:
        case address_error::bad_orcpt: return "501 5.5.4 Syntax error in parameters";
        case address_error::control_char: return "501 5.5.2 Control characters not allowed";
        default:
            return is_sender ? "501 5.1.7 Bad sender address syntax" : "501 5.1.3 Bad recipient address syntax";
    }
}

}  // namespace

class server_session {
public:
    server_session(server_context& ctx, int fd)
        : _ctx(ctx), _fd(fd), _cfg(ctx.cfg), _reader(_cfg->smtp.max_line_bytes - 2), _body(ctx.shard.chunks()) {
        _next = ctx.sessions;
        if (_next) _next->_prev = this;
        ctx.sessions = this;
        ctx.shard.hold();
    }
    ~server_session() {
        if (_prev) _prev->_next = _next;
        else _ctx.sessions = _next;
        if (_next) _next->_prev = _prev;
        ::close(_fd);
        _ctx.shard.release();
    }

    engine::task<void> run();

    void request_stop() {
        _stop = true;
        if (_idle_wait) ::shutdown(_fd, SHUT_RD);
    }
    void force_close() { ::shutdown(_fd, SHUT_RDWR); }
    server_session* next() const { return _next; }

private:
    enum class phase { command, skip_line, data, bdat };
    enum class action { need_more, commit, close };

    // Input handling (synchronous: no waits inside).
    action process(std::string_view in, size_t& consumed);
    action on_command(const command_parse& p);
    action on_helo(std::string_view arg, bool extended);
    action on_mail(std::string_view arg);
    action on_rcpt(std::string_view arg);
    action on_data(std::string_view arg);
    action on_bdat(std::string_view arg);
    action end_of_data(const data_flags& flags, bool too_big);
    bool too_many_hops() const;

    void reply(std::string_view line) {
        _out.append(line);
        _out.append("\r\n");
    }
    template <class... Args>
    void replyf(fmt::format_string<Args...> f, Args&&... args) {
        fmt::format_to(std::back_inserter(_out), f, std::forward<Args>(args)...);
        _out.append("\r\n");
    }
    // A reply that counts towards max_errors (RFC 5321 §4.3.2 lets a server
    // drop a client that keeps making mistakes).
    action error(std::string_view line) {
        reply(line);
        return count_error();
    }
    // A failed BDAT transaction's reply: the shard's lack of memory is not
    // the client's error, anything else counts.
    action refuse_bdat(const char* why) {
        if (why != no_memory_reply) return error(why);
        reply(why);
        return action::need_more;
    }
    // Whether `n` more body bytes fit [smtp] receive_memory (per shard): many
    // large messages arriving at once must not exhaust memory.
    bool body_fits(size_t n) const {
        return _ctx.shard.chunks().in_use_bytes() + n <= _cfg->smtp.receive_memory;
    }
    void log_no_memory() {
        log::warning("reject: end of data from {}: 452 4.3.1: smtp.receive_memory ({} bytes) in use by messages "
                     "being received; from=<{}>", _peer_text, _cfg->smtp.receive_memory,
                     log::escaped(_sender, 100));
    }
    action count_error() {
        if (++_errors >= _cfg->smtp.max_errors) {
            log::info("{}: too many errors, disconnecting", _peer_text);
            replyf("421 4.7.0 {} Error: too many errors", _cfg->server.hostname);
            return action::close;
        }
        return action::need_more;
    }
    // NOOP, RSET, VRFY, HELP: answered, but past junk_command_limit since
    // the last message accepted each one counts as an error, so a client
    // cannot hold a session with them for ever (Postfix:
    // smtpd_junk_command_limit, reset after mail is delivered too).
    action junk(std::string_view line) {
        reply(line);
        if (++_junk > _cfg->smtp.junk_command_limit) return count_error();
        return action::need_more;
    }
    void reset_transaction() {
        _has_mail = false;
        _sender.clear();
        _envid.clear();
        _rcpts.clear();
        _body.clear();
        _size_hint = 0;
        _body_type = body_type::unspecified;
        _smtputf8 = false;
        _ret = ret_type::unspecified;
        _bdat_failed = nullptr;
        _chunks = {};
        _in_bdat = false;
    }
    bool in_transaction() const { return _has_mail; }
    uint64_t size_limit() const { return _cfg->smtp.message_size_limit; }

    engine::task<bool> flush();
    void prepare_commit();
    void finish_commit(const result<void, store::spool_error>& outcome);

    server_context& _ctx;
    int _fd;
    std::shared_ptr<const config> _cfg;
    net::socket_address _peer;
    std::string _peer_text;
    bool _relay_allowed = false;

    server_session* _next = nullptr;
    server_session* _prev = nullptr;
    bool _stop = false;
    bool _idle_wait = false;

    phase _phase = phase::command;
    request_deadline _deadline;
    uint64_t _lines_done = 0;     // command lines taken (each one is a new request)
    uint64_t _lines_at_wait = 0;  // _lines_done at the last wait
    std::string _pending;  // unconsumed input (a partial line, pipelined commands)
    std::string _out;      // replies not sent yet
    unsigned _errors = 0;
    unsigned _junk = 0;       // NOOP, RSET, VRFY, HELP since the last accepted message
    unsigned _overshoot = 0;  // RCPTs refused for max_recipients this session

    std::string _helo;
    bool _esmtp = false;

    // Transaction.
    bool _has_mail = false;
    std::string _sender;
    std::string _envid;
    uint64_t _size_hint = 0;
    body_type _body_type = body_type::unspecified;
    bool _smtputf8 = false;
    ret_type _ret = ret_type::unspecified;
    std::vector<store::recipient> _rcpts;

    data_reader _reader;
    bool _too_big = false;
    bool _no_memory = false;  // the DATA body went past smtp.receive_memory
    engine::chunk_chain _body;
    uint64_t _bdat_remaining = 0;
    bool _bdat_last = false;
    bool _in_bdat = false;
    const char* _bdat_failed = nullptr;  // reply for a BDAT transaction that failed
    chunk_state _chunks;

    // Commit scratch, reused across messages.
    uint64_t _queue_id = 0;
    std::string _record;
    std::string _received;
    std::vector<std::string_view> _parts;
};

engine::task<bool> server_session::flush() {
    size_t off = 0;
    while (off < _out.size()) {
        int n = co_await engine::async_send(_fd, _out.data() + off, _out.size() - off, _cfg->smtp.command_timeout);
        if (n <= 0) {
            _out.clear();
            co_return false;
        }
        off += static_cast<size_t>(n);
    }
    _out.clear();
    co_return true;
}

engine::task<void> server_session::run() {
    _peer.set_length(net::socket_address::capacity());
    if (::getpeername(_fd, _peer.sockaddr_ptr(), _peer.length_ptr()) != 0) co_return;
    _peer_text = _peer.to_string();
    int one = 1;
    ::setsockopt(_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (const auto& net : _cfg->relay.allow_networks) {
        if (net.contains(_peer)) {
            _relay_allowed = true;
            break;
        }
    }

    auto verdict = _ctx.limiter.enter(_peer);
    if (verdict != engine::connection_limiter::verdict::ok) {
        log::warning("connect from {}: refused, too many connections{}", _peer_text,
                     verdict == engine::connection_limiter::verdict::per_ip_exceeded ? " from this address" : "");
        replyf("421 4.7.0 {} Error: too many connections", _cfg->server.hostname);
        co_await flush();
        co_return;
    }
    ++_ctx.connections_accepted;
    log::debug("connect from {}", _peer_text);
    replyf("220 {} ESMTP ringmail", _cfg->server.hostname);

    auto& buffers = _ctx.shard.buffers();
    bool open = true;
    while (open) {
        // 1. Work through input already held (pipelined commands, partial line).
        if (!_pending.empty()) {
            size_t consumed = 0;
            action a = process(_pending, consumed);
            _pending.erase(0, consumed);
            if (a == action::close) break;
            if (a == action::commit) {
                prepare_commit();
                auto r = co_await _ctx.commit.commit(store::spool_op{store::spool_op::kind::put, _queue_id, _record,
                                                                     _parts});
                finish_commit(r);
                continue;
            }
        }
        // 2. Out of input: send the replies collected so far (RFC 2920 §3.1)
        //    and wait for more, in one submission when there is something to send.
        if (_stop && !in_transaction() && _phase == phase::command) {
            replyf("421 4.3.2 {} Service shutting down, closing transmission channel", _cfg->server.hostname);
            co_await flush();
            break;
        }
        const bool content = _phase == phase::data || _phase == phase::bdat;
        const request_timing timing{_cfg->smtp.command_timeout, _cfg->smtp.data_timeout, _cfg->smtp.min_data_rate};
        const bool new_request = (_phase == phase::command && _pending.empty()) || _lines_done != _lines_at_wait;
        _lines_at_wait = _lines_done;
        auto timeout = _deadline.before_read(content ? request_deadline::kind::content : request_deadline::kind::command,
                                             new_request, engine::this_ring().now_ms(), timing);
        _idle_wait = !in_transaction() && _phase == phase::command && _pending.empty();
        engine::recv_buffered_op::result r{};
        if (!_out.empty()) {
            auto sr = co_await engine::async_send_recv_buffered(_fd, _out.data(), _out.size(), buffers.group(),
                                                                timeout);
            _out.clear();
            r = {sr.res, sr.buffer_id};
            if (!sr.sent) {
                _idle_wait = false;
                if (r.buffer_id >= 0) buffers.recycle(r.buffer_id);
                break;
            }
        } else {
            r = co_await engine::async_recv_buffered(_fd, buffers.group(), timeout);
        }
        _idle_wait = false;
        if (r.res == -ENOBUFS) {
            // Every receive buffer is in use: wait a moment rather than fail.
            co_await engine::sleep_op(std::chrono::milliseconds(1));
            continue;
        }
        if (r.res <= 0) {
            if (r.res == -ETIMEDOUT) {
                replyf("421 4.4.2 {} Error: timeout exceeded", _cfg->server.hostname);
                co_await flush();
            } else if (r.res == 0 && _stop) {
                replyf("421 4.3.2 {} Service shutting down, closing transmission channel", _cfg->server.hostname);
                co_await flush();
            }
            if (r.buffer_id >= 0) buffers.recycle(r.buffer_id);
            break;
        }
        if (content) _deadline.content_received(static_cast<uint64_t>(r.res), engine::this_ring().now_ms(), timing);
        std::string_view in = buffers.view(r.buffer_id, static_cast<size_t>(r.res));
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
        if (a == action::commit) {
            prepare_commit();
            auto c = co_await _ctx.commit.commit(store::spool_op{store::spool_op::kind::put, _queue_id, _record,
                                                                 _parts});
            finish_commit(c);
        }
    }
    if (!_out.empty()) co_await flush();
    _ctx.limiter.leave(_peer);
    log::debug("disconnect from {}", _peer_text);
}

server_session::action server_session::process(std::string_view in, size_t& consumed) {
    consumed = 0;
    while (consumed < in.size()) {
        std::string_view rest = in.substr(consumed);
        switch (_phase) {
            case phase::command: {
                command_parse p = parse_command(rest, _cfg->smtp.max_command_bytes);
                if (p.status == parse_status::need_more) return action::need_more;
                consumed += p.consumed;
                ++_lines_done;
                if (p.status == parse_status::error) {
                    if (p.error == command_error::line_too_long && !p.line_ended) _phase = phase::skip_line;
                    std::string_view text = p.error == command_error::line_too_long
                                                ? "500 5.5.2 Error: line too long"
                                                : "500 5.5.2 Error: bare CR, LF or NUL in command";
                    if (error(text) == action::close) return action::close;
                    continue;
                }
                action a = on_command(p);
                if (a != action::need_more) return a;
                break;
            }
            case phase::skip_line: {
                skip_result s = skip_line(rest);
                consumed += s.consumed;
                if (!s.found_crlf) return action::need_more;
                _phase = phase::command;
                ++_lines_done;
                break;
            }
            case phase::data: {
                uint64_t limit = size_limit();
                auto r = _reader.feed(rest, [&](std::string_view piece) {
                    if (_too_big || _no_memory) return;
                    if (limit != 0 && _body.size() + piece.size() > limit) {
                        _too_big = true;
                        _body.clear();
                        return;
                    }
                    if (!body_fits(piece.size())) {
                        _no_memory = true;  // read on to the end, keep nothing
                        _body.clear();
                        return;
                    }
                    _body.append(piece);
                });
                consumed += r.consumed;
                if (!r.done) return action::need_more;
                _phase = phase::command;
                if (_no_memory && !_too_big) {
                    log_no_memory();
                    reset_transaction();
                    reply(no_memory_reply);
                    break;
                }
                action a = end_of_data(_reader.flags(), _too_big);
                if (a != action::need_more) return a;
                break;
            }
            case phase::bdat: {
                size_t n = static_cast<size_t>(std::min<uint64_t>(rest.size(), _bdat_remaining));
                std::string_view chunk = rest.substr(0, n);
                if (_bdat_failed == nullptr) {
                    check_chunk(chunk, _chunks, _cfg->smtp.max_line_bytes - 2);
                    if (size_limit() != 0 && _body.size() + n > size_limit()) {
                        _bdat_failed = "552 5.3.4 Error: message size exceeds fixed maximum message size";
                        log::info("reject: BDAT from {}: {}; from=<{}>", _peer_text, _bdat_failed,
                                  log::escaped(_sender, 100));
                        _body.clear();
                    } else if (!body_fits(n)) {
                        _bdat_failed = no_memory_reply;
                        log_no_memory();
                        _body.clear();
                    } else {
                        _body.append(chunk);
                    }
                }
                _bdat_remaining -= n;
                consumed += n;
                if (_bdat_remaining > 0) return action::need_more;
                _phase = phase::command;
                if (_bdat_failed != nullptr) {
                    // RFC 3030 §2: after a failed chunk the transaction is void.
                    const char* why = _bdat_failed;
                    if (_bdat_last || !_has_mail) reset_transaction();
                    if (refuse_bdat(why) == action::close) return action::close;
                    break;
                }
                if (!_bdat_last) {
                    replyf("250 2.0.0 {} octets received", _body.size());
                    break;
                }
                finish_chunks(_chunks);
                action a = end_of_data(_chunks.flags, false);
                if (a != action::need_more) return a;
                break;
            }
        }
    }
    return action::need_more;
}

server_session::action server_session::on_command(const command_parse& p) {
    switch (p.cmd) {
        case verb::ehlo: return on_helo(p.argument, true);
        case verb::helo: return on_helo(p.argument, false);
        case verb::mail: return on_mail(p.argument);
        case verb::rcpt: return on_rcpt(p.argument);
        case verb::data: return on_data(p.argument);
        case verb::bdat: return on_bdat(p.argument);
        case verb::rset:
            reset_transaction();
            return junk("250 2.0.0 Ok");
        case verb::noop: return junk("250 2.0.0 Ok");
        case verb::quit:
            reply("221 2.0.0 Bye");
            return action::close;
        case verb::vrfy:
            // RFC 5321 §3.5.3: 252 when we will not verify but will accept.
            return junk("252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery");
        case verb::expn: return error("502 5.5.1 Error: EXPN not available");
        case verb::help:
            return junk("214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP");
        case verb::starttls:
        case verb::auth: return error("502 5.5.1 Error: command not implemented");
        case verb::unknown: break;
    }
    log::debug("{}: unknown command: {}", _peer_text, log::escaped(p.verb_text, 40));
    return error("500 5.5.1 Error: command not recognized");
}

server_session::action server_session::on_helo(std::string_view arg, bool extended) {
    if (arg.empty()) return error(extended ? "501 5.5.4 Syntax: EHLO hostname" : "501 5.5.4 Syntax: HELO hostname");
    reset_transaction();
    _helo.assign(arg.substr(0, 255));
    _esmtp = extended;
    if (!extended) {
        replyf("250 {}", _cfg->server.hostname);
        return action::need_more;
    }
    replyf("250-{}", _cfg->server.hostname);
    reply("250-PIPELINING");
    replyf("250-SIZE {}", size_limit());
    reply("250-8BITMIME");
    reply("250-ENHANCEDSTATUSCODES");
    reply("250-SMTPUTF8");
    reply("250-CHUNKING");
    reply("250 DSN");
    return action::need_more;
}

server_session::action server_session::on_mail(std::string_view arg) {
    if (_helo.empty()) return error("503 5.5.1 Error: send HELO/EHLO first");
    if (_has_mail) return error("503 5.5.1 Error: nested MAIL command");
    auto m = parse_mail_from(arg);
    if (!m) return error(address_reply(m.error(), true));
    const mail_params& params = m->params;
    if (!_esmtp && (params.has_size || params.body != body_type::unspecified || params.smtputf8 ||
                    params.ret != ret_type::unspecified || !params.envid.empty() || !params.auth.empty()))
        return error("555 5.5.4 Error: parameters need EHLO");
    if (params.body == body_type::binary_mime) return error("555 5.5.4 Error: BINARYMIME not supported");
    // RFC 4954 §5: AUTH= belongs to the AUTH extension, which is not offered.
    if (!params.auth.empty()) return error("555 5.5.4 Error: AUTH parameter not supported");
    if (m->path.has_utf8 && !params.smtputf8)
        return error("553 5.6.7 Error: non-ASCII sender address needs SMTPUTF8");
    if (params.has_size && size_limit() != 0 && params.size > size_limit())
        return error("552 5.3.4 Error: message size exceeds fixed maximum message size");
    if (!_ctx.scheduler.queue_has_room()) {
        log::warning("reject: MAIL from {}: 452 4.3.1 insufficient system storage", _peer_text);
        return error("452 4.3.1 Error: insufficient system storage");
    }
    reset_transaction();
    _has_mail = true;
    _sender.assign(m->path.mailbox);
    _envid.assign(params.envid);
    _size_hint = params.size;
    _body_type = params.body;
    _smtputf8 = params.smtputf8;
    _ret = params.ret;
    reply("250 2.1.0 Ok");
    return action::need_more;
}

server_session::action server_session::on_rcpt(std::string_view arg) {
    if (!_has_mail) return error("503 5.5.1 Error: need MAIL command");
    if (_in_bdat) return error("503 5.5.1 Error: RCPT not allowed during BDAT");
    auto r = parse_rcpt_to(arg);
    if (!r) return error(address_reply(r.error(), false));
    if (r->path.has_utf8 && !_smtputf8) return error("553 5.6.7 Error: non-ASCII recipient address needs SMTPUTF8");
    if (!_esmtp && (r->params.notify != 0 || !r->params.orcpt.empty()))
        return error("555 5.5.4 Error: parameters need EHLO");
    // "<Postmaster>" without a domain (RFC 5321 §4.1.1.3) names this server's
    // postmaster, whom every client may write to (§4.5.1), relay or not:
    // with no local mailboxes yet it is relay.postmaster, relayed onwards.
    const bool to_postmaster = r->path.is_postmaster;
    std::string_view mailbox = to_postmaster ? std::string_view(_cfg->relay.postmaster) : r->path.mailbox;
    if (!_relay_allowed && !to_postmaster) {
        log::info("reject: RCPT from {}: 554 5.7.1 <{}>: Relay access denied; from=<{}>", _peer_text,
                  log::escaped(mailbox, 100), log::escaped(_sender, 100));
        std::string line = fmt::format("554 5.7.1 <{}>: Relay access denied", log::escaped(mailbox, 256));
        return error(line);
    }
    if (_rcpts.size() >= _cfg->smtp.max_recipients) {
        // Past the overshoot limit each further one is an error (Postfix:
        // smtpd_recipient_overshoot_limit): 10^6 RCPTs end in a 421.
        reply("452 4.5.3 Error: too many recipients");
        if (++_overshoot > _cfg->smtp.recipient_overshoot_limit) return count_error();
        return action::need_more;
    }
    store::recipient& rc = _rcpts.emplace_back();
    rc.address.assign(mailbox);
    rc.orcpt.assign(r->params.orcpt);
    rc.notify = r->params.notify;
    reply("250 2.1.5 Ok");
    return action::need_more;
}

server_session::action server_session::on_data(std::string_view arg) {
    if (!arg.empty()) return error("501 5.5.4 Syntax: DATA");
    if (!_has_mail) return error("503 5.5.1 Error: need MAIL command");
    if (_in_bdat) return error("503 5.5.1 Error: DATA not allowed after BDAT");
    // RFC 2920 §3.1: a pipelined DATA after all RCPTs failed gets an error.
    if (_rcpts.empty()) return error("554 5.5.1 Error: no valid recipients");
    _reader.reset();
    _too_big = false;
    _no_memory = false;
    _body.clear();
    _phase = phase::data;
    reply("354 End data with <CR><LF>.<CR><LF>");
    return action::need_more;
}

server_session::action server_session::on_bdat(std::string_view arg) {
    // BDAT chunk-size [LAST] (RFC 3030 §2). The chunk must be consumed even
    // when the command fails, or its bytes would be read as commands.
    uint64_t size = 0;
    size_t i = 0;
    while (i < arg.size() && arg[i] >= '0' && arg[i] <= '9' && i < 19) size = size * 10 + uint64_t(arg[i++] - '0');
    std::string_view rest = arg.substr(i);
    bool last = false;
    if (rest.size() == 5 && (rest == " LAST" || rest == " last" || rest == " Last")) last = true;
    else if (!rest.empty() || i == 0) return error("501 5.5.4 Syntax: BDAT chunk-size [LAST]");
    _bdat_remaining = size;
    _bdat_last = last;
    _phase = size > 0 ? phase::bdat : phase::command;
    if (!_has_mail) _bdat_failed = "503 5.5.1 Error: need MAIL command";
    else if (_rcpts.empty()) _bdat_failed = "554 5.5.1 Error: no valid recipients";
    if (!_in_bdat && _has_mail) {
        _in_bdat = true;
        _body.clear();
        _chunks = {};
    }
    if (size == 0) {
        // Zero-length chunk: act on it now.
        if (_bdat_failed != nullptr) {
            const char* why = _bdat_failed;
            if (last || !_has_mail) reset_transaction();
            _bdat_failed = _has_mail ? _bdat_failed : nullptr;
            return refuse_bdat(why);
        }
        if (!last) {
            replyf("250 2.0.0 {} octets received", _body.size());
            return action::need_more;
        }
        finish_chunks(_chunks);
        return end_of_data(_chunks.flags, false);
    }
    return action::need_more;
}

server_session::action server_session::end_of_data(const data_flags& flags, bool too_big) {
    const char* refusal = nullptr;
    if (too_big) refusal = "552 5.3.4 Error: message size exceeds fixed maximum message size";
    else if (flags.saw_bare_lf || flags.saw_bare_cr) refusal = "554 5.6.0 Error: bare CR or LF in message content";
    else if (flags.saw_nul) refusal = "554 5.6.0 Error: NUL in message content";
    else if (flags.line_too_long) refusal = "554 5.6.0 Error: message line longer than 1000 octets";
    else if (too_many_hops()) refusal = "554 5.4.6 Error: too many hops (Received: header fields), a mail loop?";
    if (refusal != nullptr) {
        log::info("reject: end of data from {}: {}; from=<{}>", _peer_text, refusal, log::escaped(_sender, 100));
        reset_transaction();
        return error(refusal);
    }
    return action::commit;
}

// RFC 5321 §6.3 loop detection: the message already passed max_hops relays
// (ours would add one more Received: field).
bool server_session::too_many_hops() const {
    received_counter c;
    _body.for_each_part([&](std::string_view part) { return c.feed(part); });
    return c.count() >= _cfg->smtp.max_hops;
}

void server_session::prepare_commit() {
    _queue_id = _ctx.ids.next(unix_now_us());
    auto qid = store::to_hex(_queue_id);
    int64_t now = unix_now();

    // The Received: header (RFC 5321 §4.4) prepended to the stored message.
    _received.assign("Received: from ");
    append_header_safe(_received, _helo);
    _received.append(" (");
    _received.append(_peer.host_string());
    _received.append(")\r\n\tby ");
    _received.append(_cfg->server.hostname);
    _received.append(" (ringmail) with ");
    _received.append(_smtputf8 ? "UTF8SMTP" : (_esmtp ? "ESMTP" : "SMTP"));
    _received.append(" id ");
    _received.append(qid.view());
    if (_rcpts.size() == 1) {
        _received.append("\r\n\tfor <");
        append_header_safe(_received, _rcpts.front().address, 256, _smtputf8);
        _received.append(">");
    }
    _received.append("; ");
    append_rfc5322_date(_received, now);
    _received.append("\r\n");

    store::envelope env;
    env.id = _queue_id;
    env.received_at = now;
    env.client_address = _peer_text;
    env.helo = _helo;
    env.sender = _sender;
    env.size = _received.size() + _body.size();
    env.body = to_store(_body_type);
    env.smtputf8 = _smtputf8;
    env.ret = _ret == ret_type::full ? store::dsn_ret::full
                                     : (_ret == ret_type::hdrs ? store::dsn_ret::hdrs : store::dsn_ret::unset);
    env.envid = _envid;
    env.recipients = std::move(_rcpts);
    env.next_attempt = now;
    _record.clear();
    store::encode(env, _record);
    _rcpts = std::move(env.recipients);

    _parts.clear();
    _parts.push_back(_received);
    _body.parts(_parts);
}

void server_session::finish_commit(const result<void, store::spool_error>& outcome) {
    auto qid = store::to_hex(_queue_id);
    if (outcome) {
        replyf("250 2.0.0 Ok: queued as {}", qid.view());
        _junk = 0;  // as Postfix: a client that sends mail may RSET/NOOP between messages
        log::info("{}: received client={} size={} from=<{}> nrcpt={}", qid.view(), _peer_text,
                  _received.size() + _body.size(), log::escaped(_sender, 256), _rcpts.size());
        ++_ctx.messages_received;
        _ctx.scheduler.enqueue(_queue_id);
    } else {
        // A full map or disk is "insufficient system storage" (RFC 3463 4.3.1,
        // as Postfix says it); anything else a write error.
        if (outcome.error() == store::spool_error::full) reply("452 4.3.1 Error: insufficient system storage");
        else reply("451 4.3.0 Error: queue file write error");
        log::error("{}: queue write failed for message from {}: {}", qid.view(), _peer_text,
                   store::to_string(outcome.error()));
    }
    reset_transaction();
}

engine::task<void> serve(server_context& ctx, int fd) {
    server_session s(ctx, fd);
    co_await s.run();
}

void stop_sessions(server_context& ctx) {
    for (auto* s = ctx.sessions; s != nullptr; s = s->next()) s->request_stop();
}

void force_close_sessions(server_context& ctx) {
    for (auto* s = ctx.sessions; s != nullptr; s = s->next()) s->force_close();
}

}  // namespace ringmail::smtp
