// PolicyRouting against the real kernel, each test in its own throw-away network
// namespace (rules, tables and interfaces all vanish with it, even when an assertion
// fails). What ksd writes is checked twice: with `ip rule` / `ip route` as an operator
// would see it, and with real marked sockets that must be steered by it.
//
// Observed on Linux 6.18 (and asserted below):
//  * `ip rule` (and `ip -6 rule`) print our rules as
//      "89:\tfrom all to 192.168.1.0/24 fwmark 0x4b530001/0xffff003f lookup main proto 75"
//      "90:\tfrom all fwmark 0x4b530001/0xffff003f lookup 1263730689 proto 75"
//      "91:\tfrom all fwmark 0x4b530001/0xffff003f unreachable proto 75"
//    A fresh namespace has 3 IPv4 rules (local, main, default) and 2 IPv6 ones.
//  * The table holds "default dev tun0 proto 75 scope link metric 1" (IPv4) and
//    "default dev tun0 proto 75 metric 1 pref medium" (IPv6).
//  * When the tunnel device is deleted, or only set down, the kernel deletes its routes
//    by itself (both families) and does not restore them when the link comes back up.
//  * A marked socket whose table has no route reaches the unreachable rule: connect()
//    and sendto() fail with ENETUNREACH, for IPv4 and IPv6 alike. (An unreachable
//    *route* would answer EHOSTUNREACH; that was the old design.)
#include "killswitch/routing.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "killswitch/config.hpp"
#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"
#include "killswitch_abi.h"
#include "netns_fixture.hpp"

namespace ks {

// So that failing comparisons of route and rule lists print something readable.
static void PrintTo(const RouteSpec& r, std::ostream* os) { *os << r.describe(); }
static void PrintTo(const RuleSpec& r, std::ostream* os) { *os << r.describe(); }

namespace {

constexpr std::uint32_t kProfile = 1;
constexpr std::uint32_t kTable = 1263730689u;  // KS_MARK_BASE | 1, as `ip` prints it
constexpr std::uint32_t kMark = KS_MARK_BASE | kProfile;

static_assert(kMark == 0x4b530001u);
static_assert(kTable == kMark);

// `ip rule` lines of profile 1 (see the top comment).
const std::string kTableRuleLine =
    "90:\tfrom all fwmark 0x4b530001/0xffff003f lookup 1263730689 proto 75";
const std::string kUnreachableRuleLine =
    "91:\tfrom all fwmark 0x4b530001/0xffff003f unreachable proto 75";
std::string LanRuleLine(const std::string& cidr) {
  return "89:\tfrom all to " + cidr + " fwmark 0x4b530001/0xffff003f lookup main proto 75";
}

// `ip route show table 1263730689` lines of a tunnel route.
const std::string kV4TunnelRoute = "default dev tun0 proto 75 scope link metric 1";
const std::string kV6TunnelRoute = "default dev tun0 proto 75 metric 1 pref medium";

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Sorted union of line sets.
std::vector<std::string> Plus(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  std::sort(a.begin(), a.end());
  return a;
}

std::vector<RouteSpec> Sorted(std::vector<RouteSpec> routes) {
  auto key = [](const RouteSpec& r) { return std::tie(r.family, r.oif, r.metric); };
  std::sort(routes.begin(), routes.end(),
            [&](const RouteSpec& a, const RouteSpec& b) { return key(a) < key(b); });
  return routes;
}

std::vector<RuleSpec> Sorted(std::vector<RuleSpec> rules) {
  auto key = [](const RuleSpec& r) {
    return std::tie(r.family, r.priority, r.mark, r.action, r.table, r.dst, r.dst_len);
  };
  std::sort(rules.begin(), rules.end(),
            [&](const RuleSpec& a, const RuleSpec& b) { return key(a) < key(b); });
  return rules;
}

// What sync_table writes for a tunnel carrying both families.
std::vector<RouteSpec> BothVia(std::uint32_t oif) {
  RouteSpec v4;
  v4.family = AF_INET;
  v4.oif = oif;
  RouteSpec v6 = v4;
  v6.family = AF_INET6;
  return Sorted({v4, v6});
}

std::vector<RuleSpec> Concat(std::vector<RuleSpec> a, const std::vector<RuleSpec>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

ks_profile Entry(std::uint32_t v4, std::uint32_t v6, bool valid = true) {
  ks_profile p{};
  p.flags = valid ? KS_PROFILE_VALID : 0;
  p.bind_ifindex_v4 = v4;
  p.bind_ifindex_v6 = v6;
  return p;
}

Profile ProfileWithLan(const std::vector<std::string>& cidrs) {
  Profile p;
  p.name = "default";
  p.tunnels = {"tun0"};
  for (const auto& text : cidrs) {
    auto c = parse_cidr(text);
    if (!c) {
      ADD_FAILURE() << "bad test CIDR " << text;
      continue;
    }
    p.allow_lan.push_back(*c);
  }
  return p;
}

// Rule and route notifications of the kernel (RTNLGRP_IPV{4,6}_{RULE,ROUTE}): prove that
// a sync changed nothing, rather than changed it to the same thing, and in which order
// it changed what it did change. Routes are reported for our tables only (numbers in the
// KS_MARK_BASE range), rules all.
class Changes {
 public:
  Changes() : sock_(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE)) {
    if (!sock_) throw_errno("netlink socket");
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    if (::bind(sock_.get(), reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0)
      throw_errno("bind netlink socket");
    for (unsigned group :
         {RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, RTNLGRP_IPV4_RULE, RTNLGRP_IPV6_RULE}) {
      if (::setsockopt(sock_.get(), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) !=
          0)
        throw_errno("join netlink group " + std::to_string(group));
    }
  }

  // Notifications received so far, in order ("new rule <describe()>", "del route ..."),
  // waiting a little for stragglers. The kernel queues them before it acknowledges a
  // request, so everything caused by a finished sync is already there.
  std::vector<std::string> Take() {
    std::vector<std::string> seen;
    std::vector<char> buf(65536);
    for (;;) {
      pollfd p{sock_.get(), POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) break;
      const ssize_t n = ::recv(sock_.get(), buf.data(), buf.size(), 0);
      if (n <= 0) break;
      int len = static_cast<int>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, len);
           h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type == RTM_NEWRULE || h->nlmsg_type == RTM_DELRULE)
          seen.push_back(std::string(h->nlmsg_type == RTM_NEWRULE ? "new" : "del") + " rule " +
                         Rule(h).describe());
        if (h->nlmsg_type == RTM_NEWROUTE || h->nlmsg_type == RTM_DELROUTE) {
          const std::string route = Route(h);
          if (!route.empty())
            seen.push_back(std::string(h->nlmsg_type == RTM_NEWROUTE ? "new" : "del") + " route " +
                           route);
        }
      }
    }
    return seen;
  }

 private:
  // The production parser: what ksd reads back is what the test reads.
  static RuleSpec Rule(nlmsghdr* h) {
    auto parsed = parse_rule_message(h, h->nlmsg_len);
    return parsed ? parsed->rule : RuleSpec{};
  }

  // "<family> /<dst_len> dev ifindex <oif> metric <m> table <t>", or "" for other tables.
  static std::string Route(nlmsghdr* h) {
    auto* rt = static_cast<rtmsg*>(NLMSG_DATA(h));
    std::uint32_t table = rt->rtm_table;
    std::uint32_t oif = 0;
    std::uint32_t metric = 0;
    int len = static_cast<int>(RTM_PAYLOAD(h));
    for (auto* a = RTM_RTA(rt); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
      if (a->rta_type == RTA_TABLE) std::memcpy(&table, RTA_DATA(a), 4);
      if (a->rta_type == RTA_OIF) std::memcpy(&oif, RTA_DATA(a), 4);
      if (a->rta_type == RTA_PRIORITY) std::memcpy(&metric, RTA_DATA(a), 4);
    }
    if ((table & 0xffff0000u) != KS_MARK_BASE) return "";
    return std::string(rt->rtm_family == AF_INET ? "IPv4" : "IPv6") + " /" +
           std::to_string(rt->rtm_dst_len) + " dev ifindex " + std::to_string(oif) + " metric " +
           std::to_string(metric) + " table " + std::to_string(table);
  }

  UniqueFd sock_;
};

// Index of the first element of `events` starting with `prefix`, or events.size().
std::size_t First(const std::vector<std::string>& events, const std::string& prefix) {
  for (std::size_t i = 0; i < events.size(); ++i)
    if (events[i].rfind(prefix, 0) == 0) return i;
  return events.size();
}
std::size_t Last(const std::vector<std::string>& events, const std::string& prefix) {
  std::size_t last = events.size();
  for (std::size_t i = 0; i < events.size(); ++i)
    if (events[i].rfind(prefix, 0) == 0) last = i;
  return last;
}

// A connected UDP socket's source address, or the errno of connect().
struct Steering {
  int error = 0;
  std::string source;
};

Steering ConnectUdp(int family, const char* dst, std::optional<std::uint32_t> mark) {
  Steering s;
  UniqueFd fd(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    ADD_FAILURE() << "socket: " << std::strerror(errno);
    s.error = -1;
    return s;
  }
  if (mark && ::setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &*mark, sizeof(*mark)) != 0) {
    ADD_FAILURE() << "SO_MARK: " << std::strerror(errno);
    s.error = -1;
    return s;
  }
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(53);
    inet_pton(AF_INET, dst, &sin->sin_addr);
    len = sizeof(*sin);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(53);
    inet_pton(AF_INET6, dst, &sin6->sin6_addr);
    len = sizeof(*sin6);
  }
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    s.error = errno;
    // An unconnected send must be refused the same way.
    UniqueFd other(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (mark) ::setsockopt(other.get(), SOL_SOCKET, SO_MARK, &*mark, sizeof(*mark));
    const char byte = 0;
    if (::sendto(other.get(), &byte, 1, 0, reinterpret_cast<sockaddr*>(&ss), len) >= 0)
      ADD_FAILURE() << "connect() to " << dst << " failed but sendto() succeeded";
    else if (errno != s.error)
      ADD_FAILURE() << "sendto() to " << dst << " failed with " << std::strerror(errno)
                    << ", connect() with " << std::strerror(s.error);
    return s;
  }
  sockaddr_storage local{};
  socklen_t local_len = sizeof(local);
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &local_len) != 0) {
    ADD_FAILURE() << "getsockname: " << std::strerror(errno);
    s.error = -1;
    return s;
  }
  char text[INET6_ADDRSTRLEN] = "";
  if (family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&local)->sin_addr, text, sizeof(text));
  else
    inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr, text, sizeof(text));
  s.source = text;
  return s;
}

::testing::AssertionResult RoutedFrom(const Steering& s, const std::string& source) {
  if (s.error != 0)
    return ::testing::AssertionFailure()
           << "connect failed: " << (s.error > 0 ? std::strerror(s.error) : "setup error");
  if (s.source != source)
    return ::testing::AssertionFailure() << "source " << s.source << ", want " << source;
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult Refused(const Steering& s, int want_errno) {
  if (s.error == want_errno) return ::testing::AssertionSuccess();
  if (s.error == 0) return ::testing::AssertionFailure() << "connected, with source " << s.source;
  return ::testing::AssertionFailure()
         << "errno " << s.error << " (" << (s.error > 0 ? std::strerror(s.error) : "setup error")
         << "), want " << std::strerror(want_errno);
}

class RoutingTest : public test::NetnsTest {
 protected:
  void SetUp() override {
    test::NetnsTest::SetUp();
    if (HasFatalFailure()) return;
    try {
      routing_.emplace();  // its netlink socket belongs to the test namespace
    } catch (const std::exception& e) {
      FAIL() << "PolicyRouting: " << e.what();
    }
    v4_rules_before_ = Rules("-4");
    v6_rules_before_ = Rules("-6");
    ASSERT_EQ(v4_rules_before_.size(), 3u) << "a fresh namespace has local, main and default";
    ASSERT_EQ(v6_rules_before_.size(), 2u) << "a fresh namespace has local and main";
  }

  void TearDown() override {
    routing_.reset();
    test::NetnsTest::TearDown();
  }

  // A veth pair as stand-in for a tunnel (or a LAN link), both ends up, with addresses.
  std::uint32_t AddLink(const std::string& name, const std::string& v4, const std::string& v6) {
    const std::string peer = name + "p";
    EXPECT_TRUE(Run("ip link add " + name + " type veth peer name " + peer));
    EXPECT_TRUE(Run("ip addr add " + v4 + " dev " + name));
    EXPECT_TRUE(Run("ip -6 addr add " + v6 + " dev " + name + " nodad"));
    EXPECT_TRUE(Run("ip link set " + peer + " up"));
    EXPECT_TRUE(Run("ip link set " + name + " up"));
    return Ifindex(name);
  }

  // The ifindex as `ip -o link` reports it ("3: tun0@tun0p: <...> ...").
  std::uint32_t Ifindex(const std::string& name) {
    const auto out = Output("ip -o link show dev " + name);
    if (!out) return 0;
    const std::uint32_t index = static_cast<std::uint32_t>(std::stoul(*out));
    EXPECT_NE(out->find(": " + name + "@"), std::string::npos) << *out;
    return index;
  }

  std::uint32_t AddTunnel() { return AddLink("tun0", "10.200.0.2/24", "2001:db8:200::2/64"); }

  std::vector<std::string> Rules(const char* family) {
    return Lines(Output(std::string("ip ") + family + " rule").value_or("<ip rule failed>"));
  }
  std::vector<std::string> Table(const char* family, std::uint32_t table = kTable) {
    return Lines(Output(std::string("ip ") + family + " route show table " + std::to_string(table))
                     .value_or("<ip route failed>"));
  }

  // Syncs the rules and checks that our_rules() then reports exactly `want`.
  void SyncRules(const std::vector<RuleSpec>& want) {
    ASSERT_NO_THROW(routing_->sync_rules(want));
    std::vector<RuleSpec> have;
    ASSERT_NO_THROW(have = routing_->our_rules());
    EXPECT_EQ(Sorted(have), Sorted(want)) << "our_rules must round-trip what sync wrote";
  }

  // Syncs the table and checks that what the kernel then holds is exactly the plan.
  void SyncTable(const std::vector<RouteSpec>& plan, std::uint32_t table = kTable) {
    ASSERT_NO_THROW(routing_->sync_table(table, plan));
    std::vector<RouteSpec> have;
    ASSERT_NO_THROW(have = routing_->routes_in_table(table));
    EXPECT_EQ(Sorted(have), Sorted(plan)) << "routes_in_table must round-trip what sync wrote";
  }

  std::vector<RuleSpec> OurRules() {
    std::vector<RuleSpec> have;
    EXPECT_NO_THROW(have = routing_->our_rules());
    return Sorted(have);
  }
  std::vector<RouteSpec> RoutesIn(std::uint32_t table = kTable) {
    std::vector<RouteSpec> have;
    EXPECT_NO_THROW(have = routing_->routes_in_table(table));
    return Sorted(have);
  }

  std::optional<PolicyRouting> routing_;
  std::vector<std::string> v4_rules_before_;
  std::vector<std::string> v6_rules_before_;
};

TEST_F(RoutingTest, TableNumberIsTheMark) {
  EXPECT_EQ(table_for_profile(kProfile), kTable);
  EXPECT_EQ(table_for_profile(kProfile), kMark);
  EXPECT_EQ(kLanRulePriority, 89u);
  EXPECT_EQ(kTableRulePriority, 90u);
  EXPECT_EQ(kUnreachableRulePriority, 91u);
  EXPECT_EQ(kRouteProtocol, 75) << "`ip route` shows our routes as proto 75";
}

// ---------------------------------------------------------------------------------------
// Rules

TEST_F(RoutingTest, SyncRulesCreatesExactlyThePlan) {
  const Profile lan = ProfileWithLan({"192.168.1.0/24", "10.0.0.0/8", "fd00::/8"});
  const auto plan = plan_rules(kProfile, &lan);
  EXPECT_EQ(OurRules(), std::vector<RuleSpec>{}) << "a fresh namespace has none of ours";

  ASSERT_NO_FATAL_FAILURE(SyncRules(plan));
  EXPECT_EQ(Rules("-4"),
            Plus(v4_rules_before_, {LanRuleLine("192.168.1.0/24"), LanRuleLine("10.0.0.0/8"),
                                    kTableRuleLine, kUnreachableRuleLine}));
  EXPECT_EQ(Rules("-6"), Plus(v6_rules_before_,
                              {LanRuleLine("fd00::/8"), kTableRuleLine, kUnreachableRuleLine}));
}

TEST_F(RoutingTest, SyncRulesOfSeveralProfiles) {
  const Profile lan = ProfileWithLan({"192.168.1.0/24"});
  const auto plan = Concat(Concat(plan_rules(KS_PROFILE_NONE, nullptr), plan_rules(1, &lan)),
                           plan_rules(KS_MAX_PROFILES - 1, nullptr));
  ASSERT_NO_FATAL_FAILURE(SyncRules(plan));
  const std::vector<std::string> none = {
      "90:\tfrom all fwmark 0x4b530000/0xffff003f lookup 1263730688 proto 75",
      "91:\tfrom all fwmark 0x4b530000/0xffff003f unreachable proto 75"};
  const std::vector<std::string> last = {
      "90:\tfrom all fwmark 0x4b53003f/0xffff003f lookup 1263730751 proto 75",
      "91:\tfrom all fwmark 0x4b53003f/0xffff003f unreachable proto 75"};
  const std::vector<std::string> one = {kTableRuleLine, kUnreachableRuleLine};
  EXPECT_EQ(Rules("-4"), Plus(Plus(Plus(v4_rules_before_, none), Plus(one, last)),
                              {LanRuleLine("192.168.1.0/24")}));
  EXPECT_EQ(Rules("-6"), Plus(Plus(v6_rules_before_, none), Plus(one, last)));
}

TEST_F(RoutingTest, SecondSyncChangesNothing) {
  const Profile lan = ProfileWithLan({"192.168.1.0/24", "10.0.0.0/8", "fd00::/8"});
  const auto plan = Concat(plan_rules(kProfile, &lan), plan_rules(2, nullptr));
  ASSERT_NO_FATAL_FAILURE(SyncRules(plan));
  const auto v4 = Rules("-4");
  const auto v6 = Rules("-6");

  std::optional<Changes> changes;
  ASSERT_NO_THROW(changes.emplace());
  ASSERT_NO_FATAL_FAILURE(SyncRules(plan));
  EXPECT_EQ(changes->Take(), std::vector<std::string>{}) << "the second sync changed rules";
  EXPECT_EQ(Rules("-4"), v4);
  EXPECT_EQ(Rules("-6"), v6);

  // The listener does see real changes (otherwise the check above proves nothing).
  const Profile less = ProfileWithLan({"192.168.1.0/24", "fd00::/8"});
  ASSERT_NO_FATAL_FAILURE(SyncRules(Concat(plan_rules(kProfile, &less), plan_rules(2, nullptr))));
  EXPECT_EQ(changes->Take(),
            std::vector<std::string>{"del rule IPv4 pref 89 fwmark 0x4b530001/0xffff003f "
                                     "to 10.0.0.0/8 lookup 254"});
}

TEST_F(RoutingTest, StaleRulesAreDeletedAfterNewOnesAreAdded) {
  const Profile lan = ProfileWithLan({"192.168.1.0/24", "10.0.0.0/8", "fd00::/8"});
  ASSERT_NO_FATAL_FAILURE(SyncRules(Concat(plan_rules(kProfile, &lan), plan_rules(2, nullptr))));

  // One CIDR removed, one replaced, one kept; profile 2 removed.
  const Profile changed = ProfileWithLan({"10.0.0.0/8", "fd01::/16"});
  std::optional<Changes> changes;
  ASSERT_NO_THROW(changes.emplace());
  ASSERT_NO_FATAL_FAILURE(SyncRules(plan_rules(kProfile, &changed)));
  EXPECT_EQ(Rules("-4"), Plus(v4_rules_before_,
                              {LanRuleLine("10.0.0.0/8"), kTableRuleLine, kUnreachableRuleLine}));
  EXPECT_EQ(Rules("-6"), Plus(v6_rules_before_,
                              {LanRuleLine("fd01::/16"), kTableRuleLine, kUnreachableRuleLine}));

  // Exactly the difference changed, and additions came first: there is never less
  // protection (or less LAN) than either configuration gives.
  const auto events = changes->Take();
  std::vector<std::string> sorted = events;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted,
            (std::vector<std::string>{
                "del rule IPv4 pref 89 fwmark 0x4b530001/0xffff003f to 192.168.1.0/24 lookup 254",
                "del rule IPv4 pref 90 fwmark 0x4b530002/0xffff003f lookup 1263730690",
                "del rule IPv4 pref 91 fwmark 0x4b530002/0xffff003f unreachable",
                "del rule IPv6 pref 89 fwmark 0x4b530001/0xffff003f to fd00::/8 lookup 254",
                "del rule IPv6 pref 90 fwmark 0x4b530002/0xffff003f lookup 1263730690",
                "del rule IPv6 pref 91 fwmark 0x4b530002/0xffff003f unreachable",
                "new rule IPv6 pref 89 fwmark 0x4b530001/0xffff003f to fd01::/16 lookup 254",
            }));
  EXPECT_LT(Last(events, "new "), First(events, "del ")) << ::testing::PrintToString(events);

  // The profile loses its configuration (removed profile): only table and unreachable.
  ASSERT_NO_FATAL_FAILURE(SyncRules(plan_rules(kProfile, nullptr)));
  EXPECT_EQ(Rules("-4"), Plus(v4_rules_before_, {kTableRuleLine, kUnreachableRuleLine}));
  EXPECT_EQ(Rules("-6"), Plus(v6_rules_before_, {kTableRuleLine, kUnreachableRuleLine}));

  // Nothing wanted: back to the fresh namespace.
  ASSERT_NO_FATAL_FAILURE(SyncRules({}));
  EXPECT_EQ(Rules("-4"), v4_rules_before_);
  EXPECT_EQ(Rules("-6"), v6_rules_before_);
}

// Rules that are not ours (other marks, a mask, other priorities) are neither reported
// nor touched, not even by remove_all.
TEST_F(RoutingTest, ForeignRulesAreIgnoredAndUntouched) {
  ASSERT_TRUE(Run("ip rule add pref 100 fwmark 0x12345 lookup 100"));  // unrelated fwmark
  ASSERT_TRUE(Run("ip rule add pref 90 fwmark 0x1 lookup 100"));       // our pref, not our mark
  ASSERT_TRUE(Run("ip rule add pref 95 fwmark 0x4b530001 lookup 1263730689"));       // our mark
  ASSERT_TRUE(Run("ip rule add pref 88 fwmark 0x4b530001 unreachable"));             // just below
  ASSERT_TRUE(Run("ip rule add pref 92 fwmark 0x4b530001 unreachable"));             // just above
  ASSERT_TRUE(Run("ip rule add pref 90 fwmark 0x4b530001/0xffff0000 lookup main"));  // a mask
  ASSERT_TRUE(Run("ip rule add pref 90 lookup 1263730689"));  // our table, no mark
  ASSERT_TRUE(Run("ip -6 rule add pref 95 fwmark 0x4b530001 lookup 1263730689"));
  ASSERT_TRUE(Run("ip -6 rule add pref 90 fwmark 0x12345 lookup 100"));
  const auto foreign_v4 = Rules("-4");
  const auto foreign_v6 = Rules("-6");
  ASSERT_EQ(foreign_v4.size(), v4_rules_before_.size() + 7);
  ASSERT_EQ(foreign_v6.size(), v6_rules_before_.size() + 2);
  EXPECT_EQ(OurRules(), std::vector<RuleSpec>{}) << "foreign rules reported as ours";

  const Profile lan = ProfileWithLan({"192.168.1.0/24", "fd00::/8"});
  ASSERT_NO_FATAL_FAILURE(SyncRules(plan_rules(kProfile, &lan)));
  EXPECT_EQ(Rules("-4"), Plus(foreign_v4, {LanRuleLine("192.168.1.0/24"), kTableRuleLine,
                                           kUnreachableRuleLine}));
  EXPECT_EQ(Rules("-6"),
            Plus(foreign_v6, {LanRuleLine("fd00::/8"), kTableRuleLine, kUnreachableRuleLine}));

  ASSERT_NO_FATAL_FAILURE(SyncRules({}));
  EXPECT_EQ(Rules("-4"), foreign_v4);
  EXPECT_EQ(Rules("-6"), foreign_v6);

  ASSERT_NO_FATAL_FAILURE(SyncRules(plan_rules(kProfile, &lan)));
  ASSERT_NO_THROW(routing_->remove_all());
  EXPECT_EQ(Rules("-4"), foreign_v4);
  EXPECT_EQ(Rules("-6"), foreign_v6);
}

// An older ksd matched exact marks (no app slot bits): its rules are ours, and replaced by
// the masked ones, additions first.
TEST_F(RoutingTest, ExactMarkRulesOfAnOlderKsdAreReplaced) {
  ASSERT_TRUE(Run("ip rule add pref 90 fwmark 0x4b530001 lookup 1263730689 proto 75"));
  ASSERT_TRUE(Run("ip rule add pref 91 fwmark 0x4b530001 unreachable proto 75"));
  const auto old_rules = OurRules();
  ASSERT_EQ(old_rules.size(), 2u);
  EXPECT_EQ(old_rules[0].mark_mask, 0xffffffffu);
  ASSERT_NO_FATAL_FAILURE(SyncRules(plan_rules(kProfile, nullptr)));
  EXPECT_EQ(Rules("-4"), Plus(v4_rules_before_, {kTableRuleLine, kUnreachableRuleLine}));
}

// A rule with our mark, priority and protocol but a selector we never use (iif) is
// someone else's: it is not taken for ours, so ours is still added.
TEST_F(RoutingTest, LookalikeRulesAreNotOurs) {
  ASSERT_TRUE(Run("ip rule add pref 90 fwmark 0x4b530001 iif eth9 lookup 1263730689 proto 75"));
  const auto foreign_v4 = Rules("-4");
  EXPECT_EQ(OurRules(), std::vector<RuleSpec>{}) << "lookalike rules reported as ours";
  ASSERT_NO_FATAL_FAILURE(SyncRules(plan_rules(kProfile, nullptr)));
  EXPECT_EQ(Rules("-4"), Plus(foreign_v4, {kTableRuleLine, kUnreachableRuleLine}));
  // (Deleting ours may take such a lookalike with it: the kernel matches a deleted rule
  // only on the attributes given. Only a rule imitating ours down to the protocol is hit.)
}

// ---------------------------------------------------------------------------------------
// Tables

TEST_F(RoutingTest, TunnelUpThenGone) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);

  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, tun))));
  EXPECT_EQ(Table("-4"), std::vector<std::string>{kV4TunnelRoute});
  EXPECT_EQ(Table("-6"), std::vector<std::string>{kV6TunnelRoute});
  EXPECT_EQ(RoutesIn(), BothVia(tun));

  // The tunnel is gone (ksd writes bind_ifindex 0): the table is empty.
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(0, 0))));
  EXPECT_EQ(Table("-4"), std::vector<std::string>{});
  EXPECT_EQ(Table("-6"), std::vector<std::string>{});

  // IPv4 only, then IPv6 only.
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, 0))));
  EXPECT_EQ(Table("-4"), std::vector<std::string>{kV4TunnelRoute});
  EXPECT_EQ(Table("-6"), std::vector<std::string>{});
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(0, tun))));
  EXPECT_EQ(Table("-4"), std::vector<std::string>{});
  EXPECT_EQ(Table("-6"), std::vector<std::string>{kV6TunnelRoute});

  // An invalid profile keeps nothing.
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, tun))));
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, tun, false))));
  EXPECT_EQ(Table("-4"), std::vector<std::string>{});
  EXPECT_EQ(Table("-6"), std::vector<std::string>{});
}

// Whatever else is in our table (routes of an older version: unreachable, throw, a
// non-default route) is deleted by sync, and cannot pass for the wanted default route.
TEST_F(RoutingTest, SyncDeletesEveryOtherRouteInOurTable) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_TRUE(Run("ip route add unreachable default metric 4294967295 table 1263730689"));
  ASSERT_TRUE(Run("ip route add throw 192.168.1.0/24 metric 1 table 1263730689"));
  ASSERT_TRUE(Run("ip route add 10.0.0.0/8 dev tun0 metric 1 table 1263730689"));
  ASSERT_TRUE(Run("ip -6 route add throw fd00::/8 metric 1 table 1263730689"));
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, tun))));
  EXPECT_EQ(Table("-4"), std::vector<std::string>{kV4TunnelRoute});
  EXPECT_EQ(Table("-6"), std::vector<std::string>{kV6TunnelRoute});
  ASSERT_NO_THROW(routing_->remove_all());
  EXPECT_EQ(Table("-4"), std::vector<std::string>{});
  EXPECT_EQ(Table("-6"), std::vector<std::string>{});
}

TEST_F(RoutingTest, SyncTableIsIdempotent) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);
  const auto plan = plan_routes(Entry(tun, tun));
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan));
  const auto v4 = Table("-4");
  const auto v6 = Table("-6");

  std::optional<Changes> changes;
  ASSERT_NO_THROW(changes.emplace());
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan));
  EXPECT_EQ(changes->Take(), std::vector<std::string>{}) << "the second sync changed routes";
  EXPECT_EQ(Table("-4"), v4);
  EXPECT_EQ(Table("-6"), v6);

  // The listener does see real changes (otherwise the check above proves nothing).
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(0, 0))));
  const std::string oif = " dev ifindex " + std::to_string(tun) + " metric 1 table 1263730689";
  auto events = changes->Take();
  std::sort(events.begin(), events.end());
  EXPECT_EQ(events,
            (std::vector<std::string>{"del route IPv4 /0" + oif, "del route IPv6 /0" + oif}));

  // Syncing an empty table to empty changes nothing either.
  ASSERT_NO_FATAL_FAILURE(SyncTable({}));
  EXPECT_EQ(changes->Take(), std::vector<std::string>{});
}

// A tunnel replaced by another device (or re-created with a new ifindex): the route
// moves, nothing of the old one is left.
TEST_F(RoutingTest, TunnelReplaced) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, tun))));

  const std::uint32_t other = AddLink("tun1", "10.201.0.2/24", "2001:db8:201::2/64");
  ASSERT_GT(other, tun);
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(other, other))));
  EXPECT_EQ(Table("-4"), std::vector<std::string>{"default dev tun1 proto 75 scope link metric 1"});
  EXPECT_EQ(Table("-6"),
            std::vector<std::string>{"default dev tun1 proto 75 metric 1 pref medium"});

  // Split across the two: IPv4 back to tun0, IPv6 stays on tun1.
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, other))));
  EXPECT_EQ(Table("-4"), std::vector<std::string>{kV4TunnelRoute});
  EXPECT_EQ(Table("-6"),
            std::vector<std::string>{"default dev tun1 proto 75 metric 1 pref medium"});

  // tun0 re-created: a new ifindex, the same name.
  ASSERT_TRUE(Run("ip link del tun0"));
  const std::uint32_t again = AddTunnel();
  ASSERT_GT(again, other);
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(again, again))));
  EXPECT_EQ(Table("-4"), std::vector<std::string>{kV4TunnelRoute});
  EXPECT_EQ(Table("-6"), std::vector<std::string>{kV6TunnelRoute});
  EXPECT_EQ(RoutesIn(), BothVia(again));
}

// Routes of other tables (main, a foreign one) are neither reported nor touched; another
// profile's table only by remove_all.
TEST_F(RoutingTest, OtherTablesUntouched) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);
  ASSERT_TRUE(Run("ip route add 203.0.113.0/24 dev tun0 metric 1"));
  ASSERT_TRUE(Run("ip route add default dev tun0 metric 1 table 100"));
  ASSERT_TRUE(Run("ip -6 route add default dev tun0 metric 1 table 100"));
  const auto main_v4 = Table("-4", RT_TABLE_MAIN);
  const auto main_v6 = Table("-6", RT_TABLE_MAIN);
  const auto foreign_v4 = Table("-4", 100);
  const auto foreign_v6 = Table("-6", 100);
  ASSERT_EQ(foreign_v4.size(), 1u);
  ASSERT_EQ(foreign_v6.size(), 1u);
  EXPECT_EQ(RoutesIn(), std::vector<RouteSpec>{}) << "routes of other tables reported as ours";

  const std::uint32_t table2 = table_for_profile(2);
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, tun)), table2));
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, tun))));
  ASSERT_NO_FATAL_FAILURE(SyncTable({}));
  EXPECT_EQ(Table("-4", RT_TABLE_MAIN), main_v4);
  EXPECT_EQ(Table("-6", RT_TABLE_MAIN), main_v6);
  EXPECT_EQ(Table("-4", 100), foreign_v4);
  EXPECT_EQ(Table("-6", 100), foreign_v6);
  EXPECT_EQ(RoutesIn(table2), BothVia(tun)) << "syncing profile 1's table touched profile 2's";

  ASSERT_NO_THROW(routing_->remove_all());
  EXPECT_EQ(RoutesIn(table2), std::vector<RouteSpec>{});
  EXPECT_EQ(Table("-4", RT_TABLE_MAIN), main_v4);
  EXPECT_EQ(Table("-6", RT_TABLE_MAIN), main_v6);
  EXPECT_EQ(Table("-4", 100), foreign_v4);
  EXPECT_EQ(Table("-6", 100), foreign_v6);
}

// The kernel removes the tunnel's routes with its device: the table is then exactly what
// ksd would plan for "tunnel gone", even with ksd dead.
TEST_F(RoutingTest, DeletedTunnelEmptiesTheTable) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, tun))));
  ASSERT_TRUE(Run("ip link del tun0"));
  EXPECT_EQ(Table("-4"), std::vector<std::string>{});
  EXPECT_EQ(Table("-6"), std::vector<std::string>{});
  EXPECT_EQ(RoutesIn(), Sorted(plan_routes(Entry(0, 0))));
  // ksd's next sync for "tunnel gone" has nothing to do and does not fail.
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(0, 0))));
}

// The same for a tunnel that only goes down; it coming back up does not restore the
// routes (ksd's next sync does).
TEST_F(RoutingTest, TunnelDownEmptiesTheTable) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, tun))));
  ASSERT_TRUE(Run("ip link set tun0 down"));
  EXPECT_EQ(Table("-4"), std::vector<std::string>{});
  EXPECT_EQ(Table("-6"), std::vector<std::string>{});
  EXPECT_EQ(RoutesIn(), std::vector<RouteSpec>{});
  ASSERT_TRUE(Run("ip link set tun0 up"));
  EXPECT_EQ(RoutesIn(), std::vector<RouteSpec>{});
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, tun))));
  EXPECT_EQ(Table("-4"), std::vector<std::string>{kV4TunnelRoute});
  EXPECT_EQ(Table("-6"), std::vector<std::string>{kV6TunnelRoute});
}

// ---------------------------------------------------------------------------------------
// Teardown

TEST_F(RoutingTest, RemoveAllRemovesEverythingOfOurs) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);
  ASSERT_TRUE(Run("ip rule add pref 100 fwmark 0x12345 lookup 100"));
  ASSERT_TRUE(Run("ip route add default dev tun0 metric 1 table 100"));
  const auto foreign_v4 = Rules("-4");
  const auto foreign_v6 = Rules("-6");
  const auto main_v4 = Table("-4", RT_TABLE_MAIN);
  const auto main_v6 = Table("-6", RT_TABLE_MAIN);

  const Profile lan = ProfileWithLan({"192.168.1.0/24", "fd00::/8"});
  const std::uint32_t last = KS_MAX_PROFILES - 1;
  ASSERT_NO_FATAL_FAILURE(
      SyncRules(Concat(Concat(plan_rules(KS_PROFILE_NONE, nullptr), plan_rules(kProfile, &lan)),
                       plan_rules(last, &lan))));
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, tun))));
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun, 0)), table_for_profile(last)));
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(0, tun)), table_for_profile(0)));

  ASSERT_NO_THROW(routing_->remove_all());
  EXPECT_EQ(OurRules(), std::vector<RuleSpec>{});
  EXPECT_EQ(Rules("-4"), foreign_v4);
  EXPECT_EQ(Rules("-6"), foreign_v6);
  for (std::uint32_t id = 0; id < KS_MAX_PROFILES; ++id) {
    SCOPED_TRACE("profile id " + std::to_string(id));
    EXPECT_EQ(RoutesIn(table_for_profile(id)), std::vector<RouteSpec>{});
  }
  EXPECT_EQ(Table("-4", RT_TABLE_MAIN), main_v4);
  EXPECT_EQ(Table("-6", RT_TABLE_MAIN), main_v6);
  EXPECT_EQ(Table("-4", 100), std::vector<std::string>{"default dev tun0 scope link metric 1"});
  // No route of ours is left anywhere ("proto 75"), in any table.
  for (const char* family : {"-4", "-6"}) {
    const auto all = Output(std::string("ip ") + family + " route show table all proto 75");
    ASSERT_TRUE(all.has_value());
    EXPECT_EQ(Lines(*all), std::vector<std::string>{}) << family;
  }

  // A second teardown changes nothing and does not fail.
  std::optional<Changes> changes;
  ASSERT_NO_THROW(changes.emplace());
  ASSERT_NO_THROW(routing_->remove_all());
  EXPECT_EQ(changes->Take(), std::vector<std::string>{});
}

// ---------------------------------------------------------------------------------------
// Real sockets: the mark selects the profile's rules; unmarked sockets keep the main table.

class SteeringTest : public RoutingTest {
 protected:
  void SetUp() override {
    RoutingTest::SetUp();
    if (HasFatalFailure()) return;
    // "eth0" carries the main table's default routes and the LAN; "tun0" is the tunnel.
    ASSERT_GT(AddLink("eth0", "10.100.0.2/24", "2001:db8:100::2/64"), 1u);
    ASSERT_TRUE(Run("ip route add default via 10.100.0.1 dev eth0"));
    ASSERT_TRUE(Run("ip -6 route add default via 2001:db8:100::1 dev eth0"));
    tun_ = AddTunnel();
    ASSERT_GT(tun_, 1u);
  }

  static constexpr const char* kV4Internet = "203.0.113.10";
  static constexpr const char* kV6Internet = "2001:db8:ffff::10";
  static constexpr const char* kV4Lan = "10.100.0.7";
  static constexpr const char* kV6Lan = "2001:db8:100::7";
  static constexpr const char* kV4Eth = "10.100.0.2";
  static constexpr const char* kV6Eth = "2001:db8:100::2";
  static constexpr const char* kV4Tun = "10.200.0.2";
  static constexpr const char* kV6Tun = "2001:db8:200::2";

  std::uint32_t tun_ = 0;
};

TEST_F(SteeringTest, MarkedSocketsFollowTheTable) {
  const Profile profile = ProfileWithLan({"10.100.0.0/24", "2001:db8:100::/64"});
  ASSERT_NO_FATAL_FAILURE(SyncRules(plan_rules(kProfile, &profile)));

  // Rules but no routes yet (ksd starting, no tunnel): the unreachable rule answers.
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET, kV4Internet, kMark), ENETUNREACH));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET6, kV6Internet, kMark), ENETUNREACH));

  // Tunnel up: marked sockets leave through the tunnel, unmarked ones through eth0.
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun_, tun_))));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Internet, kMark), kV4Tun));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, kV6Internet, kMark), kV6Tun));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Internet, std::nullopt), kV4Eth));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, kV6Internet, std::nullopt), kV6Eth));
  // allow_lan: the pref 89 rule looks the LAN up in main, before the tunnel's rule.
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Lan, kMark), kV4Eth));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, kV6Lan, kMark), kV6Eth));
  // Loopback and our own addresses resolve in the local table (pref 0).
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, "127.0.0.1", kMark), "127.0.0.1"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, "::1", kMark), "::1"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Eth, kMark), kV4Eth));
  // Another profile's mark has no rules here: main table.
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Internet, KS_MARK_BASE | 2), kV4Eth));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, kV6Internet, KS_MARK_BASE | 2), kV6Eth));
  // An app's counter slot in the mark (bits 6-15) does not change the route: the rules
  // match tag and profile only. The highest slot too.
  for (std::uint32_t slot : {1u, 5u, KS_MAX_APP_SLOTS - 1u}) {
    const std::uint32_t slotted = kMark | slot << KS_MARK_SLOT_SHIFT;
    SCOPED_TRACE("mark " + std::to_string(slotted));
    EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Internet, slotted), kV4Tun));
    EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, kV6Internet, slotted), kV6Tun));
    EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Lan, slotted), kV4Eth));
    EXPECT_TRUE(RoutedFrom(
        ConnectUdp(AF_INET, kV4Internet, (KS_MARK_BASE | 2) | slot << KS_MARK_SLOT_SHIFT), kV4Eth));
  }

  // Tunnel gone: marked sockets fail at once with ENETUNREACH, the LAN and loopback
  // still work, unmarked sockets are unaffected.
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(0, 0))));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET, kV4Internet, kMark), ENETUNREACH));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET6, kV6Internet, kMark), ENETUNREACH));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Lan, kMark), kV4Eth));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, kV6Lan, kMark), kV6Eth));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, "127.0.0.1", kMark), "127.0.0.1"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, "::1", kMark), "::1"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Internet, std::nullopt), kV4Eth));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, kV6Internet, std::nullopt), kV6Eth));

  // One family only: the other fails closed.
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun_, 0))));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Internet, kMark), kV4Tun));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET6, kV6Internet, kMark), ENETUNREACH));

  // Tunnel back: steering resumes.
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun_, tun_))));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Internet, kMark), kV4Tun));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, kV6Internet, kMark), kV6Tun));

  // Tunnel device deleted behind ksd's back: the kernel drops its routes and marked
  // sockets fail closed instead of falling back to eth0; the LAN still works.
  ASSERT_TRUE(Run("ip link del tun0"));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET, kV4Internet, kMark), ENETUNREACH));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET6, kV6Internet, kMark), ENETUNREACH));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Lan, kMark), kV4Eth));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, kV6Lan, kMark), kV6Eth));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Internet, std::nullopt), kV4Eth));

  // After teardown, marks mean nothing to routing.
  ASSERT_NO_THROW(routing_->remove_all());
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Internet, kMark), kV4Eth));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, kV6Internet, kMark), kV6Eth));
}

// A tunnel that only goes down fails closed just the same (ksd dead or not).
TEST_F(SteeringTest, TunnelDownFailsClosed) {
  ASSERT_NO_FATAL_FAILURE(SyncRules(plan_rules(kProfile, nullptr)));
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun_, tun_))));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Internet, kMark), kV4Tun));
  ASSERT_TRUE(Run("ip link set tun0 down"));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET, kV4Internet, kMark), ENETUNREACH));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET6, kV6Internet, kMark), ENETUNREACH));
  ASSERT_TRUE(Run("ip link set tun0 up"));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET, kV4Internet, kMark), ENETUNREACH))
      << "the kernel restored the route by itself";
}

// Without allow_lan the LAN is not reachable for marked sockets while the tunnel is
// down; with the tunnel up it goes through the tunnel like everything else.
TEST_F(SteeringTest, NoAllowLanMeansNoLan) {
  ASSERT_NO_FATAL_FAILURE(SyncRules(plan_rules(kProfile, nullptr)));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET, kV4Lan, kMark), ENETUNREACH));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET6, kV6Lan, kMark), ENETUNREACH));
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun_, tun_))));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Lan, kMark), kV4Tun));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, kV6Lan, kMark), kV6Tun));
  // Loopback is unaffected either way.
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, "127.0.0.1", kMark), "127.0.0.1"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, "::1", kMark), "::1"));
}

// TunnelVision: a more specific route in the main table (as a hostile DHCP server would
// push) never reaches marked sockets outside allow_lan.
TEST_F(SteeringTest, HostileMainRoutesAreNotReached) {
  ASSERT_TRUE(Run("ip route add 203.0.113.0/24 via 10.100.0.1 dev eth0"));
  ASSERT_TRUE(Run("ip -6 route add 2001:db8:ffff::/48 via 2001:db8:100::1 dev eth0"));
  const Profile profile = ProfileWithLan({"10.100.0.0/24", "2001:db8:100::/64"});
  ASSERT_NO_FATAL_FAILURE(SyncRules(plan_rules(kProfile, &profile)));
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun_, tun_))));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Internet, kMark), kV4Tun));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, kV6Internet, kMark), kV6Tun));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Internet, std::nullopt), kV4Eth));
  ASSERT_NO_FATAL_FAILURE(SyncTable({}));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET, kV4Internet, kMark), ENETUNREACH));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET6, kV6Internet, kMark), ENETUNREACH));
}

// KS_PROFILE_NONE (mark KS_MARK_BASE, no profile, never a tunnel): always unreachable,
// loopback excepted; profile 1's tunnel is not borrowed.
TEST_F(SteeringTest, ProfileNoneFailsClosed) {
  ASSERT_NO_FATAL_FAILURE(
      SyncRules(Concat(plan_rules(KS_PROFILE_NONE, nullptr), plan_rules(kProfile, nullptr))));
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(Entry(tun_, tun_))));
  ASSERT_NO_FATAL_FAILURE(SyncTable(plan_routes(ks_profile{}), table_for_profile(0)));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET, kV4Internet, KS_MARK_BASE), ENETUNREACH));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET6, kV6Internet, KS_MARK_BASE), ENETUNREACH));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET, kV4Lan, KS_MARK_BASE), ENETUNREACH));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, "127.0.0.1", KS_MARK_BASE), "127.0.0.1"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, "::1", KS_MARK_BASE), "::1"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, kV4Internet, kMark), kV4Tun));
}

}  // namespace
}  // namespace ks
