// reply_parser: see reply_parser.h for the contract.
#include "protocols/smtp/reply_parser.h"
#include "protocols/smtp/ascii.h"

#include <algorithm>

namespace ringmail::smtp {

namespace {

constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Text of a line (the part after "xyz" and its separator), line end removed.
std::string_view line_text(std::string_view line) {
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return line.size() > 4 ? line.substr(4) : std::string_view{};
}

}  // namespace

std::string_view parse_enhanced_status(std::string_view t) {
    // RFC 3463 §2: class "." subject "." detail; class 2/4/5,
    // subject and detail 1*3digit.
    if (t.size() < 5 || (t[0] != '2' && t[0] != '4' && t[0] != '5') || t[1] != '.')
        return {};
    std::size_t i = 2;
    for (int part = 0; part < 2; ++part) {
        std::size_t start = i;
        while (i < t.size() && is_digit(t[i]) && i - start < 3) ++i;
        if (i == start) return {};
        if (part == 0) {
            if (i >= t.size() || t[i] != '.') return {};
            ++i;
        }
    }
    if (i < t.size() && t[i] != ' ') return {};
    return t.substr(0, i);
}

reply_parse parse_reply(std::string_view in, std::size_t max_line_bytes, std::size_t max_lines) {
    reply_parse r;
    std::size_t pos = 0;
    int code = 0;
    std::size_t lines = 0;
    auto fail = [&](reply_error e) {
        r.status = parse_status::error;
        r.error = e;
        return r;
    };

    while (true) {
        std::string_view rest = in.substr(pos);
        // Syntax of the prefix can be checked before the line is complete.
        std::size_t have = std::min<std::size_t>(rest.size(), 3);
        for (std::size_t k = 0; k < have; ++k) {
            char c = rest[k];
            bool ok = k == 0 ? (c >= '2' && c <= '5') : is_digit(c);
            if (!ok) return fail(reply_error::bad_code);
        }
        if (rest.size() >= 3) {
            int this_code = (rest[0] - '0') * 100 + (rest[1] - '0') * 10 + (rest[2] - '0');
            if (lines == 0) code = this_code;
            else if (this_code != code) return fail(reply_error::code_mismatch);
        }
        bool last = true;
        if (rest.size() >= 4) {
            char sep = rest[3];
            if (sep == '-') last = false;
            else if (sep != ' ' && sep != '\r' && sep != '\n') return fail(reply_error::bad_separator);
        }
        if (lines + 1 > max_lines) return fail(reply_error::too_many_lines);

        std::size_t scan = std::min(rest.size(), max_line_bytes);
        std::size_t lf = rest.substr(0, scan).find('\n');
        if (lf == std::string_view::npos) {
            if (rest.size() >= max_line_bytes) return fail(reply_error::line_too_long);
            return r;  // need_more
        }
        std::string_view line = rest.substr(0, lf + 1);
        // "250\r\n" / "250\n" is a valid last line with no text (RFC 5321 §4.2).
        if (lf < 3) return fail(reply_error::bad_code);
        if (lf == 3 || (lf == 4 && rest[3] == '\r')) last = true;
        else if (rest[3] == '\r') return fail(reply_error::bad_separator);  // "250\rx"

        ++lines;
        if (lines == 1) r.first_text = line_text(line);
        r.last_text = line_text(line);
        pos += lf + 1;
        if (last) break;
    }

    r.status = parse_status::complete;
    r.consumed = pos;
    r.code = code;
    r.line_count = lines;
    r.raw = in.substr(0, pos);
    std::string_view esc = parse_enhanced_status(r.first_text);
    if (!esc.empty() && esc[0] - '0' == code / 100) r.enhanced = esc;
    return r;
}

bool next_reply_line(std::string_view& rest, std::string_view& text_r) {
    if (rest.empty()) return false;
    std::size_t lf = rest.find('\n');
    std::string_view line = rest.substr(0, lf == std::string_view::npos ? rest.size() : lf + 1);
    rest.remove_prefix(line.size());
    text_r = line_text(line);
    return true;
}

ehlo_capabilities parse_ehlo_capabilities(std::string_view raw) {
    ehlo_capabilities caps;
    std::string_view rest = raw;
    std::string_view text;
    if (!next_reply_line(rest, text)) return caps;
    caps.greeting = text;
    bool auth_from_space = false;
    while (next_reply_line(rest, text)) {
        // ehlo-line = ehlo-keyword *( SP ehlo-param ), RFC 5321 §4.1.1.1.
        std::size_t sp = text.find(' ');
        std::string_view kw = text.substr(0, sp);
        std::string_view params =
            sp == std::string_view::npos ? std::string_view{} : text.substr(sp + 1);
        while (!params.empty() && params.back() == ' ') params.remove_suffix(1);
        if (iequals(kw, "PIPELINING")) caps.pipelining = true;
        else if (iequals(kw, "CHUNKING")) caps.chunking = true;
        else if (iequals(kw, "BINARYMIME")) caps.binarymime = true;
        else if (iequals(kw, "8BITMIME")) caps.eight_bit_mime = true;
        else if (iequals(kw, "SMTPUTF8")) caps.smtputf8 = true;
        else if (iequals(kw, "STARTTLS")) caps.starttls = true;
        else if (iequals(kw, "ENHANCEDSTATUSCODES")) caps.enhanced_status_codes = true;
        else if (iequals(kw, "DSN")) caps.dsn = true;
        else if (iequals(kw, "SIZE")) {
            caps.size = true;
            // RFC 1870 §4: optional size in octets; ignore a value we cannot
            // read rather than refusing to talk.
            std::uint64_t v = 0;
            bool ok = !params.empty() && params.size() <= 20;
            for (char c : params) {
                if (!ok) break;
                if (!is_digit(c) || v > (UINT64_MAX - static_cast<std::uint64_t>(c - '0')) / 10)
                    ok = false;
                else
                    v = v * 10 + static_cast<std::uint64_t>(c - '0');
            }
            caps.size_limit = ok ? v : 0;
        } else if (iequals(kw, "AUTH")) {
            caps.auth = true;
            caps.auth_mechanisms = params;
            auth_from_space = true;
        } else if (kw.size() > 5 && iequals(kw.substr(0, 5), "AUTH=") && !auth_from_space) {
            // Pre-RFC 4954 "AUTH=LOGIN PLAIN"; used only if no "AUTH " line.
            caps.auth = true;
            caps.auth_mechanisms = text.substr(5);
            while (!caps.auth_mechanisms.empty() && caps.auth_mechanisms.back() == ' ')
                caps.auth_mechanisms.remove_suffix(1);
        }
    }
    return caps;
}

bool auth_has_mechanism(std::string_view mechanisms, std::string_view mechanism) {
    while (!mechanisms.empty()) {
        std::size_t sp = mechanisms.find(' ');
        if (iequals(mechanisms.substr(0, sp), mechanism)) return true;
        if (sp == std::string_view::npos) break;
        mechanisms.remove_prefix(sp + 1);
    }
    return false;
}

}  // namespace ringmail::smtp
