// Tests for engine/net_address: parse tables, formatting, CIDR matching.
#include "engine/net_address.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

namespace ringmail::net {
namespace {

struct address_case {
    const char* input;
    bool ok;
    const char* formatted;  // to_string() when ok
    address_parse_error error;  // when !ok
};

const address_case address_cases[] = {
    {"127.0.0.1:2525", true, "127.0.0.1:2525", {}},
    {"0.0.0.0:25", true, "0.0.0.0:25", {}},
    {"127.0.0.1:0", true, "127.0.0.1:0", {}},  // tests bind port 0
    {"255.255.255.255:65535", true, "255.255.255.255:65535", {}},
    {"[::1]:25", true, "[::1]:25", {}},
    {"[::]:587", true, "[::]:587", {}},
    {"[2001:db8::1]:2525", true, "[2001:db8::1]:2525", {}},
    {"[::ffff:127.0.0.1]:25", true, "[::ffff:127.0.0.1]:25", {}},
    {"", false, "", address_parse_error::empty},
    {"localhost:25", false, "", address_parse_error::bad_host},  // no DNS, ever
    {"mx.example.org:25", false, "", address_parse_error::bad_host},
    {"1.2.3.4:99999", false, "", address_parse_error::bad_port},
    {"1.2.3.4:65536", false, "", address_parse_error::bad_port},
    {"1.2.3.4:-1", false, "", address_parse_error::bad_port},
    {"1.2.3.4:+25", false, "", address_parse_error::bad_port},
    {"1.2.3.4:", false, "", address_parse_error::bad_port},
    {"1.2.3.4:25x", false, "", address_parse_error::bad_port},
    {"1.2.3.4", false, "", address_parse_error::missing_port},
    {"300.1.1.1:25", false, "", address_parse_error::bad_host},
    {"1.2.3:25", false, "", address_parse_error::bad_host},
    {" 1.2.3.4:25", false, "", address_parse_error::bad_host},
    {":25", false, "", address_parse_error::bad_host},
    {"[::1", false, "", address_parse_error::missing_bracket},
    {"[::1]", false, "", address_parse_error::missing_port},
    {"[::1]25", false, "", address_parse_error::missing_port},
    {"::1:25", false, "", address_parse_error::missing_bracket},
    {"[1.2.3.4]:25", false, "", address_parse_error::bad_host},
    {"[fe80::1%eth0]:25", false, "", address_parse_error::bad_host},
    {"[]:25", false, "", address_parse_error::bad_host},
};

TEST(socket_address, parse_table)
{
    for (const auto& c : address_cases) {
        SCOPED_TRACE(c.input);
        auto r = parse_socket_address(c.input);
        ASSERT_EQ(r.ok(), c.ok);
        if (c.ok) EXPECT_EQ(r->to_string(), c.formatted);
        else EXPECT_EQ(r.error(), c.error);
    }
}

TEST(socket_address, accessors)
{
    auto v4 = parse_socket_address("192.0.2.7:2525");
    ASSERT_TRUE(v4.ok());
    EXPECT_EQ(v4->family(), AF_INET);
    EXPECT_EQ(v4->port(), 2525);
    EXPECT_EQ(v4->length(), sizeof(sockaddr_in));
    EXPECT_EQ(v4->host_string(), "192.0.2.7");
    const auto* in = reinterpret_cast<const sockaddr_in*>(v4->sockaddr_ptr());
    EXPECT_EQ(ntohs(in->sin_port), 2525);

    auto v6 = parse_socket_address("[2001:db8::5]:25");
    ASSERT_TRUE(v6.ok());
    EXPECT_EQ(v6->family(), AF_INET6);
    EXPECT_EQ(v6->port(), 25);
    EXPECT_EQ(v6->length(), sizeof(sockaddr_in6));
    EXPECT_EQ(v6->host_string(), "2001:db8::5");
    EXPECT_FALSE(v6->is_v4_mapped());

    auto copy = socket_address::from_sockaddr(v6->sockaddr_ptr(), v6->length());
    EXPECT_EQ(copy, *v6);
    copy.set_port(26);
    EXPECT_EQ(copy.port(), 26);
    EXPECT_FALSE(copy == *v6);

    socket_address none;
    EXPECT_EQ(none.family(), AF_UNSPEC);
    EXPECT_EQ(none.to_string(), "");
    EXPECT_EQ(none.port(), 0);
}

struct cidr_case {
    const char* input;
    bool ok;
    const char* formatted;
    address_parse_error error;
};

const cidr_case cidr_cases[] = {
    {"127.0.0.0/8", true, "127.0.0.0/8", {}},
    {"10.1.2.3", true, "10.1.2.3/32", {}},
    {"0.0.0.0/0", true, "0.0.0.0/0", {}},
    {"192.168.1.128/25", true, "192.168.1.128/25", {}},
    {"::1/128", true, "::1/128", {}},
    {"::1", true, "::1/128", {}},
    {"2001:db8::/32", true, "2001:db8::/32", {}},
    {"::/0", true, "::/0", {}},
    {"::ffff:0:0/96", true, "::ffff:0.0.0.0/96", {}},
    {"", false, "", address_parse_error::empty},
    {"300.1.1.1/8", false, "", address_parse_error::bad_host},
    {"/33", false, "", address_parse_error::bad_host},
    {"10.0.0.0/33", false, "", address_parse_error::bad_prefix},
    {"::/129", false, "", address_parse_error::bad_prefix},
    {"10.0.0.0/", false, "", address_parse_error::bad_prefix},
    {"10.0.0.0/x", false, "", address_parse_error::bad_prefix},
    {"10.0.0.0/-1", false, "", address_parse_error::bad_prefix},
    {"10.1.2.3/8", false, "", address_parse_error::host_bits_set},
    {"192.168.1.129/25", false, "", address_parse_error::host_bits_set},
    {"2001:db8::1/32", false, "", address_parse_error::host_bits_set},
    {"localhost", false, "", address_parse_error::bad_host},
    {"[::1]/128", false, "", address_parse_error::bad_host},
};

TEST(cidr, parse_table)
{
    for (const auto& c : cidr_cases) {
        SCOPED_TRACE(c.input);
        auto r = parse_cidr(c.input);
        ASSERT_EQ(r.ok(), c.ok);
        if (c.ok) EXPECT_EQ(r->to_string(), c.formatted);
        else EXPECT_EQ(r.error(), c.error);
    }
}

bool contains(const char* network, const char* address)
{
    auto n = parse_cidr(network);
    auto a = parse_socket_address(address);
    EXPECT_TRUE(n.ok()) << network;
    EXPECT_TRUE(a.ok()) << address;
    return n.ok() && a.ok() && n->contains(*a);
}

TEST(cidr, contains_v4)
{
    EXPECT_TRUE(contains("127.0.0.0/8", "127.0.0.1:25"));
    EXPECT_TRUE(contains("127.0.0.0/8", "127.255.255.255:25"));
    EXPECT_FALSE(contains("127.0.0.0/8", "128.0.0.1:25"));
    EXPECT_TRUE(contains("192.168.1.128/25", "192.168.1.200:1"));
    EXPECT_FALSE(contains("192.168.1.128/25", "192.168.1.127:1"));
    EXPECT_TRUE(contains("10.1.2.3", "10.1.2.3:1"));
    EXPECT_FALSE(contains("10.1.2.3", "10.1.2.4:1"));
    EXPECT_TRUE(contains("0.0.0.0/0", "203.0.113.9:1"));
    EXPECT_FALSE(contains("0.0.0.0/0", "[2001:db8::1]:1"));  // v4 network, real v6 client
}

TEST(cidr, contains_v6)
{
    EXPECT_TRUE(contains("::1/128", "[::1]:25"));
    EXPECT_FALSE(contains("::1/128", "[::2]:25"));
    EXPECT_TRUE(contains("2001:db8::/32", "[2001:db8:ffff::1]:25"));
    EXPECT_FALSE(contains("2001:db8::/32", "[2001:db9::1]:25"));
    EXPECT_TRUE(contains("2001:db8:8000::/33", "[2001:db8:8001::1]:25"));
    EXPECT_FALSE(contains("2001:db8:8000::/33", "[2001:db8:7fff::1]:25"));
    EXPECT_FALSE(contains("::1/128", "127.0.0.1:25"));
}

TEST(cidr, contains_v4_mapped)
{
    // Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d.
    EXPECT_TRUE(contains("127.0.0.0/8", "[::ffff:127.0.0.1]:25"));
    EXPECT_FALSE(contains("127.0.0.0/8", "[::ffff:10.0.0.1]:25"));
    EXPECT_TRUE(contains("10.1.2.3", "[::ffff:10.1.2.3]:25"));
    // ... and an IPv6 network of mapped addresses matches plain IPv4 clients.
    EXPECT_TRUE(contains("::ffff:0:0/96", "192.0.2.1:25"));
    EXPECT_TRUE(contains("::ffff:0:0/96", "[::ffff:192.0.2.1]:25"));
    EXPECT_FALSE(contains("::ffff:0:0/96", "[2001:db8::1]:25"));
    // Not mapped: ::127.0.0.1 (deprecated IPv4-compatible) is a v6 address.
    EXPECT_FALSE(contains("127.0.0.0/8", "[::127.0.0.1]:25"));
}

}  // namespace
}  // namespace ringmail::net
