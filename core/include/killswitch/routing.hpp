// Policy routing that steers protected sockets into their tunnel.
//
// cgroup/sock_create marks every protected socket with its profile's mark
// (KS_MARK_BASE | profile id). One rule per profile and family sends marked lookups to
// the profile's own table, which ksd keeps as:
//
//   <allow_lan cidr>  throw                  (fall through to the main table: the LAN)
//   default dev <tunnel>                     (while a tunnel of the profile is up)
//   unreachable default metric 4294967295    (always: no tunnel => ENETUNREACH at once)
//
// Unlike binding sockets to the tunnel's ifindex, routing is looked up per packet: a
// tunnel re-created with a new ifindex is used by existing sockets as soon as ksd
// replaces the route; loopback and local addresses still resolve through the local
// table, which the kernel consults first; hostile routes in the main table (TunnelVision)
// are never reached. When the tunnel device disappears, the kernel deletes its route and
// the unreachable route remains, even with ksd dead. Egress stays the authority.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "killswitch/config.hpp"
#include "killswitch/fd.hpp"
#include "killswitch_abi.h"

namespace ks {

inline constexpr std::uint32_t kRulePriority = 90;    // before main (32766) and VPN clients' rules
inline constexpr std::uint8_t kRouteProtocol = 0x4b;  // marks our routes in `ip route` ("proto 75")

inline std::uint32_t table_for_profile(std::uint32_t id) { return KS_MARK_BASE | id; }

struct RouteSpec {
  int family = 0;         // AF_INET or AF_INET6
  std::uint8_t type = 0;  // RTN_UNICAST (via oif), RTN_UNREACHABLE or RTN_THROW
  std::array<std::uint8_t, 16> dst{};
  std::uint8_t dst_len = 0;
  std::uint32_t oif = 0;
  std::uint32_t metric = 0;

  bool operator==(const RouteSpec&) const = default;
  std::string describe() const;
};

// The table ksd wants for one profile (pure; unit-tested).
std::vector<RouteSpec> plan_routes(const ks_profile& entry, const Profile* profile);

class PolicyRouting {
 public:
  PolicyRouting();  // rtnetlink socket in the caller's network namespace

  // Rule "fwmark MARK lookup TABLE pref kRulePriority" for IPv4 and IPv6; idempotent.
  void ensure_rules(std::uint32_t profile_id);
  void remove_rules(std::uint32_t profile_id);
  // Makes the table hold exactly `want`: missing routes are added first, then stale
  // ones are deleted, so the table is never emptier than either state.
  void sync_table(std::uint32_t table, const std::vector<RouteSpec>& want);
  std::vector<RouteSpec> routes_in_table(std::uint32_t table);
  void flush_table(std::uint32_t table);

 private:
  void request(void* message, std::uint32_t length, bool ignore_exists, bool ignore_missing);
  UniqueFd sock_;
  std::uint32_t seq_ = 1;
};

}  // namespace ks
