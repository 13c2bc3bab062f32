// ksd: keeps the enforcement programs pinned and attached, the maps current with the
// tunnels' real state, and answers the admin socket.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "admin_server.hpp"
#include "event_loop.hpp"
#include "killswitch/app_slots.hpp"
#include "killswitch/config.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/events.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/ipc.hpp"
#include "killswitch/links.hpp"
#include "killswitch/policy_plan.hpp"
#include "killswitch/routing.hpp"
#include "killswitch/task_cgroups.hpp"
#include "killswitch/transient_scopes.hpp"

namespace ks {

struct DaemonOptions {
  std::string config_path;
  std::string socket_path;
  std::string pin_dir = "/sys/fs/bpf/killswitch";
  std::string slice = "killswitch.slice";
  // Put enforcement in place (maps, rules, pinned links) and exit without serving: the
  // early-boot unit, before any network is up. A later ksd re-adopts the pins.
  bool attach_only = false;
};

class Daemon {
 public:
  // Everything that must hold before enforcement is trusted happens here, in order:
  // config, cgroup tree, programs loaded (pinned maps re-used), maps written, links
  // attached or atomically updated, admin socket listening. Throws ks::Error.
  explicit Daemon(DaemonOptions options);

  // Event loop until SIGTERM/SIGINT. Leaves enforcement pinned when it returns.
  void run();

 private:
  struct App {
    std::string path;  // absolute cgroup path
    std::string profile;
    std::uint64_t cgroup_id = 0;
    // Made by ksd (ksd removes it when it empties); false for systemd's units, which
    // systemd removes itself.
    bool owned = true;
    std::uint32_t slot = 0;    // counter slot (AppSlots), 0: none
    std::string command = {};  // what it was started as (read once: `ksctl list` shows it)
    int watch = -1;            // inotify watch on its cgroup.events, once seen populated
  };

  void setup_cgroups();
  ProfileIds pinned_profile_ids() const;
  void apply_policy(const char* why);
  void adopt_existing_apps();
  // Retires the apps that emptied: every app when `all`, else those without a watch.
  void sweep_apps(bool all);
  bool app_is_empty(App& app);  // also starts watching a populated app's cgroup.events
  void retire_app_if_empty(std::uint64_t cgroup_id);
  void on_app_watch_events();  // an app's cgroup.events changed (or went away)
  void guard_tree();
  void watch_tree();
  // The reply, or nothing when it comes later (a launch waiting for systemd).
  std::optional<std::string> handle(AdminServer::ClientId client, const ipc::Request& request,
                                    const ipc::PeerCred& peer);
  nlohmann::json status_json();
  nlohmann::json events_json(AdminServer::ClientId client, const ipc::Request& request);
  void consume_events();  // reads the events ring; failures are logged
  void on_event(const ks_event& event);
  void log_event_summary();
  std::string cgroup_path_of(std::uint64_t id);
  std::string profile_name(std::uint32_t profile_id) const;
  std::string list_text();  // the reply as JSON text (see there)
  // Every process's pids by cgroup id in one read (the task iterator, loaded on the first
  // list); nullopt where it cannot be used: then each app's cgroup.procs is read.
  std::optional<PidsByCgroup> pids_by_cgroup();
  std::optional<nlohmann::json> launch(AdminServer::ClientId client, const ipc::Request& request,
                                       const ipc::PeerCred& peer);
  nlohmann::json finish_launch(const ipc::Request& request, const ipc::PeerCred& peer,
                               const App& app);
  void watch_scopes_fd();
  std::string profile_slice_unit(const std::string& profile) const;
  nlohmann::json protect(const ipc::Request& request);
  nlohmann::json unknown_profile(const std::string& profile) const;
  App create_app_cgroup(const std::string& profile, const std::string& stem);
  // Gives the app a counter slot if it has none (its counters zeroed first), classifies
  // its cgroup and tracks it.
  void register_app(App app);
  // An app's counters, wherever the kernel keeps them.
  Counters app_counters(std::uint64_t cgroup_id) const;
  // True when the protected tree has exactly the profile slices and the tracked apps.
  bool tree_holds_only_known_cgroups() const;
  nlohmann::json reload();
  std::string profile_slice_path(const std::string& profile) const;
  std::string relative(const std::string& absolute_cgroup) const;
  // What is not in force for a cgroup: its cgroup hooks, then the system-wide ones.
  // Empty when protection holds.
  std::string not_effective_on(const std::string& cgroup_path) const;
  // The deepest classified ancestor's profile; `known` is enforcement_.cgroups().
  std::uint32_t profile_of_cgroup(const std::string& absolute_cgroup,
                                  const std::map<std::uint64_t, std::uint32_t>& known) const;

  DaemonOptions options_;
  UniqueFd lock_fd_;  // first: nothing is touched unless this is the only ksd
  Config config_;
  ProfileIds profile_ids_;
  std::string cgroup_mount_;
  std::string root_cgroup_;  // <mount>/<slice>
  Enforcement enforcement_;
  LinkWatcher links_;
  PolicyRouting routing_;
  PolicyPlan plan_;
  std::map<std::uint64_t, App> apps_;
  AppSlots app_slots_;
  std::uint64_t attached_root_id_ = 0;  // cgroup id of the tree root the links are on
  bool watchdog_ = false;               // WatchdogSec= set: ping on every sweep
  EventLoop loop_;
  std::unique_ptr<AdminServer> server_;  // null until the constructor makes it
  UniqueFd signal_fd_, timer_fd_;
  // inotify on the tree root and its parent: systemd removing or re-creating a slice's
  // cgroup is seen at once, not at the next sweep.
  UniqueFd tree_watch_fd_;
  // cgroup.events of every populated app: "populated 0" arrives as IN_MODIFY, so the 1 s
  // sweep need not read thousands of files (10,000 reads a second at 10,000 apps).
  UniqueFd app_watch_fd_;
  std::unordered_map<int, std::uint64_t> app_watches_;  // watch -> app's cgroup id
  unsigned sweeps_since_full_sweep_ = 0;
  // Transient scopes for ksrun (systemd hosts only; null: ksd makes the cgroups itself).
  std::unique_ptr<systemd::TransientScopes> scopes_;
  int scopes_fd_ = -1;

  // Blocked-attempt events: the newest kEventsKept, numbered from 1; clients that follow
  // them get each one pushed.
  std::unique_ptr<EventReader> events_;
  std::unique_ptr<TaskCgroups> task_cgroups_;  // for list; null when it cannot load
  bool task_cgroups_tried_ = false;
  std::deque<nlohmann::json> recent_events_;
  std::uint64_t next_event_seq_ = 1;
  std::map<std::uint64_t, std::string> cgroup_paths_;  // cache for events: id -> path
  // For the journal summary: per app, events since the last summary, the blocked count at
  // its start, and the last event.
  struct Summary {
    std::uint64_t events = 0;
    std::uint64_t blocked_before = 0;
    nlohmann::json last;
  };
  std::map<std::uint64_t, Summary> summary_;
  unsigned sweeps_since_summary_ = 0;
  bool policy_stale_ = false;  // an update failed; the timer retries
};

}  // namespace ks
