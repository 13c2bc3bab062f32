// ksd: keeps the enforcement programs pinned and attached, the maps current with the
// tunnels' real state, and answers the admin socket. This is the wiring of its parts:
//   ProtectedTree  the cgroup tree, its programs, "is enforcement in force here"
//   PolicySync     configuration -> maps, rules, classification (fail-closed order)
//   AppRegistry    the protected apps: adopt, create, sweep, retire
//   Launches       ksrun and ksctl protect
//   Reports        status and list
//   EventLog       blocked-attempt events: kept, numbered, summarised
//   AdminServer    the admin socket's clients
//   EventLoop      the fds all of them own
// Errors are ks::Error exceptions throughout; the admin server turns one into the
// request's {"ok": false, "error": ...} reply, the loop into a log line and a retry.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "admin_server.hpp"
#include "app_registry.hpp"
#include "event_log.hpp"
#include "event_loop.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/events.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/ipc.hpp"
#include "killswitch/links.hpp"
#include "launches.hpp"
#include "policy_sync.hpp"
#include "protected_tree.hpp"
#include "reports.hpp"

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
  // The reply as JSON text, or nothing when it comes later (a launch waiting for systemd).
  std::optional<Reply> handle(AdminServer::ClientId client, const ipc::Request& request,
                              const ipc::PeerCred& peer);
  std::string events_text(AdminServer::ClientId client, const ipc::Request& request);
  // True to stop: SIGTERM or SIGINT (SIGHUP reloads).
  bool on_signals();
  void on_timer();
  void guard_tree();  // the tree as systemd left it, made whole
  void consume_events();
  std::string app_of(std::uint64_t cgroup_id);

  DaemonOptions options_;
  UniqueFd lock_fd_;  // first: nothing is touched unless this is the only ksd
  // The configuration is read before anything else is touched (a bad one changes nothing);
  // the references it takes are used from policy_.start() on.
  PolicySync policy_;
  Enforcement enforcement_;
  ProtectedTree tree_;
  LinkWatcher links_;
  EventLog event_log_;
  EnforcementAppMaps app_maps_;
  AppRegistry registry_;
  EventLoop loop_;
  AdminServer server_;
  Launches launches_;
  Reports reports_;
  UniqueFd signal_fd_, timer_fd_;
  std::unique_ptr<EventReader> events_;  // the kernel's ring of blocked attempts
  bool watchdog_ = false;                // WatchdogSec= set: ping on every sweep
  unsigned sweeps_since_summary_ = 0;
};

}  // namespace ks
