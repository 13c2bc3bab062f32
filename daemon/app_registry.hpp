// The protected apps ksd tracks: one cgroup each (made by ksd for ksrun and protect, or a
// scope or service systemd made), its profile and counter slot. Apps are adopted at
// start-up from the tree an earlier ksd left, added on launch and protect, and retired
// when their cgroup empties: inotify on each populated app's cgroup.events says when, a
// sweep every second reads the apps without a watch and, in turn, a six-hundredth of the
// others (each every ten minutes).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <unordered_map>

#include "killswitch/app_slots.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/fd.hpp"

namespace ks {

// What the registry writes in the kernel: the classification of app cgroups and their
// counters. Enforcement in ksd (EnforcementAppMaps), a fake in unit tests.
class AppMaps {
 public:
  virtual ~AppMaps() = default;
  virtual void set_cgroup(std::uint64_t cgroup_id, std::uint32_t profile_id,
                          std::uint32_t app_slot) = 0;
  virtual void remove_cgroup(std::uint64_t cgroup_id) = 0;
  virtual void remove_counters(std::uint64_t cgroup_id) = 0;
  virtual void reset_app_counters(std::uint32_t app_slot) = 0;
  virtual Counters counters_of(std::uint64_t cgroup_id, std::uint32_t app_slot) const = 0;
};

class EnforcementAppMaps : public AppMaps {
 public:
  explicit EnforcementAppMaps(Enforcement& enforcement) : e_(enforcement) {}
  void set_cgroup(std::uint64_t id, std::uint32_t profile_id, std::uint32_t slot) override {
    e_.set_cgroup(id, profile_id, slot);
  }
  void remove_cgroup(std::uint64_t id) override { e_.remove_cgroup(id); }
  void remove_counters(std::uint64_t id) override { e_.remove_counters(id); }
  void reset_app_counters(std::uint32_t slot) override { e_.reset_app_counters(slot); }
  Counters counters_of(std::uint64_t id, std::uint32_t slot) const override {
    return e_.counters_of(id, slot);
  }

 private:
  Enforcement& e_;
};

struct App {
  std::string path;  // absolute cgroup path
  std::string profile;
  std::uint64_t cgroup_id = 0;
  // Made by ksd (ksd removes it when it empties); false for systemd's units, which
  // systemd removes itself.
  bool owned = true;
  std::uint32_t slot = 0;    // counter slot (AppSlots), 0: none
  std::string command = {};  // what it was started as (read once: `ksctl list` shows it)
  int watch = -1;            // inotify watch on its cgroup.events, once seen populated
  // A ready scope (systemd hosts): only ksd's placeholder process, this pid, is in it until
  // a launch joins it. Not an app yet: not listed, not counted. 0 for every real app. Set
  // through AppRegistry::set_holder.
  pid_t holder = 0;
};

class AppRegistry {
 public:
  using ProfileIdOf = std::function<std::uint32_t(const std::string& profile)>;
  using OnRetired = std::function<void(const App&)>;  // before it is forgotten

  static constexpr unsigned kFullSweepEverySweeps = 600;
  // 16: about a millisecond of ksd's loop per sweep here; 50 held it up for ~3 ms every
  // second (what a status or events request then waited) while ksd put watches on 10,000
  // adopted apps. Those now take ~10 minutes to be all watched; until then the sweeps read
  // them in turn.
  static constexpr std::size_t kUnwatchedPerSweep = 16;

  AppRegistry(AppMaps& maps, ProfileIdOf profile_id_of, OnRetired on_retired);

  // inotify for the apps' cgroup.events; -1 when unavailable (then every sweep reads every
  // app).
  int watch_fd() const { return watch_fd_.get(); }

  // The app cgroups in a profile slice at start-up: tracked with the counter slot an
  // earlier ksd gave them (`entries` is the classification map). owned(name): whether such
  // a cgroup is ksd's to remove.
  void adopt_slice(const std::string& slice, const std::string& profile,
                   const std::map<std::uint64_t, ks_cgroup_value>& entries,
                   const std::function<bool(const std::string& name)>& owned);
  // After adopt_slice for every slice: apps found without a counter slot get one while at
  // least half of them stay free. Their classification is written by the caller.
  void give_spare_slots();
  // Tracks an app: gives it a counter slot if it has none (its counters zeroed first) and
  // classifies its cgroup. Throws ks::Error (nothing tracked then).
  App& add(App app);
  // A new cgroup <slice>/<stem>.scope (or <stem>-N.scope if taken by a live one) for an
  // app, classified before any process is in it.
  App& create(const std::string& slice, const std::string& profile, const std::string& stem);

  // cgroup.events of watched apps changed: retires the ones that emptied.
  void on_watch_ready();
  // The 1 s sweep: the apps without a watch (up to kUnwatchedPerSweep), and a
  // kFullSweepEverySweeps-th of the others in turn (each app every ten minutes); every app
  // after the watch queue overflowed.
  void sweep();

  App* find(std::uint64_t cgroup_id);
  // Marks a tracked cgroup a ready scope held by `holder` (ReadyScopes), or, with 0, an app
  // a launch joined.
  void set_holder(std::uint64_t cgroup_id, pid_t holder);
  // The ready scopes (App::holder != 0) by cgroup id: a few, so reports skip them cheaply.
  const std::set<std::uint64_t>& ready() const { return ready_; }
  std::map<std::uint64_t, App>& apps() { return apps_; }
  const std::map<std::uint64_t, App>& apps() const { return apps_; }
  // An app's counters, wherever the kernel keeps them (by cgroup id and by its slot).
  Counters counters(std::uint64_t cgroup_id) const;
  std::size_t slots_in_use() const { return slots_.in_use(); }

 private:
  bool is_empty(App& app);  // also starts watching a populated app's cgroup.events
  void retire_if_empty(std::uint64_t cgroup_id);

  AppMaps& maps_;
  ProfileIdOf profile_id_of_;
  OnRetired on_retired_;
  std::map<std::uint64_t, App> apps_;
  std::set<std::uint64_t> ready_;
  AppSlots slots_;
  UniqueFd watch_fd_;
  std::unordered_map<int, std::uint64_t> watches_;  // watch -> app's cgroup id
  // The watch queue overflowed: changes were lost, every app is read at the next sweep.
  bool read_all_next_sweep_ = false;
  // The rolling backstop: the last app it read, and how many it reads per sweep this round.
  std::uint64_t sweep_cursor_ = 0;
  std::size_t round_share_ = 0;
};

}  // namespace ks
