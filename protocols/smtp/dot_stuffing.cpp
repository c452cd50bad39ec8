// dot_stuffing: see dot_stuffing.h for the contract.
#include "protocols/smtp/dot_stuffing.h"

#include <cstring>

#include "protocols/smtp/data_reader.h"

namespace ringmail::smtp {

namespace {

constexpr std::string_view stuffed_dot = ".";
constexpr std::string_view end_after_crlf = ".\r\n";
constexpr std::string_view end_with_crlf = "\r\n.\r\n";

iovec make_iov(const char* p, std::size_t n) {
    // iovec is shared with writev/io_uring, which only read the memory.
    return iovec{const_cast<char*>(p), n};
}

// Calls on_dot(i) for each index i of `body` where a line starts with '.'.
// `after` is the text before `body` (only its last two bytes matter: a line
// starts at body[0] after CRLF or at the very start, at body[1] after a CR
// that body[0] completes).
template <class F>
void for_each_dot_line(std::string_view body, std::string_view after, F&& on_dot) {
    const char* p = body.data();
    const std::size_t n = body.size();
    if (n > 0 && p[0] == '.' && (after.empty() || after.ends_with("\r\n"))) on_dot(std::size_t{0});
    const bool cr_before = after.ends_with('\r');
    std::size_t off = 0;
    while (off < n) {
        const void* lf = std::memchr(p + off, '\n', n - off);
        if (lf == nullptr) break;
        std::size_t i = static_cast<std::size_t>(static_cast<const char*>(lf) - p);
        bool crlf = i > 0 ? p[i - 1] == '\r' : cr_before;
        if (crlf && i + 1 < n && p[i + 1] == '.') on_dot(i + 1);
        off = i + 1;
    }
}

// The last (up to) two bytes of the pieces before `k`, as the text that
// precedes piece k.
std::string_view before_piece(std::span<const std::string_view> pieces, std::size_t k, char (&buf)[2]) {
    std::size_t have = 0;
    for (std::size_t j = k; j-- > 0 && have < 2;) {
        for (std::size_t b = pieces[j].size(); b-- > 0 && have < 2;) buf[1 - have++] = pieces[j][b];
    }
    return {buf + 2 - have, have};
}

std::span<const std::string_view> one_piece(const std::string_view& body) { return {&body, 1}; }

std::string_view terminator(std::span<const std::string_view> pieces) {
    char buf[2];
    std::string_view last = before_piece(pieces, pieces.size(), buf);
    if (last.empty() || last == "\r\n") return end_after_crlf;
    return end_with_crlf;
}

}  // namespace

void dot_stuff_segments(std::span<const std::string_view> pieces, std::vector<iovec>& out) {
    for (std::size_t k = 0; k < pieces.size(); ++k) {
        std::string_view body = pieces[k];
        char buf[2];
        std::size_t seg = 0;
        for_each_dot_line(body, before_piece(pieces, k, buf), [&](std::size_t dot) {
            if (dot > seg) out.push_back(make_iov(body.data() + seg, dot - seg));
            out.push_back(make_iov(stuffed_dot.data(), stuffed_dot.size()));
            seg = dot;  // the body's own dot follows the inserted one
        });
        if (body.size() > seg) out.push_back(make_iov(body.data() + seg, body.size() - seg));
    }
    std::string_view t = terminator(pieces);
    out.push_back(make_iov(t.data(), t.size()));
}

void dot_stuff_segments(std::string_view body, std::vector<iovec>& out) {
    dot_stuff_segments(one_piece(body), out);
}

std::size_t dot_stuffed_size(std::string_view body) {
    std::size_t dots = 0;
    for_each_dot_line(body, {}, [&](std::size_t) { ++dots; });
    return body.size() + dots + terminator(one_piece(body)).size();
}

std::string dot_stuff(std::string_view body) {
    std::string s;
    s.reserve(dot_stuffed_size(body));
    std::size_t seg = 0;
    for_each_dot_line(body, {}, [&](std::size_t dot) {
        s.append(body.substr(seg, dot - seg));
        s.push_back('.');
        seg = dot;
    });
    s.append(body.substr(seg));
    s.append(terminator(one_piece(body)));
    return s;
}

std::string dot_unstuff(std::string_view wire) {
    std::string s;
    data_reader r(static_cast<std::size_t>(-1));
    (void)r.feed(wire, [&](std::string_view piece) { s.append(piece); });
    return s;
}

}  // namespace ringmail::smtp
