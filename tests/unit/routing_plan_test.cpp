// plan_routes: (ks_profiles entry, configured profile) -> the routes of the profile's
// table. Pure; the kernel side of the same routes is tests/kernel/routing_test.cpp.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "killswitch/config.hpp"
#include "killswitch/routing.hpp"
#include "killswitch_abi.h"

namespace ks {

// So that failing comparisons of route lists print something readable.
static void PrintTo(const RouteSpec& r, std::ostream* os) { *os << r.describe(); }

namespace {

constexpr std::uint32_t kUnreachableMetric = 0xffffffffu;
constexpr std::uint32_t kRouteMetric = 1;

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

RouteSpec Unreachable(int family) {
  RouteSpec r;
  r.family = family;
  r.type = RTN_UNREACHABLE;
  r.metric = kUnreachableMetric;
  return r;
}

RouteSpec Via(int family, std::uint32_t oif) {
  RouteSpec r;
  r.family = family;
  r.type = RTN_UNICAST;
  r.oif = oif;
  r.metric = kRouteMetric;
  return r;
}

RouteSpec Throw(int family, const char* dst, std::uint8_t len) {
  RouteSpec r;
  r.family = family;
  r.type = RTN_THROW;
  r.dst = Addr(family, dst);
  r.dst_len = len;
  r.metric = kRouteMetric;
  return r;
}

// The order of the plan is not part of the contract (sync_table compares sets).
std::vector<RouteSpec> Sorted(std::vector<RouteSpec> routes) {
  auto key = [](const RouteSpec& r) {
    return std::tie(r.family, r.type, r.dst, r.dst_len, r.oif, r.metric);
  };
  std::sort(routes.begin(), routes.end(),
            [&](const RouteSpec& a, const RouteSpec& b) { return key(a) < key(b); });
  return routes;
}

#define EXPECT_PLAN(actual, ...) \
  EXPECT_EQ(Sorted(actual), Sorted(std::vector<RouteSpec>{__VA_ARGS__}))

TEST(RoutingPlan, InvalidProfileGetsOnlyUnreachable) {
  EXPECT_PLAN(plan_routes(Entry(0, 0, false), nullptr), Unreachable(AF_INET),
              Unreachable(AF_INET6));
  // Bind targets and allow_lan of an invalid entry are ignored: fail closed.
  const Profile lan = WithLan({"192.168.1.0/24", "fd00::/8"});
  EXPECT_PLAN(plan_routes(Entry(7, 8, false), &lan), Unreachable(AF_INET), Unreachable(AF_INET6));
  EXPECT_PLAN(plan_routes(ks_profile{}, nullptr), Unreachable(AF_INET), Unreachable(AF_INET6));
}

TEST(RoutingPlan, ValidWithoutTunnelGetsOnlyUnreachable) {
  EXPECT_PLAN(plan_routes(Entry(0, 0), nullptr), Unreachable(AF_INET), Unreachable(AF_INET6));
  const Profile no_lan = WithLan({});
  EXPECT_PLAN(plan_routes(Entry(0, 0), &no_lan), Unreachable(AF_INET), Unreachable(AF_INET6));
}

TEST(RoutingPlan, Ipv4TunnelOnly) {
  EXPECT_PLAN(plan_routes(Entry(7, 0), nullptr), Unreachable(AF_INET), Via(AF_INET, 7),
              Unreachable(AF_INET6));
}

TEST(RoutingPlan, Ipv6TunnelOnly) {
  EXPECT_PLAN(plan_routes(Entry(0, 9), nullptr), Unreachable(AF_INET), Unreachable(AF_INET6),
              Via(AF_INET6, 9));
}

TEST(RoutingPlan, BothFamilies) {
  EXPECT_PLAN(plan_routes(Entry(7, 7), nullptr), Unreachable(AF_INET), Via(AF_INET, 7),
              Unreachable(AF_INET6), Via(AF_INET6, 7));
  // Different tunnels per family.
  EXPECT_PLAN(plan_routes(Entry(7, 9), nullptr), Unreachable(AF_INET), Via(AF_INET, 7),
              Unreachable(AF_INET6), Via(AF_INET6, 9));
}

TEST(RoutingPlan, AllowLanBecomesThrowRoutes) {
  const Profile lan = WithLan(
      {"192.168.1.0/24", "10.0.0.0/8", "fd00::/8", "2001:db8:1::/48", "192.168.1.10/32", "::/0"});
  EXPECT_PLAN(plan_routes(Entry(7, 7), &lan), Unreachable(AF_INET), Via(AF_INET, 7),
              Unreachable(AF_INET6), Via(AF_INET6, 7), Throw(AF_INET, "192.168.1.0", 24),
              Throw(AF_INET, "10.0.0.0", 8), Throw(AF_INET6, "fd00::", 8),
              Throw(AF_INET6, "2001:db8:1::", 48), Throw(AF_INET, "192.168.1.10", 32),
              Throw(AF_INET6, "::", 0));
  // The LAN stays reachable while no tunnel is up.
  EXPECT_PLAN(plan_routes(Entry(0, 0), &lan), Unreachable(AF_INET), Unreachable(AF_INET6),
              Throw(AF_INET, "192.168.1.0", 24), Throw(AF_INET, "10.0.0.0", 8),
              Throw(AF_INET6, "fd00::", 8), Throw(AF_INET6, "2001:db8:1::", 48),
              Throw(AF_INET, "192.168.1.10", 32), Throw(AF_INET6, "::", 0));
}

TEST(RoutingPlan, ThrowRouteFields) {
  const Profile lan = WithLan({"192.168.1.0/24", "fd00:1:2::/48"});
  const auto plan = plan_routes(Entry(0, 0), &lan);
  std::vector<RouteSpec> throws;
  for (const auto& r : plan)
    if (r.type == RTN_THROW) throws.push_back(r);
  ASSERT_EQ(throws.size(), 2u);
  const RouteSpec& v4 = throws[0].family == AF_INET ? throws[0] : throws[1];
  const RouteSpec& v6 = throws[0].family == AF_INET ? throws[1] : throws[0];
  EXPECT_EQ(v4.family, AF_INET);
  EXPECT_EQ(v4.dst_len, 24);
  // IPv4 occupies the first 4 bytes; the rest stays zero (routes compare whole arrays).
  EXPECT_EQ(v4.dst, (std::array<std::uint8_t, 16>{192, 168, 1, 0}));
  EXPECT_EQ(v4.oif, 0u);
  EXPECT_EQ(v4.metric, kRouteMetric);
  EXPECT_EQ(v6.family, AF_INET6);
  EXPECT_EQ(v6.dst_len, 48);
  EXPECT_EQ(v6.dst, (std::array<std::uint8_t, 16>{0xfd, 0x00, 0x00, 0x01, 0x00, 0x02}));
  EXPECT_EQ(v6.oif, 0u);
  EXPECT_EQ(v6.metric, kRouteMetric);
}

TEST(RoutingPlan, Metrics) {
  const Profile lan = WithLan({"192.168.1.0/24", "fd00::/8"});
  const auto plan = plan_routes(Entry(7, 7), &lan);
  ASSERT_EQ(plan.size(), 6u);
  for (const auto& r : plan) {
    SCOPED_TRACE(r.describe());
    if (r.type == RTN_UNREACHABLE) {
      EXPECT_EQ(r.metric, 0xffffffffu) << "unreachable must lose against every real route";
      EXPECT_EQ(r.dst_len, 0);
      EXPECT_EQ(r.oif, 0u);
    } else {
      EXPECT_TRUE(r.type == RTN_UNICAST || r.type == RTN_THROW);
      // Not 0: the kernel turns an IPv6 metric 0 into 1024, and sync would never settle.
      EXPECT_EQ(r.metric, 1u);
    }
    if (r.type == RTN_UNICAST) {
      EXPECT_EQ(r.oif, 7u);
      EXPECT_EQ(r.dst_len, 0) << "the tunnel route is a default route";
    }
  }
}

TEST(RoutingPlan, DefaultRoutesHaveZeroDestination) {
  for (const auto& r : plan_routes(Entry(7, 7), nullptr)) {
    SCOPED_TRACE(r.describe());
    EXPECT_EQ(r.dst, (std::array<std::uint8_t, 16>{}));
    EXPECT_EQ(r.dst_len, 0);
  }
}

TEST(RoutingPlan, Describe) {
  EXPECT_EQ(Unreachable(AF_INET).describe(), "unreachable default metric 4294967295");
  EXPECT_EQ(Unreachable(AF_INET6).describe(), "unreachable default ipv6 metric 4294967295");
  EXPECT_EQ(Via(AF_INET, 7).describe(), "default dev ifindex 7 metric 1");
  EXPECT_EQ(Via(AF_INET6, 9).describe(), "default ipv6 dev ifindex 9 metric 1");
  EXPECT_EQ(Throw(AF_INET, "192.168.1.0", 24).describe(), "throw 192.168.1.0/24 metric 1");
  EXPECT_EQ(Throw(AF_INET6, "fd00::", 8).describe(), "throw fd00::/8 metric 1");
  EXPECT_EQ(Throw(AF_INET, "192.168.1.10", 32).describe(), "throw 192.168.1.10/32 metric 1");
  // Every route of a plan describes itself distinctly.
  const Profile lan = WithLan({"192.168.1.0/24", "fd00::/8"});
  const auto plan = plan_routes(Entry(7, 9), &lan);
  std::vector<std::string> texts;
  for (const auto& r : plan) texts.push_back(r.describe());
  std::sort(texts.begin(), texts.end());
  EXPECT_EQ(std::adjacent_find(texts.begin(), texts.end()), texts.end())
      << ::testing::PrintToString(texts);
}

TEST(RoutingPlan, Equality) {
  EXPECT_EQ(Via(AF_INET, 7), Via(AF_INET, 7));
  EXPECT_NE(Via(AF_INET, 7), Via(AF_INET, 8));
  EXPECT_NE(Via(AF_INET, 7), Via(AF_INET6, 7));
  EXPECT_NE(Throw(AF_INET, "192.168.1.0", 24), Throw(AF_INET, "192.168.1.0", 25));
  EXPECT_NE(Throw(AF_INET, "192.168.1.0", 24), Throw(AF_INET, "192.168.2.0", 24));
  RouteSpec other_metric = Unreachable(AF_INET);
  other_metric.metric = 1;
  EXPECT_NE(Unreachable(AF_INET), other_metric);
}

}  // namespace
}  // namespace ks
