// PolicyRouting against the real kernel, each test in its own throw-away network
// namespace (rules, tables and interfaces all vanish with it, even when an assertion
// fails). What ksd writes is checked twice: with `ip rule` / `ip route` as an operator
// would see it, and with real marked sockets that must be steered by it.
//
// Observed on Linux 6.18 (and asserted below):
//  * `ip rule` prints our rule as "90:\tfrom all fwmark 0x4b530001 lookup 1263730689"
//    (the preference is the leading "90:"); `ip -6 rule` the same.
//  * IPv6 shows the unreachable and throw routes "dev lo", IPv4 without a device.
//  * When the tunnel device is deleted the kernel deletes "default dev <tunnel>" by
//    itself; the unreachable route stays, so marked sockets keep failing closed.
//  * A marked socket that meets the unreachable route fails in connect() and in
//    sendto() with EHOSTUNREACH, for IPv4 and IPv6 alike (the kernel's error for
//    RTN_UNREACHABLE). ENETUNREACH, which the ABI documents for "no tunnel", comes from
//    the BPF connect/sendmsg hooks, not from this table.
#include "killswitch/routing.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
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

// So that failing comparisons of route lists print something readable.
static void PrintTo(const RouteSpec& r, std::ostream* os) { *os << r.describe(); }

namespace {

constexpr std::uint32_t kProfile = 1;
constexpr std::uint32_t kTable = 1263730689u;  // KS_MARK_BASE | 1, as `ip` prints it
constexpr std::uint32_t kMark = KS_MARK_BASE | kProfile;

static_assert(kMark == 0x4b530001u);

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

std::vector<RouteSpec> Sorted(std::vector<RouteSpec> routes) {
  auto key = [](const RouteSpec& r) {
    return std::tie(r.family, r.type, r.dst, r.dst_len, r.oif, r.metric);
  };
  std::sort(routes.begin(), routes.end(),
            [&](const RouteSpec& a, const RouteSpec& b) { return key(a) < key(b); });
  return routes;
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

// Route notifications of the kernel (RTNLGRP_IPV4_ROUTE and RTNLGRP_IPV6_ROUTE) for one
// table: proves that a sync changed nothing, rather than changed it to the same thing.
class RouteEvents {
 public:
  explicit RouteEvents(std::uint32_t table)
      : table_(table),
        sock_(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE)) {
    if (!sock_) throw_errno("netlink socket");
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    local.nl_groups = RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
    if (::bind(sock_.get(), reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0)
      throw_errno("bind netlink route groups");
  }

  // Notifications about our table received so far ("new"/"del" per route), waiting a
  // little for stragglers. The kernel queues them before it acknowledges a request, so
  // everything caused by a finished sync is already there.
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
        if (h->nlmsg_type != RTM_NEWROUTE && h->nlmsg_type != RTM_DELROUTE) continue;
        auto* rt = static_cast<rtmsg*>(NLMSG_DATA(h));
        std::uint32_t table = rt->rtm_table;
        int alen = static_cast<int>(RTM_PAYLOAD(h));
        for (auto* a = RTM_RTA(rt); RTA_OK(a, alen); a = RTA_NEXT(a, alen))
          if (a->rta_type == RTA_TABLE) std::memcpy(&table, RTA_DATA(a), sizeof(table));
        if (table != table_) continue;
        seen.push_back(std::string(h->nlmsg_type == RTM_NEWROUTE ? "new" : "del") + " family " +
                       std::to_string(rt->rtm_family) + " type " + std::to_string(rt->rtm_type) +
                       " /" + std::to_string(rt->rtm_dst_len));
      }
    }
    return seen;
  }

 private:
  std::uint32_t table_;
  UniqueFd sock_;
};

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
  std::vector<std::string> Table(const char* family) {
    return Lines(Output(std::string("ip ") + family + " route show table " + std::to_string(kTable))
                     .value_or("<ip route failed>"));
  }

  // Syncs and checks that what the kernel then holds is exactly the plan.
  void SyncAndCheck(const std::vector<RouteSpec>& plan) {
    ASSERT_NO_THROW(routing_->sync_table(kTable, plan));
    std::vector<RouteSpec> have;
    ASSERT_NO_THROW(have = routing_->routes_in_table(kTable));
    EXPECT_EQ(Sorted(have), Sorted(plan)) << "routes_in_table must round-trip what sync wrote";
  }

  std::optional<PolicyRouting> routing_;
};

const std::vector<std::string> kV4Unreachable = {"unreachable default proto 75 metric 4294967295"};
const std::vector<std::string> kV6Unreachable = {
    "unreachable default dev lo proto 75 metric 4294967295 pref medium"};

TEST_F(RoutingTest, TableNumberIsTheMark) {
  EXPECT_EQ(table_for_profile(kProfile), kTable);
  EXPECT_EQ(table_for_profile(kProfile), kMark);
  EXPECT_EQ(kRulePriority, 90u);
}

TEST_F(RoutingTest, EnsureRulesAddsOneRulePerFamilyIdempotently) {
  const auto v4_before = Rules("-4");
  const auto v6_before = Rules("-6");
  ASSERT_EQ(v4_before.size(), 3u) << "a fresh namespace has local, main and default";

  ASSERT_NO_THROW(routing_->ensure_rules(kProfile));
  const std::string rule = "90:\tfrom all fwmark 0x4b530001 lookup 1263730689";
  auto v4 = Rules("-4");
  auto v6 = Rules("-6");
  EXPECT_EQ(std::count(v4.begin(), v4.end(), rule), 1) << ::testing::PrintToString(v4);
  EXPECT_EQ(std::count(v6.begin(), v6.end(), rule), 1) << ::testing::PrintToString(v6);
  EXPECT_EQ(v4.size(), v4_before.size() + 1);
  EXPECT_EQ(v6.size(), v6_before.size() + 1);

  ASSERT_NO_THROW(routing_->ensure_rules(kProfile));
  EXPECT_EQ(Rules("-4"), v4) << "a second ensure_rules must not add a duplicate";
  EXPECT_EQ(Rules("-6"), v6);

  // Another profile gets its own mark and table, and leaves the first alone.
  ASSERT_NO_THROW(routing_->ensure_rules(2));
  const std::string rule2 = "90:\tfrom all fwmark 0x4b530002 lookup 1263730690";
  auto v4_two = Rules("-4");
  EXPECT_EQ(std::count(v4_two.begin(), v4_two.end(), rule), 1);
  EXPECT_EQ(std::count(v4_two.begin(), v4_two.end(), rule2), 1);

  ASSERT_NO_THROW(routing_->remove_rules(kProfile));
  v4 = Rules("-4");
  v6 = Rules("-6");
  EXPECT_EQ(std::count(v4.begin(), v4.end(), rule), 0) << ::testing::PrintToString(v4);
  EXPECT_EQ(std::count(v6.begin(), v6.end(), rule), 0) << ::testing::PrintToString(v6);
  EXPECT_EQ(std::count(v4.begin(), v4.end(), rule2), 1) << "profile 2's rule was removed too";

  ASSERT_NO_THROW(routing_->remove_rules(kProfile)) << "removing absent rules is not an error";
  ASSERT_NO_THROW(routing_->remove_rules(2));
  EXPECT_EQ(Rules("-4"), v4_before);
  EXPECT_EQ(Rules("-6"), v6_before);
}

TEST_F(RoutingTest, TunnelUpThenGone) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);

  const auto up = plan_routes(Entry(tun, tun), nullptr);
  ASSERT_NO_FATAL_FAILURE(SyncAndCheck(up));
  EXPECT_EQ(Table("-4"),
            Lines("default dev tun0 proto 75 scope link metric 1\n" + kV4Unreachable[0]));
  EXPECT_EQ(Table("-6"),
            Lines("default dev tun0 proto 75 metric 1 pref medium\n" + kV6Unreachable[0]));

  // The tunnel is gone (ksd writes bind_ifindex 0): only the unreachable routes remain.
  ASSERT_NO_FATAL_FAILURE(SyncAndCheck(plan_routes(Entry(0, 0), nullptr)));
  EXPECT_EQ(Table("-4"), kV4Unreachable);
  EXPECT_EQ(Table("-6"), kV6Unreachable);

  // IPv4 only.
  ASSERT_NO_FATAL_FAILURE(SyncAndCheck(plan_routes(Entry(tun, 0), nullptr)));
  EXPECT_EQ(Table("-4"),
            Lines("default dev tun0 proto 75 scope link metric 1\n" + kV4Unreachable[0]));
  EXPECT_EQ(Table("-6"), kV6Unreachable);

  // An invalid profile keeps nothing but the unreachable routes.
  ASSERT_NO_FATAL_FAILURE(SyncAndCheck(plan_routes(Entry(tun, tun, false), nullptr)));
  EXPECT_EQ(Table("-4"), kV4Unreachable);
  EXPECT_EQ(Table("-6"), kV6Unreachable);
}

TEST_F(RoutingTest, AllowLanBecomesThrowRoutes) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);
  Profile profile = ProfileWithLan({"192.168.1.0/24", "10.0.0.0/8", "fd00::/8"});

  ASSERT_NO_FATAL_FAILURE(SyncAndCheck(plan_routes(Entry(tun, tun), &profile)));
  EXPECT_EQ(Table("-4"), Lines("default dev tun0 proto 75 scope link metric 1\n"
                               "throw 192.168.1.0/24 proto 75 metric 1\n"
                               "throw 10.0.0.0/8 proto 75 metric 1\n" +
                               kV4Unreachable[0]));
  EXPECT_EQ(Table("-6"), Lines("default dev tun0 proto 75 metric 1 pref medium\n"
                               "throw fd00::/8 dev lo proto 75 metric 1 pref medium\n" +
                               kV6Unreachable[0]));

  // A CIDR removed from the configuration disappears, the others stay; the LAN stays
  // reachable while the tunnel is down.
  profile = ProfileWithLan({"10.0.0.0/8", "fd00::/8"});
  ASSERT_NO_FATAL_FAILURE(SyncAndCheck(plan_routes(Entry(0, 0), &profile)));
  EXPECT_EQ(Table("-4"), Lines("throw 10.0.0.0/8 proto 75 metric 1\n" + kV4Unreachable[0]));
  EXPECT_EQ(Table("-6"),
            Lines("throw fd00::/8 dev lo proto 75 metric 1 pref medium\n" + kV6Unreachable[0]));
}

TEST_F(RoutingTest, SyncIsIdempotent) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);
  const Profile profile = ProfileWithLan({"192.168.1.0/24", "fd00::/8"});
  const auto plan = plan_routes(Entry(tun, tun), &profile);
  ASSERT_NO_FATAL_FAILURE(SyncAndCheck(plan));
  const auto v4 = Table("-4");
  const auto v6 = Table("-6");

  std::optional<RouteEvents> events;
  ASSERT_NO_THROW(events.emplace(kTable));
  ASSERT_NO_THROW(routing_->sync_table(kTable, plan));
  EXPECT_EQ(events->Take(), std::vector<std::string>{}) << "the second sync changed routes";
  EXPECT_EQ(Table("-4"), v4);
  EXPECT_EQ(Table("-6"), v6);

  // The listener does see real changes (otherwise the check above proves nothing).
  ASSERT_NO_THROW(routing_->sync_table(kTable, plan_routes(Entry(0, 0), &profile)));
  EXPECT_EQ(events->Take().size(), 2u) << "expected the two tunnel routes to be deleted";
}

TEST_F(RoutingTest, FlushTableEmptiesIt) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);
  const Profile profile = ProfileWithLan({"192.168.1.0/24", "fd00::/8"});
  ASSERT_NO_FATAL_FAILURE(SyncAndCheck(plan_routes(Entry(tun, tun), &profile)));
  ASSERT_NO_THROW(routing_->flush_table(kTable));
  EXPECT_EQ(Table("-4"), std::vector<std::string>{});
  EXPECT_EQ(Table("-6"), std::vector<std::string>{});
  std::vector<RouteSpec> have;
  ASSERT_NO_THROW(have = routing_->routes_in_table(kTable));
  EXPECT_EQ(have, std::vector<RouteSpec>{});
  ASSERT_NO_THROW(routing_->flush_table(kTable)) << "flushing an empty table";
}

// Routes of other tables (main here) are neither reported nor touched.
TEST_F(RoutingTest, OtherTablesUntouched) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);
  ASSERT_TRUE(Run("ip route add 203.0.113.0/24 dev tun0 metric 1"));
  const auto main_v4 = Lines(Output("ip -4 route show table main").value_or(""));
  ASSERT_NO_FATAL_FAILURE(SyncAndCheck(plan_routes(Entry(tun, tun), nullptr)));
  ASSERT_NO_THROW(routing_->flush_table(kTable));
  EXPECT_EQ(Lines(Output("ip -4 route show table main").value_or("")), main_v4);
}

// The kernel removes the tunnel's route with its device; the unreachable route stays and
// the table is then exactly what ksd would plan for "tunnel gone", even with ksd dead.
TEST_F(RoutingTest, DeletedTunnelLeavesOnlyUnreachable) {
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);
  ASSERT_NO_FATAL_FAILURE(SyncAndCheck(plan_routes(Entry(tun, tun), nullptr)));
  ASSERT_TRUE(Run("ip link del tun0"));
  EXPECT_EQ(Table("-4"), kV4Unreachable);
  EXPECT_EQ(Table("-6"), kV6Unreachable);
  std::vector<RouteSpec> have;
  ASSERT_NO_THROW(have = routing_->routes_in_table(kTable));
  EXPECT_EQ(Sorted(have), Sorted(plan_routes(Entry(0, 0), nullptr)));
}

// Real sockets: the mark selects the profile's table; unmarked sockets keep the main one.
TEST_F(RoutingTest, MarkedSocketsAreSteeredByTheTable) {
  // "eth0" carries the main table's default routes and the LAN; "tun0" is the tunnel.
  ASSERT_GT(AddLink("eth0", "10.100.0.2/24", "2001:db8:100::2/64"), 1u);
  ASSERT_TRUE(Run("ip route add default via 10.100.0.1 dev eth0"));
  ASSERT_TRUE(Run("ip -6 route add default via 2001:db8:100::1 dev eth0"));
  const std::uint32_t tun = AddTunnel();
  ASSERT_GT(tun, 1u);
  const Profile profile = ProfileWithLan({"10.100.0.0/24", "2001:db8:100::/64"});
  ASSERT_NO_THROW(routing_->ensure_rules(kProfile));

  const char* v4_internet = "203.0.113.10";
  const char* v6_internet = "2001:db8:ffff::10";

  // Without our routes (rule present, table empty) marked sockets use the main table.
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, v4_internet, kMark), "10.100.0.2"));

  // Tunnel up: marked sockets leave through the tunnel, unmarked ones through eth0.
  ASSERT_NO_FATAL_FAILURE(SyncAndCheck(plan_routes(Entry(tun, tun), &profile)));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, v4_internet, kMark), "10.200.0.2"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, v6_internet, kMark), "2001:db8:200::2"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, v4_internet, std::nullopt), "10.100.0.2"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, v6_internet, std::nullopt), "2001:db8:100::2"));
  // allow_lan: thrown back to the main table, so the LAN is reached directly.
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, "10.100.0.7", kMark), "10.100.0.2"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, "2001:db8:100::7", kMark), "2001:db8:100::2"));
  // Loopback resolves in the local table, before rule 90.
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, "127.0.0.1", kMark), "127.0.0.1"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, "::1", kMark), "::1"));
  // Another profile's mark has no rule: main table.
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, v4_internet, KS_MARK_BASE | 2), "10.100.0.2"));

  // Tunnel gone: marked sockets fail at once (EHOSTUNREACH for both families, see the
  // top comment), the LAN and loopback still work, unmarked sockets are unaffected.
  ASSERT_NO_FATAL_FAILURE(SyncAndCheck(plan_routes(Entry(0, 0), &profile)));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET, v4_internet, kMark), EHOSTUNREACH));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET6, v6_internet, kMark), EHOSTUNREACH));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, "10.100.0.7", kMark), "10.100.0.2"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, "2001:db8:100::7", kMark), "2001:db8:100::2"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, "127.0.0.1", kMark), "127.0.0.1"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, v4_internet, std::nullopt), "10.100.0.2"));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET6, v6_internet, std::nullopt), "2001:db8:100::2"));

  // Tunnel back (a re-created tunnel, same ifindex here): steering resumes.
  ASSERT_NO_FATAL_FAILURE(SyncAndCheck(plan_routes(Entry(tun, tun), &profile)));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, v4_internet, kMark), "10.200.0.2"));

  // Tunnel device deleted behind ksd's back: the kernel drops its route, marked sockets
  // fail closed instead of falling back to eth0.
  ASSERT_TRUE(Run("ip link del tun0"));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET, v4_internet, kMark), EHOSTUNREACH));
  EXPECT_TRUE(Refused(ConnectUdp(AF_INET6, v6_internet, kMark), EHOSTUNREACH));

  // Without the rule, marks mean nothing to routing.
  ASSERT_NO_THROW(routing_->remove_rules(kProfile));
  EXPECT_TRUE(RoutedFrom(ConnectUdp(AF_INET, v4_internet, kMark), "10.100.0.2"));
}

}  // namespace
}  // namespace ks
