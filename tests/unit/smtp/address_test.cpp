#include "protocols/smtp/address.h"

#include <gtest/gtest.h>

#include <string>

#include "guard_page.h"

namespace ringmail::smtp {
namespace {

using test::guarded_input;
using ae = address_error;

struct path_case {
    std::string_view arg;  // MAIL argument
    bool ok;
    ae error;
    std::string_view mailbox;
    std::string_view local;
    std::string_view domain;
    const char* comment;
};

const path_case mail_cases[] = {
    {"FROM:<a@b.example>", true, {}, "a@b.example", "a", "b.example", "plain"},
    {"from:<a@b.example>", true, {}, "a@b.example", "a", "b.example", "lower-case prefix"},
    {"FROM: <a@b.example>", true, {}, "a@b.example", "a", "b.example", "one SP after colon"},
    {"FROM:  <a@b.example>", false, ae::missing_angle, "", "", "", "two SP after colon"},
    {"FROM:<>", true, {}, "", "", "", "null sender"},
    {"FROM:<first.last@sub.b-c.example>", true, {}, "first.last@sub.b-c.example",
     "first.last", "sub.b-c.example", "dots and hyphen"},
    {"FROM:<\"a b\"@c>", true, {}, "\"a b\"@c", "\"a b\"", "c", "quoted local part"},
    {"FROM:<\"a\\\"b\"@c>", true, {}, "\"a\\\"b\"@c", "\"a\\\"b\"", "c", "quoted-pair"},
    {"FROM:<\"a>b\"@c>", true, {}, "\"a>b\"@c", "\"a>b\"", "c", "> inside quotes"},
    {"FROM:<\"a@b\"@c>", true, {}, "\"a@b\"@c", "\"a@b\"", "c", "open relay: quoted @"},
    {"FROM:<a%b@c>", true, {}, "a%b@c", "a%b", "c", "open relay: percent hack"},
    {"FROM:<b!a@c>", true, {}, "b!a@c", "b!a", "c", "open relay: bang path"},
    {"FROM:<@route:a@b>", true, {}, "a@b", "a", "b", "source route dropped"},
    {"FROM:<@r1.example,@r2.example:u@d>", true, {}, "u@d", "u", "d", "two hops"},
    {"FROM:<a@[192.0.2.1]>", true, {}, "a@[192.0.2.1]", "a", "[192.0.2.1]", "IPv4 literal"},
    {"FROM:<a@[IPv6:2001:db8::1]>", true, {}, "a@[IPv6:2001:db8::1]", "a",
     "[IPv6:2001:db8::1]", "IPv6 literal"},
    {"FROM:<a@[ipv6:::ffff:192.0.2.1]>", true, {}, "a@[ipv6:::ffff:192.0.2.1]", "a",
     "[ipv6:::ffff:192.0.2.1]", "IPv6v4 literal"},
    {"FROM:<a@[256.0.0.1]>", false, ae::bad_address_literal, "", "", "", "octet > 255"},
    {"FROM:<a@[1.2.3]>", false, ae::bad_address_literal, "", "", "", "3 octets"},
    {"FROM:<a@[IPv6:zz::1]>", false, ae::bad_address_literal, "", "", "", "bad v6"},
    {"FROM:<a@[x-tag:foo]>", false, ae::bad_address_literal, "", "", "", "general literal"},
    {"FROM:<a@[1.2.3.4>", false, ae::bad_address_literal, "", "", "", "no ]"},
    {"FROM:a@b", false, ae::missing_angle, "", "", "", "no angle brackets"},
    {"FROM:<a@b", false, ae::missing_angle, "", "", "", "no closing >"},
    {"TO:<a@b>", false, ae::missing_prefix, "", "", "", "wrong prefix"},
    {"FROM <a@b>", false, ae::missing_prefix, "", "", "", "no colon"},
    {"FROM:<@b>", false, ae::empty_local_part, "", "", "", "empty local part"},
    {"FROM:<\"\"@b>", false, ae::empty_local_part, "", "", "", "empty quoted local part"},
    {"FROM:<a>", false, ae::missing_domain, "", "", "", "no domain"},
    {"FROM:<a@>", false, ae::missing_domain, "", "", "", "empty domain"},
    {"FROM:<.a@b>", false, ae::bad_local_part, "", "", "", "leading dot"},
    {"FROM:<a.@b>", false, ae::bad_local_part, "", "", "", "trailing dot"},
    {"FROM:<a..b@c>", false, ae::bad_local_part, "", "", "", "double dot"},
    {"FROM:<a b@c>", false, ae::bad_local_part, "", "", "", "space"},
    {"FROM:<a\"b@c>", false, ae::unbalanced_quote, "", "", "", "quote in atom"},
    {"FROM:<\"ab@c>", false, ae::unbalanced_quote, "", "", "", "unclosed quote"},
    {"FROM:<\"a\"b@c>", false, ae::bad_local_part, "", "", "", "text after quoted string"},
    {"FROM:<a@b..c>", false, ae::bad_domain, "", "", "", "empty label"},
    {"FROM:<a@-b.c>", false, ae::bad_domain, "", "", "", "label starts with -"},
    {"FROM:<a@b-.c>", false, ae::bad_domain, "", "", "", "label ends with -"},
    {"FROM:<a@b.c.>", false, ae::bad_domain, "", "", "", "trailing dot"},
    {"FROM:<a@b_c>", false, ae::bad_domain, "", "", "", "underscore"},
    {"FROM:<a@b@c>", false, ae::bad_domain, "", "", "", "two @"},
    {"FROM:<@a:>", false, ae::empty_local_part, "", "", "", "route only"},
    {"FROM:<@a,b:c@d>", false, ae::bad_source_route, "", "", "", "route without @"},
    {"FROM:<@-a:c@d>", false, ae::bad_source_route, "", "", "", "bad route domain"},
    {"FROM:<a\r@b>", false, ae::control_char, "", "", "", "CR"},
    {"FROM:<a\n@b>", false, ae::control_char, "", "", "", "LF"},
    {std::string_view("FROM:<a\0@b>", 11), false, ae::control_char, "", "", "", "NUL"},
    {"FROM:<a\t@b>", false, ae::control_char, "", "", "", "TAB"},
    {"FROM:<a\x7f@b>", false, ae::control_char, "", "", "", "DEL"},
    {"FROM:<a@b>x", false, ae::trailing_garbage, "", "", "", "garbage after >"},
    {"FROM:<\xc3\xa9@b\xc3\xa9.example>", true, {}, "\xc3\xa9@b\xc3\xa9.example", "\xc3\xa9",
     "b\xc3\xa9.example", "UTF-8"},
    {"FROM:<\xc3@b>", false, ae::bad_utf8, "", "", "", "truncated UTF-8"},
    {"FROM:<\xc0\xaf@b>", false, ae::bad_utf8, "", "", "", "overlong UTF-8"},
};

TEST(address, mail_paths) {
    for (const auto& c : mail_cases) {
        guarded_input g(c.arg);
        auto r = parse_mail_from(g.view());
        SCOPED_TRACE(c.comment);
        ASSERT_EQ(r.ok(), c.ok) << (r.ok() ? "" : address_error_name(r.error()));
        if (!c.ok) {
            EXPECT_EQ(address_error_name(r.error()), address_error_name(c.error));
            continue;
        }
        EXPECT_EQ(r->path.mailbox, c.mailbox);
        EXPECT_EQ(r->path.local_part, c.local);
        EXPECT_EQ(r->path.domain, c.domain);
    }
}

TEST(address, every_prefix_of_valid_is_rejected_cleanly) {
    // Arguments arrive whole (the command parser found the line), so a
    // truncated argument is an error, never a crash or over-read.
    for (const auto& c : mail_cases) {
        for (std::size_t n = 0; n < c.arg.size(); ++n) {
            guarded_input g(c.arg.substr(0, n));
            auto r = parse_mail_from(g.view());
            if (c.ok && n + 1 < c.arg.size()) {
                EXPECT_FALSE(r.ok()) << c.comment << " " << n;
            }
        }
    }
}

TEST(address, flags) {
    auto r = parse_mail_from("FROM:<>");
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->path.is_null);
    r = parse_mail_from("FROM:<@x:a@[1.2.3.4]>");
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->path.has_source_route);
    EXPECT_TRUE(r->path.is_address_literal);
    EXPECT_FALSE(r->path.has_utf8);
    r = parse_mail_from("FROM:<j\xc3\xb6rg@example>");
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->path.has_utf8);
}

TEST(address, rcpt_paths) {
    auto r = parse_rcpt_to("TO:<a@b>");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->path.mailbox, "a@b");
    r = parse_rcpt_to("to: <a@b>");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(parse_rcpt_to("TO:<>").error(), ae::null_path_not_allowed);
    EXPECT_EQ(parse_rcpt_to("FROM:<a@b>").error(), ae::missing_prefix);
    // RFC 5321 §4.1.1.3
    r = parse_rcpt_to("TO:<postMaster>");
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->path.is_postmaster);
    EXPECT_EQ(r->path.domain, "");
    EXPECT_EQ(parse_mail_from("FROM:<Postmaster>").error(), ae::missing_domain);
    r = parse_rcpt_to("TO:<@relay:\"a@b\"@c>");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->path.domain, "c");
    EXPECT_EQ(r->path.mailbox, "\"a@b\"@c");
}

TEST(address, length_limits) {
    // RFC 5321 §4.5.3.1.1: local part 64
    std::string l64(64, 'l'), l65(65, 'l');
    const std::string from = "FROM:<", from_a = "FROM:<a@";
    EXPECT_TRUE(parse_mail_from(from + l64 + "@d>").ok());
    EXPECT_EQ(parse_mail_from(from + l65 + "@d>").error(), ae::local_part_too_long);
    std::string q65 = std::string("\"").append(63, 'q').append("\"");  // 65 with quotes
    EXPECT_EQ(parse_mail_from(from + q65 + "@d>").error(), ae::local_part_too_long);
    // RFC 5321 §4.5.3.1.3: path 256 incl. "<" ">"
    std::string label(63, 'd');
    std::string dom = label + "." + label + "." + label + ".";  // 192
    std::string d_fit = dom + std::string(256 - 2 - 2 - 192, 'e');  // path = 256
    EXPECT_TRUE(parse_mail_from(from_a + d_fit + ">").ok());
    EXPECT_EQ(parse_mail_from(from_a + d_fit + "e>").error(), ae::path_too_long);
    // label > 63
    EXPECT_EQ(parse_mail_from(from_a + std::string(64, 'x') + ">").error(), ae::bad_domain);
    // RFC 5321 §4.5.3.1.2: domain 255, with a larger path limit
    address_limits big;
    big.max_path_bytes = 1000;
    std::string d255 = dom + label;  // 255
    EXPECT_TRUE(parse_mail_from(from_a + d255 + ">", big).ok());
    EXPECT_EQ(parse_mail_from(from_a + d255 + "x>", big).error(), ae::domain_too_long);
    std::string d256 = dom + label.substr(1) + ".xx";  // 192+62+3 = 257
    EXPECT_EQ(parse_mail_from(from_a + d256 + ">", big).error(), ae::domain_too_long);
}

struct param_case {
    std::string_view arg;
    bool ok;
    ae error;
    const char* comment;
};

const param_case mail_param_cases[] = {
    {"FROM:<a@b> SIZE=1000", true, {}, "size"},
    {"FROM:<a@b> size=0", true, {}, "size lower case, zero"},
    {"FROM:<a@b> SIZE=18446744073709551615", true, {}, "u64 max"},
    {"FROM:<a@b> SIZE=18446744073709551616", false, ae::bad_size, "u64 max + 1"},
    {"FROM:<a@b> SIZE=99999999999999999999", false, ae::bad_size, "20 nines overflow"},
    {"FROM:<a@b> SIZE=000000000000000000001", false, ae::bad_size, "21 digits"},
    {"FROM:<a@b> SIZE=12a", false, ae::bad_size, "non-digit"},
    {"FROM:<a@b> SIZE=-1", false, ae::bad_size, "negative"},
    {"FROM:<a@b> SIZE", false, ae::bad_size, "no value"},
    {"FROM:<a@b> SIZE=", false, ae::bad_param_syntax, "empty value"},
    {"FROM:<a@b> SIZE=1 SIZE=2", false, ae::duplicate_param, "repeated"},
    {"FROM:<a@b> BODY=8BITMIME", true, {}, "8bitmime"},
    {"FROM:<a@b> body=7bit", true, {}, "7bit"},
    {"FROM:<a@b> BODY=BINARYMIME", true, {}, "binarymime"},
    {"FROM:<a@b> BODY=9BIT", false, ae::bad_body, "bad body"},
    {"FROM:<a@b> SMTPUTF8", true, {}, "smtputf8"},
    {"FROM:<a@b> SMTPUTF8=yes", false, ae::bad_smtputf8, "smtputf8 with value"},
    {"FROM:<a@b> RET=FULL", true, {}, "ret full"},
    {"FROM:<a@b> RET=hdrs", true, {}, "ret hdrs"},
    {"FROM:<a@b> RET=BODY", false, ae::bad_ret, "bad ret"},
    {"FROM:<a@b> ENVID=QQ314159+2B1", true, {}, "envid with hexchar"},
    {"FROM:<a@b> ENVID=a+2b", false, ae::bad_envid, "lower-case hex"},
    {"FROM:<a@b> ENVID=a+2", false, ae::bad_envid, "short hexchar"},
    {"FROM:<a@b> ENVID=abc+0D+0AX-Injected:+20yes", false, ae::bad_envid, "envid decoding to CR LF"},
    {"FROM:<a@b> ENVID=abc+00def", false, ae::bad_envid, "envid decoding to NUL"},
    {"FROM:<a@b> ENVID=a+7Fb", false, ae::bad_envid, "envid decoding to DEL"},
    {"FROM:<a@b> ENVID=a+20b+7E", true, {}, "envid decoding to space and tilde"},
    {"FROM:<a@b> AUTH=<>", true, {}, "auth <>"},
    {"FROM:<a@b> AUTH=e+3Dmc2@example.com", true, {}, "auth xtext"},
    {"FROM:<a@b> NOTIFY=NEVER", false, ae::unknown_param, "rcpt param on mail"},
    {"FROM:<a@b> XFOO=1", false, ae::unknown_param, "unknown"},
    {"FROM:<a@b> -X=1", false, ae::bad_param_syntax, "keyword starts with -"},
    {"FROM:<a@b> SIZE=1\r", false, ae::control_char, "CR in param"},
    {"FROM:<a@b> SIZE=1\n", false, ae::control_char, "LF in param"},
    {std::string_view("FROM:<a@b> SIZE=1\0", 18), false, ae::control_char, "NUL in param"},
    {"FROM:<a@b> ENVID=a\rb", false, ae::control_char, "CR in envid"},
    {"FROM:<a@b>  SIZE=1   BODY=8BITMIME", true, {}, "extra spaces"},
    {"FROM:<a@b> SIZE=1 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x AUTH=<>", true, {}, "all"},
};

TEST(address, mail_params_table) {
    for (const auto& c : mail_param_cases) {
        guarded_input g(c.arg);
        auto r = parse_mail_from(g.view());
        SCOPED_TRACE(c.comment);
        ASSERT_EQ(r.ok(), c.ok) << (r.ok() ? "" : address_error_name(r.error()));
        if (!c.ok) {
            EXPECT_EQ(address_error_name(r.error()), address_error_name(c.error));
        }
    }
}

TEST(address, mail_params_values) {
    auto r = parse_mail_from(
        "FROM:<a@b> SIZE=12345 BODY=8bitmime SMTPUTF8 RET=HDRS ENVID=QQ+2B1 AUTH=<>");
    ASSERT_TRUE(r.ok());
    const mail_params& p = r->params;
    EXPECT_TRUE(p.has_size);
    EXPECT_EQ(p.size, 12345u);
    EXPECT_EQ(p.body, body_type::eight_bit_mime);
    EXPECT_TRUE(p.smtputf8);
    EXPECT_EQ(p.ret, ret_type::hdrs);
    EXPECT_EQ(p.envid, "QQ+2B1");
    EXPECT_EQ(p.auth, "<>");
    address_limits lim;
    lim.max_params = 2;
    EXPECT_EQ(parse_mail_from("FROM:<a@b> SIZE=1 BODY=7BIT SMTPUTF8", lim).error(),
              ae::too_many_params);
    std::string envid101 = "FROM:<a@b> ENVID=" + std::string(101, 'e');
    EXPECT_EQ(parse_mail_from(envid101).error(), ae::bad_envid);
}

const param_case rcpt_param_cases[] = {
    {"TO:<a@b> NOTIFY=NEVER", true, {}, "never"},
    {"TO:<a@b> NOTIFY=SUCCESS,FAILURE,DELAY", true, {}, "list"},
    {"TO:<a@b> notify=delay", true, {}, "lower case"},
    {"TO:<a@b> NOTIFY=NEVER,SUCCESS", false, ae::bad_notify, "never not exclusive"},
    {"TO:<a@b> NOTIFY=SUCCESS,NEVER", false, ae::bad_notify, "never not exclusive 2"},
    {"TO:<a@b> NOTIFY=SUCCESS,,DELAY", false, ae::bad_notify, "empty item"},
    {"TO:<a@b> NOTIFY=SUCCESS,SUCCESS", false, ae::bad_notify, "repeated item"},
    {"TO:<a@b> NOTIFY=SOMETIMES", false, ae::bad_notify, "unknown item"},
    {"TO:<a@b> NOTIFY", false, ae::bad_notify, "no value"},
    {"TO:<a@b> NOTIFY=NEVER NOTIFY=NEVER", false, ae::duplicate_param, "repeated"},
    {"TO:<a@b> ORCPT=rfc822;a+40b", true, {}, "orcpt"},
    {"TO:<a@b> ORCPT=rfc822;", false, ae::bad_orcpt, "empty address"},
    {"TO:<a@b> ORCPT=;a", false, ae::bad_orcpt, "empty type"},
    {"TO:<a@b> ORCPT=rfc822", false, ae::bad_orcpt, "no ;"},
    {"TO:<a@b> ORCPT=rfc822;a+4", false, ae::bad_orcpt, "bad xtext"},
    {"TO:<a@b> ORCPT=rfc822;orig+0D+0AX-Injected:+20yes@y", false, ae::bad_orcpt, "orcpt decoding to CR LF"},
    {"TO:<a@b> ORCPT=rfc822;a+00b@y", false, ae::bad_orcpt, "orcpt decoding to NUL"},
    {"TO:<a@b> ORCPT=utf-8;j\xc3\xb6rg@x", true, {}, "utf-8 type"},
    {"TO:<a@b> SIZE=1", false, ae::unknown_param, "mail param on rcpt"},
    {"TO:<a@b> NOTIFY=NEVER\n", false, ae::control_char, "LF"},
};

TEST(address, rcpt_params_table) {
    for (const auto& c : rcpt_param_cases) {
        guarded_input g(c.arg);
        auto r = parse_rcpt_to(g.view());
        SCOPED_TRACE(c.comment);
        ASSERT_EQ(r.ok(), c.ok) << (r.ok() ? "" : address_error_name(r.error()));
        if (!c.ok) {
            EXPECT_EQ(address_error_name(r.error()), address_error_name(c.error));
        }
    }
}

TEST(address, rcpt_params_values) {
    auto r = parse_rcpt_to("TO:<a@b> NOTIFY=FAILURE,DELAY ORCPT=rfc822;x+2Bz@y");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->params.notify, notify_failure | notify_delay);
    EXPECT_EQ(r->params.orcpt, "rfc822;x+2Bz@y");
    EXPECT_EQ(r->params.orcpt_type, "rfc822");
    EXPECT_EQ(r->params.orcpt_address, "x+2Bz@y");
    r = parse_rcpt_to("TO:<a@b> NOTIFY=NEVER");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->params.notify, notify_never);
}

TEST(address, xtext) {
    // RFC 3461 §4
    EXPECT_TRUE(xtext_valid(""));
    EXPECT_TRUE(xtext_valid("abc+2B+3D"));
    EXPECT_FALSE(xtext_valid("a=b"));
    EXPECT_FALSE(xtext_valid("a b"));
    EXPECT_FALSE(xtext_valid("+2"));
    EXPECT_FALSE(xtext_valid("+2g"));
    EXPECT_FALSE(xtext_valid("+2b"));
    EXPECT_FALSE(xtext_valid("\xc3\xa9"));
    guarded_input g("+");
    EXPECT_FALSE(xtext_valid(g.view()));
    guarded_input g2("ab+4");
    EXPECT_FALSE(xtext_valid(g2.view()));

    char buf[16];
    auto n = xtext_decode("a+2Bb+3D", buf, sizeof buf);
    ASSERT_TRUE(n.has_value());
    EXPECT_EQ(std::string_view(buf, *n), "a+b=");
    EXPECT_FALSE(xtext_decode("abc", buf, 2).has_value());
    EXPECT_FALSE(xtext_decode("a+zz", buf, sizeof buf).has_value());
}

}  // namespace
}  // namespace ringmail::smtp
