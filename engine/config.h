// config: the daemon's configuration, read from TOML at start-up and on SIGHUP.
//
// Contract:
//  - Loading is all-or-nothing: any problem (syntax, wrong type, value out of
//    range, bad address or CIDR, unknown key or table anywhere, missing
//    required key, no [[listener]]) throws config_error whose message is
//      FILE:LINE:COL: key 'section.key': what is wrong
//    (listener entries are named 'listener[N].key', N from 0; for a missing
//    key the position is the section header, or 1:1). Exceptions are used
//    only here, never on hot paths.
//  - Every key is optional with the documented default, except that at least
//    one [[listener]] with both `protocol` and `address` is required.
//    docs/configuration.md lists every key, its default and whether SIGHUP
//    reloads it; restart_required_changes() is the code form of that list.
//  - No DNS: addresses are numeric (see net_address.h).
//  - Paths are kept as written; relative ones are relative to the working
//    directory at start-up (the daemon does not chdir before using them).
//  - A config is a plain value: copy it, compare it, hand shards a const&.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/log.h"
#include "engine/net_address.h"

namespace ringmail {

struct config_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

enum class listener_protocol { smtp };

std::string_view to_string(listener_protocol p);

struct listener_config {
    listener_protocol protocol = listener_protocol::smtp;
    net::socket_address address;
    bool operator==(const listener_config&) const = default;
};

struct server_config {
    std::string hostname;                        // default: gethostname()
    std::string data_dir = "var";
    unsigned shards = 0;                         // as written; 0 = one per core (see shard_count())
    std::chrono::milliseconds shutdown_timeout{10'000};
    std::string pid_file;                        // resolved: default <data_dir>/ringmaild.pid
    bool operator==(const server_config&) const = default;
};

// Outbound STARTTLS (RFC 3207) policy.
//  none          - never STARTTLS.
//  opportunistic - STARTTLS when the server offers it (RFC 7435); without
//                  verification unless relay.tls_verify; a refused STARTTLS
//                  or failed handshake is retried in plain text.
//  required      - no delivery without TLS: not offered or failed = defer.
enum class tls_policy { none, opportunistic, required };

std::string_view to_string(tls_policy p);

struct relay_config {
    std::optional<net::socket_address> smarthost;  // nullopt = MX delivery
    std::vector<net::cidr> allow_networks;         // default 127.0.0.0/8, ::1/128
    unsigned pool_size = 16;
    std::chrono::milliseconds connect_timeout{30'000};
    std::chrono::milliseconds command_timeout{300'000};
    std::chrono::milliseconds idle_timeout{5'000};
    tls_policy tls = tls_policy::opportunistic;
    bool tls_verify = false;                     // check the chain and the server name
    std::string tls_ca_file;                     // PEM CAs; empty = the system CA store
    std::string postmaster;                      // where "<Postmaster>" goes; default postmaster@hostname
    bool operator==(const relay_config&) const = default;
};

// A rate such as "100/s" or "5000/h"; count 0 = unlimited.
struct rate_limit {
    uint32_t count = 0;
    std::chrono::milliseconds per{1000};
    bool unlimited() const { return count == 0; }
    bool operator==(const rate_limit&) const = default;
};

// Limits per destination (a set of MX hosts, or the smarthost).
struct destination_limits {
    unsigned max_connections = 20;               // concurrent connections
    unsigned max_messages_per_connection = 1000; // then the connection is closed and reopened
    unsigned max_recipients = 50;                // recipients per transaction
    rate_limit message_rate;                     // messages started, unlimited by default
    rate_limit connection_rate;                  // connections opened, unlimited by default
    bool operator==(const destination_limits&) const = default;
};

struct delivery_config {
    uint16_t smtp_port = 25;                     // port of every MX host
    unsigned max_mx_addresses = 5;               // addresses tried per connection attempt, 0 = all
    destination_limits limits;                   // defaults for every destination
    // A destination whose hosts all fail to connect (or greet with 421) is
    // paused: first for backoff_min, doubling up to backoff_max.
    std::chrono::milliseconds backoff_min{60'000};
    std::chrono::milliseconds backoff_max{3'600'000};
    bool operator==(const delivery_config&) const = default;
};

// [[shaping]]: limits for destinations matching a recipient domain or an MX host pattern.
struct shaping_rule {
    std::string domain;   // exact recipient domain (lower case), or empty
    std::string mx;       // MX host name, exact or "*.suffix" (lower case), or empty
    destination_limits limits;  // [delivery] values for keys the rule does not set
    std::optional<tls_policy> tls;  // overrides relay.tls for these destinations
    bool operator==(const shaping_rule&) const = default;
};

// [[egress]]: a local source address for outbound connections, with its EHLO name.
struct egress_config {
    net::socket_address source;        // port 0
    std::string ehlo;                  // empty = server.hostname
    std::vector<std::string> senders;  // sender domains (lower case) using it; empty = the default pool
    bool operator==(const egress_config&) const = default;
};

struct dns_config {
    std::vector<net::socket_address> servers;    // empty = /etc/resolv.conf
    std::chrono::milliseconds timeout{2000};     // per try
    unsigned tries = 2;
    unsigned max_queries_in_flight = 100;         // per shard; more wait their turn
    std::chrono::milliseconds min_ttl{60'000};
    std::chrono::milliseconds max_ttl{86'400'000};
    std::chrono::milliseconds negative_ttl{300'000};
    std::chrono::milliseconds temporary_ttl{30'000};
    bool operator==(const dns_config&) const = default;
};

struct smtp_config {
    uint64_t max_command_bytes = 512;
    uint64_t max_line_bytes = 1000;
    uint64_t message_size_limit = 52'428'800;    // 0 = unlimited
    uint64_t receive_memory = 1ull << 30;        // per shard: bodies being received, held in memory
    unsigned max_recipients = 1000;
    unsigned max_errors = 10;
    unsigned junk_command_limit = 100;         // NOOP/RSET/VRFY/HELP beyond this count as errors
    unsigned recipient_overshoot_limit = 1000; // RCPTs beyond max_recipients + this count as errors
    unsigned max_hops = 50;                      // Received: fields that make a message a loop
    unsigned max_connections = 10'000;
    unsigned max_connections_per_ip = 100;       // 0 = unlimited
    std::chrono::milliseconds command_timeout{300'000};
    std::chrono::milliseconds data_timeout{600'000};
    uint64_t min_data_rate = 500;                // bytes/s a slow DATA/BDAT must keep up; 0 = no rule
    bool operator==(const smtp_config&) const = default;
};

struct queue_config {
    std::chrono::milliseconds min_backoff{300'000};
    std::chrono::milliseconds max_backoff{4'000'000};
    std::chrono::milliseconds max_age{5LL * 24 * 3600 * 1000};
    double jitter = 0.2;                         // 0.0 .. 1.0
    bool operator==(const queue_config&) const = default;
};

struct store_config {
    uint64_t map_size = 64ULL << 30;             // bytes, per shard
    std::chrono::milliseconds commit_window{0};
    unsigned commit_max_batch = 1024;
    bool operator==(const store_config&) const = default;
};

struct log_config {
    log::level level = log::level::info;
    bool operator==(const log_config&) const = default;
};

struct config {
    server_config server;
    std::vector<listener_config> listeners;
    relay_config relay;
    delivery_config delivery;
    std::vector<shaping_rule> shaping;
    std::vector<egress_config> egress;
    dns_config dns;
    smtp_config smtp;
    queue_config queue;
    store_config store;
    log_config log;
    bool operator==(const config&) const = default;
};

// The embedded default configuration (what `ringmaild` runs with when given
// no file); documents every key with its default.
extern const char* const default_config_toml;

// Throws config_error (also when the file cannot be read).
config load_config_file(const std::string& path);
// source_name is used as FILE in error messages.
config load_config_string(std::string_view toml, std::string_view source_name);

// Keys ("server.data_dir", "listener", ...) whose values differ between
// old and neu and that take effect only after a restart; empty = the new
// config can be applied by SIGHUP.
std::vector<std::string> restart_required_changes(const config& old, const config& neu);
// What SIGHUP applies: `fresh` with every restart-only key set back to its
// running value, so the next reload compares against what really runs.
void keep_restart_values(const config& running, config& fresh);
// Keys that differ and are applied by SIGHUP (for the reload log line).
std::vector<std::string> reloadable_changes(const config& old, const config& neu);

// server.shards resolved: the value if non-zero, else the number of CPUs
// this process may run on (sched_getaffinity), capped at 256.
unsigned shard_count(const server_config& server);

// Value syntaxes, exposed for tests and tools. Durations: non-negative
// integer with a unit ms, s, m, h, d ("300s", "1ms"). Sizes: non-negative
// integer with a unit B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB,
// TiB (powers of 1024). nullopt on syntax error or overflow. (In TOML a bare
// integer is also accepted: seconds for durations, bytes for sizes.)
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);
std::optional<uint64_t> parse_size(std::string_view text);
// Rates: "<count>/<unit>" with unit s, m, h or d ("100/s", "5000/h"); "" and
// "0/s" mean unlimited.
std::optional<rate_limit> parse_rate(std::string_view text);

}  // namespace ringmail
