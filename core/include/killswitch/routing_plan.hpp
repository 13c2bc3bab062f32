// What ksd's policy routing should hold, as data: the rules and routes it plans for each
// profile and tunnel, and the parser of a rule as rtnetlink reports it. Pure (no socket):
// unit-tested, fuzzed; PolicyRouting (routing.hpp) makes the kernel's copy equal to it.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "killswitch/config.hpp"
#include "killswitch/links.hpp"
#include "killswitch/policy_plan.hpp"
#include "killswitch_abi.h"

namespace ks {

inline constexpr std::uint32_t kLanRulePriority = 89;
inline constexpr std::uint32_t kTableRulePriority = 90;  // before main (32766) and VPN clients
inline constexpr std::uint32_t kUnreachableRulePriority = 91;
inline constexpr std::uint32_t kSourceRulePriority = 92;
inline constexpr std::uint32_t kSourceUnreachableRulePriority = 93;
inline constexpr std::uint8_t kRouteProtocol = 0x4b;  // marks our routes in `ip route` ("proto 75")

inline std::uint32_t table_for_profile(std::uint32_t id) { return KS_MARK_BASE | id; }
// Bytes of an address of the family: 4 for AF_INET, 16 for AF_INET6.
inline std::size_t address_length(int family) { return family == AF_INET ? 4 : 16; }

struct RouteSpec {
  int family = 0;  // AF_INET or AF_INET6
  std::uint32_t oif = 0;
  std::uint32_t metric = 1;  // not 0: IPv6 would store 1024 and never compare equal
  // What we plan is always "default dev <oif>"; a dump reports whatever the table holds
  // (a route of an older version, one someone else added), so it can be deleted exactly.
  std::uint8_t type = 1;  // RTN_UNICAST
  std::array<std::uint8_t, 16> dst{};
  std::uint8_t dst_len = 0;

  bool operator==(const RouteSpec&) const = default;
  std::string describe() const;
};

struct RuleSpec {
  int family = 0;
  std::uint32_t priority = 0;
  std::uint32_t mark = 0;
  std::uint32_t mark_mask = 0;  // KS_MARK_RULE_MASK for ours (0xffffffff: an older ksd's)
  std::uint8_t action = 0;      // FR_ACT_TO_TBL or FR_ACT_UNREACHABLE
  std::uint32_t table = 0;      // FR_ACT_TO_TBL only
  std::array<std::uint8_t, 16> dst{};
  std::uint8_t dst_len = 0;
  std::array<std::uint8_t, 16> src{};  // source rules (92, 93) only; mark is 0 there
  std::uint8_t src_len = 0;

  bool operator==(const RuleSpec&) const = default;
  std::string describe() const;
};

// What ksd wants (pure; unit-tested). `profile` is null for ids without a configured
// profile (no profile, removed profiles): those get the table and unreachable rules only.
std::vector<RouteSpec> plan_routes(const ks_profile& entry);
std::vector<RuleSpec> plan_rules(std::uint32_t profile_id, const Profile* profile);
// Source rules for one tunnel address: replies from it go by `table`, or nowhere.
std::vector<RuleSpec> plan_source_rules(const LinkAddress& address, std::uint32_t table);
// Every rule ksd keeps: each profile id in use (`ids_in_use`: KS_PROFILE_NONE, configured
// profiles and removed ones whose sockets may still exist) gets its rules; every address of
// a configured tunnel gets source rules by the table of the first profile (in config order)
// that names the tunnel, so kernel-made replies (RST, ICMP) from it stay in the tunnel.
std::vector<RuleSpec> plan_all_rules(const Config& config, const ProfileIds& ids,
                                     const std::set<std::uint32_t>& ids_in_use,
                                     const std::map<std::uint32_t, LinkState>& links);

// One RTM_NEWRULE/RTM_DELRULE message as rtnetlink sends it (a dump's or a notification's):
// the rule, and whether it is one of ours (see sync_rules). Reads only within `length`;
// nullopt when the message is too short to be a rule.
struct ParsedRule {
  RuleSpec rule;
  bool ours = false;
};
std::optional<ParsedRule> parse_rule_message(const void* message, std::size_t length);

}  // namespace ks
