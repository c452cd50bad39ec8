// libFuzzer target: protocols/smtp/mime_downgrade.h (downgrade_8bit_mime,
// append_quoted_printable) — fed by whatever a client sent as a message.
//
// Checks: the walk always ends; a conversion never adds 8-bit octets, and
// happens only when there were some; quoted-printable output is 7-bit, has
// lines of at most 76 characters and decodes back to its input.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "protocols/smtp/mime_downgrade.h"
#include "tests/fuzz/fuzz_check.h"

using namespace ringmail::smtp;

namespace {

std::size_t count_8bit(std::string_view s) {
    std::size_t n = 0;
    for (unsigned char c : s) n += c >= 0x80;
    return n;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void check_quoted_printable(std::string_view in) {
    std::string out;
    append_quoted_printable(in, out);
    FUZZ_CHECK(count_8bit(out) == 0);
    std::string decoded;
    std::size_t line_start = 0;
    for (std::size_t i = 0; i < out.size(); ++i) {
        char c = out[i];
        if (c == '\r') {
            FUZZ_CHECK(i + 1 < out.size() && out[i + 1] == '\n');
            FUZZ_CHECK(i - line_start <= 76);
            decoded.append("\r\n");
            line_start = i + 2;
            ++i;
        } else if (c == '=') {
            FUZZ_CHECK(i + 2 < out.size());  // "=" is always followed by two characters
            if (out[i + 1] == '\r') {  // soft line break
                FUZZ_CHECK(out[i + 2] == '\n');
                FUZZ_CHECK(i + 1 - line_start <= 76);
                line_start = i + 3;
                i += 2;
                continue;
            }
            int hi = hex_value(out[i + 1]), lo = hex_value(out[i + 2]);
            FUZZ_CHECK(hi >= 0 && lo >= 0);
            decoded.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        } else {
            FUZZ_CHECK(c != '\n');
            decoded.push_back(c);
        }
    }
    FUZZ_CHECK(out.size() - line_start <= 76);
    FUZZ_CHECK(decoded == in);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    downgrade_result r = downgrade_8bit_mime(in);
    if (r.outcome == downgrade_result::status::converted) {
        FUZZ_CHECK(count_8bit(in) > 0);
        FUZZ_CHECK(count_8bit(r.message) < count_8bit(in));
    } else {
        FUZZ_CHECK(r.message.empty());
        if (r.outcome == downgrade_result::status::unconvertible) FUZZ_CHECK(count_8bit(in) > 0 && !r.why.empty());
    }
    check_quoted_printable(in);
    std::string flat;
    append_quoted_printable(in, flat, false);
    FUZZ_CHECK(count_8bit(flat) == 0);
    FUZZ_CHECK(flat.size() >= in.size());
    return 0;
}
