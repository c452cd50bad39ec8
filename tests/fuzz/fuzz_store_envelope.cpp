// libFuzzer target: store/envelope.h (decode, encode, encoded_size).
//
// Input: a spool record, as LMDB would hand it back (possibly corrupt).
// decode() must never crash or over-read (ASan) and never allocate by a
// corrupt count (-rss_limit_mb / -malloc_limit_mb). The format has one
// encoding per envelope, so an accepted record re-encodes to the very same
// bytes, and decode(encode(e)) == e. The same bytes also drive a
// FuzzedDataProvider that builds an arbitrary envelope for encode -> decode.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "store/envelope.h"
#include "tests/fuzz/fuzz_check.h"

using namespace ringmail::store;

namespace {

void round_trip(const envelope& env) {
    std::string out;
    encode(env, out);
    FUZZ_CHECK(out.size() == encoded_size(env));
    auto again = decode(out);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(*again == env);
    // appending keeps what was there
    std::string prefixed = "xy";
    encode(env, prefixed);
    FUZZ_CHECK(prefixed.size() == 2 + out.size() && prefixed.substr(2) == out);
}

envelope build(FuzzedDataProvider& fdp) {
    envelope e;
    e.id = fdp.ConsumeIntegral<std::uint64_t>();
    e.received_at = fdp.ConsumeIntegral<std::int64_t>();
    e.client_address = fdp.ConsumeRandomLengthString(64);
    e.helo = fdp.ConsumeRandomLengthString(300);
    e.sender = fdp.ConsumeRandomLengthString(300);
    e.size = fdp.ConsumeIntegral<std::uint64_t>();
    e.body = static_cast<body_type>(fdp.ConsumeIntegralInRange<int>(0, 2));
    e.smtputf8 = fdp.ConsumeBool();
    e.ret = static_cast<dsn_ret>(fdp.ConsumeIntegralInRange<int>(0, 2));
    e.envid = fdp.ConsumeRandomLengthString(100);
    e.attempts = fdp.ConsumeIntegral<std::uint32_t>();
    e.next_attempt = fdp.ConsumeIntegral<std::int64_t>();
    e.last_error = fdp.ConsumeRandomLengthString(600);
    e.is_dsn = fdp.ConsumeBool();
    const int n = fdp.ConsumeIntegralInRange<int>(0, 20);
    for (int i = 0; i < n && fdp.remaining_bytes() > 0; ++i) {
        recipient r;
        r.address = fdp.ConsumeRandomLengthString(300);
        r.orcpt = fdp.ConsumeRandomLengthString(100);
        const int nf = fdp.ConsumeIntegralInRange<int>(0, 8);  // 8: NEVER alone
        r.notify = nf == 8 ? notify_never : static_cast<std::uint8_t>(nf << 1 & 0x0e);
        r.state = static_cast<rcpt_state>(fdp.ConsumeIntegralInRange<int>(0, 2));
        r.last_reply = fdp.ConsumeRandomLengthString(600);
        e.recipients.push_back(std::move(r));
    }
    return e;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view record(reinterpret_cast<const char*>(data), size);

    auto env = decode(record);
    if (env) {
        std::string out;
        encode(*env, out);
        FUZZ_CHECK(out == record);  // canonical: decode -> encode is the identity
        round_trip(*env);
    } else {
        FUZZ_CHECK(to_string(env.error()) != nullptr);
        // Any proper prefix of a rejected-as-truncated record is truncated too.
        if (env.error() == record_error::truncated && size > 1) {
            auto shorter = decode(record.substr(0, size - 1));
            FUZZ_CHECK(!shorter.ok());
        }
    }

    FuzzedDataProvider fdp(data, size);
    round_trip(build(fdp));
    return 0;
}
