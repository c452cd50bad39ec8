// body_split: see body_split.h for the contract.
#include "store/body_split.h"

namespace ringmail::store {

namespace {

constexpr std::size_t page_header = 16;  // LMDB's PAGEHDRSZ on 64-bit

// The end of the last CRLF lying within [lo, end) of the concatenated parts
// (the index just after its LF), or 0 if there is none. Walks backward from
// `end` without copying.
std::size_t last_crlf_end(std::span<const std::string_view> parts, std::size_t end, std::size_t lo) {
    // The part holding byte end - 1, and where it starts.
    std::size_t idx = 0, start = 0;
    while (idx < parts.size() && start + parts[idx].size() < end) start += parts[idx++].size();
    bool lf_after = false;  // the byte after the current one is '\n'
    for (std::size_t pos = end; pos > lo;) {
        --pos;
        while (pos < start) start -= parts[--idx].size();
        char c = parts[idx][pos - start];
        if (c == '\r' && lf_after) return pos + 2;
        lf_after = c == '\n';
    }
    return 0;
}

}  // namespace

std::size_t split_point(std::span<const std::string_view> parts, std::size_t total, std::size_t page_size) {
    const std::size_t limit = tail_limit(page_size);
    // Fits one overflow page (or a leaf): nothing to save.
    if (total + page_header <= page_size) return total;
    std::size_t pages = (total + page_header + page_size - 1) / page_size;
    std::size_t head_max = (pages - 1) * page_size - page_header;  // one page fewer
    if (total - head_max > limit) return total;                    // the tail could not fit a leaf
    std::size_t lo = total - limit;                                // the tail may start here at the earliest
    std::size_t cut = last_crlf_end(parts, head_max, lo > 2 ? lo - 2 : 0);
    if (cut == 0 || cut < lo || cut >= total) return total;
    return cut;
}

}  // namespace ringmail::store
