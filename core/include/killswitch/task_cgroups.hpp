// TaskCgroups: every process's cgroup in one read, through a BPF task iterator
// (bpf/task_cgroups.bpf.c). `ksctl list` needs the pids of every app; reading each app's
// cgroup.procs costs three system calls and a walk under a kernel-wide lock per app. A
// second iterator finds the processes that run an executable (ksrun's single-instance
// check) without a readlink of every /proc/PID/exe.
// Optional by design: where it cannot load, callers read cgroup.procs and /proc as before.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "killswitch/fd.hpp"

struct task_cgroups_bpf;  // the bpftool-generated skeleton

namespace ks {

struct TaskCgroupsSkeletonDeleter {
  void operator()(task_cgroups_bpf* skel) const;
};

// Every process's pid by cgroup id: two flat arrays sorted by cgroup id, then pid (with
// 10,000 apps, one allocation each instead of 10,000 small lists in a hash map).
class PidsByCgroup {
 public:
  struct Entry {
    std::uint64_t cgroup_id;
    pid_t pid;
  };
  explicit PidsByCgroup(std::vector<Entry> entries);
  // The cgroup's processes, ascending; empty when it has none.
  std::span<const pid_t> of(std::uint64_t cgroup_id) const;

 private:
  std::vector<std::uint64_t> ids_;
  std::vector<pid_t> pids_;  // pids_[i] is in cgroup ids_[i]
};

// One walk of the task iterator, read in steps: a caller that serves others (ksd's loop)
// reads a little at a time instead of holding them up for the whole walk.
class TaskCgroupsReading {
 public:
  explicit TaskCgroupsReading(UniqueFd iterator) : fd_(std::move(iterator)) {}
  // Reads about max_bytes (no read asks for more than what is left of it); false once the
  // walk has ended (then take()). Throws ks::Error.
  bool step(std::size_t max_bytes);
  PidsByCgroup take();

 private:
  UniqueFd fd_;
  std::vector<char> bytes_;
  std::size_t used_ = 0;
};

class TaskCgroups {
 public:
  // Loads and attaches the iterator. nullptr, with the reason in why_not, when this
  // kernel or process cannot use it: no BTF or task iterator, not enough privilege, or a
  // pid namespace of its own (the iterator reports pids of the initial namespace).
  static std::unique_ptr<TaskCgroups> load(std::string& why_not);

  // Every process (thread group id) with its cgroup, read now. Throws ks::Error.
  PidsByCgroup read() const;
  // The same walk, to be read in steps. Throws ks::Error.
  TaskCgroupsReading start_read() const;

  // The processes (thread group ids, ascending) whose executable's inode number is
  // INODE, in one walk: candidates only, since the number alone does not name a file (see
  // running_copies_among in proc.hpp). Not thread-safe: the inode is the object's global.
  // Throws ks::Error.
  std::vector<pid_t> running_inode(ino_t inode);

 private:
  explicit TaskCgroups(std::unique_ptr<task_cgroups_bpf, TaskCgroupsSkeletonDeleter> skel)
      : skel_(std::move(skel)) {}
  std::unique_ptr<task_cgroups_bpf, TaskCgroupsSkeletonDeleter> skel_;
};

// True when this process lives in the initial pid namespace, whose pids the iterator
// reports.
bool in_initial_pid_namespace();

}  // namespace ks
