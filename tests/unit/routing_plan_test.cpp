// plan_routes: ks_profiles entry -> the routes of the profile's table;
// plan_rules: (profile id, configured profile) -> the profile's policy rules. Pure; the
// kernel side of the same routes and rules is tests/kernel/routing_test.cpp.
#include "killswitch/routing_plan.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <ostream>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "killswitch/config.hpp"
#include "killswitch_abi.h"

namespace ks {

// So that failing comparisons of route and rule lists print something readable.
static void PrintTo(const RouteSpec& r, std::ostream* os) { *os << r.describe(); }
static void PrintTo(const RuleSpec& r, std::ostream* os) { *os << r.describe(); }

namespace {

constexpr std::uint32_t kProfile = 1;
constexpr std::uint32_t kMark = 0x4b530001u;   // KS_MARK_BASE | 1
constexpr std::uint32_t kTable = 1263730689u;  // the same number, as `ip` prints it

static_assert(kMark == (KS_MARK_BASE | kProfile));
static_assert(kTable == kMark);

ks_profile Entry(std::uint32_t v4, std::uint32_t v6, bool valid = true) {
  ks_profile p{};
  p.flags = valid ? KS_PROFILE_VALID : 0;
  p.bind_ifindex_v4 = v4;
  p.bind_ifindex_v6 = v6;
  return p;
}

Profile WithLan(const std::vector<std::string>& cidrs) {
  Profile p;
  p.name = "default";
  p.tunnels = {"wg0"};
  for (const auto& text : cidrs) {
    const auto c = parse_cidr(text);
    if (!c) {
      ADD_FAILURE() << "bad test CIDR " << text;
      continue;
    }
    p.allow_lan.push_back(*c);
  }
  return p;
}

std::array<std::uint8_t, 16> Addr(int family, const char* text) {
  std::array<std::uint8_t, 16> a{};
  if (inet_pton(family, text, a.data()) != 1) ADD_FAILURE() << "bad test address " << text;
  return a;
}

RouteSpec Via(int family, std::uint32_t oif) {
  RouteSpec r;
  r.family = family;
  r.oif = oif;
  r.metric = 1;
  return r;
}

// pref 90 fwmark MARK lookup MARK
RuleSpec TableRule(int family, std::uint32_t id = kProfile) {
  RuleSpec r;
  r.family = family;
  r.priority = 90;
  r.mark = KS_MARK_BASE | id;
  r.mark_mask = KS_MARK_RULE_MASK;
  r.action = FR_ACT_TO_TBL;
  r.table = KS_MARK_BASE | id;
  return r;
}

// pref 91 fwmark MARK unreachable
RuleSpec UnreachableRule(int family, std::uint32_t id = kProfile) {
  RuleSpec r;
  r.family = family;
  r.priority = 91;
  r.mark = KS_MARK_BASE | id;
  r.mark_mask = KS_MARK_RULE_MASK;
  r.action = FR_ACT_UNREACHABLE;
  return r;
}

// pref 89 fwmark MARK to DST/LEN lookup main
RuleSpec LanRule(int family, const char* dst, std::uint8_t len, std::uint32_t id = kProfile) {
  RuleSpec r;
  r.family = family;
  r.priority = 89;
  r.mark = KS_MARK_BASE | id;
  r.mark_mask = KS_MARK_RULE_MASK;
  r.action = FR_ACT_TO_TBL;
  r.table = RT_TABLE_MAIN;
  r.dst = Addr(family, dst);
  r.dst_len = len;
  return r;
}

// What every profile id gets, with or without a configured profile.
std::vector<RuleSpec> BaseRules(std::uint32_t id = kProfile) {
  return {TableRule(AF_INET, id), UnreachableRule(AF_INET, id), TableRule(AF_INET6, id),
          UnreachableRule(AF_INET6, id)};
}

// The order of a plan is not part of the contract (sync_table and sync_rules compare
// sets; the kernel orders rules by priority).
std::vector<RouteSpec> Sorted(std::vector<RouteSpec> routes) {
  auto key = [](const RouteSpec& r) { return std::tie(r.family, r.oif, r.metric); };
  std::sort(routes.begin(), routes.end(),
            [&](const RouteSpec& a, const RouteSpec& b) { return key(a) < key(b); });
  return routes;
}

std::vector<RuleSpec> Sorted(std::vector<RuleSpec> rules) {
  auto key = [](const RuleSpec& r) {
    return std::tie(r.family, r.priority, r.mark, r.mark_mask, r.action, r.table, r.dst, r.dst_len);
  };
  std::sort(rules.begin(), rules.end(),
            [&](const RuleSpec& a, const RuleSpec& b) { return key(a) < key(b); });
  return rules;
}

std::vector<RuleSpec> Concat(std::vector<RuleSpec> a, const std::vector<RuleSpec>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

#define EXPECT_ROUTES(actual, ...) \
  EXPECT_EQ(Sorted(actual), Sorted(std::vector<RouteSpec>{__VA_ARGS__}))
#define EXPECT_RULES(actual, expected) EXPECT_EQ(Sorted(actual), Sorted(expected))

// ---------------------------------------------------------------------------------------
// plan_routes

TEST(RoutingPlan, InvalidProfileGetsNoRoutes) {
  EXPECT_ROUTES(plan_routes(Entry(0, 0, false)));
  // Bind targets of an invalid entry are ignored: the table stays empty, so lookups end
  // at the unreachable rule (fail closed).
  EXPECT_ROUTES(plan_routes(Entry(7, 8, false)));
  EXPECT_ROUTES(plan_routes(ks_profile{}));
  // Other flag bits do not make an entry valid.
  ks_profile other_flags = Entry(7, 8, false);
  other_flags.flags = ~static_cast<std::uint32_t>(KS_PROFILE_VALID);
  EXPECT_ROUTES(plan_routes(other_flags));
}

TEST(RoutingPlan, ValidWithoutTunnelGetsNoRoutes) { EXPECT_ROUTES(plan_routes(Entry(0, 0))); }

TEST(RoutingPlan, Ipv4TunnelOnly) { EXPECT_ROUTES(plan_routes(Entry(7, 0)), Via(AF_INET, 7)); }

TEST(RoutingPlan, Ipv6TunnelOnly) { EXPECT_ROUTES(plan_routes(Entry(0, 9)), Via(AF_INET6, 9)); }

TEST(RoutingPlan, BothFamilies) {
  EXPECT_ROUTES(plan_routes(Entry(7, 7)), Via(AF_INET, 7), Via(AF_INET6, 7));
  // Different tunnels per family.
  EXPECT_ROUTES(plan_routes(Entry(7, 9)), Via(AF_INET, 7), Via(AF_INET6, 9));
  // Valid plus other flag bits.
  ks_profile more_flags = Entry(7, 9);
  more_flags.flags |= 0x80000000u;
  EXPECT_ROUTES(plan_routes(more_flags), Via(AF_INET, 7), Via(AF_INET6, 9));
}

TEST(RoutingPlan, RoutesHaveMetricOne) {
  const auto plan = plan_routes(Entry(7, 9));
  ASSERT_EQ(plan.size(), 2u);
  for (const auto& r : plan) {
    SCOPED_TRACE(r.describe());
    // Not 0: the kernel turns an IPv6 metric 0 into 1024, and sync would never settle.
    EXPECT_EQ(r.metric, 1u);
    EXPECT_TRUE(r.family == AF_INET || r.family == AF_INET6);
    EXPECT_EQ(r.oif, r.family == AF_INET ? 7u : 9u);
  }
  // So is a default-constructed route.
  EXPECT_EQ(RouteSpec{}.metric, 1u);
}

TEST(RoutingPlan, RouteDescribe) {
  EXPECT_EQ(Via(AF_INET, 7).describe(), "IPv4 default dev ifindex 7 metric 1");
  EXPECT_EQ(Via(AF_INET6, 9).describe(), "IPv6 default dev ifindex 9 metric 1");
  EXPECT_NE(Via(AF_INET, 7).describe(), Via(AF_INET6, 7).describe());
}

TEST(RoutingPlan, RouteEquality) {
  EXPECT_EQ(Via(AF_INET, 7), Via(AF_INET, 7));
  EXPECT_NE(Via(AF_INET, 7), Via(AF_INET, 8));
  EXPECT_NE(Via(AF_INET, 7), Via(AF_INET6, 7));
  RouteSpec other_metric = Via(AF_INET, 7);
  other_metric.metric = 1024;
  EXPECT_NE(Via(AF_INET, 7), other_metric);
}

// ---------------------------------------------------------------------------------------
// plan_rules

TEST(RulePlan, Priorities) {
  EXPECT_EQ(kLanRulePriority, 89u);
  EXPECT_EQ(kTableRulePriority, 90u);
  EXPECT_EQ(kUnreachableRulePriority, 91u);
  // The LAN before the tunnel, the tunnel before unreachable, all before the main table.
  EXPECT_LT(kLanRulePriority, kTableRulePriority);
  EXPECT_LT(kTableRulePriority, kUnreachableRulePriority);
  EXPECT_LT(kUnreachableRulePriority, 32766u);
  EXPECT_EQ(table_for_profile(kProfile), kTable);
  EXPECT_EQ(table_for_profile(0), KS_MARK_BASE);
  EXPECT_EQ(table_for_profile(KS_MAX_PROFILES - 1), 0x4b53003fu);
}

TEST(RulePlan, WithoutProfileOnlyTableAndUnreachable) {
  EXPECT_RULES(plan_rules(kProfile, nullptr), BaseRules());
  // A configured profile without allow_lan gets the same.
  const Profile no_lan = WithLan({});
  EXPECT_RULES(plan_rules(kProfile, &no_lan), BaseRules());
}

TEST(RulePlan, TableAndUnreachableFields) {
  const auto plan = plan_rules(kProfile, nullptr);
  ASSERT_EQ(plan.size(), 4u);
  int table_rules[2] = {0, 0};
  int unreachable_rules[2] = {0, 0};
  for (const auto& r : plan) {
    SCOPED_TRACE(r.describe());
    ASSERT_TRUE(r.family == AF_INET || r.family == AF_INET6);
    const int f = r.family == AF_INET ? 0 : 1;
    EXPECT_EQ(r.mark, kMark);
    EXPECT_EQ(r.mark_mask, 0xffff003fu) << "tag and profile: the app slot bits are free";
    EXPECT_EQ(r.dst, (std::array<std::uint8_t, 16>{}));
    EXPECT_EQ(r.dst_len, 0);
    if (r.action == FR_ACT_TO_TBL) {
      ++table_rules[f];
      EXPECT_EQ(r.priority, 90u);
      EXPECT_EQ(r.table, kTable) << "the table number is the mark";
    } else {
      ++unreachable_rules[f];
      EXPECT_EQ(r.action, FR_ACT_UNREACHABLE);
      EXPECT_EQ(r.priority, 91u);
      // our_rules() reads 0 for rules without a table; the plan must say the same.
      EXPECT_EQ(r.table, 0u);
    }
  }
  EXPECT_EQ(table_rules[0], 1);
  EXPECT_EQ(table_rules[1], 1);
  EXPECT_EQ(unreachable_rules[0], 1);
  EXPECT_EQ(unreachable_rules[1], 1);
}

TEST(RulePlan, ProfileIdSelectsMarkAndTable) {
  // KS_PROFILE_NONE has rules too (mark KS_MARK_BASE, nonzero), and the highest id.
  EXPECT_RULES(plan_rules(KS_PROFILE_NONE, nullptr), BaseRules(KS_PROFILE_NONE));
  EXPECT_EQ(TableRule(AF_INET, 0).mark, 0x4b530000u);
  EXPECT_RULES(plan_rules(KS_MAX_PROFILES - 1, nullptr), BaseRules(KS_MAX_PROFILES - 1));
  EXPECT_EQ(TableRule(AF_INET, KS_MAX_PROFILES - 1).mark, 0x4b53003fu);
  // Rules of different profiles never coincide, so ksd can simply concatenate plans.
  const Profile lan = WithLan({"192.168.1.0/24", "fd00::/8"});
  const auto one = plan_rules(1, &lan);
  const auto two = plan_rules(2, &lan);
  for (const auto& r : one) {
    SCOPED_TRACE(r.describe());
    EXPECT_EQ(std::count(two.begin(), two.end(), r), 0);
    EXPECT_EQ(std::count(one.begin(), one.end(), r), 1) << "duplicate rule in a plan";
  }
}

TEST(RulePlan, AllowLanBecomesLookupMainRules) {
  const Profile lan =
      WithLan({"192.168.1.0/24", "10.0.0.0/8", "fd00::/8", "2001:db8:1::/48", "192.168.1.10/32"});
  EXPECT_RULES(
      plan_rules(kProfile, &lan),
      Concat(BaseRules(), {LanRule(AF_INET, "192.168.1.0", 24), LanRule(AF_INET, "10.0.0.0", 8),
                           LanRule(AF_INET6, "fd00::", 8), LanRule(AF_INET6, "2001:db8:1::", 48),
                           LanRule(AF_INET, "192.168.1.10", 32)}));
  // Only one family of LAN: the other family gets no LAN rule, but still both base sets.
  const Profile v6_lan = WithLan({"fe80::/10"});
  EXPECT_RULES(plan_rules(kProfile, &v6_lan),
               Concat(BaseRules(), {LanRule(AF_INET6, "fe80::", 10)}));
  // Another profile id: the LAN rules carry that id's mark.
  EXPECT_RULES(plan_rules(5, &v6_lan), Concat(BaseRules(5), {LanRule(AF_INET6, "fe80::", 10, 5)}));
}

TEST(RulePlan, LanRuleFields) {
  const Profile lan = WithLan({"192.168.1.0/24", "fd00:1:2::/48"});
  std::vector<RuleSpec> lan_rules;
  for (const auto& r : plan_rules(kProfile, &lan))
    if (r.priority == kLanRulePriority) lan_rules.push_back(r);
  ASSERT_EQ(lan_rules.size(), 2u);
  const RuleSpec& v4 = lan_rules[0].family == AF_INET ? lan_rules[0] : lan_rules[1];
  const RuleSpec& v6 = lan_rules[0].family == AF_INET ? lan_rules[1] : lan_rules[0];
  EXPECT_EQ(v4.family, AF_INET);
  EXPECT_EQ(v4.priority, 89u);
  EXPECT_EQ(v4.mark, kMark);
  EXPECT_EQ(v4.action, FR_ACT_TO_TBL);
  EXPECT_EQ(v4.table, static_cast<std::uint32_t>(RT_TABLE_MAIN));
  EXPECT_EQ(v4.dst_len, 24);
  // IPv4 occupies the first 4 bytes; the rest stays zero (rules compare whole arrays,
  // and our_rules() fills only 4 bytes for IPv4).
  EXPECT_EQ(v4.dst, (std::array<std::uint8_t, 16>{192, 168, 1, 0}));
  EXPECT_EQ(v6.family, AF_INET6);
  EXPECT_EQ(v6.priority, 89u);
  EXPECT_EQ(v6.mark, kMark);
  EXPECT_EQ(v6.action, FR_ACT_TO_TBL);
  EXPECT_EQ(v6.table, static_cast<std::uint32_t>(RT_TABLE_MAIN));
  EXPECT_EQ(v6.dst_len, 48);
  EXPECT_EQ(v6.dst, (std::array<std::uint8_t, 16>{0xfd, 0x00, 0x00, 0x01, 0x00, 0x02}));
}

TEST(RulePlan, RuleDescribe) {
  EXPECT_EQ(TableRule(AF_INET).describe(),
            "IPv4 pref 90 fwmark 0x4b530001/0xffff003f lookup 1263730689");
  EXPECT_EQ(TableRule(AF_INET6).describe(),
            "IPv6 pref 90 fwmark 0x4b530001/0xffff003f lookup 1263730689");
  EXPECT_EQ(UnreachableRule(AF_INET).describe(),
            "IPv4 pref 91 fwmark 0x4b530001/0xffff003f unreachable");
  EXPECT_EQ(UnreachableRule(AF_INET6, 0).describe(),
            "IPv6 pref 91 fwmark 0x4b530000/0xffff003f unreachable");
  EXPECT_EQ(LanRule(AF_INET, "192.168.1.0", 24).describe(),
            "IPv4 pref 89 fwmark 0x4b530001/0xffff003f to 192.168.1.0/24 lookup 254");
  EXPECT_EQ(LanRule(AF_INET6, "fd00::", 8).describe(),
            "IPv6 pref 89 fwmark 0x4b530001/0xffff003f to fd00::/8 lookup 254");
  EXPECT_EQ(LanRule(AF_INET, "192.168.1.10", 32).describe(),
            "IPv4 pref 89 fwmark 0x4b530001/0xffff003f to 192.168.1.10/32 lookup 254");
  // Every rule of a plan describes itself distinctly.
  const Profile lan = WithLan({"192.168.1.0/24", "10.0.0.0/8", "fd00::/8"});
  std::vector<std::string> texts;
  for (const auto& r : plan_rules(kProfile, &lan)) texts.push_back(r.describe());
  EXPECT_EQ(texts.size(), 7u);
  std::sort(texts.begin(), texts.end());
  EXPECT_EQ(std::adjacent_find(texts.begin(), texts.end()), texts.end())
      << ::testing::PrintToString(texts);
}

TEST(RulePlan, RuleEquality) {
  EXPECT_EQ(TableRule(AF_INET), TableRule(AF_INET));
  EXPECT_EQ(LanRule(AF_INET, "192.168.1.0", 24), LanRule(AF_INET, "192.168.1.0", 24));
  EXPECT_NE(TableRule(AF_INET), TableRule(AF_INET6));
  EXPECT_NE(TableRule(AF_INET), TableRule(AF_INET, 2));
  EXPECT_NE(TableRule(AF_INET), UnreachableRule(AF_INET));
  EXPECT_NE(LanRule(AF_INET, "192.168.1.0", 24), LanRule(AF_INET, "192.168.1.0", 25));
  EXPECT_NE(LanRule(AF_INET, "192.168.1.0", 24), LanRule(AF_INET, "192.168.2.0", 24));
  RuleSpec other_table = TableRule(AF_INET);
  other_table.table = RT_TABLE_MAIN;
  EXPECT_NE(TableRule(AF_INET), other_table);
  RuleSpec other_priority = TableRule(AF_INET);
  other_priority.priority = 92;
  EXPECT_NE(TableRule(AF_INET), other_priority);
}

// ---- plan_all_rules: every profile id in use, and the tunnels' source rules ----

LinkState TunnelLink(const std::string& name, std::uint32_t ifindex,
                     std::vector<std::pair<int, const char*>> addresses) {
  LinkState l;
  l.name = name;
  l.ifindex = ifindex;
  for (const auto& [family, text] : addresses) l.addresses.push_back({family, Addr(family, text)});
  return l;
}

TEST(PlanAllRules, EachIdInUseGetsItsRulesAndEachTunnelAddressItsSourceRules) {
  Config config = parse_config(R"(
[profiles.default]
tunnels = ["wg0"]
[profiles.work]
tunnels = ["wg0", "tun1"]
)",
                               "/test/config.toml");
  const ProfileIds ids = {{"default", 1}, {"work", 2}};
  const std::map<std::uint32_t, LinkState> links = {
      {3, TunnelLink("wg0", 3, {{AF_INET, "10.0.0.2"}, {AF_INET6, "fd00::2"}})},
      {4, TunnelLink("tun1", 4, {{AF_INET, "10.8.0.2"}})},
      {5, TunnelLink("eth0", 5, {{AF_INET, "192.0.2.7"}})}};
  const std::set<std::uint32_t> in_use = {KS_PROFILE_NONE, 1, 2, 7};  // 7: a removed profile
  const auto rules = plan_all_rules(config, ids, in_use, links);

  std::vector<RuleSpec> want;
  for (std::uint32_t id : in_use) {
    const Profile* profile = id == 1   ? config.find_profile("default")
                             : id == 2 ? config.find_profile("work")
                                       : nullptr;
    for (const auto& r : plan_rules(id, profile)) want.push_back(r);
  }
  // wg0's addresses by the first profile naming it (default), tun1's by work; eth0 none.
  for (const auto& r :
       plan_source_rules({AF_INET, Addr(AF_INET, "10.0.0.2")}, table_for_profile(1)))
    want.push_back(r);
  for (const auto& r :
       plan_source_rules({AF_INET6, Addr(AF_INET6, "fd00::2")}, table_for_profile(1)))
    want.push_back(r);
  for (const auto& r :
       plan_source_rules({AF_INET, Addr(AF_INET, "10.8.0.2")}, table_for_profile(2)))
    want.push_back(r);
  EXPECT_EQ(rules, want);
}

}  // namespace
}  // namespace ks
