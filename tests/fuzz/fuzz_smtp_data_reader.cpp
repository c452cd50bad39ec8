// libFuzzer target: protocols/smtp/data_reader.h (data_reader::feed,
// check_chunk, finish_chunks).
//
// Input: byte 0 picks max_line_bytes, bytes 1-2 a split point, the rest is the
// wire data after "354". The contract says any split of the input into feed()
// calls gives the same concatenated content, flags, content_bytes and total
// consumed; this checks one-shot against a split at the fuzzer's point and
// against byte-at-a-time feeding. The same is checked for check_chunk().
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "protocols/smtp/data_reader.h"
#include "tests/fuzz/fuzz_check.h"

using namespace ringmail::smtp;
using ringmail::fuzz::within;

namespace {

constexpr std::array<std::size_t, 8> limits = {default_max_text_line_bytes, 0, 1, 2, 3, 5, 16, 76};

struct outcome {
    std::string content;
    std::size_t consumed = 0;
    bool done = false;
    data_flags flags;
    std::uint64_t content_bytes = 0;
};

bool same_flags(const data_flags& a, const data_flags& b) {
    return a.saw_bare_lf == b.saw_bare_lf && a.saw_bare_cr == b.saw_bare_cr &&
           a.saw_nul == b.saw_nul && a.line_too_long == b.line_too_long;
}

// Feeds `wire` in pieces whose ends are given by `cuts` (ascending, within size).
template <class Cuts>
outcome run(std::string_view wire, std::size_t max, const Cuts& cuts) {
    data_reader r(max);
    outcome o;
    std::size_t start = 0;
    auto feed_to = [&](std::size_t end) {
        while (!o.done && start < end) {
            std::string_view in = wire.substr(start, end - start);
            data_feed_result fr = r.feed(in, [&](std::string_view piece) {
                // zero copy: a piece is a view into `in` or the one held CR
                FUZZ_CHECK(within(piece, in) || piece == "\r");
                FUZZ_CHECK(!piece.empty());
                o.content.append(piece);
            });
            FUZZ_CHECK(fr.consumed <= in.size());
            FUZZ_CHECK(fr.done == r.done());
            if (!fr.done) FUZZ_CHECK(fr.consumed == in.size());
            start += fr.consumed;
            o.consumed += fr.consumed;
            o.done = fr.done;
        }
    };
    for (std::size_t c : cuts) feed_to(c);
    feed_to(wire.size());
    if (o.done) {
        // feeding after the end consumes nothing and emits nothing
        data_feed_result again = r.feed("x\r\n.\r\n", [&](std::string_view) { FUZZ_CHECK(false); });
        FUZZ_CHECK(again.done && again.consumed == 0);
    }
    o.flags = r.flags();
    o.content_bytes = r.content_bytes();
    return o;
}

void check_same(const outcome& a, const outcome& b) {
    FUZZ_CHECK(a.content == b.content);
    FUZZ_CHECK(a.consumed == b.consumed);
    FUZZ_CHECK(a.done == b.done);
    FUZZ_CHECK(same_flags(a.flags, b.flags));
    FUZZ_CHECK(a.content_bytes == b.content_bytes);
}


void check_chunks(std::string_view wire, std::size_t max, std::size_t split) {
    chunk_state one;
    check_chunk(wire, one, max);
    finish_chunks(one);
    FUZZ_CHECK(one.content_bytes == wire.size());

    chunk_state two;
    check_chunk(wire.substr(0, split), two, max);
    check_chunk(wire.substr(split), two, max);
    finish_chunks(two);
    FUZZ_CHECK(same_flags(one.flags, two.flags));
    FUZZ_CHECK(one.content_bytes == two.content_bytes);
    FUZZ_CHECK(one.line_bytes == two.line_bytes);

    // BDAT is verbatim: flags agree with a direct scan.
    bool bare_lf = false, bare_cr = false, nul = false;
    for (std::size_t i = 0; i < wire.size(); ++i) {
        const char c = wire[i];
        if (c == '\n' && (i == 0 || wire[i - 1] != '\r')) bare_lf = true;
        if (c == '\r' && (i + 1 == wire.size() || wire[i + 1] != '\n')) bare_cr = true;
        if (c == '\0') nul = true;
    }
    FUZZ_CHECK(one.flags.saw_bare_lf == bare_lf);
    FUZZ_CHECK(one.flags.saw_bare_cr == bare_cr);
    FUZZ_CHECK(one.flags.saw_nul == nul);
    // line_too_long: some CRLF-delimited line is longer than max (a trailing CR
    // of the last, unterminated line is not counted: it could have been a CRLF).
    bool too_long = false;
    for (std::size_t pos = 0; pos < wire.size();) {
        std::size_t crlf = wire.find("\r\n", pos);
        std::size_t len = (crlf == std::string_view::npos ? wire.size() : crlf) - pos;
        if (crlf == std::string_view::npos && wire.back() == '\r') --len;
        if (len > max) too_long = true;
        pos = crlf == std::string_view::npos ? wire.size() : crlf + 2;
    }
    FUZZ_CHECK(one.flags.line_too_long == too_long);
}

// Reference model, written from the contract in data_reader.h rather than from
// the state machine: the region before the terminator split at CRLF only.
struct model {
    std::string content;
    data_flags flags;
};

model reference(std::string_view region, std::size_t max, bool done) {
    model m;
    std::size_t pos = 0;
    while (pos < region.size()) {
        std::size_t crlf = region.find("\r\n", pos);
        const bool terminated = crlf != std::string_view::npos;
        std::string_view line = region.substr(pos, terminated ? crlf - pos : std::string_view::npos);
        // The CR of a last, unterminated line may yet be followed by LF: neither
        // content nor counted until it is known.
        const bool open_cr = !terminated && !done && !line.empty() && line.back() == '\r';
        std::string_view counted = open_cr ? line.substr(0, line.size() - 1) : line;
        // An open "." or ".\r" may still become the terminator, which is not a
        // content line: it is not measured until the next byte decides.
        const bool maybe_end = !terminated && !done && (line == "." || line == ".\r");
        // A leading (stuffing) dot is not counted against the limit.
        const std::size_t measured = counted.size() - (!counted.empty() && counted.front() == '.' ? 1 : 0);
        if (measured > max && !maybe_end) m.flags.line_too_long = true;
        // Unstuffing drops a leading dot; the CR of an open ".\r" is held back
        // (it may be the terminator), any other open CR is already content.
        std::string_view text = (open_cr && line == ".\r") ? std::string_view() : line;
        if (!text.empty() && text.front() == '.') text.remove_prefix(1);
        m.content.append(text);
        if (terminated) m.content.append("\r\n");
        // Inside a CRLF-delimited line every CR and LF is bare.
        for (char c : counted) {
            if (c == '\n') m.flags.saw_bare_lf = true;
            if (c == '\r') m.flags.saw_bare_cr = true;
            if (c == '\0') m.flags.saw_nul = true;
        }
        pos = terminated ? crlf + 2 : region.size();
    }
    return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 3) return 0;
    const std::size_t max = limits[data[0] % limits.size()];
    std::string_view wire(reinterpret_cast<const char*>(data) + 3, size - 3);
    const std::size_t split = (static_cast<std::size_t>(data[1]) << 8 | data[2]) % (wire.size() + 1);

    const outcome whole = run(wire, max, std::array<std::size_t, 0>{});
    FUZZ_CHECK(whole.content_bytes == whole.content.size());
    FUZZ_CHECK(whole.content.size() <= whole.consumed);
    if (whole.done) {
        // The end is CRLF "." CRLF (or ".\r\n" at the very start) and nothing after it is taken.
        FUZZ_CHECK(whole.consumed >= 3);
        FUZZ_CHECK(wire.substr(whole.consumed - 3, 3) == ".\r\n");
        FUZZ_CHECK(whole.consumed == 3 || wire.substr(whole.consumed - 5, 2) == "\r\n");
        FUZZ_CHECK(whole.content.empty() || whole.content.size() >= 2);
        if (!whole.content.empty()) FUZZ_CHECK(whole.content.substr(whole.content.size() - 2) == "\r\n");
    } else {
        FUZZ_CHECK(whole.consumed == wire.size());
    }

    {
        std::string_view region = whole.done ? wire.substr(0, whole.consumed - 3) : wire;
        model ref = reference(region, max, whole.done);
        FUZZ_CHECK(ref.content == whole.content);
        FUZZ_CHECK(same_flags(ref.flags, whole.flags));
    }

    check_same(whole, run(wire, max, std::array<std::size_t, 1>{split}));

    if (wire.size() <= 4096) {
        struct every_byte {
            std::size_t n;
            struct it {
                std::size_t i;
                std::size_t operator*() const { return i; }
                it& operator++() { ++i; return *this; }
                bool operator!=(const it& o) const { return i != o.i; }
            };
            it begin() const { return {1}; }
            it end() const { return {n < 1 ? 1 : n}; }
        };
        check_same(whole, run(wire, max, every_byte{wire.size()}));
    }

    check_chunks(wire, max, split);
    return 0;
}
