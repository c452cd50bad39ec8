// command_parser: finds one SMTP command line in a receive buffer.
//
// Contract
//   parse_command(in, max_line_bytes) looks at the start of `in` only and
//   returns one of
//     complete  - a whole line ending in CRLF; `consumed` counts it including
//                 the CRLF; `cmd`, `verb_text` and `argument` describe it.
//     need_more - no CRLF yet and the line is still within the limit.
//     error     - `error` says why. For bare_lf / bare_cr / nul_byte the line
//                 was complete, and `consumed` covers it up to and including
//                 its CRLF, so the session replies once and carries on.
//                 For line_too_long (no CRLF within max_line_bytes, RFC 5321
//                 §4.5.3.1.4: 512 octets including CRLF) `consumed` is what
//                 may be discarded now; if `line_ended` is false the rest of
//                 the line has not arrived yet and the caller keeps calling
//                 skip_line() on later input until it reports found_crlf.
//   Only CRLF ends a line (RFC 5321 §2.3.8); a lone CR or LF inside a line is
//   an error, never a terminator (the SMTP smuggling defence).
//   Verbs are matched case-insensitively (RFC 5321 §2.4) against a table.
//   `argument` is the text after the verb and one SP, with trailing SP
//   removed; it is empty when the verb stands alone.
//
// Work is bounded by max_line_bytes per call. No I/O, no allocation.
// Lifetimes: views point into the caller's input and live as long as it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ringmail::smtp {

// Shared by the SMTP parsers (command, reply).
enum class parse_status : std::uint8_t { complete, need_more, error };

enum class verb : std::uint8_t {
    helo, ehlo, mail, rcpt, data, bdat, rset, noop, quit,
    vrfy, expn, help, starttls, auth, unknown,
};

enum class command_error : std::uint8_t {
    none,
    line_too_long,  // RFC 5321 §4.5.3.1.4 -> 500 5.5.6
    bare_lf,        // LF without CR before it, RFC 5321 §2.3.8
    bare_cr,        // CR without LF after it, RFC 5321 §2.3.8
    nul_byte,       // NUL inside a command line
};

inline constexpr std::size_t default_max_command_bytes = 512;  // incl. CRLF

struct command_parse {
    parse_status status = parse_status::need_more;
    command_error error = command_error::none;
    std::size_t consumed = 0;   // see contract above
    bool line_ended = false;    // error only: CRLF of the bad line was consumed
    verb cmd = verb::unknown;
    std::string_view verb_text;  // as sent, for logging unknown verbs
    std::string_view argument;
};

command_parse parse_command(std::string_view in,
                            std::size_t max_line_bytes = default_max_command_bytes);

// Discards the remainder of a line. consumed includes the CRLF when
// found_crlf; otherwise it is all of `in` except a trailing CR, which the
// caller must keep because the matching LF may come in the next buffer.
struct skip_result {
    std::size_t consumed = 0;
    bool found_crlf = false;
};
skip_result skip_line(std::string_view in);

// Canonical upper-case name ("MAIL"); "" for verb::unknown.
std::string_view verb_name(verb v);

}  // namespace ringmail::smtp
