#include "reports.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <span>
#include <unordered_map>
#include <unordered_set>

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
  // Ready scopes (a placeholder waiting for a launch) are not apps.
  const Config& config = policy_.config();
  std::size_t count = 0;
  std::unordered_set<std::string> ready;
  for (std::uint64_t id : registry_.ready())
    if (const App* app = registry_.find(id)) ready.insert(app->path);
  if (tree_.holds_only(config, registry_.apps().size())) {
    count = registry_.apps().size() - ready.size();
    for (const auto& p : config.profiles)
      if (!cgroup_pids(tree_.profile_slice_path(p.name)).empty()) ++count;
  } else {
    tree_.walk([&](const std::string& cg) {
      if (!ready.contains(cg) && !cgroup_pids(cg).empty()) ++count;
    });
  }
  return count;
}

std::optional<TaskCgroupsReading> Reports::start_pids_read() {
  if (!task_cgroups_tried_) {
    task_cgroups_tried_ = true;
    task_cgroups_loading_ = std::async(std::launch::async, [] {
      TaskCgroupsLoad load;
      load.loaded = TaskCgroups::load(load.why_not);
      return load;
    });
  }
  if (task_cgroups_loading_.valid() &&
      task_cgroups_loading_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    TaskCgroupsLoad load = task_cgroups_loading_.get();
    task_cgroups_ = std::move(load.loaded);
    if (!task_cgroups_) log_info("ksctl list reads every app's cgroup.procs: " + load.why_not);
  }
  if (!task_cgroups_) return std::nullopt;
  try {
    return task_cgroups_->start_read();
  } catch (const Error& e) {
    log_warning(std::string("ksctl list falls back to cgroup.procs: ") + e.what());
    return std::nullopt;
  }
}

// The list, made a few apps at a time from a snapshot taken when it was asked for (which
// cgroups, then their classification, counters and pids, each read a step per turn of the
// loop): the text of 10,000 apps is 4 MB, and ksd neither holds it all nor stops serving
// its other clients for more than a few milliseconds at a time while it is made and goes
// out.
class Reports::ListSource : public TextSource {
 public:
  ListSource(Reports& reports, std::optional<TaskCgroupsReading> pids_reading)
      : reports_(reports), pids_reading_(std::move(pids_reading)) {
    const Config& config = reports.policy_.config();
    const ProtectedTree& tree = reports.tree_;
    AppRegistry& registry = reports.registry_;
    entries_.reserve(registry.apps().size() + config.profiles.size() + 1);  // no rehash later
    // This part holds up ksd's other clients, so it copies as little as it can. Only known
    // cgroups in the tree: those are the ones to list, no directory walk (three syscalls
    // per app), and the apps by id alone (their paths, profiles and commands are ksd's own,
    // read when each is written). Anything else and the walk finds it.
    if (tree.holds_only(config, registry.apps().size())) {
      rows_.reserve(config.profiles.size() + registry.apps().size());
      for (const auto& p : config.profiles) rows_.push_back(Row{tree.profile_slice_path(p.name)});
      for (const auto& [id, app] : registry.apps()) rows_.push_back(Row{{}, id, true});
    } else {
      std::unordered_map<std::string, std::uint64_t> tracked;
      for (const auto& [id, app] : registry.apps()) tracked[app.path] = id;
      tree.walk([&](const std::string& cg) {
        auto app = tracked.find(cg);
        rows_.push_back(Row{cg, app == tracked.end() ? 0 : app->second, app != tracked.end()});
      });
    }
  }

  bool next(std::string& out) override {
    if (stage_ == Stage::kDone) return false;
    // The maps a batch per turn of the loop (about a millisecond each with 10,000 apps; read
    // whole in one turn they were 9 ms).
    const Enforcement& maps = reports_.enforcement_;
    if (stage_ == Stage::kEntries) {
      maps.read_cgroup_entries(entries_at_, entries_);
      if (entries_at_.done) stage_ = Stage::kCounters;
      return true;
    }
    if (stage_ == Stage::kCounters) {
      maps.read_counters_by_cgroup(counters_at_, by_cgroup_);
      if (counters_at_.done) stage_ = Stage::kSlots;
      return true;
    }
    if (stage_ == Stage::kSlots) {
      by_slot_ = maps.all_counters_by_slot();
      stage_ = Stage::kPids;
      return true;
    }
    if (stage_ == Stage::kPids) {
      // The task iterator's walk (16 ms with 10,000 apps here) a step per turn of the loop.
      if (pids_reading_) {
        try {
          if (pids_reading_->step(kPidBytesPerStep)) return true;  // nothing appended: later
          all_pids_ = pids_reading_->take();
        } catch (const Error& e) {
          log_warning(std::string("ksctl list falls back to cgroup.procs: ") + e.what());
        }
        pids_reading_.reset();
      }
      use_pids();
      stage_ = Stage::kStart;
    }
    JsonText j(out, after_value_);
    if (stage_ == Stage::kStart) {
      j.begin_object().member("ok", true).key("apps").begin_array();
      stage_ = Stage::kApps;
    }
    // A few apps per call: the server asks again until it has a fragment's worth.
    for (int n = 0; n < kAppsPerCall && at_ < rows_.size(); ++at_) n += write_app(j, rows_[at_]);
    if (at_ == rows_.size()) {
      j.end_array().end_object();
      stage_ = Stage::kDone;
    }
    after_value_ = j.after_value();
    return true;
  }

 private:
  struct Row {
    std::string path;      // absolute cgroup path (of an app ksd tracks: may be left empty)
    std::uint64_t id = 0;  // known for apps ksd tracks, otherwise found when needed
    bool is_app = false;   // tracked by ksd
  };
  // The snapshot's parts, a step at a time, then the text.
  enum class Stage { kEntries, kCounters, kSlots, kPids, kStart, kApps, kDone };
  static constexpr int kAppsPerCall = 16;
  // 256 processes: ~1 ms of the kernel's walk here (32 KiB steps held ksd up for 7 ms).
  static constexpr std::size_t kPidBytesPerStep = 4 * 1024;

  // Without the iterator each app's cgroup.procs is read relative to its slice, opened
  // once: sorted, each slice's apps come together.
  void use_pids() {
    if (all_pids_) return;
    for (Row& row : rows_)
      if (row.is_app && row.path.empty())
        if (const App* app = reports_.registry_.find(row.id)) row.path = app->path;
    std::sort(rows_.begin(), rows_.end(),
              [](const Row& a, const Row& b) { return a.path < b.path; });
  }

  // One app's object, when it still has processes; 1 when one was written.
  int write_app(JsonText& j, const Row& row) {
    const ProtectedTree& tree = reports_.tree_;
    // An app ksd tracks that ended since the snapshot has no processes to list.
    App* app = row.is_app ? reports_.registry_.find(row.id) : nullptr;
    if (row.is_app && (!app || app->holder != 0)) return 0;  // (a ready scope is no app yet)
    const std::string& path = app ? app->path : row.path;
    // The id of a cgroup ksd does not track needs a stat; 0 when it is gone meanwhile.
    auto id_of = [&]() -> std::uint64_t {
      if (app) return row.id;
      try {
        return cgroup_id(path);
      } catch (const Error&) {
        return 0;
      }
    };
    std::vector<pid_t> read_pids;
    std::span<const pid_t> pids;
    std::uint64_t id = 0;
    if (all_pids_) {
      if ((id = id_of()) == 0) return 0;
      pids = all_pids_->of(id);
    } else {
      const std::size_t slash = path.find_last_of('/');
      if (std::string_view(path).substr(0, slash) != parent_path_) {
        parent_path_ = path.substr(0, slash);
        parent_ = UniqueFd(::open(parent_path_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      }
      read_pids =
          parent_ ? cgroup_pids_at(parent_.get(), path.substr(slash + 1)) : cgroup_pids(path);
      pids = read_pids;
    }
    if (pids.empty()) return 0;
    if (!all_pids_ && (id = id_of()) == 0) return 0;  // (a stat: only for cgroups with processes)
    const auto entry = entries_.find(id);
    const std::uint32_t profile =
        app && entry != entries_.end()
            ? entry->second.profile_id
            : tree.profile_of(path, [&](std::uint64_t cgroup) -> std::optional<std::uint32_t> {
                auto it = entries_.find(cgroup);
                if (it == entries_.end()) return std::nullopt;
                return it->second.profile_id;
              });
    if (app && app->command.empty()) app->command = read_cmdline(pids.front());
    Counters c;
    if (auto it = by_cgroup_.find(id); it != by_cgroup_.end()) c += it->second;
    if (entry != entries_.end() && entry->second.app_slot != 0 &&
        entry->second.app_slot < by_slot_.size())
      c += by_slot_[entry->second.app_slot];

    const std::string name = reports_.policy_.name_of(profile);
    j.begin_object().member("cgroup", tree.relative(path)).member("cgroup_id", id);
    j.member("profile", name.front() == '(' ? std::string("(none: blocked)") : name);
    j.key("pids").begin_array();
    for (pid_t pid : pids) j.value(std::int64_t{pid});
    j.end_array();
    j.member("command", app ? app->command : read_cmdline(pids.front()));
    j.member("allowed_packets", c.allowed_packets).member("blocked_packets", c.blocked_packets);
    j.key("counters").counters(c).end_object();
    return 1;
  }

  Reports& reports_;
  std::optional<TaskCgroupsReading> pids_reading_;
  std::optional<PidsByCgroup> all_pids_;
  std::unordered_map<std::uint64_t, ks_cgroup_value> entries_;
  std::unordered_map<std::uint64_t, Counters> by_cgroup_;
  std::vector<Counters> by_slot_;
  Enforcement::BatchPosition entries_at_, counters_at_;
  std::vector<Row> rows_;
  std::size_t at_ = 0;
  Stage stage_ = Stage::kEntries;
  bool after_value_ = false;  // the text so far ends in an app (the next one needs a comma)
  std::string parent_path_;
  UniqueFd parent_;
};

std::unique_ptr<TextSource> Reports::list_source() {
  return std::make_unique<ListSource>(*this, start_pids_read());
}

}  // namespace ks
