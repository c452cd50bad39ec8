// address: parses the argument of MAIL and RCPT (RFC 5321 §4.1.1.2/3, §4.1.2).
//
// Contract
//   parse_mail_from("FROM:<path> [params]") and parse_rcpt_to("TO:<path>
//   [params]") take the `argument` view from parse_command(). "FROM:"/"TO:"
//   are case-insensitive; one SP after the colon is tolerated (many clients
//   send it). Parameters are separated by one or more SP.
//   Paths: "<>" (MAIL only), "<local@domain>", "<local@[1.2.3.4]>",
//   "<local@[IPv6:...]>", quoted local parts, "<Postmaster>" (RCPT only,
//   RFC 5321 §4.1.1.3). A source route "<@a,@b:u@d>" is accepted and dropped
//   (RFC 5321 §4.1.2, Appendix C); the mailbox is "u@d".
//   Bytes >= 0x80 are accepted in the local part and domain if they form
//   valid UTF-8 and set has_utf8; the session then requires SMTPUTF8
//   (RFC 6531 §3.3).
//   Limits come from address_limits: local part 64 (RFC 5321 §4.5.3.1.1),
//   domain 255 (§4.5.3.1.2), path 256 incl. "<>" and route (§4.5.3.1.3),
//   parameter count.
//   ESMTP parameters (RFC 5321 §4.1.2 esmtp-param) are parsed into
//   mail_params / rcpt_params; keywords are case-insensitive. Unknown or
//   verb-inappropriate keywords give unknown_param (555 5.5.4); a keyword
//   given twice gives duplicate_param; bad values give a per-keyword error.
//   Control characters (< 0x20, 0x7f) anywhere in the argument are rejected.
//   xtext values (ENVID, ORCPT) are validated, not decoded; xtext_decode()
//   decodes into a caller buffer when needed.
//
// No I/O, no allocation; work is linear in the argument size.
// Lifetimes: views point into the caller's input and live as long as it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "engine/result.h"

namespace ringmail::smtp {

enum class address_error : std::uint8_t {
    missing_prefix = 1,    // no "FROM:" / "TO:"                       501 5.5.4
    missing_angle,         // path not enclosed in "<" ">"             501 5.1.7/5.1.3
    null_path_not_allowed, // "<>" in RCPT                              501 5.1.3
    control_char,          // CR, LF, NUL or other control char         501 5.5.2
    bad_utf8,              // bytes >= 0x80 that are not UTF-8          553 5.6.7
    bad_source_route,      // malformed "@a,@b:" prefix                 501 5.1.3
    empty_local_part,      // "<@d>", "<\"\"@d>"                          501 5.1.3
    bad_local_part,        // not a Dot-string / Quoted-string          501 5.1.3
    unbalanced_quote,      // quoted local part never closed            501 5.1.3
    local_part_too_long,   // > 64, RFC 5321 §4.5.3.1.1                 553 5.1.3
    missing_domain,        // no "@domain"                              501 5.1.3
    bad_domain,            // not a Domain per RFC 5321 §4.1.2          501 5.1.2
    bad_address_literal,   // bad "[...]"                               501 5.1.2
    domain_too_long,       // > 255, RFC 5321 §4.5.3.1.2                553 5.1.2
    path_too_long,         // > 256, RFC 5321 §4.5.3.1.3                553 5.1.3
    trailing_garbage,      // text after ">" not starting with SP       501 5.5.4
    bad_param_syntax,      // not keyword[=value]                       501 5.5.4
    too_many_params,       // more than address_limits::max_params      501 5.5.4
    unknown_param,         // keyword not supported for this verb       555 5.5.4
    duplicate_param,       // keyword given twice                       501 5.5.4
    bad_size,              // SIZE not 1*20DIGIT / overflow (RFC 1870)   501 5.5.4
    bad_body,              // BODY not 7BIT|8BITMIME|BINARYMIME          501 5.5.4
    bad_smtputf8,          // SMTPUTF8 with a value (RFC 6531 §3.4)      501 5.5.4
    bad_ret,               // RET not FULL|HDRS (RFC 3461 §4.3)          501 5.5.4
    bad_envid,             // ENVID not xtext / > 100 (RFC 3461 §4.4)    501 5.5.4
    bad_auth,              // AUTH= not xtext (RFC 4954 §5)              501 5.5.4
    bad_notify,            // NOTIFY malformed (RFC 3461 §4.1)           501 5.5.4
    bad_orcpt,             // ORCPT malformed (RFC 3461 §4.2)            501 5.5.4
};

std::string_view address_error_name(address_error e);

struct address_limits {
    std::size_t max_local_part_bytes = 64;  // RFC 5321 §4.5.3.1.1
    std::size_t max_domain_bytes = 255;     // RFC 5321 §4.5.3.1.2
    std::size_t max_path_bytes = 256;       // RFC 5321 §4.5.3.1.3
    std::size_t max_params = 16;
};

struct mailbox_path {
    std::string_view mailbox;     // "local@domain" without route and "<>"; empty for "<>"
    std::string_view local_part;  // wire form, quotes kept: "\"a b\"" or "a.b"
    std::string_view domain;      // "example.org", "[1.2.3.4]", "[IPv6:...]"; empty for <>/<Postmaster>
    bool is_null = false;         // "<>"
    bool is_postmaster = false;   // bare "<Postmaster>" (RCPT only)
    bool is_address_literal = false;
    bool has_source_route = false;  // a route was present and dropped
    bool has_utf8 = false;          // bytes >= 0x80 in the path
};

enum class body_type : std::uint8_t { unspecified, seven_bit, eight_bit_mime, binary_mime };
enum class ret_type : std::uint8_t { unspecified, full, hdrs };

struct mail_params {
    bool has_size = false;
    std::uint64_t size = 0;        // SIZE=, RFC 1870
    body_type body = body_type::unspecified;  // RFC 6152, RFC 3030
    bool smtputf8 = false;         // RFC 6531 §3.4
    ret_type ret = ret_type::unspecified;     // RFC 3461 §4.3
    std::string_view envid;        // raw xtext, RFC 3461 §4.4
    std::string_view auth;         // raw xtext, RFC 4954 §5 ("<>" allowed)
};

// NOTIFY bits, RFC 3461 §4.1.
enum notify_flag : std::uint8_t {
    notify_never = 1,
    notify_success = 2,
    notify_failure = 4,
    notify_delay = 8,
};

struct rcpt_params {
    std::uint8_t notify = 0;        // 0 = not given; else notify_flag bits
    std::string_view orcpt;         // raw "addr-type;xtext"
    std::string_view orcpt_type;    // "rfc822", "utf-8", ...
    std::string_view orcpt_address; // raw xtext after ';'
};

struct mail_from {
    mailbox_path path;
    mail_params params;
};

struct rcpt_to {
    mailbox_path path;
    rcpt_params params;
};

result<mail_from, address_error> parse_mail_from(std::string_view argument,
                                                 const address_limits& limits = {});
result<rcpt_to, address_error> parse_rcpt_to(std::string_view argument,
                                             const address_limits& limits = {});

// Parses just "<...>" (the whole view). allow_null: accept "<>";
// allow_postmaster: accept "<Postmaster>" without a domain.
result<mailbox_path, address_error> parse_path(std::string_view path, bool allow_null,
                                               bool allow_postmaster,
                                               const address_limits& limits = {});

// xtext per RFC 3461 §4: chars 33..126 except '+' and '=', or "+XX" with
// XX upper-case hex. Validation only.
bool xtext_valid(std::string_view xtext);

// Valid xtext that decodes to printable ASCII only (0x20..0x7E): what ENVID
// and an ORCPT address must be (RFC 3461 §4.2, §4.4), so no CR, LF or NUL can
// reach a DSN or the next hop through them.
bool xtext_printable(std::string_view xtext);

// Decodes xtext into out[0..cap). Returns the decoded length, or nullopt if
// the input is not valid xtext or does not fit.
std::optional<std::size_t> xtext_decode(std::string_view xtext, char* out, std::size_t cap);

}  // namespace ringmail::smtp
