#include "store/envelope.h"

#include <gtest/gtest.h>

#include <cstring>

namespace ringmail::store {
namespace {

envelope sample() {
    envelope e;
    e.id = 0x0123456789ABCDEFull;
    e.received_at = -12345;  // negative survives
    e.client_address = "203.0.113.7";
    e.helo = std::string("evil\r\nX-Injected: 1\0bin\xff", 25);
    e.sender = "alice@example.org";
    e.size = 10ull << 30;
    e.body = body_type::binary_mime;
    e.smtputf8 = true;
    e.ret = dsn_ret::hdrs;
    e.envid = "QQ314159";
    e.attempts = 7;
    e.next_attempt = INT64_MAX;
    e.last_error = "451 4.3.0 try again";
    e.is_dsn = true;
    e.recipients.push_back({"bob@example.net", "rfc822;bob@example.net",
                            notify_failure | notify_delay, rcpt_state::failed,
                            "550 5.1.1 no such user"});
    e.recipients.push_back({"", "", notify_never, rcpt_state::delivered, ""});
    e.recipients.push_back({"caf\xc3\xa9@example.com", "", notify_unset, rcpt_state::pending,
                            std::string("\0\0\0", 3)});
    return e;
}

TEST(envelope, round_trip_all_fields) {
    envelope e = sample();
    std::string rec;
    encode(e, rec);
    EXPECT_EQ(rec.size(), encoded_size(e));
    EXPECT_EQ(static_cast<uint8_t>(rec[0]), envelope_format_version);
    auto back = decode(rec);
    ASSERT_TRUE(back.ok()) << to_string(back.error());
    EXPECT_EQ(*back, e);
}

TEST(envelope, round_trip_empty) {
    envelope e;
    std::string rec;
    encode(e, rec);
    EXPECT_EQ(rec.size(), encoded_size(e));
    auto back = decode(rec);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, e);
}

TEST(envelope, encode_appends) {
    std::string rec = "prefix";
    encode(sample(), rec);
    auto back = decode(std::string_view(rec).substr(6));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, sample());
}

TEST(envelope, every_truncated_prefix_fails) {
    std::string rec;
    encode(sample(), rec);
    for (size_t n = 0; n < rec.size(); ++n) {
        auto r = decode(std::string_view(rec.data(), n));
        ASSERT_FALSE(r.ok()) << "prefix " << n;
        EXPECT_EQ(r.error(), record_error::truncated) << "prefix " << n;
    }
}

TEST(envelope, trailing_bytes_fail) {
    std::string rec;
    encode(sample(), rec);
    rec.push_back('\0');
    auto r = decode(rec);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), record_error::trailing_bytes);
}

TEST(envelope, unknown_version_fails) {
    std::string rec;
    encode(sample(), rec);
    for (uint8_t v : {0, 2, 255}) {
        rec[0] = static_cast<char>(v);
        auto r = decode(rec);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error(), record_error::unknown_version);
    }
}

TEST(envelope, corrupted_length_fails) {
    envelope e = sample();
    std::string rec;
    encode(e, rec);
    // client_address length sits after version(1) + id(8) + received_at(8).
    const size_t len_at = 17;
    std::string bad = rec;
    std::memset(bad.data() + len_at, 0xff, 4);
    auto r = decode(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), record_error::bad_length);

    // Longer than the record but under the limit: truncated.
    bad = rec;
    uint32_t n = 100000;
    std::memcpy(bad.data() + len_at, &n, 4);  // little-endian host (x86/arm64)
    r = decode(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), record_error::truncated);

    // Absurd recipient count: rejected before any allocation.
    envelope none;
    std::string small;
    encode(none, small);
    std::memset(small.data() + small.size() - 4, 0xff, 4);
    r = decode(small);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), record_error::bad_length);
    uint32_t many = 1000;
    std::memcpy(small.data() + small.size() - 4, &many, 4);
    r = decode(small);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), record_error::truncated);
}

TEST(envelope, every_single_byte_corruption_is_handled) {
    // Flipping any byte must either fail cleanly or decode to something; never
    // crash or read out of bounds (run under ASan to make the last point count).
    std::string rec;
    encode(sample(), rec);
    for (size_t i = 0; i < rec.size(); ++i) {
        for (uint8_t x : {0x01, 0x80, 0xff}) {
            std::string bad = rec;
            bad[i] = static_cast<char>(bad[i] ^ x);
            auto r = decode(bad);
            if (r.ok()) {
                std::string again;
                encode(*r, again);
                EXPECT_EQ(again, bad) << "byte " << i;
            }
        }
    }
}

TEST(envelope, enum_out_of_range_fails) {
    envelope e;
    std::string rec;
    encode(e, rec);
    // body type byte: 1 + 8 + 8 + 4 + 4 + 4 + 8 = 37
    std::string bad = rec;
    bad[37] = 3;
    auto r = decode(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), record_error::bad_value);
    bad = rec;
    bad[38] = 2;  // smtputf8 bool
    r = decode(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), record_error::bad_value);
}

TEST(envelope, error_strings) {
    for (auto e : {record_error::truncated, record_error::trailing_bytes,
                   record_error::unknown_version, record_error::bad_length,
                   record_error::bad_value})
        EXPECT_GT(std::strlen(to_string(e)), 0u);
}

}  // namespace
}  // namespace ringmail::store
