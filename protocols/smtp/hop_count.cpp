#include "protocols/smtp/hop_count.h"

namespace ringmail::smtp {

namespace {
constexpr std::string_view field = "received:";
}

bool received_counter::feed(std::string_view piece) {
    for (std::size_t i = 0; i < piece.size() && !_done; ++i) {
        char c = piece[i];
        if (c == '\n') {
            if (_line == 0) _done = true;  // the empty line that ends the header section
            _line = 0;
            _matched = 0;
            _mismatch = false;
            continue;
        }
        if (c == '\r') continue;
        if (!_mismatch && _matched < field.size()) {
            char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c;
            if (lower == field[_matched]) {
                if (++_matched == field.size()) ++_count;
            } else {
                _mismatch = true;
            }
        }
        ++_line;
    }
    return !_done;
}

}  // namespace ringmail::smtp
