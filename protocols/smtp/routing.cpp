#include "protocols/smtp/routing.h"

#include <algorithm>
#include <string>

#include <fmt/format.h>

namespace ringmail::smtp {

bool mx_pattern_matches(std::string_view pattern, std::string_view host) {
    if (pattern.starts_with("*.")) return host.size() > pattern.size() - 1 && host.ends_with(pattern.substr(1));
    return host == pattern;
}

int shaping_rule_for(const config& cfg, std::string_view domain, const std::vector<engine::dns::mx_host>& hosts) {
    for (size_t i = 0; i < cfg.shaping.size(); ++i)
        if (!cfg.shaping[i].domain.empty() && cfg.shaping[i].domain == domain) return static_cast<int>(i);
    for (size_t i = 0; i < cfg.shaping.size(); ++i) {
        const auto& rule = cfg.shaping[i];
        if (rule.mx.empty()) continue;
        for (const auto& h : hosts)
            if (mx_pattern_matches(rule.mx, h.name)) return static_cast<int>(i);
    }
    return -1;
}

int choose_egress(const config& cfg, std::string_view sender_domain, uint64_t pick) {
    const auto& egress = cfg.egress;
    for (int pass = 0; pass < 2; ++pass) {
        size_t n = 0;
        auto member = [&](const egress_config& e) {
            if (pass == 1) return e.senders.empty();
            return std::find(e.senders.begin(), e.senders.end(), sender_domain) != e.senders.end();
        };
        for (const auto& e : egress) n += member(e) ? 1 : 0;
        if (n == 0) continue;
        size_t k = pick % n;
        for (size_t i = 0; i < egress.size(); ++i)
            if (member(egress[i]) && k-- == 0) return static_cast<int>(i);
    }
    return -1;
}

std::optional<net::socket_address> address_literal(std::string_view domain) {
    if (domain.size() < 3 || domain.front() != '[' || domain.back() != ']') return std::nullopt;
    std::string_view inner = domain.substr(1, domain.size() - 2);
    std::string text;
    if (inner.size() > 5 && (inner.substr(0, 5) == "ipv6:" || inner.substr(0, 5) == "IPv6:"))
        text = fmt::format("[{}]:0", inner.substr(5));
    else if (inner.find(':') == std::string_view::npos)
        text = fmt::format("{}:0", inner);
    else
        return std::nullopt;  // an IPv6 literal needs the "IPv6:" tag
    auto parsed = net::parse_socket_address(text);
    if (!parsed) return std::nullopt;
    return *parsed;
}

}  // namespace ringmail::smtp
