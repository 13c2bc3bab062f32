// What `ksctl status` and `ksctl list` show, as JSON text (docs/interface.md).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "admin_server.hpp"
#include "app_registry.hpp"
#include "killswitch/enforcement.hpp"
#include "list_maker.hpp"
#include "policy_sync.hpp"
#include "protected_tree.hpp"

namespace ks {

class Reports {
 public:
  Reports(std::string pin_dir, const Enforcement& enforcement, const PolicySync& policy,
          const ProtectedTree& tree, AppRegistry& registry);

  std::string status_text();
  // Every cgroup of the tree with processes in it: its profile, pids, command, counters.
  // Fills in the command of tracked apps that have none yet. A source to stream (what
  // ksd answers), made by list_maker_'s threads from a copy of what ksd knows of the apps.
  std::unique_ptr<TextSource> list_source();

 private:
  class ListSource;

  // How many cgroups of the tree have processes.
  std::size_t protected_apps() const;
  std::string pin_dir_;
  const Enforcement& enforcement_;
  const PolicySync& policy_;
  const ProtectedTree& tree_;
  AppRegistry& registry_;
  ListMaker list_maker_;  // last: its threads end before anything they read goes
};

// The command line of a process, arguments separated by spaces ("" when it is gone).
std::string read_cmdline(pid_t pid);

}  // namespace ks
