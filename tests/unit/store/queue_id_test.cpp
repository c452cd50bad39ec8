#include "store/queue_id.h"

#include <gtest/gtest.h>

#include <cstring>

namespace ringmail::store {
namespace {

TEST(queue_id, layout) {
    uint64_t id = make_queue_id(1'700'000'000'123'456ull, 7);
    EXPECT_EQ(queue_id_shard(id), 7);
    EXPECT_EQ(queue_id_micros(id), 1'700'000'000'123'456ull);
}

TEST(queue_id, generator_strictly_increasing_even_if_clock_steps_back) {
    queue_id_generator gen(3);
    uint64_t prev = gen.next(1'000'000);
    const uint64_t clock[] = {1'000'000, 1'000'000, 999'000, 5, 1'000'001, 2'000'000, 1'999'999};
    for (uint64_t now : clock) {
        uint64_t id = gen.next(now);
        EXPECT_GT(id, prev) << "now=" << now;
        EXPECT_EQ(queue_id_shard(id), 3);
        prev = id;
    }
    EXPECT_EQ(queue_id_micros(gen.next(3'000'000)), 3'000'000u);
}

TEST(queue_id, observe_raises_floor) {
    queue_id_generator gen(0);
    gen.observe(make_queue_id(5'000'000, 9));
    EXPECT_GT(gen.next(1'000), make_queue_id(5'000'000, 0xff));
}

TEST(queue_id, hex_round_trip) {
    const uint64_t ids[] = {0, 1, 0xFFFFFFFFFFFFFFFFull, 0x0123456789ABCDEFull,
                            make_queue_id(1'732'000'000'000'000ull, 200)};
    for (uint64_t id : ids) {
        auto hex = to_hex(id);
        EXPECT_EQ(hex.view().size(), 16u);
        EXPECT_EQ(std::strlen(hex.c_str()), 16u);
        auto back = parse_hex(hex.view());
        ASSERT_TRUE(back.has_value());
        EXPECT_EQ(*back, id);
    }
    EXPECT_EQ(to_hex(0x0123456789ABCDEFull).view(), "0123456789ABCDEF");
    EXPECT_EQ(parse_hex("0123456789abcdef").value_or(0), 0x0123456789ABCDEFull);
    EXPECT_FALSE(parse_hex("0123456789ABCDE").has_value());
    EXPECT_FALSE(parse_hex("0123456789ABCDEF0").has_value());
    EXPECT_FALSE(parse_hex("0123456789ABCDEG").has_value());
    EXPECT_FALSE(parse_hex("").has_value());
    static_assert(to_hex(0xAB).chars[15] == 'B');
}

TEST(queue_id, key_is_big_endian_and_orders_numerically) {
    queue_key k = to_key(0x0102030405060708ull);
    const unsigned char want[] = {1, 2, 3, 4, 5, 6, 7, 8};
    EXPECT_EQ(std::memcmp(k.data(), want, 8), 0);
    EXPECT_EQ(from_key(k.data()), 0x0102030405060708ull);
    queue_key a = to_key(255), b = to_key(256);
    EXPECT_LT(std::memcmp(a.data(), b.data(), 8), 0);
}

}  // namespace
}  // namespace ringmail::store
