// Putting processes under protection: `ksrun` (launch: the caller's own process moves
// into a new app cgroup, made by ksd or, on systemd hosts, a transient scope systemd
// makes) and `ksctl protect` (adopt a running process that holds no socket yet). Either
// answers only once enforcement is proven in force on the app's cgroup.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "admin_server.hpp"
#include "app_registry.hpp"
#include "event_loop.hpp"
#include "killswitch/ipc.hpp"
#include "killswitch/transient_scopes.hpp"
#include "policy_sync.hpp"
#include "protected_tree.hpp"

namespace ks {

class Launches {
 public:
  using ReplyLater = std::function<void(AdminServer::ClientId, const nlohmann::json& reply)>;

  // With systemd_scopes, ksrun's apps get transient scopes from systemd (when the tree's
  // slices are systemd units); otherwise ksd makes their cgroups.
  Launches(EventLoop& loop, const PolicySync& policy, ProtectedTree& tree, AppRegistry& registry,
           const Enforcement& enforcement, bool systemd_scopes, ReplyLater reply_later);

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
  void rewatch();
  // Gives up on scope jobs systemd never finished (their launches are refused).
  void expire(std::chrono::steady_clock::time_point now);

 private:
  nlohmann::json finish(const ipc::Request& request, const ipc::PeerCred& peer, const App& app);

  EventLoop& loop_;
  const PolicySync& policy_;
  ProtectedTree& tree_;
  AppRegistry& registry_;
  const Enforcement& enforcement_;
  ReplyLater reply_later_;
  // Transient scopes for ksrun (systemd hosts only; null: ksd makes the cgroups itself).
  std::unique_ptr<systemd::TransientScopes> scopes_;
  int scopes_fd_ = -1;
};

}  // namespace ks
