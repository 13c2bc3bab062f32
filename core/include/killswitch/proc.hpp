// What /proc tells about a process that ksd is asked to adopt.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ks {

// Number of IPv4/IPv6 sockets (TCP, UDP, UDP-Lite, raw) the process holds open: socket
// inodes of /proc/PID/fd found in /proc/PID/net/{tcp,udp,udplite,raw}{,6}. Such sockets
// keep the cgroup they were created in, so moving the process would not protect them.
// Throws ks::Error when the process cannot be inspected.
std::size_t count_inet_sockets(pid_t pid);

// Single-instance apps (browsers, many torrent and chat clients) hand a new start over to
// the copy already running and exit: `ksrun firefox` next to an unprotected Firefox opens a
// window of the unprotected one. ksrun warns about that copy.
//
// COMMAND resolved as execvp(3) would (PATH search unless it has a '/'), symlinks followed;
// "" when it cannot be found.
std::string resolve_executable(const std::string& command);
// Shells, interpreters and wrappers: many unrelated processes share their executable, so a
// running copy says nothing about the command (`ksrun python3 app.py`).
bool is_shared_runtime(std::string_view executable_path);
// The processes of user UID (but SELF) running EXECUTABLE, with their cgroup2 paths.
// Processes that cannot be read are skipped.
struct RunningCopy {
  pid_t pid = 0;
  std::string cgroup;
};
std::vector<RunningCopy> running_copies(const std::string& executable, uid_t uid, pid_t self);
// The same, looking only at CANDIDATES (pids, e.g. the processes whose executable has the
// right inode number, found by TaskCgroups::running_inode): each is checked as above.
std::vector<RunningCopy> running_copies_among(std::span<const pid_t> candidates,
                                              const std::string& executable, uid_t uid, pid_t self);
// Those of COPIES outside the cgroup2 subtree PROTECTED_ROOT ("/killswitch.slice").
std::vector<pid_t> outside(const std::vector<RunningCopy>& copies,
                           const std::string& protected_root);

}  // namespace ks
