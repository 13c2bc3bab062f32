// Enforcement: the BPF side of Killswitch as seen from user space. Loads the programs,
// re-adopts pinned maps and links left by an earlier ksd (so a restart or an upgrade
// never opens an unprotected window), attaches to the protected tree and writes maps.
#pragma once

#include <bpf/bpf.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "killswitch/counters.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/hooks.hpp"
#include "killswitch_abi.h"

struct killswitch_bpf;  // the bpftool-generated skeleton

namespace ks {

struct SkeletonDeleter {
  void operator()(killswitch_bpf* skel) const;
};

// munmap(2) for a unique_ptr to a mapping of `length` bytes.
struct MemoryUnmapper {
  std::size_t length = 0;
  void operator()(void* p) const;
};

class Enforcement {
 public:
  // Loads the programs with maps pinned by name under pin_dir (re-using pins that are
  // there), then for each hook either atomically swaps the program of the pinned link
  // (re-adoption: the hook is never empty) or creates and pins a new link on
  // cgroup_path. Maps are written by the caller *before* attach() so the very first
  // attachment already enforces the right policy.
  static Enforcement load(const std::string& pin_dir);
  void attach(const std::string& cgroup_path);
  // The system-wide hooks of this kernel (resolver_guard before Linux 6.7) that are not
  // attached with this ksd's program: empty when all are. check_effective() covers the
  // cgroup hooks.
  std::string global_hooks_missing() const;

  // True when every hook of a Killswitch ABI exists as pinned link under pin_dir.
  static bool pins_present(const std::string& pin_dir);
  // Unpins links and maps: protection ends. Used only by the explicit teardown command.
  static void remove_pins(const std::string& pin_dir);

  // The loaded programs' ids by hook (fixed once loaded).
  const ProgramIds& program_ids() const;
  // The programs the pinned links under pin_dir run, by hook (no ksd needed; the pin
  // directory is root-only). Throws ks::Error naming a missing or unreadable pin.
  static ProgramIds pinned_program_ids(const std::string& pin_dir);
  // The profile the pinned ks_cgroups map gives a cgroup; nullopt when it has no entry.
  // Throws ks::Error when the map is not pinned.
  static std::optional<std::uint32_t> pinned_cgroup_profile(const std::string& pin_dir,
                                                            std::uint64_t cgroup_id);

  // Map access.
  void write_config(const ks_config& config);
  ks_profile read_profile(std::uint32_t id) const;
  void write_profile(std::uint32_t id, const ks_profile& profile);
  // Classifies a cgroup: its profile and, for apps, their counter slot (AppSlots).
  void set_cgroup(std::uint64_t cgroup_id, std::uint32_t profile_id, std::uint32_t app_slot = 0);
  void remove_cgroup(std::uint64_t cgroup_id);
  // The classification map, read in batches: cgroup id -> profile (and slot).
  std::map<std::uint64_t, ks_cgroup_value> cgroup_entries() const;
  // Where a whole-map read taken a batch at a time stopped (BPF_MAP_LOOKUP_BATCH goes on from
  // there), for readers that must not hold ksd up for the whole map at once: the list.
  // Entries written or removed between two batches may be seen or not.
  struct BatchPosition {
    std::uint64_t token = 0;
    bool started = false;
    bool done = false;
  };
  // The next batch (up to 1024 entries) of the classification map into `out`.
  void read_cgroup_entries(BatchPosition& position,
                           std::unordered_map<std::uint64_t, ks_cgroup_value>& out) const;
  // Whether the cgroup is classified (one lookup; the whole map is 10,000+ entries).
  bool has_cgroup(std::uint64_t cgroup_id) const;
  // Replaces every profile's tunnel set ((profile, ifindex) -> families, as planned; the
  // kernel side keeps only the ifindexes). Throws when a profile has too many.
  void replace_tunnels(
      const std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint32_t>& want);
  // The (profile, ifindex) pairs egress lets through.
  std::set<std::pair<std::uint32_t, std::uint32_t>> tunnels() const;
  // Replaces the allow_lan entries of every profile.
  void replace_lan(const std::vector<ks_lan_key>& want);
  Counters totals() const;
  // An app's counters: by cgroup id, plus its slot's (packets of its marked sockets).
  Counters counters_of(std::uint64_t cgroup_id, std::uint32_t app_slot = 0) const;
  // Every app's counters at once (a few batch reads instead of two lookups per app):
  // by cgroup id, and by slot (index = slot).
  std::map<std::uint64_t, Counters> all_counters_by_cgroup() const;
  std::vector<Counters> all_counters_by_slot() const;
  // The next batch of the counters by cgroup id into `out` (see BatchPosition).
  void read_counters_by_cgroup(BatchPosition& position,
                               std::unordered_map<std::uint64_t, Counters>& out) const;
  // Zeroes a slot's counters before a new app gets it. Its fast-path rows stop passing
  // anything, and what they counted moves to their profile's retired row (the profile's
  // totals keep it).
  void reset_app_counters(std::uint32_t app_slot);
  // Gives the slot's fast-path rows (every CPU's) to profile_id with its current tunnels;
  // nothing changes where they are that profile's already. set_cgroup does it for apps.
  void give_fast_slot(std::uint32_t app_slot, std::uint32_t profile_id);
  Counters profile_counters(std::uint32_t profile_id) const;
  int events_fd() const { return map_fd("ks_events"); }
  void remove_counters(std::uint64_t cgroup_id);

  const std::string& pin_dir() const { return pin_dir_; }

 private:
  Enforcement() = default;
  int map_fd(const char* name) const;
  void drop_stale_link_pins() const;
  void attach_global(const HookInfo& hook, int prog_fd, const std::string& pin);

  ks_fast_slot* fast_rows() const { return static_cast<ks_fast_slot*>(fast_map_.get()); }
  std::uint32_t fast_app_rows() const { return ncpus_ * KS_MAX_APP_SLOTS; }
  void map_fast_slots();
  static void write_fast_tunnels(ks_fast_slot& row, const ks_tunnel_set& set,
                                 std::uint32_t families);
  // The fast-path counts of a slot (all CPUs), or of a profile (its rows and retired row).
  Counters fast_counts_of_slot(std::uint32_t app_slot) const;
  Counters fast_counts_of_profile(std::uint32_t profile_id) const;

  std::string pin_dir_;
  std::unique_ptr<killswitch_bpf, SkeletonDeleter> skel_;
  mutable std::optional<ProgramIds> program_ids_;  // program_ids(), asked once
  std::uint32_t ncpus_ = 0;
  // ks_fast_slots, mapped into ksd (killswitch_abi.h): ksd writes the profile and tunnel
  // words of the rows in place, the programs the counters.
  std::unique_ptr<void, MemoryUnmapper> fast_map_;
  std::vector<UniqueFd> links_;  // keep link fds for the daemon's lifetime
};

// Mounts bpffs on /sys/fs/bpf if the pin directory's filesystem is not bpffs yet, then
// creates the pin directory (mode 0700).
void ensure_pin_dir(const std::string& pin_dir);

// Why resolver_guard cannot run on this kernel (no BTF entry for its function, BPF
// tracing forbidden, no trampoline), or nothing when it can: probed by loading and
// attaching a program that changes nothing. Needs CAP_BPF and CAP_PERFMON.
std::optional<std::string> resolver_guard_unavailable();

// The network namespace cookie of the caller (SO_NETNS_COOKIE).
std::uint64_t current_netns_cookie();

}  // namespace ks
