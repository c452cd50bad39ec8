// routing: the pure decisions of MX routing, kept apart from the scheduler's
// I/O so they can be tested alone: which [[shaping]] rule applies to a
// destination, which [[egress]] source a message uses, and what an address
// literal domain ("[192.0.2.1]") points at.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "engine/config.h"
#include "engine/dns_cache.h"
#include "engine/net_address.h"

namespace ringmail::smtp {

// "*.example.com" matches any host under example.com (not example.com
// itself); anything else matches exactly. Both sides lower case.
bool mx_pattern_matches(std::string_view pattern, std::string_view host);

// The [[shaping]] rule for a recipient domain and its MX hosts: a domain rule
// first, then the first mx rule matching any host. -1 = none.
int shaping_rule_for(const config& cfg, std::string_view domain, const std::vector<engine::dns::mx_host>& hosts);

// The [[egress]] entry for a sender domain: among the entries listing it, else
// among those without senders; `pick` (e.g. the message id) chooses within
// that pool, so the same message always gets the same one. -1 = none.
int choose_egress(const config& cfg, std::string_view sender_domain, uint64_t pick);

// RFC 5321 §4.1.3 address literals: "[127.0.0.1]", "[IPv6:::1]" -> the
// address (port 0); nullopt when it is not a valid literal.
std::optional<net::socket_address> address_literal(std::string_view domain);

}  // namespace ringmail::smtp
