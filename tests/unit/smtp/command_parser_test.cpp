#include "protocols/smtp/command_parser.h"

#include <gtest/gtest.h>

#include <string>

#include "guard_page.h"

namespace ringmail::smtp {
namespace {

using test::guarded_input;

struct command_case {
    std::string_view input;
    parse_status status;
    command_error error;
    std::size_t consumed;
    verb cmd;
    std::string_view argument;
    const char* comment;
};

constexpr auto ok = parse_status::complete;
constexpr auto err = parse_status::error;
constexpr auto more = parse_status::need_more;
constexpr auto none = command_error::none;

const command_case command_cases[] = {
    {"EHLO client.example\r\n", ok, none, 21, verb::ehlo, "client.example", "ehlo"},
    {"ehlo client.example\r\n", ok, none, 21, verb::ehlo, "client.example", "lower case verb"},
    {"HeLo x\r\n", ok, none, 8, verb::helo, "x", "mixed case"},
    {"MAIL FROM:<a@b>\r\n", ok, none, 17, verb::mail, "FROM:<a@b>", "mail"},
    {"rcpt TO:<a@b> NOTIFY=NEVER\r\n", ok, none, 28, verb::rcpt, "TO:<a@b> NOTIFY=NEVER", "rcpt"},
    {"DATA\r\n", ok, none, 6, verb::data, "", "no argument"},
    {"BDAT 100 LAST\r\n", ok, none, 15, verb::bdat, "100 LAST", "bdat"},
    {"RSET\r\n", ok, none, 6, verb::rset, "", "rset"},
    {"NOOP\r\n", ok, none, 6, verb::noop, "", "noop"},
    {"QUIT   \r\n", ok, none, 9, verb::quit, "", "trailing spaces trimmed"},
    {"VRFY x\r\n", ok, none, 8, verb::vrfy, "x", "vrfy"},
    {"EXPN x\r\n", ok, none, 8, verb::expn, "x", "expn"},
    {"HELP\r\n", ok, none, 6, verb::help, "", "help"},
    {"StartTLS\r\n", ok, none, 10, verb::starttls, "", "starttls"},
    {"AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n", ok, none, 29, verb::auth, "PLAIN AGJvYgBzZWNyZXQ=", "auth"},
    {"FOO bar\r\n", ok, none, 9, verb::unknown, "bar", "unknown verb"},
    {"MAILFROM:<a@b>\r\n", ok, none, 16, verb::unknown, "", "no space after verb"},
    {"\r\n", ok, none, 2, verb::unknown, "", "empty line"},
    {"NOOP  x \r\n", ok, none, 10, verb::noop, " x", "only one space skipped"},
    {"NOOP\r\nQUIT\r\n", ok, none, 6, verb::noop, "", "pipelined: one line only"},
    {"NOOP\n", more, none, 0, verb::unknown, "", "bare LF is not a line end"},
    {"NOOP\nQUIT\r\n", err, command_error::bare_lf, 11, verb::unknown, "", "bare LF inside"},
    {"NOOP\rQUIT\r\n", err, command_error::bare_cr, 11, verb::unknown, "", "bare CR inside"},
    {"NOOP\r\r\n", err, command_error::bare_cr, 7, verb::unknown, "", "CR CR LF"},
    {std::string_view("NO\0OP\r\n", 7), err, command_error::nul_byte, 7, verb::unknown, "", "NUL"},
    {"NOOP", more, none, 0, verb::unknown, "", "partial"},
    {"NOOP\r", more, none, 0, verb::unknown, "", "CR at end: wait for LF"},
    {"", more, none, 0, verb::unknown, "", "empty input"},
};

TEST(command_parser, table) {
    for (const auto& c : command_cases) {
        guarded_input g(c.input);
        command_parse r = parse_command(g.view(), 512);
        SCOPED_TRACE(c.comment);
        EXPECT_EQ(r.status, c.status);
        EXPECT_EQ(r.error, c.error);
        EXPECT_EQ(r.consumed, c.consumed);
        if (c.status == ok) {
            EXPECT_EQ(r.cmd, c.cmd);
            EXPECT_EQ(r.argument, c.argument);
        }
        if (c.status == err) {
            EXPECT_TRUE(r.line_ended);
        }
    }
}

TEST(command_parser, every_prefix_needs_more) {
    for (const auto& c : command_cases) {
        if (c.status == more) continue;
        for (std::size_t n = 0; n < c.consumed; ++n) {
            guarded_input g(c.input.substr(0, n));
            command_parse r = parse_command(g.view(), 512);
            SCOPED_TRACE(std::string(c.comment) + " prefix " + std::to_string(n));
            EXPECT_EQ(r.status, more);
        }
    }
}

std::string line_of(std::size_t total) {
    // "NOOP " + filler + CRLF, `total` bytes including CRLF.
    std::string s = "NOOP ";
    s.append(total - s.size() - 2, 'x');
    s += "\r\n";
    return s;
}

TEST(command_parser, limit_512_including_crlf) {
    // RFC 5321 §4.5.3.1.4
    std::string l512 = line_of(512);
    guarded_input g(l512);
    command_parse r = parse_command(g.view(), 512);
    EXPECT_EQ(r.status, ok);
    EXPECT_EQ(r.consumed, 512u);

    std::string l513 = line_of(513);
    guarded_input g2(l513);
    r = parse_command(g2.view(), 512);
    EXPECT_EQ(r.status, err);
    EXPECT_EQ(r.error, command_error::line_too_long);
    EXPECT_EQ(r.consumed, 513u);
    EXPECT_TRUE(r.line_ended);
}

TEST(command_parser, too_long_reported_as_soon_as_limit_passed) {
    std::string s(512, 'x');  // no CRLF in 512 bytes: can only be too long
    guarded_input g(s);
    command_parse r = parse_command(g.view(), 512);
    EXPECT_EQ(r.status, err);
    EXPECT_EQ(r.error, command_error::line_too_long);
    EXPECT_FALSE(r.line_ended);
    EXPECT_EQ(r.consumed, 512u);

    std::string t(511, 'x');
    guarded_input g2(t);
    EXPECT_EQ(parse_command(g2.view(), 512).status, more);

    // 511 bytes + CR: the LF could only be byte 513, so already too long.
    std::string u = std::string(511, 'x') + "\r";
    guarded_input g3(u);
    r = parse_command(g3.view(), 512);
    EXPECT_EQ(r.error, command_error::line_too_long);
    EXPECT_EQ(r.consumed, 511u);  // the CR is kept for skip_line
}

TEST(command_parser, skip_long_line_across_buffers) {
    // A 1 MB line arriving in 4 KB buffers, then a real command.
    std::string big(1 << 20, 'A');
    big += "\r\nQUIT\r\n";
    std::size_t pos = 0;
    std::string pending;  // bytes kept by the caller (a trailing CR)
    bool skipping = false;
    bool got_quit = false;
    while (pos < big.size() && !got_quit) {
        std::size_t n = std::min<std::size_t>(4093, big.size() - pos);
        pending.append(big, pos, n);
        pos += n;
        while (!pending.empty()) {
            guarded_input g(pending);
            if (skipping) {
                skip_result s = skip_line(g.view());
                pending.erase(0, s.consumed);
                if (!s.found_crlf) break;
                skipping = false;
                continue;
            }
            command_parse r = parse_command(g.view(), 512);
            if (r.status == more) break;
            if (r.status == err) {
                EXPECT_EQ(r.error, command_error::line_too_long);
                skipping = !r.line_ended;
                pending.erase(0, r.consumed);
                continue;
            }
            EXPECT_EQ(r.cmd, verb::quit);
            got_quit = true;
            pending.erase(0, r.consumed);
        }
        EXPECT_LE(pending.size(), 4096u + 1u);  // bounded buffering
    }
    EXPECT_TRUE(got_quit);
}

TEST(command_parser, skip_line) {
    struct {
        std::string_view in;
        std::size_t consumed;
        bool found;
    } cases[] = {
        {"abc", 3, false},      {"abc\r", 3, false},  {"abc\r\nX", 5, true},
        {"a\nb\r\n", 5, true},  {"\n\r\n", 3, true},  {"", 0, false},
        {"\r", 0, false},       {"\n", 1, false},
    };
    for (const auto& c : cases) {
        guarded_input g(c.in);
        skip_result s = skip_line(g.view());
        EXPECT_EQ(s.consumed, c.consumed) << c.in;
        EXPECT_EQ(s.found_crlf, c.found) << c.in;
    }
}

TEST(command_parser, verb_names) {
    EXPECT_EQ(verb_name(verb::starttls), "STARTTLS");
    EXPECT_EQ(verb_name(verb::unknown), "");
}

}  // namespace
}  // namespace ringmail::smtp
