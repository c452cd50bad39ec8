#include "store/body_split.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace ringmail::store {
namespace {

constexpr size_t page = 4096;
constexpr size_t one_page = page - 16;  // an overflow page's payload

std::string lines(size_t total, size_t line_len, char first = 'x') {
    std::string s;
    while (s.size() < total) {
        std::string line(line_len, 'a');
        line[0] = first;
        line += "\r\n";
        s += line;
    }
    s.resize(total);
    return s;
}

size_t split_whole(std::string_view body) {
    std::string_view parts[] = {body};
    return split_point(parts, body.size(), page);
}

TEST(body_split, fits_one_page_whole) {
    EXPECT_EQ(split_whole(""), 0u);
    EXPECT_EQ(split_whole(lines(100, 70)), 100u);
    EXPECT_EQ(split_whole(lines(one_page, 70)), one_page);
}

TEST(body_split, a_4k_message_with_our_header_fits_one_page_and_a_tail) {
    std::string body = lines(4269, 76);
    size_t h = split_whole(body);
    ASSERT_LT(h, body.size());
    EXPECT_LE(h, one_page);
    EXPECT_EQ(body.substr(h - 2, 2), "\r\n");
    EXPECT_LE(body.size() - h, tail_limit(page));
    EXPECT_GT(h, one_page - 80);  // cut at the last line end that fits
}

TEST(body_split, no_line_end_or_a_long_tail_stays_whole) {
    std::string one_line(5000, 'z');
    EXPECT_EQ(split_whole(one_line), one_line.size());
    // Two pages' worth ending 2,500 bytes into the second: the tail could
    // not live in a leaf page, so splitting would save nothing.
    std::string body = lines(one_page + 2500, 76);
    EXPECT_EQ(split_whole(body), body.size());
    // The only line end is too early: the tail would be too long.
    std::string early = "a\r\n" + std::string(5000, 'b');
    EXPECT_EQ(split_whole(early), early.size());
}

TEST(body_split, crlf_split_over_parts_and_empty_parts) {
    std::string body = lines(4269, 76);
    size_t h = split_whole(body);
    ASSERT_LT(h, body.size());
    // Cut the parts between the CR and the LF of the line end chosen, with
    // empty parts around.
    std::string_view b = body;
    std::string_view parts[] = {b.substr(0, h - 1), {}, b.substr(h - 1, 1), {}, b.substr(h)};
    EXPECT_EQ(split_point(parts, body.size(), page), h);
}

TEST(body_split, contract_holds_for_random_bodies_and_parts) {
    std::mt19937 rng(7);
    int splits = 0;
    for (int round = 0; round < 3000; ++round) {
        size_t total = std::uniform_int_distribution<size_t>(0, 3 * page)(rng);
        size_t max_line = std::uniform_int_distribution<size_t>(1, 1200)(rng);
        std::string body;
        while (body.size() < total) {
            size_t n = std::uniform_int_distribution<size_t>(0, max_line)(rng);
            body.append(n, static_cast<char>('a' + n % 26));
            int end = std::uniform_int_distribution<int>(0, 9)(rng);
            body += end == 0 ? "\r" : end == 1 ? "\n" : "\r\n";  // bare CR/LF in binary-ish data too
        }
        body.resize(total);
        // random cuts into parts
        std::vector<std::string_view> parts;
        size_t at = 0;
        while (at < total) {
            size_t n = std::uniform_int_distribution<size_t>(0, 700)(rng);
            n = std::min(n, total - at);
            parts.push_back(std::string_view(body).substr(at, n));
            at += n;
        }
        size_t h = split_point(parts, total, page);
        ASSERT_LE(h, total);
        EXPECT_EQ(h, split_whole(body)) << "parts change the answer, round " << round;
        if (h == total) continue;
        ++splits;
        EXPECT_GT(h, 0u);
        EXPECT_EQ(body.substr(h - 2, 2), "\r\n") << round;
        EXPECT_LE(total - h, tail_limit(page)) << round;
        size_t pages_whole = (total + 16 + page - 1) / page;
        size_t pages_head = (h + 16 + page - 1) / page;
        EXPECT_EQ(pages_head, pages_whole - 1) << round;
    }
    EXPECT_GT(splits, 300) << "the random bodies hardly ever split: the test checks little";
}

}  // namespace
}  // namespace ringmail::store
