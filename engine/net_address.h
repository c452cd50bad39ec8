// net_address: numeric socket addresses and CIDR networks.
//
// Contract:
//  - Parsing never touches DNS: hosts are numeric IPv4 ("192.0.2.1") or
//    bracketed numeric IPv6 ("[2001:db8::1]"), nothing else. Names such as
//    "localhost" are rejected, so start-up and hot paths never block.
//  - parse_socket_address() accepts port 0 (tests bind port 0 to get a free
//    port); callers that need a real peer port (e.g. a smarthost) check it.
//  - socket_address is a plain value (sockaddr_storage + length): copyable,
//    no allocation, safe to hand to io_uring accept/connect as long as the
//    object outlives the SQE.
//  - cidr::contains() matches IPv4-mapped IPv6 clients (::ffff:a.b.c.d), as
//    seen on dual-stack sockets, against IPv4 networks, and IPv4 clients
//    against ::ffff:0:0/96-style IPv6 networks.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/result.h"

namespace ringmail::net {

enum class address_parse_error {
    empty,              // empty input
    missing_port,       // no ":port" after the host
    bad_host,           // host is not a numeric IPv4 / bracketed IPv6 address
    missing_bracket,    // "[::1" or "::1:25" (IPv6 needs brackets with a port)
    bad_port,           // port not a decimal number in 0..65535
    bad_prefix,         // CIDR prefix length missing, non-numeric or too long
    host_bits_set,      // CIDR address has bits set beyond the prefix
};

// One-line English description, e.g. for configuration errors.
std::string_view describe(address_parse_error e);

struct socket_address {
public:
    socket_address() = default;  // family() == AF_UNSPEC

    // Copies a kernel-provided address (accept, getsockname). Lengths larger
    // than sockaddr_storage are clamped.
    static socket_address from_sockaddr(const sockaddr* sa, socklen_t length);

    const sockaddr* sockaddr_ptr() const { return reinterpret_cast<const sockaddr*>(&_storage); }
    sockaddr* sockaddr_ptr() { return reinterpret_cast<sockaddr*>(&_storage); }
    socklen_t length() const { return _length; }
    // For accept()/getsockname(): set_length(capacity()), pass
    // sockaddr_ptr() and length_ptr(); the kernel writes both.
    socklen_t* length_ptr() { return &_length; }
    static constexpr socklen_t capacity() { return sizeof(sockaddr_storage); }
    void set_length(socklen_t length) { _length = length; }

    int family() const { return _storage.ss_family; }  // AF_INET, AF_INET6, AF_UNSPEC
    uint16_t port() const;                               // host byte order
    void set_port(uint16_t port);
    bool is_v4_mapped() const;                           // ::ffff:a.b.c.d

    // "127.0.0.1:2525", "[::1]:25"; "" for AF_UNSPEC.
    std::string to_string() const;
    // Address without the port: "127.0.0.1", "::1" (for logs, policies).
    std::string host_string() const;

    // Equal when family, address bytes and port are equal.
    friend bool operator==(const socket_address& a, const socket_address& b);

private:
    sockaddr_storage _storage{};
    socklen_t _length = 0;
};

// "host:port": numeric IPv4 "a.b.c.d:port" or "[ipv6]:port", port 0..65535.
result<socket_address, address_parse_error> parse_socket_address(std::string_view text);

// An IP network: "127.0.0.0/8", "::1/128", or a bare address "10.1.2.3"
// (a host route, /32 or /128). IPv6 is written without brackets here.
struct cidr {
public:
    int family() const { return _family; }
    unsigned prefix_length() const { return _prefix_length; }
    bool contains(const socket_address& address) const;
    std::string to_string() const;  // "127.0.0.0/8", "::1/128"

    friend bool operator==(const cidr& a, const cidr& b) = default;

private:
    friend result<cidr, address_parse_error> parse_cidr(std::string_view text);

    std::array<uint8_t, 16> _bytes{};  // IPv4 uses the first 4 bytes
    int _family = AF_UNSPEC;
    unsigned _prefix_length = 0;
};

result<cidr, address_parse_error> parse_cidr(std::string_view text);

}  // namespace ringmail::net
