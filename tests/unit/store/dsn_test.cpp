#include "protocols/smtp/dsn.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace ringmail::smtp {
namespace {

using store::envelope;

struct part {
    std::multimap<std::string, std::string> headers;  // unfolded values
    std::string content;
};

// Splits "headers CRLF CRLF body" and unfolds header lines.
part parse_entity(std::string_view text) {
    part p;
    size_t end = text.find("\r\n\r\n");
    std::string_view head = text.substr(0, end);
    p.content = end == std::string_view::npos ? "" : std::string(text.substr(end + 4));
    std::vector<std::string> lines;
    size_t pos = 0;
    while (pos <= head.size()) {
        size_t eol = head.find("\r\n", pos);
        std::string line(head.substr(pos, eol == std::string_view::npos ? head.size() - pos : eol - pos));
        if (!line.empty() && (line[0] == ' ' || line[0] == '\t') && !lines.empty())
            lines.back() += line;
        else
            lines.push_back(line);
        if (eol == std::string_view::npos) break;
        pos = eol + 2;
    }
    for (const std::string& l : lines) {
        size_t colon = l.find(':');
        if (colon == std::string::npos) continue;
        std::string value = l.substr(colon + 1);
        while (!value.empty() && value[0] == ' ') value.erase(0, 1);
        p.headers.emplace(l.substr(0, colon), value);
    }
    return p;
}

struct parsed_dsn {
    part top;
    std::string boundary;
    std::vector<part> parts;
    bool closed = false;
};

parsed_dsn parse_dsn(const std::string& msg) {
    parsed_dsn d;
    d.top = parse_entity(msg);
    auto ct = d.top.headers.find("Content-Type");
    if (ct == d.top.headers.end()) return d;
    size_t b = ct->second.find("boundary=\"");
    if (b == std::string::npos) return d;
    b += 10;
    d.boundary = ct->second.substr(b, ct->second.find('"', b) - b);
    const std::string delim = "\r\n--" + d.boundary;
    std::string_view body = d.top.content;
    size_t pos = body.find(delim);
    while (pos != std::string_view::npos) {
        size_t start = pos + delim.size();
        if (body.substr(start, 2) == "--") {
            d.closed = body.substr(start) == "--\r\n";
            break;
        }
        start += 2;  // CRLF after the delimiter
        size_t next = body.find(delim, start);
        d.parts.push_back(parse_entity(body.substr(start, next - start)));
        pos = next;
    }
    return d;
}

void expect_crlf_only_and_short_lines(const std::string& msg) {
    size_t line_len = 0;
    for (size_t i = 0; i < msg.size(); ++i) {
        if (msg[i] == '\r') {
            ASSERT_TRUE(i + 1 < msg.size() && msg[i + 1] == '\n') << "bare CR at " << i;
        } else if (msg[i] == '\n') {
            ASSERT_TRUE(i > 0 && msg[i - 1] == '\r') << "bare LF at " << i;
            line_len = 0;
            continue;
        } else {
            ++line_len;
        }
        ASSERT_LE(line_len, 998u) << "long line at " << i;
    }
    ASSERT_GE(msg.size(), 2u);
    EXPECT_EQ(msg.substr(msg.size() - 2), "\r\n");
}

envelope original_envelope() {
    envelope e;
    e.id = 0xABCDEF0123456789ull;
    e.received_at = 1'700'000'000;  // Tue, 14 Nov 2023 22:13:20 +0000
    e.sender = "alice@example.org";
    e.envid = "QQ314159";
    e.recipients.push_back({"bob@example.net", "rfc822;bob@example.net", store::notify_unset,
                            store::rcpt_state::failed, "550 5.1.1 no such user"});
    return e;
}

const std::string original_message =
    "From: alice@example.org\r\n"
    "To: bob@example.net\r\n"
    "Subject: lunch\r\n"
    "\r\n"
    "Body line one\r\n"
    "Body line two\n"  // a bare LF that must be normalised in the bounce
    "SECRET-BODY-MARKER\r\n";

TEST(dsn, structure) {
    envelope env = original_envelope();
    dsn_recipient rcpts[] = {
        {"bob@example.net", "rfc822;bob@example.net", "mx.example.net",
         "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
         "550 5.1.1 Please try again.",
         dsn_failure::permanent},
        {"carol@example.net", "", "", "", dsn_failure::expired},
    };
    dsn_input in{"mail.example.com", env, rcpts, original_message, 1'700'100'000, 42};
    std::string msg = build_dsn(in);
    expect_crlf_only_and_short_lines(msg);

    parsed_dsn d = parse_dsn(msg);
    for (const char* h : {"From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted",
                          "MIME-Version", "Content-Type"})
        EXPECT_EQ(d.top.headers.count(h), 1u) << h;
    EXPECT_EQ(d.top.headers.find("From")->second,
              "Mail Delivery System <MAILER-DAEMON@mail.example.com>");
    EXPECT_EQ(d.top.headers.find("To")->second, "<alice@example.org>");
    EXPECT_EQ(d.top.headers.find("Subject")->second, "Undelivered Mail Returned to Sender");
    EXPECT_EQ(d.top.headers.find("Auto-Submitted")->second, "auto-replied");
    EXPECT_EQ(d.top.headers.find("Date")->second, "Thu, 16 Nov 2023 02:00:00 +0000");
    EXPECT_NE(d.top.headers.find("Content-Type")->second.find(
                  "multipart/report; report-type=delivery-status;"),
              std::string::npos);
    ASSERT_FALSE(d.boundary.empty());
    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_TRUE(d.closed);

    // part 1: human readable
    EXPECT_EQ(d.parts[0].headers.find("Content-Type")->second, "text/plain; charset=us-ascii");
    EXPECT_NE(d.parts[0].content.find("<bob@example.net>: host mx.example.net said: 550 5.1.1 The"),
              std::string::npos);
    EXPECT_NE(d.parts[0].content.find("Please try again."), std::string::npos);
    EXPECT_EQ(d.parts[0].content.find("550-"), std::string::npos);  // continuation codes joined
    EXPECT_NE(d.parts[0].content.find("<carol@example.net>: delivery time expired"),
              std::string::npos);

    // part 2: delivery-status
    EXPECT_EQ(d.parts[1].headers.find("Content-Type")->second, "message/delivery-status");
    const std::string& ds = d.parts[1].content;
    part per_message = parse_entity(ds);
    EXPECT_EQ(per_message.headers.find("Reporting-MTA")->second, "dns; mail.example.com");
    EXPECT_EQ(per_message.headers.find("Original-Envelope-Id")->second, "QQ314159");
    EXPECT_EQ(per_message.headers.find("Arrival-Date")->second, "Tue, 14 Nov 2023 22:13:20 +0000");
    std::vector<part> groups;
    std::string rest = per_message.content;
    while (!rest.empty()) {
        part g = parse_entity(rest);
        groups.push_back(g);
        rest = g.content;
    }
    ASSERT_EQ(groups.size(), 2u);
    EXPECT_EQ(groups[0].headers.find("Final-Recipient")->second, "rfc822; bob@example.net");
    EXPECT_EQ(groups[0].headers.find("Original-Recipient")->second, "rfc822;bob@example.net");
    EXPECT_EQ(groups[0].headers.find("Action")->second, "failed");
    EXPECT_EQ(groups[0].headers.find("Status")->second, "5.1.1");
    EXPECT_EQ(groups[0].headers.find("Remote-MTA")->second, "dns; mx.example.net");
    EXPECT_EQ(groups[0].headers.find("Diagnostic-Code")->second.rfind("smtp; 550 5.1.1 The", 0), 0u);
    EXPECT_EQ(groups[1].headers.find("Final-Recipient")->second, "rfc822; carol@example.net");
    EXPECT_EQ(groups[1].headers.count("Original-Recipient"), 0u);
    EXPECT_EQ(groups[1].headers.find("Status")->second, "4.4.7");
    EXPECT_EQ(groups[1].headers.count("Remote-MTA"), 0u);

    // part 3: the whole original, line ends normalised
    EXPECT_EQ(d.parts[2].headers.find("Content-Type")->second, "message/rfc822");
    EXPECT_NE(d.parts[2].content.find("Subject: lunch\r\n\r\nBody line one\r\nBody line two\r\n"
                                      "SECRET-BODY-MARKER"),
              std::string::npos);
}

TEST(dsn, ret_hdrs_attaches_headers_only) {
    envelope env = original_envelope();
    env.ret = store::dsn_ret::hdrs;
    dsn_recipient rcpts[] = {{"bob@example.net", "", "mx", "550 5.1.1 no", dsn_failure::permanent}};
    dsn_input in{"mail.example.com", env, rcpts, original_message, 1'700'100'000, 1};
    std::string msg = build_dsn(in);
    expect_crlf_only_and_short_lines(msg);
    parsed_dsn d = parse_dsn(msg);
    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_EQ(d.parts[2].headers.find("Content-Type")->second, "text/rfc822-headers");
    EXPECT_NE(d.parts[2].content.find("Subject: lunch"), std::string::npos);
    EXPECT_EQ(msg.find("Body line one"), std::string::npos);
    EXPECT_EQ(msg.find("SECRET-BODY-MARKER"), std::string::npos);
}

TEST(dsn, oversized_original_falls_back_to_headers) {
    envelope env = original_envelope();
    dsn_recipient rcpts[] = {{"bob@example.net", "", "", "550 no", dsn_failure::permanent}};
    dsn_input in{"mail.example.com", env, rcpts, original_message, 1'700'100'000, 1, 64};
    std::string msg = build_dsn(in);
    expect_crlf_only_and_short_lines(msg);
    parsed_dsn d = parse_dsn(msg);
    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_EQ(d.parts[2].headers.find("Content-Type")->second, "text/rfc822-headers");
    EXPECT_EQ(msg.find("SECRET-BODY-MARKER"), std::string::npos);
    EXPECT_NE(d.parts[0].content.find("too large"), std::string::npos);
}

TEST(dsn, header_injection_in_remote_reply_is_neutralised) {
    envelope env = original_envelope();
    env.sender = "alice@example.org>\r\nBcc: victim@evil.example";
    std::string evil = "550 5.7.1 rejected\r\nBcc: victim@evil.example\r\n\r\n"
                       "--fake-boundary\nContent-Type: text/html\r\rX-Evil: 1\x01\x7f";
    dsn_recipient rcpts[] = {{"bob@example.net\r\nX-Evil: 2", "", "mx\r\nX-Evil: 3", evil,
                              dsn_failure::permanent}};
    dsn_input in{"mail.example.com\r\nX-Evil: 4", env, rcpts, original_message, 1'700'100'000, 9};
    std::string msg = build_dsn(in);
    expect_crlf_only_and_short_lines(msg);
    for (const char* bad : {"\r\nBcc:", "\r\nX-Evil:", "\r\nContent-Type: text/html", "\x01", "\x7f"})
        EXPECT_EQ(msg.find(bad), std::string::npos) << bad;
    parsed_dsn d = parse_dsn(msg);
    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_EQ(d.top.headers.count("Bcc"), 0u);
    EXPECT_EQ(d.parts[1].headers.count("X-Evil"), 0u);
    EXPECT_EQ(d.top.headers.find("From")->second,
              "Mail Delivery System <MAILER-DAEMON@mail.example.comX-Evil4>");
}

TEST(dsn, long_remote_reply_is_folded_and_capped) {
    envelope env = original_envelope();
    std::string reply = "550 5.2.2 " + std::string(3000, 'x') + " ";
    for (int i = 0; i < 2000; ++i) reply += "word ";
    dsn_recipient rcpts[] = {{"bob@example.net", "", "mx", reply, dsn_failure::permanent}};
    dsn_input in{"mail.example.com", env, rcpts, original_message, 1'700'100'000, 5};
    std::string msg = build_dsn(in);
    expect_crlf_only_and_short_lines(msg);
    EXPECT_LT(msg.size(), 30000u);  // capped at dsn_max_reply_bytes, twice
    parsed_dsn d = parse_dsn(msg);
    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_NE(msg.find("Status: 5.2.2\r\n"), std::string::npos);
}

TEST(dsn, boundary_not_in_original) {
    envelope env = original_envelope();
    dsn_recipient rcpts[] = {{"bob@example.net", "", "", "550 no", dsn_failure::permanent}};
    // First build to learn the boundary, then embed it in the original.
    dsn_input probe{"h", env, rcpts, "x\r\n", 100, 77};
    std::string b = parse_dsn(build_dsn(probe)).boundary;
    ASSERT_FALSE(b.empty());
    std::string hostile = "Subject: x\r\n\r\n--" + b + "\r\nContent-Type: text/plain\r\n\r\nfake\r\n";
    dsn_input in{"h", env, rcpts, hostile, 100, 77};
    std::string msg = build_dsn(in);
    parsed_dsn d = parse_dsn(msg);
    EXPECT_NE(d.boundary, b);
    ASSERT_EQ(d.parts.size(), 3u);
    EXPECT_TRUE(d.closed);
}

TEST(dsn, status_codes) {
    char s[12];
    EXPECT_EQ(std::string(s, dsn_status("550 5.1.1 no user", dsn_failure::permanent, s)), "5.1.1");
    EXPECT_EQ(std::string(s, dsn_status("554-5.7.123 x", dsn_failure::permanent, s)), "5.7.123");
    EXPECT_EQ(std::string(s, dsn_status("550 no user", dsn_failure::permanent, s)), "5.0.0");
    EXPECT_EQ(std::string(s, dsn_status("", dsn_failure::permanent, s)), "5.0.0");
    EXPECT_EQ(std::string(s, dsn_status("550 5.1.1234 x", dsn_failure::permanent, s)), "5.0.0");
    EXPECT_EQ(std::string(s, dsn_status("451 4.3.0 later", dsn_failure::expired, s)), "4.3.0");
    EXPECT_EQ(std::string(s, dsn_status("connection timed out", dsn_failure::expired, s)), "4.4.7");
    EXPECT_EQ(std::string(s, dsn_status("550 5.1.1 x", dsn_failure::expired, s)), "4.4.7");
    EXPECT_EQ(std::string(s, dsn_status("451 4.3.0 x", dsn_failure::permanent, s)), "5.0.0");
}

TEST(dsn, should_bounce_rules) {
    envelope env = original_envelope();
    EXPECT_TRUE(should_bounce(env));

    envelope null_sender = env;
    null_sender.sender.clear();
    EXPECT_FALSE(should_bounce(null_sender));

    envelope bounce = env;
    bounce.is_dsn = true;
    EXPECT_FALSE(should_bounce(bounce));

    envelope never = env;
    never.recipients[0].notify = store::notify_never;
    EXPECT_FALSE(should_bounce(never));

    envelope success_only = env;
    success_only.recipients[0].notify = store::notify_success | store::notify_delay;
    EXPECT_FALSE(should_bounce(success_only));

    envelope failure = env;
    failure.recipients[0].notify = store::notify_failure;
    EXPECT_TRUE(should_bounce(failure));

    envelope pending = env;
    pending.recipients[0].state = store::rcpt_state::pending;
    EXPECT_FALSE(should_bounce(pending));  // nothing failed yet
    EXPECT_TRUE(should_bounce(pending, pending.recipients[0]));
}

}  // namespace
}  // namespace ringmail::smtp
