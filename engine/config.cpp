// config: see config.h for the contract.
#include "engine/config.h"

#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

namespace ringmail {

using std::chrono::milliseconds;

const char* const default_config_toml = R"toml(# ringmaild default configuration. Every key is shown with its default;
# see docs/configuration.md for what each does and which SIGHUP reloads.

[server]
# hostname = "mx.example.org"  # greeting and Received: (default: gethostname())
data_dir = "var"               # relative to the working directory at start-up
shards = 0                     # 0 = one per CPU; else 1..256
shutdown_timeout = "10s"
# pid_file = "var/ringmaild.pid"  # default: <data_dir>/ringmaild.pid

[[listener]]
protocol = "smtp"
address = "127.0.0.1:2525"

[relay]
smarthost = ""                 # "host:port", numeric; empty = MX delivery
allow_networks = ["127.0.0.0/8", "::1/128"]
pool_size = 16
connect_timeout = "30s"
command_timeout = "300s"
idle_timeout = "5s"
tls = "opportunistic"          # outbound STARTTLS: "opportunistic", "required" or "none"
tls_verify = false             # true = check the certificate chain and the server name
tls_ca_file = ""               # PEM file of trusted CAs; empty = the system CA store
postmaster = ""                # where RCPT TO:<Postmaster> goes; empty = postmaster@<server.hostname>

[delivery]                     # MX delivery (relay.smarthost empty)
smtp_port = 25                 # port of every MX host
max_mx_addresses = 5           # MX addresses tried per connection attempt (0 = all)
max_connections = 20           # per destination (set of MX hosts)
max_messages_per_connection = 1000
max_recipients = 50            # per transaction
message_rate = ""              # e.g. "100/s", "5000/h"; empty = unlimited
connection_rate = ""           # connections opened per destination; empty = unlimited
backoff_min = "60s"            # a destination that cannot be reached is paused,
backoff_max = "1h"             # doubling from backoff_min up to backoff_max

# [[shaping]]                  # per-destination overrides of the [delivery] limits
# domain = "gmail.com"         # a recipient domain, or:
# mx = "*.google.com"          # an MX host name or *.suffix
# max_connections = 5
# message_rate = "100/s"

# [[egress]]                   # source addresses for outbound connections
# source = "192.0.2.10"        # bind here (IPv4 or IPv6)
# ehlo = "out1.example.org"    # EHLO name from this source (default: server.hostname)
# senders = ["bulk.example"]   # sender domains using it; entries without = everyone else

[dns]
servers = []                   # ["127.0.0.1:5353"]; empty = /etc/resolv.conf
timeout = "2s"                 # per try
tries = 2
max_queries_in_flight = 100    # per shard; further lookups wait (a burst would overrun the resolver)
min_ttl = "60s"
max_ttl = "1d"
negative_ttl = "5m"            # NXDOMAIN and no-data answers
temporary_ttl = "30s"          # SERVFAIL and timeouts

[smtp]
max_command_bytes = 512
max_line_bytes = 1000
message_size_limit = "50MiB"
receive_memory = "1GiB"        # per shard: messages being received are held in memory; past it, 452 4.3.1
max_recipients = 1000
max_errors = 10
junk_command_limit = 100       # NOOP, RSET, VRFY, HELP beyond this many count as errors
recipient_overshoot_limit = 1000  # RCPTs past max_recipients beyond this many count as errors
max_hops = 50                  # a message with this many Received: fields is refused (a mail loop)
max_connections = 10000
max_connections_per_ip = 100
command_timeout = "300s"
data_timeout = "600s"
min_data_rate = 500            # bytes/s: slower message content is cut off after about data_timeout

[queue]
min_backoff = "300s"
max_backoff = "4000s"
max_age = "5d"
jitter = 0.2

[store]
map_size = "64GiB"
commit_window = "0ms"
commit_max_batch = 1024

[log]
level = "info"
)toml";

std::string_view to_string(listener_protocol p)
{
    switch (p) {
    case listener_protocol::smtp: return "smtp";
    }
    return "unknown";
}

std::string_view to_string(tls_policy p)
{
    switch (p) {
    case tls_policy::none: return "none";
    case tls_policy::opportunistic: return "opportunistic";
    case tls_policy::required: return "required";
    }
    return "unknown";
}

// ---------------------------------------------------------------------------
// Value syntaxes

namespace {

// Splits "123unit" into number and unit; false on no digits or overflow.
bool split_number(std::string_view text, uint64_t& number, std::string_view& unit)
{
    std::size_t i = 0;
    uint64_t value = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
        uint64_t digit = static_cast<uint64_t>(text[i] - '0');
        if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) return false;
        value = value * 10 + digit;
        ++i;
    }
    if (i == 0) return false;
    number = value;
    unit = text.substr(i);
    return true;
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t& out)
{
    if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
    out = a * b;
    return true;
}

}  // namespace

std::optional<milliseconds> parse_duration(std::string_view text)
{
    uint64_t number = 0;
    std::string_view unit;
    if (!split_number(text, number, unit)) return std::nullopt;
    uint64_t factor = 0;
    if (unit == "ms") factor = 1;
    else if (unit == "s") factor = 1000;
    else if (unit == "m") factor = 60'000;
    else if (unit == "h") factor = 3'600'000;
    else if (unit == "d") factor = 86'400'000;
    else return std::nullopt;
    uint64_t ms = 0;
    if (!checked_mul(number, factor, ms) || ms > static_cast<uint64_t>(std::numeric_limits<milliseconds::rep>::max()))
        return std::nullopt;
    return milliseconds(static_cast<milliseconds::rep>(ms));
}

std::optional<uint64_t> parse_size(std::string_view text)
{
    uint64_t number = 0;
    std::string_view unit;
    if (!split_number(text, number, unit)) return std::nullopt;
    static constexpr struct {
        std::string_view name;
        uint64_t factor;
    } units[] = {
        {"B", 1},
        {"KB", 1000ULL},
        {"MB", 1000ULL * 1000},
        {"GB", 1000ULL * 1000 * 1000},
        {"TB", 1000ULL * 1000 * 1000 * 1000},
        {"KiB", 1ULL << 10},
        {"MiB", 1ULL << 20},
        {"GiB", 1ULL << 30},
        {"TiB", 1ULL << 40},
    };
    for (const auto& u : units) {
        if (unit == u.name) {
            uint64_t bytes = 0;
            if (!checked_mul(number, u.factor, bytes)) return std::nullopt;
            return bytes;
        }
    }
    return std::nullopt;
}

std::optional<rate_limit> parse_rate(std::string_view text)
{
    if (text.empty()) return rate_limit{};
    auto slash = text.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    uint64_t count = 0;
    std::string_view rest;
    if (!split_number(text.substr(0, slash), count, rest) || !rest.empty()) return std::nullopt;
    if (count > std::numeric_limits<uint32_t>::max()) return std::nullopt;
    std::string_view unit = text.substr(slash + 1);
    rate_limit r;
    r.count = static_cast<uint32_t>(count);
    if (unit == "s") r.per = milliseconds(1000);
    else if (unit == "m") r.per = milliseconds(60'000);
    else if (unit == "h") r.per = milliseconds(3'600'000);
    else if (unit == "d") r.per = milliseconds(86'400'000);
    else return std::nullopt;
    return r;
}

// ---------------------------------------------------------------------------
// Loader

namespace {

std::string format_duration(milliseconds d)
{
    auto ms = d.count();
    if (ms != 0 && ms % 86'400'000 == 0) return fmt::format("{}d", ms / 86'400'000);
    if (ms != 0 && ms % 3'600'000 == 0) return fmt::format("{}h", ms / 3'600'000);
    if (ms != 0 && ms % 60'000 == 0) return fmt::format("{}m", ms / 60'000);
    if (ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
    return fmt::format("{}ms", ms);
}

std::string format_size(uint64_t bytes)
{
    if (bytes != 0 && bytes % (1ULL << 30) == 0) return fmt::format("{}GiB", bytes >> 30);
    if (bytes != 0 && bytes % (1ULL << 20) == 0) return fmt::format("{}MiB", bytes >> 20);
    if (bytes != 0 && bytes % (1ULL << 10) == 0) return fmt::format("{}KiB", bytes >> 10);
    return fmt::format("{}", bytes);
}

constexpr std::string_view duration_syntax =
    "expected a duration: integer seconds or a string with unit ms, s, m, h or d (\"300s\", \"1ms\")";
constexpr std::string_view size_syntax =
    "expected a size: integer bytes or a string with unit B, KB, MB, GB, TB, KiB, MiB, GiB or TiB (\"50MiB\")";

std::string_view type_name(const toml::node& n)
{
    switch (n.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
    }
}

class loader {
public:
    explicit loader(std::string_view source) : _source(source) {}

    [[noreturn]] void fail(const toml::source_region& where, std::string_view key, std::string_view what) const
    {
        auto line = where.begin.line ? where.begin.line : 1;
        auto column = where.begin.column ? where.begin.column : 1;
        throw config_error(fmt::format("{}:{}:{}: key '{}': {}", _source, line, column, key, what));
    }

private:
    std::string _source;
};

// One TOML table being read: tracks which keys were consumed so that any
// left over are reported as unknown (typos must not be silently ignored).
class section {
public:
    section(const loader& ld, const toml::table* table, std::string name, const toml::source_region& where)
        : _loader(ld), _table(table), _name(std::move(name)), _where(where) {}

    std::string path(std::string_view key) const { return _name.empty() ? std::string(key) : _name + "." + std::string(key); }

    const toml::node* get(std::string_view key)
    {
        _known.emplace_back(key);
        return _table ? _table->get(key) : nullptr;
    }

    [[noreturn]] void fail(const toml::node& n, std::string_view key, std::string_view what) const
    {
        _loader.fail(n.source(), path(key), what);
    }

    [[noreturn]] void fail_missing(std::string_view key, std::string_view what) const
    {
        _loader.fail(_where, path(key), what);
    }

    const toml::table* table() const { return _table; }

    void reject_unknown() const
    {
        if (!_table) return;
        for (auto&& [k, v] : *_table) {
            if (std::find(_known.begin(), _known.end(), k.str()) == _known.end())
                _loader.fail(k.source(), path(k.str()), "unknown key");
        }
    }

    std::optional<std::string> string(std::string_view key)
    {
        const toml::node* n = get(key);
        if (!n) return std::nullopt;
        const auto* s = n->as_string();
        if (!s) fail(*n, key, fmt::format("expected a string, got {}", type_name(*n)));
        if (s->get().find('\0') != std::string::npos) fail(*n, key, "must not contain NUL");
        return s->get();
    }

    std::string string_or(std::string_view key, std::string_view fallback)
    {
        auto s = string(key);
        return s ? *s : std::string(fallback);
    }

    template <class Int>
    Int integer(std::string_view key, Int fallback, int64_t min, int64_t max)
    {
        const toml::node* n = get(key);
        if (!n) return fallback;
        const auto* i = n->as_integer();
        if (!i) fail(*n, key, fmt::format("expected an integer, got {}", type_name(*n)));
        int64_t v = i->get();
        if (v < min || v > max) fail(*n, key, fmt::format("must be between {} and {}, got {}", min, max, v));
        return static_cast<Int>(v);
    }

    milliseconds duration(std::string_view key, milliseconds fallback, milliseconds min, milliseconds max)
    {
        const toml::node* n = get(key);
        if (!n) return fallback;
        milliseconds d{};
        if (const auto* i = n->as_integer()) {
            int64_t v = i->get();
            // Bare integers are seconds; bound them before multiplying.
            if (v < 0) fail(*n, key, "must not be negative");
            if (v > max.count() / 1000 + 1) fail(*n, key, fmt::format("must be at most {}", format_duration(max)));
            d = milliseconds(v * 1000);
        } else if (const auto* s = n->as_string()) {
            auto parsed = parse_duration(s->get());
            if (!parsed) fail(*n, key, fmt::format("{}, got \"{}\"", duration_syntax, log::escaped(s->get(), 40)));
            d = *parsed;
        } else {
            fail(*n, key, fmt::format("{}, got {}", duration_syntax, type_name(*n)));
        }
        if (d < min) fail(*n, key, fmt::format("must be at least {}", format_duration(min)));
        if (d > max) fail(*n, key, fmt::format("must be at most {}", format_duration(max)));
        return d;
    }

    uint64_t size(std::string_view key, uint64_t fallback, uint64_t min, uint64_t max)
    {
        const toml::node* n = get(key);
        if (!n) return fallback;
        uint64_t bytes = 0;
        if (const auto* i = n->as_integer()) {
            if (i->get() < 0) fail(*n, key, "must not be negative");
            bytes = static_cast<uint64_t>(i->get());
        } else if (const auto* s = n->as_string()) {
            auto parsed = parse_size(s->get());
            if (!parsed) fail(*n, key, fmt::format("{}, got \"{}\"", size_syntax, log::escaped(s->get(), 40)));
            bytes = *parsed;
        } else {
            fail(*n, key, fmt::format("{}, got {}", size_syntax, type_name(*n)));
        }
        if (bytes < min) fail(*n, key, fmt::format("must be at least {} bytes ({})", min, format_size(min)));
        if (bytes > max) fail(*n, key, fmt::format("must be at most {} bytes ({})", max, format_size(max)));
        return bytes;
    }

    rate_limit rate(std::string_view key, rate_limit fallback)
    {
        const toml::node* n = get(key);
        if (!n) return fallback;
        const auto* str = n->as_string();
        if (!str) fail(*n, key, fmt::format("expected a rate string such as \"100/s\" or \"5000/h\", got {}", type_name(*n)));
        auto parsed = parse_rate(str->get());
        if (!parsed)
            fail(*n, key, fmt::format("expected a rate such as \"100/s\" or \"5000/h\" (unit s, m, h or d), got \"{}\"",
                                      log::escaped(str->get(), 40)));
        return *parsed;
    }

    // An array of strings, each checked by `check` (which returns an error text or "").
    template <class F>
    std::vector<std::string> strings(std::string_view key, F&& check)
    {
        std::vector<std::string> out;
        const toml::node* n = get(key);
        if (!n) return out;
        const auto* arr = n->as_array();
        if (!arr) fail(*n, key, fmt::format("expected an array of strings, got {}", type_name(*n)));
        for (std::size_t i = 0; i < arr->size(); ++i) {
            const toml::node& item = *arr->get(i);
            std::string k = fmt::format("{}[{}]", key, i);
            const auto* str = item.as_string();
            if (!str) fail(item, k, fmt::format("expected a string, got {}", type_name(item)));
            std::string problem = check(str->get());
            if (!problem.empty()) fail(item, k, problem);
            out.push_back(str->get());
        }
        return out;
    }

    bool boolean(std::string_view key, bool fallback)
    {
        const toml::node* n = get(key);
        if (!n) return fallback;
        const auto* b = n->as_boolean();
        if (!b) fail(*n, key, fmt::format("expected a boolean (true or false), got {}", type_name(*n)));
        return b->get();
    }

    std::optional<tls_policy> tls_policy_value(std::string_view key)
    {
        auto text = string(key);
        if (!text) return std::nullopt;
        if (*text == "opportunistic") return tls_policy::opportunistic;
        if (*text == "required") return tls_policy::required;
        if (*text == "none") return tls_policy::none;
        fail(*_table->get(key), key,
             fmt::format("\"{}\" is not one of \"opportunistic\", \"required\", \"none\"", log::escaped(*text, 40)));
    }

    double fraction(std::string_view key, double fallback)
    {
        const toml::node* n = get(key);
        if (!n) return fallback;
        double v = 0;
        if (const auto* f = n->as_floating_point()) v = f->get();
        else if (const auto* i = n->as_integer()) v = static_cast<double>(i->get());
        else fail(*n, key, fmt::format("expected a number, got {}", type_name(*n)));
        if (!(v >= 0.0 && v <= 1.0)) fail(*n, key, fmt::format("must be between 0.0 and 1.0, got {}", v));
        return v;
    }

private:
    const loader& _loader;
    const toml::table* _table;
    std::string _name;
    toml::source_region _where;
    std::vector<std::string> _known;
};

// A sub-table of the root; nullptr table if absent (all defaults apply).
section open_section(const loader& ld, const toml::table& root, std::string_view name)
{
    const toml::node* n = root.get(name);
    if (!n) return section(ld, nullptr, std::string(name), root.source());
    const auto* t = n->as_table();
    if (!t) ld.fail(n->source(), name, fmt::format("expected a table [{}], got {}", name, type_name(*n)));
    return section(ld, t, std::string(name), t->source());
}

bool valid_hostname(std::string_view name)
{
    // RFC 1035 §2.3.4 / RFC 1123 §2.1: letters, digits, '-', dot-separated
    // labels of 1..63 bytes, 253 in all. It is sent in the greeting and in
    // Received:, so nothing else (notably no CR/LF) may get through.
    if (name.empty() || name.size() > 253) return false;
    std::size_t label = 0;
    for (std::size_t i = 0; i < name.size(); ++i) {
        char c = name[i];
        if (c == '.') {
            if (label == 0 || name[i - 1] == '-') return false;
            label = 0;
            continue;
        }
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' && label > 0)) return false;
        if (++label > 63) return false;
    }
    return label > 0 && name.back() != '-';
}

std::string system_hostname()
{
    char buf[HOST_NAME_MAX + 1] = {};
    if (::gethostname(buf, sizeof(buf) - 1) != 0 || !valid_hostname(buf)) return "localhost";
    return buf;
}

void load_server(const loader& ld, const toml::table& root, config& c)
{
    section s = open_section(ld, root, "server");
    if (auto h = s.string("hostname")) {
        if (!valid_hostname(*h))
            s.fail(*s.table()->get("hostname"), "hostname",
                   fmt::format("\"{}\" is not a valid host name (letters, digits, '-', dot-separated labels)",
                               log::escaped(*h, 80)));
        c.server.hostname = *h;
    } else {
        c.server.hostname = system_hostname();
    }
    c.server.data_dir = s.string_or("data_dir", "var");
    if (c.server.data_dir.empty()) s.fail(*s.table()->get("data_dir"), "data_dir", "must not be empty");
    c.server.shards = s.integer<unsigned>("shards", 0, 0, 256);
    c.server.shutdown_timeout = s.duration("shutdown_timeout", milliseconds(10'000), milliseconds(0), milliseconds(3'600'000));
    c.server.pid_file = s.string_or("pid_file", "");
    if (c.server.pid_file.empty())
        c.server.pid_file = (std::filesystem::path(c.server.data_dir) / "ringmaild.pid").string();
    s.reject_unknown();
}

void load_listeners(const loader& ld, const toml::table& root, config& c)
{
    const toml::node* n = root.get("listener");
    if (!n) ld.fail(root.source(), "listener", "at least one [[listener]] is required");
    const auto* arr = n->as_array();
    if (!arr) ld.fail(n->source(), "listener", fmt::format("expected an array of tables [[listener]], got {}", type_name(*n)));
    if (arr->empty()) ld.fail(n->source(), "listener", "at least one [[listener]] is required");

    for (std::size_t i = 0; i < arr->size(); ++i) {
        const toml::node& item = *arr->get(i);
        std::string name = fmt::format("listener[{}]", i);
        const auto* t = item.as_table();
        if (!t) ld.fail(item.source(), name, fmt::format("expected a table, got {}", type_name(item)));
        section s(ld, t, name, t->source());

        listener_config l;
        auto proto = s.string("protocol");
        if (!proto) s.fail_missing("protocol", "missing required key (\"smtp\")");
        if (*proto == "smtp") {
            l.protocol = listener_protocol::smtp;
        } else if (*proto == "submission" || *proto == "smtps" || *proto == "imap" || *proto == "imaps" ||
                   *proto == "pop3" || *proto == "pop3s") {
            s.fail(*t->get("protocol"), "protocol", fmt::format("protocol \"{}\" is not supported yet (only \"smtp\")", *proto));
        } else {
            s.fail(*t->get("protocol"), "protocol",
                   fmt::format("unknown protocol \"{}\" (expected \"smtp\")", log::escaped(*proto, 40)));
        }

        auto addr = s.string("address");
        if (!addr) s.fail_missing("address", "missing required key (e.g. \"127.0.0.1:2525\" or \"[::1]:25\")");
        auto parsed = net::parse_socket_address(*addr);
        if (!parsed)
            s.fail(*t->get("address"), "address",
                   fmt::format("\"{}\": {}", log::escaped(*addr, 80), net::describe(parsed.error())));
        l.address = *parsed;
        // Port 0 asks the kernel for a free port (tests), so it may repeat.
        if (l.address.port() != 0) {
            for (std::size_t j = 0; j < c.listeners.size(); ++j) {
                if (c.listeners[j].address == l.address)
                    s.fail(*t->get("address"), "address",
                           fmt::format("duplicate address {} (also listener[{}])", l.address.to_string(), j));
            }
        }
        s.reject_unknown();
        c.listeners.push_back(l);
    }
}

// A mailbox simple enough to stand in an envelope as written: local@domain,
// both non-empty, printable ASCII without spaces, quotes, brackets or a
// second "@" (a quoted local part is not worth the risk in a config value).
bool plain_mailbox(std::string_view a)
{
    if (a.size() > 254) return false;
    size_t at = a.find('@');
    if (at == std::string_view::npos || at == 0 || at + 1 == a.size()) return false;
    if (a.find('@', at + 1) != std::string_view::npos) return false;
    for (char ch : a) {
        if (ch <= ' ' || ch >= 0x7f || ch == '"' || ch == '<' || ch == '>' || ch == '(' || ch == ')' ||
            ch == ',' || ch == ';' || ch == ':' || ch == '\\' || ch == '[' || ch == ']')
            return false;
    }
    return true;
}

void load_relay(const loader& ld, const toml::table& root, config& c)
{
    section s = open_section(ld, root, "relay");
    if (auto host = s.string("smarthost"); host && !host->empty()) {
        const toml::node& n = *s.table()->get("smarthost");
        auto parsed = net::parse_socket_address(*host);
        if (!parsed)
            s.fail(n, "smarthost", fmt::format("\"{}\": {}", log::escaped(*host, 80), net::describe(parsed.error())));
        if (parsed->port() == 0) s.fail(n, "smarthost", "port 0 is not a valid destination port");
        c.relay.smarthost = *parsed;
    }

    if (const toml::node* n = s.get("allow_networks")) {
        const auto* arr = n->as_array();
        if (!arr) s.fail(*n, "allow_networks", fmt::format("expected an array of strings, got {}", type_name(*n)));
        for (std::size_t i = 0; i < arr->size(); ++i) {
            const toml::node& item = *arr->get(i);
            std::string key = fmt::format("allow_networks[{}]", i);
            const auto* str = item.as_string();
            if (!str) s.fail(item, key, fmt::format("expected a string, got {}", type_name(item)));
            auto net = net::parse_cidr(str->get());
            if (!net)
                s.fail(item, key,
                       fmt::format("\"{}\": {}", log::escaped(str->get(), 80), net::describe(net.error())));
            c.relay.allow_networks.push_back(*net);
        }
    } else {
        c.relay.allow_networks = {*net::parse_cidr("127.0.0.0/8"), *net::parse_cidr("::1/128")};
    }

    c.relay.pool_size = s.integer<unsigned>("pool_size", 16, 1, 10'000);
    constexpr milliseconds day{86'400'000};
    c.relay.connect_timeout = s.duration("connect_timeout", milliseconds(30'000), milliseconds(1), day);
    c.relay.command_timeout = s.duration("command_timeout", milliseconds(300'000), milliseconds(1), day);
    c.relay.idle_timeout = s.duration("idle_timeout", milliseconds(5'000), milliseconds(0), day);

    if (auto p = s.tls_policy_value("tls")) c.relay.tls = *p;
    c.relay.tls_verify = s.boolean("tls_verify", false);
    c.relay.tls_ca_file = s.string_or("tls_ca_file", "");
    // Checked here so that a typo is a start-up (or reload) error, not a
    // deferral of every message; the file is read when the first TLS
    // connection of a shard needs it.
    if (!c.relay.tls_ca_file.empty() && ::access(c.relay.tls_ca_file.c_str(), R_OK) != 0)
        s.fail(*s.table()->get("tls_ca_file"), "tls_ca_file",
               fmt::format("\"{}\": {}", log::escaped(c.relay.tls_ca_file, 200), std::strerror(errno)));
    c.relay.postmaster = s.string_or("postmaster", "");
    if (c.relay.postmaster.empty()) {
        c.relay.postmaster = "postmaster@" + c.server.hostname;
    } else if (!plain_mailbox(c.relay.postmaster)) {
        s.fail(*s.table()->get("postmaster"), "postmaster",
               fmt::format("\"{}\": expected an address local@domain (printable ASCII, no spaces, quotes or "
                           "angle brackets)",
                           log::escaped(c.relay.postmaster, 200)));
    }
    s.reject_unknown();
}

// Keys shared by [delivery] and [[shaping]]: unset keys keep `base`.
destination_limits load_limits(section& s, const destination_limits& base)
{
    destination_limits l;
    l.max_connections = s.integer<unsigned>("max_connections", base.max_connections, 1, 100'000);
    l.max_messages_per_connection =
        s.integer<unsigned>("max_messages_per_connection", base.max_messages_per_connection, 1, 10'000'000);
    l.max_recipients = s.integer<unsigned>("max_recipients", base.max_recipients, 1, 100'000);
    l.message_rate = s.rate("message_rate", base.message_rate);
    l.connection_rate = s.rate("connection_rate", base.connection_rate);
    return l;
}

void load_delivery(const loader& ld, const toml::table& root, config& c)
{
    section s = open_section(ld, root, "delivery");
    c.delivery.smtp_port = s.integer<uint16_t>("smtp_port", 25, 1, 65'535);
    c.delivery.max_mx_addresses = s.integer<unsigned>("max_mx_addresses", 5, 0, 1000);
    c.delivery.limits = load_limits(s, destination_limits{});
    constexpr milliseconds day{86'400'000};
    c.delivery.backoff_min = s.duration("backoff_min", milliseconds(60'000), milliseconds(1), day);
    c.delivery.backoff_max = s.duration("backoff_max", milliseconds(3'600'000), milliseconds(1), 30 * day);
    if (c.delivery.backoff_max < c.delivery.backoff_min)
        s.fail(*s.table()->get(s.table()->get("backoff_max") ? "backoff_max" : "backoff_min"),
               s.table()->get("backoff_max") ? "backoff_max" : "backoff_min",
               "delivery.backoff_max must not be less than delivery.backoff_min");
    s.reject_unknown();
}

std::string lower(std::string_view text)
{
    std::string out(text);
    for (char& ch : out)
        if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    return out;
}

void load_shaping(const loader& ld, const toml::table& root, config& c)
{
    const toml::node* n = root.get("shaping");
    if (!n) return;
    const auto* arr = n->as_array();
    if (!arr) ld.fail(n->source(), "shaping", fmt::format("expected an array of tables [[shaping]], got {}", type_name(*n)));
    for (std::size_t i = 0; i < arr->size(); ++i) {
        const toml::node& item = *arr->get(i);
        std::string name = fmt::format("shaping[{}]", i);
        const auto* t = item.as_table();
        if (!t) ld.fail(item.source(), name, fmt::format("expected a table, got {}", type_name(item)));
        section s(ld, t, name, t->source());
        shaping_rule rule;
        rule.domain = lower(s.string_or("domain", ""));
        rule.mx = lower(s.string_or("mx", ""));
        if (rule.domain.empty() == rule.mx.empty())
            s.fail_missing("domain", "set exactly one of `domain` (a recipient domain) or `mx` (\"mx.example.com\" or \"*.example.com\")");
        std::string_view pattern = rule.mx.empty() ? std::string_view(rule.domain) : std::string_view(rule.mx);
        std::string_view host = pattern.starts_with("*.") ? pattern.substr(2) : pattern;
        if (!valid_hostname(host))
            s.fail(*t->get(rule.mx.empty() ? "domain" : "mx"), rule.mx.empty() ? "domain" : "mx",
                   fmt::format("\"{}\" is not a host name{}", log::escaped(pattern, 80),
                               rule.mx.empty() ? "" : " or *.suffix pattern"));
        if (!rule.domain.empty() && pattern.starts_with("*.")) s.fail(*t->get("domain"), "domain", "patterns are for `mx`; `domain` is exact");
        rule.limits = load_limits(s, c.delivery.limits);
        rule.tls = s.tls_policy_value("tls");
        s.reject_unknown();
        c.shaping.push_back(std::move(rule));
    }
}

// "127.0.0.5", "::1" or "[::1]": an address without a port.
std::optional<net::socket_address> parse_source_address(std::string_view text)
{
    std::string with_port;
    if (text.starts_with('[')) with_port = fmt::format("{}:0", text);
    else if (text.find(':') != std::string_view::npos) with_port = fmt::format("[{}]:0", text);
    else with_port = fmt::format("{}:0", text);
    auto parsed = net::parse_socket_address(with_port);
    if (!parsed) return std::nullopt;
    return *parsed;
}

// Empty when `a` is an address of this host (a socket can bind to it), else
// why not.
std::string not_local_reason(const net::socket_address& a)
{
    int fd = ::socket(a.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::strerror(errno);
    int rc = ::bind(fd, a.sockaddr_ptr(), a.length());
    int e = errno;
    ::close(fd);
    return rc == 0 ? std::string() : std::strerror(e);
}

void load_egress(const loader& ld, const toml::table& root, config& c)
{
    const toml::node* n = root.get("egress");
    if (!n) return;
    const auto* arr = n->as_array();
    if (!arr) ld.fail(n->source(), "egress", fmt::format("expected an array of tables [[egress]], got {}", type_name(*n)));
    for (std::size_t i = 0; i < arr->size(); ++i) {
        const toml::node& item = *arr->get(i);
        std::string name = fmt::format("egress[{}]", i);
        const auto* t = item.as_table();
        if (!t) ld.fail(item.source(), name, fmt::format("expected a table, got {}", type_name(item)));
        section s(ld, t, name, t->source());
        egress_config e;
        auto src = s.string("source");
        if (!src) s.fail_missing("source", "missing required key (a local address, e.g. \"192.0.2.10\")");
        auto parsed = parse_source_address(*src);
        if (!parsed)
            s.fail(*t->get("source"), "source",
                   fmt::format("\"{}\" is not an IPv4 or IPv6 address", log::escaped(*src, 80)));
        if (std::string why = not_local_reason(*parsed); !why.empty())
            s.fail(*t->get("source"), "source",
                   fmt::format("\"{}\" is not an address of this host ({})", log::escaped(*src, 80), why));
        e.source = *parsed;
        e.ehlo = s.string_or("ehlo", "");
        if (!e.ehlo.empty() && !valid_hostname(e.ehlo))
            s.fail(*t->get("ehlo"), "ehlo", fmt::format("\"{}\" is not a valid host name", log::escaped(e.ehlo, 80)));
        for (auto& d : s.strings("senders", [](std::string_view v) -> std::string {
                 return valid_hostname(v) ? "" : fmt::format("\"{}\" is not a domain name", log::escaped(v, 80));
             }))
            e.senders.push_back(lower(d));
        s.reject_unknown();
        c.egress.push_back(std::move(e));
    }
}

void load_dns(const loader& ld, const toml::table& root, config& c)
{
    section s = open_section(ld, root, "dns");
    for (const auto& text : s.strings("servers", [](std::string_view v) -> std::string {
             auto parsed = net::parse_socket_address(v);
             if (!parsed) return fmt::format("\"{}\": {}", log::escaped(v, 80), net::describe(parsed.error()));
             return "";
         })) {
        auto a = *net::parse_socket_address(text);
        if (a.port() == 0) a.set_port(53);
        c.dns.servers.push_back(a);
    }
    constexpr milliseconds day{86'400'000};
    c.dns.timeout = s.duration("timeout", milliseconds(2000), milliseconds(1), milliseconds(60'000));
    c.dns.tries = s.integer<unsigned>("tries", 2, 1, 10);
    c.dns.max_queries_in_flight = s.integer<unsigned>("max_queries_in_flight", 100, 2, 100'000);
    c.dns.min_ttl = s.duration("min_ttl", milliseconds(60'000), milliseconds(0), day);
    c.dns.max_ttl = s.duration("max_ttl", milliseconds(86'400'000), milliseconds(0), 7 * day);
    if (c.dns.max_ttl < c.dns.min_ttl)
        s.fail(*s.table()->get(s.table()->get("max_ttl") ? "max_ttl" : "min_ttl"),
               s.table()->get("max_ttl") ? "max_ttl" : "min_ttl", "dns.max_ttl must not be less than dns.min_ttl");
    c.dns.negative_ttl = s.duration("negative_ttl", milliseconds(300'000), milliseconds(0), day);
    c.dns.temporary_ttl = s.duration("temporary_ttl", milliseconds(30'000), milliseconds(0), day);
    s.reject_unknown();
}

void load_smtp(const loader& ld, const toml::table& root, config& c)
{
    section s = open_section(ld, root, "smtp");
    auto& m = c.smtp;
    // RFC 5321 §4.5.3.1.4: command lines of at least 512 octets must work.
    m.max_command_bytes = s.size("max_command_bytes", 512, 512, 65'536);
    // RFC 5321 §4.5.3.1.6: text lines of at least 1000 octets must work.
    m.max_line_bytes = s.size("max_line_bytes", 1000, 1000, 1 << 20);
    m.message_size_limit = s.size("message_size_limit", 52'428'800, 0, std::numeric_limits<int64_t>::max());
    m.receive_memory = s.size("receive_memory", 1ll << 30, 1ll << 20, std::numeric_limits<int64_t>::max());
    m.max_recipients = s.integer<unsigned>("max_recipients", 1000, 1, 1'000'000);
    m.max_errors = s.integer<unsigned>("max_errors", 10, 1, 10'000);
    m.junk_command_limit = s.integer<unsigned>("junk_command_limit", 100, 0, 10'000'000);
    m.recipient_overshoot_limit = s.integer<unsigned>("recipient_overshoot_limit", 1000, 0, 10'000'000);
    m.max_hops = s.integer<unsigned>("max_hops", 50, 2, 1000);
    m.max_connections = s.integer<unsigned>("max_connections", 10'000, 1, 10'000'000);
    m.max_connections_per_ip = s.integer<unsigned>("max_connections_per_ip", 100, 0, 10'000'000);
    constexpr milliseconds day{86'400'000};
    m.command_timeout = s.duration("command_timeout", milliseconds(300'000), milliseconds(1), day);
    m.data_timeout = s.duration("data_timeout", milliseconds(600'000), milliseconds(1), day);
    m.min_data_rate = s.integer<uint64_t>("min_data_rate", 500, 0, 1'000'000'000);
    s.reject_unknown();
}

void load_queue(const loader& ld, const toml::table& root, config& c)
{
    section s = open_section(ld, root, "queue");
    constexpr milliseconds day{86'400'000};
    c.queue.min_backoff = s.duration("min_backoff", milliseconds(300'000), milliseconds(1), 30 * day);
    c.queue.max_backoff = s.duration("max_backoff", milliseconds(4'000'000), milliseconds(1), 30 * day);
    if (c.queue.max_backoff < c.queue.min_backoff) {
        const toml::node* n = s.table() ? s.table()->get("max_backoff") : nullptr;
        auto what = fmt::format("must not be less than queue.min_backoff ({})", format_duration(c.queue.min_backoff));
        if (n) s.fail(*n, "max_backoff", what);
        s.fail(*s.table()->get("min_backoff"), "min_backoff",
               fmt::format("must not exceed queue.max_backoff ({})", format_duration(c.queue.max_backoff)));
    }
    c.queue.max_age = s.duration("max_age", milliseconds(5 * day), milliseconds(1), 365 * day);
    c.queue.jitter = s.fraction("jitter", 0.2);
    s.reject_unknown();
}

void load_store(const loader& ld, const toml::table& root, config& c)
{
    section s = open_section(ld, root, "store");
    c.store.map_size = s.size("map_size", 64ULL << 30, 1ULL << 20, 1ULL << 50);
    c.store.commit_window = s.duration("commit_window", milliseconds(0), milliseconds(0), milliseconds(1000));
    c.store.commit_max_batch = s.integer<unsigned>("commit_max_batch", 1024, 1, 1'000'000);
    s.reject_unknown();
}

void load_log(const loader& ld, const toml::table& root, config& c)
{
    section s = open_section(ld, root, "log");
    if (auto lv = s.string("level")) {
        auto parsed = log::parse_level(*lv);
        if (!parsed)
            s.fail(*s.table()->get("level"), "level",
                   fmt::format("\"{}\" is not one of error, warning, info, debug", log::escaped(*lv, 40)));
        c.log.level = *parsed;
    }
    s.reject_unknown();
}

}  // namespace

config load_config_string(std::string_view toml_text, std::string_view source_name)
{
    loader ld(source_name);
    toml::table root;
    try {
        root = toml::parse(toml_text, source_name);
    } catch (const toml::parse_error& e) {
        const auto& where = e.source().begin;
        throw config_error(fmt::format("{}:{}:{}: syntax error: {}", source_name, where.line ? where.line : 1,
                                       where.column ? where.column : 1, e.description()));
    }

    static constexpr std::string_view tables[] = {"server", "listener", "relay", "delivery", "shaping", "egress",
                                                   "dns",    "smtp",     "queue", "store",    "log"};
    for (auto&& [k, v] : root) {
        if (std::find(std::begin(tables), std::end(tables), k.str()) == std::end(tables))
            ld.fail(k.source(), k.str(), v.is_table() ? "unknown table" : "unknown key");
    }

    config c;
    load_server(ld, root, c);
    load_listeners(ld, root, c);
    load_relay(ld, root, c);
    load_delivery(ld, root, c);
    load_shaping(ld, root, c);
    load_egress(ld, root, c);
    load_dns(ld, root, c);
    load_smtp(ld, root, c);
    load_queue(ld, root, c);
    load_store(ld, root, c);
    load_log(ld, root, c);
    return c;
}

config load_config_file(const std::string& path)
{
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) throw config_error(fmt::format("{}: is a directory, not a file", path));
    std::ifstream in(path, std::ios::binary);
    if (!in) throw config_error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) throw config_error(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
    return load_config_string(text.str(), path);
}

// ---------------------------------------------------------------------------
// Reload

namespace {

// Every reloadable unit of the configuration: (needs a restart, name in
// logs, member). Restart: what the process set up once (sockets, shard
// threads, LMDB maps, the pid file, each shard's resolver and DNS cache).
// Everything else is read per use. docs/configuration.md mirrors it.
#define RINGMAIL_CONFIG_KEYS(X) \
    X(false, "server.hostname", server.hostname) \
    X(true, "server.data_dir", server.data_dir) \
    X(true, "server.shards", server.shards) \
    X(false, "server.shutdown_timeout", server.shutdown_timeout) \
    X(true, "server.pid_file", server.pid_file) \
    X(true, "listener", listeners) \
    X(false, "relay.smarthost", relay.smarthost) \
    X(false, "relay.allow_networks", relay.allow_networks) \
    X(false, "relay.pool_size", relay.pool_size) \
    X(false, "relay.connect_timeout", relay.connect_timeout) \
    X(false, "relay.command_timeout", relay.command_timeout) \
    X(false, "relay.idle_timeout", relay.idle_timeout) \
    X(false, "delivery.smtp_port", delivery.smtp_port) \
    X(false, "delivery.max_mx_addresses", delivery.max_mx_addresses) \
    X(false, "delivery.limits", delivery.limits) \
    X(false, "delivery.backoff_min", delivery.backoff_min) \
    X(false, "delivery.backoff_max", delivery.backoff_max) \
    X(false, "shaping", shaping) \
    X(false, "egress", egress) \
    X(true, "dns", dns) \
    X(false, "relay.tls", relay.tls) \
    X(false, "relay.tls_verify", relay.tls_verify) \
    X(false, "relay.tls_ca_file", relay.tls_ca_file) \
    X(false, "relay.postmaster", relay.postmaster) \
    X(false, "smtp.max_command_bytes", smtp.max_command_bytes) \
    X(false, "smtp.max_line_bytes", smtp.max_line_bytes) \
    X(false, "smtp.message_size_limit", smtp.message_size_limit) \
    X(false, "smtp.receive_memory", smtp.receive_memory) \
    X(false, "smtp.max_recipients", smtp.max_recipients) \
    X(false, "smtp.max_errors", smtp.max_errors) \
    X(false, "smtp.junk_command_limit", smtp.junk_command_limit) \
    X(false, "smtp.recipient_overshoot_limit", smtp.recipient_overshoot_limit) \
    X(false, "smtp.max_connections", smtp.max_connections) \
    X(false, "smtp.max_connections_per_ip", smtp.max_connections_per_ip) \
    X(false, "smtp.command_timeout", smtp.command_timeout) \
    X(false, "smtp.data_timeout", smtp.data_timeout) \
    X(false, "smtp.min_data_rate", smtp.min_data_rate) \
    X(false, "queue.min_backoff", queue.min_backoff) \
    X(false, "queue.max_backoff", queue.max_backoff) \
    X(false, "queue.max_age", queue.max_age) \
    X(false, "queue.jitter", queue.jitter) \
    X(true, "store.map_size", store.map_size) \
    X(false, "store.commit_window", store.commit_window) \
    X(false, "store.commit_max_batch", store.commit_max_batch) \
    X(false, "log.level", log.level)

template <class F>
void for_each_change(const config& a, const config& b, F&& emit)
{
#define RINGMAIL_CMP(restart, name, member) \
    if (!(a.member == b.member)) emit(restart, name);
    RINGMAIL_CONFIG_KEYS(RINGMAIL_CMP)
#undef RINGMAIL_CMP
}

}  // namespace

void keep_restart_values(const config& running, config& fresh)
{
#define RINGMAIL_KEEP(restart, name, member) \
    if (restart) fresh.member = running.member;
    RINGMAIL_CONFIG_KEYS(RINGMAIL_KEEP)
#undef RINGMAIL_KEEP
}

std::vector<std::string> restart_required_changes(const config& old, const config& neu)
{
    std::vector<std::string> keys;
    for_each_change(old, neu, [&](bool restart, const char* name) {
        if (restart) keys.emplace_back(name);
    });
    return keys;
}

std::vector<std::string> reloadable_changes(const config& old, const config& neu)
{
    std::vector<std::string> keys;
    for_each_change(old, neu, [&](bool restart, const char* name) {
        if (!restart) keys.emplace_back(name);
    });
    return keys;
}

unsigned shard_count(const server_config& server)
{
    if (server.shards != 0) return server.shards;
    cpu_set_t set;
    CPU_ZERO(&set);
    long n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
    if (n <= 0) n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0) n = 1;
    return static_cast<unsigned>(std::min<long>(n, 256));
}

}  // namespace ringmail
