// cgroup v2 access: finding the mount (unified or hybrid host, or a container's cgroup
// namespace), ids, membership, and the protected tree's directories.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "killswitch/fd.hpp"

namespace ks {

// The cgroup2 mount point, read from /proc/self/mountinfo: /sys/fs/cgroup on unified
// hosts, often /sys/fs/cgroup/unified on hybrid ones. Throws ks::Error when none.
std::string find_cgroup2_mount(const std::string& mountinfo_path = "/proc/self/mountinfo");

// mountinfo escapes space, tab, newline and backslash as \ooo; this undoes it.
std::string unescape_mountinfo(const std::string& field);

// Parses mountinfo text; exposed for unit tests. Empty string when no cgroup2 mount.
std::string cgroup2_mount_from_mountinfo(const std::string& mountinfo_text);

// The cgroup2 mount's superblock options ("rw,nsdelegate,memory_recursiveprot"), from
// mountinfo text; empty when no cgroup2 mount. `favordynmods` among them (Linux 6.0+): moving
// a process between cgroups does not wait for an RCU grace period (docs/benchmarks.md, 4).
std::string cgroup2_super_options_from_mountinfo(const std::string& mountinfo_text);
bool cgroup2_favors_dynmods(const std::string& super_options);

// The cgroup's id as BPF sees it (bpf_get_current_cgroup_id): its kernfs inode number.
std::uint64_t cgroup_id(const std::string& path);

// This process's cgroup v2 path relative to the mount ("/killswitch.slice/app.scope"),
// from the "0::" line of /proc/<pid>/cgroup.
std::string cgroup_of_pid(pid_t pid);
std::string cgroup_from_proc_text(const std::string& proc_cgroup_text);

// Creates the directory if missing (mode 0755, root-owned). Returns true if created.
bool ensure_cgroup_dir(const std::string& path);
// Moves a process into a cgroup by writing its pid to cgroup.procs.
void move_pid_to_cgroup(const std::string& cgroup_path, pid_t pid);
// Pids in this cgroup only (not descendants).
std::vector<pid_t> cgroup_pids(const std::string& cgroup_path);
// The same, with cgroup_path relative to the directory dir_fd (or AT_FDCWD): with
// thousands of apps in one slice, the kernel then walks one name instead of the whole path.
std::vector<pid_t> cgroup_pids_at(int dir_fd, const std::string& cgroup_path);
// nr_descendants from the cgroup's cgroup.stat (live descendant cgroups), if readable.
std::optional<std::size_t> cgroup_descendants(const std::string& cgroup_path);
// True when this cgroup or a descendant holds a process (cgroup.events "populated 1").
bool cgroup_populated(const std::string& cgroup_path);
// Removes an empty cgroup and its empty descendants, deepest first. Returns false when
// something was still populated (and so was left in place).
bool remove_cgroup_tree(const std::string& path);
// Opens the cgroup directory (O_RDONLY|O_DIRECTORY) for BPF attach and query.
UniqueFd open_cgroup(const std::string& path);

}  // namespace ks
