#include "protocols/smtp/data_reader.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "guard_page.h"

namespace ringmail::smtp {
namespace {

using test::guarded_input;

struct run_result {
    std::string content;
    std::size_t consumed = 0;
    bool done = false;
    data_flags flags;
    std::uint64_t content_bytes = 0;
};

// Feeds `wire` cut at the given offsets, each piece in its own guarded
// buffer, and checks every emitted piece is either inside that buffer or
// the static one-byte CR.
run_result run(std::string_view wire, const std::vector<std::size_t>& cuts,
               std::size_t max_line = default_max_text_line_bytes) {
    data_reader r(max_line);
    run_result out;
    std::size_t start = 0;
    std::vector<std::size_t> ends = cuts;
    ends.push_back(wire.size());
    for (std::size_t end : ends) {
        if (end < start) continue;
        guarded_input g(wire.substr(start, end - start));
        std::string_view in = g.view();
        data_feed_result fr = r.feed(in, [&](std::string_view piece) {
            EXPECT_FALSE(piece.empty());
            bool inside = piece.data() >= in.data() &&
                          piece.data() + piece.size() <= in.data() + in.size();
            EXPECT_TRUE(inside || piece == "\r") << "piece not from input";
            out.content.append(piece);
        });
        out.consumed += fr.consumed;
        if (fr.done) {
            out.done = true;
            break;
        }
        EXPECT_EQ(fr.consumed, in.size());
        start = end;
    }
    out.flags = r.flags();
    out.content_bytes = r.content_bytes();
    return out;
}

struct data_case {
    std::string_view wire;
    std::string_view content;
    bool done;
    std::size_t consumed;
    bool bare_lf, bare_cr, nul;
    const char* comment;
};

#define S(x) std::string_view(x, sizeof(x) - 1)

const data_case data_cases[] = {
    {".\r\n", "", true, 3, false, false, false, "empty message"},
    {"a\r\n.\r\n", "a\r\n", true, 6, false, false, false, "one line"},
    {"a\r\n.\r\nQUIT\r\n", "a\r\n", true, 6, false, false, false, "pipelined QUIT not consumed"},
    {"\r\n.\r\n", "\r\n", true, 5, false, false, false, "empty line"},
    {"..a\r\n.\r\n", ".a\r\n", true, 8, false, false, false, "unstuff first line"},
    {"a\r\n..\r\n.\r\n", "a\r\n.\r\n", true, 10, false, false, false, "line of one dot"},
    {"a\r\n...\r\n.\r\n", "a\r\n..\r\n", true, 11, false, false, false, "three dots"},
    {"a.\r\n.b\r\n.\r\n", "a.\r\nb\r\n", true, 11, false, false, false, "dots mid and start"},
    // SMTP smuggling sequences: content, never the end.
    {"a\n.\nb\r\n.\r\n", "a\n.\nb\r\n", true, 10, true, false, false, "\\n.\\n"},
    {"a\r.\rb\r\n.\r\n", "a\r.\rb\r\n", true, 10, false, true, false, "\\r.\\r"},
    {"a\n.\r\nb\r\n.\r\n", "a\n.\r\nb\r\n", true, 11, true, false, false, "\\n.\\r\\n"},
    {"a\r\n.\nb\r\n.\r\n", "a\r\n\nb\r\n", true, 11, true, false, false, "\\r\\n.\\n"},
    {"a\r.\r\nb\r\n.\r\n", "a\r.\r\nb\r\n", true, 11, false, true, false, "\\r.\\r\\n"},
    {"a\r\n.\r.\r\n.\r\n", "a\r\n\r.\r\n", true, 11, false, true, false, "\\r\\n.\\r."},
    {".\rX\r\n.\r\n", "\rX\r\n", true, 8, false, true, false, "dot CR X at start"},
    {"a\r\n.\r\r\n.\r\n", "a\r\n\r\r\n", true, 10, false, true, false, "dot CR CR LF"},
    {"a\n.\n", "a\n.\n", false, 4, true, false, false, "\\n.\\n never ends"},
    {"a\r.\r", "a\r.\r", false, 4, false, true, false, "\\r.\\r never ends"},
    {"a\r\n.\n", "a\r\n\n", false, 5, true, false, false, "\\r\\n.\\n never ends"},
    {"a\r\n.\r", "a\r\n", false, 5, false, false, false, "CR held back"},
    {"a\r\n.", "a\r\n", false, 4, false, false, false, "dot held back"},
    {"a\r\n", "a\r\n", false, 3, false, false, false, "no terminator"},
    {S("a\0b\r\n.\r\n"), S("a\0b\r\n"), true, 8, false, false, true, "NUL"},
    {"", "", false, 0, false, false, false, "nothing"},
};

TEST(data_reader, table_every_split_and_bytewise) {
    for (const auto& c : data_cases) {
        SCOPED_TRACE(c.comment);
        auto check = [&](const run_result& r) {
            EXPECT_EQ(r.content, c.content);
            EXPECT_EQ(r.done, c.done);
            EXPECT_EQ(r.consumed, c.consumed);
            EXPECT_EQ(r.flags.saw_bare_lf, c.bare_lf);
            EXPECT_EQ(r.flags.saw_bare_cr, c.bare_cr);
            EXPECT_EQ(r.flags.saw_nul, c.nul);
            EXPECT_FALSE(r.flags.line_too_long);
            EXPECT_EQ(r.content_bytes, c.content.size());
        };
        check(run(c.wire, {}));
        for (std::size_t k = 0; k <= c.wire.size(); ++k) check(run(c.wire, {k}));
        std::vector<std::size_t> bytewise;
        for (std::size_t k = 1; k < c.wire.size(); ++k) bytewise.push_back(k);
        check(run(c.wire, bytewise));
    }
}

TEST(data_reader, every_prefix_of_complete_is_not_done) {
    for (const auto& c : data_cases) {
        if (!c.done) continue;
        for (std::size_t n = 0; n < c.consumed; ++n) {
            run_result r = run(c.wire.substr(0, n), {});
            EXPECT_FALSE(r.done) << c.comment << " prefix " << n;
            EXPECT_EQ(r.consumed, n);
        }
    }
}

// Arbitrary wire bytes: any split gives the same result as one buffer.
TEST(data_reader, random_splits_agree) {
    std::mt19937 rng(777);
    const char alphabet[] = {'.', '.', '\r', '\r', '\n', '\n', 'a', '\0'};
    for (int iter = 0; iter < 2000; ++iter) {
        std::string wire;
        std::size_t len = rng() % 30;
        for (std::size_t i = 0; i < len; ++i) wire.push_back(alphabet[rng() % sizeof alphabet]);
        run_result whole = run(wire, {}, 3);
        std::vector<std::size_t> cuts;
        for (std::size_t k = 1; k < wire.size(); ++k)
            if (rng() % 3 == 0) cuts.push_back(k);
        run_result split = run(wire, cuts, 3);
        ASSERT_EQ(split.content, whole.content) << iter;
        ASSERT_EQ(split.consumed, whole.consumed) << iter;
        ASSERT_EQ(split.done, whole.done) << iter;
        ASSERT_EQ(split.flags.saw_bare_lf, whole.flags.saw_bare_lf) << iter;
        ASSERT_EQ(split.flags.saw_bare_cr, whole.flags.saw_bare_cr) << iter;
        ASSERT_EQ(split.flags.saw_nul, whole.flags.saw_nul) << iter;
        ASSERT_EQ(split.flags.line_too_long, whole.flags.line_too_long) << iter;
        // The end is exactly the first CRLF.CRLF (or ".\r\n" at the start).
        std::size_t term = std::string::npos;
        if (wire.rfind(".\r\n", 0) == 0) {
            term = 3;
        } else if (std::size_t f = wire.find("\r\n.\r\n"); f != std::string::npos) {
            term = f + 5;
        }
        ASSERT_EQ(whole.done, term != std::string::npos) << iter;
        if (whole.done) {
            ASSERT_EQ(whole.consumed, term) << iter;
        }
    }
}

TEST(data_reader, done_is_sticky_until_reset) {
    data_reader r;
    auto sink = [](std::string_view) {};
    EXPECT_TRUE(r.feed(".\r\n", sink).done);
    data_feed_result again = r.feed("x\r\n.\r\n", sink);
    EXPECT_TRUE(again.done);
    EXPECT_EQ(again.consumed, 0u);
    r.reset();
    EXPECT_FALSE(r.done());
    std::string got;
    EXPECT_TRUE(r.feed("x\r\n.\r\n", [&](std::string_view p) { got.append(p); }).done);
    EXPECT_EQ(got, "x\r\n");
}

TEST(data_reader, line_length_limit) {
    // RFC 5321 §4.5.3.1.6: 998 octets + CRLF.
    std::string ok = std::string(998, 'x') + "\r\n.\r\n";
    run_result r = run(ok, {});
    EXPECT_TRUE(r.done);
    EXPECT_FALSE(r.flags.line_too_long);
    std::string bad = std::string(999, 'x') + "\r\n.\r\n";
    r = run(bad, {});
    EXPECT_TRUE(r.done);
    EXPECT_TRUE(r.flags.line_too_long);
    // The dot added for transparency does not count (§4.5.3.1.6): a
    // 998-octet line that starts with a dot is 999 on the wire and fine,
    // one octet more is not.
    std::string stuffed = "." + std::string(998, '.') + "\r\n.\r\n";
    r = run(stuffed, {});
    EXPECT_FALSE(r.flags.line_too_long);
    EXPECT_EQ(r.content, std::string(998, '.') + "\r\n");
    r = run("." + std::string(999, '.') + "\r\n.\r\n", {});
    EXPECT_TRUE(r.flags.line_too_long);
    // Boundary under every split for a small limit.
    for (std::size_t k = 0; k <= 10; ++k) {
        EXPECT_FALSE(run("abcd\r\n.\r\n", {k}, 4).flags.line_too_long) << k;
        EXPECT_TRUE(run("abcde\r\n.\r\n", {k}, 4).flags.line_too_long) << k;
        EXPECT_TRUE(run("abcd\r\r\n.\r\n", {k}, 4).flags.line_too_long) << k;
        EXPECT_FALSE(run(".abc\r\n.\r\n", {k}, 4).flags.line_too_long) << k;
        EXPECT_FALSE(run("..abc\r\n.\r\n", {k}, 4).flags.line_too_long) << k;
        EXPECT_TRUE(run("..abcd\r\n.\r\n", {k}, 4).flags.line_too_long) << k;
        EXPECT_FALSE(run(".\rab\r\n.\r\n", {k}, 4).flags.line_too_long) << k;  // bare CR is content
    }
}

TEST(data_reader, one_megabyte_line) {
    std::string big(1 << 20, 'y');
    big += "\r\n.\r\n";
    data_reader r;
    std::size_t pieces = 0, bytes = 0, consumed = 0;
    bool done = false;
    // Feed in 64 KB buffers: flagged early, bounded state, no buffering.
    for (std::size_t off = 0; off < big.size() && !done; off += 65536) {
        std::string_view in = std::string_view(big).substr(off, 65536);
        data_feed_result fr = r.feed(in, [&](std::string_view p) {
            ++pieces;
            bytes += p.size();
        });
        consumed += fr.consumed;
        done = fr.done;
        EXPECT_TRUE(r.flags().line_too_long);
    }
    EXPECT_TRUE(done);
    EXPECT_EQ(consumed, big.size());
    EXPECT_EQ(bytes, (1u << 20) + 2);
    EXPECT_LE(pieces, 17u);  // one per buffer
}

TEST(data_reader, chunk_checker) {
    struct chunk_case {
        std::vector<std::string_view> chunks;
        bool bare_lf, bare_cr, nul, too_long;
        const char* comment;
    } cases[] = {
        {{"ab\r", "\ncd\r\n"}, false, false, false, false, "CRLF split across chunks"},
        {{"ab\r", "x\r\n"}, false, true, false, false, "bare CR at chunk end"},
        {{"ab\r"}, false, true, false, false, "bare CR at message end"},
        {{"ab\n"}, true, false, false, false, "bare LF"},
        {{"ab", "\n"}, true, false, false, false, "bare LF after split"},
        {{"\r", "\r\n"}, false, true, false, false, "CR CR LF"},
        {{std::string_view("a\0\r\n", 4)}, false, false, true, false, "NUL"},
        {{"abc", "d\r\n"}, false, false, false, false, "4 bytes at limit 4"},
        {{"abc", "de\r\n"}, false, false, false, true, "5 bytes at limit 4"},
        {{".\r\n"}, false, false, false, false, "no terminator semantics"},
    };
    for (const auto& c : cases) {
        chunk_state st;
        std::size_t total = 0;
        for (auto ch : c.chunks) {
            guarded_input g(ch);
            check_chunk(g.view(), st, 4);
            total += ch.size();
        }
        finish_chunks(st);
        SCOPED_TRACE(c.comment);
        EXPECT_EQ(st.flags.saw_bare_lf, c.bare_lf);
        EXPECT_EQ(st.flags.saw_bare_cr, c.bare_cr);
        EXPECT_EQ(st.flags.saw_nul, c.nul);
        EXPECT_EQ(st.flags.line_too_long, c.too_long);
        EXPECT_EQ(st.content_bytes, total);
    }
}

}  // namespace
}  // namespace ringmail::smtp
