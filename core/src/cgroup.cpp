#include "killswitch/cgroup.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <optional>
#include <string_view>

#include "killswitch/error.hpp"
#include "killswitch/files.hpp"

namespace ks {
namespace {

std::string read_file(const std::string& path) {
  auto text = read_text_file(path);
  if (!text) throw_errno("cannot read " + path);
  return std::move(*text);
}

// Calls LINE(std::string_view) for each line of TEXT (without its newline) until it
// returns true.
template <typename Line>
void for_each_line(std::string_view text, Line line) {
  while (!text.empty()) {
    const auto end = text.find('\n');
    if (line(text.substr(0, end))) return;
    if (end == std::string_view::npos) return;
    text.remove_prefix(end + 1);
  }
}

// The next space-separated field of TEXT, consumed from it ("" at the end).
std::string_view next_field(std::string_view& text) {
  const auto start = text.find_first_not_of(' ');
  if (start == std::string_view::npos) {
    text = {};
    return {};
  }
  text.remove_prefix(start);
  const auto end = text.find(' ');
  const std::string_view field = text.substr(0, end);
  text.remove_prefix(end == std::string_view::npos ? text.size() : end);
  return field;
}

}  // namespace

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mountinfo(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (std::size_t k = 1; k <= 3; ++k) {
        char c = s[i + k];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

namespace {

// The first cgroup2 line of mountinfo text: its mount point and its superblock options.
struct Cgroup2Line {
  std::string mount;
  std::string super_options;
};

std::optional<Cgroup2Line> first_cgroup2_line(const std::string& text) {
  std::optional<Cgroup2Line> found;
  for_each_line(text, [&](std::string_view line) {
    // id parent major:minor root mountpoint options [optional...] - fstype source super
    const auto dash = line.find(" - ");
    if (dash == std::string_view::npos) return false;
    std::string_view after = line.substr(dash + 3);
    if (next_field(after) != "cgroup2") return false;
    std::string_view before = line.substr(0, dash);
    for (int skip = 0; skip < 4; ++skip) next_field(before);  // id parent dev root
    const std::string_view mountpoint = next_field(before);
    if (mountpoint.empty()) return false;
    next_field(after);  // source
    found =
        Cgroup2Line{unescape_mountinfo(std::string(mountpoint)), std::string(next_field(after))};
    return true;
  });
  return found;
}

}  // namespace

std::string cgroup2_mount_from_mountinfo(const std::string& text) {
  const auto line = first_cgroup2_line(text);
  return line ? line->mount : std::string();
}

std::string cgroup2_super_options_from_mountinfo(const std::string& text) {
  const auto line = first_cgroup2_line(text);
  return line ? line->super_options : std::string();
}

bool cgroup2_favors_dynmods(const std::string& super_options) {
  return ("," + super_options + ",").find(",favordynmods,") != std::string::npos;
}

std::string find_cgroup2_mount(const std::string& mountinfo_path) {
  std::string mount = cgroup2_mount_from_mountinfo(read_file(mountinfo_path));
  if (mount.empty())
    throw Error("no cgroup v2 hierarchy is mounted (looked in " + mountinfo_path +
                "); Killswitch needs cgroup2, e.g. mount -t cgroup2 none /sys/fs/cgroup/unified");
  return mount;
}

std::uint64_t cgroup_id(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_errno("cannot stat cgroup " + path);
  return static_cast<std::uint64_t>(st.st_ino);
}

std::string cgroup_from_proc_text(const std::string& text) {
  std::string cgroup;
  for_each_line(text, [&](std::string_view line) {
    if (!line.starts_with("0::")) return false;
    cgroup = line.substr(3);
    return true;
  });
  return cgroup;
}

std::string cgroup_of_pid(pid_t pid) {
  std::string path = "/proc/" + (pid == 0 ? std::string("self") : std::to_string(pid)) + "/cgroup";
  std::string cg = cgroup_from_proc_text(read_file(path));
  if (cg.empty()) throw Error(path + " has no cgroup v2 (0::) entry");
  return cg;
}

bool ensure_cgroup_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0) return true;
  if (errno == EEXIST) return false;
  throw_errno("cannot create cgroup " + path);
}

void move_pid_to_cgroup(const std::string& cgroup_path, pid_t pid) {
  std::string procs = cgroup_path + "/cgroup.procs";
  UniqueFd fd(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_errno("cannot open " + procs);
  std::string s = std::to_string(pid);
  if (::write(fd.get(), s.data(), s.size()) != static_cast<ssize_t>(s.size()))
    throw_errno("cannot move pid " + s + " into " + cgroup_path);
}

std::vector<pid_t> cgroup_pids(const std::string& cgroup_path) {
  return cgroup_pids_at(AT_FDCWD, cgroup_path);
}

std::vector<pid_t> cgroup_pids_at(int dir_fd, const std::string& cgroup_path) {
  // Plain read(2) into a buffer: `ksctl list` reads this for every app (an ifstream
  // cost several times as much per file).
  std::vector<pid_t> pids;
  UniqueFd fd(::openat(dir_fd, (cgroup_path + "/cgroup.procs").c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return pids;
  char buf[4096];
  long pid = 0;
  bool in_number = false;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] >= '0' && buf[i] <= '9') {
        pid = pid * 10 + (buf[i] - '0');
        in_number = true;
      } else if (in_number) {
        pids.push_back(static_cast<pid_t>(pid));
        pid = 0;
        in_number = false;
      }
    }
  }
  if (in_number) pids.push_back(static_cast<pid_t>(pid));
  return pids;
}

std::optional<std::size_t> cgroup_descendants(const std::string& cgroup_path) {
  std::ifstream in(cgroup_path + "/cgroup.stat");
  std::string key;
  std::size_t value = 0;
  while (in >> key >> value)
    if (key == "nr_descendants") return value;
  return std::nullopt;
}

bool cgroup_populated(const std::string& cgroup_path) {
  std::ifstream in(cgroup_path + "/cgroup.events");
  std::string key;
  int value = 0;
  while (in >> key >> value) {
    if (key == "populated") return value != 0;
  }
  // No cgroup.events: the cgroup is gone, so nothing lives in it.
  return false;
}

bool remove_cgroup_tree(const std::string& path) {
  bool all_removed = true;
  if (DIR* dir = ::opendir(path.c_str())) {
    std::vector<std::string> children;
    while (dirent* e = ::readdir(dir)) {
      if (e->d_type == DT_DIR && std::string(e->d_name) != "." && std::string(e->d_name) != "..")
        children.push_back(path + "/" + e->d_name);
    }
    ::closedir(dir);
    for (const auto& child : children) all_removed = remove_cgroup_tree(child) && all_removed;
  } else {
    return errno == ENOENT;
  }
  if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return false;
  return all_removed;
}

UniqueFd open_cgroup(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw_errno("cannot open cgroup " + path);
  return fd;
}

}  // namespace ks
