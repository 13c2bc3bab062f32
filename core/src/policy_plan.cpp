#include "killswitch/policy_plan.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "killswitch/error.hpp"

namespace ks {

const char* tunnel_state_name(TunnelState state) {
  switch (state) {
    case TunnelState::kUp:
      return "up";
    case TunnelState::kDown:
      return "down";
    case TunnelState::kMissing:
      return "missing";
  }
  return "unknown";
}

ProfileIds assign_profile_ids(const Config& config, const ProfileIds& existing) {
  ProfileIds ids;
  std::vector<bool> used(KS_MAX_PROFILES, false);
  used[KS_PROFILE_NONE] = true;
  for (const auto& p : config.profiles) {
    auto it = existing.find(p.name);
    if (it != existing.end() && it->second > 0 && it->second < KS_MAX_PROFILES) {
      ids[p.name] = it->second;
      used[it->second] = true;
    }
  }
  // Ids of profiles that were removed stay unused for now, so sockets still carrying
  // them match no profile (blocked) instead of silently joining a new one.
  for (const auto& [name, id] : existing)
    if (id > 0 && id < KS_MAX_PROFILES) used[id] = true;
  for (const auto& p : config.profiles) {
    if (ids.count(p.name)) continue;
    auto free = std::find(used.begin(), used.end(), false);
    if (free == used.end()) {
      // Fall back to recycling ids of removed profiles, oldest policy first.
      for (std::uint32_t id = 1; id < KS_MAX_PROFILES; ++id) {
        bool taken = false;
        for (const auto& [n, i] : ids) taken = taken || i == id;
        if (!taken) {
          ids[p.name] = id;
          break;
        }
      }
      if (!ids.count(p.name))
        throw Error("too many profiles: at most " + std::to_string(KS_MAX_PROFILES - 1));
      continue;
    }
    auto id = static_cast<std::uint32_t>(free - used.begin());
    used[id] = true;
    ids[p.name] = id;
  }
  return ids;
}

PolicyPlan plan_policy(const Config& config, const ProfileIds& ids,
                       const std::map<std::uint32_t, LinkState>& links) {
  PolicyPlan plan;
  for (const auto& profile : config.profiles) {
    std::uint32_t id = ids.at(profile.name);
    ks_profile entry{};
    entry.flags = KS_PROFILE_VALID;
    std::strncpy(entry.name, profile.name.c_str(), sizeof(entry.name) - 1);
    entry.dns_count = static_cast<ks_u32>(std::min<std::size_t>(profile.dns.size(), KS_MAX_DNS));
    for (std::size_t i = 0; i < entry.dns_count; ++i) {
      const IpAddress& a = profile.dns[i];
      if (a.family == AF_INET) {
        entry.dns[i][10] = 0xff;
        entry.dns[i][11] = 0xff;
        std::memcpy(&entry.dns[i][12], a.bytes.data(), 4);
      } else {
        std::memcpy(entry.dns[i], a.bytes.data(), 16);
      }
    }

    auto& statuses = plan.status[profile.name];
    for (const auto& name : profile.tunnels) {
      TunnelStatus st;
      st.name = name;
      for (const auto& [ifindex, link] : links) {
        if (link.name != name) continue;
        st.ifindex = ifindex;
        st.ipv4 = link.has_ipv4;
        st.ipv6 = link.has_ipv6;
        st.state = link.usable() ? TunnelState::kUp : TunnelState::kDown;
      }
      if (st.state == TunnelState::kUp) {
        std::uint32_t families = (st.ipv4 ? KS_FAMILY_V4 : 0u) | (st.ipv6 ? KS_FAMILY_V6 : 0u);
        plan.tunnels[{id, st.ifindex}] = families;
        // First usable tunnel in configuration order is the one sockets are pinned to.
        if (st.ipv4 && entry.bind_ifindex_v4 == 0) entry.bind_ifindex_v4 = st.ifindex;
        if (st.ipv6 && entry.bind_ifindex_v6 == 0) entry.bind_ifindex_v6 = st.ifindex;
      }
      statuses.push_back(st);
    }
    plan.profiles[id] = entry;
  }
  return plan;
}

std::vector<ks_lan_key> plan_lan(const Config& config, const ProfileIds& ids) {
  std::vector<ks_lan_key> keys;
  for (const auto& profile : config.profiles) {
    for (const auto& cidr : profile.allow_lan) {
      ks_lan_key key{};
      key.profile_id = htonl(ids.at(profile.name));
      if (cidr.address.family == AF_INET) {
        key.addr[10] = 0xff;
        key.addr[11] = 0xff;
        std::memcpy(&key.addr[12], cidr.address.bytes.data(), 4);
        key.prefixlen = static_cast<ks_u32>(32 + 96 + cidr.prefix_len);
      } else {
        std::memcpy(key.addr, cidr.address.bytes.data(), 16);
        key.prefixlen = static_cast<ks_u32>(32 + cidr.prefix_len);
      }
      keys.push_back(key);
    }
  }
  return keys;
}

CgroupChanges plan_cgroup_changes(const std::map<std::uint64_t, ks_cgroup_value>& have,
                                  const std::map<std::uint64_t, ks_cgroup_value>& want) {
  CgroupChanges changes;
  for (const auto& [id, value] : have)
    if (!want.count(id)) changes.remove.push_back(id);
  for (const auto& [id, value] : want) {
    auto it = have.find(id);
    if (it == have.end() || it->second.profile_id != value.profile_id ||
        it->second.app_slot != value.app_slot)
      changes.set[id] = value;
  }
  return changes;
}

std::vector<std::pair<std::string, TunnelStatus>> changed_tunnels(
    const std::map<std::string, std::vector<TunnelStatus>>& before,
    const std::map<std::string, std::vector<TunnelStatus>>& after) {
  std::vector<std::pair<std::string, TunnelStatus>> changed;
  for (const auto& [profile, tunnels] : after) {
    auto old = before.find(profile);
    for (std::size_t i = 0; i < tunnels.size(); ++i) {
      const TunnelStatus& t = tunnels[i];
      const bool same = old != before.end() && i < old->second.size() &&
                        old->second[i].name == t.name && old->second[i].state == t.state &&
                        old->second[i].ifindex == t.ifindex && old->second[i].ipv4 == t.ipv4 &&
                        old->second[i].ipv6 == t.ipv6;
      if (!same) changed.emplace_back(profile, t);
    }
  }
  return changed;
}

std::string tunnel_summary(const std::map<std::string, std::vector<TunnelStatus>>& status) {
  std::string line;
  for (const auto& [profile, tunnels] : status)
    for (const auto& t : tunnels)
      line += (line.empty() ? "" : " ") + profile + ":" + t.name + "=" + tunnel_state_name(t.state);
  return line;
}

}  // namespace ks
