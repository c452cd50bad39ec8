#include "protocols/smtp/recipient_domains.h"

namespace ringmail::smtp {

std::string recipient_domain(std::string_view address) {
    auto at = address.rfind('@');
    if (at == std::string_view::npos) return {};
    std::string d(address.substr(at + 1));
    for (char& c : d)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (!d.empty() && d.back() == '.') d.pop_back();
    return d;
}

std::vector<domain_group> group_pending_by_domain(const store::envelope& env) {
    std::vector<domain_group> groups;
    for (size_t i = 0; i < env.recipients.size(); ++i) {
        if (env.recipients[i].state != store::rcpt_state::pending) continue;
        std::string d = recipient_domain(env.recipients[i].address);
        // Messages have few domains: a linear search beats a map here.
        domain_group* g = nullptr;
        for (auto& x : groups)
            if (x.domain == d) g = &x;
        if (!g) g = &groups.emplace_back(domain_group{std::move(d), {}});
        g->recipients.push_back(i);
    }
    return groups;
}

}  // namespace ringmail::smtp
