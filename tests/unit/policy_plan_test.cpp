// (configuration, interface states) -> BPF map contents: profile ids, ks_tunnel_sets,
// ks_profiles, status, and the ks_lan LPM keys.
#include "killswitch/policy_plan.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "killswitch/config.hpp"
#include "killswitch/error.hpp"

namespace ks {
namespace {

Config config_of(const std::string& toml) { return parse_config(toml, "/test/config.toml"); }

constexpr std::uint32_t kUpFlags = IFF_UP | IFF_RUNNING;

LinkState link(const std::string& name, std::uint32_t ifindex, std::uint32_t flags, bool v4,
               bool v6) {
  LinkState l;
  l.name = name;
  l.ifindex = ifindex;
  l.flags = flags;
  l.has_ipv4 = v4;
  l.has_ipv6 = v6;
  return l;
}

std::map<std::uint32_t, LinkState> links_of(const std::vector<LinkState>& list) {
  std::map<std::uint32_t, LinkState> out;
  for (const LinkState& l : list) out[l.ifindex] = l;
  return out;
}

// The usual background: loopback and a physical interface that are never tunnels.
std::vector<LinkState> background() {
  return {link("lo", 1, kUpFlags | IFF_LOOPBACK, true, true),
          link("eth0", 2, kUpFlags, true, true)};
}

std::string hex(const std::uint8_t* bytes, std::size_t n) {
  std::string out;
  char buf[4];
  for (std::size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", bytes[i]);
    out += buf;
  }
  return out;
}

// Profile name list in file order, e.g. "[profiles.p00]\ntunnels = [\"wg0\"]\n..." for n.
std::string n_profiles_toml(int n) {
  std::string toml;
  char name[16];
  for (int i = 0; i < n; ++i) {
    std::snprintf(name, sizeof name, "p%02d", i);
    toml += std::string("[profiles.") + name + "]\ntunnels = [\"wg0\"]\n";
  }
  return toml;
}

std::string profile_name(int i) {
  char name[16];
  std::snprintf(name, sizeof name, "p%02d", i);
  return name;
}

// ---------------------------------------------------------------------------------------
// assign_profile_ids

TEST(AssignProfileIds, FreshStartNumbersInFileOrderFromOne) {
  const Config c = config_of(R"([profiles.zulu]
tunnels = ["wg0"]
[profiles.default]
tunnels = ["wg0"]
[profiles.alpha]
tunnels = ["wg0"]
)");
  const ProfileIds ids = assign_profile_ids(c, {});
  EXPECT_EQ(ids, (ProfileIds{{"zulu", 1}, {"default", 2}, {"alpha", 3}}));
}

TEST(AssignProfileIds, KeepsExistingIds) {
  const Config c = config_of(R"([profiles.a]
tunnels = ["wg0"]
[profiles.b]
tunnels = ["wg0"]
)");
  const ProfileIds ids = assign_profile_ids(c, {{"a", 17}, {"b", 4}});
  EXPECT_EQ(ids, (ProfileIds{{"a", 17}, {"b", 4}}));
}

TEST(AssignProfileIds, NewProfileGetsLowestFreeId) {
  const Config c = config_of(R"([profiles.new_one]
tunnels = ["wg0"]
[profiles.b]
tunnels = ["wg0"]
[profiles.new_two]
tunnels = ["wg0"]
)");
  // b keeps 2; the new profiles fill 1, then 3 (the lowest still free).
  const ProfileIds ids = assign_profile_ids(c, {{"b", 2}});
  EXPECT_EQ(ids, (ProfileIds{{"new_one", 1}, {"b", 2}, {"new_two", 3}}));
}

TEST(AssignProfileIds, RemovedProfilesIdsAreNotReusedWhileFreeIdsRemain) {
  const Config c = config_of(R"([profiles.b]
tunnels = ["wg0"]
[profiles.c]
tunnels = ["wg0"]
)");
  // "gone" had id 1 and is no longer configured: sockets still carrying 1 must match no
  // profile, so the new profile c must not take it.
  const ProfileIds ids = assign_profile_ids(c, {{"gone", 1}, {"b", 2}});
  EXPECT_EQ(ids, (ProfileIds{{"b", 2}, {"c", 3}}));
  EXPECT_EQ(ids.count("gone"), 0u);
}

TEST(AssignProfileIds, ResultHoldsOnlyConfiguredProfiles) {
  const Config c = config_of("[profiles.default]\ntunnels = [\"wg0\"]\n");
  const ProfileIds ids = assign_profile_ids(c, {{"old", 1}, {"older", 2}, {"default", 9}});
  EXPECT_EQ(ids, (ProfileIds{{"default", 9}}));
}

TEST(AssignProfileIds, OutOfRangeExistingIdsAreIgnored) {
  const Config c = config_of(R"([profiles.a]
tunnels = ["wg0"]
[profiles.b]
tunnels = ["wg0"]
[profiles.c]
tunnels = ["wg0"]
)");
  // 0 is KS_PROFILE_NONE and 64 / 1000 do not fit ks_profiles: all get fresh ids.
  const ProfileIds ids =
      assign_profile_ids(c, {{"a", KS_PROFILE_NONE}, {"b", KS_MAX_PROFILES}, {"c", 1000}});
  EXPECT_EQ(ids, (ProfileIds{{"a", 1}, {"b", 2}, {"c", 3}}));
}

TEST(AssignProfileIds, MaximumNumberOfProfilesFits) {
  const Config c = config_of(n_profiles_toml(KS_MAX_PROFILES - 1));
  ASSERT_EQ(c.profiles.size(), static_cast<std::size_t>(KS_MAX_PROFILES - 1));
  const ProfileIds ids = assign_profile_ids(c, {});
  ASSERT_EQ(ids.size(), static_cast<std::size_t>(KS_MAX_PROFILES - 1));
  for (int i = 0; i < KS_MAX_PROFILES - 1; ++i)
    EXPECT_EQ(ids.at(profile_name(i)), static_cast<std::uint32_t>(i + 1)) << profile_name(i);
}

TEST(AssignProfileIds, RemovedIdsAreRecycledOnlyWhenNothingElseIsFree) {
  // 63 new profiles while a removed profile still holds id 7: 62 free ids are used first,
  // then the last profile has to recycle 7.
  const Config c = config_of(n_profiles_toml(KS_MAX_PROFILES - 1));
  const ProfileIds ids = assign_profile_ids(c, {{"gone", 7}});
  ASSERT_EQ(ids.size(), static_cast<std::size_t>(KS_MAX_PROFILES - 1));
  std::set<std::uint32_t> seen;
  for (const auto& [name, id] : ids) {
    EXPECT_GE(id, 1u) << name;
    EXPECT_LT(id, static_cast<std::uint32_t>(KS_MAX_PROFILES)) << name;
    EXPECT_TRUE(seen.insert(id).second) << "id " << id << " given twice";
  }
  EXPECT_EQ(ids.at("p00"), 1u);
  EXPECT_EQ(ids.at("p05"), 6u);
  EXPECT_EQ(ids.at("p06"), 8u);  // skips the removed profile's 7
  EXPECT_EQ(ids.at("p61"), 63u);
  EXPECT_EQ(ids.at("p62"), 7u);  // only now is 7 recycled
}

TEST(AssignProfileIds, RecyclesLowestRemovedIdWhenAllAreTaken) {
  // Every id 1..63 belongs to a removed profile; one new profile recycles the lowest.
  ProfileIds existing;
  for (std::uint32_t id = 1; id < KS_MAX_PROFILES; ++id) existing["old" + std::to_string(id)] = id;
  const Config c = config_of("[profiles.fresh]\ntunnels = [\"wg0\"]\n");
  EXPECT_EQ(assign_profile_ids(c, existing), (ProfileIds{{"fresh", 1}}));
}

TEST(AssignProfileIds, TooManyProfilesIsAnError) {
  // parse_config refuses a 64th profile itself, so build the Config by hand.
  Config c;
  c.path = "/test/config.toml";
  for (int i = 0; i < KS_MAX_PROFILES; ++i) {
    Profile p;
    p.name = profile_name(i);
    p.tunnels = {"wg0"};
    c.profiles.push_back(p);
  }
  try {
    assign_profile_ids(c, {});
    FAIL() << "64 profiles were given ids";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too many profiles"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("63"), std::string::npos) << e.what();
  }
  // Same when existing ids are all kept.
  ProfileIds existing;
  for (int i = 0; i < KS_MAX_PROFILES - 1; ++i)
    existing[profile_name(i)] = static_cast<std::uint32_t>(i + 1);
  EXPECT_THROW(assign_profile_ids(c, existing), Error);
}

// ---------------------------------------------------------------------------------------
// plan_policy

const char* kOneProfile = R"([profiles.default]
tunnels = ["wg0"]
)";

void expect_status(const TunnelStatus& st, const std::string& name, const std::string& state,
                   std::uint32_t ifindex, bool v4, bool v6) {
  SCOPED_TRACE("tunnel " + name);
  EXPECT_EQ(st.name, name);
  EXPECT_EQ(tunnel_state_name(st.state), state);
  EXPECT_EQ(st.ifindex, ifindex);
  EXPECT_EQ(st.ipv4, v4);
  EXPECT_EQ(st.ipv6, v6);
}

TEST(PlanPolicy, TunnelMissing) {
  const Config c = config_of(kOneProfile);
  const PolicyPlan plan = plan_policy(c, {{"default", 1}}, links_of(background()));
  EXPECT_TRUE(plan.tunnels.empty());
  ASSERT_EQ(plan.profiles.count(1), 1u);
  const ks_profile& p = plan.profiles.at(1);
  EXPECT_EQ(p.flags, KS_PROFILE_VALID);  // the profile exists: its sockets are judged
  EXPECT_EQ(p.bind_ifindex_v4, 0u);
  EXPECT_EQ(p.bind_ifindex_v6, 0u);
  ASSERT_EQ(plan.status.at("default").size(), 1u);
  expect_status(plan.status.at("default")[0], "wg0", "missing", 0, false, false);
}

TEST(PlanPolicy, NoLinksAtAll) {
  const Config c = config_of(kOneProfile);
  const PolicyPlan plan = plan_policy(c, {{"default", 1}}, {});
  EXPECT_TRUE(plan.tunnels.empty());
  expect_status(plan.status.at("default").at(0), "wg0", "missing", 0, false, false);
}

TEST(PlanPolicy, TunnelDownStates) {
  struct {
    const char* description;
    std::uint32_t flags;
  } const cases[] = {
      {"admin up, no carrier (IFF_UP without IFF_RUNNING)", IFF_UP},
      {"admin down", 0},
      {"running but admin down", IFF_RUNNING},
      {"other flags only", IFF_POINTOPOINT | IFF_NOARP},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.description);
    auto links = background();
    links.push_back(link("wg0", 7, tc.flags, true, true));
    const PolicyPlan plan = plan_policy(config_of(kOneProfile), {{"default", 1}}, links_of(links));
    EXPECT_TRUE(plan.tunnels.empty());
    EXPECT_EQ(plan.profiles.at(1).bind_ifindex_v4, 0u);
    EXPECT_EQ(plan.profiles.at(1).bind_ifindex_v6, 0u);
    // A down tunnel still reports where it is and what it has.
    expect_status(plan.status.at("default").at(0), "wg0", "down", 7, true, true);
  }
}

TEST(PlanPolicy, TunnelUpFamilies) {
  struct {
    const char* description;
    bool v4, v6;
    std::uint32_t families, bind_v4, bind_v6;
  } const cases[] = {
      {"IPv4 only", true, false, KS_FAMILY_V4, 7, 0},
      {"IPv6 only", false, true, KS_FAMILY_V6, 0, 7},
      {"dual stack", true, true, KS_FAMILY_V4 | KS_FAMILY_V6, 7, 7},
      // Up but no address: usable for the egress rule (present in ks_tunnel_sets) but never a
      // bind target, so connect() fails fast instead of pinning to a dead end.
      {"no addresses", false, false, 0, 0, 0},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.description);
    auto links = background();
    links.push_back(link("wg0", 7, kUpFlags | IFF_POINTOPOINT | IFF_NOARP, tc.v4, tc.v6));
    const PolicyPlan plan = plan_policy(config_of(kOneProfile), {{"default", 1}}, links_of(links));
    EXPECT_EQ(plan.tunnels, (TunnelMap{{{1, 7}, tc.families}}));
    const ks_profile& p = plan.profiles.at(1);
    EXPECT_EQ(p.flags, KS_PROFILE_VALID);
    EXPECT_EQ(p.bind_ifindex_v4, tc.bind_v4);
    EXPECT_EQ(p.bind_ifindex_v6, tc.bind_v6);
    expect_status(plan.status.at("default").at(0), "wg0", "up", 7, tc.v4, tc.v6);
  }
}

TEST(PlanPolicy, UsesTheGivenProfileIdEverywhere) {
  auto links = background();
  links.push_back(link("wg0", 7, kUpFlags, true, false));
  const PolicyPlan plan = plan_policy(config_of(kOneProfile), {{"default", 42}}, links_of(links));
  EXPECT_EQ(plan.tunnels, (TunnelMap{{{42, 7}, KS_FAMILY_V4}}));
  ASSERT_EQ(plan.profiles.size(), 1u);
  EXPECT_EQ(plan.profiles.count(42), 1u);
}

const char* kTwoTunnels = R"([profiles.default]
tunnels = ["wg0", "wg1"]
)";

TEST(PlanPolicy, FirstTunnelInConfigOrderWinsBindTargetPerFamily) {
  // wg0 (ifindex 9) carries IPv4 only, wg1 (ifindex 4) both: IPv4 binds to wg0 because it
  // comes first in the file, IPv6 to wg1 because wg0 cannot carry it. The lower ifindex of
  // wg1 must not matter.
  auto links = background();
  links.push_back(link("wg0", 9, kUpFlags, true, false));
  links.push_back(link("wg1", 4, kUpFlags, true, true));
  const PolicyPlan plan = plan_policy(config_of(kTwoTunnels), {{"default", 1}}, links_of(links));
  EXPECT_EQ(plan.tunnels,
            (TunnelMap{{{1, 9}, KS_FAMILY_V4}, {{1, 4}, KS_FAMILY_V4 | KS_FAMILY_V6}}));
  EXPECT_EQ(plan.profiles.at(1).bind_ifindex_v4, 9u);
  EXPECT_EQ(plan.profiles.at(1).bind_ifindex_v6, 4u);
  const auto& st = plan.status.at("default");
  ASSERT_EQ(st.size(), 2u);
  expect_status(st[0], "wg0", "up", 9, true, false);
  expect_status(st[1], "wg1", "up", 4, true, true);
}

TEST(PlanPolicy, ReversedConfigOrderReversesTheWinner) {
  auto links = background();
  links.push_back(link("wg0", 9, kUpFlags, true, true));
  links.push_back(link("wg1", 4, kUpFlags, true, true));
  const PolicyPlan a = plan_policy(config_of(kTwoTunnels), {{"default", 1}}, links_of(links));
  EXPECT_EQ(a.profiles.at(1).bind_ifindex_v4, 9u);
  EXPECT_EQ(a.profiles.at(1).bind_ifindex_v6, 9u);
  const PolicyPlan b = plan_policy(config_of("[profiles.default]\ntunnels = [\"wg1\", \"wg0\"]\n"),
                                   {{"default", 1}}, links_of(links));
  EXPECT_EQ(b.profiles.at(1).bind_ifindex_v4, 4u);
  EXPECT_EQ(b.profiles.at(1).bind_ifindex_v6, 4u);
  EXPECT_EQ(b.status.at("default").at(0).name, "wg1");
  EXPECT_EQ(b.status.at("default").at(1).name, "wg0");
}

TEST(PlanPolicy, FirstTunnelDownSecondTakesOver) {
  auto links = background();
  links.push_back(link("wg0", 9, IFF_UP, true, true));  // no carrier
  links.push_back(link("wg1", 4, kUpFlags, true, true));
  const PolicyPlan plan = plan_policy(config_of(kTwoTunnels), {{"default", 1}}, links_of(links));
  EXPECT_EQ(plan.tunnels, (TunnelMap{{{1, 4}, KS_FAMILY_V4 | KS_FAMILY_V6}}));
  EXPECT_EQ(plan.profiles.at(1).bind_ifindex_v4, 4u);
  EXPECT_EQ(plan.profiles.at(1).bind_ifindex_v6, 4u);
  expect_status(plan.status.at("default").at(0), "wg0", "down", 9, true, true);
  expect_status(plan.status.at("default").at(1), "wg1", "up", 4, true, true);
}

TEST(PlanPolicy, FirstTunnelUpWithoutAddressesDoesNotTakeTheBindTarget) {
  auto links = background();
  links.push_back(link("wg0", 9, kUpFlags, false, false));
  links.push_back(link("wg1", 4, kUpFlags, true, false));
  const PolicyPlan plan = plan_policy(config_of(kTwoTunnels), {{"default", 1}}, links_of(links));
  EXPECT_EQ(plan.tunnels, (TunnelMap{{{1, 9}, 0u}, {{1, 4}, KS_FAMILY_V4}}));
  EXPECT_EQ(plan.profiles.at(1).bind_ifindex_v4, 4u);
  EXPECT_EQ(plan.profiles.at(1).bind_ifindex_v6, 0u);
}

TEST(PlanPolicy, SameTunnelInTwoProfiles) {
  const Config c = config_of(R"([profiles.work]
tunnels = ["wg0"]
[profiles.torrent]
tunnels = ["wg1", "wg0"]
)");
  auto links = background();
  links.push_back(link("wg0", 7, kUpFlags, true, true));
  links.push_back(link("wg1", 8, kUpFlags, false, true));
  const PolicyPlan plan = plan_policy(c, {{"work", 3}, {"torrent", 5}}, links_of(links));
  EXPECT_EQ(plan.tunnels, (TunnelMap{{{3, 7}, KS_FAMILY_V4 | KS_FAMILY_V6},
                                     {{5, 7}, KS_FAMILY_V4 | KS_FAMILY_V6},
                                     {{5, 8}, KS_FAMILY_V6}}));
  EXPECT_EQ(plan.profiles.at(3).bind_ifindex_v4, 7u);
  EXPECT_EQ(plan.profiles.at(3).bind_ifindex_v6, 7u);
  EXPECT_EQ(plan.profiles.at(5).bind_ifindex_v4, 7u);  // wg1 has no IPv4
  EXPECT_EQ(plan.profiles.at(5).bind_ifindex_v6, 8u);  // wg1 comes first
  ASSERT_EQ(plan.status.size(), 2u);
  ASSERT_EQ(plan.status.at("work").size(), 1u);
  expect_status(plan.status.at("work")[0], "wg0", "up", 7, true, true);
  ASSERT_EQ(plan.status.at("torrent").size(), 2u);
  expect_status(plan.status.at("torrent")[0], "wg1", "up", 8, false, true);
  expect_status(plan.status.at("torrent")[1], "wg0", "up", 7, true, true);
}

TEST(PlanPolicy, MixedStatesAcrossProfiles) {
  const Config c = config_of(R"([profiles.default]
tunnels = ["wg0", "tun9", "wg1"]
[profiles.other]
tunnels = ["wg2"]
)");
  auto links = background();
  links.push_back(link("wg0", 11, IFF_UP, true, false));  // down
  links.push_back(link("wg1", 12, kUpFlags, false, true));
  links.push_back(link("wg2", 13, kUpFlags, true, false));
  const PolicyPlan plan = plan_policy(c, {{"default", 1}, {"other", 2}}, links_of(links));
  EXPECT_EQ(plan.tunnels, (TunnelMap{{{1, 12}, KS_FAMILY_V6}, {{2, 13}, KS_FAMILY_V4}}));
  const auto& st = plan.status.at("default");
  ASSERT_EQ(st.size(), 3u);
  expect_status(st[0], "wg0", "down", 11, true, false);
  expect_status(st[1], "tun9", "missing", 0, false, false);
  expect_status(st[2], "wg1", "up", 12, false, true);
  expect_status(plan.status.at("other").at(0), "wg2", "up", 13, true, false);
  EXPECT_EQ(plan.profiles.at(1).bind_ifindex_v4, 0u);
  EXPECT_EQ(plan.profiles.at(1).bind_ifindex_v6, 12u);
  EXPECT_EQ(plan.profiles.at(2).bind_ifindex_v4, 13u);
  EXPECT_EQ(plan.profiles.at(2).bind_ifindex_v6, 0u);
}

TEST(PlanPolicy, TunnelNamesMatchExactly) {
  // "wg0" must not be satisfied by "wg00" or "wg" or "WG0".
  auto links = background();
  links.push_back(link("wg00", 20, kUpFlags, true, true));
  links.push_back(link("wg", 21, kUpFlags, true, true));
  links.push_back(link("WG0", 22, kUpFlags, true, true));
  const PolicyPlan plan = plan_policy(config_of(kOneProfile), {{"default", 1}}, links_of(links));
  EXPECT_TRUE(plan.tunnels.empty());
  expect_status(plan.status.at("default").at(0), "wg0", "missing", 0, false, false);
}

TEST(PlanPolicy, DnsIsWrittenIpv6OrIpv4Mapped) {
  const Config c = config_of(R"([profiles.default]
tunnels = ["wg0"]
dns = ["10.99.0.1", "2001:db8::53", "255.255.255.255", "::ffff:192.0.2.1"]
)");
  const PolicyPlan plan = plan_policy(c, {{"default", 1}}, {});
  const ks_profile& p = plan.profiles.at(1);
  ASSERT_EQ(p.dns_count, 4u);
  EXPECT_EQ(hex(p.dns[0], 16), "00000000000000000000ffff0a630001");
  EXPECT_EQ(hex(p.dns[1], 16), "20010db8000000000000000000000053");
  EXPECT_EQ(hex(p.dns[2], 16), "00000000000000000000ffffffffffff");
  EXPECT_EQ(hex(p.dns[3], 16), "00000000000000000000ffffc0000201");
}

TEST(PlanPolicy, DnsUnusedSlotsStayZero) {
  const Config c = config_of(R"([profiles.default]
tunnels = ["wg0"]
dns = ["fd00::53"]
)");
  const ks_profile p = plan_policy(c, {{"default", 1}}, {}).profiles.at(1);
  ASSERT_EQ(p.dns_count, 1u);
  EXPECT_EQ(hex(p.dns[0], 16), "fd000000000000000000000000000053");
  for (int i = 1; i < KS_MAX_DNS; ++i) EXPECT_EQ(hex(p.dns[i], 16), std::string(32, '0')) << i;

  const ks_profile none = plan_policy(config_of(kOneProfile), {{"default", 1}}, {}).profiles.at(1);
  EXPECT_EQ(none.dns_count, 0u);
  for (int i = 0; i < KS_MAX_DNS; ++i) EXPECT_EQ(hex(none.dns[i], 16), std::string(32, '0')) << i;
}

TEST(PlanPolicy, NameIsCopiedAndTerminated) {
  const std::string longest(31, 'n');  // KS_PROFILE_NAME_MAX - 1
  const Config c = config_of("[profiles.default]\ntunnels = [\"wg0\"]\n[profiles." + longest +
                             "]\ntunnels = [\"wg0\"]\n");
  const PolicyPlan plan = plan_policy(c, {{"default", 1}, {longest, 2}}, {});
  const ks_profile& d = plan.profiles.at(1);
  EXPECT_STREQ(d.name, "default");
  for (std::size_t i = std::strlen("default"); i < sizeof d.name; ++i)
    EXPECT_EQ(d.name[i], '\0') << "byte " << i;
  const ks_profile& l = plan.profiles.at(2);
  EXPECT_EQ(std::string(l.name, strnlen(l.name, sizeof l.name)), longest);
  EXPECT_EQ(l.name[sizeof l.name - 1], '\0');
}

TEST(PlanPolicy, EveryConfiguredProfileGetsAnEntryAndStatus) {
  const Config c = config_of(R"([profiles.b]
tunnels = ["wg0"]
[profiles.a]
tunnels = ["wg1"]
)");
  const PolicyPlan plan = plan_policy(c, {{"b", 1}, {"a", 2}}, {});
  ASSERT_EQ(plan.profiles.size(), 2u);
  EXPECT_STREQ(plan.profiles.at(1).name, "b");
  EXPECT_STREQ(plan.profiles.at(2).name, "a");
  for (const auto& [id, p] : plan.profiles) EXPECT_EQ(p.flags, KS_PROFILE_VALID) << id;
  EXPECT_EQ(plan.status.size(), 2u);
  EXPECT_EQ(plan.status.count("a"), 1u);
  EXPECT_EQ(plan.status.count("b"), 1u);
}

// ---------------------------------------------------------------------------------------
// plan_lan

struct ExpectedKey {
  std::uint32_t prefixlen;
  std::uint32_t profile_id;  // host order
  std::string addr_hex;
};

void expect_keys(const std::vector<ks_lan_key>& got, const std::vector<ExpectedKey>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE("key " + std::to_string(i));
    EXPECT_EQ(got[i].prefixlen, want[i].prefixlen);
    EXPECT_EQ(got[i].profile_id, htonl(want[i].profile_id));
    EXPECT_EQ(ntohl(got[i].profile_id), want[i].profile_id);
    EXPECT_EQ(hex(got[i].addr, 16), want[i].addr_hex);
    // The profile id is the leading 32 bits of the trie key: big-endian in memory.
    const std::uint32_t id = want[i].profile_id;
    const std::uint8_t big_endian[4] = {
        static_cast<std::uint8_t>(id >> 24), static_cast<std::uint8_t>(id >> 16),
        static_cast<std::uint8_t>(id >> 8), static_cast<std::uint8_t>(id)};
    EXPECT_EQ(std::memcmp(&got[i].profile_id, big_endian, 4), 0);
  }
}

TEST(PlanLan, Ipv4IsStoredMappedAndIpv6AsIs) {
  const Config c = config_of(R"([profiles.default]
tunnels = ["wg0"]
allow_lan = ["192.168.1.0/24", "fd00::/8", "10.0.0.0/8", "fe80::/10"]
)");
  expect_keys(plan_lan(c, {{"default", 3}}),
              {
                  {32 + 96 + 24, 3, "00000000000000000000ffffc0a80100"},
                  {32 + 8, 3, "fd000000000000000000000000000000"},
                  {32 + 96 + 8, 3, "00000000000000000000ffff0a000000"},
                  {32 + 10, 3, "fe800000000000000000000000000000"},
              });
}

TEST(PlanLan, HostRoutesAndExtremePrefixes) {
  const Config c = config_of(R"([profiles.default]
tunnels = ["wg0"]
allow_lan = ["192.168.7.7", "192.168.8.8/32", "2001:db8::1/128", "128.0.0.0/1", "8000::/1"]
)");
  expect_keys(plan_lan(c, {{"default", 1}}),
              {
                  {32 + 128, 1, "00000000000000000000ffffc0a80707"},
                  {32 + 128, 1, "00000000000000000000ffffc0a80808"},
                  {32 + 128, 1, "20010db8000000000000000000000001"},
                  {32 + 96 + 1, 1, "00000000000000000000ffff80000000"},
                  {32 + 1, 1, "80000000000000000000000000000000"},
              });
}

TEST(PlanLan, ProfilesInConfigOrderWithTheirOwnIds) {
  const Config c = config_of(R"([profiles.zulu]
tunnels = ["wg0"]
allow_lan = ["172.16.0.0/12"]
[profiles.none]
tunnels = ["wg0"]
[profiles.default]
tunnels = ["wg0"]
allow_lan = ["192.168.1.0/24", "fc00::/7"]
)");
  expect_keys(plan_lan(c, {{"zulu", 63}, {"none", 2}, {"default", 0x01020304}}),
              {
                  {32 + 96 + 12, 63, "00000000000000000000ffffac100000"},
                  {32 + 96 + 24, 0x01020304, "00000000000000000000ffffc0a80100"},
                  {32 + 7, 0x01020304, "fc000000000000000000000000000000"},
              });
}

TEST(PlanLan, NoAllowLanNoKeys) {
  EXPECT_TRUE(plan_lan(config_of(kOneProfile), {{"default", 1}}).empty());
}

// ---- plan_cgroup_changes: only what differs is written ----

TEST(PlanCgroupChanges, WritesOnlyWhatDiffers) {
  const std::map<std::uint64_t, ks_cgroup_value> have = {
      {10, {1, 0}}, {11, {1, 5}}, {12, {2, 0}}, {13, {1, 0}}};
  const std::map<std::uint64_t, ks_cgroup_value> want = {
      {10, {1, 0}}, {11, {1, 6}}, {12, {3, 0}}, {14, {2, 7}}};
  const CgroupChanges c = plan_cgroup_changes(have, want);
  EXPECT_EQ(c.remove, std::vector<std::uint64_t>({13}));
  ASSERT_EQ(c.set.size(), 3u);  // 11 (slot), 12 (profile), 14 (new); 10 is unchanged
  EXPECT_EQ(c.set.at(11).app_slot, 6u);
  EXPECT_EQ(c.set.at(12).profile_id, 3u);
  EXPECT_EQ(c.set.at(14).profile_id, 2u);
  EXPECT_EQ(c.set.at(14).app_slot, 7u);
}

TEST(PlanCgroupChanges, NothingToDoWhenEqualAndEverythingWhenEmpty) {
  const std::map<std::uint64_t, ks_cgroup_value> m = {{1, {1, 0}}, {2, {2, 3}}};
  const CgroupChanges same = plan_cgroup_changes(m, m);
  EXPECT_TRUE(same.remove.empty());
  EXPECT_TRUE(same.set.empty());
  const CgroupChanges gone = plan_cgroup_changes(m, {});
  EXPECT_EQ(gone.remove, std::vector<std::uint64_t>({1, 2}));
  EXPECT_EQ(plan_cgroup_changes({}, m).set.size(), 2u);
}

// ---- changed_tunnels, tunnel_summary: what ksd logs and tells its manager ----

TunnelStatus tunnel(const std::string& name, TunnelState state, std::uint32_t ifindex = 0,
                    bool v4 = false, bool v6 = false) {
  TunnelStatus t;
  t.name = name;
  t.state = state;
  t.ifindex = ifindex;
  t.ipv4 = v4;
  t.ipv6 = v6;
  return t;
}

TEST(ChangedTunnels, ReportsNewAndChangedTunnelsOnly) {
  const std::map<std::string, std::vector<TunnelStatus>> before = {
      {"default", {tunnel("wg0", TunnelState::kUp, 3, true), tunnel("wg1", TunnelState::kDown, 4)}},
      {"work", {tunnel("tun0", TunnelState::kMissing)}}};
  auto after = before;
  after["default"][0].ifindex = 9;                           // re-created
  after["work"][0] = tunnel("tun0", TunnelState::kMissing);  // unchanged
  after["new"] = {tunnel("wg2", TunnelState::kUp, 5, false, true)};
  const auto changed = changed_tunnels(before, after);
  ASSERT_EQ(changed.size(), 2u);
  EXPECT_EQ(changed[0].first, "default");
  EXPECT_EQ(changed[0].second.ifindex, 9u);
  EXPECT_EQ(changed[1].first, "new");
  EXPECT_TRUE(changed_tunnels(after, after).empty());
  // Families count as a change (a tunnel that gains IPv6 now carries it).
  auto v6 = after;
  v6["default"][0].ipv6 = true;
  EXPECT_EQ(changed_tunnels(after, v6).size(), 1u);
}

TEST(TunnelSummary, OneWordPerTunnel) {
  EXPECT_EQ(tunnel_summary(
                {{"default",
                  {tunnel("wg0", TunnelState::kUp, 3, true), tunnel("wg1", TunnelState::kDown)}},
                 {"work", {tunnel("tun0", TunnelState::kMissing)}}}),
            "default:wg0=up default:wg1=down work:tun0=missing");
  EXPECT_EQ(tunnel_summary({}), "");
}

}  // namespace
}  // namespace ks
