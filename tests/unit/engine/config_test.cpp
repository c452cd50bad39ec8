// Tests for engine/config: the embedded default, every key, every error
// class with its exact FILE:LINE:COL and key, value syntaxes, reload rules.
#include "engine/config.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace ringmail {
namespace {

using namespace std::chrono_literals;

// Loads `text` expecting a config_error whose message contains `expected`.
std::string error_of(std::string_view text)
{
    try {
        (void)load_config_string(text, "test.toml");
    } catch (const config_error& e) {
        return e.what();
    }
    return "(no error)";
}

#define EXPECT_CONFIG_ERROR(text, expected)                                    \
    do {                                                                       \
        std::string msg_ = error_of(text);                                     \
        EXPECT_NE(msg_.find(expected), std::string::npos)                      \
            << "expected substring: " << (expected) << "\n   actual: " << msg_; \
    } while (0)

constexpr const char* listener = "[[listener]]\nprotocol = \"smtp\"\naddress = \"127.0.0.1:2525\"\n";

std::string with_listener(std::string_view rest) { return std::string(listener) + std::string(rest); }

TEST(config, embedded_default_loads)
{
    config c = load_config_string(default_config_toml, "default");
    char host[256] = {};
    ASSERT_EQ(gethostname(host, sizeof(host) - 1), 0);
    EXPECT_FALSE(c.server.hostname.empty());
    EXPECT_EQ(c.server.data_dir, "var");
    EXPECT_EQ(c.server.shards, 0u);
    EXPECT_GE(shard_count(c.server), 1u);
    EXPECT_EQ(c.server.shutdown_timeout, 10s);
    EXPECT_EQ(c.server.pid_file, "var/ringmaild.pid");
    ASSERT_EQ(c.listeners.size(), 1u);
    EXPECT_EQ(c.listeners[0].protocol, listener_protocol::smtp);
    EXPECT_EQ(c.listeners[0].address.to_string(), "127.0.0.1:2525");
    EXPECT_FALSE(c.relay.smarthost.has_value());
    ASSERT_EQ(c.relay.allow_networks.size(), 2u);
    EXPECT_EQ(c.relay.allow_networks[0].to_string(), "127.0.0.0/8");
    EXPECT_EQ(c.relay.allow_networks[1].to_string(), "::1/128");
    EXPECT_EQ(c.relay.pool_size, 16u);
    EXPECT_EQ(c.relay.connect_timeout, 30s);
    EXPECT_EQ(c.relay.command_timeout, 300s);
    EXPECT_EQ(c.relay.idle_timeout, 5s);
    EXPECT_EQ(c.relay.tls, tls_policy::opportunistic);
    EXPECT_FALSE(c.relay.tls_verify);
    EXPECT_EQ(c.relay.tls_ca_file, "");
    EXPECT_EQ(c.relay.postmaster, "postmaster@" + c.server.hostname);
    EXPECT_EQ(c.smtp.max_command_bytes, 512u);
    EXPECT_EQ(c.smtp.max_line_bytes, 1000u);
    EXPECT_EQ(c.smtp.message_size_limit, 52428800u);
    EXPECT_EQ(c.smtp.max_recipients, 1000u);
    EXPECT_EQ(c.smtp.max_errors, 10u);
    EXPECT_EQ(c.smtp.max_connections, 10000u);
    EXPECT_EQ(c.smtp.max_connections_per_ip, 100u);
    EXPECT_EQ(c.smtp.command_timeout, 300s);
    EXPECT_EQ(c.smtp.data_timeout, 600s);
    EXPECT_EQ(c.queue.min_backoff, 300s);
    EXPECT_EQ(c.queue.max_backoff, 4000s);
    EXPECT_EQ(c.queue.max_age, 120h);
    EXPECT_DOUBLE_EQ(c.queue.jitter, 0.2);
    EXPECT_EQ(c.store.map_size, 64ULL << 30);
    EXPECT_EQ(c.store.commit_window, 0ms);
    EXPECT_EQ(c.store.commit_max_batch, 1024u);
    EXPECT_EQ(c.log.level, log::level::info);
}

TEST(config, minimal_file_equals_embedded_default)
{
    // Only the listener is required; every other key defaults to the value
    // the embedded default spells out.
    EXPECT_EQ(load_config_string(listener, "min.toml"), load_config_string(default_config_toml, "default"));
}

TEST(config, every_key_parsed)
{
    config c = load_config_string(R"(
[server]
hostname = "mx1.example.org"
data_dir = "/srv/ringmail"
shards = 4
shutdown_timeout = "30s"
pid_file = "/run/ringmaild.pid"

[[listener]]
protocol = "smtp"
address = "0.0.0.0:25"

[[listener]]
protocol = "smtp"
address = "[::]:25"

[relay]
smarthost = "[2001:db8::25]:2525"
allow_networks = ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]
pool_size = 4
connect_timeout = "5s"
command_timeout = "2m"
idle_timeout = 0
tls = "required"
tls_verify = true
tls_ca_file = "/dev/null"

[smtp]
max_command_bytes = 1024
max_line_bytes = "2KiB"
message_size_limit = "10MB"
max_recipients = 100
max_errors = 3
max_connections = 500
max_connections_per_ip = 0
command_timeout = 60
data_timeout = "1h"

[queue]
min_backoff = "1m"
max_backoff = "1h"
max_age = "3d"
jitter = 0

[store]
map_size = 1073741824
commit_window = "5ms"
commit_max_batch = 64

[log]
level = "debug"
)",
                                  "full.toml");
    EXPECT_EQ(c.server.hostname, "mx1.example.org");
    EXPECT_EQ(c.server.data_dir, "/srv/ringmail");
    EXPECT_EQ(c.server.shards, 4u);
    EXPECT_EQ(shard_count(c.server), 4u);
    EXPECT_EQ(c.server.shutdown_timeout, 30s);
    EXPECT_EQ(c.server.pid_file, "/run/ringmaild.pid");
    ASSERT_EQ(c.listeners.size(), 2u);
    EXPECT_EQ(c.listeners[0].address.to_string(), "0.0.0.0:25");
    EXPECT_EQ(c.listeners[1].address.to_string(), "[::]:25");
    ASSERT_TRUE(c.relay.smarthost.has_value());
    EXPECT_EQ(c.relay.smarthost->to_string(), "[2001:db8::25]:2525");
    ASSERT_EQ(c.relay.allow_networks.size(), 3u);
    EXPECT_EQ(c.relay.allow_networks[1].to_string(), "192.0.2.1/32");
    EXPECT_EQ(c.relay.pool_size, 4u);
    EXPECT_EQ(c.relay.connect_timeout, 5s);
    EXPECT_EQ(c.relay.command_timeout, 120s);
    EXPECT_EQ(c.relay.idle_timeout, 0s);
    EXPECT_EQ(c.relay.tls, tls_policy::required);
    EXPECT_TRUE(c.relay.tls_verify);
    EXPECT_EQ(c.relay.tls_ca_file, "/dev/null");
    EXPECT_EQ(c.smtp.max_command_bytes, 1024u);
    EXPECT_EQ(c.smtp.max_line_bytes, 2048u);
    EXPECT_EQ(c.smtp.message_size_limit, 10'000'000u);
    EXPECT_EQ(c.smtp.max_recipients, 100u);
    EXPECT_EQ(c.smtp.max_errors, 3u);
    EXPECT_EQ(c.smtp.max_connections, 500u);
    EXPECT_EQ(c.smtp.max_connections_per_ip, 0u);
    EXPECT_EQ(c.smtp.command_timeout, 60s);
    EXPECT_EQ(c.smtp.data_timeout, 1h);
    EXPECT_EQ(c.queue.min_backoff, 1min);
    EXPECT_EQ(c.queue.max_backoff, 1h);
    EXPECT_EQ(c.queue.max_age, 72h);
    EXPECT_DOUBLE_EQ(c.queue.jitter, 0.0);
    EXPECT_EQ(c.store.map_size, 1ULL << 30);
    EXPECT_EQ(c.store.commit_window, 5ms);
    EXPECT_EQ(c.store.commit_max_batch, 64u);
    EXPECT_EQ(c.log.level, log::level::debug);
}

TEST(config, pid_file_defaults_into_data_dir)
{
    config c = load_config_string("[server]\ndata_dir = \"/tmp/rm\"\n" + std::string(listener), "t");
    EXPECT_EQ(c.server.pid_file, "/tmp/rm/ringmaild.pid");
}

TEST(config, port_zero_listeners_may_repeat)
{
    config c = load_config_string(
        "[[listener]]\nprotocol = \"smtp\"\naddress = \"127.0.0.1:0\"\n"
        "[[listener]]\nprotocol = \"smtp\"\naddress = \"127.0.0.1:0\"\n",
        "t");
    ASSERT_EQ(c.listeners.size(), 2u);
    EXPECT_EQ(c.listeners[1].address.port(), 0);
}

TEST(config, syntax_error_position)
{
    EXPECT_CONFIG_ERROR("[server]\nshards = = 3\n", "test.toml:2:");
    EXPECT_CONFIG_ERROR("[server]\nshards = = 3\n", "syntax error");
}

TEST(config, unknown_keys_rejected)
{
    EXPECT_CONFIG_ERROR(with_listener("[server]\nshard = 3\n"), "test.toml:5:1: key 'server.shard': unknown key");
    EXPECT_CONFIG_ERROR(with_listener("[servr]\nshards = 3\n"), "test.toml:4:2: key 'servr': unknown table");
    EXPECT_CONFIG_ERROR("verbose = true\n" + std::string(listener), "test.toml:1:1: key 'verbose': unknown key");
    EXPECT_CONFIG_ERROR(std::string(listener) + "port = 25\n", "test.toml:4:1: key 'listener[0].port': unknown key");
    EXPECT_CONFIG_ERROR(with_listener("[smtp.tls]\ncert = \"x\"\n"), "test.toml:4:7: key 'smtp.tls': unknown key");
    EXPECT_CONFIG_ERROR(with_listener("[log]\nlevel = \"info\"\nfile = \"x\"\n"),
                        "test.toml:6:1: key 'log.file': unknown key");
}

TEST(config, wrong_types)
{
    EXPECT_CONFIG_ERROR(with_listener("[server]\nshards = \"4\"\n"),
                        "test.toml:5:10: key 'server.shards': expected an integer, got a string");
    EXPECT_CONFIG_ERROR(with_listener("[server]\nhostname = 5\n"),
                        "test.toml:5:12: key 'server.hostname': expected a string, got an integer");
    EXPECT_CONFIG_ERROR("server = 5\n" + std::string(listener), "test.toml:1:10: key 'server': expected a table [server]");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\nallow_networks = \"127.0.0.0/8\"\n"),
                        "test.toml:5:18: key 'relay.allow_networks': expected an array of strings");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\nallow_networks = [\"127.0.0.0/8\", 5]\n"),
                        "test.toml:5:34: key 'relay.allow_networks[1]': expected a string, got an integer");
    EXPECT_CONFIG_ERROR(with_listener("[queue]\njitter = \"0.2\"\n"),
                        "test.toml:5:10: key 'queue.jitter': expected a number");
    EXPECT_CONFIG_ERROR(with_listener("[smtp]\ndata_timeout = true\n"),
                        "test.toml:5:16: key 'smtp.data_timeout': expected a duration");
    EXPECT_CONFIG_ERROR(with_listener("[store]\nmap_size = 1.5\n"),
                        "test.toml:5:12: key 'store.map_size': expected a size");
    EXPECT_CONFIG_ERROR("[listener]\nprotocol = \"smtp\"\naddress = \"127.0.0.1:25\"\n",
                        "test.toml:1:1: key 'listener': expected an array of tables [[listener]]");
}

TEST(config, bad_values)
{
    EXPECT_CONFIG_ERROR(with_listener("[server]\nshards = 257\n"),
                        "test.toml:5:10: key 'server.shards': must be between 0 and 256, got 257");
    EXPECT_CONFIG_ERROR(with_listener("[server]\nshards = -1\n"), "key 'server.shards': must be between 0 and 256");
    EXPECT_CONFIG_ERROR(with_listener("[server]\nhostname = \"bad host\\r\\n\"\n"),
                        "test.toml:5:12: key 'server.hostname': \"bad host\\x0d\\x0a\" is not a valid host name");
    EXPECT_CONFIG_ERROR(with_listener("[server]\ndata_dir = \"\"\n"), "test.toml:5:12: key 'server.data_dir': must not be empty");
    EXPECT_CONFIG_ERROR(with_listener("[smtp]\nmax_command_bytes = 100\n"),
                        "test.toml:5:21: key 'smtp.max_command_bytes': must be at least 512 bytes");
    EXPECT_CONFIG_ERROR(with_listener("[smtp]\nmessage_size_limit = \"50 MB\"\n"),
                        "test.toml:5:22: key 'smtp.message_size_limit': expected a size");
    EXPECT_CONFIG_ERROR(with_listener("[smtp]\nmax_recipients = 0\n"),
                        "test.toml:5:18: key 'smtp.max_recipients': must be between 1 and 1000000, got 0");
    EXPECT_CONFIG_ERROR(with_listener("[smtp]\ncommand_timeout = \"5x\"\n"),
                        "test.toml:5:19: key 'smtp.command_timeout': expected a duration");
    EXPECT_CONFIG_ERROR(with_listener("[smtp]\ncommand_timeout = 0\n"),
                        "test.toml:5:19: key 'smtp.command_timeout': must be at least 1ms");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\nconnect_timeout = -5\n"),
                        "key 'relay.connect_timeout': must not be negative");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\npool_size = 0\n"), "test.toml:5:13: key 'relay.pool_size': must be between 1");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\ntls = \"maybe\"\n"),
                        "test.toml:5:7: key 'relay.tls': \"maybe\" is not one of \"opportunistic\", \"required\", \"none\"");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\ntls = true\n"), "test.toml:5:7: key 'relay.tls': expected a string, got a boolean");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\ntls_verify = \"yes\"\n"),
                        "test.toml:5:14: key 'relay.tls_verify': expected a boolean (true or false), got a string");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\ntls_ca_file = \"/nonexistent/ca.pem\"\n"),
                        "test.toml:5:15: key 'relay.tls_ca_file': \"/nonexistent/ca.pem\": No such file or directory");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\ntls_cafile = \"x\"\n"), "test.toml:5:1: key 'relay.tls_cafile': unknown key");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\npostmaster = \"root\"\n"),
                        "test.toml:5:14: key 'relay.postmaster': \"root\": expected an address local@domain "
                        "(printable ASCII, no spaces, quotes or angle brackets)");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\npostmaster = \"<a@b.test>\"\n"),
                        "test.toml:5:14: key 'relay.postmaster': \"<a@b.test>\": expected an address local@domain "
                        "(printable ASCII, no spaces, quotes or angle brackets)");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\npostmaster = \"a b@c.test\"\n"),
                        "test.toml:5:14: key 'relay.postmaster': \"a b@c.test\": expected an address local@domain "
                        "(printable ASCII, no spaces, quotes or angle brackets)");
    EXPECT_CONFIG_ERROR(with_listener("[queue]\njitter = 1.5\n"), "test.toml:5:10: key 'queue.jitter': must be between 0.0 and 1.0");
    EXPECT_CONFIG_ERROR(with_listener("[queue]\nmin_backoff = \"2h\"\nmax_backoff = \"1h\"\n"),
                        "test.toml:6:15: key 'queue.max_backoff': must not be less than queue.min_backoff (2h)");
    EXPECT_CONFIG_ERROR(with_listener("[queue]\nmin_backoff = \"2h\"\n"),
                        "test.toml:5:15: key 'queue.min_backoff': must not exceed queue.max_backoff");
    EXPECT_CONFIG_ERROR(with_listener("[store]\ncommit_window = \"2s\"\n"),
                        "test.toml:5:17: key 'store.commit_window': must be at most 1s");
    EXPECT_CONFIG_ERROR(with_listener("[store]\nmap_size = \"1KiB\"\n"),
                        "test.toml:5:12: key 'store.map_size': must be at least 1048576 bytes (1MiB)");
    EXPECT_CONFIG_ERROR(with_listener("[log]\nlevel = \"verbose\"\n"),
                        "test.toml:5:9: key 'log.level': \"verbose\" is not one of error, warning, info, debug");
}

TEST(config, bad_addresses)
{
    EXPECT_CONFIG_ERROR(with_listener("[relay]\nsmarthost = \"localhost:25\"\n"),
                        "test.toml:5:13: key 'relay.smarthost': \"localhost:25\": host must be a numeric");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\nsmarthost = \"10.0.0.1:0\"\n"),
                        "test.toml:5:13: key 'relay.smarthost': port 0");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\nallow_networks = [\"127.0.0.0/8\",\n  \"300.1.1.1/8\"]\n"),
                        "test.toml:6:3: key 'relay.allow_networks[1]': \"300.1.1.1/8\"");
    EXPECT_CONFIG_ERROR(with_listener("[relay]\nallow_networks = [\"10.0.0.0/33\"]\n"),
                        "test.toml:5:19: key 'relay.allow_networks[0]': \"10.0.0.0/33\": prefix length");
    EXPECT_CONFIG_ERROR("[[listener]]\nprotocol = \"smtp\"\naddress = \"1.2.3.4:99999\"\n",
                        "test.toml:3:11: key 'listener[0].address': \"1.2.3.4:99999\": port must be");
    EXPECT_CONFIG_ERROR("[[listener]]\nprotocol = \"smtp\"\naddress = \"[::1\"\n",
                        "test.toml:3:11: key 'listener[0].address'");
}

TEST(config, listener_errors)
{
    EXPECT_CONFIG_ERROR("", "test.toml:1:1: key 'listener': at least one [[listener]] is required");
    EXPECT_CONFIG_ERROR("[server]\nshards = 1\n", "key 'listener': at least one [[listener]] is required");
    EXPECT_CONFIG_ERROR("listener = []\n", "test.toml:1:12: key 'listener': at least one");
    EXPECT_CONFIG_ERROR(std::string(listener) + "\n[[listener]]\nprotocol = \"smtp\"\n",
                        "test.toml:5:1: key 'listener[1].address': missing required key");
    EXPECT_CONFIG_ERROR("[[listener]]\naddress = \"127.0.0.1:25\"\n",
                        "test.toml:1:1: key 'listener[0].protocol': missing required key");
    EXPECT_CONFIG_ERROR("[[listener]]\nprotocol = \"imap\"\naddress = \"127.0.0.1:143\"\n",
                        "test.toml:2:12: key 'listener[0].protocol': protocol \"imap\" is not supported yet");
    EXPECT_CONFIG_ERROR("[[listener]]\nprotocol = \"submission\"\naddress = \"127.0.0.1:587\"\n",
                        "not supported yet");
    EXPECT_CONFIG_ERROR("[[listener]]\nprotocol = \"http\"\naddress = \"127.0.0.1:80\"\n",
                        "test.toml:2:12: key 'listener[0].protocol': unknown protocol \"http\"");
    EXPECT_CONFIG_ERROR(std::string(listener) + std::string(listener),
                        "test.toml:6:11: key 'listener[1].address': duplicate address 127.0.0.1:2525 (also listener[0])");
}

TEST(config, file_loading)
{
    char path[] = "/tmp/ringmail_config_test_XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    ::close(fd);
    {
        std::ofstream out(path);
        out << listener << "[log]\nlevel = \"loud\"\n";
    }
    std::string msg;
    try {
        (void)load_config_file(path);
    } catch (const config_error& e) {
        msg = e.what();
    }
    EXPECT_EQ(msg.rfind(std::string(path) + ":5:9: key 'log.level':", 0), 0u) << msg;
    {
        std::ofstream out(path);
        out << listener;
    }
    EXPECT_EQ(load_config_file(path).listeners.size(), 1u);
    std::remove(path);

    try {
        (void)load_config_file("/nonexistent/ringmail.toml");
        ADD_FAILURE() << "no error";
    } catch (const config_error& e) {
        EXPECT_NE(std::string(e.what()).find("/nonexistent/ringmail.toml: cannot open"), std::string::npos) << e.what();
    }
}

TEST(config, duration_table)
{
    struct {
        const char* text;
        std::optional<std::chrono::milliseconds> expected;
    } cases[] = {
        {"1ms", 1ms},      {"0s", 0ms},          {"300s", 300s},   {"5m", 5min},   {"2h", 2h},
        {"5d", 120h},      {"10s", 10s},         {"007s", 7s},     {"", {}},       {"s", {}},
        {"300", {}},       {"300 s", {}},        {"-1s", {}},      {"1.5s", {}},   {"1S", {}},
        {"1sec", {}},      {"1w", {}},           {"ms", {}},       {" 1s", {}},    {"1s ", {}},
        {"99999999999999999999d", {}},           {"9223372036854775807d", {}},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.text);
        EXPECT_EQ(parse_duration(c.text), c.expected);
    }
}

TEST(config, size_table)
{
    struct {
        const char* text;
        std::optional<uint64_t> expected;
    } cases[] = {
        {"0B", 0},
        {"512B", 512},
        {"1KB", 1000},
        {"50MB", 50'000'000},
        {"2GB", 2'000'000'000},
        {"1TB", 1'000'000'000'000},
        {"512KiB", 512 * 1024},
        {"10MiB", 10 << 20},
        {"64GiB", 64ULL << 30},
        {"2TiB", 2ULL << 40},
        {"", {}},
        {"1024", {}},
        {"1 MB", {}},
        {"1mb", {}},
        {"1Mb", {}},
        {"1.5MB", {}},
        {"-1B", {}},
        {"MB", {}},
        {"1KIB", {}},
        {"99999999999GiB", {}},
        {"99999999999999999999B", {}},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.text);
        EXPECT_EQ(parse_size(c.text), c.expected);
    }
}

TEST(config, duration_and_size_in_toml)
{
    config c = load_config_string(with_listener("[smtp]\nmessage_size_limit = 0\n[queue]\nmax_age = 86400\n"), "t");
    EXPECT_EQ(c.smtp.message_size_limit, 0u);  // unlimited
    EXPECT_EQ(c.queue.max_age, 24h);
    EXPECT_CONFIG_ERROR(with_listener("[queue]\nmax_age = 99999999999999\n"), "key 'queue.max_age': must be at most 365d");
}

TEST(config, restart_required_changes)
{
    const config base = load_config_string(default_config_toml, "default");
    EXPECT_TRUE(restart_required_changes(base, base).empty());
    EXPECT_TRUE(reloadable_changes(base, base).empty());

    config reload = base;
    reload.log.level = log::level::debug;
    reload.smtp.max_recipients = 5;
    reload.relay.smarthost = *net::parse_socket_address("10.0.0.1:25");
    reload.queue.jitter = 0.5;
    reload.store.commit_window = 5ms;
    reload.relay.tls = tls_policy::required;
    reload.relay.tls_verify = true;
    reload.relay.tls_ca_file = "ca.pem";
    EXPECT_TRUE(restart_required_changes(base, reload).empty());
    EXPECT_EQ(reloadable_changes(base, reload),
              (std::vector<std::string>{"relay.smarthost", "relay.tls", "relay.tls_verify", "relay.tls_ca_file",
                                        "smtp.max_recipients", "queue.jitter",
                                        "store.commit_window", "log.level"}));

    config restart = base;
    restart.listeners[0].address.set_port(2526);
    restart.server.data_dir = "other";
    restart.server.shards = 2;
    restart.store.map_size = 1ULL << 30;
    restart.server.pid_file = "x.pid";
    EXPECT_EQ(restart_required_changes(base, restart),
              (std::vector<std::string>{"server.data_dir", "server.shards", "server.pid_file", "listener",
                                        "store.map_size"}));
    EXPECT_TRUE(reloadable_changes(base, restart).empty());

    // What SIGHUP applies keeps every restart-only value (so a second reload
    // compares against what runs: a changed then restored [dns] is no change)
    // and takes the reloadable ones.
    config fresh = restart;
    fresh.dns.tries = base.dns.tries + 1;
    fresh.smtp.max_recipients = 7;
    keep_restart_values(base, fresh);
    EXPECT_TRUE(restart_required_changes(base, fresh).empty());
    EXPECT_EQ(fresh.dns.tries, base.dns.tries);
    EXPECT_EQ(fresh.server.data_dir, base.server.data_dir);
    EXPECT_EQ(fresh.smtp.max_recipients, 7u);
}

TEST(config, delivery_dns_and_shaping)
{
    const config d = load_config_string(default_config_toml, "default");
    EXPECT_EQ(d.delivery.smtp_port, 25);
    EXPECT_EQ(d.delivery.max_mx_addresses, 5u);
    EXPECT_EQ(d.delivery.limits.max_connections, 20u);
    EXPECT_EQ(d.delivery.limits.max_recipients, 50u);
    EXPECT_TRUE(d.delivery.limits.message_rate.unlimited());
    EXPECT_TRUE(d.dns.servers.empty());
    EXPECT_EQ(d.dns.max_queries_in_flight, 100u);
    EXPECT_TRUE(d.shaping.empty());

    config c = load_config_string(with_listener(R"(
[delivery]
smtp_port = 2525
max_mx_addresses = 0
max_connections = 4
message_rate = "100/s"
connection_rate = "5000/h"

[dns]
servers = ["127.0.0.1:5353", "[::1]:53"]
min_ttl = "10s"
max_queries_in_flight = 20

[[shaping]]
domain = "Gmail.com"
max_connections = 2

[[shaping]]
mx = "*.google.com"
message_rate = "10/m"
)"),
                                  "test.toml");
    EXPECT_EQ(c.delivery.smtp_port, 2525);
    EXPECT_EQ(c.delivery.max_mx_addresses, 0u);
    EXPECT_EQ(c.delivery.limits.max_connections, 4u);
    EXPECT_EQ(c.delivery.limits.message_rate, (rate_limit{100, 1000ms}));
    EXPECT_EQ(c.delivery.limits.connection_rate, (rate_limit{5000, 3'600'000ms}));
    ASSERT_EQ(c.dns.servers.size(), 2u);
    EXPECT_EQ(c.dns.servers[0].to_string(), "127.0.0.1:5353");
    EXPECT_EQ(c.dns.servers[1].to_string(), "[::1]:53");
    EXPECT_EQ(c.dns.min_ttl, 10s);
    EXPECT_EQ(c.dns.max_queries_in_flight, 20u);
    ASSERT_EQ(c.shaping.size(), 2u);
    EXPECT_EQ(c.shaping[0].domain, "gmail.com");
    EXPECT_EQ(c.shaping[0].limits.max_connections, 2u);
    EXPECT_EQ(c.shaping[0].limits.message_rate, c.delivery.limits.message_rate);  // inherited
    EXPECT_EQ(c.shaping[1].mx, "*.google.com");
    EXPECT_EQ(c.shaping[1].limits.message_rate, (rate_limit{10, 60'000ms}));
    EXPECT_EQ(c.shaping[1].limits.max_connections, 4u);

    EXPECT_CONFIG_ERROR(with_listener("[delivery]\nmessage_rate = \"100/week\"\n"),
                        "test.toml:5:16: key 'delivery.message_rate': expected a rate such as");
    EXPECT_CONFIG_ERROR(with_listener("[delivery]\nsmtp_port = 0\n"), "key 'delivery.smtp_port': must be between 1");
    EXPECT_CONFIG_ERROR(with_listener("[dns]\nservers = [\"dns.example:53\"]\n"), "key 'dns.servers[0]'");
    EXPECT_CONFIG_ERROR(with_listener("[dns]\nmax_queries_in_flight = 1\n"), "key 'dns.max_queries_in_flight'");
    EXPECT_CONFIG_ERROR(with_listener("[[shaping]]\nmax_connections = 2\n"), "set exactly one of `domain`");
    EXPECT_CONFIG_ERROR(with_listener("[[shaping]]\nmx = \"bad host\"\n"), "key 'shaping[0].mx'");
    EXPECT_CONFIG_ERROR(with_listener("[[shaping]]\ndomain = \"a.test\"\nmax_conections = 2\n"),
                        "key 'shaping[0].max_conections': unknown key");
    config e = load_config_string(with_listener(R"(
[[egress]]
source = "127.0.0.5"
ehlo = "out5.example.test"
senders = ["Bulk.Example"]

[[egress]]
source = "::1"
)"),
                                  "test.toml");
    ASSERT_EQ(e.egress.size(), 2u);
    EXPECT_EQ(e.egress[0].source.host_string(), "127.0.0.5");
    EXPECT_EQ(e.egress[0].ehlo, "out5.example.test");
    EXPECT_EQ(e.egress[0].senders, (std::vector<std::string>{"bulk.example"}));
    EXPECT_EQ(e.egress[1].source.host_string(), "::1");
    EXPECT_TRUE(e.egress[1].senders.empty());
    EXPECT_CONFIG_ERROR(with_listener("[[egress]]\nsource = \"mail.example\"\n"),
                        "key 'egress[0].source': \"mail.example\" is not an IPv4 or IPv6 address");
    // An address of another host: every connection from it would fail.
    EXPECT_CONFIG_ERROR(with_listener("[[egress]]\nsource = \"192.0.2.10\"\n"),
                        "key 'egress[0].source': \"192.0.2.10\" is not an address of this host");
    EXPECT_CONFIG_ERROR(with_listener("[[egress]]\nehlo = \"x.test\"\n"), "key 'egress[0].source': missing");

    EXPECT_EQ(parse_rate(""), rate_limit{});
    EXPECT_FALSE(parse_rate("5"));
    EXPECT_FALSE(parse_rate("/s"));
    EXPECT_FALSE(parse_rate("-1/s"));
}

}  // namespace
}  // namespace ringmail
