// queue_id: the 64-bit identity of a queued message.
//
// Layout: (unix_microseconds << 8) | shard_index. The top 56 bits are a
// microsecond timestamp (good until the year 4253), the low 8 bits the shard
// that owns the message, so ids from different shards never collide and an id
// says which shard's spool holds it without a lookup.
//
// Uniqueness: each shard owns one queue_id_generator and calls it only from
// its own thread (no locking, not thread-safe). next() is strictly increasing
// even if the wall clock steps backwards: it never returns a timestamp at or
// below the last one it issued. After a restart, seed it with observe() for
// every id found in the spool so a clock that went back across the restart
// cannot reissue an id either.
//
// Keys: in LMDB an id is stored as 8 bytes big-endian (to_key), so the
// default memcmp key order is numeric order, i.e. arrival order per shard.
//
// Text form: to_hex gives exactly 16 uppercase hex digits in a fixed-size
// buffer (no heap); parse_hex accepts exactly 16 hex digits of either case.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ringmail::store {

inline constexpr unsigned queue_id_shard_bits = 8;
inline constexpr uint64_t queue_id_max_micros = (uint64_t{1} << (64 - queue_id_shard_bits)) - 1;

constexpr uint64_t make_queue_id(uint64_t unix_us, uint8_t shard) {
    return ((unix_us & queue_id_max_micros) << queue_id_shard_bits) | shard;
}
constexpr uint8_t queue_id_shard(uint64_t id) { return static_cast<uint8_t>(id & 0xff); }
constexpr uint64_t queue_id_micros(uint64_t id) { return id >> queue_id_shard_bits; }

// One per shard, used from that shard's thread only.
class queue_id_generator {
public:
    explicit queue_id_generator(uint8_t shard) : _shard(shard) {}

    // A fresh id, strictly greater than every id this generator issued or
    // observed. now_us: current unix time in microseconds.
    uint64_t next(uint64_t now_us) {
        uint64_t us = now_us & queue_id_max_micros;
        if (us <= _last_us) us = _last_us + 1;  // clock stepped back or same µs
        _last_us = us;
        return make_queue_id(us, _shard);
    }

    // Raise the floor so next() stays above an id already in the spool.
    void observe(uint64_t id) {
        if (queue_id_micros(id) > _last_us) _last_us = queue_id_micros(id);
    }

    uint8_t shard() const { return _shard; }

private:
    uint64_t _last_us = 0;
    uint8_t _shard;
};

// Fixed-size, NUL-terminated text form; lives on the caller's stack.
struct queue_id_hex {
    std::array<char, 17> chars{};
    std::string_view view() const { return {chars.data(), 16}; }
    const char* c_str() const { return chars.data(); }
};

constexpr queue_id_hex to_hex(uint64_t id) {
    constexpr char digits[] = "0123456789ABCDEF";
    queue_id_hex out;
    for (int i = 15; i >= 0; --i) {
        out.chars[static_cast<size_t>(i)] = digits[id & 0xf];
        id >>= 4;
    }
    out.chars[16] = '\0';
    return out;
}

constexpr std::optional<uint64_t> parse_hex(std::string_view text) {
    if (text.size() != 16) return std::nullopt;
    uint64_t id = 0;
    for (char c : text) {
        unsigned v;
        if (c >= '0' && c <= '9') v = static_cast<unsigned>(c - '0');
        else if (c >= 'A' && c <= 'F') v = static_cast<unsigned>(c - 'A' + 10);
        else if (c >= 'a' && c <= 'f') v = static_cast<unsigned>(c - 'a' + 10);
        else return std::nullopt;
        id = (id << 4) | v;
    }
    return id;
}

// LMDB key form: 8 bytes big-endian so memcmp order == numeric order.
using queue_key = std::array<unsigned char, 8>;

constexpr queue_key to_key(uint64_t id) {
    queue_key k{};
    for (int i = 7; i >= 0; --i) {
        k[static_cast<size_t>(i)] = static_cast<unsigned char>(id & 0xff);
        id >>= 8;
    }
    return k;
}

// bytes must point at 8 bytes (callers check the key size first).
constexpr uint64_t from_key(const unsigned char* bytes) {
    uint64_t id = 0;
    for (size_t i = 0; i < 8; ++i) id = (id << 8) | bytes[i];
    return id;
}

}  // namespace ringmail::store
