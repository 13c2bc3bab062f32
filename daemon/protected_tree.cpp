#include "protected_tree.hpp"

#include <dirent.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"
#include "killswitch/log.hpp"

namespace ks {
namespace {

// Names of cgroups looked up for events, bounded: an event's app is named from here.
constexpr std::size_t kNamesKept = 16384;

std::string slice_stem(const std::string& slice) {
  const std::string suffix = ".slice";
  if (slice.size() > suffix.size() &&
      slice.compare(slice.size() - suffix.size(), suffix.size(), suffix) == 0)
    return slice.substr(0, slice.size() - suffix.size());
  return slice;
}

void walk_below(const std::string& dir, const std::function<void(const std::string&)>& visit) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> children;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (e->d_type == DT_DIR && name != "." && name != "..") children.push_back(dir + "/" + name);
  }
  ::closedir(d);
  for (const auto& c : children) {
    visit(c);
    walk_below(c, visit);
  }
}

}  // namespace

ProtectedTree::ProtectedTree(Enforcement& enforcement, std::string slice)
    : enforcement_(enforcement),
      slice_(std::move(slice)),
      mount_(find_cgroup2_mount()),
      root_(mount_ + "/" + slice_) {}

std::string ProtectedTree::profile_slice_path(const std::string& profile) const {
  return root_ + "/" + profile_slice_unit(profile);
}

std::string ProtectedTree::scope_cgroup_of(pid_t pid, const std::string& profile) const {
  const std::string cgroup = mount_ + cgroup_of_pid(pid);
  const std::string slice = profile_slice_path(profile);
  if (cgroup.rfind(slice + "/", 0) != 0)
    throw Error("systemd put process " + std::to_string(pid) + " in " + relative(cgroup) +
                ", outside " + relative(slice));
  return cgroup;
}

std::string ProtectedTree::profile_slice_unit(const std::string& profile) const {
  return slice_stem(slice_) + "-" + profile + ".slice";
}

std::string ProtectedTree::relative(const std::string& absolute_cgroup) const {
  return absolute_cgroup.substr(mount_.size());
}

bool ProtectedTree::slices_are_systemd_units() const {
  return slice_stem(slice_).find('-') == std::string::npos;
}

void ProtectedTree::create(const Config& config) {
  if (ensure_cgroup_dir(root_)) log_info("created protected tree " + root_);
  for (const auto& p : config.profiles) ensure_cgroup_dir(profile_slice_path(p.name));
}

void ProtectedTree::attach() {
  enforcement_.attach(root_);
  attached_root_id_ = cgroup_id(root_);
  // Prove it before anyone relies on it: every hook must be effective on the root.
  std::string missing = not_effective_on(root_);
  if (!missing.empty())
    throw Error("programs not effective on " + root_ + " after attach: " + missing);
  watch();
}

std::string ProtectedTree::not_effective_on(const std::string& absolute_cgroup) const {
  UniqueFd cg = open_cgroup(absolute_cgroup);
  std::string missing = check_effective(cg.get(), enforcement_.program_ids());
  std::string global = enforcement_.global_hooks_missing();
  if (!global.empty()) missing += (missing.empty() ? "" : ", ") + global;
  return missing;
}

ProtectedTree::Change ProtectedTree::repair(const Config& config) {
  // systemd removes a slice's cgroup when the slice is stopped and makes a new, empty one
  // (without our programs) when it is started again. Re-create it at once and attach
  // again; protected units check their own cgroup before they start (ksctl verify --self
  // in their ExecStartPre), so the moment between the two cannot start one unprotected.
  const bool missing = ensure_cgroup_dir(root_);
  if (missing || cgroup_id(root_) != attached_root_id_) {
    log_warning("the protected tree " + root_ + " was " + (missing ? "removed" : "re-created") +
                "; attaching again");
    return Change::kRootRecreated;
  }
  // A profile slice re-created alone keeps the programs (inherited from the root) but
  // loses its classification: its apps would be judged by the root's (default) profile
  // and use that profile's tunnel. (One lookup per slice: reading the whole map, 10,000
  // apps, held ksd's loop up for 5 ms every second.)
  for (const auto& p : config.profiles) {
    const std::string slice = profile_slice_path(p.name);
    if (ensure_cgroup_dir(slice) || !enforcement_.has_cgroup(cgroup_id(slice))) {
      log_warning("the profile slice " + relative(slice) + " was re-created; classifying it");
      return Change::kSliceRecreated;
    }
  }
  return Change::kNone;
}

bool ProtectedTree::holds_only(const Config& config, std::size_t apps) const {
  // cgroup.stat counts the live descendants: equal to the profile slices plus the tracked
  // apps means there is nothing else (a service's own sub-cgroups, a directory someone
  // made, an app that vanished before the sweep saw it).
  std::size_t known = apps;
  for (const auto& p : config.profiles)
    if (::access(profile_slice_path(p.name).c_str(), F_OK) == 0) ++known;
  return cgroup_descendants(root_) == known;
}

void ProtectedTree::walk(const std::function<void(const std::string&)>& visit) const {
  walk_below(root_, visit);
}

std::optional<std::string> ProtectedTree::find(std::uint64_t id) {
  if (auto it = names_.find(id); it != names_.end()) return it->second;
  // Services and scopes systemd made: look once through the tree. Events are rate limited
  // per app, so this runs a few times a second at most.
  std::string found;
  if (id == attached_root_id_) found = relative(root_);
  walk([&](const std::string& cg) {
    if (!found.empty()) return;
    try {
      if (cgroup_id(cg) == id) found = relative(cg);
    } catch (const Error&) {
    }
  });
  if (found.empty()) return std::nullopt;
  if (names_.size() >= kNamesKept) names_.clear();
  return names_[id] = found;
}

void ProtectedTree::remember(std::uint64_t id, const std::string& absolute_cgroup) {
  if (names_.size() >= kNamesKept) names_.clear();
  names_[id] = relative(absolute_cgroup);
}

void ProtectedTree::watch() {
  if (!watch_fd_) {
    watch_fd_ = UniqueFd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!watch_fd_) {
      log_warning(std::string("inotify_init1: ") + std::strerror(errno) +
                  "; a re-created slice is noticed within 1 s instead");
      return;
    }
  }
  const std::string parent = root_.substr(0, root_.find_last_of('/'));
  // Adding a watch again on the same directory only updates it; a re-created directory
  // is a new inode and gets a new watch (the old one ends with IN_IGNORED).
  for (const std::string& dir : {parent, root_})
    if (::inotify_add_watch(watch_fd_.get(), dir.c_str(), IN_CREATE | IN_DELETE | IN_ONLYDIR) < 0)
      log_warning("cannot watch " + dir + " (" + std::strerror(errno) +
                  "); a re-created slice is noticed within 1 s instead");
}

void ProtectedTree::drain_watch() {
  alignas(inotify_event) char buf[4096];
  while (watch_fd_ && ::read(watch_fd_.get(), buf, sizeof(buf)) > 0) {
  }
}

}  // namespace ks
