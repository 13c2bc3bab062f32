#include "killswitch/proc.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/files.hpp"

namespace ks {

std::size_t count_inet_sockets(pid_t pid) {
  const std::string base = "/proc/" + std::to_string(pid);
  std::set<unsigned long> held;
  DIR* dir = ::opendir((base + "/fd").c_str());
  if (!dir) throw_errno("cannot inspect the open files of process " + std::to_string(pid));
  while (dirent* e = ::readdir(dir)) {
    char target[64];
    std::string link = base + "/fd/" + e->d_name;
    ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    unsigned long inode = 0;
    if (std::sscanf(target, "socket:[%lu]", &inode) == 1) held.insert(inode);
  }
  ::closedir(dir);
  if (held.empty()) return 0;

  std::size_t count = 0;
  for (const char* table : {"tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6"}) {
    std::ifstream in(base + "/net/" + table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string field;
      // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
      for (int i = 0; i < 10 && (fields >> field); ++i) {
      }
      unsigned long inode = std::strtoul(field.c_str(), nullptr, 10);
      if (held.count(inode)) ++count;
    }
  }
  return count;
}

std::string resolve_executable(const std::string& command) {
  const auto real = [](const std::string& path) -> std::string {
    char resolved[PATH_MAX];
    if (::access(path.c_str(), X_OK) != 0 || !::realpath(path.c_str(), resolved)) return "";
    return resolved;
  };
  if (command.empty()) return "";
  if (command.find('/') != std::string::npos) return real(command);
  const char* env = std::getenv("PATH");
  const std::string path = env ? env : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= path.size()) {
    const auto end = std::min(path.find(':', start), path.size());
    const std::string dir = end == start ? "." : path.substr(start, end - start);
    if (auto found = real(dir + "/" + command); !found.empty()) return found;
    start = end + 1;
  }
  return "";
}

bool is_shared_runtime(std::string_view executable_path) {
  std::string_view name = executable_path.substr(executable_path.find_last_of('/') + 1);
  // python3.11, perl5.36, ...: the version does not make it another program.
  while (!name.empty() && (name.back() == '.' || (name.back() >= '0' && name.back() <= '9')))
    name.remove_suffix(1);
  static constexpr std::string_view kShared[] = {
      "sh", "bash", "dash", "zsh", "fish", "ksh", "mksh", "busybox", "python", "perl", "ruby",
      "node", "nodejs", "java", "php", "lua", "env", "sudo", "doas", "setpriv", "nice", "nohup",
      "timeout", "flatpak", "bwrap", "snap", "xdg-open", "gio", "systemd-run", "ksrun",
      // The lab's probe: its scenarios run protected and unprotected copies side by side.
      "ks-probe"};
  for (const auto shared : kShared)
    if (name == shared) return true;
  return false;
}

namespace {

// Whether process NAME (a /proc entry) runs EXECUTABLE as user UID: its cgroup when it does.
std::optional<RunningCopy> running_copy(int proc, const char* name, const std::string& executable,
                                        uid_t uid) {
  // The link first, the owner only for a match: one system call per process. (Someone
  // else's process cannot be read unless we are root: the readlink fails at once; as
  // root every process is readable, and most are root's anyway, so a stat first would
  // only double the calls.)
  char target[PATH_MAX];
  const ssize_t n =
      ::readlinkat(proc, (std::string(name) + "/exe").c_str(), target, sizeof(target) - 1);
  if (n <= 0 || executable.compare(0, std::string::npos, target, static_cast<std::size_t>(n)) != 0)
    return std::nullopt;
  struct stat st {};
  if (::fstatat(proc, name, &st, 0) != 0 || st.st_uid != uid) return std::nullopt;
  const auto text = read_text_file(std::string(name) + "/cgroup", proc);
  const std::string path = text ? cgroup_from_proc_text(*text) : std::string();
  if (path.empty()) return std::nullopt;  // gone
  return RunningCopy{static_cast<pid_t>(std::strtol(name, nullptr, 10)), path};
}

}  // namespace

std::vector<RunningCopy> running_copies(const std::string& executable, uid_t uid, pid_t self) {
  std::vector<RunningCopy> found;
  DIR* dir = ::opendir("/proc");
  if (!dir) return found;
  const int proc = ::dirfd(dir);
  while (dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0' || pid == self) continue;
    if (auto copy = running_copy(proc, e->d_name, executable, uid)) found.push_back(*copy);
  }
  ::closedir(dir);
  return found;
}

std::vector<RunningCopy> running_copies_among(std::span<const pid_t> candidates,
                                              const std::string& executable, uid_t uid,
                                              pid_t self) {
  std::vector<RunningCopy> found;
  if (candidates.empty()) return found;
  UniqueFd proc(::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!proc) return found;
  for (const pid_t pid : candidates) {
    if (pid <= 0 || pid == self) continue;
    if (auto copy = running_copy(proc.get(), std::to_string(pid).c_str(), executable, uid))
      found.push_back(*copy);
  }
  return found;
}

std::vector<pid_t> outside(const std::vector<RunningCopy>& copies,
                           const std::string& protected_root) {
  std::vector<pid_t> pids;
  const std::string inside = protected_root + "/";
  for (const auto& copy : copies)
    if (copy.cgroup != protected_root && !copy.cgroup.starts_with(inside)) pids.push_back(copy.pid);
  return pids;
}

}  // namespace ks
