// send: `ringmail-blast send`, an SMTP load generator.
//
// Contract
//   - Opens --connections connections to the --to addresses (loopback only,
//     round robin), split over --threads engine shards, and reuses each for
//     many messages (no RSET after a 250; RSET after a refused transaction).
//   - Closed loop by default: each connection sends its next message as soon
//     as the previous one got its final reply. --rate N makes it open loop:
//     message i is due at start + i/N, whichever connection is free takes it
//     (a late message is sent at once; latency is still measured from its
//     end of data, so queueing before the send is not in the numbers).
//   - Each message: Message-ID <seed-n@blast>, n its number (unique per run and seed),
//     X-Blast-Checksum over the body (see common.h), printable CRLF lines of
//     at most 78 characters, some starting with "." so dot-stuffing is
//     exercised; sent dot-stuffed after DATA, or raw with BDAT.
//   - --window N (N > 1, server offers PIPELINING, no --rate): transactions
//     are pipelined across messages and replies matched in order; with BDAT a
//     write carries up to N whole transactions, with DATA the next message's
//     MAIL/RCPT/DATA follow the end-of-data dot. A refused transaction is
//     followed by RSET; a connection failure loses every message in flight.
//   - Latency: from the moment the end of data was written to the socket to
//     the final reply, in a fixed log-linear histogram (no allocation per
//     message).
//   - An outcome per message: accepted (2xx final reply), refused (any
//     non-2xx reply that ends it: MAIL, every RCPT, DATA or the final reply),
//     or lost (the connection failed before a final reply; it reconnects).
//     A message is refused for a recipient only when every recipient is
//     refused; a partial refusal counts the message as accepted and the
//     refused recipients in rcpt_refusals.
//   - --starttls: after EHLO, STARTTLS (RFC 3207), a TLS handshake over the
//     ring (engine/tls.h; any certificate accepted, SNI = the target host
//     unless it is an address literal) and EHLO again; every later byte
//     (pipelined windows, BDAT bodies, DATA) goes through the session. A
//     server that does not offer STARTTLS stops the run (exit 1): a load tool
//     must not silently measure plain text. A failed STARTTLS or handshake is
//     a connect error (the connection retries). The plaintext path only pays
//     a null-pointer test per send and receive.
//   - --auth user:password: after EHLO (after STARTTLS when used), AUTH PLAIN
//     with the initial response (RFC 4616, RFC 4954) when offered, else AUTH
//     LOGIN. Anything but 235 counts an auth failure and ends that connection
//     (no reconnect). A server without AUTH (or without PLAIN and LOGIN)
//     stops the run. Without --starttls a warning says the password goes in
//     the clear (as swaks does), but AUTH is still done.
//   - Summary and JSON: tls_connections (handshakes done), auth_connections,
//     auth_failures; "error" when the run was stopped by a fatal condition.
//   - Exit code: 0 when every message was accepted and no AUTH failed (or
//     --allow-failures), 1 otherwise, 2 for usage errors. Always 1 when the
//     run was stopped by a fatal condition or --auth was given and no
//     connection authenticated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ringmail::blast {

struct size_class {
    uint64_t bytes;
    double weight;
};

struct send_options {
    std::vector<std::string> to{"127.0.0.1:2525"};
    unsigned connections = 10;
    uint64_t messages = 0;     // 0: use duration
    double duration_s = 0;     // 0: use messages
    std::string size = "4096"; // BYTES or a distribution "1k:70,16k:25,1m:5"
    unsigned rcpts = 1;
    unsigned domains = 1;
    std::string domain_list;
    std::string from = "blast@example.test";
    std::string pipelining = "on";  // on|off
    bool bdat = false;
    // Transactions in flight per connection (needs PIPELINING; closed loop
    // only). 1: one at a time. With BDAT, up to N whole transactions go out in
    // one write; with DATA, N >= 2 sends the next message's commands right
    // after the end-of-data dot (the content still waits for 354).
    unsigned window = 1;
    double rate = 0;  // msgs/s; 0: closed loop
    uint64_t seed = 0;
    bool seed_given = false;  // else the seed is chosen from the clock (reported in the summary)
    unsigned threads = 1;
    bool json = false;
    bool quiet = false;
    bool allow_failures = false;
    std::string helo = "blast.example.test";
    unsigned timeout_s = 60;
    // STARTTLS after EHLO (required: the run fails if it is not offered).
    bool starttls = false;
    // "user:password" (split at the first ':'): AUTH PLAIN or LOGIN.
    std::string auth;
};

// Parses "4096", "4k", "1m" or "1k:70,16k:25,1m:5"; throws std::runtime_error.
std::vector<size_class> parse_sizes(const std::string& text);

int run_send(const send_options& opts);

}  // namespace ringmail::blast
