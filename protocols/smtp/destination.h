// destination: where a shard's delivery connections go, and the work waiting
// for them.
//
// A destination is the smarthost, or the set of MX hosts a recipient domain
// resolves to (domains that share MX hosts share one destination, so they
// share its limits), further split by the [[shaping]] rule that applies.
// It owns: its ready jobs, its connection count and idle connections, its
// rate limits and its pause state (after every host failed to connect or
// greeted with 4xx, new work is deferred instead of hammering it).
// Shard thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/io.h"
#include "engine/net_address.h"
#include "engine/token_bucket.h"

namespace ringmail::smtp {

// One transaction's worth of one message: some of its recipients, all for
// this destination.
struct delivery_job {
    uint64_t id = 0;
    std::vector<size_t> recipients;  // indexes into the message's envelope
};

struct destination_host {
    std::string name;                          // "mx1.example.com", or the smarthost address
    uint16_t preference = 0;                   // MX preference (equal ones are shuffled per connection)
    std::vector<net::socket_address> addresses;  // with the port to connect to
};

struct destination {
    std::string key;
    std::vector<destination_host> hosts;       // in the order to try
    int rule = -1;                             // [[shaping]] index, -1 = [delivery]
    int egress = -1;                           // [[egress]] index, -1 = none
    destination_limits limits;
    std::deque<delivery_job> ready;
    unsigned connections = 0;
    std::vector<engine::sleep_op*> idle;       // connections waiting for work
    engine::token_bucket message_rate;
    engine::token_bucket connection_rate;
    int64_t paused_until_us = 0;               // steady clock
    unsigned failures = 0;                     // consecutive failed connection rounds
    // A connection got through since the destination was made or last failed:
    // until then one connection probes it, so a dead host gets one attempt,
    // not one per message that arrived meanwhile.
    bool proven = false;
    // Concurrency learned from refused extra connections (0 = no limit but
    // limits.max_connections): a connection that fails while others to the
    // destination deliver lowers it to those; every `window` deliveries
    // raise it by one (Postfix's concurrency feedback), so it probes upwards.
    unsigned window = 0;
    unsigned window_credit = 0;
    std::string pause_reason;
    // Set by the last connect() when a most-preferred host greeted with our
    // own name: the jobs bounce (5.4.6) instead of waiting, as in Postfix.
    std::string loop_reason;
    // Set by the last connect() when a host refused EHLO and answered HELO
    // with a 5xx: the jobs bounce with that reply, as in Postfix (smtp_helo:
    // "host X refused to talk to me").
    std::string refusal_reason;  // for the log and the queue listing
    std::string refusal_reply;   // the server's reply, for the DSN
    std::string refusal_peer;    // which server ("mx.example[192.0.2.1]:25")
    int refusal_code = 0;

    bool paused(int64_t now_us) const { return paused_until_us > now_us; }
    void set_limits(const destination_limits& l) {
        limits = l;
        message_rate.configure(l.message_rate);
        connection_rate.configure(l.connection_rate);
    }
};

}  // namespace ringmail::smtp
