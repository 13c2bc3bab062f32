// What `ksctl status` and `ksctl list` show, as JSON text (docs/interface.md).
#pragma once

#include <future>
#include <memory>
#include <optional>
#include <string>

#include "admin_server.hpp"
#include "app_registry.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/task_cgroups.hpp"
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
  // ksd answers), from a snapshot of the tree, pids and counters taken now.
  std::unique_ptr<TextSource> list_source();

 private:
  class ListSource;

  // How many cgroups of the tree have processes.
  std::size_t protected_apps() const;
  // A read of every process's pids by cgroup id (the task iterator), to be done in steps;
  // nullopt where it cannot be used (or is not loaded yet): then each app's cgroup.procs is
  // read. The first list starts loading it in a thread of its own: libbpf parses the
  // kernel's BTF for it, a quarter of a second here, which would stop ksd's loop.
  std::optional<TaskCgroupsReading> start_pids_read();
  struct TaskCgroupsLoad {
    std::unique_ptr<TaskCgroups> loaded;  // null when it cannot load
    std::string why_not;
  };

  std::string pin_dir_;
  const Enforcement& enforcement_;
  const PolicySync& policy_;
  const ProtectedTree& tree_;
  AppRegistry& registry_;
  std::unique_ptr<TaskCgroups> task_cgroups_;  // null when it cannot load (or not yet)
  std::future<TaskCgroupsLoad> task_cgroups_loading_;
  bool task_cgroups_tried_ = false;
};

// The command line of a process, arguments separated by spaces ("" when it is gone).
std::string read_cmdline(pid_t pid);

}  // namespace ks
