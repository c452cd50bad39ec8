// envelope record encoding, format version 1 (see envelope.h).
#include "store/envelope.h"

#include <cstring>

namespace ringmail::store {

const char* to_string(record_error e) {
    switch (e) {
        case record_error::truncated: return "truncated record";
        case record_error::trailing_bytes: return "trailing bytes after record";
        case record_error::unknown_version: return "unknown record version";
        case record_error::bad_length: return "length above limit";
        case record_error::bad_value: return "field value out of range";
    }
    return "unknown record error";
}

namespace {

// Per recipient: three strings (u32 each) + notify + state.
constexpr size_t min_recipient_bytes = 4 + 4 + 1 + 1 + 4;

size_t str_size(const std::string& s) { return 4 + s.size(); }

void put_u8(std::string& out, uint8_t v) { out.push_back(static_cast<char>(v)); }

template <class U>
void put_le(std::string& out, U v) {
    char b[sizeof(U)];
    for (size_t i = 0; i < sizeof(U); ++i) {
        b[i] = static_cast<char>(v & 0xff);
        v = static_cast<U>(v >> 8);
    }
    out.append(b, sizeof(U));
}

void put_str(std::string& out, const std::string& s) {
    put_le<uint32_t>(out, static_cast<uint32_t>(s.size()));
    out.append(s);
}

class reader {
public:
    explicit reader(std::string_view in) : _in(in) {}

    size_t remaining() const { return _in.size() - _pos; }

    bool u8(uint8_t& v) {
        if (remaining() < 1) return false;
        v = static_cast<uint8_t>(_in[_pos++]);
        return true;
    }

    template <class U>
    bool le(U& v) {
        if (remaining() < sizeof(U)) return false;
        U r = 0;
        for (size_t i = sizeof(U); i-- > 0;)
            r = static_cast<U>((r << 8) | static_cast<uint8_t>(_in[_pos + i]));
        _pos += sizeof(U);
        v = r;
        return true;
    }

    // Returns error through `err`; false on failure.
    bool str(std::string& s, record_error& err) {
        uint32_t n;
        if (!le(n)) { err = record_error::truncated; return false; }
        if (n > envelope_max_field_bytes) { err = record_error::bad_length; return false; }
        if (remaining() < n) { err = record_error::truncated; return false; }
        s.assign(_in.data() + _pos, n);
        _pos += n;
        return true;
    }

private:
    std::string_view _in;
    size_t _pos = 0;
};

}  // namespace

size_t encoded_size(const envelope& env) {
    size_t n = 1 + 8 + 8 + str_size(env.client_address) + str_size(env.helo) +
               str_size(env.sender) + 8 + 1 + 1 + 1 + str_size(env.envid) + 4 + 8 +
               str_size(env.last_error) + 1 + 4;
    for (const recipient& r : env.recipients)
        n += str_size(r.address) + str_size(r.orcpt) + 1 + 1 + str_size(r.last_reply);
    return n;
}

void encode(const envelope& env, std::string& out) {
    out.reserve(out.size() + encoded_size(env));
    put_u8(out, envelope_format_version);
    put_le<uint64_t>(out, env.id);
    put_le<uint64_t>(out, static_cast<uint64_t>(env.received_at));
    put_str(out, env.client_address);
    put_str(out, env.helo);
    put_str(out, env.sender);
    put_le<uint64_t>(out, env.size);
    put_u8(out, static_cast<uint8_t>(env.body));
    put_u8(out, env.smtputf8 ? 1 : 0);
    put_u8(out, static_cast<uint8_t>(env.ret));
    put_str(out, env.envid);
    put_le<uint32_t>(out, env.attempts);
    put_le<uint64_t>(out, static_cast<uint64_t>(env.next_attempt));
    put_str(out, env.last_error);
    put_u8(out, env.is_dsn ? 1 : 0);
    put_le<uint32_t>(out, static_cast<uint32_t>(env.recipients.size()));
    for (const recipient& r : env.recipients) {
        put_str(out, r.address);
        put_str(out, r.orcpt);
        put_u8(out, r.notify);
        put_u8(out, static_cast<uint8_t>(r.state));
        put_str(out, r.last_reply);
    }
}

result<envelope, record_error> decode(std::string_view record) {
    reader in(record);
    record_error err = record_error::truncated;
    const auto fail = [&](record_error e) { return unexpected{e}; };

    uint8_t version;
    if (!in.u8(version)) return fail(record_error::truncated);
    if (version != envelope_format_version) return fail(record_error::unknown_version);

    envelope env;
    uint64_t u64;
    uint8_t b;
    if (!in.le(env.id)) return fail(record_error::truncated);
    if (!in.le(u64)) return fail(record_error::truncated);
    env.received_at = static_cast<int64_t>(u64);
    if (!in.str(env.client_address, err)) return fail(err);
    if (!in.str(env.helo, err)) return fail(err);
    if (!in.str(env.sender, err)) return fail(err);
    if (!in.le(env.size)) return fail(record_error::truncated);

    if (!in.u8(b)) return fail(record_error::truncated);
    if (b > static_cast<uint8_t>(body_type::binary_mime)) return fail(record_error::bad_value);
    env.body = static_cast<body_type>(b);
    if (!in.u8(b)) return fail(record_error::truncated);
    if (b > 1) return fail(record_error::bad_value);
    env.smtputf8 = b != 0;
    if (!in.u8(b)) return fail(record_error::truncated);
    if (b > static_cast<uint8_t>(dsn_ret::hdrs)) return fail(record_error::bad_value);
    env.ret = static_cast<dsn_ret>(b);
    if (!in.str(env.envid, err)) return fail(err);

    if (!in.le(env.attempts)) return fail(record_error::truncated);
    if (!in.le(u64)) return fail(record_error::truncated);
    env.next_attempt = static_cast<int64_t>(u64);
    if (!in.str(env.last_error, err)) return fail(err);
    if (!in.u8(b)) return fail(record_error::truncated);
    if (b > 1) return fail(record_error::bad_value);
    env.is_dsn = b != 0;

    uint32_t count;
    if (!in.le(count)) return fail(record_error::truncated);
    if (count > envelope_max_recipients) return fail(record_error::bad_length);
    // Checked before reserving so a corrupt count cannot make us allocate.
    if (in.remaining() / min_recipient_bytes < count) return fail(record_error::truncated);
    env.recipients.resize(count);
    for (recipient& r : env.recipients) {
        if (!in.str(r.address, err)) return fail(err);
        if (!in.str(r.orcpt, err)) return fail(err);
        if (!in.u8(r.notify)) return fail(record_error::truncated);
        // NEVER must stand alone (RFC 3461 §4.1); bits above DELAY are undefined.
        if (r.notify > 0x0f || ((r.notify & notify_never) && r.notify != notify_never))
            return fail(record_error::bad_value);
        if (!in.u8(b)) return fail(record_error::truncated);
        if (b > static_cast<uint8_t>(rcpt_state::failed)) return fail(record_error::bad_value);
        r.state = static_cast<rcpt_state>(b);
        if (!in.str(r.last_reply, err)) return fail(err);
    }
    if (in.remaining() != 0) return fail(record_error::trailing_bytes);
    return env;
}

}  // namespace ringmail::store
