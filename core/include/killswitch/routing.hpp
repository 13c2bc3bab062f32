// Policy routing that steers protected sockets into their tunnel.
//
// cgroup/sock_create marks every protected socket with its profile's mark
// (KS_MARK_BASE | app slot << 6 | profile id; the rules match MARK = KS_MARK_BASE | profile
// id under the mask KS_MARK_RULE_MASK 0xffff003f, so the app slot does not matter to them).
// For each profile id and family ksd keeps three kinds of rules and one table (number =
// MARK):
//
//   pref 89  fwmark MARK/MASK to <allow_lan cidr> lookup main  (one per CIDR: the LAN)
//   pref 90  fwmark MARK/MASK lookup MARK                      table: default dev <tunnel>
//   pref 91  fwmark MARK/MASK unreachable                      ENETUNREACH when the table is empty
//   pref 92  from <tunnel address> lookup MARK             kernel-made replies (RST, ICMP)
//   pref 93  from <tunnel address> unreachable             ... never leave outside the tunnel
//
// The last two exist because the kernel answers packets that arrive through the tunnel
// for sockets that are gone (a TCP RST, an ICMP port unreachable) without any socket: no
// mark, no cgroup program. Sourced from the tunnel's address, they would otherwise follow
// the main table out of the physical interface, revealing that address.
//
// Unlike binding sockets to the tunnel's ifindex, routing is looked up per packet: a
// tunnel re-created with a new ifindex is used by existing sockets as soon as ksd
// replaces the route; loopback and local addresses still resolve through the local
// table, which the kernel consults first (pref 0); hostile routes in the main table
// (TunnelVision) are never reached. When the tunnel device disappears the kernel deletes
// its route and the unreachable rule answers — ENETUNREACH at once, even with ksd dead.
// The egress program stays the authority either way.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <vector>

#include "killswitch/fd.hpp"
#include "killswitch/routing_plan.hpp"

namespace ks {

class PolicyRouting {
 public:
  PolicyRouting();  // rtnetlink socket in the caller's network namespace

  // Makes our rules exactly `want`: missing ones are added first, then stale ones
  // deleted, so there is never less protection than either. Ours = protocol
  // kRouteProtocol, a mark in the KS_MARK_BASE range, priority 89-91, and no selector we
  // do not use; any other rule is someone else's and left alone.
  void sync_rules(const std::vector<RuleSpec>& want);
  std::vector<RuleSpec> our_rules();
  // The same for one table's routes.
  void sync_table(std::uint32_t table, const std::vector<RouteSpec>& want);
  std::vector<RouteSpec> routes_in_table(std::uint32_t table);
  // sync_table for several tables from one dump of the routes (per family).
  void sync_tables(const std::map<std::uint32_t, std::vector<RouteSpec>>& want);
  // Teardown: every rule and table of every profile id.
  void remove_all();

 private:
  void request(void* message, std::uint32_t length, bool ignore_exists, bool ignore_missing);
  // Our tables' routes, from one dump per family.
  std::map<std::uint32_t, std::vector<RouteSpec>> routes_by_table(
      const std::set<std::uint32_t>& tables);
  void sync_table_from(std::uint32_t table, const std::vector<RouteSpec>& have,
                       const std::vector<RouteSpec>& want);
  template <typename Visit>
  void dump(std::uint16_t type, int family, std::size_t fixed_len, Visit visit);
  UniqueFd sock_;
  std::uint32_t seq_ = 1;
};

}  // namespace ks
