// body_split: where a stored message is cut in two so that it takes whole
// LMDB pages.
//
// LMDB stores a value longer than about half a page on its own run of
// overflow pages (16-byte header, then the bytes), so a message of 4,269
// bytes (a 4 KiB message and our Received: field) takes two 4 KiB pages, half
// of them empty, and every commit writes and flushes them. The spool instead
// keeps the message's last lines apart (the "tail", in the leaf pages of a
// second database, shared with other messages' tails) when that saves an
// overflow page: the head then fills its pages to within a line.
//
// Contract: split_point() returns the head's length h, 0 < h <= total, for a
// body given as `parts` (their sizes add up to `total`):
//   - h == total: store it whole (it fits its pages well, or no line end lets
//     the tail fit in a leaf page);
//   - h < total: head = [0, h) fills at most one overflow page less than the
//     whole would, it ends with CRLF, and the tail [h, total) is at most
//     tail_limit(page_size) bytes. A tail therefore always starts a line,
//     which keeps dot-stuffing and the DSN's header walk simple.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

namespace ringmail::store {

// Bytes of a value LMDB keeps in a leaf page (with an 8-byte key): half a
// page less the page, node and key headers (2,022 at 4 KiB), with room spare.
constexpr std::size_t tail_limit(std::size_t page_size) { return (page_size - 16) / 2 - 40; }

std::size_t split_point(std::span<const std::string_view> parts, std::size_t total, std::size_t page_size);

}  // namespace ringmail::store
