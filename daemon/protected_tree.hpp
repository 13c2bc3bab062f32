// The protected cgroup tree: <cgroup2 mount>/<slice>, a slice per profile below it, the
// apps below those. Where each path is, the programs attached to its root, the one check
// that enforcement is in force for a cgroup, and noticing when systemd removes or
// re-creates a part of it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "killswitch/config.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/fd.hpp"

namespace ks {

class ProtectedTree {
 public:
  // Finds the cgroup2 mount; creates nothing yet.
  ProtectedTree(Enforcement& enforcement, std::string slice);

  const std::string& mount() const { return mount_; }
  const std::string& root() const { return root_; }                  // absolute
  std::string profile_slice_path(const std::string& profile) const;  // absolute
  // The cgroup (absolute path) systemd put a process in for a scope in the profile's slice;
  // throws ks::Error when it is anywhere else.
  std::string scope_cgroup_of(pid_t pid, const std::string& profile) const;
  std::string profile_slice_unit(const std::string& profile) const;  // "killswitch-work.slice"
  // "/killswitch.slice/..." for an absolute cgroup path: as users and systemd name it.
  std::string relative(const std::string& absolute_cgroup) const;
  // systemd nests "a-b.slice" under "a.slice": the profile slices are systemd's units only
  // when the tree's own name has no dash.
  bool slices_are_systemd_units() const;

  // The root and every profile's slice exist (made where missing).
  void create(const Config& config);
  // Attaches the programs to the root and proves them in force there. Throws ks::Error.
  void attach();
  std::uint64_t attached_root_id() const { return attached_root_id_; }

  // What is not in force for a cgroup: its cgroup hooks, then the system-wide ones. Empty
  // when protection holds. Every "is enforcement effective" question asks this.
  std::string not_effective_on(const std::string& absolute_cgroup) const;

  // What systemd (or anyone) did to the tree since the last look, made whole again:
  // kRootRecreated: the root was removed or re-created (the programs must be attached
  // again); kSliceRecreated: a profile slice was (it must be classified again).
  enum class Change { kNone, kRootRecreated, kSliceRecreated };
  Change repair(const Config& config);

  // True when the tree has exactly the profile slices and `apps` other cgroups (so the
  // tracked apps are all there is: no walk needed).
  bool holds_only(const Config& config, std::size_t apps) const;
  // Every cgroup below the root, parents before their children.
  void walk(const std::function<void(const std::string&)>& visit) const;

  // The relative path of a cgroup of the tree by id (a walk, cached), remembered ones
  // first; nullopt when none has that id.
  std::optional<std::string> find(std::uint64_t id);
  // A cgroup that goes away: its events may still be in the ring and keep naming it.
  void remember(std::uint64_t id, const std::string& absolute_cgroup);

  // inotify on the root and its parent: systemd removing or re-creating a slice's cgroup
  // is seen at once, not at the next sweep. -1 when inotify is unavailable.
  int watch_fd() const { return watch_fd_.get(); }
  void drain_watch();  // read what woke the loop

 private:
  void watch();

  Enforcement& enforcement_;
  std::string slice_;
  std::string mount_;
  std::string root_;
  std::uint64_t attached_root_id_ = 0;
  UniqueFd watch_fd_;
  std::map<std::uint64_t, std::string> names_;  // id -> relative path, bounded
};

}  // namespace ks
