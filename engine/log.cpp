// log: see log.h for the contract.
#include "engine/log.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

namespace ringmail::log {

namespace {

std::atomic<int> g_fd{2};
std::atomic<int> g_pid{0};
char g_program[65] = "ringmaild";

void refresh_pid() { g_pid.store(static_cast<int>(::getpid()), std::memory_order_relaxed); }

int cached_pid()
{
    // The pid is cached (getpid() is a system call on modern glibc) and
    // refreshed in a fork() child so a daemonized process logs its own pid.
    static std::once_flag once;
    std::call_once(once, [] {
        refresh_pid();
        pthread_atfork(nullptr, nullptr, refresh_pid);
    });
    return g_pid.load(std::memory_order_relaxed);
}

struct thread_state {
    bool batching = false;
    fmt::memory_buffer held;  // complete lines waiting for flush_lines() (batching threads)
    fmt::memory_buffer line;
    fmt::memory_buffer message;
    time_t cached_second = -1;
    char cached_time[24] = {};  // "2026-11-25T07:39:30."
};

thread_local thread_state t_state;

std::string_view level_tag(level lvl)
{
    switch (lvl) {
    case level::error: return "error: ";
    case level::warning: return "warning: ";
    case level::info: return "";
    case level::debug: return "debug: ";
    }
    return "";
}

void append(fmt::memory_buffer& buf, std::string_view s) { buf.append(s.data(), s.data() + s.size()); }

void write_all(int fd, const char* data, std::size_t size)
{
    // One write(2) per line; the loop only continues a short write (which a
    // regular file or pipe does not produce for <= PIPE_BUF bytes).
    while (size > 0) {
        ssize_t n = ::write(fd, data, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;  // nowhere to report a failing log
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
}

}  // namespace

std::optional<level> parse_level(std::string_view text)
{
    if (text == "error") return level::error;
    if (text == "warning") return level::warning;
    if (text == "info") return level::info;
    if (text == "debug") return level::debug;
    return std::nullopt;
}

std::string_view to_string(level lvl)
{
    switch (lvl) {
    case level::error: return "error";
    case level::warning: return "warning";
    case level::info: return "info";
    case level::debug: return "debug";
    }
    return "unknown";
}

void set_program_name(std::string_view name)
{
    name = name.substr(0, sizeof(g_program) - 1);
    std::memcpy(g_program, name.data(), name.size());
    g_program[name.size()] = '\0';
}

void set_output_fd(int fd) { g_fd.store(fd, std::memory_order_relaxed); }

namespace detail {

void vlog(level lvl, fmt::string_view format, fmt::format_args args)
{
    thread_state& st = t_state;
    auto& line = st.line;
    auto& message = st.message;
    line.clear();
    message.clear();

    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != st.cached_second) {
        tm utc{};
        gmtime_r(&ts.tv_sec, &utc);
        strftime(st.cached_time, sizeof(st.cached_time), "%Y-%m-%dT%H:%M:%S.", &utc);
        st.cached_second = ts.tv_sec;
    }
    append(line, st.cached_time);
    fmt::format_to(std::back_inserter(line), "{:03}Z {}[{}]: ", ts.tv_nsec / 1000000, g_program, cached_pid());
    append(line, level_tag(lvl));

    try {
        fmt::vformat_to(std::back_inserter(message), format, args);
    } catch (const std::exception& e) {
        // Only reachable with a runtime format string; keep the process up.
        message.clear();
        fmt::format_to(std::back_inserter(message), "(log format error: {}) {}", e.what(),
                       std::string_view(format.data(), format.size()));
    }

    // Copy the message, neutralising CR/LF so one record is one line.
    for (char c : std::string_view(message.data(), message.size())) {
        if (c == '\n') append(line, "\\n");
        else if (c == '\r') append(line, "\\r");
        else line.push_back(c);
    }

    if (line.size() + 1 > max_line_bytes) {
        line.resize(max_line_bytes - 4);
        append(line, "...");
    }
    line.push_back('\n');
    if (!st.batching) {
        write_all(g_fd.load(std::memory_order_relaxed), line.data(), line.size());
        return;
    }
    // Batched: lines go out together, in writes of at most PIPE_BUF bytes made
    // of whole lines, so they never interleave with other threads' lines.
    if (st.held.size() + line.size() > pipe_atomic_bytes) flush_lines();
    st.held.append(line.data(), line.data() + line.size());
}

}  // namespace detail

void batch_lines_on_this_thread(bool on)
{
    if (!on) flush_lines();
    t_state.batching = on;
}

void flush_lines()
{
    thread_state& st = t_state;
    if (st.held.size() == 0) return;
    write_all(g_fd.load(std::memory_order_relaxed), st.held.data(), st.held.size());
    st.held.clear();
}

}  // namespace ringmail::log
