// mime_downgrade: 8-bit MIME content made 7-bit for a next hop without
// 8BITMIME (RFC 6152 §3: convert, or bounce; Postfix converts).
//
// As Postfix does (disable_mime_output_conversion = no): every part that
// declares `Content-Transfer-Encoding: 8bit` (or `binary`) and holds an octet
// >= 0x80 is re-encoded quoted-printable (RFC 2045 §6.7) and its header says
// so; multiparts and message/rfc822 parts are walked (up to a depth limit)
// and their own 8bit/binary declaration becomes 7bit. What is not declared
// 8-bit (8-bit octets in a part without a transfer encoding, or in header
// fields) is left as it is: there is nothing to say what it is.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ringmail::smtp {

// The message (header section, empty line, body; CRLF lines) converted, or
// nullopt when nothing in it is declared 8-bit and has 8-bit octets (send it
// as it is).
std::optional<std::string> downgrade_8bit_mime(std::string_view message);

// Appends `text` (CRLF lines; the last may lack its CRLF) quoted-printable
// encoded to `out`: lines of at most 76 characters, soft line breaks, '='
// and octets >= 0x80 and controls as =XX, a space or tab ending a line too.
void append_quoted_printable(std::string_view text, std::string& out);

}  // namespace ringmail::smtp
