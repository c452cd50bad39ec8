// client: one outbound SMTP connection (RFC 5321 client side, PIPELINING
// RFC 2920), reused for many messages.
//
// Contracts:
// - When the server offers PIPELINING and CHUNKING, a message is one write:
//   MAIL, RCPTs, "BDAT n LAST" and the body (RFC 3030); otherwise DATA.
// - Only CRLF line ends are emitted; the body is dot-stuffed on the way out
//   by sending iovecs that point into the stored body (the LMDB map) plus
//   static "." insertions: the body is never copied into a buffer. The caller
//   keeps the body's read transaction open until deliver() returns.
// - Every wait has a timeout (connect_timeout, command_timeout).
// - STARTTLS (RFC 3207), per client_options::tls: after EHLO, when the
//   server offers STARTTLS and the policy is not `none`, open() sends
//   STARTTLS, expects 220, runs the TLS handshake (wolfSSL over the ring,
//   engine/tls.h) and sends EHLO again, whose capabilities replace the
//   first ones (§4.2). Bytes the server sent after its 220 in the clear are
//   refused (a command-injection attack). From then on every command, reply
//   and body goes through the TLS session; without TLS the plaintext path is
//   the same as before (no extra copy, no extra call).
//   Failure handling is the caller's:
//     opportunistic - not offered: plain. Refused or handshake failed:
//                     open() fails with tls_failed(); the caller may
//                     reconnect with options.without_tls().
//     required      - not offered, refused, handshake or verification
//                     failed: open() fails (tls_failed() is set too); the
//                     caller defers and never falls back.
// - deliver() reports one outcome per recipient (the reply that decided it)
//   and whether the connection can carry another message: not after a 421
//   (RFC 5321 §3.8), a lost connection, or a reply that no step of the
//   transaction can have (250 to DATA, 354 to MAIL, ...: the conversation is
//   out of step), which defers every recipient (outcome code 0, the reason
//   in last_error()) and is never taken as delivered.
// - Replies may have long lines and many of them (RFC 5321 §4.5.3.1 asks
//   clients not to limit them): up to 64 KiB a line and 1 MiB a reply; the
//   text kept for logs and DSNs is cut at 2000 bytes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <memory>

#include "engine/config.h"
#include "engine/net_address.h"
#include "engine/task.h"
#include "engine/tls.h"
#include "protocols/smtp/reply_parser.h"
#include "store/envelope.h"
#include "store/spool.h"

namespace ringmail::smtp {

struct delivery_outcome {
    int code = 0;       // SMTP reply code; 0 = no reply (connection trouble)
    std::string reply;  // for logs: "mx[192.0.2.1]:25 said: 550 5.1.1 <x@y>: unknown (in reply to RCPT TO)"
    std::string remote; // the remote reply alone, one line ("550 5.1.1 <x@y>: unknown"); "" if none (DSNs)
};

struct outbound_message {
    const store::envelope* envelope = nullptr;
    std::span<const size_t> recipients;  // indexes into envelope->recipients to deliver now
    store::body_view body;               // stored message, unstuffed, CRLF lines
};

// Per-connection choices the caller makes (the scheduler builds them from
// [relay] with from_config()). The defaults keep the client plain.
struct client_options {
    tls_policy tls = tls_policy::none;
    bool tls_verify = false;   // check the chain and tls_name (else encrypt only)
    std::string tls_ca_file;   // PEM CAs; empty = the system CA store (when verifying)
    // Name sent as SNI and, when verifying, matched against the certificate:
    // the MX host name, or the smarthost address. Empty = the destination
    // address as text.
    std::string tls_name;
    // Optional: a context to use instead of the shard's shared one
    // (engine::tls::shared_client_context for tls_verify/tls_ca_file); its
    // own verify and CA settings then apply.
    std::shared_ptr<engine::tls::context> tls_context;
    // [[egress]]: the local address to connect from (AF_UNSPEC = the
    // kernel's choice) and the EHLO name to use (empty = server.hostname).
    net::socket_address source;
    std::string ehlo_name;

    static client_options from_config(const relay_config& relay, std::string tls_name = {});
    // The same options with TLS off: for the plain retry after tls_failed().
    client_options without_tls() const;
};

class client {
public:
    client(const config& cfg, net::socket_address destination, client_options options = {});
    ~client();
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    // Connect, read the greeting, EHLO (HELO fallback), STARTTLS per the
    // options (see above). False with last_error() set on failure.
    engine::task<bool> open();
    // Runs one mail transaction. outcomes gets one entry per message.recipients entry.
    // Returns false when the connection must not be reused.
    engine::task<bool> deliver(const outbound_message& message, std::vector<delivery_outcome>& outcomes);
    engine::task<void> quit();
    // Cuts the connection (shutdown): pending operations fail promptly.
    void abort();

    const std::string& last_error() const { return _last_error; }
    const std::string& peer_name() const { return _peer_name; }
    // How logs and DSNs name the peer ("mx1.example.com[192.0.2.1]:25").
    void set_peer_name(std::string name) { _peer_name = std::move(name); }
    // open() failed in STARTTLS: refused, or the TLS handshake (or the
    // certificate check) failed. For opportunistic TLS the caller may retry
    // with options().without_tls(); for required TLS it must defer.
    bool tls_failed() const { return _tls_failed; }
    // open() failed because the peer greeted (EHLO/HELO reply) with our own
    // server.hostname: the next hop is this server, a mail loop (Postfix:
    // "loops back to myself").
    bool loops_back() const { return _loops_back; }
    // open() failed because the server refused EHLO and then answered HELO
    // with a 5xx (Postfix: "refused to talk to me"): that HELO reply, else
    // empty. A 5xx greeting is not one: as Postfix (smtp_skip_5xx_greeting),
    // the next host is tried and the mail waits.
    const std::string& helo_refusal() const { return _helo_refusal; }
    // "TLSv1.3 TLS_AES_256_GCM_SHA384" when the session is encrypted, else "".
    std::string tls_description() const;
    const client_options& options() const { return _options; }

private:
    struct reply {
        int code = 0;  // 0: connection trouble or a malformed reply
        std::string text;
        std::string raw;  // the reply as received, only when asked for (EHLO)
    };
    // Texts of a reply{0, ...} (no reply): see set_error().
    static constexpr std::string_view timed_out = "timed out";
    static constexpr std::string_view malformed = "malformed reply";
    static constexpr std::string_view lost = "connection closed";
    static constexpr std::string_view greeting_stage = "the initial greeting";

    engine::task<reply> read_reply(bool keep_raw = false);
    engine::task<bool> transaction(const outbound_message& message, std::vector<delivery_outcome>& outcomes);
    engine::task<bool> reset();       // RSET; true when the connection can go on
    engine::task<bool> ehlo();        // EHLO (HELO fallback); sets _caps
    engine::task<bool> starttls();    // STARTTLS, 220, handshake, EHLO again
    void check_loop(std::string_view reply_text);  // sets _loops_back
    void tls_error(std::string what);  // sets _last_error and _tls_failed
    engine::task<bool> send_all(std::string_view data);
    engine::task<bool> send_body(store::body_view body);  // dot-stuffed, from the map
    engine::task<bool> send_iovecs();                     // all of _iov, short writes resumed
    void set_error(std::string_view stage, const reply& r);
    void set_protocol_error(std::string_view stage, const reply& r);

    const config& _cfg;
    net::socket_address _dest;
    client_options _options;
    std::unique_ptr<engine::tls::session> _tls;  // set once the handshake succeeded
    bool _tls_failed = false;
    bool _loops_back = false;
    std::string _helo_refusal;
    bool _closing = false;  // a 421, a lost connection or a reply out of step: not reusable
    std::string _peer_name;
    int _fd = -1;
    ehlo_capabilities _caps{};
    std::string _ehlo_reply;  // owns the text _caps points into
    std::string _in;          // received bytes not parsed yet
    std::string _out;         // commands of the current pipelined group
    std::vector<iovec> _iov;  // body segments
    std::string _converted;   // the body made 7-bit for this transaction (mime_downgrade.h)
    std::string _last_error;
    char _buf[4096];
};

}  // namespace ringmail::smtp
