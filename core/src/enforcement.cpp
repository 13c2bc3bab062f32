#include "killswitch/enforcement.hpp"

#include <bpf/libbpf.h>
#include <dirent.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <set>

#include "killswitch.skel.h"
#include "killswitch/bpffs.hpp"
#include "killswitch/cgroup.hpp"
#include "killswitch/config.hpp"
#include "killswitch/error.hpp"
#include "killswitch/log.hpp"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace ks {

namespace {

std::string link_pin_path(const std::string& pin_dir, const char* hook) {
  return pin_dir + "/link_" + hook;
}

bpf_program* program_for(killswitch_bpf* skel, const std::string& hook) {
  if (hook == "sock_create") return skel->progs.ks_sock_create;
  if (hook == "connect4") return skel->progs.ks_connect4;
  if (hook == "connect6") return skel->progs.ks_connect6;
  if (hook == "sendmsg4") return skel->progs.ks_sendmsg4;
  if (hook == "sendmsg6") return skel->progs.ks_sendmsg6;
  if (hook == "egress") return skel->progs.ks_egress;
  if (hook == "ingress") return skel->progs.ks_ingress;
  if (hook == "recvmsg4") return skel->progs.ks_recvmsg4;
  if (hook == "recvmsg6") return skel->progs.ks_recvmsg6;
  if (hook == "getpeername4") return skel->progs.ks_getpeername4;
  if (hook == "getpeername6") return skel->progs.ks_getpeername6;
  if (hook == "setsockopt") return skel->progs.ks_setsockopt;
  if (hook == "connect_unix") return skel->progs.ks_connect_unix;
  if (hook == "resolver_guard") return skel->progs.ks_resolver_guard;
  throw Error("internal: unknown hook " + hook);
}

std::uint32_t prog_id_of_fd(int fd) {
  bpf_prog_info info{};
  __u32 len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) throw_errno("cannot read BPF program info");
  return info.id;
}

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

}  // namespace

std::optional<std::string> resolver_guard_unavailable() {
  const int btf_id = libbpf_find_vmlinux_btf_id(kResolverGuardTarget, BPF_MODIFY_RETURN);
  if (btf_id < 0)
    return std::string("the kernel's BTF has no ") + kResolverGuardTarget +
           " (a kernel without CONFIG_SECURITY_NETWORK?)";
  // r0 = 0; exit: "no change" for BPF_MODIFY_RETURN, so attaching it for a moment is
  // harmless. Loading alone would not show whether the trampoline can be attached.
  const bpf_insn insns[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_MODIFY_RETURN,
              .attach_btf_id = static_cast<__u32>(btf_id));
  UniqueFd prog(bpf_prog_load(BPF_PROG_TYPE_TRACING, "ks_guard_probe", "GPL", insns,
                              sizeof(insns) / sizeof(insns[0]), &opts));
  if (!prog)
    return std::string("the kernel refuses BPF tracing programs (") + std::strerror(errno) +
           "; lockdown or a security module may forbid them)";
  UniqueFd link(bpf_link_create(prog.get(), 0, BPF_MODIFY_RETURN, nullptr));
  if (!link)
    return std::string("the kernel cannot attach to ") + kResolverGuardTarget + " (" +
           std::strerror(errno) + ")";
  return std::nullopt;
}

void SkeletonDeleter::operator()(killswitch_bpf* skel) const { killswitch_bpf__destroy(skel); }

Enforcement Enforcement::load(const std::string& pin_dir) {
  ensure_pin_dir(pin_dir);
  Enforcement e;
  e.pin_dir_ = pin_dir;

  LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_dir.c_str());
  e.skel_.reset(killswitch_bpf__open_opts(&opts));
  if (!e.skel_) throw_errno("cannot open the BPF object");
  // libbpf 1.1 cannot guess the type from "cgroup/connect_unix"; before Linux 6.7 the
  // program is not loaded at all (and its kfunc need not resolve).
  bpf_program* connect_unix = e.skel_->progs.ks_connect_unix;
  bpf_program__set_type(connect_unix, BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
  bpf_program__set_expected_attach_type(connect_unix, kAttachUnixConnect);
  if (!kernel_has_unix_hooks()) {
    bpf_program__set_autoload(connect_unix, false);
    // The same guarantee from the security hook; without it ksd must not start half-done.
    if (auto why = resolver_guard_unavailable())
      throw Error(
          "this kernel has no cgroup/connect_unix (Linux 6.7+), and resolver_guard, which "
          "refuses protected apps the unix sockets of systemd-resolved and nscd in its "
          "place, cannot run: " +
          *why +
          ". Protected apps' name lookups through those services would leave outside the "
          "tunnel, so ksd refuses to start (docs/kernels.md)");
  } else {
    bpf_program__set_autoload(e.skel_->progs.ks_resolver_guard, false);
  }
  const int ncpus = libbpf_num_possible_cpus();
  if (ncpus <= 0) throw Error("cannot count possible CPUs");
  e.ncpus_ = static_cast<std::uint32_t>(ncpus);
  bpf_map__set_max_entries(e.skel_->maps.ks_fast_slots, KS_FAST_ROWS(e.ncpus_));
  if (int err = killswitch_bpf__load(e.skel_.get()); err != 0)
    throw Error("cannot load the BPF programs (" + std::string(std::strerror(-err)) +
                    "); pinned maps under " + pin_dir +
                    " may come from an incompatible Killswitch version, see 'ksctl doctor' and the "
                    "libbpf messages above",
                -err);
  e.map_fast_slots();
  return e;
}

void MemoryUnmapper::operator()(void* p) const {
  if (p) ::munmap(p, length);
}

void Enforcement::map_fast_slots() {
  const std::size_t length = sizeof(ks_fast_slot) * KS_FAST_ROWS(ncpus_);
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED,
                   bpf_map__fd(skel_->maps.ks_fast_slots), 0);
  if (p == MAP_FAILED) throw_errno("cannot map ks_fast_slots");
  fast_map_ = std::unique_ptr<void, MemoryUnmapper>(p, MemoryUnmapper{length});
}

void Enforcement::attach(const std::string& cgroup_path) {
  UniqueFd cgroup = open_cgroup(cgroup_path);
  std::uint64_t want_cgroup = cgroup_id(cgroup_path);

  for (const HookInfo& hook : active_hooks()) {
    int prog_fd = bpf_program__fd(program_for(skel_.get(), hook.name));
    std::string pin = link_pin_path(pin_dir_, hook.name);
    if (!hook.per_cgroup()) {
      attach_global(hook, prog_fd, pin);
      continue;
    }

    if (exists(pin)) {
      UniqueFd old_link(bpf_obj_get(pin.c_str()));
      bpf_link_info info{};
      __u32 len = sizeof(info);
      if (old_link && bpf_obj_get_info_by_fd(old_link.get(), &info, &len) == 0 &&
          info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == want_cgroup &&
          info.cgroup.attach_type == hook.attach_type) {
        // Atomic replacement: the hook runs the old program until this call returns
        // and the new one after it; there is no moment without enforcement.
        if (bpf_link_update(old_link.get(), prog_fd, nullptr) != 0)
          throw_errno(std::string("cannot update the pinned ") + hook.name + " link");
        links_.push_back(std::move(old_link));
        continue;
      }
      // The pin is stale (its cgroup was removed and re-created): attach anew below,
      // and only then drop the old pin.
    }

    UniqueFd link(bpf_link_create(prog_fd, cgroup.get(), hook.attach_type, nullptr));
    if (!link)
      throw_errno(std::string("cannot attach the ") + hook.name + " program to " + cgroup_path);
    ::unlink(pin.c_str());
    if (bpf_obj_pin(link.get(), pin.c_str()) != 0)
      throw_errno(std::string("cannot pin the ") + hook.name + " link at " + pin);
    links_.push_back(std::move(link));
  }
  drop_stale_link_pins();
}

// A system-wide hook: tracing links cannot be updated in place (BPF_LINK_UPDATE is for
// cgroup, XDP and a few other links), so the new link is attached next to the old one,
// pinned under a temporary name and renamed over the old pin. Until the rename both run
// (both refuse the same things), after it the old one is detached; at no moment is
// neither attached, and if ksd dies in between the old pin still holds.
void Enforcement::attach_global(const HookInfo& hook, int prog_fd, const std::string& pin) {
  if (UniqueFd pinned{bpf_obj_get(pin.c_str())}) {
    bpf_link_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(pinned.get(), &info, &len) == 0 &&
        info.prog_id == prog_id_of_fd(prog_fd))
      return;  // attached by this ksd already (the tree was re-created)
  }
  UniqueFd link(bpf_link_create(prog_fd, 0, hook.attach_type, nullptr));
  if (!link) throw_errno(std::string("cannot attach the ") + hook.name + " program");
  // (bpffs refuses names with a dot; a leftover of a crash here is a stale link_ pin.)
  const std::string fresh = pin + "_next";
  ::unlink(fresh.c_str());
  if (bpf_obj_pin(link.get(), fresh.c_str()) != 0)
    throw_errno(std::string("cannot pin the ") + hook.name + " link at " + fresh);
  if (::rename(fresh.c_str(), pin.c_str()) != 0) {
    int err = errno;
    ::unlink(fresh.c_str());
    throw_errno("cannot move the " + std::string(hook.name) + " link's pin to " + pin, err);
  }
  links_.push_back(std::move(link));
}

std::string Enforcement::global_hooks_missing() const {
  std::string missing;
  for (const HookInfo& hook : active_hooks()) {
    if (hook.per_cgroup()) continue;
    const std::string pin = link_pin_path(pin_dir_, hook.name);
    UniqueFd link(bpf_obj_get(pin.c_str()));
    bpf_link_info info{};
    __u32 len = sizeof(info);
    const bool runs_ours =
        link && bpf_obj_get_info_by_fd(link.get(), &info, &len) == 0 &&
        info.prog_id == prog_id_of_fd(bpf_program__fd(program_for(skel_.get(), hook.name)));
    if (!runs_ours) missing += std::string(missing.empty() ? "" : ", ") + hook.name;
  }
  return missing;
}

// Maps an older ksd pinned and this one no longer has (the programs that used them are
// replaced by the time these are unpinned; the kernel frees them with their last user).
static_assert(kMaxTunnelsPerProfile == KS_MAX_TUNNELS_PER_PROFILE,
              "the configuration may name exactly as many tunnels as a ks_tunnel_set holds");

const char* const kRetiredMapPins[] = {"ks_tunnels", "ks_totals"};

void Enforcement::drop_stale_link_pins() const {
  for (const char* name : kRetiredMapPins) ::unlink((pin_dir_ + "/" + name).c_str());
  // Links of hooks an older ksd had and this one does not use: unpinning detaches them.
  DIR* dir = ::opendir(pin_dir_.c_str());
  if (!dir) return;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name.rfind("link_", 0) != 0) continue;
    bool known = false;
    // A hook this kernel does not use is stale too (resolver_guard after an upgrade to 6.7+).
    for (const HookInfo& hook : active_hooks())
      known = known || name == std::string("link_") + hook.name;
    if (!known) stale.push_back(pin_dir_ + "/" + name);
  }
  ::closedir(dir);
  for (const auto& path : stale) ::unlink(path.c_str());
}

bool Enforcement::pins_present(const std::string& pin_dir) {
  for (const HookInfo& hook : active_hooks())
    if (!exists(link_pin_path(pin_dir, hook.name))) return false;
  return true;
}

void Enforcement::remove_pins(const std::string& pin_dir) {
  for (const HookInfo& hook : kHooks) ::unlink(link_pin_path(pin_dir, hook.name).c_str());
  if (DIR* dir = ::opendir(pin_dir.c_str())) {  // links of hooks older versions had
    std::vector<std::string> links;
    while (dirent* e = ::readdir(dir))
      if (std::string(e->d_name).rfind("link_", 0) == 0) links.push_back(pin_dir + "/" + e->d_name);
    ::closedir(dir);
    for (const auto& path : links) ::unlink(path.c_str());
  }
  // The maps pinned by name (LIBBPF_PIN_BY_NAME): every map the object declares, read from
  // the object itself (opened, not loaded), so no list here can fall behind.
  std::unique_ptr<killswitch_bpf, SkeletonDeleter> object(killswitch_bpf__open());
  if (!object) throw_errno("cannot open the BPF object to list its maps");
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, object->obj) {
    ::unlink((pin_dir + "/" + bpf_map__name(map)).c_str());
  }
  for (const char* name : kRetiredMapPins) ::unlink((pin_dir + "/" + name).c_str());
  if (::rmdir(pin_dir.c_str()) != 0 && errno != ENOENT)
    throw_errno("cannot remove pin directory " + pin_dir);
}

ProgramIds Enforcement::pinned_program_ids(const std::string& pin_dir) {
  ProgramIds ids;
  for (const HookInfo& hook : active_hooks()) {
    std::string pin = link_pin_path(pin_dir, hook.name);
    UniqueFd link(bpf_obj_get(pin.c_str()));
    if (!link) throw_errno("no pinned " + std::string(hook.name) + " link at " + pin);
    bpf_link_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(link.get(), &info, &len) != 0)
      throw_errno("cannot read the pinned " + std::string(hook.name) + " link");
    ids[hook.name] = info.prog_id;
  }
  return ids;
}

std::optional<std::uint32_t> Enforcement::pinned_cgroup_profile(const std::string& pin_dir,
                                                                std::uint64_t cgroup_id) {
  const std::string pin = pin_dir + "/ks_cgroups";
  UniqueFd map(bpf_obj_get(pin.c_str()));
  if (!map) throw_errno("no pinned cgroup map at " + pin);
  ks_cgroup_value value{};
  if (bpf_map_lookup_elem(map.get(), &cgroup_id, &value) != 0) return std::nullopt;
  return value.profile_id;
}

const ProgramIds& Enforcement::program_ids() const {
  // A loaded program keeps its id: asked once (every launch reports them; 13 system calls).
  if (!program_ids_) {
    ProgramIds ids;
    for (const HookInfo& hook : active_hooks())
      ids[hook.name] = prog_id_of_fd(bpf_program__fd(program_for(skel_.get(), hook.name)));
    program_ids_ = std::move(ids);
  }
  return *program_ids_;
}

int Enforcement::map_fd(const char* name) const {
  bpf_map* map = bpf_object__find_map_by_name(skel_->obj, name);
  if (!map) throw Error(std::string("internal: no map ") + name);
  return bpf_map__fd(map);
}

void Enforcement::write_config(const ks_config& config) {
  std::uint32_t zero = 0;
  if (bpf_map_update_elem(map_fd("ks_config"), &zero, &config, BPF_ANY) != 0)
    throw_errno("cannot write ks_config");
}

ks_profile Enforcement::read_profile(std::uint32_t id) const {
  ks_profile p{};
  if (bpf_map_lookup_elem(map_fd("ks_profiles"), &id, &p) != 0)
    throw_errno("cannot read ks_profiles");
  return p;
}

void Enforcement::write_profile(std::uint32_t id, const ks_profile& profile) {
  if (bpf_map_update_elem(map_fd("ks_profiles"), &id, &profile, BPF_ANY) != 0)
    throw_errno("cannot write ks_profiles");
}

void Enforcement::set_cgroup(std::uint64_t id, std::uint32_t profile_id, std::uint32_t app_slot) {
  ks_cgroup_value v{profile_id, app_slot};
  give_fast_slot(app_slot, profile_id);  // ready before a socket carries the slot
  if (bpf_map_update_elem(map_fd("ks_cgroups"), &id, &v, BPF_ANY) != 0)
    throw_errno("cannot write ks_cgroups");
}

void Enforcement::remove_cgroup(std::uint64_t id) {
  if (bpf_map_delete_elem(map_fd("ks_cgroups"), &id) != 0 && errno != ENOENT)
    throw_errno("cannot delete from ks_cgroups");
}

namespace {

// One BPF_MAP_LOOKUP_BATCH of up to kBatch entries from where `position` stopped: a few
// system calls for thousands of entries instead of two per entry. fn(key, values) gets
// `per_key` values for each key (a per-CPU map has one per possible CPU).
template <typename Key, typename Value, typename Fn>
void read_batch(int fd, const std::string& name, std::size_t per_key,
                Enforcement::BatchPosition& position, Fn fn) {
  constexpr __u32 kBatch = 1024;
  if (position.done) return;
  std::vector<Key> keys(kBatch);
  std::vector<Value> values(kBatch * per_key);
  std::uint64_t out_batch = 0;  // opaque position, at least a key wide
  __u32 count = kBatch;
  int err = bpf_map_lookup_batch(fd, position.started ? &position.token : nullptr, &out_batch,
                                 keys.data(), values.data(), &count, nullptr);
  if (err != 0 && errno != ENOENT) throw_errno("cannot read " + name);
  for (__u32 i = 0; i < count; ++i) fn(keys[i], &values[static_cast<std::size_t>(i) * per_key]);
  position.done = err != 0;  // ENOENT: that was the last batch
  position.token = out_batch;
  position.started = true;
}

// The whole map, batch after batch.
template <typename Key, typename Value, typename Fn>
void for_each_in_batches(int fd, const std::string& name, std::size_t per_key, Fn fn) {
  Enforcement::BatchPosition position;
  while (!position.done) read_batch<Key, Value>(fd, name, per_key, position, fn);
}

}  // namespace

std::map<std::uint64_t, ks_cgroup_value> Enforcement::cgroup_entries() const {
  std::map<std::uint64_t, ks_cgroup_value> out;
  for_each_in_batches<std::uint64_t, ks_cgroup_value>(
      map_fd("ks_cgroups"), "ks_cgroups", 1,
      [&](std::uint64_t id, const ks_cgroup_value* v) { out[id] = *v; });
  return out;
}

void Enforcement::read_cgroup_entries(
    BatchPosition& position, std::unordered_map<std::uint64_t, ks_cgroup_value>& out) const {
  read_batch<std::uint64_t, ks_cgroup_value>(
      map_fd("ks_cgroups"), "ks_cgroups", 1, position,
      [&](std::uint64_t id, const ks_cgroup_value* v) { out[id] = *v; });
}

bool Enforcement::has_cgroup(std::uint64_t cgroup_id) const {
  ks_cgroup_value value{};
  if (bpf_map_lookup_elem(map_fd("ks_cgroups"), &cgroup_id, &value) == 0) return true;
  if (errno == ENOENT) return false;
  throw_errno("cannot read ks_cgroups");
}

std::set<std::pair<std::uint32_t, std::uint32_t>> Enforcement::tunnels() const {
  std::set<std::pair<std::uint32_t, std::uint32_t>> out;
  int fd = map_fd("ks_tunnel_sets");
  for (std::uint32_t id = 0; id < KS_MAX_PROFILES; ++id) {
    ks_tunnel_set set{};
    if (bpf_map_lookup_elem(fd, &id, &set) != 0) throw_errno("cannot read ks_tunnel_sets");
    for (std::uint32_t ifindex : set.ifindex)
      if (ifindex != 0) out.insert({id, ifindex});
  }
  return out;
}

void Enforcement::replace_tunnels(
    const std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint32_t>& want) {
  int fd = map_fd("ks_tunnel_sets");
  std::map<std::uint32_t, ks_tunnel_set> sets;  // every profile gets one; absent = empty
  for (std::uint32_t id = 0; id < KS_MAX_PROFILES; ++id) sets[id] = ks_tunnel_set{};
  std::map<std::uint32_t, std::size_t> used;
  std::array<std::uint32_t, KS_MAX_PROFILES> families_of{};
  for (const auto& [key, families] : want) {
    const auto [profile_id, ifindex] = key;
    if (profile_id >= KS_MAX_PROFILES || profile_id == KS_PROFILE_NONE)
      throw Error("tunnel for an invalid profile id " + std::to_string(profile_id));
    std::size_t& n = used[profile_id];
    if (n == KS_MAX_TUNNELS_PER_PROFILE)
      throw Error("more than " + std::to_string(KS_MAX_TUNNELS_PER_PROFILE) +
                  " tunnels for profile id " + std::to_string(profile_id));
    sets[profile_id].ifindex[n++] = ifindex;
    families_of[profile_id] |= families;
  }
  // One array element per profile, written whole: a reader sees each slot old or new, and
  // an old slot only names a tunnel that was usable an instant ago.
  for (const auto& [id, set] : sets) {
    ks_tunnel_set have{};
    if (bpf_map_lookup_elem(fd, &id, &have) == 0 && std::memcmp(&have, &set, sizeof(set)) == 0)
      continue;
    if (bpf_map_update_elem(fd, &id, &set, BPF_ANY) != 0)
      throw_errno("cannot write ks_tunnel_sets");
  }
  // The same sets into every app row of the fast path, word by word (each word old or
  // new to a reader: a row names only tunnels that ks_tunnel_sets named an instant ago).
  ks_fast_slot* rows = fast_rows();
  for (std::uint32_t r = 0; r < fast_app_rows(); ++r) {
    const std::uint32_t id = std::atomic_ref(rows[r].profile_id).load(std::memory_order_relaxed);
    const bool used_row = id != KS_PROFILE_NONE && id < KS_MAX_PROFILES;
    write_fast_tunnels(rows[r], used_row ? sets[id] : ks_tunnel_set{},
                       used_row ? families_of[id] : 0);
  }
}

void Enforcement::write_fast_tunnels(ks_fast_slot& row, const ks_tunnel_set& set,
                                     std::uint32_t families) {
  auto store = [](std::uint32_t& word, std::uint32_t value) {
    std::atomic_ref ref(word);
    if (ref.load(std::memory_order_relaxed) != value) ref.store(value, std::memory_order_relaxed);
  };
  // Families go first when they shrink and last when they grow: a connect never passes
  // for a family before (or after) its tunnels are listed for egress.
  const std::uint32_t have = std::atomic_ref(row.families).load(std::memory_order_relaxed);
  store(row.families, have & families);
  for (std::size_t i = 0; i < KS_MAX_TUNNELS_PER_PROFILE; ++i)
    store(row.tunnel_ifindex[i], set.ifindex[i]);
  store(row.families, families);
}

void Enforcement::replace_lan(const std::vector<ks_lan_key>& want) {
  int fd = map_fd("ks_lan");
  // Collect present keys first: deleting while iterating an LPM trie skips entries.
  std::vector<ks_lan_key> have;
  ks_lan_key key{}, next{};
  ks_lan_key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    have.push_back(next);
    key = next;
    prev = &key;
  }
  auto same = [](const ks_lan_key& a, const ks_lan_key& b) {
    return std::memcmp(&a, &b, sizeof(a)) == 0;
  };
  for (const auto& h : have) {
    bool keep = false;
    for (const auto& w : want) keep = keep || same(h, w);
    if (!keep && bpf_map_delete_elem(fd, &h) != 0 && errno != ENOENT)
      throw_errno("cannot delete from ks_lan");
  }
  for (const auto& w : want) {
    std::uint32_t one = 1;
    if (bpf_map_update_elem(fd, &w, &one, BPF_ANY) != 0) throw_errno("cannot write ks_lan");
  }
}

namespace {
Counters sum_percpu(int fd, const void* key) {
  int ncpus = libbpf_num_possible_cpus();
  if (ncpus <= 0) throw Error("cannot count possible CPUs");
  std::vector<ks_counters> values(static_cast<std::size_t>(ncpus));
  Counters sum;
  if (bpf_map_lookup_elem(fd, key, values.data()) != 0) return sum;
  for (const auto& v : values) sum += v;
  return sum;
}
}  // namespace

Counters Enforcement::totals() const {
  // Every count lands in exactly one profile's entry (index 0: no profile), so the sum
  // over profiles is the total; the programs keep no separate totals (a lookup per packet).
  Counters sum;
  for (std::uint32_t id = 0; id < KS_MAX_PROFILES; ++id) sum += profile_counters(id);
  return sum;
}

Counters Enforcement::counters_of(std::uint64_t id, std::uint32_t app_slot) const {
  Counters sum = sum_percpu(map_fd("ks_counters"), &id);
  if (app_slot != 0 && app_slot < KS_MAX_APP_SLOTS) {
    sum += sum_percpu(map_fd("ks_app_counters"), &app_slot);
    sum += fast_counts_of_slot(app_slot);
  }
  return sum;
}

namespace {

// A per-CPU map of ks_counters, one batch from `position` (or all of it without one):
// fn(key, counters summed over CPUs).
template <typename Key, typename Fn>
void read_percpu_counters(int fd, const char* name, Enforcement::BatchPosition* position, Fn fn) {
  const int ncpus = libbpf_num_possible_cpus();
  if (ncpus <= 0) throw Error("cannot count possible CPUs");
  auto summed = [&](Key key, const ks_counters* per_cpu) {
    Counters sum;
    for (int cpu = 0; cpu < ncpus; ++cpu) sum += per_cpu[cpu];
    fn(key, sum);
  };
  if (position) {
    read_batch<Key, ks_counters>(fd, name, static_cast<std::size_t>(ncpus), *position, summed);
  } else {
    for_each_in_batches<Key, ks_counters>(fd, name, static_cast<std::size_t>(ncpus), summed);
  }
}

}  // namespace

std::map<std::uint64_t, Counters> Enforcement::all_counters_by_cgroup() const {
  std::map<std::uint64_t, Counters> out;
  read_percpu_counters<std::uint64_t>(map_fd("ks_counters"), "ks_counters", nullptr,
                                      [&](std::uint64_t id, const Counters& c) { out[id] = c; });
  return out;
}

void Enforcement::read_counters_by_cgroup(BatchPosition& position,
                                          std::unordered_map<std::uint64_t, Counters>& out) const {
  read_percpu_counters<std::uint64_t>(map_fd("ks_counters"), "ks_counters", &position,
                                      [&](std::uint64_t id, const Counters& c) { out[id] = c; });
}

std::vector<Counters> Enforcement::all_counters_by_slot() const {
  std::vector<Counters> out(KS_MAX_APP_SLOTS);
  read_percpu_counters<std::uint32_t>(map_fd("ks_app_counters"), "ks_app_counters", nullptr,
                                      [&](std::uint32_t slot, const Counters& c) {
                                        if (slot < out.size()) out[slot] = c;
                                      });
  for (std::uint32_t slot = 1; slot < KS_MAX_APP_SLOTS; ++slot)
    out[slot] += fast_counts_of_slot(slot);
  return out;
}

void Enforcement::reset_app_counters(std::uint32_t app_slot) {
  int ncpus = libbpf_num_possible_cpus();
  if (ncpus <= 0) throw Error("cannot count possible CPUs");
  std::vector<ks_counters> zeros(static_cast<std::size_t>(ncpus));
  if (bpf_map_update_elem(map_fd("ks_app_counters"), &app_slot, zeros.data(), BPF_ANY) != 0)
    throw_errno("cannot reset ks_app_counters");
  if (app_slot == 0 || app_slot >= KS_MAX_APP_SLOTS) return;
  ks_fast_slot* rows = fast_rows();
  for (std::uint32_t cpu = 0; cpu < ncpus_; ++cpu) {
    ks_fast_slot& row = rows[KS_FAST_ROW(cpu, app_slot)];
    // First nothing passes here any more (its packets take the full path), then the
    // counts move to the profile's retired row. A packet that passed the check just
    // before may still be counted after the move: lost, not double-counted.
    write_fast_tunnels(row, ks_tunnel_set{}, 0);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const std::uint32_t id = std::atomic_ref(row.profile_id).load(std::memory_order_relaxed);
    std::atomic_ref packets(row.allowed_packets), bytes(row.allowed_bytes);
    if (id != KS_PROFILE_NONE && id < KS_MAX_PROFILES) {
      ks_fast_slot& retired = rows[KS_FAST_RETIRED_ROW(ncpus_, id)];
      std::atomic_ref(retired.allowed_packets).fetch_add(packets.load());
      std::atomic_ref(retired.allowed_bytes).fetch_add(bytes.load());
    }
    packets.store(0);
    bytes.store(0);
    std::atomic_ref(row.profile_id).store(KS_PROFILE_NONE, std::memory_order_relaxed);
  }
}

void Enforcement::give_fast_slot(std::uint32_t app_slot, std::uint32_t profile_id) {
  if (app_slot == 0 || app_slot >= KS_MAX_APP_SLOTS || profile_id >= KS_MAX_PROFILES) return;
  ks_fast_slot* rows = fast_rows();
  bool all_given = true;  // the common case (called for every app at every policy sync)
  for (std::uint32_t cpu = 0; cpu < ncpus_ && all_given; ++cpu)
    all_given = std::atomic_ref(rows[KS_FAST_ROW(cpu, app_slot)].profile_id)
                    .load(std::memory_order_relaxed) == profile_id;
  if (all_given) return;
  ks_tunnel_set set{};
  if (bpf_map_lookup_elem(map_fd("ks_tunnel_sets"), &profile_id, &set) != 0)
    throw_errno("cannot read ks_tunnel_sets");
  const ks_profile profile = read_profile(profile_id);
  const std::uint32_t families =
      (profile.bind_ifindex_v4 ? KS_FAMILY_V4 : 0u) | (profile.bind_ifindex_v6 ? KS_FAMILY_V6 : 0u);
  for (std::uint32_t cpu = 0; cpu < ncpus_; ++cpu) {
    ks_fast_slot& row = rows[KS_FAST_ROW(cpu, app_slot)];
    std::atomic_ref row_profile(row.profile_id);
    if (row_profile.load(std::memory_order_relaxed) == profile_id) continue;  // adopted
    // Another profile's tunnels never stand next to this profile's id: cleared first.
    write_fast_tunnels(row, ks_tunnel_set{}, 0);
    row_profile.store(profile_id, std::memory_order_seq_cst);
    write_fast_tunnels(row, set, families);
  }
}

namespace {
// What a fast-path row counted (the programs write it while we read: each word is whole).
// (Rows are shared memory the programs write: never const, and read through atomic_ref.)
ks_counters passes_of(ks_fast_slot& row) {
  ks_counters c{};
  c.allowed_packets = std::atomic_ref(row.allowed_packets).load(std::memory_order_relaxed);
  c.allowed_bytes = std::atomic_ref(row.allowed_bytes).load(std::memory_order_relaxed);
  return c;
}
}  // namespace

Counters Enforcement::fast_counts_of_slot(std::uint32_t app_slot) const {
  Counters sum;
  if (app_slot == 0 || app_slot >= KS_MAX_APP_SLOTS) return sum;
  ks_fast_slot* rows = fast_rows();
  for (std::uint32_t cpu = 0; cpu < ncpus_; ++cpu)
    sum += passes_of(rows[KS_FAST_ROW(cpu, app_slot)]);
  return sum;
}

Counters Enforcement::fast_counts_of_profile(std::uint32_t profile_id) const {
  Counters sum;
  if (profile_id >= KS_MAX_PROFILES) return sum;
  ks_fast_slot* rows = fast_rows();
  for (std::uint32_t r = 0; r < fast_app_rows(); ++r)
    if (std::atomic_ref(rows[r].profile_id).load(std::memory_order_relaxed) == profile_id)
      sum += passes_of(rows[r]);
  sum += passes_of(rows[KS_FAST_RETIRED_ROW(ncpus_, profile_id)]);
  return sum;
}

// Packets passed by the fast path are counted only in their app slot's rows (one place
// per packet): a profile's totals add its slots' rows and what its slots counted before
// they went to other apps.
Counters Enforcement::profile_counters(std::uint32_t profile_id) const {
  Counters sum = sum_percpu(map_fd("ks_profile_counters"), &profile_id);
  sum += fast_counts_of_profile(profile_id);
  return sum;
}

void Enforcement::remove_counters(std::uint64_t id) {
  bpf_map_delete_elem(map_fd("ks_counters"), &id);
}

void ensure_pin_dir(const std::string& pin_dir) {
  auto slash = pin_dir.find_last_of('/');
  std::string parent = slash == std::string::npos || slash == 0 ? "/" : pin_dir.substr(0, slash);
  struct statfs fs {};
  if (::statfs(parent.c_str(), &fs) != 0) throw_errno("cannot inspect " + parent);
  if (static_cast<unsigned long>(fs.f_type) != BPF_FS_MAGIC) {
    if (parent != "/sys/fs/bpf")
      throw Error("the pin directory's parent " + parent +
                  " is not a BPF filesystem (mount -t bpf bpf " + parent + ")");
    // Pins outlive ksd only in a bpffs of the host's mount namespace (bpffs.hpp).
    log_info("mounted the BPF filesystem on " + parent + ": " + mount_bpffs_if_safe(parent));
  }
  if (::mkdir(pin_dir.c_str(), 0700) != 0 && errno != EEXIST)
    throw_errno("cannot create pin directory " + pin_dir);
}

std::uint64_t current_netns_cookie() {
  UniqueFd s(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) throw_errno("socket");
  std::uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (::getsockopt(s.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0)
    throw_errno("cannot read the network namespace cookie (SO_NETNS_COOKIE, Linux 5.14+)");
  return cookie;
}

}  // namespace ks
