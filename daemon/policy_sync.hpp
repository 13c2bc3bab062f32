// The policy in force: the configuration, the profiles' ids, and the kernel's copy of
// both (the programs' maps, the routing rules and tables, the cgroups' classification),
// kept current with the tunnels' real state. Writes go in the fail-closed order (see
// apply()); a failure leaves the policy stale and the sweep retries it.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "app_registry.hpp"
#include "killswitch/config.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/links.hpp"
#include "killswitch/policy_plan.hpp"
#include "killswitch/routing.hpp"
#include "protected_tree.hpp"

namespace ks {

class PolicySync {
 public:
  // Reads the configuration (throws ks::Error when it is bad) and touches nothing else:
  // the references are used from start() on.
  PolicySync(std::string config_path, Enforcement& enforcement, ProtectedTree& tree,
             const AppRegistry& registry, LinkWatcher& links);

  // Gives the profiles their ids (those pinned by an earlier ksd are kept).
  void start();

  const std::string& config_path() const { return config_path_; }
  const Config& config() const { return config_; }
  const ProfileIds& ids() const { return ids_; }
  // The id of a configured profile; throws ks::Error naming the configured ones.
  std::uint32_t id_of(const std::string& profile) const;
  std::string name_of(std::uint32_t profile_id) const;  // "(none)", "(removed)" if not one
  const std::vector<TunnelStatus>& tunnels_of(const std::string& profile) const;

  // Writes the policy for the current configuration and links. Throws; then the policy
  // is marked stale and the next retry() writes it whole.
  void apply(const char* why);
  // apply(), logging a failure instead of throwing (enforcement stays in force from the
  // pinned state meanwhile). False when it failed.
  bool apply_or_retry(const char* why);
  // Re-reads the links and applies the policy if an earlier write failed.
  void retry();
  // Something failed that a whole write of the policy may repair: retry() does one.
  void mark_stale() { stale_ = true; }

  // Reads the configuration again and applies it. A bad file throws ks::Error and
  // changes nothing (the last good policy stays); a file that is good but cannot be
  // applied yet throws too, and the sweep retries it.
  void reload();

 private:
  ProfileIds pinned_ids();  // (and notes the named ids)
  void write_profiles(const PolicyPlan& plan);
  void write_routing(const PolicyPlan& plan);
  void write_classification();
  // Logs tunnel state changes with how long the update took: until the routes were
  // written (a returning tunnel carries traffic from then on) and in all.
  void log_changes(const PolicyPlan& plan, const char* why, double routed_ms, double done_ms);

  std::string config_path_;
  Config config_;
  ProfileIds ids_;
  Enforcement& enforcement_;
  ProtectedTree& tree_;
  const AppRegistry& registry_;
  LinkWatcher& links_;
  PolicyRouting routing_;
  PolicyPlan plan_;  // what was written last
  bool stale_ = false;
  // Profile ids that have a name in ks_profiles (given by this or an earlier ksd; names are
  // never taken back), and the entries this ksd wrote: an update after a link event then
  // reads and writes only what can have changed (a tunnel's return waits for it).
  std::set<std::uint32_t> named_ids_;
  std::map<std::uint32_t, ks_profile> written_profiles_;
};

// The configuration plus ksd's own tunnel-less profile for `ksctl verify`'s probes.
Config load_config_with_probe(const std::string& path);

}  // namespace ks
