// libFuzzer target: protocols/smtp/command_parser.h (parse_command, skip_line).
//
// Input: byte 0 picks max_line_bytes, the rest is a receive buffer. Checks the
// contract's invariants on one call, then walks the buffer the way a session
// does (parse, consume, skip_line after line_too_long) and checks it always
// makes progress and never reads or consumes past the input.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "protocols/smtp/command_parser.h"
#include "tests/fuzz/fuzz_check.h"

using namespace ringmail::smtp;
using ringmail::fuzz::within;

namespace {

constexpr std::array<std::size_t, 8> limits = {default_max_command_bytes, 1, 2, 3, 8, 16, 64, 1000};

bool ends_crlf(std::string_view in, std::size_t consumed) {
    return consumed >= 2 && consumed <= in.size() && in[consumed - 2] == '\r' && in[consumed - 1] == '\n';
}

void check_skip(std::string_view in) {
    skip_result s = skip_line(in);
    FUZZ_CHECK(s.consumed <= in.size());
    if (s.found_crlf) {
        FUZZ_CHECK(ends_crlf(in, s.consumed));
        // the first CRLF: no earlier one
        FUZZ_CHECK(in.substr(0, s.consumed - 1).find("\r\n") == std::string_view::npos);
    } else {
        FUZZ_CHECK(in.find("\r\n") == std::string_view::npos);
        const bool trailing_cr = !in.empty() && in.back() == '\r';
        FUZZ_CHECK(s.consumed == in.size() - (trailing_cr ? 1 : 0));
    }
}

// One call; returns the result after checking it.
command_parse check_one(std::string_view in, std::size_t max) {
    command_parse r = parse_command(in, max);
    FUZZ_CHECK(r.consumed <= in.size());
    switch (r.status) {
    case parse_status::complete: {
        FUZZ_CHECK(r.error == command_error::none);
        FUZZ_CHECK(ends_crlf(in, r.consumed));
        FUZZ_CHECK(r.consumed <= max);
        std::string_view line = in.substr(0, r.consumed - 2);
        // Only CRLF ends a line; a complete line holds no CR, LF or NUL.
        FUZZ_CHECK(line.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos);
        FUZZ_CHECK(within(r.verb_text, line));
        FUZZ_CHECK(within(r.argument, line));
        FUZZ_CHECK(r.verb_text.find(' ') == std::string_view::npos);
        FUZZ_CHECK(r.argument.empty() || r.argument.back() != ' ');
        if (r.cmd != verb::unknown) {
            std::string_view name = verb_name(r.cmd);
            FUZZ_CHECK(name.size() == r.verb_text.size());
            for (std::size_t i = 0; i < name.size(); ++i) {
                char c = r.verb_text[i];
                if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
                FUZZ_CHECK(c == name[i]);
            }
        } else {
            FUZZ_CHECK(verb_name(r.cmd).empty());
        }
        // Any shorter prefix of a complete line is still incomplete.
        command_parse p = parse_command(in.substr(0, r.consumed - 1), max);
        FUZZ_CHECK(p.status == parse_status::need_more);
        break;
    }
    case parse_status::need_more:
        FUZZ_CHECK(r.error == command_error::none);
        FUZZ_CHECK(r.consumed == 0);
        FUZZ_CHECK(in.size() < max);
        FUZZ_CHECK(in.find("\r\n") == std::string_view::npos);
        break;
    case parse_status::error:
        FUZZ_CHECK(r.error != command_error::none);
        if (r.error == command_error::line_too_long) {
            FUZZ_CHECK(in.size() >= max);
            FUZZ_CHECK(in.substr(0, max).find("\r\n") == std::string_view::npos);
            if (r.line_ended) FUZZ_CHECK(ends_crlf(in, r.consumed));
        } else {
            // bare_lf / bare_cr / nul_byte: the whole line up to its CRLF.
            FUZZ_CHECK(r.line_ended);
            FUZZ_CHECK(ends_crlf(in, r.consumed));
            FUZZ_CHECK(r.consumed <= max);
            FUZZ_CHECK(in.substr(0, r.consumed - 1).find("\r\n") == std::string_view::npos);
        }
        break;
    }
    return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::size_t max = limits[data[0] % limits.size()];
    std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);

    check_skip(in);

    // A session's receive loop over the whole buffer.
    std::string_view rest = in;
    bool skipping = false;
    while (!rest.empty()) {
        if (skipping) {
            skip_result s = skip_line(rest);
            if (!s.found_crlf) break;  // rest of the line arrives later
            rest.remove_prefix(s.consumed);
            skipping = false;
            continue;
        }
        command_parse r = check_one(rest, max);
        if (r.status == parse_status::need_more) break;
        if (r.status == parse_status::error && r.error == command_error::line_too_long &&
            !r.line_ended) {
            skipping = true;
            if (r.consumed == 0) break;  // only a trailing CR is left
        } else {
            FUZZ_CHECK(r.consumed > 0);  // progress
        }
        rest.remove_prefix(r.consumed);
    }
    return 0;
}
