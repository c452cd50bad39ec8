// mx_order: delivery order from an MX answer (RFC 5321 §5.1, RFC 7505), and the
// classification of resolver outcomes. Pure: no I/O, no global state.
//
// Contract:
//  - Hosts are compared case-insensitively and without a trailing dot; the
//    plan lists them lower-cased, without the trailing dot.
//  - Ascending preference; among equal preferences the order is a random
//    permutation drawn from the caller's `random_index` (so tests are
//    deterministic). A host listed twice keeps its lowest preference.
//  - A null MX (RFC 7505) is an answer whose only record (after removing
//    duplicates) has the root as exchange ("." or ""); its preference is not
//    checked (RFC 7505 says 0, senders are told to honour it regardless).
//    Root exchanges mixed with real hosts are ignored.
//  - No MX records (nodata) -> implicit MX: the domain itself at preference 0.
//  - NXDOMAIN -> permanent failure; SERVFAIL, REFUSED, timeouts and any other
//    resolver error -> temporary (retry later).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ringmail::engine::dns {

// What a DNS query came to.
enum class dns_outcome {
    ok,         // records returned
    nxdomain,   // the name does not exist: permanent (bounce)
    nodata,     // the name exists but has no records of that type
    temporary,  // SERVFAIL, REFUSED, timeout, network error: retry later
};
std::string_view to_string(dns_outcome o);

// Maps a c-ares status code (ARES_SUCCESS, ARES_ENOTFOUND, ...) to an outcome.
dns_outcome classify_ares_status(int ares_status);

struct mx_record {
    uint16_t preference = 0;
    std::string host;   // exchange, as received ("" or "." for the root)
    uint32_t ttl = 0;   // seconds
    friend bool operator==(const mx_record&, const mx_record&) = default;
};

// Returns a uniformly chosen index in [0, bound); bound >= 1.
using random_index = std::function<std::size_t(std::size_t bound)>;

// A random_index backed by a thread-local std::mt19937 seeded from random_device.
std::size_t default_random_index(std::size_t bound);

// What to do with mail for a domain, given its MX lookup.
enum class mx_decision {
    deliver,          // try `hosts` in order
    bounce_null_mx,   // RFC 7505 null MX: bounce with 556 5.1.10
    bounce_nxdomain,  // the domain does not exist: bounce (550 5.1.2)
    retry,            // temporary DNS failure: keep the message queued
};
std::string_view to_string(mx_decision d);

struct mx_plan {
    mx_decision decision = mx_decision::retry;
    std::vector<std::string> hosts;  // only for `deliver`, in delivery order
    bool implicit = false;           // hosts == {domain} because there was no MX
};

// Orders an MX answer (outcome ok). `domain` is used for the implicit MX when
// `records` is empty (or holds only root exchanges alongside nothing usable).
mx_plan order_mx(std::string_view domain, std::span<const mx_record> records,
                 const random_index& rnd);

// Full decision from a query outcome and its records.
mx_plan plan_mx(std::string_view domain, dns_outcome outcome,
                std::span<const mx_record> records, const random_index& rnd);

// Lower-cases and strips one trailing dot ("MX1.Example.COM." -> "mx1.example.com").
std::string normalize_host(std::string_view host);

}  // namespace ringmail::engine::dns
