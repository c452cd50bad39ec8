// libFuzzer target: protocols/smtp/reply_parser.h (parse_reply,
// next_reply_line, parse_enhanced_status, parse_ehlo_capabilities,
// auth_has_mechanism) — the client side, fed by a hostile server.
//
// Input: byte 0 picks the limits, the rest is what the server sent. Walks the
// stream reply by reply, checks each complete reply against the contract and
// that every shorter prefix of it is still need_more.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "protocols/smtp/reply_parser.h"
#include "tests/fuzz/fuzz_check.h"

using namespace ringmail::smtp;
using ringmail::fuzz::within;

namespace {

constexpr std::array<std::size_t, 4> line_limits = {default_max_reply_line_bytes, 4, 6, 40};
constexpr std::array<std::size_t, 4> line_counts = {default_max_reply_lines, 1, 2, 5};

void check_enhanced(std::string_view text) {
    std::string_view e = parse_enhanced_status(text);
    if (e.empty()) return;
    FUZZ_CHECK(within(e, text) && e.data() == text.data());
    FUZZ_CHECK(e.size() >= 5);
    FUZZ_CHECK(e.size() == text.size() || text[e.size()] == ' ');
    FUZZ_CHECK(e[0] >= '2' && e[0] <= '5');
    FUZZ_CHECK(e[1] == '.');
}

void check_complete(std::string_view in, const reply_parse& r, std::size_t max_line,
                    std::size_t max_lines) {
    FUZZ_CHECK(r.error == reply_error::none);
    FUZZ_CHECK(r.consumed > 0 && r.consumed <= in.size());
    FUZZ_CHECK(r.raw.data() == in.data() && r.raw.size() == r.consumed);
    FUZZ_CHECK(r.raw.back() == '\n');
    FUZZ_CHECK(r.code >= 200 && r.code <= 599);
    FUZZ_CHECK(r.line_count >= 1 && r.line_count <= max_lines);
    FUZZ_CHECK(within(r.first_text, r.raw));
    FUZZ_CHECK(within(r.last_text, r.raw));
    FUZZ_CHECK(within(r.enhanced, r.first_text));
    if (!r.enhanced.empty()) FUZZ_CHECK(r.enhanced[0] - '0' == r.code / 100);
    check_enhanced(r.first_text);

    // The lines of raw: same count, first/last text, each line within the limit.
    std::string_view rest = r.raw;
    std::string_view text;
    std::size_t n = 0;
    std::string_view first, last;
    while (next_reply_line(rest, text)) {
        FUZZ_CHECK(within(text, r.raw));
        FUZZ_CHECK(text.find('\n') == std::string_view::npos);
        if (n == 0) first = text;
        last = text;
        ++n;
        FUZZ_CHECK(n <= r.line_count);
    }
    FUZZ_CHECK(n == r.line_count);
    FUZZ_CHECK(first == r.first_text);
    FUZZ_CHECK(last == r.last_text);
    for (std::size_t pos = 0, lf; (lf = r.raw.find('\n', pos)) != std::string_view::npos; pos = lf + 1) {
        FUZZ_CHECK(lf + 1 - pos <= max_line);
        std::string_view line = r.raw.substr(pos, lf + 1 - pos);
        FUZZ_CHECK(line.substr(0, 3) == r.raw.substr(0, 3));
    }

    // Every shorter prefix is incomplete (never an error, never another reply).
    for (std::size_t k : {r.consumed - 1, r.consumed / 2, std::size_t{0}}) {
        reply_parse p = parse_reply(in.substr(0, k), max_line, max_lines);
        FUZZ_CHECK(p.status == parse_status::need_more);
    }

    if (r.code == 250) {
        ehlo_capabilities caps = parse_ehlo_capabilities(r.raw);
        FUZZ_CHECK(within(caps.greeting, r.raw));
        FUZZ_CHECK(within(caps.auth_mechanisms, r.raw));
        if (!caps.size) FUZZ_CHECK(caps.size_limit == 0);
        (void)auth_has_mechanism(caps.auth_mechanisms, "PLAIN");
        (void)auth_has_mechanism(caps.auth_mechanisms, "");
        (void)auth_has_mechanism(caps.auth_mechanisms, caps.auth_mechanisms);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::size_t max_line = line_limits[data[0] & 3];
    const std::size_t max_lines = line_counts[(data[0] >> 2) & 3];
    std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);

    // parse_ehlo_capabilities must also survive raw text that is not a 250.
    if (data[0] & 0x80) (void)parse_ehlo_capabilities(in);
    check_enhanced(in);

    std::string_view rest = in;
    while (!rest.empty()) {
        reply_parse r = parse_reply(rest, max_line, max_lines);
        if (r.status != parse_status::complete) {
            if (r.status == parse_status::error) FUZZ_CHECK(r.error != reply_error::none);
            else FUZZ_CHECK(r.consumed == 0 && r.error == reply_error::none);
            break;
        }
        check_complete(rest, r, max_line, max_lines);
        rest.remove_prefix(r.consumed);
    }
    return 0;
}
