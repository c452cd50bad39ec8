// hop_count: counts the Received: header fields of a message, the loop
// detection of RFC 5321 §6.3 ("simple counting of the number of Received:
// header fields ... has proven to be an effective ... method of detecting
// loops"). Fed the message as it is stored (dot-unstuffed, CRLF lines), in
// pieces split anywhere; only the header section is looked at: counting stops
// at the first empty line, so a long body costs nothing.
#pragma once

#include <cstddef>
#include <string_view>

namespace ringmail::smtp {

class received_counter {
public:
    // Feeds the next bytes; returns false once the header section has ended
    // (further pieces need not be fed).
    bool feed(std::string_view piece);
    unsigned count() const { return _count; }
    bool header_ended() const { return _done; }

private:
    unsigned _count = 0;
    std::size_t _line = 0;    // bytes of the current line so far (CR excluded)
    std::size_t _matched = 0; // leading bytes that spell "Received:" (any case)
    bool _mismatch = false;   // the current line is not a Received: field
    bool _done = false;
};

// The number of Received: fields in the header section of `parts` (pieces of
// one message, in order).
template <class Parts>
unsigned count_received(const Parts& parts) {
    received_counter c;
    for (std::string_view p : parts)
        if (!c.feed(p)) break;
    return c.count();
}

}  // namespace ringmail::smtp
