// reply_parser: client side; parses one SMTP reply (RFC 5321 §4.2) and the
// EHLO capability list (RFC 5321 §4.1.1.1).
//
// Contract
//   parse_reply(in, max_line_bytes, max_lines) looks at the start of `in`:
//     complete  - `consumed` covers every line of the reply; `code` is the
//                 3-digit code; `raw` is the whole reply as sent; `first_text`
//                 / `last_text` are the text of the first / last line (after
//                 "250-" / "250 "); `enhanced` is an RFC 3463 status code
//                 ("2.1.0") taken from the first line when its class matches
//                 the reply code (RFC 2034 §4), else empty.
//                 next_reply_line() walks the lines of `raw`.
//     need_more - the reply is not complete yet.
//     error     - bad_code (not 3 digits, first digit not 2..5; RFC 5321
//                 §4.2.1), bad_separator (4th octet not SP, "-" or the
//                 end of line), code_mismatch (a continuation line with
//                 another code, §4.2.1), line_too_long (> max_line_bytes incl.
//                 CRLF, §4.5.3.1.5: 512), too_many_lines (> max_lines).
//                 Errors are reported as soon as they are visible.
//   Lines end in CRLF; as a client we also accept a bare LF (as Postfix's
//   smtp_get() does) and strip a CR before it.
//
//   parse_ehlo_capabilities(raw) reads the lines of an EHLO reply after the
//   greeting line. Keywords are case-insensitive.
//
// No I/O, no allocation; work per call is bounded by
// max_line_bytes * max_lines.
// Lifetimes: views point into the caller's input and live as long as it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "protocols/smtp/command_parser.h"  // parse_status

namespace ringmail::smtp {

enum class reply_error : std::uint8_t {
    none,
    bad_code,
    bad_separator,
    code_mismatch,
    line_too_long,
    too_many_lines,
};

inline constexpr std::size_t default_max_reply_line_bytes = 512;  // incl. CRLF
inline constexpr std::size_t default_max_reply_lines = 100;

struct reply_parse {
    parse_status status = parse_status::need_more;
    reply_error error = reply_error::none;
    std::size_t consumed = 0;
    int code = 0;
    std::size_t line_count = 0;
    std::string_view raw;         // whole reply, CRLFs included
    std::string_view first_text;  // text of the first line
    std::string_view last_text;   // text of the last line
    std::string_view enhanced;    // "2.1.0" or empty
};

reply_parse parse_reply(std::string_view in,
                        std::size_t max_line_bytes = default_max_reply_line_bytes,
                        std::size_t max_lines = default_max_reply_lines);

// Iterates the lines of a complete reply's `raw`: returns the text of the
// next line (after the code and separator, without line end) and advances
// `rest`; returns false when `rest` is empty.
bool next_reply_line(std::string_view& rest, std::string_view& text_r);

// Parses an RFC 3463 enhanced status code at the start of `text`
// (class "." subject "." detail, followed by SP or the end). Returns the
// code's view or empty.
std::string_view parse_enhanced_status(std::string_view text);

struct ehlo_capabilities {
    std::string_view greeting;     // first line: "domain [text]"
    bool pipelining = false;       // RFC 2920
    bool chunking = false;         // RFC 3030
    bool binarymime = false;       // RFC 3030
    bool eight_bit_mime = false;   // RFC 6152
    bool smtputf8 = false;         // RFC 6531
    bool starttls = false;         // RFC 3207
    bool enhanced_status_codes = false;  // RFC 2034
    bool dsn = false;              // RFC 3461
    bool size = false;             // RFC 1870
    std::uint64_t size_limit = 0;  // 0: no limit announced
    bool auth = false;             // RFC 4954
    std::string_view auth_mechanisms;  // "PLAIN LOGIN"
};

// `raw` is reply_parse::raw of a 250 reply to EHLO.
ehlo_capabilities parse_ehlo_capabilities(std::string_view raw);

// Whether the SP-separated mechanism list contains `mechanism`
// (case-insensitive).
bool auth_has_mechanism(std::string_view mechanisms, std::string_view mechanism);

}  // namespace ringmail::smtp
