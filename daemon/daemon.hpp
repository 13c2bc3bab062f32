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
#include "app_registry.hpp"
#include "event_log.hpp"
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
  void setup_cgroups();
  ProfileIds pinned_profile_ids() const;
  void apply_policy(const char* why);
  void adopt_existing_apps();
  // A retired app's events may still be in the ring: its path stays known for them.
  void remember_retired(const App& app);
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
  std::string command_of(std::uint32_t pid, const std::string& app) const;
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
  EventLog event_log_;  // blocked-attempt events: kept, numbered, summarised
  EnforcementAppMaps app_maps_;
  AppRegistry registry_;  // the protected apps
  PolicyPlan plan_;
  std::uint64_t attached_root_id_ = 0;  // cgroup id of the tree root the links are on
  bool watchdog_ = false;               // WatchdogSec= set: ping on every sweep
  EventLoop loop_;
  std::unique_ptr<AdminServer> server_;  // null until the constructor makes it
  UniqueFd signal_fd_, timer_fd_;
  // inotify on the tree root and its parent: systemd removing or re-creating a slice's
  // cgroup is seen at once, not at the next sweep.
  UniqueFd tree_watch_fd_;
  // Transient scopes for ksrun (systemd hosts only; null: ksd makes the cgroups itself).
  std::unique_ptr<systemd::TransientScopes> scopes_;
  int scopes_fd_ = -1;

  std::unique_ptr<EventReader> events_;        // the kernel's ring of blocked attempts
  std::unique_ptr<TaskCgroups> task_cgroups_;  // for list; null when it cannot load
  bool task_cgroups_tried_ = false;
  std::map<std::uint64_t, std::string> cgroup_paths_;  // cache for events: id -> path
  unsigned sweeps_since_summary_ = 0;
  bool policy_stale_ = false;  // an update failed; the timer retries
};

}  // namespace ks
