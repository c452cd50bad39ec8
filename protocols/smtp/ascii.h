// ascii: case-insensitive helpers for SMTP keywords (RFC 5321 §2.4: verbs and
// extension keywords are case-insensitive, ASCII only). Pure, no allocation.
#pragma once

#include <cstddef>
#include <string_view>

namespace ringmail::smtp {

constexpr char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

// s equals `upper` (given in upper case) ignoring the case of s.
constexpr bool iequals_upper(std::string_view s, std::string_view upper) {
    if (s.size() != upper.size()) return false;
    for (std::size_t i = 0; i < s.size(); ++i)
        if (ascii_upper(s[i]) != upper[i]) return false;
    return true;
}

// a equals b ignoring ASCII case on both sides (host names, RFC 5321 §2.4).
constexpr bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (ascii_upper(a[i]) != ascii_upper(b[i])) return false;
    return true;
}

// An octet >= 0x80 anywhere in s (8BITMIME content, UTF-8).
constexpr bool has_8bit_octets(std::string_view s) {
    for (unsigned char c : s)
        if (c >= 0x80) return true;
    return false;
}

}  // namespace ringmail::smtp
