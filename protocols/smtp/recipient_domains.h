// recipient_domains: which recipients of a message go to which domain.
//
// MX delivery routes each recipient domain separately; recipients at one
// domain share one transaction (up to a per-destination recipient limit).
// Pure functions, no I/O.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "store/envelope.h"

namespace ringmail::smtp {

// The domain of "local@Domain.Example" lower-cased ("domain.example"), or of
// "local@[127.0.0.1]" ("[127.0.0.1]"); "" when there is no '@'. The last '@'
// counts (a quoted local part may hold '@').
std::string recipient_domain(std::string_view address);

struct domain_group {
    std::string domain;
    std::vector<size_t> recipients;  // indexes into envelope.recipients, in order
};

// Pending recipients grouped by domain, groups in order of first appearance.
std::vector<domain_group> group_pending_by_domain(const store::envelope& env);

}  // namespace ringmail::smtp
