// mime_downgrade: 8-bit MIME content made 7-bit for a next hop without
// 8BITMIME (RFC 6152 §3: convert, or bounce; Postfix converts).
//
// As Postfix does (disable_mime_output_conversion = no): every part that
// declares `Content-Transfer-Encoding: 8bit` (or `binary`) and holds an octet
// >= 0x80 is re-encoded quoted-printable (RFC 2045 §6.7) and its header says
// so; multiparts and message/rfc822 parts are walked (multipart/digest parts
// default to message/rfc822) and their own 8bit/binary declaration becomes
// 7bit when nothing 8-bit is left in them. What is not declared 8-bit (8-bit
// octets in a part without a transfer encoding, or in header fields) is left
// as it is: there is nothing to say what it is. What cannot be converted
// (8-bit content nested deeper than the walk goes, Postfix: "MIME nesting
// exceeds safety limit"; an 8-bit message/partial, which must be 7bit, RFC
// 2046 §5.2.2) makes the caller bounce the message.
#pragma once

#include <string>
#include <string_view>

namespace ringmail::smtp {

struct downgrade_result {
    enum class status {
        unchanged,  // nothing declared 8-bit holds 8-bit octets: send it as it is
        converted,  // `message` is what to send
        unconvertible,  // `why` says what cannot be made 7-bit
    };
    status outcome = status::unchanged;
    std::string message;
    std::string why;
};

// Converts a message (header section, empty line, body; CRLF lines).
downgrade_result downgrade_8bit_mime(std::string_view message);

// Appends `text` quoted-printable encoded to `out`: lines of at most 76
// characters, soft line breaks, '=' and octets >= 0x80 and controls as =XX,
// a space or tab ending a line too, and a '-' starting a line (an encoded
// line never reads as a MIME boundary, whatever the boundary). With
// `line_breaks` (text/* content) each CRLF stays a line break; without
// (other types, RFC 2045 §6.7 (4)) CR and LF are octets like any other.
void append_quoted_printable(std::string_view text, std::string& out, bool line_breaks = true);

}  // namespace ringmail::smtp
