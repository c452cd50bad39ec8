#include "engine/token_bucket.h"

#include <gtest/gtest.h>

using ringmail::engine::token_bucket;

TEST(TokenBucket, UnlimitedAlwaysGrants) {
    token_bucket b;
    b.configure(ringmail::rate_limit{});
    for (int i = 0; i < 1000; ++i) EXPECT_EQ(b.take(0), 0);
}

TEST(TokenBucket, SpacesPermitsEvenly) {
    token_bucket b;
    b.configure(*ringmail::parse_rate("4/s"));  // one per 250 ms
    EXPECT_EQ(b.take(1'000'000), 0);
    EXPECT_EQ(b.take(1'000'000), 250);           // wait 250 ms
    EXPECT_EQ(b.take(1'100'000), 150);
    EXPECT_EQ(b.take(1'250'000), 0);
    EXPECT_EQ(b.take(1'250'001), 250);           // rounded up, never early
}

TEST(TokenBucket, IdleTimeDoesNotBankABurst) {
    token_bucket b;
    b.configure(*ringmail::parse_rate("10/s"));
    EXPECT_EQ(b.take(0), 0);
    EXPECT_EQ(b.take(60'000'000), 0);            // a minute later: one permit,
    EXPECT_GT(b.take(60'000'000), 0);            // not six hundred
}

TEST(TokenBucket, HourlyRates) {
    token_bucket b;
    b.configure(*ringmail::parse_rate("3600/h"));  // one per second
    EXPECT_EQ(b.take(5'000'000), 0);
    EXPECT_EQ(b.take(5'000'000), 1000);
}
