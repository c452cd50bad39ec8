// request_deadline: a command line gets command_timeout in all, however it
// is split; content keeps its deadline only while it keeps up min_data_rate.
#include "protocols/smtp/request_deadline.h"

#include <gtest/gtest.h>

using namespace std::chrono_literals;
using ringmail::smtp::request_deadline;
using ringmail::smtp::request_timing;
using kind = request_deadline::kind;

namespace {

const request_timing timing{300s, 600s, 500};

TEST(request_deadline, partial_command_line_does_not_extend_the_deadline) {
    request_deadline d;
    EXPECT_EQ(d.before_read(kind::command, true, 0, timing), 300s);
    // one byte every 100 s, never a whole line: the time runs down
    EXPECT_EQ(d.before_read(kind::command, false, 100'000, timing), 200s);
    EXPECT_EQ(d.before_read(kind::command, false, 250'000, timing), 50s);
    // past the deadline the next read times out at once (1 ms)
    EXPECT_EQ(d.before_read(kind::command, false, 400'000, timing), 1ms);
}

TEST(request_deadline, each_new_command_line_gets_a_fresh_deadline) {
    request_deadline d;
    d.before_read(kind::command, true, 0, timing);
    EXPECT_EQ(d.before_read(kind::command, true, 299'000, timing), 300s);
    EXPECT_EQ(d.before_read(kind::command, false, 300'000, timing), 299s);
}

TEST(request_deadline, content_starts_with_data_timeout_and_earns_time_at_the_rate) {
    request_deadline d;
    d.before_read(kind::command, true, 0, timing);
    EXPECT_EQ(d.before_read(kind::content, false, 1000, timing), 600s);
    // 10 s later 1000 bytes arrived: +2 s (at 500 B/s), the deadline is 592 s on
    d.content_received(1000, 11'000, timing);
    EXPECT_EQ(d.before_read(kind::content, false, 11'000, timing), 592s);
    // a fast burst never pushes it past data_timeout from now
    d.content_received(100'000'000, 12'000, timing);
    EXPECT_EQ(d.before_read(kind::content, false, 12'000, timing), 600s);
}

TEST(request_deadline, a_trickle_slower_than_the_rate_runs_out) {
    request_deadline d;
    int64_t now = 0;
    d.before_read(kind::content, false, now, timing);
    // one byte every 299 s earns 2 ms each: cut off after about data_timeout
    for (int i = 0; i < 2; ++i) {
        now += 299'000;
        d.content_received(1, now, timing);
    }
    EXPECT_EQ(d.before_read(kind::content, false, now, timing), 2004ms);
    now += 2004;
    EXPECT_EQ(d.before_read(kind::content, false, now, timing), 1ms);
}

TEST(request_deadline, rate_zero_is_a_timeout_per_read) {
    const request_timing per_read{300s, 600s, 0};
    request_deadline d;
    d.before_read(kind::content, false, 0, per_read);
    d.content_received(1, 599'000, per_read);
    EXPECT_EQ(d.before_read(kind::content, false, 599'000, per_read), 600s);
}

TEST(request_deadline, switching_between_commands_and_content_rearms) {
    request_deadline d;
    d.before_read(kind::command, true, 0, timing);
    EXPECT_EQ(d.before_read(kind::content, false, 100'000, timing), 600s);
    // the content ended and a partial command line follows: a fresh command deadline
    EXPECT_EQ(d.before_read(kind::command, false, 200'000, timing), 300s);
}

}  // namespace
