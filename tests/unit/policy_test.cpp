// The one decision function shared by the BPF programs and host code (bpf/policy.h),
// judged table by table: every branch, and the fail-closed order of its questions.
#include "policy.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

namespace {

const char* reason_name(ks_reason r) {
  switch (r) {
    case KS_REASON_ALLOW_TUNNEL:
      return "ALLOW_TUNNEL";
    case KS_REASON_ALLOW_LOOPBACK:
      return "ALLOW_LOOPBACK";
    case KS_REASON_ALLOW_LAN:
      return "ALLOW_LAN";
    case KS_REASON_BLOCK_NOT_TUNNEL:
      return "BLOCK_NOT_TUNNEL";
    case KS_REASON_BLOCK_NO_TUNNEL:
      return "BLOCK_NO_TUNNEL";
    case KS_REASON_BLOCK_NO_PROFILE:
      return "BLOCK_NO_PROFILE";
    case KS_REASON_BLOCK_WRONG_NETNS:
      return "BLOCK_WRONG_NETNS";
    case KS_REASON_BLOCK_CANARY:
      return "BLOCK_CANARY";
    case KS_REASON_BLOCK_DNS:
      return "BLOCK_DNS";
    case KS_REASON_BLOCK_LOCAL_RESOLVER:
      return "BLOCK_LOCAL_RESOLVER";
    case KS_REASON_BLOCK_JOIN_UNNAMED:
      return "BLOCK_JOIN_UNNAMED";
    case KS_REASON_BLOCK_SOURCE_ROUTE:
      return "BLOCK_SOURCE_ROUTE";
  }
  return "?";
}

constexpr ks_u32 kLo = KS_LOOPBACK_IFINDEX;
constexpr ks_u32 kEth = 2;  // physical interface
constexpr ks_u32 kWg = 7;   // tunnel
constexpr ks_u32 kProfile = 1;

// ---------------------------------------------------------------------------------------
// Packets (cgroup_skb egress/ingress)

struct PacketCase {
  const char* description;
  ks_packet_facts facts;
  ks_reason expected;
};

std::ostream& operator<<(std::ostream& os, const PacketCase& c) {
  const ks_packet_facts& f = c.facts;
  return os << c.description << " {ifindex=" << f.ifindex << " profile=" << f.profile_id
            << " valid=" << f.profile_valid << " foreign=" << f.foreign_netns
            << " tunnel=" << f.through_tunnel << " lan=" << f.peer_in_lan
            << " canary=" << f.is_canary << " route_on=" << f.may_route_on << "} -> "
            << reason_name(c.expected);
}

// Field order: ifindex, profile_id, profile_valid, foreign_netns, through_tunnel,
// peer_in_lan, is_canary.
const std::vector<PacketCase> kPacketCases = {
    // Loopback never leaves the host: allowed whatever else is true or missing.
    {"loopback, valid profile", {kLo, kProfile, 1, 0, 0, 0, 0, 0}, KS_REASON_ALLOW_LOOPBACK},
    {"loopback without any profile",
     {kLo, KS_PROFILE_NONE, 0, 0, 0, 0, 0, 0},
     KS_REASON_ALLOW_LOOPBACK},
    {"loopback with an invalid (removed) profile",
     {kLo, 5, 0, 0, 0, 0, 0, 0},
     KS_REASON_ALLOW_LOOPBACK},
    {"loopback from a foreign netns", {kLo, kProfile, 1, 1, 0, 0, 0, 0}, KS_REASON_ALLOW_LOOPBACK},
    {"loopback from a foreign netns without profile",
     {kLo, KS_PROFILE_NONE, 0, 1, 0, 0, 0, 0},
     KS_REASON_ALLOW_LOOPBACK},
    {"loopback, peer flagged lan", {kLo, kProfile, 1, 0, 0, 1, 0, 0}, KS_REASON_ALLOW_LOOPBACK},

    // The canary is refused on loopback, before anything else is asked...
    {"canary on loopback", {kLo, kProfile, 1, 0, 0, 0, 1, 0}, KS_REASON_BLOCK_CANARY},
    {"canary on loopback without profile",
     {kLo, KS_PROFILE_NONE, 0, 0, 0, 0, 1, 0},
     KS_REASON_BLOCK_CANARY},
    {"canary on loopback from a foreign netns",
     {kLo, kProfile, 1, 1, 0, 0, 1, 0},
     KS_REASON_BLOCK_CANARY},
    // ...and means nothing anywhere else.
    {"canary flag through the tunnel", {kWg, kProfile, 1, 0, 1, 0, 1, 0}, KS_REASON_ALLOW_TUNNEL},
    {"canary flag to the lan", {kEth, kProfile, 1, 0, 0, 1, 1, 0}, KS_REASON_ALLOW_LAN},
    {"canary flag via the physical link",
     {kEth, kProfile, 1, 0, 0, 0, 1, 0},
     KS_REASON_BLOCK_NOT_TUNNEL},
    {"canary flag without profile off loopback",
     {kEth, KS_PROFILE_NONE, 0, 0, 0, 0, 1, 0},
     KS_REASON_BLOCK_NO_PROFILE},

    // A socket of another network namespace: our ifindexes mean nothing there.
    {"foreign netns through a tunnel ifindex",
     {kWg, kProfile, 1, 1, 1, 0, 0, 0},
     KS_REASON_BLOCK_WRONG_NETNS},
    {"foreign netns to the lan", {kEth, kProfile, 1, 1, 0, 1, 0, 0}, KS_REASON_BLOCK_WRONG_NETNS},
    {"foreign netns via the physical link",
     {kEth, kProfile, 1, 1, 0, 0, 0, 0},
     KS_REASON_BLOCK_WRONG_NETNS},
    {"foreign netns is asked before the profile",
     {kWg, KS_PROFILE_NONE, 0, 1, 1, 1, 0, 0},
     KS_REASON_BLOCK_WRONG_NETNS},

    // No profile, or a profile that is not (or no longer) valid.
    {"no profile, even through a tunnel",
     {kWg, KS_PROFILE_NONE, 0, 0, 1, 0, 0, 0},
     KS_REASON_BLOCK_NO_PROFILE},
    {"profile id NONE even if flagged valid",
     {kWg, KS_PROFILE_NONE, 1, 0, 1, 1, 0, 0},
     KS_REASON_BLOCK_NO_PROFILE},
    {"invalid profile through a tunnel", {kWg, 3, 0, 0, 1, 0, 0, 0}, KS_REASON_BLOCK_NO_PROFILE},
    {"invalid profile to the lan", {kEth, 3, 0, 0, 0, 1, 0, 0}, KS_REASON_BLOCK_NO_PROFILE},
    {"invalid profile via the physical link",
     {kEth, 3, 0, 0, 0, 0, 0, 0},
     KS_REASON_BLOCK_NO_PROFILE},
    {"no profile via the physical link",
     {kEth, KS_PROFILE_NONE, 0, 0, 0, 0, 0, 0},
     KS_REASON_BLOCK_NO_PROFILE},

    // Tunnel, LAN, everything else.
    {"through the tunnel", {kWg, kProfile, 1, 0, 1, 0, 0, 0}, KS_REASON_ALLOW_TUNNEL},
    {"through the tunnel, highest profile id",
     {kWg, KS_MAX_PROFILES - 1, 1, 0, 1, 0, 0, 0},
     KS_REASON_ALLOW_TUNNEL},
    {"through the tunnel to a lan peer counts as tunnel",
     {kWg, kProfile, 1, 0, 1, 1, 0, 0},
     KS_REASON_ALLOW_TUNNEL},
    {"lan peer off the tunnel", {kEth, kProfile, 1, 0, 0, 1, 0, 0}, KS_REASON_ALLOW_LAN},
    {"physical link, not lan", {kEth, kProfile, 1, 0, 0, 0, 0, 0}, KS_REASON_BLOCK_NOT_TUNNEL},
    {"another profile's tunnel (not in this one's ks_tunnel_sets entry)",
     {kWg, 2, 1, 0, 0, 0, 0, 0},
     KS_REASON_BLOCK_NOT_TUNNEL},
    {"ifindex 0 (no device)", {0, kProfile, 1, 0, 0, 0, 0, 0}, KS_REASON_BLOCK_NOT_TUNNEL},

    // Flags are C truth values: any non-zero bit counts.
    {"non-1 truth values: foreign netns",
     {kWg, kProfile, 0x80000000u, 0x2u, 0x4u, 0, 0, 0},
     KS_REASON_BLOCK_WRONG_NETNS},
    {"non-1 truth values: tunnel",
     {kWg, kProfile, 0x80000000u, 0, 0x100u, 0, 0, 0},
     KS_REASON_ALLOW_TUNNEL},
    {"non-1 truth values: lan",
     {kEth, kProfile, 0x10u, 0, 0, 0xffffffffu, 0, 0},
     KS_REASON_ALLOW_LAN},
    {"non-1 truth values: canary", {kLo, kProfile, 1, 0, 0, 0, 0x40u, 0}, KS_REASON_BLOCK_CANARY},
    // Source routes: through an allowed LAN router to anywhere (lab_kernel_frames).
    {"source-routed via a LAN address",
     {kEth, kProfile, 1, 0, 0, 1, 0, 1},
     KS_REASON_BLOCK_SOURCE_ROUTE},
    {"source-routed, not LAN", {kEth, kProfile, 1, 0, 0, 0, 0, 1}, KS_REASON_BLOCK_SOURCE_ROUTE},
    {"source-routed inside the tunnel", {kWg, kProfile, 1, 0, 1, 0, 0, 1}, KS_REASON_ALLOW_TUNNEL},
    {"source-routed on loopback", {kLo, kProfile, 1, 0, 0, 0, 0, 1}, KS_REASON_ALLOW_LOOPBACK},
    {"source-routed, foreign", {kEth, kProfile, 1, 1, 0, 1, 0, 1}, KS_REASON_BLOCK_WRONG_NETNS},
};

TEST(PolicyPacket, Table) {
  for (const PacketCase& c : kPacketCases) {
    SCOPED_TRACE(testing::PrintToString(c));
    const ks_reason got = ks_judge_packet(&c.facts);
    EXPECT_EQ(got, c.expected) << "got " << reason_name(got);
  }
}

// Exhaustive over every combination of the boolean facts on three interfaces: the
// verdict must follow the fail-closed order in policy.h, whatever the combination.
TEST(PolicyPacket, FailClosedInvariantsOverAllCombinations) {
  int judged = 0;
  for (ks_u32 ifindex : {0u, kLo, kEth, kWg}) {
    for (ks_u32 profile_id : {static_cast<ks_u32>(KS_PROFILE_NONE), kProfile, 63u}) {
      for (unsigned bits = 0; bits < 64; ++bits) {
        ks_packet_facts f{};
        f.ifindex = ifindex;
        f.profile_id = profile_id;
        f.profile_valid = bits & 1u;
        f.foreign_netns = (bits >> 1) & 1u;
        f.through_tunnel = (bits >> 2) & 1u;
        f.peer_in_lan = (bits >> 3) & 1u;
        f.is_canary = (bits >> 4) & 1u;
        f.may_route_on = (bits >> 5) & 1u;
        const ks_reason r = ks_judge_packet(&f);
        ++judged;
        SCOPED_TRACE("ifindex=" + std::to_string(ifindex) +
                     " profile=" + std::to_string(profile_id) + " bits=" + std::to_string(bits));
        const bool has_profile = profile_id != KS_PROFILE_NONE && f.profile_valid;
        if (ifindex == kLo) {
          EXPECT_EQ(r, f.is_canary ? KS_REASON_BLOCK_CANARY : KS_REASON_ALLOW_LOOPBACK);
          continue;
        }
        // Off loopback nothing passes for a foreign socket or one without a profile,
        // and neither loopback nor canary verdicts can appear.
        EXPECT_NE(r, KS_REASON_ALLOW_LOOPBACK);
        EXPECT_NE(r, KS_REASON_BLOCK_CANARY);
        EXPECT_NE(r, KS_REASON_BLOCK_NO_TUNNEL);  // a connect-only reason
        if (f.foreign_netns) {
          EXPECT_EQ(r, KS_REASON_BLOCK_WRONG_NETNS);
        } else if (!has_profile) {
          EXPECT_EQ(r, KS_REASON_BLOCK_NO_PROFILE);
        } else if (f.through_tunnel) {
          EXPECT_EQ(r, KS_REASON_ALLOW_TUNNEL);
        } else if (f.may_route_on) {
          EXPECT_EQ(r, KS_REASON_BLOCK_SOURCE_ROUTE);
        } else if (f.peer_in_lan) {
          EXPECT_EQ(r, KS_REASON_ALLOW_LAN);
        } else {
          EXPECT_EQ(r, KS_REASON_BLOCK_NOT_TUNNEL);
        }
        if (ks_reason_allows(r)) {
          EXPECT_FALSE(f.foreign_netns);
          EXPECT_TRUE(has_profile);
          EXPECT_TRUE(f.through_tunnel || (f.peer_in_lan && !f.may_route_on));
        }
      }
    }
  }
  EXPECT_EQ(judged, 4 * 3 * 64);
}

// ---------------------------------------------------------------------------------------
// connect() and unconnected sendmsg()

struct ConnectCase {
  const char* description;
  ks_connect_facts facts;
  ks_reason expected;
  ks_u32 bind_ifindex;  // expected; 0 = unbind (and always 0 when blocked)
};

std::ostream& operator<<(std::ostream& os, const ConnectCase& c) {
  const ks_connect_facts& f = c.facts;
  return os << c.description << " {profile=" << f.profile_id << " valid=" << f.profile_valid
            << " foreign=" << f.foreign_netns << " loopback=" << f.dst_is_loopback
            << " lan=" << f.dst_in_lan << " canary=" << f.is_canary
            << " tunnel=" << f.tunnel_ifindex << "} -> " << reason_name(c.expected)
            << " bind=" << c.bind_ifindex;
}

// Field order: profile_id, profile_valid, foreign_netns, dst_is_loopback, dst_in_lan,
// is_canary, tunnel_ifindex.
const std::vector<ConnectCase> kConnectCases = {
    // Loopback: allowed and unbound (bind 0), so it routes over lo even if the socket was
    // pinned to the tunnel at creation.
    {"loopback, profile with a tunnel, unbinds",
     {kProfile, 1, 0, 1, 0, 0, kWg},
     KS_REASON_ALLOW_LOOPBACK,
     0},
    {"loopback without profile", {KS_PROFILE_NONE, 0, 0, 1, 0, 0, 0}, KS_REASON_ALLOW_LOOPBACK, 0},
    {"loopback with an invalid profile", {4, 0, 0, 1, 0, 0, 0}, KS_REASON_ALLOW_LOOPBACK, 0},
    {"loopback from a foreign netns", {kProfile, 1, 1, 1, 0, 0, kWg}, KS_REASON_ALLOW_LOOPBACK, 0},
    {"loopback while no tunnel is up", {kProfile, 1, 0, 1, 0, 0, 0}, KS_REASON_ALLOW_LOOPBACK, 0},

    // Canary: refused on loopback before anything else; ignored elsewhere.
    {"canary to loopback", {kProfile, 1, 0, 1, 0, 1, kWg}, KS_REASON_BLOCK_CANARY, 0},
    {"canary to loopback without profile",
     {KS_PROFILE_NONE, 0, 0, 1, 0, 1, 0},
     KS_REASON_BLOCK_CANARY,
     0},
    {"canary to loopback from a foreign netns",
     {kProfile, 1, 1, 1, 0, 1, 0},
     KS_REASON_BLOCK_CANARY,
     0},
    {"canary flag off loopback, tunnel up",
     {kProfile, 1, 0, 0, 0, 1, kWg},
     KS_REASON_ALLOW_TUNNEL,
     kWg},
    {"canary flag off loopback, no tunnel",
     {kProfile, 1, 0, 0, 0, 1, 0},
     KS_REASON_BLOCK_NO_TUNNEL,
     0},

    // Foreign network namespace.
    {"foreign netns with a tunnel", {kProfile, 1, 1, 0, 0, 0, kWg}, KS_REASON_BLOCK_WRONG_NETNS, 0},
    {"foreign netns to the lan", {kProfile, 1, 1, 0, 1, 0, kWg}, KS_REASON_BLOCK_WRONG_NETNS, 0},
    {"foreign netns is asked before the profile",
     {KS_PROFILE_NONE, 0, 1, 0, 1, 0, kWg},
     KS_REASON_BLOCK_WRONG_NETNS,
     0},

    // No profile / invalid profile.
    {"no profile, tunnel known",
     {KS_PROFILE_NONE, 0, 0, 0, 0, 0, kWg},
     KS_REASON_BLOCK_NO_PROFILE,
     0},
    {"profile id NONE even if flagged valid",
     {KS_PROFILE_NONE, 1, 0, 0, 1, 0, kWg},
     KS_REASON_BLOCK_NO_PROFILE,
     0},
    {"invalid profile to the lan", {3, 0, 0, 0, 1, 0, 0}, KS_REASON_BLOCK_NO_PROFILE, 0},
    {"invalid profile with a tunnel", {3, 0, 0, 0, 0, 0, kWg}, KS_REASON_BLOCK_NO_PROFILE, 0},

    // LAN: allowed and unbound, tunnel or not.
    {"lan while the tunnel is up, unbinds", {kProfile, 1, 0, 0, 1, 0, kWg}, KS_REASON_ALLOW_LAN, 0},
    {"lan while no tunnel is up", {kProfile, 1, 0, 0, 1, 0, 0}, KS_REASON_ALLOW_LAN, 0},

    // Tunnel: bound to the profile's target for the destination's family.
    {"tunnel up, binds to it", {kProfile, 1, 0, 0, 0, 0, kWg}, KS_REASON_ALLOW_TUNNEL, kWg},
    {"tunnel with a large ifindex",
     {kProfile, 1, 0, 0, 0, 0, 0x7fffffffu},
     KS_REASON_ALLOW_TUNNEL,
     0x7fffffffu},
    {"no tunnel for this family", {kProfile, 1, 0, 0, 0, 0, 0}, KS_REASON_BLOCK_NO_TUNNEL, 0},

    // Truth values other than 1.
    {"non-1 truth values: loopback",
     {kProfile, 1, 0, 0x8u, 0, 0, kWg},
     KS_REASON_ALLOW_LOOPBACK,
     0},
    {"non-1 truth values: lan", {kProfile, 0x20u, 0, 0, 0x100u, 0, kWg}, KS_REASON_ALLOW_LAN, 0},
    {"non-1 truth values: foreign",
     {kProfile, 1, 0x80000000u, 0, 0, 0, kWg},
     KS_REASON_BLOCK_WRONG_NETNS,
     0},
};

TEST(PolicyConnect, Table) {
  for (const ConnectCase& c : kConnectCases) {
    SCOPED_TRACE(testing::PrintToString(c));
    const ks_connect_verdict v = ks_judge_connect(&c.facts);
    EXPECT_EQ(v.reason, c.expected) << "got " << reason_name(v.reason);
    EXPECT_EQ(v.bind_ifindex, c.bind_ifindex);
  }
}

TEST(PolicyConnect, FailClosedInvariantsOverAllCombinations) {
  int judged = 0;
  for (ks_u32 tunnel : {0u, kWg}) {
    for (ks_u32 profile_id : {static_cast<ks_u32>(KS_PROFILE_NONE), kProfile}) {
      for (unsigned bits = 0; bits < 32; ++bits) {
        ks_connect_facts f{};
        f.profile_id = profile_id;
        f.tunnel_ifindex = tunnel;
        f.profile_valid = bits & 1u;
        f.foreign_netns = (bits >> 1) & 1u;
        f.dst_is_loopback = (bits >> 2) & 1u;
        f.dst_in_lan = (bits >> 3) & 1u;
        f.is_canary = (bits >> 4) & 1u;
        const ks_connect_verdict v = ks_judge_connect(&f);
        ++judged;
        SCOPED_TRACE("tunnel=" + std::to_string(tunnel) + " profile=" + std::to_string(profile_id) +
                     " bits=" + std::to_string(bits));
        const bool has_profile = profile_id != KS_PROFILE_NONE && f.profile_valid;
        EXPECT_NE(v.reason, KS_REASON_BLOCK_NOT_TUNNEL);  // a packet-only reason
        if (!ks_reason_allows(v.reason)) {
          EXPECT_EQ(v.bind_ifindex, 0u);
        }
        // Only a tunnel verdict ever binds, and only to the tunnel.
        if (v.bind_ifindex != 0) {
          EXPECT_EQ(v.reason, KS_REASON_ALLOW_TUNNEL);
          EXPECT_EQ(v.bind_ifindex, tunnel);
        }
        if (f.dst_is_loopback) {
          EXPECT_EQ(v.reason, f.is_canary ? KS_REASON_BLOCK_CANARY : KS_REASON_ALLOW_LOOPBACK);
        } else if (f.foreign_netns) {
          EXPECT_EQ(v.reason, KS_REASON_BLOCK_WRONG_NETNS);
        } else if (!has_profile) {
          EXPECT_EQ(v.reason, KS_REASON_BLOCK_NO_PROFILE);
        } else if (f.dst_in_lan) {
          EXPECT_EQ(v.reason, KS_REASON_ALLOW_LAN);
        } else if (tunnel == 0) {
          EXPECT_EQ(v.reason, KS_REASON_BLOCK_NO_TUNNEL);
        } else {
          EXPECT_EQ(v.reason, KS_REASON_ALLOW_TUNNEL);
          EXPECT_EQ(v.bind_ifindex, tunnel);
        }
      }
    }
  }
  EXPECT_EQ(judged, 2 * 2 * 32);
}

// ---------------------------------------------------------------------------------------
// ks_reason_allows and the reason values (counters and events store them)

TEST(PolicyReason, AllowsExactlyTheThreeAllowReasons) {
  struct {
    ks_reason reason;
    bool allows;
  } const cases[] = {
      {KS_REASON_ALLOW_TUNNEL, true},        {KS_REASON_ALLOW_LOOPBACK, true},
      {KS_REASON_ALLOW_LAN, true},           {KS_REASON_BLOCK_NOT_TUNNEL, false},
      {KS_REASON_BLOCK_NO_TUNNEL, false},    {KS_REASON_BLOCK_NO_PROFILE, false},
      {KS_REASON_BLOCK_WRONG_NETNS, false},  {KS_REASON_BLOCK_CANARY, false},
      {KS_REASON_BLOCK_DNS, false},          {KS_REASON_BLOCK_LOCAL_RESOLVER, false},
      {KS_REASON_BLOCK_JOIN_UNNAMED, false}, {KS_REASON_BLOCK_SOURCE_ROUTE, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(reason_name(c.reason));
    EXPECT_EQ(ks_reason_allows(c.reason) != 0, c.allows);
  }
}

TEST(PolicyReason, ValuesAreStable) {
  EXPECT_EQ(KS_REASON_ALLOW_TUNNEL, 0);
  EXPECT_EQ(KS_REASON_ALLOW_LOOPBACK, 1);
  EXPECT_EQ(KS_REASON_ALLOW_LAN, 2);
  EXPECT_EQ(KS_REASON_BLOCK_NOT_TUNNEL, 3);
  EXPECT_EQ(KS_REASON_BLOCK_NO_TUNNEL, 4);
  EXPECT_EQ(KS_REASON_BLOCK_NO_PROFILE, 5);
  EXPECT_EQ(KS_REASON_BLOCK_WRONG_NETNS, 6);
  EXPECT_EQ(KS_REASON_BLOCK_CANARY, 7);
  EXPECT_EQ(KS_REASON_BLOCK_DNS, 8);
  EXPECT_EQ(KS_REASON_BLOCK_LOCAL_RESOLVER, 9);
  EXPECT_EQ(KS_REASON_BLOCK_JOIN_UNNAMED, 10);
  EXPECT_EQ(KS_REASON_BLOCK_SOURCE_ROUTE, 11);
  EXPECT_EQ(KS_EV_MCAST_JOIN, 8);
}

}  // namespace

// ---- setsockopt: multicast joins ----

namespace {

// The request as the BPF program hands it over: the first KS_JOIN_PARSE_BYTES bytes of the
// kernel's copy (at least 16 are always there), and how many of them the caller passed.
struct Request {
  ks_u8 buf[KS_JOIN_PARSE_BYTES] = {};
  int optlen = 0;
  int have = 0;
};

template <typename T>
Request request(const T& value, int optlen = sizeof(T)) {
  Request r;
  std::memcpy(r.buf, &value, std::min<std::size_t>(sizeof(T), sizeof(r.buf)));
  r.optlen = optlen;
  r.have = std::min(std::max(optlen, 16), static_cast<int>(KS_JOIN_PARSE_BYTES));
  r.have = std::min(r.have, optlen);
  return r;
}

int parse(int level, int optname, const Request& r, ks_join* j) {
  return ks_parse_join(level, optname, r.optlen, r.buf, r.have, j);
}

const ks_u8 kMapped239[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 239, 192, 152, 143};

}  // namespace

TEST(JoinRequest, EveryIpv4Layout) {
  in_addr group{}, local{};
  inet_pton(AF_INET, "239.192.152.143", &group);
  inet_pton(AF_INET, "198.51.100.2", &local);
  ks_join j;

  ip_mreqn by_index{group, {}, 7};
  ASSERT_EQ(parse(SOL_IP, IP_ADD_MEMBERSHIP, request(by_index), &j), 1);
  EXPECT_EQ(j.ifindex, 7u);
  EXPECT_EQ(j.named_by_addr, 0u);
  EXPECT_EQ(j.family, 4);
  EXPECT_EQ(std::memcmp(j.group, kMapped239, 16), 0);

  ip_mreqn by_address{group, local, 0};
  ASSERT_EQ(parse(SOL_IP, IP_ADD_MEMBERSHIP, request(by_address), &j), 1);
  EXPECT_EQ(j.ifindex, 0u);
  EXPECT_EQ(j.named_by_addr, 1u);

  ip_mreq old_style{group, local};  // 8 bytes: no index field at all
  ASSERT_EQ(parse(SOL_IP, IP_ADD_MEMBERSHIP, request(old_style), &j), 1);
  EXPECT_EQ(j.ifindex, 0u);
  EXPECT_EQ(j.named_by_addr, 1u);
  ip_mreq unnamed{group, {}};
  ASSERT_EQ(parse(SOL_IP, IP_ADD_MEMBERSHIP, request(unnamed), &j), 1);
  EXPECT_EQ(j.ifindex, 0u);
  EXPECT_EQ(j.named_by_addr, 0u);

  // ip_mreq_source's third field is the source, never an index.
  ip_mreq_source ssm{group, local, local};
  ASSERT_EQ(parse(SOL_IP, IP_ADD_SOURCE_MEMBERSHIP, request(ssm), &j), 1);
  EXPECT_EQ(j.ifindex, 0u);
  EXPECT_EQ(j.named_by_addr, 1u);

  // Too short for the kernel to act on: EINVAL there, nothing to judge here.
  EXPECT_EQ(parse(SOL_IP, IP_ADD_MEMBERSHIP, request(by_index, 7), &j), 0);
  EXPECT_EQ(parse(SOL_IP, IP_ADD_SOURCE_MEMBERSHIP, request(ssm, 11), &j), 0);
}

TEST(JoinRequest, GroupReqAtBothLevelsAndIpv6) {
  ks_join j;
  group_req v4{};
  v4.gr_interface = 3;
  auto* sin = reinterpret_cast<sockaddr_in*>(&v4.gr_group);
  sin->sin_family = AF_INET;
  inet_pton(AF_INET, "239.192.152.143", &sin->sin_addr);
  Request r = request(v4);
  r.have = KS_JOIN_PARSE_BYTES;  // optlen 136: the program copies 32 bytes
  for (int level : {SOL_IP, SOL_IPV6})
    for (int optname : {MCAST_JOIN_GROUP, MCAST_JOIN_SOURCE_GROUP}) {
      ASSERT_EQ(parse(level, optname, r, &j), 1);
      EXPECT_EQ(j.ifindex, 3u);
      EXPECT_EQ(j.family, 4);
      EXPECT_EQ(std::memcmp(j.group, kMapped239, 16), 0);
    }

  group_req v6{};
  v6.gr_interface = 0;
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&v6.gr_group);
  sin6->sin6_family = AF_INET6;
  inet_pton(AF_INET6, "ff15::efc0:988f", &sin6->sin6_addr);
  r = request(v6);
  r.have = KS_JOIN_PARSE_BYTES;
  ASSERT_EQ(parse(SOL_IPV6, MCAST_JOIN_GROUP, r, &j), 1);
  EXPECT_EQ(j.ifindex, 0u);
  EXPECT_EQ(j.family, 6);
  EXPECT_EQ(std::memcmp(j.group, &sin6->sin6_addr, 16), 0);

  ipv6_mreq mreq6{};
  mreq6.ipv6mr_multiaddr = sin6->sin6_addr;
  mreq6.ipv6mr_interface = 9;
  for (int optname : {IPV6_ADD_MEMBERSHIP, IPV6_JOIN_ANYCAST}) {
    ASSERT_EQ(parse(SOL_IPV6, optname, request(mreq6), &j), 1);
    EXPECT_EQ(j.ifindex, 9u);
    EXPECT_EQ(j.family, 6);
  }
  EXPECT_EQ(parse(SOL_IPV6, IPV6_ADD_MEMBERSHIP, request(mreq6, 19), &j), 0);
  EXPECT_EQ(IPV6_JOIN_GROUP, IPV6_ADD_MEMBERSHIP);
}

TEST(JoinRequest, OtherOptionsAreNotJoins) {
  ks_join j;
  ip_mreqn m{};
  m.imr_ifindex = 2;
  // Leaving, filters on an existing membership (they need a join first), sending options,
  // and the same numbers at other levels.
  for (int optname : {IP_DROP_MEMBERSHIP, IP_MULTICAST_IF, IP_BLOCK_SOURCE, IP_MSFILTER,
                      MCAST_LEAVE_GROUP, MCAST_MSFILTER, IP_UNICAST_IF, IP_PKTINFO})
    EXPECT_EQ(parse(SOL_IP, optname, request(m), &j), 0) << optname;
  EXPECT_EQ(parse(SOL_IPV6, IPV6_DROP_MEMBERSHIP, request(m, 20), &j), 0);
  EXPECT_EQ(parse(SOL_IPV6, IP_ADD_MEMBERSHIP, request(m), &j), 0);  // 35 at SOL_IPV6
  EXPECT_EQ(parse(SOL_SOCKET, IP_ADD_MEMBERSHIP, request(m), &j), 0);
  EXPECT_EQ(parse(SOL_TCP, MCAST_JOIN_GROUP, request(m), &j), 0);
  EXPECT_EQ(KS_SOL_IP, SOL_IP);
  EXPECT_EQ(KS_SOL_IPV6, SOL_IPV6);
  EXPECT_EQ(KS_JOIN_OPTLEN_MAX, static_cast<int>(sizeof(group_source_req)));
}

TEST(PolicyJoin, OnlyATunnelOrLoopbackNamedByIndex) {
  struct {
    const char* description;
    ks_join_facts facts;
    ks_reason expected;
  } const cases[] = {
      {"on the tunnel", {kProfile, 1, 0, kWg, 1}, KS_REASON_ALLOW_TUNNEL},
      {"on loopback", {kProfile, 1, 0, kLo, 0}, KS_REASON_ALLOW_LOOPBACK},
      {"on the physical link", {kProfile, 1, 0, kEth, 0}, KS_REASON_BLOCK_NOT_TUNNEL},
      {"no interface: the kernel would route it",
       {kProfile, 1, 0, 0, 0},
       KS_REASON_BLOCK_JOIN_UNNAMED},
      {"tunnel of a profile that is gone", {kProfile, 0, 0, kEth, 0}, KS_REASON_BLOCK_NO_PROFILE},
      {"unclassified socket", {KS_PROFILE_NONE, 0, 0, kWg, 0}, KS_REASON_BLOCK_NO_PROFILE},
      {"socket of another netns, index of our tunnel",
       {kProfile, 1, 1, kWg, 0},
       KS_REASON_BLOCK_WRONG_NETNS},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    EXPECT_EQ(reason_name(ks_judge_join(&c.facts)), reason_name(c.expected));
  }
  // Fail closed: whatever the facts, only the tunnel named by index or loopback is allowed.
  for (ks_u32 bits = 0; bits < 32; ++bits)
    for (ks_u32 ifindex : {0u, kLo, kEth, kWg}) {
      ks_join_facts f{bits & 1 ? kProfile : KS_PROFILE_NONE, (bits >> 1) & 1, (bits >> 2) & 1,
                      ifindex, (bits >> 3) & 1};
      if (!ks_reason_allows(ks_judge_join(&f))) continue;
      EXPECT_TRUE(ifindex == kLo || (ifindex != 0 && f.through_tunnel && f.profile_id &&
                                     f.profile_valid && !f.foreign_netns))
          << bits << " " << ifindex;
    }
}

// ---- connect_unix: unix sockets of services that resolve names on a caller's behalf ----

namespace {

// Calls the decision function the way the BPF program does: a zero-filled 108-byte
// buffer and the length the app passed (with or without the trailing NUL).
bool unix_refused(const std::string& path, bool with_nul = true) {
  char buffer[KS_UNIX_PATH_BUF] = {};
  std::size_t n = std::min<std::size_t>(path.size(), KS_UNIX_PATH_MAX);
  path.copy(buffer, n);
  auto len = static_cast<ks_u32>(with_nul && n < KS_UNIX_PATH_MAX ? n + 1 : n);
  return ks_unix_path_refused(buffer, len) != 0;
}

}  // namespace

TEST(UnixPathPolicy, RefusesResolvedAndNscdSockets) {
  for (const char* path : {
           "/run/systemd/resolve/io.systemd.Resolve", "/var/run/systemd/resolve/io.systemd.Resolve",
           "/run/systemd/resolve/io.systemd.Resolve.Monitor", "/run/systemd/resolve/anything",
           "/run/nscd/socket", "/var/run/nscd/socket",
           "io.systemd.Resolve",                        // relative, cwd /run/systemd/resolve
           "resolve/io.systemd.Resolve",                // relative, cwd /run/systemd
           "/run//systemd/resolve/io.systemd.Resolve",  // doubled slash
           "/run/./systemd/resolve/io.systemd.Resolve",
           "/srv/chroot/run/systemd/resolve/io.systemd.Resolve",  // same socket bound elsewhere
       }) {
    EXPECT_TRUE(unix_refused(path)) << path;
    EXPECT_TRUE(unix_refused(path, false)) << path << " (no NUL)";
  }
}

TEST(UnixPathPolicy, LeavesOrdinarySocketsAlone) {
  for (const char* path : {
           "/run/dbus/system_bus_socket", "/tmp/.X11-unix/X0", "/run/user/1000/wayland-0",
           "/run/systemd/journal/socket",
           "/run/systemd/resolved.conf.d",  // not the directory itself
           "/run/systemd/resolve",          // the directory name without a slash
           "/run/nscd",                     // likewise
           "/run/systemd/io.systemd.Resolvex", "/run/systemd/xio.systemd.Resolve",
           "/run/systemd/io.systemd.Resolv", "io.systemd.Resolve/other",
           "/tmp/run/nscd/socket",  // a prefix match is anchored at the root
       }) {
    EXPECT_FALSE(unix_refused(path)) << path;
  }
}

TEST(UnixPathPolicy, AbstractAndUnnamedSocketsNeverMatch) {
  EXPECT_FALSE(unix_refused(std::string("\0/run/nscd/socket", 17), false));
  EXPECT_FALSE(unix_refused(std::string("\0io.systemd.Resolve", 19), false));
  char empty[KS_UNIX_PATH_BUF] = {};
  EXPECT_EQ(ks_unix_path_refused(empty, 0), 0);
}

TEST(UnixPathPolicy, StopsAtTheFirstNulAndAtTheBufferEnd) {
  // Bytes after the terminator are not part of the path.
  EXPECT_FALSE(unix_refused(std::string("/tmp/x\0/run/nscd/socket", 23), false));
  EXPECT_TRUE(unix_refused(std::string("/run/nscd/socket\0garbage", 24), false));
  // A full 108-byte path without a NUL is judged on its 108 bytes.
  std::string longest = "/" + std::string(107 - 19, 'a') + "/io.systemd.Resolve";
  ASSERT_EQ(longest.size(), 108u);
  EXPECT_TRUE(unix_refused(longest, false));
  EXPECT_FALSE(unix_refused(longest.substr(0, 107) + "x", false));
}
