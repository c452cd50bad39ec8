// libFuzzer target: protocols/smtp/address.h (parse_mail_from, parse_rcpt_to,
// parse_path, xtext_valid, xtext_decode).
//
// Input: byte 0 picks the limits (default or tiny, to reach the limit
// branches), the rest is the argument of MAIL / RCPT as parse_command() would
// hand it over. Checks that an accepted path/parameter obeys the contract.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "protocols/smtp/address.h"
#include "tests/fuzz/fuzz_check.h"

using namespace ringmail::smtp;
using ringmail::fuzz::within;

namespace {

bool has_control(std::string_view s) {
    for (unsigned char c : s)
        if (c < 0x20 || c == 0x7f) return true;
    return false;
}

bool has_high(std::string_view s) {
    for (unsigned char c : s)
        if (c >= 0x80) return true;
    return false;
}

void check_xtext(std::string_view x) {
    const bool valid = xtext_valid(x);
    char buf[128];
    auto n = xtext_decode(x, buf, sizeof buf);
    if (n) {
        FUZZ_CHECK(valid);
        FUZZ_CHECK(*n <= sizeof buf);
        FUZZ_CHECK(*n <= x.size());
    }
    if (valid && x.size() <= sizeof buf) FUZZ_CHECK(n.has_value());
}

void check_path(const mailbox_path& p, std::string_view arg, const address_limits& lim,
                bool allow_null, bool allow_postmaster) {
    FUZZ_CHECK(within(p.mailbox, arg));
    FUZZ_CHECK(within(p.local_part, arg));
    FUZZ_CHECK(within(p.domain, arg));
    FUZZ_CHECK(!has_control(p.mailbox));
    if (p.is_null) {
        FUZZ_CHECK(allow_null);
        FUZZ_CHECK(p.mailbox.empty() && p.domain.empty());
        FUZZ_CHECK(!p.is_postmaster);
        return;
    }
    FUZZ_CHECK(!p.mailbox.empty());
    if (p.is_postmaster) {
        FUZZ_CHECK(allow_postmaster);
        FUZZ_CHECK(p.domain.empty());
        return;
    }
    FUZZ_CHECK(!p.local_part.empty());
    FUZZ_CHECK(!p.domain.empty());
    FUZZ_CHECK(p.local_part.size() <= lim.max_local_part_bytes);
    FUZZ_CHECK(p.domain.size() <= lim.max_domain_bytes);
    FUZZ_CHECK(p.mailbox.size() + 2 <= lim.max_path_bytes);
    // mailbox is exactly local "@" domain
    FUZZ_CHECK(p.mailbox.size() == p.local_part.size() + 1 + p.domain.size());
    FUZZ_CHECK(p.mailbox.substr(0, p.local_part.size()) == p.local_part);
    FUZZ_CHECK(p.mailbox[p.local_part.size()] == '@');
    FUZZ_CHECK(p.mailbox.substr(p.local_part.size() + 1) == p.domain);
    FUZZ_CHECK(p.is_address_literal == (p.domain.front() == '['));
    if (p.is_address_literal) FUZZ_CHECK(p.domain.back() == ']');
    FUZZ_CHECK(p.has_utf8 || !has_high(p.mailbox));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::uint8_t sel = data[0];
    std::string_view arg(reinterpret_cast<const char*>(data) + 1, size - 1);

    address_limits lim;
    if (sel & 0x80) {
        lim.max_local_part_bytes = 1 + (sel & 7);
        lim.max_domain_bytes = 1 + ((sel >> 3) & 7) * 3;
        lim.max_path_bytes = 4 + (sel & 0x1f);
        lim.max_params = (sel >> 5) & 3;
    }

    auto m = parse_mail_from(arg, lim);
    if (m) {
        FUZZ_CHECK(!has_control(arg));
        check_path(m->path, arg, lim, true, false);
        FUZZ_CHECK(within(m->params.envid, arg));
        FUZZ_CHECK(within(m->params.auth, arg));
        if (!m->params.envid.empty()) {
            FUZZ_CHECK(xtext_valid(m->params.envid));
            FUZZ_CHECK(m->params.envid.size() <= 100);
        }
        check_xtext(m->params.envid);
        if (m->params.auth != "<>") check_xtext(m->params.auth);
    } else {
        FUZZ_CHECK(!address_error_name(m.error()).empty());
    }

    auto r = parse_rcpt_to(arg, lim);
    if (r) {
        FUZZ_CHECK(!has_control(arg));
        check_path(r->path, arg, lim, false, true);
        FUZZ_CHECK(!r->path.is_null);
        const std::uint8_t nf = r->params.notify;
        FUZZ_CHECK((nf & ~0x0f) == 0);
        if (nf & notify_never) FUZZ_CHECK(nf == notify_never);  // NEVER stands alone
        FUZZ_CHECK(within(r->params.orcpt, arg));
        FUZZ_CHECK(within(r->params.orcpt_type, r->params.orcpt));
        FUZZ_CHECK(within(r->params.orcpt_address, r->params.orcpt));
        if (!r->params.orcpt.empty()) {
            FUZZ_CHECK(!r->params.orcpt_type.empty());
            // "utf-8" addresses (RFC 6533 §3) are not xtext; the others are.
            std::string_view t = r->params.orcpt_type;
            const bool utf8_type = t.size() == 5 && (t[0] | 0x20) == 'u' && (t[1] | 0x20) == 't' &&
                                   (t[2] | 0x20) == 'f' && t[3] == '-' && t[4] == '8';
            if (!utf8_type) FUZZ_CHECK(xtext_valid(r->params.orcpt_address));
            FUZZ_CHECK(r->params.orcpt.size() <= 500);
        }
        check_xtext(r->params.orcpt_address);
    } else {
        FUZZ_CHECK(!address_error_name(r.error()).empty());
    }

    // The bare path parser, with the flags taken from the selector byte.
    const bool allow_null = sel & 1;
    const bool allow_postmaster = sel & 2;
    auto p = parse_path(arg, allow_null, allow_postmaster, lim);
    if (p) check_path(*p, arg, lim, allow_null, allow_postmaster);

    check_xtext(arg);
    return 0;
}
