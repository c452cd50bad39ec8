// envelope: a queued message's metadata and its binary record encoding.
//
// The record is what the spool stores under "envelope" (queue id -> record).
// Format, version 1 (all integers little-endian, strings = u32 length + bytes):
//
//   u8  version (= 1)
//   u64 id, i64 received_at, str client_address, str helo, str sender,
//   u64 size, u8 body, u8 smtputf8, u8 ret, str envid,
//   u32 attempts, i64 next_attempt, str last_error, u8 is_dsn,
//   u32 recipient count, then per recipient:
//       str address, str orcpt, u8 notify, u8 state, str last_reply
//
// Never text lines: a CR/LF injected into any field (a HELO name, a remote
// reply) is just bytes inside a length-prefixed field and cannot split the
// record. Strings may hold any bytes, including NUL.
//
// decode() is total: it rejects truncation, trailing bytes, an unknown version,
// lengths above the limits below and out-of-range enum values, and never reads
// outside its input. It copies the fields out (the returned envelope owns its
// strings), so the input may be a view into an LMDB read transaction that ends
// right after.
//
// Thread rules: pure functions, no shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/result.h"

namespace ringmail::store {

enum class body_type : uint8_t { seven_bit, eight_bit_mime, binary_mime };
enum class dsn_ret : uint8_t { unset, full, hdrs };
// RFC 3461 NOTIFY: NEVER alone, or any combination of the other three.
enum notify_flags : uint8_t {
    notify_unset = 0,
    notify_never = 1,
    notify_success = 2,
    notify_failure = 4,
    notify_delay = 8,
};
enum class rcpt_state : uint8_t { pending, delivered, failed };

struct recipient {
    std::string address;
    std::string orcpt;        // RFC 3461 ORCPT as received ("rfc822;..."), empty if none
    uint8_t notify = notify_unset;
    rcpt_state state = rcpt_state::pending;
    std::string last_reply;   // last remote reply (or local diagnostic) for this recipient

    bool operator==(const recipient&) const = default;
};

struct envelope {
    uint64_t id = 0;
    int64_t received_at = 0;  // unix seconds
    std::string client_address;
    std::string helo;
    std::string sender;       // empty = null reverse-path <>
    uint64_t size = 0;        // body bytes
    body_type body = body_type::seven_bit;
    bool smtputf8 = false;
    dsn_ret ret = dsn_ret::unset;
    std::string envid;        // RFC 3461 ENVID as received, empty if none
    std::vector<recipient> recipients;
    uint32_t attempts = 0;
    int64_t next_attempt = 0; // unix seconds
    std::string last_error;
    bool is_dsn = false;      // this message is itself a bounce: never bounce it

    bool operator==(const envelope&) const = default;
};

inline constexpr uint8_t envelope_format_version = 1;
// Limits decode() enforces (encode() does not truncate; callers' parsers keep
// fields far below these).
inline constexpr uint32_t envelope_max_field_bytes = 1u << 20;   // any one string
inline constexpr uint32_t envelope_max_recipients = 1u << 20;

enum class record_error : uint8_t {
    truncated,        // input ends inside a field
    trailing_bytes,   // bytes left after the last field
    unknown_version,  // first byte is not a version this build reads
    bad_length,       // a length or count above the limits
    bad_value,        // an enum or bool byte out of range
};
const char* to_string(record_error e);

// Exact number of bytes encode() appends.
size_t encoded_size(const envelope& env);
// Appends the record to out (reserves once; reuse `out` to avoid allocation).
void encode(const envelope& env, std::string& out);
result<envelope, record_error> decode(std::string_view record);

}  // namespace ringmail::store
