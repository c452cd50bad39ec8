// log: leveled, line-atomic logging to stderr.
//
// Contract:
//  - Each record is one line: "2026-11-25T07:39:30.123Z ringmaild[PID]: "
//    + ("error: " | "warning: " | "debug: " | nothing for info) + message,
//    emitted with ONE write(2) so lines from different threads (one shard
//    per core) never interleave. A record is capped at max_line_bytes
//    (PIPE_BUF, so writes to pipes are atomic by POSIX) and truncated with
//    "..."; CR and LF inside a message are written as "\r" / "\n" so a
//    message cannot forge a second line.
//  - Formatting uses a thread-local buffer: no heap allocation per record
//    once the buffer has grown. The level check is a relaxed atomic load.
//  - Arguments are evaluated even when the level is disabled (these are
//    functions, not macros): guard expensive arguments with log::enabled().
//  - Untrusted input (client commands, remote replies) must be logged through
//    log::escaped(), Postfix-style: printable ASCII as-is, everything else
//    (and '\') as \xNN, truncated to `max` input bytes followed by "...".
//  - set_program_name() and set_output_fd() are start-up / test settings;
//    call them before threads log.
#pragma once

#include <atomic>
#include <cstddef>
#include <optional>
#include <string_view>

#include <fmt/core.h>
#include <fmt/format.h>

namespace ringmail::log {

enum class level : int { error = 0, warning = 1, info = 2, debug = 3 };

// Record size cap including the trailing newline (== PIPE_BUF on Linux).
inline constexpr std::size_t max_line_bytes = 4096;

namespace detail {
inline std::atomic<int> current_level{static_cast<int>(level::info)};
void vlog(level lvl, fmt::string_view format, fmt::format_args args);
}  // namespace detail

inline bool enabled(level lvl)
{
    return static_cast<int>(lvl) <= detail::current_level.load(std::memory_order_relaxed);
}
inline void set_level(level lvl) { detail::current_level.store(static_cast<int>(lvl), std::memory_order_relaxed); }
inline level get_level() { return static_cast<level>(detail::current_level.load(std::memory_order_relaxed)); }

// "error", "warning", "info", "debug" (exact, lower case); nullopt otherwise.
std::optional<level> parse_level(std::string_view text);
std::string_view to_string(level lvl);

// Name in the prefix; default "ringmaild". Truncated to 64 bytes.
void set_program_name(std::string_view name);
// Destination file descriptor; default 2 (stderr). Not owned.
void set_output_fd(int fd);

// Batching, for event-loop threads: lines logged on this thread are held and
// written together by flush_lines() (the loop calls it once per turn, so a
// line waits at most one turn), in writes of whole lines of at most
// pipe_atomic_bytes so threads never interleave. Saves a write(2) per line.
inline constexpr std::size_t pipe_atomic_bytes = 4096;  // PIPE_BUF on Linux
void batch_lines_on_this_thread(bool on);
void flush_lines();

template <class... Args>
void error(fmt::format_string<Args...> format, Args&&... args)
{
    if (enabled(level::error)) detail::vlog(level::error, format, fmt::make_format_args(args...));
}
template <class... Args>
void warning(fmt::format_string<Args...> format, Args&&... args)
{
    if (enabled(level::warning)) detail::vlog(level::warning, format, fmt::make_format_args(args...));
}
template <class... Args>
void info(fmt::format_string<Args...> format, Args&&... args)
{
    if (enabled(level::info)) detail::vlog(level::info, format, fmt::make_format_args(args...));
}
template <class... Args>
void debug(fmt::format_string<Args...> format, Args&&... args)
{
    if (enabled(level::debug)) detail::vlog(level::debug, format, fmt::make_format_args(args...));
}

// A view of untrusted bytes to be formatted safely; holds a string_view, so
// use it only within the log call (the usual `log::info("{}", escaped(x))`).
struct escaped_text {
    std::string_view text;
    std::size_t max;
};

inline escaped_text escaped(std::string_view untrusted, std::size_t max = 200)
{
    return escaped_text{untrusted, max};
}

}  // namespace ringmail::log

template <>
struct fmt::formatter<ringmail::log::escaped_text> {
    constexpr auto parse(fmt::format_parse_context& ctx) { return ctx.begin(); }

    template <class FormatContext>
    auto format(const ringmail::log::escaped_text& e, FormatContext& ctx) const
    {
        static constexpr char hex[] = "0123456789abcdef";
        auto out = ctx.out();
        std::size_t n = e.text.size() < e.max ? e.text.size() : e.max;
        for (std::size_t i = 0; i < n; ++i) {
            auto c = static_cast<unsigned char>(e.text[i]);
            if (c >= 0x20 && c < 0x7f && c != '\\') {
                *out++ = static_cast<char>(c);
            } else {
                *out++ = '\\';
                *out++ = 'x';
                *out++ = hex[c >> 4];
                *out++ = hex[c & 0xf];
            }
        }
        if (e.text.size() > e.max) {
            *out++ = '.';
            *out++ = '.';
            *out++ = '.';
        }
        return out;
    }
};
