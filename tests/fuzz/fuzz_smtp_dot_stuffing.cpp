// libFuzzer target: protocols/smtp/dot_stuffing.h round trip through
// data_reader (protocols/smtp/data_reader.h).
//
// Input: a message body. dot_stuff(body) must be exactly the bytes the iovecs
// of dot_stuff_segments() describe, dot_stuffed_size() long, end in exactly
// one terminator, and a data_reader fed that wire (in one piece and split at
// a fuzzer-chosen point) must end exactly at its end and give back the body
// (plus the CRLF dot_stuff adds when the body does not end in one).
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "protocols/smtp/data_reader.h"
#include "protocols/smtp/dot_stuffing.h"
#include "tests/fuzz/fuzz_check.h"

using namespace ringmail::smtp;

namespace {

bool ends_crlf(std::string_view s) { return s.size() >= 2 && s.substr(s.size() - 2) == "\r\n"; }

std::string unstuff(std::string_view wire, std::size_t split, bool& done, std::size_t& consumed) {
    data_reader r(static_cast<std::size_t>(-1));
    std::string out;
    auto sink = [&](std::string_view p) { out.append(p); };
    data_feed_result a = r.feed(wire.substr(0, split), sink);
    consumed = a.consumed;
    done = a.done;
    if (!a.done) {
        data_feed_result b = r.feed(wire.substr(a.consumed), sink);
        consumed += b.consumed;
        done = b.done;
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::size_t split_seed = static_cast<std::size_t>(data[0]) << 8 | data[1];
    std::string_view body(reinterpret_cast<const char*>(data) + 2, size - 2);

    const std::string wire = dot_stuff(body);
    FUZZ_CHECK(wire.size() == dot_stuffed_size(body));

    std::vector<iovec> iov;
    dot_stuff_segments(body, iov);
    std::string gathered;
    for (const iovec& v : iov) {
        FUZZ_CHECK(v.iov_len > 0);
        gathered.append(static_cast<const char*>(v.iov_base), v.iov_len);
    }
    FUZZ_CHECK(gathered == wire);

    const std::size_t cut = split_seed % (body.size() + 1);
    const std::string_view pieces[] = {body.substr(0, cut), body.substr(cut)};
    iov.clear();
    dot_stuff_segments(pieces, iov);
    gathered.clear();
    for (const iovec& v : iov) {
        FUZZ_CHECK(v.iov_len > 0);
        gathered.append(static_cast<const char*>(v.iov_base), v.iov_len);
    }
    FUZZ_CHECK(gathered == wire);

    const std::string expect =
        body.empty() || ends_crlf(body) ? std::string(body) : std::string(body) + "\r\n";

    bool done = false;
    std::size_t consumed = 0;
    std::string got = unstuff(wire, wire.size(), done, consumed);
    FUZZ_CHECK(done);
    FUZZ_CHECK(consumed == wire.size());  // the terminator is the very end, not earlier
    FUZZ_CHECK(got == expect);
    FUZZ_CHECK(dot_unstuff(wire) == expect);

    const std::size_t split = split_seed % (wire.size() + 1);
    std::string got2 = unstuff(wire, split, done, consumed);
    FUZZ_CHECK(done && consumed == wire.size());
    FUZZ_CHECK(got2 == expect);
    return 0;
}
