#include "app_registry.hpp"

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

AppRegistry::AppRegistry(AppMaps& maps, ProfileIdOf profile_id_of, OnRetired on_retired)
    : maps_(maps),
      profile_id_of_(std::move(profile_id_of)),
      on_retired_(std::move(on_retired)),
      watch_fd_(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) {
  if (!watch_fd_)
    log_warning(std::string("inotify_init1 (apps read every second instead): ") +
                std::strerror(errno));
}

void AppRegistry::adopt_slice(const std::string& slice, const std::string& profile,
                              const std::map<std::uint64_t, ks_cgroup_value>& entries,
                              const std::function<bool(const std::string& name)>& owned) {
  DIR* d = ::opendir(slice.c_str());
  if (!d) return;
  // A cgroup's id is its kernfs inode number, which readdir reports too: no stat per app
  // (with 10,000 apps, a tenth of a second of start-up). The first app of each slice is
  // checked against stat; should a kernel ever differ, every app is stat'ed.
  bool trust_d_ino = false, checked = false;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (e->d_type != DT_DIR || name == "." || name == "..") continue;
    App app{slice + "/" + name, profile, 0, owned(name)};
    try {
      if (trust_d_ino) {
        app.cgroup_id = e->d_ino;
      } else {
        app.cgroup_id = cgroup_id(app.path);
        if (!checked) trust_d_ino = app.cgroup_id == e->d_ino;
        checked = true;
      }
    } catch (const Error&) {
      continue;
    }
    // An app keeps the slot an earlier ksd gave it (its sockets carry it). One found
    // without a slot (made while no ksd ran) may get a spare one (give_spare_slots).
    auto entry = entries.find(app.cgroup_id);
    if (entry != entries.end() && slots_.claim(entry->second.app_slot))
      app.slot = entry->second.app_slot;
    apps_[app.cgroup_id] = app;
  }
  ::closedir(d);
}

void AppRegistry::give_spare_slots() {
  // Half the slots stay for the apps ksd launches (the ones about to open sockets). An app
  // given a slot now counts its new sockets' packets in its slot, on the pass path; the
  // sockets it opened before carry none and are counted by cgroup id, as exactly, at the
  // full path's price. Its totals are the sum of both.
  for (auto& [id, app] : apps_) {
    if (app.slot != 0) continue;
    if (slots_.in_use() >= KS_MAX_APP_SLOTS / 2) return;
    const std::uint32_t slot = slots_.take();
    if (slot == 0) return;
    maps_.reset_app_counters(slot);  // before any socket can carry it
    app.slot = slot;                 // classified with it by the caller's next map write
  }
}

App& AppRegistry::add(App app) {
  const bool new_slot = app.slot == 0 && (app.slot = slots_.take()) != 0;
  try {
    if (new_slot) maps_.reset_app_counters(app.slot);  // before any socket can carry it
    maps_.set_cgroup(app.cgroup_id, profile_id_of_(app.profile), app.slot);
  } catch (...) {
    if (new_slot) slots_.release(app.slot);
    throw;
  }
  App& tracked = apps_[app.cgroup_id];
  tracked = std::move(app);
  return tracked;
}

App& AppRegistry::create(const std::string& slice, const std::string& profile,
                         const std::string& stem) {
  ensure_cgroup_dir(slice);
  const std::string base = slice + "/" + stem;
  std::string path = base + ".scope";
  for (int n = 1; !ensure_cgroup_dir(path); ++n) {
    if (!cgroup_populated(path) && remove_cgroup_tree(path) && ensure_cgroup_dir(path)) break;
    path = base + "-" + std::to_string(n) + ".scope";
  }
  // Classified before the process arrives, so its first socket already finds its app.
  return add(App{path, profile, cgroup_id(path)});
}

App* AppRegistry::find(std::uint64_t cgroup_id) {
  auto it = apps_.find(cgroup_id);
  return it == apps_.end() ? nullptr : &it->second;
}

Counters AppRegistry::counters(std::uint64_t cgroup_id) const {
  auto it = apps_.find(cgroup_id);
  return maps_.counters_of(cgroup_id, it != apps_.end() ? it->second.slot : 0);
}

void AppRegistry::on_watch_ready() {
  alignas(inotify_event) char buf[4096];
  ssize_t got;
  while ((got = ::read(watch_fd_.get(), buf, sizeof(buf))) > 0) {
    for (ssize_t at = 0; at < got;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + at);
      at += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      if (ev->mask & IN_Q_OVERFLOW) {
        // Changes were lost (thousands of apps ending at once): read them all at the next
        // sweep, within a second.
        log_info("inotify queue overflowed: every app is read at the next sweep");
        read_all_next_sweep_ = true;
        continue;
      }
      auto watched = watches_.find(ev->wd);
      if (watched == watches_.end()) continue;
      const std::uint64_t id = watched->second;
      if (ev->mask & IN_IGNORED) {
        // The file is gone (the cgroup was removed): swept by reading again.
        watches_.erase(watched);
        if (App* app = find(id)) app->watch = -1;
      }
      try {
        retire_if_empty(id);
      } catch (const std::exception& e) {
        log_error(std::string("cannot retire an emptied app (will retry): ") + e.what());
      }
    }
  }
}

void AppRegistry::sweep() {
  const bool all = read_all_next_sweep_;
  read_all_next_sweep_ = false;
  std::vector<std::uint64_t> ids;
  // The apps without a watch (new ones whose process has not arrived, ones whose watch
  // could not be added, the ones adopted at start-up): up to kUnwatchedPerSweep of them
  // per sweep (10,000 adopted apps read in one sweep held ksd's loop up for 0.27 s).
  if (all || apps_.size() > watches_.size())
    for (const auto& [id, app] : apps_)
      if (all || (app.watch < 0 && ids.size() < kUnwatchedPerSweep)) ids.push_back(id);
  // The watched ones as a backstop (inotify misses nothing but an overflow, handled above),
  // a kFullSweepEverySweeps-th of them per sweep from where the last one stopped: each is
  // read every ten minutes, and 10,000 apps never hold ksd's loop up for long (reading
  // them all in one sweep took 0.28 s here, which it did every minute).
  if (!all && !apps_.empty()) {
    auto it = apps_.upper_bound(sweep_cursor_);
    if (it == apps_.end() || round_share_ == 0) {  // a new round through all of them
      if (it == apps_.end()) it = apps_.begin();
      round_share_ = (apps_.size() + kFullSweepEverySweeps - 1) / kFullSweepEverySweeps;
    }
    for (std::size_t n = 0; n < round_share_ && it != apps_.end(); ++n, ++it) {
      ids.push_back(it->first);
      sweep_cursor_ = it->first;
    }
  }
  for (std::uint64_t id : ids) retire_if_empty(id);
}

bool AppRegistry::is_empty(App& app) {
  if (!cgroup_populated(app.path)) return true;
  if (app.watch >= 0 || !watch_fd_) return false;
  // Populated: from now on its cgroup.events says when it empties. (Not watched from its
  // creation: an app whose process never arrives would never change the file.) Read once
  // more after adding the watch: it may have emptied in between.
  app.watch =
      ::inotify_add_watch(watch_fd_.get(), (app.path + "/cgroup.events").c_str(), IN_MODIFY);
  if (app.watch >= 0) watches_[app.watch] = app.cgroup_id;
  return !cgroup_populated(app.path);
}

void AppRegistry::retire_if_empty(std::uint64_t cgroup_id) {
  auto it = apps_.find(cgroup_id);
  if (it == apps_.end()) return;
  App& app = it->second;
  if (!is_empty(app)) return;
  if (app.owned && !remove_cgroup_tree(app.path)) return;  // tried again at the next sweep
  maps_.remove_cgroup(app.cgroup_id);
  maps_.remove_counters(app.cgroup_id);
  slots_.release(app.slot);
  if (app.watch >= 0) {
    ::inotify_rm_watch(watch_fd_.get(), app.watch);  // (gone with the cgroup already)
    watches_.erase(app.watch);
  }
  on_retired_(app);
  ready_.erase(app.cgroup_id);
  apps_.erase(it);
}

void AppRegistry::set_holder(std::uint64_t cgroup_id, pid_t holder) {
  App* app = find(cgroup_id);
  if (!app) return;
  app->holder = holder;
  if (holder != 0) {
    ready_.insert(cgroup_id);
  } else {
    ready_.erase(cgroup_id);
  }
}

}  // namespace ks
