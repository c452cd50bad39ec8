#include "protocols/smtp/recipient_domains.h"

#include <gtest/gtest.h>

using ringmail::smtp::group_pending_by_domain;
using ringmail::smtp::recipient_domain;

TEST(RecipientDomain, LowerCasesAndStripsTheTrailingDot) {
    EXPECT_EQ(recipient_domain("Bob@Example.TEST"), "example.test");
    EXPECT_EQ(recipient_domain("bob@example.test."), "example.test");
    EXPECT_EQ(recipient_domain("\"a@b\"@c.test"), "c.test");  // the last '@' counts
    EXPECT_EQ(recipient_domain("x@[127.0.0.1]"), "[127.0.0.1]");
    EXPECT_EQ(recipient_domain("postmaster"), "");
}

TEST(RecipientDomain, GroupsPendingRecipientsByDomainInFirstSeenOrder) {
    ringmail::store::envelope env;
    for (const char* a : {"a@one.test", "b@two.test", "c@ONE.test", "d@two.test", "e@three.test"})
        env.recipients.emplace_back().address = a;
    env.recipients[3].state = ringmail::store::rcpt_state::delivered;  // not pending: left out
    auto groups = group_pending_by_domain(env);
    ASSERT_EQ(groups.size(), 3u);
    EXPECT_EQ(groups[0].domain, "one.test");
    EXPECT_EQ(groups[0].recipients, (std::vector<size_t>{0, 2}));
    EXPECT_EQ(groups[1].domain, "two.test");
    EXPECT_EQ(groups[1].recipients, (std::vector<size_t>{1}));
    EXPECT_EQ(groups[2].domain, "three.test");
    EXPECT_EQ(groups[2].recipients, (std::vector<size_t>{4}));
}

TEST(RecipientDomain, NoPendingRecipientsNoGroups) {
    ringmail::store::envelope env;
    env.recipients.emplace_back().address = "a@one.test";
    env.recipients[0].state = ringmail::store::rcpt_state::failed;
    EXPECT_TRUE(group_pending_by_domain(env).empty());
}
