#include "protocols/smtp/routing.h"

#include <gtest/gtest.h>

namespace ringmail::smtp {
namespace {

engine::dns::mx_host host(const char* name) { return engine::dns::mx_host{name, 10, {}}; }

TEST(Routing, MxPatterns) {
    EXPECT_TRUE(mx_pattern_matches("*.google.com", "aspmx.l.google.com"));
    EXPECT_FALSE(mx_pattern_matches("*.google.com", "google.com"));
    EXPECT_FALSE(mx_pattern_matches("*.google.com", "notgoogle.com"));
    EXPECT_TRUE(mx_pattern_matches("mx.example.com", "mx.example.com"));
    EXPECT_FALSE(mx_pattern_matches("mx.example.com", "mx2.example.com"));
}

TEST(Routing, DomainRuleWinsOverMxRule) {
    config cfg;
    cfg.shaping.push_back(shaping_rule{"", "*.google.com", {}, {}});
    cfg.shaping.push_back(shaping_rule{"gmail.com", "", {}, {}});
    std::vector<engine::dns::mx_host> google{host("alt1.gmail-smtp-in.l.google.com")};
    EXPECT_EQ(shaping_rule_for(cfg, "gmail.com", google), 1);
    EXPECT_EQ(shaping_rule_for(cfg, "example.com", google), 0);  // hosted at Google
    EXPECT_EQ(shaping_rule_for(cfg, "example.com", {host("mx.example.com")}), -1);
}

TEST(Routing, EgressBySenderDomainThenDefaultPool) {
    config cfg;
    cfg.egress.resize(4);
    cfg.egress[0].senders = {"bulk.test"};
    cfg.egress[2].senders = {"bulk.test"};
    // 1 and 3: the default pool
    EXPECT_EQ(choose_egress(cfg, "bulk.test", 0), 0);
    EXPECT_EQ(choose_egress(cfg, "bulk.test", 1), 2);
    EXPECT_EQ(choose_egress(cfg, "bulk.test", 7), 2);
    EXPECT_EQ(choose_egress(cfg, "other.test", 0), 1);
    EXPECT_EQ(choose_egress(cfg, "other.test", 5), 3);
    EXPECT_EQ(choose_egress(cfg, "", 2), 1);  // the null sender (bounces) too
    config none;
    EXPECT_EQ(choose_egress(none, "bulk.test", 0), -1);
    config only_bulk;
    only_bulk.egress.resize(1);
    only_bulk.egress[0].senders = {"bulk.test"};
    EXPECT_EQ(choose_egress(only_bulk, "other.test", 0), -1);
}

TEST(Routing, AddressLiterals) {
    auto v4 = address_literal("[127.0.0.15]");
    ASSERT_TRUE(v4);
    EXPECT_EQ(v4->host_string(), "127.0.0.15");
    auto v6 = address_literal("[IPv6:::1]");
    ASSERT_TRUE(v6);
    EXPECT_EQ(v6->host_string(), "::1");
    EXPECT_FALSE(address_literal("[::1]"));  // needs the tag
    EXPECT_FALSE(address_literal("[999.1.1.1]"));
    EXPECT_FALSE(address_literal("[]"));
    EXPECT_FALSE(address_literal("example.com"));
}

}  // namespace
}  // namespace ringmail::smtp
