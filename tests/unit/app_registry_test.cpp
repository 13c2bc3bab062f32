// ksd's app registry without root or a kernel: a temporary directory stands in for the
// protected tree (cgroup.events files written by the test, inotify on them as on cgroupfs)
// and a fake AppMaps records what would be written into the BPF maps.
#include "app_registry.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"

namespace ks {
namespace {

class FakeMaps : public AppMaps {
 public:
  void set_cgroup(std::uint64_t id, std::uint32_t profile, std::uint32_t slot) override {
    if (fail_next_set) {
      fail_next_set = false;
      throw Error("map full");
    }
    cgroups[id] = {profile, slot};
  }
  void remove_cgroup(std::uint64_t id) override { cgroups.erase(id); }
  void remove_counters(std::uint64_t id) override { removed_counters.insert(id); }
  void reset_app_counters(std::uint32_t slot) override { reset_slots.push_back(slot); }
  Counters counters_of(std::uint64_t id, std::uint32_t slot) const override {
    Counters c;
    c.blocked_connects = id * 1000 + slot;
    return c;
  }

  std::map<std::uint64_t, ks_cgroup_value> cgroups;
  std::set<std::uint64_t> removed_counters;
  std::vector<std::uint32_t> reset_slots;
  bool fail_next_set = false;
};

class AppRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/ks-registry-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    slice_ = std::string(dir) + "/killswitch-default.slice";
    std::filesystem::create_directory(slice_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::path(slice_).parent_path(), ec);
  }
  static void SetPopulated(const std::string& cgroup, bool populated) {
    std::ofstream(cgroup + "/cgroup.events")
        << "populated " << (populated ? 1 : 0) << "\nfrozen 0\n";
  }

  FakeMaps maps_;
  std::vector<std::string> retired_;
  AppRegistry registry_{maps_,
                        [](const std::string& profile) { return profile == "default" ? 1u : 2u; },
                        [this](const App& app) { retired_.push_back(app.path); }};
  std::string slice_;
};

TEST_F(AppRegistryTest, CreateClassifiesBeforeAnyProcessArrives) {
  App& app = registry_.create(slice_, "default", "ksrun-42");
  EXPECT_EQ(app.path, slice_ + "/ksrun-42.scope");
  EXPECT_NE(app.slot, 0u);
  ASSERT_TRUE(maps_.cgroups.count(app.cgroup_id));
  EXPECT_EQ(maps_.cgroups[app.cgroup_id].profile_id, 1u);
  EXPECT_EQ(maps_.cgroups[app.cgroup_id].app_slot, app.slot);
  EXPECT_EQ(maps_.reset_slots, std::vector<std::uint32_t>{app.slot}) << "counters zeroed first";
  EXPECT_EQ(registry_.counters(app.cgroup_id).blocked_connects, app.cgroup_id * 1000 + app.slot);
}

TEST_F(AppRegistryTest, ALiveCgroupOfTheSameNameIsNotTaken) {
  std::filesystem::create_directory(slice_ + "/ksrun-42.scope");
  SetPopulated(slice_ + "/ksrun-42.scope", true);
  App& app = registry_.create(slice_, "default", "ksrun-42");
  EXPECT_EQ(app.path, slice_ + "/ksrun-42-1.scope");
}

TEST_F(AppRegistryTest, AFailedClassificationTracksNothingAndKeepsTheSlot) {
  maps_.fail_next_set = true;
  EXPECT_THROW(registry_.create(slice_, "default", "ksrun-7"), Error);
  EXPECT_TRUE(registry_.apps().empty());
  EXPECT_EQ(registry_.slots_in_use(), 0u) << "the slot of the failed one was given back";
}

TEST_F(AppRegistryTest, RetiresAnEmptiedAppOnItsWatch) {
  // A unit systemd made (not ksd's to remove): retired when cgroup.events says empty.
  std::filesystem::create_directory(slice_ + "/svc.service");
  const std::uint64_t id = cgroup_id(slice_ + "/svc.service");
  registry_.add(App{slice_ + "/svc.service", "default", id, false});
  SetPopulated(slice_ + "/svc.service", true);
  registry_.sweep();  // populated: now watched
  ASSERT_EQ(registry_.apps().size(), 1u);
  ASSERT_GE(registry_.apps().begin()->second.watch, 0);
  SetPopulated(slice_ + "/svc.service", false);
  registry_.on_watch_ready();
  EXPECT_TRUE(registry_.apps().empty());
  EXPECT_FALSE(maps_.cgroups.count(id));
  EXPECT_TRUE(maps_.removed_counters.count(id));
  EXPECT_EQ(retired_, std::vector<std::string>{slice_ + "/svc.service"});
  EXPECT_TRUE(std::filesystem::exists(slice_ + "/svc.service")) << "systemd's to remove";
}

// A ready scope (systemd made it ahead of a launch; ksd's placeholder holds it) is tracked
// like an app, classified with a slot, and known as ready until a launch joins it, or until
// it empties and is retired.
TEST_F(AppRegistryTest, KnowsItsReadyScopes) {
  for (const char* name : {"ksrun-41.scope", "ksrun-42.scope"}) {
    std::filesystem::create_directory(slice_ + "/" + name);
    registry_.add(App{slice_ + "/" + name, "default", cgroup_id(slice_ + "/" + name), false});
  }
  const std::uint64_t joined = cgroup_id(slice_ + "/ksrun-41.scope");
  const std::uint64_t left = cgroup_id(slice_ + "/ksrun-42.scope");
  registry_.set_holder(joined, 41);
  registry_.set_holder(left, 42);
  EXPECT_EQ(registry_.ready(), (std::set<std::uint64_t>{joined, left}));
  EXPECT_EQ(registry_.find(left)->holder, 42);
  EXPECT_NE(maps_.cgroups.at(left).app_slot, 0u) << "classified with a counter slot";
  registry_.set_holder(joined, 0);  // a launch joined it
  EXPECT_EQ(registry_.ready(), std::set<std::uint64_t>{left});
  EXPECT_EQ(registry_.find(joined)->holder, 0);
  SetPopulated(slice_ + "/ksrun-42.scope", false);  // its placeholder died
  registry_.sweep();
  EXPECT_FALSE(registry_.find(left));
  EXPECT_TRUE(registry_.ready().empty());
}

// Apps without a watch (10,000 adopted at start-up) are read up to kUnwatchedPerSweep per
// sweep. The backstop for watched apps (should a watch ever miss a change) reads a
// kFullSweepEverySweeps-th of them per sweep, in turn, so every app is read once a round and
// no sweep reads them all.
TEST_F(AppRegistryTest, SpreadsItsReadsOverTheSweeps) {
  constexpr int kApps = 2 * AppRegistry::kFullSweepEverySweeps;
  for (int i = 0; i < kApps; ++i) {
    const std::string path = slice_ + "/svc" + std::to_string(i) + ".service";
    std::filesystem::create_directory(path);
    registry_.add(App{path, "default", cgroup_id(path), false});
    SetPopulated(path, true);
  }
  auto watched = [&] {
    std::size_t n = 0;
    for (const auto& [id, app] : registry_.apps()) n += app.watch >= 0;
    return n;
  };
  registry_.sweep();
  EXPECT_EQ(watched(), AppRegistry::kUnwatchedPerSweep);
  while (watched() < static_cast<std::size_t>(kApps)) registry_.sweep();
  // All of them end without the watch being read: only the backstop can see it.
  for (int i = 0; i < kApps; ++i)
    SetPopulated(slice_ + "/svc" + std::to_string(i) + ".service", false);
  registry_.sweep();
  EXPECT_EQ(registry_.apps().size(), static_cast<std::size_t>(kApps - 2))
      << "one sweep reads a kFullSweepEverySweeps-th of the watched apps";
  for (unsigned s = 1; s < 2 * AppRegistry::kFullSweepEverySweeps; ++s) registry_.sweep();
  EXPECT_TRUE(registry_.apps().empty()) << "every app is read again within a round or two";
}

TEST_F(AppRegistryTest, RemovesItsOwnCgroupWhenGoneAndReusesNoSlotEarly) {
  App& app = registry_.create(slice_, "default", "ksrun-1");
  const std::uint32_t first_slot = app.slot;
  const std::string path = app.path;
  SetPopulated(path, true);
  registry_.sweep();
  std::filesystem::remove(path + "/cgroup.events");  // the cgroup's file goes: IN_IGNORED
  registry_.on_watch_ready();
  EXPECT_TRUE(registry_.apps().empty());
  EXPECT_FALSE(std::filesystem::exists(path)) << "ksd's own cgroup is removed";
  App& next = registry_.create(slice_, "default", "ksrun-2");
  EXPECT_NE(next.slot, first_slot) << "a released slot is handed out as late as possible";
}

TEST_F(AppRegistryTest, AdoptsAnEarlierKsdsAppsWithTheirSlots) {
  for (const char* name : {"ksrun-5.scope", "protect-6.scope", "svc.service"})
    std::filesystem::create_directory(slice_ + "/" + name);
  const std::uint64_t id5 = cgroup_id(slice_ + "/ksrun-5.scope");
  std::map<std::uint64_t, ks_cgroup_value> entries = {{id5, {1, 17}}};
  registry_.adopt_slice(slice_, "default", entries, [](const std::string& name) {
    return name.starts_with("ksrun-") || name.starts_with("protect-");
  });
  ASSERT_EQ(registry_.apps().size(), 3u);
  const App* five = registry_.find(id5);
  ASSERT_NE(five, nullptr);
  EXPECT_EQ(five->slot, 17u);
  EXPECT_TRUE(five->owned);
  EXPECT_FALSE(registry_.find(cgroup_id(slice_ + "/svc.service"))->owned);
  EXPECT_EQ(registry_.find(cgroup_id(slice_ + "/svc.service"))->slot, 0u)
      << "no slot without one in the map";

  // Spare slots for the apps found without one, none taken twice.
  registry_.give_spare_slots();
  std::set<std::uint32_t> slots;
  for (const auto& [id, app] : registry_.apps()) {
    EXPECT_NE(app.slot, 0u) << app.path;
    slots.insert(app.slot);
  }
  EXPECT_EQ(slots.size(), 3u);
  EXPECT_EQ(registry_.find(id5)->slot, 17u) << "an app keeps the slot it had";
  EXPECT_EQ(maps_.reset_slots.size(), 2u) << "counters zeroed before a socket carries them";
}

TEST_F(AppRegistryTest, SpareSlotsLeaveHalfForLaunches) {
  for (int i = 0; i < KS_MAX_APP_SLOTS; ++i)
    std::filesystem::create_directory(slice_ + "/svc-" + std::to_string(i) + ".service");
  registry_.adopt_slice(slice_, "default", {}, [](const std::string&) { return false; });
  registry_.give_spare_slots();
  std::size_t with_slot = 0;
  for (const auto& [id, app] : registry_.apps()) with_slot += app.slot != 0;
  EXPECT_EQ(with_slot, KS_MAX_APP_SLOTS / 2u);
  EXPECT_NE(registry_.create(slice_, "default", "ksrun-1").slot, 0u) << "a launch still gets one";
}

}  // namespace
}  // namespace ks
