#include "engine/mx_order.h"

#include <ares.h>

#include <algorithm>
#include <random>
#include <unordered_map>

namespace ringmail::engine::dns {

std::string_view to_string(dns_outcome o) {
    switch (o) {
        case dns_outcome::ok: return "ok";
        case dns_outcome::nxdomain: return "nxdomain";
        case dns_outcome::nodata: return "nodata";
        case dns_outcome::temporary: return "temporary";
    }
    return "?";
}

std::string_view to_string(mx_decision d) {
    switch (d) {
        case mx_decision::deliver: return "deliver";
        case mx_decision::bounce_null_mx: return "bounce_null_mx";
        case mx_decision::bounce_nxdomain: return "bounce_nxdomain";
        case mx_decision::retry: return "retry";
    }
    return "?";
}

dns_outcome classify_ares_status(int status) {
    switch (status) {
        case ARES_SUCCESS: return dns_outcome::ok;
        case ARES_ENOTFOUND: return dns_outcome::nxdomain;
        case ARES_ENODATA: return dns_outcome::nodata;
        default: return dns_outcome::temporary;  // ESERVFAIL, EREFUSED, ETIMEOUT, ECONNREFUSED, ...
    }
}

std::size_t default_random_index(std::size_t bound) {
    thread_local std::mt19937 gen{std::random_device{}()};
    return std::uniform_int_distribution<std::size_t>(0, bound - 1)(gen);
}

std::string normalize_host(std::string_view host) {
    if (!host.empty() && host.back() == '.') host.remove_suffix(1);
    std::string out(host);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

mx_plan order_mx(std::string_view domain, std::span<const mx_record> records,
                 const random_index& rnd) {
    // Deduplicate by normalized host, keeping the lowest preference.
    struct entry {
        uint16_t preference;
        std::string host;
    };
    std::vector<entry> hosts;
    std::unordered_map<std::string, std::size_t> seen;
    for (const auto& r : records) {
        std::string h = normalize_host(r.host);
        auto [it, fresh] = seen.try_emplace(h, hosts.size());
        if (fresh)
            hosts.push_back({r.preference, std::move(h)});
        else
            hosts[it->second].preference = std::min(hosts[it->second].preference, r.preference);
    }

    mx_plan plan;
    if (hosts.size() == 1 && hosts[0].host.empty()) {
        plan.decision = mx_decision::bounce_null_mx;
        return plan;
    }
    std::erase_if(hosts, [](const entry& e) { return e.host.empty(); });
    plan.decision = mx_decision::deliver;
    if (hosts.empty()) {
        plan.implicit = true;
        plan.hosts.push_back(normalize_host(domain));
        return plan;
    }
    std::stable_sort(hosts.begin(), hosts.end(),
                     [](const entry& a, const entry& b) { return a.preference < b.preference; });
    // Fisher-Yates shuffle within each run of equal preference.
    for (std::size_t begin = 0; begin < hosts.size();) {
        std::size_t end = begin;
        while (end < hosts.size() && hosts[end].preference == hosts[begin].preference) ++end;
        for (std::size_t i = end - begin; i > 1; --i) {
            std::size_t j = rnd(i);
            if (j >= i) j = i - 1;  // defensive against a bad source
            std::swap(hosts[begin + i - 1], hosts[begin + j]);
        }
        begin = end;
    }
    plan.hosts.reserve(hosts.size());
    for (auto& e : hosts) plan.hosts.push_back(std::move(e.host));
    return plan;
}

mx_plan plan_mx(std::string_view domain, dns_outcome outcome,
                std::span<const mx_record> records, const random_index& rnd) {
    switch (outcome) {
        case dns_outcome::ok: return order_mx(domain, records, rnd);
        case dns_outcome::nodata: return order_mx(domain, {}, rnd);
        case dns_outcome::nxdomain: return {mx_decision::bounce_nxdomain, {}, false};
        case dns_outcome::temporary: break;
    }
    return {mx_decision::retry, {}, false};
}

}  // namespace ringmail::engine::dns
