#include "protocols/smtp/hop_count.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using ringmail::smtp::count_received;
using ringmail::smtp::received_counter;

namespace {

std::string message(int received, std::string_view body = "hello\r\n") {
    std::string m;
    for (int i = 0; i < received; ++i) m += "Received: from hop" + std::to_string(i) + "\r\n\tby x; date\r\n";
    m += "Subject: test\r\nFrom: <a@b.test>\r\n\r\n";
    m += body;
    return m;
}

// Every split of `m` into pieces of `n` bytes.
std::vector<std::string_view> pieces(std::string_view m, size_t n) {
    std::vector<std::string_view> out;
    for (size_t i = 0; i < m.size(); i += n) out.push_back(m.substr(i, n));
    return out;
}

}  // namespace

TEST(hop_count, CountsReceivedFieldsInAnyCaseAcrossPieceBoundaries) {
    std::string m = message(3);
    m.insert(0, "RECEIVED: upper\r\nreceived: lower\r\n");
    for (size_t n = 1; n <= m.size() + 1; ++n) EXPECT_EQ(count_received(pieces(m, n)), 5u) << n;
}

TEST(hop_count, IgnoresLookalikesContinuationsAndTheBody) {
    std::string m =
        "X-Received: from a\r\n"
        "Received-SPF: pass\r\n"
        "Receive: x\r\n"
        "Subject: Received: in the subject\r\n"
        " Received: a continuation line\r\n"
        "Received: the only one\r\n"
        "\r\n"
        "Received: in the body\r\n";
    for (size_t n = 1; n <= m.size(); ++n) EXPECT_EQ(count_received(pieces(m, n)), 1u) << n;
}

TEST(hop_count, StopsAtTheEndOfTheHeaderSection) {
    received_counter c;
    std::string m = message(2, "Received: body\r\n");
    EXPECT_FALSE(c.feed(m));  // the empty line was seen: nothing more to feed
    EXPECT_TRUE(c.header_ended());
    EXPECT_EQ(c.count(), 2u);
    EXPECT_FALSE(c.feed("Received: more\r\n"));
    EXPECT_EQ(c.count(), 2u);
}

TEST(hop_count, NoHeaderSectionAndNoEmptyLine) {
    EXPECT_EQ(count_received(std::vector<std::string_view>{"\r\nReceived: x\r\n"}), 0u);
    received_counter c;
    EXPECT_TRUE(c.feed("Received: a\r\nReceived: b\r\n"));  // header not ended yet
    EXPECT_EQ(c.count(), 2u);
}
