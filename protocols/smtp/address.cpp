// address: see address.h for the contract.
#include "protocols/smtp/address.h"
#include "protocols/smtp/ascii.h"

#include <arpa/inet.h>

#include <array>
#include <cstring>

namespace ringmail::smtp {

namespace {

using err = address_error;

constexpr bool is_alpha(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
constexpr bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
constexpr bool is_upper_hex(unsigned char c) { return is_digit(c) || (c >= 'A' && c <= 'F'); }
// The byte of an xtext "+XX" whose X are checked upper-case hex digits.
constexpr int xtext_byte(char hi, char lo) {
    auto hex = [](char c) { return c <= '9' ? c - '0' : c - 'A' + 10; };
    return hex(hi) * 16 + hex(lo);
}
constexpr bool is_8bit(unsigned char c) { return c >= 0x80; }


bool istarts_with_upper(std::string_view s, std::string_view upper) {
    return s.size() >= upper.size() && iequals_upper(s.substr(0, upper.size()), upper);
}

// atext, RFC 5322 §3.2.3 (referenced by RFC 5321 §4.1.2), extended with
// UTF8-non-ascii by RFC 6531 §3.3.
constexpr bool is_atext(unsigned char c) {
    if (is_alpha(c) || is_digit(c) || is_8bit(c)) return true;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*':
    case '+': case '-': case '/': case '=': case '?': case '^': case '_':
    case '`': case '{': case '|': case '}': case '~':
        return true;
    default:
        return false;
    }
}

// qtextSMTP, RFC 5321 §4.1.2 (+ UTF8-non-ascii, RFC 6531 §3.3).
constexpr bool is_qtext_smtp(unsigned char c) {
    return (c >= 32 && c <= 33) || (c >= 35 && c <= 91) || (c >= 93 && c <= 126) || is_8bit(c);
}

// Well-formed UTF-8 (RFC 3629 §4): no overlongs, no surrogates, <= U+10FFFF.
bool utf8_valid(std::string_view s) {
    std::size_t i = 0;
    const std::size_t n = s.size();
    while (i < n) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) { ++i; continue; }
        std::size_t len;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) len = 2;
        else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else return false;
        if (n - i < len) return false;
        unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
        if (c1 < lo || c1 > hi) return false;
        for (std::size_t k = 2; k < len; ++k) {
            unsigned char ck = static_cast<unsigned char>(s[i + k]);
            if (ck < 0x80 || ck > 0xbf) return false;
        }
        i += len;
    }
    return true;
}

// Domain, RFC 5321 §4.1.2: sub-domain *("." sub-domain);
// sub-domain = Let-dig [Ldh-str]. U-labels (RFC 6531 §3.3) count 8-bit
// bytes as letters. Labels <= 63 octets, RFC 1035 §2.3.4.
bool domain_valid(std::string_view d) {
    if (d.empty()) return false;
    std::size_t label_len = 0;
    unsigned char prev = '.';
    for (char ch : d) {
        unsigned char c = static_cast<unsigned char>(ch);
        if (c == '.') {
            if (label_len == 0 || prev == '-') return false;
            label_len = 0;
        } else if (is_alpha(c) || is_digit(c) || is_8bit(c)) {
            if (++label_len > 63) return false;
        } else if (c == '-') {
            if (label_len == 0) return false;  // must start with Let-dig
            if (++label_len > 63) return false;
        } else {
            return false;
        }
        prev = c;
    }
    return label_len != 0 && prev != '-';
}

// IPv4-address-literal, RFC 5321 §4.1.3: Snum 3("." Snum), Snum 0..255.
bool ipv4_valid(std::string_view s) {
    int parts = 0;
    std::size_t i = 0;
    while (true) {
        std::size_t start = i;
        unsigned v = 0;
        while (i < s.size() && is_digit(static_cast<unsigned char>(s[i])) && i - start < 3) {
            v = v * 10 + static_cast<unsigned>(s[i] - '0');
            ++i;
        }
        if (i == start || v > 255) return false;
        ++parts;
        if (i == s.size()) break;
        if (s[i] != '.' || parts == 4) return false;
        ++i;
    }
    return parts == 4;
}

// address-literal, RFC 5321 §4.1.3. The General-address-literal form needs
// an IANA-registered tag; none exist, so it is rejected.
bool address_literal_valid(std::string_view lit) {
    if (lit.size() < 3 || lit.front() != '[' || lit.back() != ']') return false;
    std::string_view inner = lit.substr(1, lit.size() - 2);
    if (istarts_with_upper(inner, "IPV6:")) {
        std::string_view a = inner.substr(5);
        // INET6_ADDRSTRLEN is 46 incl. NUL; copy to a stack buffer for inet_pton.
        std::array<char, 64> buf{};
        if (a.empty() || a.size() >= buf.size()) return false;
        for (char c : a)
            if (!(is_digit(static_cast<unsigned char>(c)) || c == ':' || c == '.' ||
                  ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')))
                return false;
        std::memcpy(buf.data(), a.data(), a.size());
        unsigned char out[16];
        return inet_pton(AF_INET6, buf.data(), out) == 1;
    }
    return ipv4_valid(inner);
}

// Parses "@d1,@d2:" at the start of s. Returns bytes used, or 0 on error.
std::size_t parse_source_route(std::string_view s) {
    std::size_t i = 0;
    while (true) {
        if (i >= s.size() || s[i] != '@') return 0;
        ++i;
        std::size_t start = i;
        while (i < s.size() && s[i] != ',' && s[i] != ':') ++i;
        if (i >= s.size() || !domain_valid(s.substr(start, i - start))) return 0;
        if (s[i] == ':') return i + 1;
        ++i;  // ','
    }
}

// Finds the '>' closing a path that starts with '<' at s[0], skipping
// quoted strings. Returns npos if none; sets open_quote when a quote is
// left unterminated.
std::size_t find_path_end(std::string_view s, bool& open_quote) {
    bool in_quote = false;
    for (std::size_t i = 1; i < s.size(); ++i) {
        char c = s[i];
        if (in_quote) {
            if (c == '\\') ++i;
            else if (c == '"') in_quote = false;
        } else if (c == '"') {
            in_quote = true;
        } else if (c == '>') {
            return i;
        }
    }
    open_quote = in_quote;
    return std::string_view::npos;
}

bool has_control(std::string_view s) {
    for (char ch : s) {
        unsigned char c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c == 0x7f) return true;
    }
    return false;
}

// Shared front half of MAIL/RCPT: "PREFIX:" [SP] path, then the params text.
struct split_argument {
    std::string_view path;
    std::string_view params;  // without leading SP; may be empty
};

result<split_argument, err> split(std::string_view arg, std::string_view prefix_upper) {
    // RFC 5321 §4.1.1.2/3: no control characters may appear; rejecting them
    // here also blocks CR/LF/NUL in parameters.
    if (has_control(arg)) return unexpected{err::control_char};
    if (!istarts_with_upper(arg, prefix_upper)) return unexpected{err::missing_prefix};
    std::string_view rest = arg.substr(prefix_upper.size());
    if (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);  // tolerated
    if (rest.empty() || rest.front() != '<') return unexpected{err::missing_angle};
    bool open_quote = false;
    std::size_t end = find_path_end(rest, open_quote);
    if (end == std::string_view::npos)
        return unexpected{open_quote ? err::unbalanced_quote : err::missing_angle};
    split_argument out;
    out.path = rest.substr(0, end + 1);
    std::string_view tail = rest.substr(end + 1);
    if (!tail.empty()) {
        if (tail.front() != ' ') return unexpected{err::trailing_garbage};
        while (!tail.empty() && tail.front() == ' ') tail.remove_prefix(1);
    }
    out.params = tail;
    return out;
}

// esmtp-keyword, RFC 5321 §4.1.2: (ALPHA / DIGIT) *(ALPHA / DIGIT / "-").
bool keyword_valid(std::string_view k) {
    if (k.empty()) return false;
    unsigned char c0 = static_cast<unsigned char>(k[0]);
    if (!is_alpha(c0) && !is_digit(c0)) return false;
    for (char ch : k) {
        unsigned char c = static_cast<unsigned char>(ch);
        if (!is_alpha(c) && !is_digit(c) && c != '-') return false;
    }
    return true;
}

// esmtp-value, RFC 5321 §4.1.2: 1*(%d33-60 / %d62-126), plus
// UTF8-non-ascii (RFC 6531 §3.3).
bool value_valid(std::string_view v) {
    if (v.empty()) return false;
    for (char ch : v) {
        unsigned char c = static_cast<unsigned char>(ch);
        if (!((c >= 33 && c <= 60) || (c >= 62 && c <= 126) || is_8bit(c))) return false;
    }
    return utf8_valid(v);
}

struct param {
    std::string_view keyword;
    std::string_view value;
    bool has_value = false;
};

// Iterates SP-separated params. Returns false at the end.
bool next_param(std::string_view& rest, param& p, err& e) {
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (rest.empty()) return false;
    std::size_t sp = rest.find(' ');
    std::string_view tok = rest.substr(0, sp);
    rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp);
    std::size_t eq = tok.find('=');
    p.keyword = tok.substr(0, eq);
    p.has_value = eq != std::string_view::npos;
    p.value = p.has_value ? tok.substr(eq + 1) : std::string_view{};
    if (!keyword_valid(p.keyword) || (p.has_value && !value_valid(p.value))) {
        e = err::bad_param_syntax;
        return false;
    }
    return true;
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
    // RFC 1870: size-value ::= 1*20DIGIT; reject what does not fit in 64 bits.
    if (s.empty() || s.size() > 20) return false;
    std::uint64_t v = 0;
    for (char c : s) {
        if (!is_digit(static_cast<unsigned char>(c))) return false;
        std::uint64_t d = static_cast<std::uint64_t>(c - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    out = v;
    return true;
}

// RFC 3461 §4.1: "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ).
bool parse_notify(std::string_view v, std::uint8_t& out) {
    if (iequals_upper(v, "NEVER")) {
        out = notify_never;
        return true;
    }
    std::uint8_t bits = 0;
    while (true) {
        std::size_t comma = v.find(',');
        std::string_view item = v.substr(0, comma);
        std::uint8_t bit;
        if (iequals_upper(item, "SUCCESS")) bit = notify_success;
        else if (iequals_upper(item, "FAILURE")) bit = notify_failure;
        else if (iequals_upper(item, "DELAY")) bit = notify_delay;
        else return false;  // includes empty items and NEVER in a list
        if (bits & bit) return false;
        bits |= bit;
        if (comma == std::string_view::npos) break;
        v.remove_prefix(comma + 1);
    }
    out = bits;
    return true;
}

}  // namespace

bool xtext_valid(std::string_view x) {
    for (std::size_t i = 0; i < x.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(x[i]);
        if (c == '+') {
            if (x.size() - i < 3 || !is_upper_hex(static_cast<unsigned char>(x[i + 1])) ||
                !is_upper_hex(static_cast<unsigned char>(x[i + 2])))
                return false;
            i += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return false;
        }
    }
    return true;
}

bool xtext_printable(std::string_view x) {
    if (!xtext_valid(x)) return false;
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (x[i] != '+') continue;
        int c = xtext_byte(x[i + 1], x[i + 2]);
        if (c < 0x20 || c > 0x7e) return false;
        i += 2;
    }
    return true;
}

std::optional<std::size_t> xtext_decode(std::string_view x, char* out, std::size_t cap) {
    if (!xtext_valid(x)) return std::nullopt;
    std::size_t n = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (n == cap) return std::nullopt;
        if (x[i] == '+') {
            out[n++] = static_cast<char>(xtext_byte(x[i + 1], x[i + 2]));
            i += 2;
        } else {
            out[n++] = x[i];
        }
    }
    return n;
}

result<mailbox_path, address_error> parse_path(std::string_view path, bool allow_null,
                                               bool allow_postmaster,
                                               const address_limits& limits) {
    if (path.size() < 2 || path.front() != '<' || path.back() != '>')
        return unexpected{err::missing_angle};
    if (has_control(path)) return unexpected{err::control_char};
    // RFC 5321 §4.5.3.1.3: path incl. punctuation and route.
    if (path.size() > limits.max_path_bytes) return unexpected{err::path_too_long};

    mailbox_path r;
    std::string_view inner = path.substr(1, path.size() - 2);
    if (inner.empty()) {
        // RFC 5321 §4.1.1.2: "<>" is the null reverse-path (MAIL only).
        if (!allow_null) return unexpected{err::null_path_not_allowed};
        r.is_null = true;
        return r;
    }
    for (char c : inner) {
        if (is_8bit(static_cast<unsigned char>(c))) {
            r.has_utf8 = true;
            break;
        }
    }
    if (r.has_utf8 && !utf8_valid(inner)) return unexpected{err::bad_utf8};

    if (inner.front() == '@') {
        // "<@d>" has no route separator: it is a missing local part.
        if (inner.find(':') == std::string_view::npos) return unexpected{err::empty_local_part};
        std::size_t used = parse_source_route(inner);
        if (used == 0) return unexpected{err::bad_source_route};
        inner.remove_prefix(used);  // RFC 5321 §4.1.2, Appendix C: route ignored
        r.has_source_route = true;
        if (inner.empty()) return unexpected{err::empty_local_part};
    }

    // RFC 5321 §4.1.1.3: "<Postmaster>" without a domain must be accepted.
    if (allow_postmaster && !r.has_source_route && iequals_upper(inner, "POSTMASTER")) {
        r.is_postmaster = true;
        r.mailbox = inner;
        r.local_part = inner;
        return r;
    }

    // Local-part = Dot-string / Quoted-string, RFC 5321 §4.1.2.
    std::size_t i = 0;
    if (inner.front() == '"') {
        i = 1;
        bool closed = false;
        while (i < inner.size()) {
            unsigned char c = static_cast<unsigned char>(inner[i]);
            if (c == '"') {
                closed = true;
                ++i;
                break;
            }
            if (c == '\\') {
                // quoted-pairSMTP = %d92 %d32-126
                if (i + 1 >= inner.size()) return unexpected{err::unbalanced_quote};
                unsigned char q = static_cast<unsigned char>(inner[i + 1]);
                if (q < 32 || q > 126) return unexpected{err::bad_local_part};
                i += 2;
                continue;
            }
            if (!is_qtext_smtp(c)) return unexpected{err::bad_local_part};
            ++i;
        }
        if (!closed) return unexpected{err::unbalanced_quote};
        if (i == 2) return unexpected{err::empty_local_part};
    } else {
        bool atom_start = true;
        while (i < inner.size() && inner[i] != '@') {
            unsigned char c = static_cast<unsigned char>(inner[i]);
            if (c == '.') {
                if (atom_start) return unexpected{err::bad_local_part};
                atom_start = true;
            } else if (is_atext(c)) {
                atom_start = false;
            } else {
                return unexpected{c == '"' ? err::unbalanced_quote : err::bad_local_part};
            }
            ++i;
        }
        if (i == 0) return unexpected{err::empty_local_part};
        if (atom_start) return unexpected{err::bad_local_part};  // trailing '.'
    }
    r.local_part = inner.substr(0, i);
    if (r.local_part.size() > limits.max_local_part_bytes)  // RFC 5321 §4.5.3.1.1
        return unexpected{err::local_part_too_long};
    if (i >= inner.size()) return unexpected{err::missing_domain};
    if (inner[i] != '@') return unexpected{err::bad_local_part};

    std::string_view domain = inner.substr(i + 1);
    if (domain.empty()) return unexpected{err::missing_domain};
    if (domain.size() > limits.max_domain_bytes)  // RFC 5321 §4.5.3.1.2
        return unexpected{err::domain_too_long};
    if (domain.front() == '[') {
        if (!address_literal_valid(domain)) return unexpected{err::bad_address_literal};
        r.is_address_literal = true;
    } else if (!domain_valid(domain)) {
        return unexpected{err::bad_domain};
    }
    r.domain = domain;
    r.mailbox = inner;
    return r;
}

result<mail_from, address_error> parse_mail_from(std::string_view argument,
                                                 const address_limits& limits) {
    auto s = split(argument, "FROM:");
    if (!s) return unexpected{s.error()};
    auto p = parse_path(s->path, true, false, limits);
    if (!p) return unexpected{p.error()};

    mail_from out;
    out.path = *p;
    mail_params& mp = out.params;
    enum : unsigned { k_size = 1, k_body = 2, k_utf8 = 4, k_ret = 8, k_envid = 16, k_auth = 32 };
    unsigned seen = 0;
    std::size_t count = 0;
    std::string_view rest = s->params;
    param prm;
    err e{};
    while (next_param(rest, prm, e)) {
        if (++count > limits.max_params) return unexpected{err::too_many_params};
        unsigned key;
        if (iequals_upper(prm.keyword, "SIZE")) key = k_size;
        else if (iequals_upper(prm.keyword, "BODY")) key = k_body;
        else if (iequals_upper(prm.keyword, "SMTPUTF8")) key = k_utf8;
        else if (iequals_upper(prm.keyword, "RET")) key = k_ret;
        else if (iequals_upper(prm.keyword, "ENVID")) key = k_envid;
        else if (iequals_upper(prm.keyword, "AUTH")) key = k_auth;
        else return unexpected{err::unknown_param};
        if (seen & key) return unexpected{err::duplicate_param};
        seen |= key;
        switch (key) {
        case k_size:
            if (!prm.has_value || !parse_u64(prm.value, mp.size))
                return unexpected{err::bad_size};
            mp.has_size = true;
            break;
        case k_body:  // RFC 6152 §2, RFC 3030 §3
            if (iequals_upper(prm.value, "7BIT")) mp.body = body_type::seven_bit;
            else if (iequals_upper(prm.value, "8BITMIME")) mp.body = body_type::eight_bit_mime;
            else if (iequals_upper(prm.value, "BINARYMIME")) mp.body = body_type::binary_mime;
            else return unexpected{err::bad_body};
            break;
        case k_utf8:  // RFC 6531 §3.4: no value
            if (prm.has_value) return unexpected{err::bad_smtputf8};
            mp.smtputf8 = true;
            break;
        case k_ret:  // RFC 3461 §4.3
            if (iequals_upper(prm.value, "FULL")) mp.ret = ret_type::full;
            else if (iequals_upper(prm.value, "HDRS")) mp.ret = ret_type::hdrs;
            else return unexpected{err::bad_ret};
            break;
        case k_envid:  // RFC 3461 §4.4: printable ASCII as xtext, at most 100 characters
            if (!prm.has_value || prm.value.size() > 100 || !xtext_printable(prm.value))
                return unexpected{err::bad_envid};
            mp.envid = prm.value;
            break;
        case k_auth:  // RFC 4954 §5: xtext or "<>"
            if (!prm.has_value || (prm.value != "<>" && !xtext_valid(prm.value)))
                return unexpected{err::bad_auth};
            mp.auth = prm.value;
            break;
        default:
            break;
        }
    }
    if (e != err{}) return unexpected{e};
    return out;
}

result<rcpt_to, address_error> parse_rcpt_to(std::string_view argument,
                                             const address_limits& limits) {
    auto s = split(argument, "TO:");
    if (!s) return unexpected{s.error()};
    auto p = parse_path(s->path, false, true, limits);
    if (!p) return unexpected{p.error()};

    rcpt_to out;
    out.path = *p;
    rcpt_params& rp = out.params;
    enum : unsigned { k_notify = 1, k_orcpt = 2 };
    unsigned seen = 0;
    std::size_t count = 0;
    std::string_view rest = s->params;
    param prm;
    err e{};
    while (next_param(rest, prm, e)) {
        if (++count > limits.max_params) return unexpected{err::too_many_params};
        unsigned key;
        if (iequals_upper(prm.keyword, "NOTIFY")) key = k_notify;
        else if (iequals_upper(prm.keyword, "ORCPT")) key = k_orcpt;
        else return unexpected{err::unknown_param};
        if (seen & key) return unexpected{err::duplicate_param};
        seen |= key;
        if (key == k_notify) {
            if (!prm.has_value || !parse_notify(prm.value, rp.notify))
                return unexpected{err::bad_notify};
        } else {
            // RFC 3461 §4.2: addr-type ";" xtext, at most 500 characters.
            if (!prm.has_value || prm.value.size() > 500) return unexpected{err::bad_orcpt};
            std::size_t semi = prm.value.find(';');
            if (semi == std::string_view::npos || semi == 0 || semi + 1 == prm.value.size())
                return unexpected{err::bad_orcpt};
            std::string_view type = prm.value.substr(0, semi);
            std::string_view addr = prm.value.substr(semi + 1);
            for (char c : type)
                if (!is_atext(static_cast<unsigned char>(c)) || is_8bit(static_cast<unsigned char>(c)))
                    return unexpected{err::bad_orcpt};
            // "utf-8" addresses (RFC 6533 §3) allow UTF-8 and \x{..}; value
            // syntax and UTF-8 were already checked. Others are xtext that
            // decodes to printable ASCII (as Postfix checks: no CR, LF, NUL).
            if (!iequals_upper(type, "UTF-8") && !xtext_printable(addr))
                return unexpected{err::bad_orcpt};
            rp.orcpt = prm.value;
            rp.orcpt_type = type;
            rp.orcpt_address = addr;
        }
    }
    if (e != err{}) return unexpected{e};
    return out;
}

std::string_view address_error_name(address_error e) {
    switch (e) {
    case err::missing_prefix: return "missing_prefix";
    case err::missing_angle: return "missing_angle";
    case err::null_path_not_allowed: return "null_path_not_allowed";
    case err::control_char: return "control_char";
    case err::bad_utf8: return "bad_utf8";
    case err::bad_source_route: return "bad_source_route";
    case err::empty_local_part: return "empty_local_part";
    case err::bad_local_part: return "bad_local_part";
    case err::unbalanced_quote: return "unbalanced_quote";
    case err::local_part_too_long: return "local_part_too_long";
    case err::missing_domain: return "missing_domain";
    case err::bad_domain: return "bad_domain";
    case err::bad_address_literal: return "bad_address_literal";
    case err::domain_too_long: return "domain_too_long";
    case err::path_too_long: return "path_too_long";
    case err::trailing_garbage: return "trailing_garbage";
    case err::bad_param_syntax: return "bad_param_syntax";
    case err::too_many_params: return "too_many_params";
    case err::unknown_param: return "unknown_param";
    case err::duplicate_param: return "duplicate_param";
    case err::bad_size: return "bad_size";
    case err::bad_body: return "bad_body";
    case err::bad_smtputf8: return "bad_smtputf8";
    case err::bad_ret: return "bad_ret";
    case err::bad_envid: return "bad_envid";
    case err::bad_auth: return "bad_auth";
    case err::bad_notify: return "bad_notify";
    case err::bad_orcpt: return "bad_orcpt";
    }
    return "?";
}

}  // namespace ringmail::smtp
