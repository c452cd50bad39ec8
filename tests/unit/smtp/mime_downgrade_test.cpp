#include "protocols/smtp/mime_downgrade.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

using ringmail::smtp::append_quoted_printable;
using ringmail::smtp::downgrade_8bit_mime;
using ringmail::smtp::downgrade_result;

namespace {

// The converted message, or nullopt when it goes as it is.
std::optional<std::string> converted(std::string_view m) {
    downgrade_result r = downgrade_8bit_mime(m);
    if (r.outcome != downgrade_result::status::converted) return std::nullopt;
    return r.message;
}

std::string qp(std::string_view s) {
    std::string out;
    append_quoted_printable(s, out);
    return out;
}

// RFC 2045 §6.7 decoding, strict enough to check what the encoder wrote.
std::string unqp(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '=') {
            out.push_back(s[i]);
        } else if (s.substr(i + 1, 2) == "\r\n") {
            i += 2;  // soft line break
        } else {
            out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
            i += 2;
        }
    }
    return out;
}

bool seven_bit(std::string_view s) {
    for (unsigned char c : s)
        if (c >= 0x80) return false;
    return true;
}

void expect_short_lines(std::string_view s) {
    size_t pos = 0;
    while (pos < s.size()) {
        size_t eol = s.find("\r\n", pos);
        size_t end = eol == std::string_view::npos ? s.size() : eol;
        EXPECT_LE(end - pos, 76u) << s.substr(pos, end - pos);
        if (eol == std::string_view::npos) break;
        pos = eol + 2;
    }
}

}  // namespace

TEST(quoted_printable, PlainTextStaysAndSpecialOctetsAreEscaped) {
    EXPECT_EQ(qp("Hello, world!\r\n"), "Hello, world!\r\n");
    EXPECT_EQ(qp("a=b\r\n"), "a=3Db\r\n");
    EXPECT_EQ(qp("caf\xc3\xa9\r\n"), "caf=C3=A9\r\n");
    EXPECT_EQ(qp("tab\there\r\n"), "tab\there\r\n");
    // white space ending a line would be lost in transport: escaped
    EXPECT_EQ(qp("end \r\nend\t\r\n"), "end=20\r\nend=09\r\n");
    EXPECT_EQ(qp("no final line break"), "no final line break");
    EXPECT_EQ(qp("\r\n\r\n"), "\r\n\r\n");
}

TEST(quoted_printable, LongLinesGetSoftBreaksAndDecodeBack) {
    std::string line(200, 'x');
    line += "\xe2\x82\xac tail ";
    std::string text = line + "\r\n" + std::string(75, '=') + "\r\nshort\r\n";
    std::string enc = qp(text);
    expect_short_lines(enc);
    EXPECT_TRUE(seven_bit(enc));
    EXPECT_EQ(unqp(enc), text);
}

TEST(quoted_printable, NoEncodedLineStartsWithADash) {
    std::string line(75, 'a');
    line += "--boundary";
    std::string enc = qp(line + "\r\n");
    EXPECT_EQ(enc.find("\r\n-"), std::string::npos) << enc;
    EXPECT_EQ(unqp(enc), line + "\r\n");
    EXPECT_EQ(qp("--a=b\r\n-x\r\n"), "=2D-a=3Db\r\n=2Dx\r\n");
}

TEST(quoted_printable, WithoutLineBreaksCrLfAreOctets) {
    std::string enc;
    append_quoted_printable("ab\r\ncd\r\n", enc, false);
    EXPECT_EQ(enc, "ab=0D=0Acd=0D=0A");
}

TEST(mime_downgrade, NothingToDoForSevenBitOrUndeclaredEightBit) {
    EXPECT_FALSE(converted("Subject: hi\r\n\r\nplain\r\n"));
    // 8-bit without a declaration: nothing says what it is (Postfix leaves it too)
    EXPECT_FALSE(converted("Subject: hi\r\n\r\ncaf\xc3\xa9\r\n"));
    // declared 8bit, but only a header field is 8-bit: header fields are not converted
    EXPECT_FALSE(converted("Subject: caf\xc3\xa9\r\nContent-Transfer-Encoding: 8bit\r\n\r\nplain\r\n"));
}

TEST(mime_downgrade, SinglePartDeclaredEightBitBecomesQuotedPrintable) {
    std::string body = "Gr\xc3\xbc\xc3\x9f" "e aus K\xc3\xb6ln\r\n.\r\nend\r\n";
    std::string msg = "From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                      "content-transfer-encoding:\r\n  8BIT (yes)\r\nSubject: x\r\n\r\n" + body;
    auto out = converted(msg);
    ASSERT_TRUE(out);
    EXPECT_TRUE(seven_bit(*out));
    std::string headers = "From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                          "Content-Transfer-Encoding: quoted-printable\r\nSubject: x\r\n\r\n";
    ASSERT_EQ(out->substr(0, headers.size()), headers);
    EXPECT_EQ(unqp(out->substr(headers.size())), body);
}

TEST(mime_downgrade, MultipartConvertsOnlyItsEightBitPartsAndKeepsTheStructure) {
    std::string part1 = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                        "na\xc3\xafve\r\nsecond line";
    std::string part2 = "Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n\r\nascii only";
    std::string part3 = "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC";
    std::string msg = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"=_b 1\"\r\n"
                      "Content-Transfer-Encoding: 8bit\r\n\r\n"
                      "preamble\r\n--=_b 1\r\n" + part1 + "\r\n--=_b 1  \r\n" + part2 + "\r\n--=_b 1\r\n" + part3 +
                      "\r\n--=_b 1--\r\nepilogue\r\n";
    auto out = converted(msg);
    ASSERT_TRUE(out);
    EXPECT_TRUE(seven_bit(*out));
    std::string want_part1 = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
                             "\r\n\r\nna=C3=AFve\r\nsecond line";
    std::string want = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"=_b 1\"\r\n"
                       "Content-Transfer-Encoding: 7bit\r\n\r\n"
                       "preamble\r\n--=_b 1\r\n" + want_part1 + "\r\n--=_b 1  \r\n" + part2 + "\r\n--=_b 1\r\n" +
                       part3 + "\r\n--=_b 1--\r\nepilogue\r\n";
    EXPECT_EQ(*out, want);
}

TEST(mime_downgrade, AttachedMessagesAreWalked) {
    std::string inner = "Subject: inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                        "\xc3\xa5\r\n";
    std::string msg = "Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
                      "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + inner +
                      "\r\n--XX--\r\n";
    auto out = converted(msg);
    ASSERT_TRUE(out);
    EXPECT_TRUE(seven_bit(*out));
    EXPECT_NE(out->find("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
                        "Subject: inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable"
                        "\r\n\r\n=C3=A5\r\n\r\n--XX--\r\n"),
              std::string::npos)
        << *out;
}

TEST(mime_downgrade, UnclosedMultipartAndDeepNestingStayBounded) {
    std::string unclosed = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                           "Content-Transfer-Encoding: 8bit\r\n\r\n\xc3\xa9t\xc3\xa9\r\n";
    auto out = converted(unclosed);
    ASSERT_TRUE(out);
    EXPECT_TRUE(seven_bit(*out));
    EXPECT_NE(out->find("=C3=A9t=C3=A9\r\n"), std::string::npos) << *out;

    // 1000 nested multiparts: converted down to the depth limit, then left as is
    std::string deep;
    for (int i = 0; i < 1000; ++i) deep += "Content-Type: multipart/mixed; boundary=b" + std::to_string(i) +
                                           "\r\n\r\n--b" + std::to_string(i) + "\r\n";
    deep += "Content-Transfer-Encoding: 8bit\r\n\r\n\xc3\xa9\r\n";
    // the 8-bit part is past the limit: cannot be converted (the caller bounces)
    auto r = downgrade_8bit_mime(deep);
    EXPECT_EQ(r.outcome, downgrade_result::status::unconvertible);
    EXPECT_NE(r.why.find("nesting"), std::string::npos) << r.why;
}

TEST(mime_downgrade, AnEncodedLineNeverBecomesADelimiter) {
    // boundary "a=3Db": the part's line "--a=b" would encode to "--a=3Db"
    std::string msg = "Content-Type: multipart/mixed; boundary=\"a=3Db\"\r\n\r\n--a=3Db\r\n"
                      "Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xc3\xa9\r\n--a=b\r\n"
                      "Content-Type: text/html\r\n\r\n<p>hidden</p>\r\n--a=3Db--\r\n";
    auto out = converted(msg);
    ASSERT_TRUE(out);
    size_t delimiters = 0;
    for (size_t pos = 0; (pos = out->find("\r\n--a=3Db", pos)) != std::string::npos; ++pos) ++delimiters;
    EXPECT_EQ(delimiters, 2u) << *out;  // the opening and the closing one, no new one
    EXPECT_NE(out->find("=2D-a=3Db\r\n"), std::string::npos) << *out;
}

TEST(mime_downgrade, RecognisesCommentsQuotesAndDigestDefaults) {
    auto out = converted("Content-Transfer-Encoding: (old) \"8bit\"\r\n\r\n\xc3\xa9\r\n");
    ASSERT_TRUE(out);
    EXPECT_EQ(*out, "Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9\r\n");
    // a multipart/digest part without Content-Type is a message/rfc822
    std::string digest = "Content-Type: (c) multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
                         "Subject: inner\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xc3\xa5\r\n--d--\r\n";
    out = converted(digest);
    ASSERT_TRUE(out);
    EXPECT_TRUE(seven_bit(*out)) << *out;
}

TEST(mime_downgrade, NonTextPartsKeepNoHardLineBreaks) {
    std::string msg = "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n";
    msg += std::string("\xff\x00\r\n\x01", 5);
    auto out = converted(msg);
    ASSERT_TRUE(out);
    EXPECT_EQ(*out, "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                    "=FF=00=0D=0A=01");
}

TEST(mime_downgrade, AMultipartStaysEightBitWhileItsPreambleIs) {
    std::string msg = "Content-Type: multipart/mixed; boundary=b\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                      "pr\xc3\xa9" "amble\r\n--b\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xc3\xa9\r\n--b--\r\n";
    auto out = converted(msg);
    ASSERT_TRUE(out);
    EXPECT_NE(out->find("Content-Transfer-Encoding: 8bit\r\n\r\npr\xc3\xa9" "amble"), std::string::npos) << *out;
    EXPECT_NE(out->find("quoted-printable\r\n\r\n=C3=A9\r\n--b--"), std::string::npos) << *out;
}

TEST(mime_downgrade, FindsEscapedAndRfc2231Boundaries) {
    std::string part = "\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xc3\xa9\r\n";
    // quoted-string with an escaped quote: the boundary is a"b
    auto out = converted("Content-Type: multipart/mixed; boundary=\"a\\\"b\"\r\n\r\n--a\"b" + part + "--a\"b--\r\n");
    ASSERT_TRUE(out);
    EXPECT_TRUE(seven_bit(*out)) << *out;
    // RFC 2231: boundary*=us-ascii'en'x%2Fy is x/y
    out = converted("Content-Type: multipart/mixed; boundary*=us-ascii'en'x%2Fy\r\n\r\n--x/y" + part + "--x/y--\r\n");
    ASSERT_TRUE(out);
    EXPECT_TRUE(seven_bit(*out)) << *out;
}

TEST(mime_downgrade, EightBitMessagePartialCannotBeConverted) {
    auto r = downgrade_8bit_mime("Content-Type: message/partial; id=x; number=1\r\nContent-Transfer-Encoding: 8bit\r\n"
                                 "\r\n\xc3\xa9\r\n");
    EXPECT_EQ(r.outcome, downgrade_result::status::unconvertible);
    EXPECT_NE(r.why.find("message/partial"), std::string::npos) << r.why;
    // 8-bit only in its header fields: nothing to convert, nothing refused
    r = downgrade_8bit_mime("Subject: K\xc3\xb6ln\r\nContent-Type: message/partial; id=x\r\n\r\nascii\r\n");
    EXPECT_EQ(r.outcome, downgrade_result::status::unchanged);
}
