// command_parser: see command_parser.h for the contract.
#include "protocols/smtp/command_parser.h"
#include "protocols/smtp/ascii.h"

#include <algorithm>
#include <array>
#include <cstring>

namespace ringmail::smtp {

namespace {

// The command table is data (Postfix smtpd_cmd_table style).
struct verb_entry {
    std::string_view name;
    verb v;
};

constexpr std::array<verb_entry, 14> verb_table{{
    {"HELO", verb::helo},         {"EHLO", verb::ehlo},
    {"MAIL", verb::mail},         {"RCPT", verb::rcpt},
    {"DATA", verb::data},         {"BDAT", verb::bdat},
    {"RSET", verb::rset},         {"NOOP", verb::noop},
    {"QUIT", verb::quit},         {"VRFY", verb::vrfy},
    {"EXPN", verb::expn},         {"HELP", verb::help},
    {"STARTTLS", verb::starttls}, {"AUTH", verb::auth},
}};


verb lookup_verb(std::string_view text) {
    for (const auto& e : verb_table)
        if (iequals_upper(text, e.name)) return e.v;
    return verb::unknown;
}

}  // namespace

std::string_view verb_name(verb v) {
    for (const auto& e : verb_table)
        if (e.v == v) return e.name;
    return {};
}

skip_result skip_line(std::string_view in) {
    const char* p = in.data();
    std::size_t n = in.size();
    std::size_t off = 0;
    while (off < n) {
        const void* lf = std::memchr(p + off, '\n', n - off);
        if (lf == nullptr) break;
        std::size_t i = static_cast<std::size_t>(static_cast<const char*>(lf) - p);
        if (i > 0 && p[i - 1] == '\r') return {i + 1, true};
        off = i + 1;
    }
    // Keep a trailing CR: its LF may arrive next.
    if (n > 0 && p[n - 1] == '\r') return {n - 1, false};
    return {n, false};
}

command_parse parse_command(std::string_view in, std::size_t max_line_bytes) {
    command_parse r;
    const std::size_t scan = std::min(in.size(), max_line_bytes);
    command_error first_bad = command_error::none;
    std::size_t line_end = 0;  // index one past the LF of the CRLF; 0 = not found

    for (std::size_t i = 0; i < scan; ++i) {
        const char c = in[i];
        if (c == '\n') {
            if (i > 0 && in[i - 1] == '\r') {
                line_end = i + 1;
                break;
            }
            if (first_bad == command_error::none) first_bad = command_error::bare_lf;
        } else if (c == '\r') {
            // A CR is bare unless the next byte is LF; at the end of the
            // input we cannot tell yet.
            if (i + 1 < in.size() && in[i + 1] != '\n' &&
                first_bad == command_error::none)
                first_bad = command_error::bare_cr;
        } else if (c == '\0') {
            if (first_bad == command_error::none) first_bad = command_error::nul_byte;
        }
    }

    if (line_end == 0) {
        if (in.size() < max_line_bytes) return r;  // need_more
        // RFC 5321 §4.5.3.1.4: no CRLF within the limit. Report now and let
        // the caller discard what it can.
        skip_result s = skip_line(in);
        r.status = parse_status::error;
        r.error = command_error::line_too_long;
        r.consumed = s.consumed;
        r.line_ended = s.found_crlf;
        return r;
    }

    r.consumed = line_end;
    if (first_bad != command_error::none) {
        r.status = parse_status::error;
        r.error = first_bad;
        r.line_ended = true;
        return r;
    }

    std::string_view line = in.substr(0, line_end - 2);
    std::size_t sp = line.find(' ');
    r.verb_text = line.substr(0, sp);
    r.cmd = lookup_verb(r.verb_text);
    if (sp != std::string_view::npos) {
        std::string_view arg = line.substr(sp + 1);
        while (!arg.empty() && arg.back() == ' ') arg.remove_suffix(1);
        r.argument = arg;
    }
    r.status = parse_status::complete;
    return r;
}

}  // namespace ringmail::smtp
