#include "reports.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <span>
#include <unordered_map>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"
#include "killswitch/json_text.hpp"
#include "killswitch/log.hpp"

namespace ks {

std::string read_cmdline(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  std::replace(raw.begin(), raw.end(), '\0', ' ');
  return raw;
}

Reports::Reports(std::string pin_dir, const Enforcement& enforcement, const PolicySync& policy,
                 const ProtectedTree& tree, AppRegistry& registry)
    : pin_dir_(std::move(pin_dir)),
      enforcement_(enforcement),
      policy_(policy),
      tree_(tree),
      registry_(registry) {}

std::string Reports::status_text() {
  std::string out;
  JsonText j(out);
  j.begin_object().member("ok", true).member("daemon", "running").member("version", KS_VERSION);
  j.member("pid", std::int64_t{::getpid()}).member("config", policy_.config_path());
  j.member("cgroup_root", tree_.root()).member("pin_dir", pin_dir_);
  // Tunnels are looked up, and protected sockets judged, in ksd's network namespace.
  struct stat netns {};
  if (::stat("/proc/self/ns/net", &netns) == 0)
    j.member("netns_inode", static_cast<std::uint64_t>(netns.st_ino));

  const std::string missing = tree_.not_effective_on(tree_.root());
  j.key("programs").begin_object();
  j.member("pinned", Enforcement::pins_present(pin_dir_)).member("attached", missing.empty());
  if (!missing.empty()) j.member("missing", missing);
  j.key("ids").begin_object();
  for (const auto& [hook, id] : enforcement_.program_ids()) j.member(hook, id);
  j.end_object().end_object();

  j.key("profiles").begin_object();
  for (const auto& p : policy_.config().profiles) {
    if (p.name == kVerifyProfile) continue;  // internal
    const std::uint32_t id = policy_.ids().at(p.name);
    const auto& tunnels = policy_.tunnels_of(p.name);
    j.key(p.name).begin_object();
    j.member("id", id).member("cgroup", tree_.relative(tree_.profile_slice_path(p.name)));
    j.key("tunnels").begin_array();
    bool any_up = false;
    for (const auto& t : tunnels) {
      j.begin_object().member("name", t.name).member("state", tunnel_state_name(t.state));
      j.member("ifindex", t.ifindex).member("ipv4", t.ipv4).member("ipv6", t.ipv6).end_object();
      any_up = any_up || t.state == TunnelState::kUp;
    }
    j.end_array();
    if (any_up) {
      j.member("traffic", "through tunnel");
    } else {
      // Why: each tunnel and its state ("wg0 missing", "wg1 down").
      std::string why;
      for (const auto& t : tunnels)
        why += (why.empty() ? "" : ", ") + t.name + " " + tunnel_state_name(t.state);
      j.member("traffic", "blocked: " + (why.empty() ? std::string("no tunnel configured") : why));
    }
    j.key("counters").counters(enforcement_.profile_counters(id));
    j.key("dns").begin_array();
    for (const auto& d : p.dns) j.value(d.text);
    j.end_array().key("allow_lan").begin_array();
    for (const auto& c : p.allow_lan) j.value(c.text);
    j.end_array().end_object();
  }
  j.end_object();

  j.member("protected_apps", static_cast<std::uint64_t>(protected_apps()));
  const Counters totals = enforcement_.totals();
  j.member("blocked_total", totals.blocked_packets + totals.blocked_connects);
  j.key("counters").counters(totals).end_object();
  return out;
}

std::size_t Reports::protected_apps() const {
  // With only known cgroups in the tree, the tracked apps are the count (one that emptied
  // leaves at the next sweep, within a second): no walk and no read per app, which with
  // 10,000 apps cost 0.4 s per status. Anything unknown in the tree: walk and look.
  const Config& config = policy_.config();
  std::size_t count = 0;
  if (tree_.holds_only(config, registry_.apps().size())) {
    count = registry_.apps().size();
    for (const auto& p : config.profiles)
      if (!cgroup_pids(tree_.profile_slice_path(p.name)).empty()) ++count;
  } else {
    tree_.walk([&](const std::string& cg) {
      if (!cgroup_pids(cg).empty()) ++count;
    });
  }
  return count;
}

std::optional<PidsByCgroup> Reports::pids_by_cgroup() {
  if (!task_cgroups_tried_) {
    task_cgroups_tried_ = true;
    std::string why_not;
    task_cgroups_ = TaskCgroups::load(why_not);
    if (!task_cgroups_) log_info("ksctl list reads every app's cgroup.procs: " + why_not);
  }
  if (!task_cgroups_) return std::nullopt;
  try {
    return task_cgroups_->read();
  } catch (const Error& e) {
    log_warning(std::string("ksctl list falls back to cgroup.procs: ") + e.what());
    return std::nullopt;
  }
}

std::string Reports::list_text() {
  const Config& config = policy_.config();
  // One read of the classification map for the whole list, not one per app.
  const auto entries = enforcement_.cgroup_entries();
  std::map<std::uint64_t, std::uint32_t> known;
  for (const auto& [id, value] : entries) known[id] = value.profile_id;
  // The apps ksd tracks need no stat, no walk up the tree and no /proc read: their id,
  // profile and command are known (with 10,000 apps, that was most of the time).
  std::unordered_map<std::string, App*> tracked;
  for (auto& [id, app] : registry_.apps()) tracked[app.path] = &app;
  const auto by_cgroup = enforcement_.all_counters_by_cgroup();
  const auto by_slot = enforcement_.all_counters_by_slot();
  // Only known cgroups in the tree: those are the ones to list, no directory walk (three
  // syscalls per app). Anything else and the walk finds it.
  std::vector<std::string> cgroups;
  if (tree_.holds_only(config, registry_.apps().size())) {
    for (const auto& p : config.profiles) cgroups.push_back(tree_.profile_slice_path(p.name));
    for (const auto& [id, app] : registry_.apps()) cgroups.push_back(app.path);
  } else {
    tree_.walk([&](const std::string& cg) { cgroups.push_back(cg); });
  }
  std::string out;
  // About 430 bytes per app; reserved generously, so that the text is never copied to a
  // doubled buffer (pages reserved but never written cost no memory).
  out.reserve(cgroups.size() * 1024 + 64);
  JsonText j(out);
  j.begin_object().member("ok", true).key("apps").begin_array();
  const auto all_pids = pids_by_cgroup();
  // Without the iterator: apps share their slice, so open it once and read each app's
  // cgroup.procs relative to it (sorted, so that each slice's apps come together).
  std::sort(cgroups.begin(), cgroups.end());
  std::string parent_path;
  UniqueFd parent;
  for (const std::string& cg : cgroups) {
    auto app = tracked.find(cg);
    const bool is_app = app != tracked.end();
    // The id of a cgroup ksd does not track needs a stat; 0 when it is gone meanwhile.
    auto id_of = [&]() -> std::uint64_t {
      if (is_app) return app->second->cgroup_id;
      try {
        return cgroup_id(cg);
      } catch (const Error&) {
        return 0;
      }
    };
    std::vector<pid_t> read_pids;
    std::span<const pid_t> pids;
    std::uint64_t id = 0;
    if (all_pids) {
      if ((id = id_of()) == 0) continue;
      pids = all_pids->of(id);
    } else {
      const std::size_t slash = cg.find_last_of('/');
      if (std::string_view(cg).substr(0, slash) != parent_path) {
        parent_path = cg.substr(0, slash);
        parent = UniqueFd(::open(parent_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      }
      read_pids = parent ? cgroup_pids_at(parent.get(), cg.substr(slash + 1)) : cgroup_pids(cg);
      pids = read_pids;
    }
    if (pids.empty()) continue;
    if (!all_pids && (id = id_of()) == 0) continue;  // (a stat: only for cgroups with processes)
    std::uint32_t profile = KS_PROFILE_NONE;
    if (auto entry = known.find(id); is_app && entry != known.end())
      profile = entry->second;
    else
      profile = tree_.profile_of(cg, known);
    if (is_app && app->second->command.empty()) app->second->command = read_cmdline(pids.front());
    Counters c;
    if (auto it = by_cgroup.find(id); it != by_cgroup.end()) c += it->second;
    if (auto entry = entries.find(id); entry != entries.end() && entry->second.app_slot != 0 &&
                                       entry->second.app_slot < by_slot.size())
      c += by_slot[entry->second.app_slot];

    const std::string name = policy_.name_of(profile);
    j.begin_object().member("cgroup", tree_.relative(cg)).member("cgroup_id", id);
    j.member("profile", name.front() == '(' ? std::string("(none: blocked)") : name);
    j.key("pids").begin_array();
    for (pid_t pid : pids) j.value(std::int64_t{pid});
    j.end_array();
    j.member("command", is_app ? app->second->command : read_cmdline(pids.front()));
    j.member("allowed_packets", c.allowed_packets).member("blocked_packets", c.blocked_packets);
    j.key("counters").counters(c).end_object();
  }
  j.end_array().end_object();
  return out;
}

}  // namespace ks
