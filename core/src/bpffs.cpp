#include "killswitch/bpffs.hpp"

#include <sys/mount.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"

namespace ks {

namespace {

// Is `mountpoint` the path itself or one of its parent directories?
bool holds(const std::string& mountpoint, const std::string& path) {
  if (mountpoint == "/") return true;
  return path.compare(0, mountpoint.size(), mountpoint) == 0 &&
         (path.size() == mountpoint.size() || path[mountpoint.size()] == '/');
}

std::optional<std::string> read_link(const std::string& path) {
  char buf[128] = {};
  ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf) - 1);
  if (n <= 0) return std::nullopt;
  return std::string(buf, static_cast<std::size_t>(n));
}

// PF_KTHREAD in the flags field of /proc/PID/stat: only the kernel sets it.
constexpr unsigned long kPfKthread = 0x00200000;

bool is_kernel_thread(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // pid (comm) state ppid pgrp session tty_nr tpgid flags ...; comm may hold spaces and ')'.
  auto close = text.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream fields(text.substr(close + 1));
  std::string state, ppid, pgrp, session, tty, tpgid;
  unsigned long flags = 0;
  if (!(fields >> state >> ppid >> pgrp >> session >> tty >> tpgid >> flags)) return false;
  return (flags & kPfKthread) != 0;
}

}  // namespace

std::optional<MountEntry> mount_holding(const std::string& mountinfo_text,
                                        const std::string& path) {
  std::optional<MountEntry> best;
  std::istringstream lines(mountinfo_text);
  std::string line;
  while (std::getline(lines, line)) {
    // id parent major:minor root mountpoint options [optional fields...] - fstype source super
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream before(line.substr(0, dash));
    std::string id, parent, dev, root, mountpoint, options, field;
    if (!(before >> id >> parent >> dev >> root >> mountpoint >> options)) continue;
    MountEntry entry;
    entry.mountpoint = unescape_mountinfo(mountpoint);
    if (!holds(entry.mountpoint, path)) continue;
    while (before >> field) {
      if (field.rfind("master:", 0) == 0) entry.slave = true;
      if (field.rfind("shared:", 0) == 0) entry.shared = true;
    }
    std::istringstream after(line.substr(dash + 3));
    after >> entry.fstype;
    // Later lines are mounted later: on the same point, the last one is on top.
    if (!best || entry.mountpoint.size() >= best->mountpoint.size()) best = entry;
  }
  return best;
}

BpffsMountVerdict judge_bpffs_mount(const std::optional<std::string>& own_ns,
                                    const std::optional<std::string>& init_ns,
                                    const std::string& mountinfo_text,
                                    const std::string& mountpoint) {
  if (own_ns && init_ns) {
    if (*own_ns == *init_ns)
      return {true, "this process is in the initial mount namespace (" + *own_ns + ")"};
    return {false, "this process runs in a mount namespace of its own (" + *own_ns +
                       ", the initial one is " + *init_ns +
                       "), where a BPF filesystem and its pins would not outlive it"};
  }
  auto entry = mount_holding(mountinfo_text, mountpoint);
  if (entry && entry->slave)
    return {false, "the initial mount namespace cannot be read, and " + entry->mountpoint +
                       " is a slave mount (\"master:\" in /proc/self/mountinfo): this "
                       "process runs in a mount namespace of its own, as a sandboxed service "
                       "does, where a BPF filesystem and its pins would not outlive it"};
  return {true, "the initial mount namespace cannot be read, and " +
                    (entry ? entry->mountpoint : std::string("/")) +
                    " is not a slave mount, as on a host whose PID 1 is not systemd"};
}

std::optional<std::string> initial_mount_namespace() {
  if (auto ns = read_link("/proc/1/ns/mnt")) return ns;
  if (is_kernel_thread("2")) return read_link("/proc/2/ns/mnt");
  return std::nullopt;
}

std::string mount_bpffs_if_safe(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string mountinfo((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  BpffsMountVerdict verdict = judge_bpffs_mount(read_link("/proc/self/ns/mnt"),
                                                initial_mount_namespace(), mountinfo, mountpoint);
  if (!verdict.safe)
    throw Error("no BPF filesystem on " + mountpoint + ", and " + verdict.why +
                "; mount it in the host's namespace first: mount -t bpf bpf " + mountpoint +
                " (killswitch-early.service does)");
  if (::mount("bpf", mountpoint.c_str(), "bpf", 0, "mode=0700") != 0)
    throw_errno("cannot mount the BPF filesystem on " + mountpoint);
  return verdict.why;
}

}  // namespace ks
