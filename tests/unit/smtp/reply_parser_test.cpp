#include "protocols/smtp/reply_parser.h"

#include <gtest/gtest.h>

#include <string>

#include "guard_page.h"

namespace ringmail::smtp {
namespace {

using test::guarded_input;

struct reply_case {
    std::string_view input;
    parse_status status;
    reply_error error;
    std::size_t consumed;
    int code;
    std::size_t lines;
    std::string_view first, last, enhanced;
    const char* comment;
};

constexpr auto ok = parse_status::complete;
constexpr auto bad = parse_status::error;
constexpr auto more = parse_status::need_more;
constexpr auto none = reply_error::none;

const reply_case reply_cases[] = {
    {"250 OK\r\n", ok, none, 8, 250, 1, "OK", "OK", "", "single line"},
    {"250-a\r\n250-b\r\n250 c\r\n", ok, none, 21, 250, 3, "a", "c", "", "multi-line"},
    {"250 2.1.0 Sender ok\r\n", ok, none, 21, 250, 1, "2.1.0 Sender ok", "2.1.0 Sender ok",
     "2.1.0", "enhanced code"},
    {"550 5.1.1 <x@y>: no such user\r\n", ok, none, 31, 550, 1,
     "5.1.1 <x@y>: no such user", "5.1.1 <x@y>: no such user", "5.1.1", "5xx"},
    {"250 5.1.1 mismatched class\r\n", ok, none, 28, 250, 1, "5.1.1 mismatched class",
     "5.1.1 mismatched class", "", "class must match code"},
    {"250 2.1.0123 x\r\n", ok, none, 16, 250, 1, "2.1.0123 x", "2.1.0123 x", "",
     "detail > 3 digits"},
    {"250\r\n", ok, none, 5, 250, 1, "", "", "", "no text"},
    {"250\n", ok, none, 4, 250, 1, "", "", "", "bare LF accepted from servers"},
    {"220 mx ESMTP\r\n250 next\r\n", ok, none, 14, 220, 1, "mx ESMTP", "mx ESMTP", "",
     "pipelined replies: one at a time"},
    {"250-\r\n250 x\r\n", ok, none, 13, 250, 2, "", "x", "", "empty continuation"},
    {"25a OK\r\n", bad, reply_error::bad_code, 0, 0, 0, "", "", "", "non-digit"},
    {"650 OK\r\n", bad, reply_error::bad_code, 0, 0, 0, "", "", "", "first digit 6"},
    {"hello\r\n", bad, reply_error::bad_code, 0, 0, 0, "", "", "", "text"},
    {"25\r\n", bad, reply_error::bad_code, 0, 0, 0, "", "", "", "short code"},
    {"250xOK\r\n", bad, reply_error::bad_separator, 0, 0, 0, "", "", "", "bad separator"},
    {"250\rOK\r\n", bad, reply_error::bad_separator, 0, 0, 0, "", "", "", "CR separator"},
    {"250-a\r\n251 b\r\n", bad, reply_error::code_mismatch, 0, 0, 0, "", "", "", "mismatch"},
    {"250-a\r\n", more, none, 0, 0, 0, "", "", "", "continuation pending"},
};

TEST(reply_parser, table) {
    for (const auto& c : reply_cases) {
        SCOPED_TRACE(c.comment);
        guarded_input g(c.input);
        reply_parse r = parse_reply(g.view());
        EXPECT_EQ(r.status, c.status);
        EXPECT_EQ(r.error, c.error);
        if (c.status != ok) continue;
        EXPECT_EQ(r.consumed, c.consumed);
        EXPECT_EQ(r.code, c.code);
        EXPECT_EQ(r.line_count, c.lines);
        EXPECT_EQ(r.first_text, c.first);
        EXPECT_EQ(r.last_text, c.last);
        EXPECT_EQ(r.enhanced, c.enhanced);
        EXPECT_EQ(r.raw, c.input.substr(0, c.consumed));
    }
}

TEST(reply_parser, every_prefix_needs_more) {
    for (const auto& c : reply_cases) {
        if (c.status != ok) continue;
        for (std::size_t n = 0; n < c.consumed; ++n) {
            guarded_input g(c.input.substr(0, n));
            reply_parse r = parse_reply(g.view());
            EXPECT_EQ(r.status, more) << c.comment << " prefix " << n;
        }
    }
}

TEST(reply_parser, errors_visible_early) {
    guarded_input g("2x");
    EXPECT_EQ(parse_reply(g.view()).error, reply_error::bad_code);
    guarded_input g2("250-a\r\n251");
    EXPECT_EQ(parse_reply(g2.view()).error, reply_error::code_mismatch);
}

TEST(reply_parser, limits) {
    // RFC 5321 §4.5.3.1.5: 512 incl. CRLF.
    std::string l512 = "250 " + std::string(506, 'x') + "\r\n";
    guarded_input g(l512);
    EXPECT_EQ(parse_reply(g.view()).status, ok);
    std::string l513 = "250 " + std::string(507, 'x') + "\r\n";
    guarded_input g2(l513);
    EXPECT_EQ(parse_reply(g2.view()).error, reply_error::line_too_long);
    std::string partial = "250 " + std::string(600, 'x');  // no line end yet
    guarded_input g3(partial);
    EXPECT_EQ(parse_reply(g3.view()).error, reply_error::line_too_long);

    std::string many;
    for (int i = 0; i < 100; ++i) many += "250-x\r\n";
    guarded_input g4(many + "250 end\r\n");
    EXPECT_EQ(parse_reply(g4.view()).error, reply_error::too_many_lines);
    guarded_input g5(many);
    // 100 continuation lines: a 101st must follow, so it is already too many.
    EXPECT_EQ(parse_reply(g5.view()).error, reply_error::too_many_lines);
    guarded_input g7(many.substr(0, many.size() - 7));  // 99 continuation lines
    EXPECT_EQ(parse_reply(g7.view()).status, more);
    std::string hundred;
    for (int i = 0; i < 99; ++i) hundred += "250-x\r\n";
    hundred += "250 end\r\n";
    guarded_input g6(hundred);
    reply_parse r = parse_reply(g6.view());
    EXPECT_EQ(r.status, ok);
    EXPECT_EQ(r.line_count, 100u);
    EXPECT_EQ(parse_reply(g6.view(), 512, 10).error, reply_error::too_many_lines);
}

TEST(reply_parser, line_iteration) {
    reply_parse r = parse_reply("250-a\r\n250-bb\r\n250 ccc\r\n");
    ASSERT_EQ(r.status, ok);
    std::string_view rest = r.raw, text;
    std::string joined;
    while (next_reply_line(rest, text)) joined.append(text).push_back('|');
    EXPECT_EQ(joined, "a|bb|ccc|");
}

TEST(reply_parser, ehlo_capabilities) {
    std::string_view reply =
        "250-mx.example.org Hello [192.0.2.1]\r\n"
        "250-PIPELINING\r\n"
        "250-SIZE 52428800\r\n"
        "250-8bitmime\r\n"
        "250-SMTPUTF8\r\n"
        "250-STARTTLS\r\n"
        "250-ENHANCEDSTATUSCODES\r\n"
        "250-DSN\r\n"
        "250-AUTH PLAIN LOGIN\r\n"
        "250-AUTH=LOGIN\r\n"
        "250-BINARYMIME\r\n"
        "250-X-UNKNOWN foo\r\n"
        "250 CHUNKING\r\n";
    guarded_input g(reply);
    reply_parse r = parse_reply(g.view());
    ASSERT_EQ(r.status, ok);
    ehlo_capabilities caps = parse_ehlo_capabilities(r.raw);
    EXPECT_EQ(caps.greeting, "mx.example.org Hello [192.0.2.1]");
    EXPECT_TRUE(caps.pipelining);
    EXPECT_TRUE(caps.size);
    EXPECT_EQ(caps.size_limit, 52428800u);
    EXPECT_TRUE(caps.eight_bit_mime);
    EXPECT_TRUE(caps.smtputf8);
    EXPECT_TRUE(caps.starttls);
    EXPECT_TRUE(caps.enhanced_status_codes);
    EXPECT_TRUE(caps.dsn);
    EXPECT_TRUE(caps.auth);
    EXPECT_EQ(caps.auth_mechanisms, "PLAIN LOGIN");
    EXPECT_TRUE(caps.binarymime);
    EXPECT_TRUE(caps.chunking);
    EXPECT_TRUE(auth_has_mechanism(caps.auth_mechanisms, "login"));
    EXPECT_FALSE(auth_has_mechanism(caps.auth_mechanisms, "CRAM-MD5"));

    ehlo_capabilities bare = parse_ehlo_capabilities("250-mx\r\n250-SIZE\r\n250 AUTH=PLAIN\r\n");
    EXPECT_TRUE(bare.size);
    EXPECT_EQ(bare.size_limit, 0u);
    EXPECT_FALSE(bare.pipelining);
    EXPECT_TRUE(bare.auth);
    EXPECT_EQ(bare.auth_mechanisms, "PLAIN");

    ehlo_capabilities junk = parse_ehlo_capabilities("250-mx\r\n250 SIZE 99999999999999999999999\r\n");
    EXPECT_TRUE(junk.size);
    EXPECT_EQ(junk.size_limit, 0u);

    ehlo_capabilities one = parse_ehlo_capabilities("250 mx.example\r\n");
    EXPECT_EQ(one.greeting, "mx.example");
    EXPECT_FALSE(one.pipelining);
}

TEST(reply_parser, enhanced_status) {
    EXPECT_EQ(parse_enhanced_status("2.0.0"), "2.0.0");
    EXPECT_EQ(parse_enhanced_status("4.7.123 x"), "4.7.123");
    EXPECT_EQ(parse_enhanced_status("3.0.0"), "");
    EXPECT_EQ(parse_enhanced_status("2.0"), "");
    EXPECT_EQ(parse_enhanced_status("2.0."), "");
    EXPECT_EQ(parse_enhanced_status("2.0.0x"), "");
    EXPECT_EQ(parse_enhanced_status("2.1000.0"), "");
    guarded_input g("5.1.");
    EXPECT_EQ(parse_enhanced_status(g.view()), "");
}

}  // namespace
}  // namespace ringmail::smtp
