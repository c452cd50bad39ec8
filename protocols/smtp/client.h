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
// - deliver() reports one outcome per recipient (the reply that decided it)
//   and whether the connection can carry another message.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/config.h"
#include "engine/net_address.h"
#include "engine/task.h"
#include "protocols/smtp/reply_parser.h"
#include "store/envelope.h"

namespace ringmail::smtp {

struct delivery_outcome {
    int code = 0;       // SMTP reply code; 0 = no reply (connection trouble)
    std::string reply;  // one line: "550 5.1.1 <x@y>: user unknown (in reply to RCPT TO)"
};

struct outbound_message {
    const store::envelope* envelope = nullptr;
    std::span<const size_t> recipients;  // indexes into envelope->recipients to deliver now
    std::string_view body;               // stored message, unstuffed, CRLF lines
};

class client {
public:
    client(const config& cfg, net::socket_address destination);
    ~client();
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    // Connect, read the greeting, EHLO (HELO fallback). False with last_error() set on failure.
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

private:
    struct reply {
        int code = 0;  // 0: connection trouble or a malformed reply
        std::string text;
        std::string raw;  // the reply as received, only when asked for (EHLO)
    };
    engine::task<reply> read_reply(bool keep_raw = false);
    engine::task<bool> send_all(std::string_view data);
    engine::task<bool> send_body(std::string_view body);  // dot-stuffed, from the map
    engine::task<bool> send_iovecs();                     // all of _iov, short writes resumed
    void set_error(std::string_view stage, const reply& r);

    const config& _cfg;
    net::socket_address _dest;
    std::string _peer_name;
    int _fd = -1;
    ehlo_capabilities _caps{};
    std::string _ehlo_reply;  // owns the text _caps points into
    std::string _in;          // received bytes not parsed yet
    std::string _out;         // commands of the current pipelined group
    std::vector<iovec> _iov;  // body segments
    std::string _last_error;
    char _buf[4096];
};

}  // namespace ringmail::smtp
