// data_reader: see data_reader.h for the contract.
#include "protocols/smtp/data_reader.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace ringmail::smtp {

namespace {
constexpr std::string_view held_cr = "\r";
}

void data_reader::reset() {
    _line_bytes = 0;
    _content_bytes = 0;
    _flags = {};
    _state = state::line_start;
}

namespace {
// Index of the first CR, LF or NUL in p[i, n), or n. Message content is
// mostly plain text, so the scan runs 16 bytes at a time; it never reads
// outside [i, n).
inline std::size_t skip_plain(const char* p, std::size_t i, std::size_t n) {
#if defined(__SSE2__)
    const __m128i cr = _mm_set1_epi8('\r');
    const __m128i lf = _mm_set1_epi8('\n');
    const __m128i nul = _mm_setzero_si128();
    while (i + 16 <= n) {
        __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)),
                                   _mm_cmpeq_epi8(v, nul));
        int mask = _mm_movemask_epi8(hit);
        if (mask != 0) return i + static_cast<std::size_t>(__builtin_ctz(static_cast<unsigned>(mask)));
        i += 16;
    }
#endif
    while (i < n && p[i] != '\r' && p[i] != '\n' && p[i] != '\0') ++i;
    return i;
}
}  // namespace

data_feed_result data_reader::feed_impl(std::string_view in, void* ctx, emit_fn fn) {
    if (_state == state::done) return {0, true};

    const char* p = in.data();
    const std::size_t n = in.size();
    std::size_t piece = 0;  // start of the pending piece in `in`
    auto flush = [&](std::size_t end) {
        if (end > piece) {
            fn(ctx, std::string_view(p + piece, end - piece));
            _content_bytes += end - piece;
        }
    };

    state st = _state;
    std::size_t line = _line_bytes;
    const std::size_t max = _max_line_bytes;

    for (std::size_t i = 0; i < n; ++i) {
        if (st == state::mid) {
            // Fast path: plain bytes inside a line only lengthen it.
            std::size_t j = skip_plain(p, i, n);
            line += j - i;
            if (line > max) _flags.line_too_long = true;
            i = j;
            if (i == n) break;
        }
        const char c = p[i];
        switch (st) {
        case state::line_start:
            if (c == '.') {
                // RFC 5321 §4.5.2: drop the leading dot; if the line turns
                // out to be just ".", it is the terminator. The dot is not
                // counted against the line limit (§4.5.3.1.6: "not counting
                // the leading dot duplicated for transparency").
                flush(i);
                piece = i + 1;
                st = state::dot;
                continue;
            }
            break;
        case state::dot:
            if (c == '\r') {
                piece = i + 1;  // hold the CR back until we see what follows
                ++line;
                st = state::dot_cr;
                continue;
            }
            break;  // the dot was stuffing; c is ordinary content
        case state::dot_cr:
            if (c == '\n') {
                // CRLF "." CRLF: the end of data. Nothing of ".\r\n" is content.
                _state = state::done;
                _line_bytes = 0;
                return {i + 1, true};
            }
            // The held CR was a bare CR and is content.
            _flags.saw_bare_cr = true;
            if (i > 0) {
                piece = i - 1;
            } else {
                fn(ctx, held_cr);
                _content_bytes += 1;
            }
            // line already counts the CR; the generic code below handles c
            // as a byte following a non-CR.
            st = state::mid;
            break;
        default:
            break;
        }

        // Generic byte handling inside a line (st is line_start, dot, mid or cr).
        ++line;
        if (c == '\n') {
            if (st == state::cr) {
                // CRLF: line ends. line counts CR and LF.
                if (line - 2 > max) _flags.line_too_long = true;
                line = 0;
                st = state::line_start;
                continue;
            }
            _flags.saw_bare_lf = true;
            st = state::mid;
        } else if (c == '\r') {
            if (st == state::cr) _flags.saw_bare_cr = true;
            st = state::cr;
            // The bytes before this CR are content for sure.
            if (line - 1 > max) _flags.line_too_long = true;
            continue;
        } else {
            if (st == state::cr) _flags.saw_bare_cr = true;
            if (c == '\0') _flags.saw_nul = true;
            st = state::mid;
        }
        if (line > max) _flags.line_too_long = true;
    }

    // Emit what is left; a held CR (dot_cr) or a dropped dot is already
    // outside [piece, n).
    flush(n);
    _state = st;
    _line_bytes = line;
    return {n, false};
}

void check_chunk(std::string_view in, chunk_state& st, std::size_t max_line_bytes) {
    std::size_t line = st.line_bytes;
    bool prev_cr = st.prev_cr;
    const char* p = in.data();
    const std::size_t n = in.size();
    for (std::size_t i = 0; i < n; ++i) {
        if (!prev_cr) {
            // Fast path: plain bytes only lengthen the line.
            std::size_t j = skip_plain(p, i, n);
            line += j - i;
            if (line > max_line_bytes) st.flags.line_too_long = true;
            i = j;
            if (i == n) break;
        }
        const char c = p[i];
        ++line;
        if (c == '\n') {
            if (prev_cr) {
                if (line - 2 > max_line_bytes) st.flags.line_too_long = true;
                line = 0;
                prev_cr = false;
                continue;
            }
            st.flags.saw_bare_lf = true;
        } else if (c == '\r') {
            if (prev_cr) st.flags.saw_bare_cr = true;
            prev_cr = true;
            if (line - 1 > max_line_bytes) st.flags.line_too_long = true;
            continue;
        } else {
            if (prev_cr) st.flags.saw_bare_cr = true;
            if (c == '\0') st.flags.saw_nul = true;
        }
        prev_cr = false;
        if (line > max_line_bytes) st.flags.line_too_long = true;
    }
    st.line_bytes = line;
    st.prev_cr = prev_cr;
    st.content_bytes += in.size();
}

void finish_chunks(chunk_state& st) {
    if (st.prev_cr) st.flags.saw_bare_cr = true;
}

}  // namespace ringmail::smtp
