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

// Calls on_line_start(i) for each index i where a line starts with '.'.
template <class F>
void for_each_dot_line(std::string_view body, F&& on_dot) {
    const char* p = body.data();
    const std::size_t n = body.size();
    if (n > 0 && p[0] == '.') on_dot(std::size_t{0});
    std::size_t off = 0;
    while (off < n) {
        const void* lf = std::memchr(p + off, '\n', n - off);
        if (lf == nullptr) break;
        std::size_t i = static_cast<std::size_t>(static_cast<const char*>(lf) - p);
        if (i > 0 && p[i - 1] == '\r' && i + 1 < n && p[i + 1] == '.') on_dot(i + 1);
        off = i + 1;
    }
}

std::string_view terminator(std::string_view body) {
    if (body.empty() || (body.size() >= 2 && body.substr(body.size() - 2) == "\r\n"))
        return end_after_crlf;
    return end_with_crlf;
}

}  // namespace

void dot_stuff_segments(std::string_view body, std::vector<iovec>& out) {
    std::size_t seg = 0;
    for_each_dot_line(body, [&](std::size_t dot) {
        if (dot > seg) out.push_back(make_iov(body.data() + seg, dot - seg));
        out.push_back(make_iov(stuffed_dot.data(), stuffed_dot.size()));
        seg = dot;  // the body's own dot follows the inserted one
    });
    if (body.size() > seg) out.push_back(make_iov(body.data() + seg, body.size() - seg));
    std::string_view t = terminator(body);
    out.push_back(make_iov(t.data(), t.size()));
}

std::size_t dot_stuffed_size(std::string_view body) {
    std::size_t dots = 0;
    for_each_dot_line(body, [&](std::size_t) { ++dots; });
    return body.size() + dots + terminator(body).size();
}

std::string dot_stuff(std::string_view body) {
    std::string s;
    s.reserve(dot_stuffed_size(body));
    std::size_t seg = 0;
    for_each_dot_line(body, [&](std::size_t dot) {
        s.append(body.substr(seg, dot - seg));
        s.push_back('.');
        seg = dot;
    });
    s.append(body.substr(seg));
    s.append(terminator(body));
    return s;
}

std::string dot_unstuff(std::string_view wire) {
    std::string s;
    data_reader r(static_cast<std::size_t>(-1));
    (void)r.feed(wire, [&](std::string_view piece) { s.append(piece); });
    return s;
}

}  // namespace ringmail::smtp
