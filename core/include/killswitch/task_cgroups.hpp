// TaskCgroups: every process's cgroup in one read, through a BPF task iterator
// (bpf/task_cgroups.bpf.c). `ksctl list` needs the pids of every app; reading each app's
// cgroup.procs costs three system calls and a walk under a kernel-wide lock per app.
// Optional by design: where it cannot load, callers read cgroup.procs as before.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

struct task_cgroups_bpf;  // the bpftool-generated skeleton

namespace ks {

struct TaskCgroupsSkeletonDeleter {
  void operator()(task_cgroups_bpf* skel) const;
};

class TaskCgroups {
 public:
  // Loads and attaches the iterator. nullptr, with the reason in why_not, when this
  // kernel or process cannot use it: no BTF or task iterator, not enough privilege, or a
  // pid namespace of its own (the iterator reports pids of the initial namespace).
  static std::unique_ptr<TaskCgroups> load(std::string& why_not);

  // Process ids (thread group ids) by cgroup id, each list sorted. Throws ks::Error.
  std::unordered_map<std::uint64_t, std::vector<pid_t>> read() const;

 private:
  explicit TaskCgroups(std::unique_ptr<task_cgroups_bpf, TaskCgroupsSkeletonDeleter> skel)
      : skel_(std::move(skel)) {}
  std::unique_ptr<task_cgroups_bpf, TaskCgroupsSkeletonDeleter> skel_;
};

// True when this process lives in the initial pid namespace, whose pids the iterator
// reports.
bool in_initial_pid_namespace();

}  // namespace ks
