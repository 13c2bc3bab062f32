// Putting processes under protection: `ksrun` (launch: the caller's own process moves
// into a new app cgroup, made by ksd or, on systemd hosts, a transient scope systemd
// makes) and `ksctl protect` (adopt a running process that holds no socket yet). Either
// answers only once enforcement is proven in force on the app's cgroup.
#pragma once

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "admin_server.hpp"
#include "app_registry.hpp"
#include "event_loop.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/ipc.hpp"
#include "killswitch/task_cgroups.hpp"
#include "killswitch/transient_scopes.hpp"
#include "policy_sync.hpp"
#include "protected_tree.hpp"
#include "ready_scopes.hpp"

namespace ks {

class Launches {
 public:
  using ReplyLater = std::function<void(AdminServer::ClientId, const nlohmann::json& reply)>;

  // With systemd_scopes, ksrun's apps get transient scopes from systemd (when the tree's
  // slices are systemd units); otherwise ksd makes their cgroups.
  Launches(EventLoop& loop, const PolicySync& policy, ProtectedTree& tree, AppRegistry& registry,
           const Enforcement& enforcement, bool systemd_scopes, ReplyLater reply_later);

  // Once the tree is in place: on systemd hosts, a ready scope for each profile.
  void start();

  // Whether an app cgroup of that name (in a profile slice) is ksd's to remove: the ones it
  // made itself, never systemd's services and scopes.
  bool owns_cgroup(const std::string& name) const;

  // ksrun's request: the reply, or nullopt when it comes later through reply_later (a
  // scope systemd is making). Throws ks::Error when refused.
  std::optional<nlohmann::json> launch(AdminServer::ClientId client, const ipc::Request& request,
                                       const ipc::PeerCred& peer);
  // ksctl protect's request. Throws ks::Error when refused (the process stays where it was).
  nlohmann::json protect(const ipc::Request& request);

  // The connection to systemd (-1 without one); its wanted events change after every
  // request, so the loop calls rewatch() after each round.
  int scopes_fd() const { return scopes_fd_; }
  void on_scopes_ready();
  // A one-shot timer (-1 without systemd scopes): what follows a launch that joined a ready
  // scope (its description, the next ready scope) waits until the app has started and no
  // other launch came for that long.
  int after_launch_fd() const { return after_launch_.get(); }
  void on_after_launch();
  void rewatch();
  // Gives up on scope jobs systemd never finished (their launches are refused); looks after
  // the ready scopes.
  void expire(std::chrono::steady_clock::time_point now);

 private:
  nlohmann::json finish(const ipc::Request& request, const ipc::PeerCred& peer, const App& app);
  // ksrun's single-instance check: the caller's copies of the command outside the tree.
  std::vector<pid_t> unprotected_copies(const ipc::Request& request, const ipc::PeerCred& peer);
  static std::string scope_description(const ipc::Request& request);

  // Ready scopes kept per profile: one from the start, two once it is used (a launch that
  // follows another at once finds the second while systemd makes the next).
  static constexpr std::size_t kReadyAtStart = 1;
  static constexpr std::size_t kReadyInUse = 2;
  static constexpr std::size_t kMaxProfilesReadyAtStart = 8;
  // Long enough for ksrun to prove its protection and exec the command (a few ms), so that
  // making the next scope (a fork and exec here, a job in systemd) does not compete with it;
  // pushed back by every launch.
  static constexpr long kAfterLaunchDelayNs = 20'000'000;
  void after_launch(const std::string& profile, std::string unit, std::string description);

  EventLoop& loop_;
  const PolicySync& policy_;
  ProtectedTree& tree_;
  AppRegistry& registry_;
  const Enforcement& enforcement_;
  ReplyLater reply_later_;
  // The task iterator that finds a command's running copies (null where it cannot load:
  // then /proc is read, one readlink per process). Loaded by a thread of its own while ksd
  // starts (~20 ms, most of it reading the kernel's BTF); launches before it is ready read
  // /proc.
  std::future<std::unique_ptr<TaskCgroups>> copies_loading_;
  std::unique_ptr<TaskCgroups> copies_;
  void load_copies_iterator();
  TaskCgroups* copies();
  // Transient scopes for ksrun (systemd hosts only; null: ksd makes the cgroups itself).
  std::unique_ptr<systemd::TransientScopes> scopes_;
  std::unique_ptr<ReadyScopes> ready_;  // with scopes_ (destroyed first: it uses them)
  int scopes_fd_ = -1;
  UniqueFd after_launch_;
  std::set<std::string> to_fill_;                                 // profiles
  std::vector<std::pair<std::string, std::string>> to_describe_;  // unit, description
};

}  // namespace ks
