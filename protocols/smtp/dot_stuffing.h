// dot_stuffing: outbound transparency for DATA (RFC 5321 §4.5.2).
//
// Contract
//   dot_stuff_segments(body, out) appends to `out` iovecs that, written in
//   order, send `body` dot-stuffed and terminated:
//   - a "." is inserted before every line that starts with "." (lines start
//     at the beginning of the body and after every CRLF; only CRLF ends a
//     line, matching data_reader, so dot_stuff then data_reader returns the
//     body unchanged);
//   - the terminator is ".\r\n" if the body ends with CRLF or is empty,
//     otherwise "\r\n.\r\n" (RFC 5321 §4.1.1.4: the mail data must end in
//     CRLF before the final ".").
//   Body segments point into `body`; insertions and terminators point to
//   static storage. Body bytes are never copied. `out` is not cleared; reuse
//   one vector per connection so its capacity is kept.
//   Lifetimes: the iovecs point into the caller's body and live as long as
//   it.
//
//   The span overload sends the pieces as one body (a stored message may be
//   a head and a tail, store/body_split.h): a line may start anywhere,
//   including at a piece's start or between a CR and an LF split over two.
//
//   dot_stuff() / dot_unstuff() build std::strings for tests and DSNs.
//   dot_unstuff() runs data_reader over stuffed, terminated wire data and
//   returns the content up to the terminator.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ringmail::smtp {

void dot_stuff_segments(std::string_view body, std::vector<iovec>& out);
void dot_stuff_segments(std::span<const std::string_view> pieces, std::vector<iovec>& out);

// Number of bytes dot_stuff_segments() would produce (for SIZE= checks).
std::size_t dot_stuffed_size(std::string_view body);

std::string dot_stuff(std::string_view body);
std::string dot_unstuff(std::string_view wire);

}  // namespace ringmail::smtp
