#include "protocols/smtp/smtputf8.h"

#include <string_view>

#include "protocols/smtp/ascii.h"

namespace ringmail::smtp {

bool needs_smtputf8(const store::envelope& env, std::span<const size_t> recipients, store::body_view message) {
    if (has_8bit_octets(env.sender)) return true;
    for (size_t i : recipients)
        if (has_8bit_octets(env.recipients[i].address)) return true;
    // The header section ends at the first empty line: CRLF CRLF, or a CRLF
    // at the very start (no header fields). Scanned across head and tail.
    unsigned crlf_run = 2;  // as if after a line end: a leading CRLF ends it too
    for (std::string_view piece : {message.head, message.tail}) {
        for (char c : piece) {
            if (static_cast<unsigned char>(c) >= 0x80) return true;
            if (c == '\r' && (crlf_run == 0 || crlf_run == 2)) ++crlf_run;
            else if (c == '\n' && (crlf_run == 1 || crlf_run == 3)) ++crlf_run;
            else crlf_run = 0;
            if (crlf_run == 4) return false;
        }
    }
    return false;
}

}  // namespace ringmail::smtp
