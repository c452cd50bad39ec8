// dsn: building RFC 3464 delivery status notifications (bounces).
//
// build_dsn() returns a complete RFC 5322 message, multipart/report
// (RFC 6522) with three parts: a human explanation (text/plain), the
// machine-readable message/delivery-status, and the original message as
// message/rfc822 (or only its header block as text/rfc822-headers when
// RET=HDRS, when the original exceeds max_attached_bytes, or when it is
// BINARYMIME, which cannot be carried in a CRLF-line message).
//
// Safety guarantees of the output:
//  - CRLF line ends only, no bare CR or LF anywhere (the attached original is
//    normalised: a bare LF or CR becomes CRLF).
//  - Every line we generate is at most 998 octets (RFC 5322 §2.1.1): remote
//    replies are folded at spaces, very long words split, and replies are
//    capped at dsn_max_reply_bytes. Lines of the attached original are
//    passed through as received.
//  - Text from outside (remote replies, addresses, HELO, ENVID, host names)
//    has CR, LF and other controls replaced by spaces, so it can never start
//    a header line of its own (no header injection). Remote reply text is
//    reduced to printable US-ASCII; addresses keep 8-bit bytes only when the
//    original was SMTPUTF8.
//  - The MIME boundary is derived from unique_seed and checked not to occur
//    in the attached original.
//
// Submit the result with the null reverse-path (MAIL FROM:<>), is_dsn = true,
// and the original's body type when the full original is attached.
//
// Thread rules: pure functions. The input's views are read during the call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "store/envelope.h"

namespace ringmail::smtp {

inline constexpr size_t dsn_default_max_attached_bytes = 10 * 1024 * 1024;
inline constexpr size_t dsn_max_reply_bytes = 4096;

enum class dsn_failure : uint8_t {
    permanent,  // a 5xx reply, or a local permanent failure
    expired,    // still failing temporarily when the queue lifetime ran out
};

struct dsn_recipient {
    std::string_view address;     // RCPT TO address, without <>
    std::string_view orcpt;       // ORCPT as received ("rfc822;x@y"), empty if none
    std::string_view remote_mta;  // host that gave the reply, empty if unknown / local
    std::string_view reply;       // remote SMTP reply (may be multi-line) or local diagnostic
    dsn_failure failure = dsn_failure::permanent;
};

struct dsn_input {
    std::string_view reporting_mta;              // our host name
    const store::envelope& original;             // sender, ENVID, RET, arrival time
    std::span<const dsn_recipient> recipients;   // those to report (filter with should_bounce)
    std::string_view message;                    // the original message bytes
    int64_t now = 0;                             // unix seconds, for Date:
    uint64_t unique_seed = 0;                    // for the boundary and Message-ID
    size_t max_attached_bytes = dsn_default_max_attached_bytes;
};

std::string build_dsn(const dsn_input& in);

// RFC 3461 §4.1: with no NOTIFY the default is FAILURE,DELAY; NEVER suppresses
// every notice.
bool wants_failure_notice(const store::recipient& rcpt);
// False for the null sender and for a message that is itself a DSN (never
// bounce a bounce), else wants_failure_notice(rcpt).
bool should_bounce(const store::envelope& env, const store::recipient& rcpt);
// True if at least one recipient in state failed should be reported.
bool should_bounce(const store::envelope& env);

// The RFC 3463 status for a failed recipient: the reply's enhanced code if it
// has one of the right class, else 5.0.0 (permanent) / 4.4.7 (expired).
// Writes "x.y.z" into out (at most 11 chars + NUL); returns its length.
size_t dsn_status(std::string_view reply, dsn_failure failure, char (&out)[12]);

}  // namespace ringmail::smtp
