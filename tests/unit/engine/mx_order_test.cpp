#include "engine/mx_order.h"

#include <ares.h>
#include <gtest/gtest.h>

#include <vector>

using namespace ringmail::engine::dns;

namespace {

// Deterministic random source: replays `picks`, then always returns 0.
struct scripted_random {
    std::vector<std::size_t> picks;
    std::size_t next = 0;
    std::size_t operator()(std::size_t bound) {
        std::size_t v = next < picks.size() ? picks[next++] : 0;
        return v % bound;
    }
};

struct order_case {
    const char* name;
    std::vector<mx_record> records;
    std::vector<std::size_t> picks;
    mx_decision decision;
    std::vector<std::string> hosts;
    bool implicit;
};

}  // namespace

TEST(MxOrder, TableDriven) {
    const std::vector<order_case> cases = {
        {"single", {{10, "mx.example.com", 300}}, {}, mx_decision::deliver, {"mx.example.com"}, false},
        {"ascending preference",
         {{20, "b.example.com", 1}, {10, "a.example.com", 1}, {30, "c.example.com", 1}},
         {}, mx_decision::deliver, {"a.example.com", "b.example.com", "c.example.com"}, false},
        // Two equal at 10; rnd(2)=0 swaps element 1 with element 0.
        {"equal preferences shuffled (swap)",
         {{10, "a.example.com", 1}, {10, "b.example.com", 1}, {5, "low.example.com", 1}},
         {0}, mx_decision::deliver, {"low.example.com", "b.example.com", "a.example.com"}, false},
        // rnd(2)=1 keeps the order.
        {"equal preferences shuffled (keep)",
         {{10, "a.example.com", 1}, {10, "b.example.com", 1}, {5, "low.example.com", 1}},
         {1}, mx_decision::deliver, {"low.example.com", "a.example.com", "b.example.com"}, false},
        // Three equal: rnd(3)=2 (keep c last), rnd(2)=0 (swap a,b).
        {"three equal",
         {{1, "a", 1}, {1, "b", 1}, {1, "c", 1}},
         {2, 0}, mx_decision::deliver, {"b", "a", "c"}, false},
        {"null mx", {{0, "", 60}}, {}, mx_decision::bounce_null_mx, {}, false},
        {"null mx dotted", {{0, ".", 60}}, {}, mx_decision::bounce_null_mx, {}, false},
        {"null mx duplicated", {{0, ".", 60}, {0, "", 60}}, {}, mx_decision::bounce_null_mx, {}, false},
        {"root mixed with hosts is ignored",
         {{0, ".", 1}, {10, "mx.example.com", 1}}, {}, mx_decision::deliver, {"mx.example.com"}, false},
        {"no records -> implicit mx", {}, {}, mx_decision::deliver, {"example.org"}, true},
        {"duplicates removed, lowest preference kept",
         {{20, "a.example.com", 1}, {10, "B.Example.com.", 1}, {5, "a.example.com.", 1}, {10, "b.example.com", 1}},
         {}, mx_decision::deliver, {"a.example.com", "b.example.com"}, false},
        {"normalized", {{10, "MX.Example.COM.", 1}}, {}, mx_decision::deliver, {"mx.example.com"}, false},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name);
        scripted_random r{c.picks};
        random_index rnd = [&r](std::size_t b) { return r(b); };
        mx_plan p = order_mx("Example.org.", c.records, rnd);
        EXPECT_EQ(p.decision, c.decision);
        EXPECT_EQ(p.hosts, c.hosts);
        EXPECT_EQ(p.implicit, c.implicit);
    }
}

TEST(MxOrder, PlanFromOutcome) {
    struct plan_case {
        dns_outcome outcome;
        std::vector<mx_record> records;
        mx_decision decision;
        std::vector<std::string> hosts;
    };
    const std::vector<plan_case> cases = {
        {dns_outcome::ok, {{10, "mx.a", 1}}, mx_decision::deliver, {"mx.a"}},
        {dns_outcome::ok, {{0, ".", 1}}, mx_decision::bounce_null_mx, {}},
        {dns_outcome::nodata, {}, mx_decision::deliver, {"a.test"}},
        {dns_outcome::nxdomain, {}, mx_decision::bounce_nxdomain, {}},
        {dns_outcome::temporary, {}, mx_decision::retry, {}},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(std::string(to_string(c.outcome)));
        mx_plan p = plan_mx("a.test", c.outcome, c.records, default_random_index);
        EXPECT_EQ(p.decision, c.decision);
        EXPECT_EQ(p.hosts, c.hosts);
    }
}

TEST(MxOrder, EqualPreferencesAreAllReachedWithDefaultRandom) {
    std::vector<mx_record> recs = {{10, "a", 1}, {10, "b", 1}, {5, "z", 1}};
    bool a_first = false, b_first = false;
    for (int i = 0; i < 200 && !(a_first && b_first); ++i) {
        mx_plan p = order_mx("d", recs, default_random_index);
        ASSERT_EQ(p.hosts.size(), 3u);
        EXPECT_EQ(p.hosts[0], "z");
        (p.hosts[1] == "a" ? a_first : b_first) = true;
    }
    EXPECT_TRUE(a_first);
    EXPECT_TRUE(b_first);
}

TEST(MxOrder, ClassifyAresStatus) {
    struct c {
        int status;
        dns_outcome outcome;
    };
    for (auto [status, outcome] : std::vector<c>{
             {ARES_SUCCESS, dns_outcome::ok},
             {ARES_ENOTFOUND, dns_outcome::nxdomain},
             {ARES_ENODATA, dns_outcome::nodata},
             {ARES_ESERVFAIL, dns_outcome::temporary},
             {ARES_EREFUSED, dns_outcome::temporary},
             {ARES_ETIMEOUT, dns_outcome::temporary},
             {ARES_ECONNREFUSED, dns_outcome::temporary},
             {ARES_EBADRESP, dns_outcome::temporary},
         }) {
        EXPECT_EQ(classify_ares_status(status), outcome) << status;
    }
}
