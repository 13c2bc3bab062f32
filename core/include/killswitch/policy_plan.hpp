// Pure translation of (configuration, interface states) into BPF map contents. ksd
// writes what this computes; keeping it free of kernel access makes it unit-testable.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "killswitch/config.hpp"
#include "killswitch/links.hpp"
#include "killswitch_abi.h"

namespace ks {

using ProfileIds = std::map<std::string, std::uint32_t>;  // profile name -> id (1..63)

// Keeps the ids already in use (read back from pinned maps, so sockets classified by an
// earlier ksd keep meaning the same profile) and gives new profiles the lowest free id.
// Throws ks::Error when more than KS_MAX_PROFILES - 1 profiles are configured.
ProfileIds assign_profile_ids(const Config& config, const ProfileIds& existing);

// A configured tunnel's state as ksd sees it. "up": the link exists and is usable (up,
// with an address of a family); "down": it exists but is not; "missing": no such link.
enum class TunnelState { kUp, kDown, kMissing };
// "up", "down", "missing": the words of `ksctl status` and ksd's log.
const char* tunnel_state_name(TunnelState state);

struct TunnelStatus {
  std::string name;
  TunnelState state = TunnelState::kMissing;
  std::uint32_t ifindex = 0;
  bool ipv4 = false;
  bool ipv6 = false;
};

using TunnelMap = std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint32_t>;

struct PolicyPlan {
  TunnelMap tunnels;                                        // {profile, ifindex} -> KS_FAMILY_*
  std::map<std::uint32_t, ks_profile> profiles;             // id -> ks_profiles entry
  std::map<std::string, std::vector<TunnelStatus>> status;  // profile -> tunnels, config order
};

PolicyPlan plan_policy(const Config& config, const ProfileIds& ids,
                       const std::map<std::uint32_t, LinkState>& links);

// The writes that turn the classification map's entries `have` into `want` (cgroup id ->
// profile and app slot): only what differs, since with 10,000 apps this runs on every
// link event.
struct CgroupChanges {
  std::vector<std::uint64_t> remove;
  std::map<std::uint64_t, ks_cgroup_value> set;
};
CgroupChanges plan_cgroup_changes(const std::map<std::uint64_t, ks_cgroup_value>& have,
                                  const std::map<std::uint64_t, ks_cgroup_value>& want);

// The tunnels whose state, ifindex or families differ from `before` (new ones included),
// as (profile, tunnel) in the order of `after`.
std::vector<std::pair<std::string, TunnelStatus>> changed_tunnels(
    const std::map<std::string, std::vector<TunnelStatus>>& before,
    const std::map<std::string, std::vector<TunnelStatus>>& after);
// One line, "profile:tunnel=state ...": the daemon's status for its service manager.
std::string tunnel_summary(const std::map<std::string, std::vector<TunnelStatus>>& status);

// allow_lan CIDRs of every profile as LPM keys (IPv4 stored IPv4-mapped).
std::vector<ks_lan_key> plan_lan(const Config& config, const ProfileIds& ids);

}  // namespace ks
