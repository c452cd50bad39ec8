// data_reader: streaming decoder for the DATA phase (RFC 5321 §4.5.2) and a
// checker for BDAT chunks (RFC 3030 §2).
//
// Contract
//   data_reader::feed(in, emit) scans `in` and calls emit(std::string_view)
//   for each contiguous piece of message content, then returns how many
//   bytes of `in` it consumed and whether the end of data was reached.
//   - Pieces are views into `in` (zero copy), except a CR held back across
//     a buffer boundary (after a line-start "."), which is emitted from
//     static storage. Pieces are valid only during the emit call's caller
//     lifetime of `in`: views point into the caller's input and live as
//     long as it.
//   - Dot-unstuffing, RFC 5321 §4.5.2: a line that starts with "." and has
//     other characters loses its first "."; a line that is exactly "."
//     ends the data. Lines are delimited by CRLF only; the data phase
//     starts at a line start, so ".\r\n" first means an empty message.
//   - The end is CRLF "." CRLF only; the first CRLF belongs to the content.
//     "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n" ... are content
//     (the SMTP smuggling defence). Bytes after the terminator are not
//     consumed: they are pipelined commands.
//   - Flags are sticky until reset(): saw_bare_lf, saw_bare_cr, saw_nul
//     (NUL is legal only with BODY=BINARYMIME; the session decides), and
//     line_too_long (a line longer than max_line_bytes excluding CRLF and a
//     stuffing dot; RFC 5321 §4.5.3.1.6: 998 + CRLF, "not counting the
//     leading dot duplicated for transparency"). The flag is
//     set as soon as the limit is passed, without buffering the line.
//   - content_bytes() counts emitted bytes, for the SIZE limit.
//   Any split of the input into feed() calls gives the same pieces'
//   concatenation, flags and total consumed.
//
//   check_chunk(in, state) tracks the same flags over BDAT chunks, which are
//   taken verbatim (no unstuffing, no terminator). Call finish_chunks() after
//   the LAST chunk so a trailing bare CR is flagged.
//
// No I/O, no allocation; O(n) per call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <utility>

namespace ringmail::smtp {

inline constexpr std::size_t default_max_text_line_bytes = 998;  // excl. CRLF

struct data_flags {
    bool saw_bare_lf = false;
    bool saw_bare_cr = false;
    bool saw_nul = false;
    bool line_too_long = false;
};

struct data_feed_result {
    std::size_t consumed = 0;
    bool done = false;  // CRLF.CRLF seen; consumed ends right after it
};

class data_reader {
public:
    explicit data_reader(std::size_t max_line_bytes = default_max_text_line_bytes)
        : _max_line_bytes(max_line_bytes) {}

    void reset();

    template <class Sink>
    data_feed_result feed(std::string_view in, Sink&& emit) {
        using sink_t = std::remove_reference_t<Sink>;
        return feed_impl(in, static_cast<void*>(&emit), [](void* ctx, std::string_view piece) {
            (*static_cast<sink_t*>(ctx))(piece);
        });
    }

    const data_flags& flags() const { return _flags; }
    std::uint64_t content_bytes() const { return _content_bytes; }
    bool done() const { return _state == state::done; }

private:
    enum class state : std::uint8_t {
        line_start,  // after CRLF or at the start of data
        dot,         // line-start "." seen and dropped
        dot_cr,      // line-start ".\r" seen; the CR is held back
        mid,         // inside a line, previous byte not CR
        cr,          // inside a line, previous byte CR (already emitted)
        done,
    };
    using emit_fn = void (*)(void*, std::string_view);

    data_feed_result feed_impl(std::string_view in, void* ctx, emit_fn fn);

    std::size_t _max_line_bytes;
    std::size_t _line_bytes = 0;  // bytes of the current line so far (not a stuffing dot)
    std::uint64_t _content_bytes = 0;
    data_flags _flags;
    state _state = state::line_start;
};

// BDAT (RFC 3030): verbatim content, flags only.
struct chunk_state {
    data_flags flags;
    std::size_t line_bytes = 0;  // bytes on the current line, a trailing CR included
    std::uint64_t content_bytes = 0;
    bool prev_cr = false;
};

void check_chunk(std::string_view in, chunk_state& st,
                 std::size_t max_line_bytes = default_max_text_line_bytes);
void finish_chunks(chunk_state& st);

}  // namespace ringmail::smtp
