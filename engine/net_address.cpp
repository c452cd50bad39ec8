// net_address: see net_address.h for the contract.
#include "engine/net_address.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace ringmail::net {

std::string_view describe(address_parse_error e)
{
    switch (e) {
    case address_parse_error::empty: return "empty address";
    case address_parse_error::missing_port: return "missing ':port'";
    case address_parse_error::bad_host:
        return "host must be a numeric IPv4 address or a bracketed numeric IPv6 address "
               "(DNS names are not allowed)";
    case address_parse_error::missing_bracket: return "IPv6 address must be written as '[addr]:port'";
    case address_parse_error::bad_port: return "port must be a decimal number between 0 and 65535";
    case address_parse_error::bad_prefix: return "prefix length must be a decimal number within the address size";
    case address_parse_error::host_bits_set: return "address has bits set beyond the prefix length";
    }
    return "invalid address";
}

namespace {

constexpr uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// Numeric hosts only: inet_pton never resolves names. A copy is needed
// because inet_pton wants a NUL-terminated string.
bool parse_ip(std::string_view text, int family, void* out)
{
    char buf[INET6_ADDRSTRLEN + 1];
    if (text.empty() || text.size() >= sizeof(buf)) return false;
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';
    return inet_pton(family, buf, out) == 1;
}

bool parse_decimal(std::string_view text, unsigned max, unsigned& out)
{
    // from_chars alone would accept leading '+'? no, but it accepts long runs
    // of zeros; cap the length so "000...025" cannot hide a typo.
    if (text.empty() || text.size() > 5) return false;
    if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || ptr != text.data() + text.size() || value > max) return false;
    out = value;
    return true;
}

}  // namespace

socket_address socket_address::from_sockaddr(const sockaddr* sa, socklen_t length)
{
    socket_address a;
    length = std::min<socklen_t>(length, sizeof(a._storage));
    std::memcpy(&a._storage, sa, length);
    a._length = length;
    return a;
}

uint16_t socket_address::port() const
{
    switch (family()) {
    case AF_INET: return ntohs(reinterpret_cast<const sockaddr_in*>(&_storage)->sin_port);
    case AF_INET6: return ntohs(reinterpret_cast<const sockaddr_in6*>(&_storage)->sin6_port);
    default: return 0;
    }
}

void socket_address::set_port(uint16_t port)
{
    switch (family()) {
    case AF_INET: reinterpret_cast<sockaddr_in*>(&_storage)->sin_port = htons(port); break;
    case AF_INET6: reinterpret_cast<sockaddr_in6*>(&_storage)->sin6_port = htons(port); break;
    default: break;
    }
}

bool socket_address::is_v4_mapped() const
{
    if (family() != AF_INET6) return false;
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&_storage);
    return std::memcmp(in6->sin6_addr.s6_addr, v4_mapped_prefix, 12) == 0;
}

std::string socket_address::host_string() const
{
    char buf[INET6_ADDRSTRLEN];
    const void* src = nullptr;
    if (family() == AF_INET)
        src = &reinterpret_cast<const sockaddr_in*>(&_storage)->sin_addr;
    else if (family() == AF_INET6)
        src = &reinterpret_cast<const sockaddr_in6*>(&_storage)->sin6_addr;
    else
        return {};
    if (inet_ntop(family(), src, buf, sizeof(buf)) == nullptr) return {};
    return buf;
}

std::string socket_address::to_string() const
{
    if (family() == AF_INET) return host_string() + ':' + std::to_string(port());
    if (family() == AF_INET6) return '[' + host_string() + "]:" + std::to_string(port());
    return {};
}

bool operator==(const socket_address& a, const socket_address& b)
{
    if (a.family() != b.family()) return false;
    if (a.family() == AF_INET) {
        const auto* x = reinterpret_cast<const sockaddr_in*>(&a._storage);
        const auto* y = reinterpret_cast<const sockaddr_in*>(&b._storage);
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a.family() == AF_INET6) {
        const auto* x = reinterpret_cast<const sockaddr_in6*>(&a._storage);
        const auto* y = reinterpret_cast<const sockaddr_in6*>(&b._storage);
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               std::memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(in6_addr)) == 0;
    }
    return a.family() == AF_UNSPEC;
}

result<socket_address, address_parse_error> parse_socket_address(std::string_view text)
{
    using E = address_parse_error;
    if (text.empty()) return unexpected{E::empty};

    std::string_view host;
    std::string_view port_text;
    bool v6 = false;
    if (text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos) return unexpected{E::missing_bracket};
        host = text.substr(1, close - 1);
        auto rest = text.substr(close + 1);
        if (rest.empty() || rest.front() != ':') return unexpected{E::missing_port};
        port_text = rest.substr(1);
        v6 = true;
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return unexpected{E::missing_port};
        host = text.substr(0, colon);
        // More than one ':' means unbracketed IPv6 ("::1:25" is ambiguous).
        if (host.find(':') != std::string_view::npos) return unexpected{E::missing_bracket};
        port_text = text.substr(colon + 1);
    }

    unsigned port = 0;
    socket_address a;
    if (v6) {
        sockaddr_in6 in6{};
        in6.sin6_family = AF_INET6;
        if (!parse_ip(host, AF_INET6, &in6.sin6_addr)) return unexpected{E::bad_host};
        if (!parse_decimal(port_text, 65535, port)) return unexpected{E::bad_port};
        in6.sin6_port = htons(static_cast<uint16_t>(port));
        a = socket_address::from_sockaddr(reinterpret_cast<const sockaddr*>(&in6), sizeof(in6));
    } else {
        sockaddr_in in4{};
        in4.sin_family = AF_INET;
        if (!parse_ip(host, AF_INET, &in4.sin_addr)) return unexpected{E::bad_host};
        if (!parse_decimal(port_text, 65535, port)) return unexpected{E::bad_port};
        in4.sin_port = htons(static_cast<uint16_t>(port));
        a = socket_address::from_sockaddr(reinterpret_cast<const sockaddr*>(&in4), sizeof(in4));
    }
    return a;
}

result<cidr, address_parse_error> parse_cidr(std::string_view text)
{
    using E = address_parse_error;
    if (text.empty()) return unexpected{E::empty};

    std::string_view host = text;
    std::string_view prefix_text;
    bool has_prefix = false;
    if (auto slash = text.find('/'); slash != std::string_view::npos) {
        host = text.substr(0, slash);
        prefix_text = text.substr(slash + 1);
        has_prefix = true;
    }
    if (host.empty()) return unexpected{E::bad_host};

    cidr c;
    unsigned bits = 0;
    if (host.find(':') != std::string_view::npos) {
        if (!parse_ip(host, AF_INET6, c._bytes.data())) return unexpected{E::bad_host};
        c._family = AF_INET6;
        bits = 128;
    } else {
        if (!parse_ip(host, AF_INET, c._bytes.data())) return unexpected{E::bad_host};
        c._family = AF_INET;
        bits = 32;
    }
    unsigned prefix = bits;
    if (has_prefix && !parse_decimal(prefix_text, bits, prefix)) return unexpected{E::bad_prefix};
    c._prefix_length = prefix;

    // Reject "10.1.2.3/8": almost always a typo for a host or a network, as
    // Postfix's cidr tables do; silently masking would hide the mistake.
    for (unsigned i = 0; i < bits / 8; ++i) {
        unsigned first_bit = i * 8;
        uint8_t mask = 0;
        if (first_bit + 8 <= prefix) mask = 0xff;
        else if (first_bit < prefix) mask = static_cast<uint8_t>(0xff << (8 - (prefix - first_bit)));
        if ((c._bytes[i] & ~mask & 0xff) != 0) return unexpected{E::host_bits_set};
    }
    return c;
}

bool cidr::contains(const socket_address& address) const
{
    const uint8_t* candidate = nullptr;
    uint8_t mapped[16];
    if (_family == AF_INET) {
        if (address.family() == AF_INET) {
            candidate = reinterpret_cast<const uint8_t*>(
                &reinterpret_cast<const sockaddr_in*>(address.sockaddr_ptr())->sin_addr);
        } else if (address.is_v4_mapped()) {
            candidate = reinterpret_cast<const sockaddr_in6*>(address.sockaddr_ptr())->sin6_addr.s6_addr + 12;
        } else {
            return false;
        }
    } else if (_family == AF_INET6) {
        if (address.family() == AF_INET6) {
            candidate = reinterpret_cast<const sockaddr_in6*>(address.sockaddr_ptr())->sin6_addr.s6_addr;
        } else if (address.family() == AF_INET) {
            // An IPv4 client seen as ::ffff:a.b.c.d for IPv6 networks.
            std::memcpy(mapped, v4_mapped_prefix, 12);
            std::memcpy(mapped + 12, &reinterpret_cast<const sockaddr_in*>(address.sockaddr_ptr())->sin_addr, 4);
            candidate = mapped;
        } else {
            return false;
        }
    } else {
        return false;
    }

    unsigned full = _prefix_length / 8;
    if (std::memcmp(candidate, _bytes.data(), full) != 0) return false;
    unsigned rest = _prefix_length % 8;
    if (rest == 0) return true;
    auto mask = static_cast<uint8_t>(0xff << (8 - rest));
    return (candidate[full] & mask) == (_bytes[full] & mask);
}

std::string cidr::to_string() const
{
    if (_family == AF_UNSPEC) return {};
    char buf[INET6_ADDRSTRLEN];
    if (inet_ntop(_family, _bytes.data(), buf, sizeof(buf)) == nullptr) return {};
    return std::string(buf) + '/' + std::to_string(_prefix_length);
}

}  // namespace ringmail::net
