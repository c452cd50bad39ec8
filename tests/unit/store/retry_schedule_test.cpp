#include "store/retry_schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace ringmail::store {
namespace {

using std::chrono::seconds;

TEST(retry_schedule, table_without_jitter) {
    retry_policy p;
    p.jitter = 0;
    struct row { uint32_t attempts; int64_t delay; };
    const row table[] = {{0, 300}, {1, 300}, {2, 600}, {3, 1200}, {4, 2400},
                         {5, 4000}, {6, 4000}, {100, 4000}, {UINT32_MAX, 4000}};
    for (const row& r : table)
        EXPECT_EQ(next_delay(p, r.attempts, 0.7), seconds{r.delay}) << "attempt " << r.attempts;
}

TEST(retry_schedule, jitter_bounds) {
    retry_policy p;  // jitter 0.2
    struct row { uint32_t attempts; int64_t base; };
    const row table[] = {{1, 300}, {2, 600}, {3, 1200}, {4, 2400}, {5, 4000}, {9, 4000}};
    for (const row& r : table) {
        EXPECT_EQ(next_delay(p, r.attempts, 0.0).count(), std::llround(r.base * 0.8));
        EXPECT_EQ(next_delay(p, r.attempts, 0.5).count(), r.base);
        EXPECT_EQ(next_delay(p, r.attempts, 1.0).count(), std::llround(r.base * 1.2));
        for (double u = 0; u <= 1.0; u += 0.01) {
            auto d = next_delay(p, r.attempts, u).count();
            EXPECT_GE(d, std::llround(r.base * 0.8));
            EXPECT_LE(d, std::llround(r.base * 1.2));
        }
    }
}

TEST(retry_schedule, clamps_bad_inputs_and_never_below_one_second) {
    retry_policy p;
    EXPECT_EQ(next_delay(p, 1, -5.0), next_delay(p, 1, 0.0));
    EXPECT_EQ(next_delay(p, 1, 7.0), next_delay(p, 1, 1.0));
    EXPECT_EQ(next_delay(p, 1, std::numeric_limits<double>::quiet_NaN()), seconds{300});

    retry_policy tiny{seconds{0}, seconds{0}, seconds{10}, 1.0};
    for (double u : {0.0, 0.3, 1.0}) EXPECT_GE(next_delay(tiny, 1, u), seconds{1});

    retry_policy inverted{seconds{1000}, seconds{100}, seconds{10}, 0.0};
    EXPECT_EQ(next_delay(inverted, 1, 0.5), seconds{100});
}

TEST(retry_schedule, expiry) {
    retry_policy p;  // 5 days
    const int64_t t0 = 1'700'000'000;
    EXPECT_FALSE(expired(p, t0, t0));
    EXPECT_FALSE(expired(p, t0, t0 + 5 * 24 * 3600 - 1));
    EXPECT_TRUE(expired(p, t0, t0 + 5 * 24 * 3600));
    EXPECT_TRUE(expired(p, t0, t0 + 6 * 24 * 3600));
    EXPECT_FALSE(expired(p, t0, t0 - 100));  // clock behind arrival
    EXPECT_TRUE(expired(p, INT64_MIN, INT64_MAX));
}

}  // namespace
}  // namespace ringmail::store
