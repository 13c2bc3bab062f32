#include "policy_sync.hpp"

#include <systemd/sd-daemon.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"
#include "killswitch/log.hpp"

namespace ks {
namespace {

int read_sysctl_int(const std::string& path) {
  std::ifstream in(path);
  int v = -1;
  in >> v;
  return in ? v : -1;
}

// Replies to protected sockets arrive on the tunnel while the main table may route their
// source elsewhere (split tunnel); strict reverse-path filtering would drop them. The
// effective value is max(all, interface), so loosening the tunnel alone is enough.
void loosen_rp_filter(const std::string& tunnel) {
  const std::string dev = "/proc/sys/net/ipv4/conf/" + tunnel + "/rp_filter";
  int all = read_sysctl_int("/proc/sys/net/ipv4/conf/all/rp_filter");
  int own = read_sysctl_int(dev);
  if (own < 0 || std::max(all, own) != 1) return;
  std::ofstream out(dev);
  out << 2;
  out.flush();
  if (out)
    log_info("set " + dev +
             " to 2 (loose): strict reverse-path filtering drops the tunnel's replies");
  else
    log_warning("cannot loosen " + dev + "; replies through " + tunnel + " may be dropped");
}

}  // namespace

Config load_config_with_probe(const std::string& path) {
  Config config = load_config(path);
  config.profiles.push_back(Profile{std::string(kVerifyProfile), {}, {}, {}});
  return config;
}

PolicySync::PolicySync(std::string config_path, Enforcement& enforcement, ProtectedTree& tree,
                       const AppRegistry& registry, LinkWatcher& links)
    : config_path_(std::move(config_path)),
      config_(load_config_with_probe(config_path_)),
      enforcement_(enforcement),
      tree_(tree),
      registry_(registry),
      links_(links) {}

void PolicySync::start() { ids_ = assign_profile_ids(config_, pinned_ids()); }

ProfileIds PolicySync::pinned_ids() {
  // Ids given before (by this or an earlier ksd), removed profiles included: sockets carry
  // them in their storage, so an id never silently changes its meaning.
  ProfileIds ids;
  for (std::uint32_t id = 1; id < KS_MAX_PROFILES; ++id) {
    ks_profile p = enforcement_.read_profile(id);
    if (p.name[0]) {
      ids[std::string(p.name, strnlen(p.name, sizeof(p.name)))] = id;
      named_ids_.insert(id);
    }
  }
  return ids;
}

std::uint32_t PolicySync::id_of(const std::string& profile) const {
  auto it = ids_.find(profile);
  if (it != ids_.end()) return it->second;
  std::string known;
  for (const auto& p : config_.profiles)
    if (p.name != kVerifyProfile) known += (known.empty() ? "" : ", ") + p.name;
  throw Error("unknown profile \"" + profile + "\" (configured: " + known + ")");
}

std::string PolicySync::name_of(std::uint32_t profile_id) const {
  for (const auto& [name, id] : ids_)
    if (id == profile_id) return name;
  return profile_id == KS_PROFILE_NONE ? "(none)" : "(removed)";
}

const std::vector<TunnelStatus>& PolicySync::tunnels_of(const std::string& profile) const {
  static const std::vector<TunnelStatus> none;
  auto it = plan_.status.find(profile);
  return it != plan_.status.end() ? it->second : none;
}

void PolicySync::apply(const char* why) {
  PolicyPlan plan = plan_policy(config_, ids_, links_.links());
  // Order matters for fail-closed: the tunnel sets go first (a removed tunnel leaves its
  // profile's set before anything else changes; a removed profile's set is emptied before
  // the profile is marked invalid, since egress takes a set hit as proof of a valid
  // profile), then the profile entries that name bind targets, the LAN exceptions, the
  // routing, and last the classification of cgroups.
  stale_ = true;  // until every write below is done
  const auto t0 = std::chrono::steady_clock::now();
  enforcement_.replace_tunnels(plan.tunnels);
  write_profiles(plan);
  enforcement_.replace_lan(plan_lan(config_, ids_));
  write_routing(plan);
  // A tunnel that came back carries traffic from here on (the routes were the last thing
  // its packets waited for); the recovery benchmark reads these two times from the log.
  const auto t_routed = std::chrono::steady_clock::now();
  write_classification();
  const auto t_done = std::chrono::steady_clock::now();
  auto ms = [t0](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(t - t0).count();
  };
  log_changes(plan, why, ms(t_routed), ms(t_done));
  plan_ = std::move(plan);
  stale_ = false;
  sd_notifyf(0, "STATUS=%s", tunnel_summary(plan_.status).c_str());
}

void PolicySync::write_profiles(const PolicyPlan& plan) {
  for (const auto& [id, profile] : plan.profiles) {
    named_ids_.insert(id);
    auto written = written_profiles_.find(id);
    if (written != written_profiles_.end() &&
        std::memcmp(&written->second, &profile, sizeof(profile)) == 0)
      continue;  // unchanged since this ksd wrote it
    enforcement_.write_profile(id, profile);
    written_profiles_[id] = profile;
  }
  // A profile no longer configured has a name (only named ids were ever valid).
  for (std::uint32_t id : named_ids_) {
    if (plan.profiles.count(id)) continue;
    written_profiles_.erase(id);
    ks_profile old = enforcement_.read_profile(id);
    if (old.flags & KS_PROFILE_VALID) {
      old.flags = 0;  // removed profile: its sockets are blocked
      old.bind_ifindex_v4 = old.bind_ifindex_v6 = 0;
      enforcement_.write_profile(id, old);
    }
  }
}

void PolicySync::write_routing(const PolicyPlan& plan) {
  // Every profile id in use (and KS_PROFILE_NONE, and ids of removed profiles) has its
  // rules; tables of invalid profiles stay empty, so their lookups end at the unreachable
  // rule.
  std::set<std::uint32_t> in_use = named_ids_;  // (write_profiles added the plan's)
  in_use.insert(KS_PROFILE_NONE);
  std::map<std::uint32_t, std::vector<RouteSpec>> tables;
  for (std::uint32_t id : in_use) {
    auto it = plan.profiles.find(id);
    tables[table_for_profile(id)] =
        plan_routes(it != plan.profiles.end() ? it->second : ks_profile{});
  }
  routing_.sync_tables(tables);  // one route dump per family for all of them
  routing_.sync_rules(plan_all_rules(config_, ids_, in_use, links_.links()));
}

void PolicySync::write_classification() {
  // Tree root -> default profile (or none), profile slices, apps. Entries for cgroups
  // that no longer exist are dropped.
  std::map<std::uint64_t, ks_cgroup_value> want;
  auto def = ids_.find(std::string(kDefaultProfile));
  want[cgroup_id(tree_.root())] = {def != ids_.end() ? def->second : KS_PROFILE_NONE, 0};
  for (const auto& p : config_.profiles) {
    const std::string slice = tree_.profile_slice_path(p.name);
    ensure_cgroup_dir(slice);
    want[cgroup_id(slice)] = {ids_.at(p.name), 0};
  }
  for (const auto& [id, app] : registry_.apps()) {
    auto pid = ids_.find(app.profile);
    want[id] = {pid != ids_.end() ? pid->second : KS_PROFILE_NONE, app.slot};
  }
  const CgroupChanges changes = plan_cgroup_changes(enforcement_.cgroup_entries(), want);
  for (std::uint64_t id : changes.remove) enforcement_.remove_cgroup(id);
  for (const auto& [id, value] : changes.set)
    enforcement_.set_cgroup(id, value.profile_id, value.app_slot);
  // Slots whose classification did not change keep their fast-path rows; rows that are
  // not theirs (made by a ksd without them, e.g. before an upgrade) become theirs here.
  for (const auto& [id, value] : want)
    if (value.app_slot != 0) enforcement_.give_fast_slot(value.app_slot, value.profile_id);
}

void PolicySync::log_changes(const PolicyPlan& plan, const char* why, double routed_ms,
                             double done_ms) {
  char took[80];
  std::snprintf(took, sizeof(took), " [routed in %.2f ms, policy in %.2f ms]", routed_ms, done_ms);
  for (const auto& [profile, t] : changed_tunnels(plan_.status, plan.status)) {
    if (t.state == TunnelState::kUp) loosen_rp_filter(t.name);
    log_info(std::string(why) + ": profile " + profile + ": tunnel " + t.name + " " +
             tunnel_state_name(t.state) +
             (t.ifindex ? " (ifindex " + std::to_string(t.ifindex) + ")" : "") +
             (t.state == TunnelState::kUp
                  ? std::string(t.ipv4 ? " ipv4" : "") + (t.ipv6 ? " ipv6" : "")
                  : "") +
             took);
  }
}

bool PolicySync::apply_or_retry(const char* why) {
  try {
    apply(why);
    return true;
  } catch (const std::exception& e) {
    log_error(std::string("cannot update the policy (will retry): ") + e.what());
    stale_ = true;
    return false;
  }
}

void PolicySync::retry() {
  if (!stale_) return;
  links_.resync();
  apply("retry");
  log_info("policy is current again");
}

void PolicySync::reload() {
  // Parse and number first: a bad file throws here, before anything is touched.
  Config next = load_config_with_probe(config_path_);
  ProfileIds ids = assign_profile_ids(next, pinned_ids());
  config_ = std::move(next);
  ids_ = std::move(ids);
  try {
    tree_.create(config_);
    apply("reload");
  } catch (const std::exception& e) {
    stale_ = true;  // the sweep retries
    throw Error(std::string("reload accepted but not applied yet: ") + e.what());
  }
}

}  // namespace ks
