#include "protocols/smtp/hop_count.h"

#include <cstring>

#include "protocols/smtp/ascii.h"

namespace ringmail::smtp {

namespace {
constexpr std::string_view field = "RECEIVED:";
}

// Line by line with memchr (the header section is scanned for every message):
// only the first bytes of each line are looked at one by one.
bool received_counter::feed(std::string_view piece) {
    const char* p = piece.data();
    const char* end = p + piece.size();
    while (p < end && !_done) {
        // Match the line's start against "received:" (it may span pieces).
        while (p < end && !_mismatch && _matched < field.size() && *p != '\n') {
            char c = *p;
            if (c != '\r') {
                if (ascii_upper(c) == field[_matched]) {
                    if (++_matched == field.size()) ++_count;
                } else {
                    _mismatch = true;
                }
                ++_line;
            }
            ++p;
        }
        if (p == end) break;
        // The rest of the line needs no look: jump to its end.
        const void* nl = std::memchr(p, '\n', static_cast<size_t>(end - p));
        if (nl == nullptr) {
            // The line goes on in the next piece; a CR alone does not make it
            // non-empty, anything else does.
            for (; p < end; ++p)
                if (*p != '\r') {
                    ++_line;
                    break;
                }
            break;
        }
        for (const char* q = p; q < static_cast<const char*>(nl); ++q)
            if (*q != '\r') {  // only whether the line is empty matters from here
                ++_line;
                break;
            }
        p = static_cast<const char*>(nl) + 1;
        if (_line == 0) _done = true;  // the empty line that ends the header section
        _line = 0;
        _matched = 0;
        _mismatch = false;
    }
    return !_done;
}

}  // namespace ringmail::smtp
