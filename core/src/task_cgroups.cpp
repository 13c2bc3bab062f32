#include "killswitch/task_cgroups.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"
#include "killswitch_abi.h"
#include "task_cgroups.skel.h"

namespace ks {

void TaskCgroupsSkeletonDeleter::operator()(task_cgroups_bpf* skel) const {
  task_cgroups_bpf__destroy(skel);
}

bool in_initial_pid_namespace() {
  // The initial pid namespace has a fixed inode number (PROC_PID_INIT_INO in the kernel's
  // include/linux/proc_ns.h). NSpid in /proc/self/status cannot tell: inside a container
  // it starts at the container's own namespace, so it has one entry there too.
  constexpr ino_t kInitialPidNamespaceInode = 0xEFFFFFFCU;
  struct stat st {};
  return ::stat("/proc/self/ns/pid", &st) == 0 && st.st_ino == kInitialPidNamespaceInode;
}

std::unique_ptr<TaskCgroups> TaskCgroups::load(std::string& why_not) {
  if (!in_initial_pid_namespace()) {
    why_not = "ksd runs in a pid namespace of its own";
    return nullptr;
  }
  std::unique_ptr<task_cgroups_bpf, TaskCgroupsSkeletonDeleter> skel(
      task_cgroups_bpf__open_and_load());
  if (!skel) {
    why_not = std::string("cannot load the task iterator: ") + std::strerror(errno);
    return nullptr;
  }
  if (int err = task_cgroups_bpf__attach(skel.get()); err != 0) {
    why_not = std::string("cannot attach the task iterator: ") + std::strerror(-err);
    return nullptr;
  }
  return std::unique_ptr<TaskCgroups>(new TaskCgroups(std::move(skel)));
}

PidsByCgroup::PidsByCgroup(std::vector<Entry> entries) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.cgroup_id != b.cgroup_id ? a.cgroup_id < b.cgroup_id : a.pid < b.pid;
  });
  ids_.reserve(entries.size());
  pids_.reserve(entries.size());
  for (const Entry& e : entries) {
    ids_.push_back(e.cgroup_id);
    pids_.push_back(e.pid);
  }
}

std::span<const pid_t> PidsByCgroup::of(std::uint64_t cgroup_id) const {
  auto [first, last] = std::equal_range(ids_.begin(), ids_.end(), cgroup_id);
  return {pids_.data() + (first - ids_.begin()), static_cast<std::size_t>(last - first)};
}

TaskCgroupsReading TaskCgroups::start_read() const {
  // A new iterator fd walks all tasks once, read to its end.
  UniqueFd fd(bpf_iter_create(bpf_link__fd(skel_->links.ks_task_cgroups)));
  if (!fd) throw_errno("cannot create the task iterator");
  return TaskCgroupsReading(std::move(fd));
}

std::vector<pid_t> TaskCgroups::running_inode(ino_t inode) {
  skel_->bss->copies_of_inode = inode;
  UniqueFd fd(bpf_iter_create(bpf_link__fd(skel_->links.ks_task_copies)));
  if (!fd) throw_errno("cannot create the task iterator");
  std::vector<pid_t> pids;
  ks_task_cgroup records[64];
  std::size_t have = 0;  // bytes in records
  for (;;) {
    ssize_t n = ::read(fd.get(), reinterpret_cast<char*>(records) + have, sizeof(records) - have);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("cannot read the task iterator");
    have += static_cast<std::size_t>(n);
    const std::size_t whole = have / sizeof(ks_task_cgroup);
    for (std::size_t i = 0; i < whole; ++i) pids.push_back(static_cast<pid_t>(records[i].pid));
    // A read may end inside a record: its start moves to the front.
    std::memmove(records, records + whole, have - whole * sizeof(ks_task_cgroup));
    have -= whole * sizeof(ks_task_cgroup);
    if (n == 0) break;
  }
  std::sort(pids.begin(), pids.end());
  return pids;
}

PidsByCgroup TaskCgroups::read() const {
  TaskCgroupsReading reading = start_read();
  while (reading.step(SIZE_MAX)) {
  }
  return reading.take();
}

bool TaskCgroupsReading::step(std::size_t max_bytes) {
  const std::size_t until = used_ + std::min(max_bytes, SIZE_MAX - used_);
  do {
    if (bytes_.size() - used_ < 65536) bytes_.resize(bytes_.size() + 262144);
    // The kernel walks tasks until it has filled what was asked for (at most its 32 KiB
    // buffer), so a step asks for no more than its share: 2,048 processes were 4-7 ms here.
    const std::size_t ask = std::min(bytes_.size() - used_, until - used_);
    ssize_t n = ::read(fd_.get(), bytes_.data() + used_, ask);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("cannot read the task iterator");
    if (n == 0) return false;
    used_ += static_cast<std::size_t>(n);
  } while (used_ < until);
  return true;
}

PidsByCgroup TaskCgroupsReading::take() {
  // All bytes are collected before they are parsed, so nothing relies on a read ending at
  // a record's end.
  std::vector<PidsByCgroup::Entry> entries;
  entries.reserve(used_ / sizeof(ks_task_cgroup));
  for (std::size_t at = 0; at + sizeof(ks_task_cgroup) <= used_; at += sizeof(ks_task_cgroup)) {
    ks_task_cgroup rec;
    std::memcpy(&rec, bytes_.data() + at, sizeof(rec));
    entries.push_back({rec.cgroup_id, static_cast<pid_t>(rec.pid)});
  }
  bytes_ = {};
  return PidsByCgroup(std::move(entries));
}

}  // namespace ks
