// Tests for engine/log: escaping, levels, the line format, one write per line.
#include "engine/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace ringmail::log {
namespace {

std::string esc(std::string_view s, std::size_t max = 200) { return fmt::format("{}", escaped(s, max)); }

TEST(log_escaped, table)
{
    using namespace std::string_view_literals;
    EXPECT_EQ(esc("MAIL FROM:<a@b.example>"), "MAIL FROM:<a@b.example>");
    EXPECT_EQ(esc("a\r\nb"), "a\\x0d\\x0ab");
    EXPECT_EQ(esc("x\0y"sv), "x\\x00y");
    EXPECT_EQ(esc("\xff\x80\x7f\x1b"), "\\xff\\x80\\x7f\\x1b");
    EXPECT_EQ(esc("tab\there"), "tab\\x09here");
    EXPECT_EQ(esc("back\\slash"), "back\\x5cslash");  // no forged \xNN
    EXPECT_EQ(esc(""), "");
    EXPECT_EQ(esc(" ~"), " ~");
    EXPECT_EQ(esc("abcdef", 3), "abc...");
    EXPECT_EQ(esc("abc", 3), "abc");
    EXPECT_EQ(esc("\n\n\n\n", 2), "\\x0a\\x0a...");
    EXPECT_EQ(esc("abc", 0), "...");
    EXPECT_EQ(esc(std::string(300, 'a')), std::string(200, 'a') + "...");
    EXPECT_EQ(fmt::format("client={}!", escaped("ok")), "client=ok!");
}

TEST(log_level, parse)
{
    EXPECT_EQ(parse_level("error"), level::error);
    EXPECT_EQ(parse_level("warning"), level::warning);
    EXPECT_EQ(parse_level("info"), level::info);
    EXPECT_EQ(parse_level("debug"), level::debug);
    EXPECT_EQ(parse_level("warn"), std::nullopt);
    EXPECT_EQ(parse_level("INFO"), std::nullopt);
    EXPECT_EQ(parse_level(""), std::nullopt);
    for (auto l : {level::error, level::warning, level::info, level::debug}) EXPECT_EQ(parse_level(to_string(l)), l);
}

// Captures log output through a pipe; restores stderr and the level after.
class log_capture : public ::testing::Test {
protected:
    void SetUp() override
    {
        ASSERT_EQ(pipe2(_fds, O_CLOEXEC), 0);
        _saved_level = get_level();
        set_output_fd(_fds[1]);
    }
    void TearDown() override
    {
        set_output_fd(2);
        set_level(_saved_level);
        set_program_name("ringmaild");
        ::close(_fds[0]);
        if (_fds[1] >= 0) ::close(_fds[1]);
    }
    // Closes the write end and reads everything.
    std::string drain()
    {
        ::close(_fds[1]);
        _fds[1] = -1;
        std::string out;
        char buf[65536];
        ssize_t n;
        while ((n = ::read(_fds[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<std::size_t>(n));
        return out;
    }
    int _fds[2] = {-1, -1};
    level _saved_level = level::info;
};

TEST_F(log_capture, prefix_and_levels)
{
    set_level(level::info);
    set_program_name("ringmaild-test");
    info("{}: received client={}", "A1B2", escaped("evil\r\n"));
    warning("w {}", 1);
    error("e");
    debug("hidden");  // below the level
    set_level(level::debug);
    debug("shown");
    set_level(level::error);
    EXPECT_TRUE(enabled(level::error));
    EXPECT_FALSE(enabled(level::warning));
    warning("hidden");
    std::string out = drain();

    // "2026-11-25T07:39:30.123Z ringmaild-test[PID]: message"
    const std::string stamp_shape = "dddd-dd-ddTdd:dd:dd.dddZ ";
    const std::string name = "ringmaild-test[" + std::to_string(getpid()) + "]: ";
    std::vector<std::string> messages;
    std::size_t start = 0;
    while (start < out.size()) {
        auto nl = out.find('\n', start);
        ASSERT_NE(nl, std::string::npos);
        std::string line = out.substr(start, nl - start);
        ASSERT_GT(line.size(), stamp_shape.size() + name.size()) << line;
        for (std::size_t i = 0; i < stamp_shape.size(); ++i) {
            if (stamp_shape[i] == 'd') ASSERT_TRUE(line[i] >= '0' && line[i] <= '9') << line;
            else ASSERT_EQ(line[i], stamp_shape[i]) << line;
        }
        ASSERT_EQ(line.compare(stamp_shape.size(), name.size(), name), 0) << line;
        messages.push_back(line.substr(stamp_shape.size() + name.size()));
        start = nl + 1;
    }
    ASSERT_EQ(messages.size(), 4u) << out;
    EXPECT_EQ(messages[0], "A1B2: received client=evil\\x0d\\x0a");
    EXPECT_EQ(messages[1], "warning: w 1");
    EXPECT_EQ(messages[2], "error: e");
    EXPECT_EQ(messages[3], "debug: shown");
}

TEST_F(log_capture, raw_newlines_cannot_forge_lines)
{
    set_level(level::info);
    info("{}", std::string("a\nb\rc"));
    std::string out = drain();
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1);
    EXPECT_NE(out.find("a\\nb\\rc\n"), std::string::npos) << out;
}

TEST_F(log_capture, long_lines_truncated_to_pipe_buf)
{
    set_level(level::info);
    info("{}", std::string(10000, 'x'));
    std::string out = drain();
    EXPECT_EQ(out.size(), max_line_bytes);
    EXPECT_EQ(out.substr(out.size() - 4), "...\n");
}

TEST_F(log_capture, one_write_per_line_across_threads)
{
    // Two threads log long, distinct lines concurrently into one pipe. With
    // one write(2) per record (<= PIPE_BUF, atomic on pipes) every line comes
    // out intact; with a write per fragment they would interleave.
    set_level(level::info);
    constexpr int lines_per_thread = 200;
    const std::string a_payload(1500, 'a');
    const std::string b_payload(1500, 'b');
    std::string out;
    std::thread reader([&] {
        char buf[65536];
        ssize_t n;
        while ((n = ::read(_fds[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<std::size_t>(n));
    });
    auto writer = [](char tag, const std::string& payload) {
        for (int i = 0; i < lines_per_thread; ++i) info("t={} i={} {} {} {}", tag, i, payload, escaped(payload, 2000), tag);
    };
    std::thread ta(writer, 'a', std::cref(a_payload));
    std::thread tb(writer, 'b', std::cref(b_payload));
    ta.join();
    tb.join();
    ::close(_fds[1]);
    _fds[1] = -1;
    reader.join();

    int counts[2] = {0, 0};
    std::size_t start = 0;
    while (start < out.size()) {
        auto nl = out.find('\n', start);
        ASSERT_NE(nl, std::string::npos);
        std::string_view line(out.data() + start, nl - start);
        auto body = line.find("]: t=");
        ASSERT_NE(body, std::string_view::npos) << line.substr(0, 100);
        char tag = line[body + 5];
        ASSERT_TRUE(tag == 'a' || tag == 'b');
        const std::string& payload = tag == 'a' ? a_payload : b_payload;
        std::string tail = " " + payload + " " + payload + " " + std::string(1, tag);
        ASSERT_GE(line.size(), tail.size());
        EXPECT_EQ(line.substr(line.size() - tail.size()), tail);
        ++counts[tag - 'a'];
        start = nl + 1;
    }
    EXPECT_EQ(counts[0], lines_per_thread);
    EXPECT_EQ(counts[1], lines_per_thread);
}

}  // namespace
}  // namespace ringmail::log
