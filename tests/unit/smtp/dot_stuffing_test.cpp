#include "protocols/smtp/dot_stuffing.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "guard_page.h"
#include "protocols/smtp/data_reader.h"

namespace ringmail::smtp {
namespace {

using test::guarded_input;

struct stuff_case {
    std::string_view body;
    std::string_view wire;
    const char* comment;
};

const stuff_case stuff_cases[] = {
    {"", ".\r\n", "empty body"},
    {"a\r\n", "a\r\n.\r\n", "ends with CRLF"},
    {"a", "a\r\n.\r\n", "no final CRLF"},
    {"a\r", "a\r\r\n.\r\n", "ends with CR"},
    {".", "..\r\n.\r\n", "single dot"},
    {".\r\n", "..\r\n.\r\n", "dot line"},
    {".a\r\n.b\r\n", "..a\r\n..b\r\n.\r\n", "two dot lines"},
    {"a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n", "embedded terminator"},
    {"a.b\r\n", "a.b\r\n.\r\n", "dot mid-line"},
    {"a\n.b\r\n", "a\n.b\r\n.\r\n", "dot after bare LF is not a line start"},
    {"\r\n.", "\r\n..\r\n.\r\n", "dot at end after CRLF"},
    {"..\r\n", "...\r\n.\r\n", "two dots"},
};

std::string concat(const std::vector<iovec>& v) {
    std::string s;
    for (const iovec& i : v) s.append(static_cast<const char*>(i.iov_base), i.iov_len);
    return s;
}

TEST(dot_stuffing, table) {
    for (const auto& c : stuff_cases) {
        SCOPED_TRACE(c.comment);
        guarded_input g(c.body);
        std::string_view body = g.view();
        EXPECT_EQ(dot_stuff(body), c.wire);
        EXPECT_EQ(dot_stuffed_size(body), c.wire.size());
        std::vector<iovec> segs;
        dot_stuff_segments(body, segs);
        EXPECT_EQ(concat(segs), c.wire);
        // Zero copy: every segment is inside the body or is a short static
        // insertion/terminator, never a copy of body bytes.
        std::size_t from_body = 0;
        for (const iovec& i : segs) {
            const char* p = static_cast<const char*>(i.iov_base);
            EXPECT_GT(i.iov_len, 0u);
            if (p >= body.data() && p + i.iov_len <= body.data() + body.size()) {
                from_body += i.iov_len;
            } else {
                std::string_view s(p, i.iov_len);
                EXPECT_TRUE(s == "." || s == ".\r\n" || s == "\r\n.\r\n") << s;
            }
        }
        EXPECT_EQ(from_body, body.size());
        EXPECT_EQ(dot_unstuff(c.wire),
                  body.empty() || body.ends_with("\r\n") ? std::string(body)
                                                         : std::string(body) + "\r\n");
    }
}

TEST(dot_stuffing, segments_append) {
    std::vector<iovec> segs;
    dot_stuff_segments("a\r\n", segs);
    std::size_t n = segs.size();
    dot_stuff_segments(".b\r\n", segs);
    EXPECT_GT(segs.size(), n);
    EXPECT_EQ(concat(segs), "a\r\n.\r\n..b\r\n.\r\n");
}

// A stored message may come in pieces (head and tail, store/body_split.h):
// stuffing the pieces gives exactly what stuffing the whole does, wherever
// the cuts fall: before a dot line, between CR and LF, on empty pieces.
TEST(dot_stuffing, pieces_stuff_as_the_whole_body) {
    std::mt19937 rng(777);
    const char alphabet[] = {'.', '.', '\r', '\n', 'a'};
    for (int iter = 0; iter < 3000; ++iter) {
        std::size_t len = rng() % 24;
        std::string body;
        for (std::size_t i = 0; i < len; ++i) body.push_back(alphabet[rng() % sizeof alphabet]);
        if (iter % 2 == 0) body = ".x\r\n" + body;
        std::string want = dot_stuff(body);
        for (std::size_t a = 0; a <= body.size(); ++a) {
            std::size_t b = a + rng() % (body.size() - a + 1);
            std::string_view v = body;
            std::string_view pieces[] = {v.substr(0, a), v.substr(a, b - a), v.substr(b)};
            std::vector<iovec> segs;
            dot_stuff_segments(pieces, segs);
            ASSERT_EQ(concat(segs), want) << "cuts at " << a << " and " << b << " of " << testing::PrintToString(body);
            std::string_view two[] = {v.substr(0, a), v.substr(a)};
            segs.clear();
            dot_stuff_segments(two, segs);
            ASSERT_EQ(concat(segs), want) << "cut at " << a << " of " << testing::PrintToString(body);
        }
    }
    std::vector<iovec> segs;
    std::string_view tail_starts_a_dot_line[] = {"a\r\n", ".b\r\n"};
    dot_stuff_segments(tail_starts_a_dot_line, segs);
    EXPECT_EQ(concat(segs), "a\r\n..b\r\n.\r\n");
    segs.clear();
    std::string_view cr_then_lf_dot[] = {"a\r", "\n.b"};
    dot_stuff_segments(cr_then_lf_dot, segs);
    EXPECT_EQ(concat(segs), "a\r\n..b\r\n.\r\n");
    segs.clear();
    std::string_view no_pieces[] = {"", ""};
    dot_stuff_segments(no_pieces, segs);
    EXPECT_EQ(concat(segs), ".\r\n");
}

// Random bodies over an alphabet rich in '.', CR, LF: stuffing then reading
// back (at random split points) gives the body, plus the CRLF the terminator
// adds when the body lacks one.
TEST(dot_stuffing, round_trip_through_data_reader) {
    std::mt19937 rng(12345);
    const char alphabet[] = {'.', '.', '\r', '\n', 'a', 'b', '\0'};
    for (int iter = 0; iter < 3000; ++iter) {
        std::size_t len = rng() % 40;
        std::string body;
        for (std::size_t i = 0; i < len; ++i) body.push_back(alphabet[rng() % sizeof alphabet]);
        if (iter % 3 == 0) body += "\r\n";
        std::string wire = dot_stuff(body);
        std::string expect =
            body.empty() || body.ends_with("\r\n") ? body : body + "\r\n";

        data_reader r;
        std::string got;
        std::size_t consumed = 0;
        bool done = false;
        std::size_t pos = 0;
        while (pos < wire.size() && !done) {
            std::size_t n = 1 + rng() % 8;
            guarded_input g(std::string_view(wire).substr(pos, n));
            data_feed_result fr = r.feed(g.view(), [&](std::string_view p) { got.append(p); });
            consumed += fr.consumed;
            done = fr.done;
            pos += g.view().size();
        }
        ASSERT_TRUE(done) << iter;
        ASSERT_EQ(consumed, wire.size()) << iter;
        ASSERT_EQ(got, expect) << iter;
    }
}

}  // namespace
}  // namespace ringmail::smtp
