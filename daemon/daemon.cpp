#include "daemon.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <unordered_map>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"
#include "killswitch/log.hpp"
#include "killswitch/proc.hpp"

namespace ks {
namespace {

constexpr int kSweepIntervalSeconds = 1;
// Apps whose cgroup.events is watched are read only this often (a lost inotify event,
// a full queue: the safety net).
constexpr unsigned kSummaryEverySweeps = 10;  // a journal line per app at most every 10 s

std::string slice_stem(const std::string& slice) {
  const std::string suffix = ".slice";
  if (slice.size() > suffix.size() &&
      slice.compare(slice.size() - suffix.size(), suffix.size(), suffix) == 0)
    return slice.substr(0, slice.size() - suffix.size());
  return slice;
}

std::string read_cmdline(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  for (char& c : raw)
    if (c == '\0') c = ' ';
  return raw;
}

// Every directory below root, deepest last.
void walk_cgroups(const std::string& dir, const std::function<void(const std::string&)>& visit) {
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
    walk_cgroups(c, visit);
  }
}

int read_sysctl_int(const std::string& path) {
  std::ifstream in(path);
  int v = -1;
  in >> v;
  return in ? v : -1;
}

// Replies to protected sockets arrive on the tunnel while the main table may route their
// source elsewhere (split tunnel); strict reverse-path filtering would drop them. The
// effective value is max(all, interface), so loosening the tunnel alone is enough.
void loosen_rp_filter(const std::string& tunnel) {
  const std::string dev = "/proc/sys/net/ipv4/conf/" + tunnel + "/rp_filter";
  int all = read_sysctl_int("/proc/sys/net/ipv4/conf/all/rp_filter");
  int own = read_sysctl_int(dev);
  if (own < 0 || std::max(all, own) != 1) return;
  std::ofstream out(dev);
  out << 2;
  out.flush();
  if (out)
    log_info("set " + dev +
             " to 2 (loose): strict reverse-path filtering drops the tunnel's replies");
  else
    log_warning("cannot loosen " + dev + "; replies through " + tunnel + " may be dropped");
}

nlohmann::json counters_json(const Counters& c) {
  return {{"allowed_packets", c.allowed_packets},   {"allowed_bytes", c.allowed_bytes},
          {"blocked_packets", c.blocked_packets},   {"blocked_bytes", c.blocked_bytes},
          {"blocked_connects", c.blocked_connects}, {"blocked", c.blocked()},
          {"events_dropped", c.events_dropped}};
}

// A second ksd on the same socket would fight over the maps: refuse to start.
UniqueFd lock_single_instance(const std::string& socket_path) {
  std::string dir = socket_path.substr(0, socket_path.find_last_of('/'));
  if (!dir.empty() && ::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    throw_errno("cannot create " + dir);
  std::string lock_path = socket_path + ".lock";
  UniqueFd fd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) throw_errno("cannot open lock file " + lock_path);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0)
    throw Error("another ksd is already running with socket " + socket_path);
  return fd;
}
// The configuration plus ksd's own tunnel-less profile for `ksctl verify`'s probes.
Config load_config_with_probe(const std::string& path) {
  Config config = load_config(path);
  config.profiles.push_back(Profile{std::string(kVerifyProfile), {}, {}, {}});
  return config;
}

}  // namespace

Daemon::Daemon(DaemonOptions options)
    : options_(std::move(options)),
      lock_fd_(lock_single_instance(options_.socket_path)),
      config_(load_config_with_probe(options_.config_path)),
      enforcement_(Enforcement::load(options_.pin_dir)),
      links_(),
      routing_(),
      event_log_(EventLog::Context{
          [this](std::uint64_t id) { return cgroup_path_of(id); },
          [this](std::uint32_t id) { return profile_name(id); },
          [this](std::uint32_t pid, const std::string& app) { return command_of(pid, app); },
          [this](std::uint64_t id) { return registry_.counters(id).blocked(); }}),
      app_maps_(enforcement_),
      registry_(
          app_maps_, [this](const std::string& profile) { return profile_ids_.at(profile); },
          [this](const App& app) { remember_retired(app); }) {
  server_ = std::make_unique<AdminServer>(
      loop_, ipc::admin_group_id(),
      [this](AdminServer::ClientId client, const ipc::Request& request, const ipc::PeerCred& peer) {
        return handle(client, request, peer);
      });
  setup_cgroups();
  if (!options_.attach_only && systemd::is_systemd_host()) {
    // systemd nests "a-b.slice" under "a.slice": the profile slices are ours only when
    // the tree's own name has no dash.
    if (slice_stem(options_.slice).find('-') == std::string::npos) {
      scopes_ = std::make_unique<systemd::TransientScopes>();
      log_info("systemd host: ksrun apps get transient scopes from systemd");
    } else {
      log_warning("--slice " + options_.slice +
                  " has a dash, so systemd would not nest its profile slices in it; ksrun "
                  "apps get cgroups made by ksd instead of transient scopes");
    }
  }

  profile_ids_ = assign_profile_ids(config_, pinned_profile_ids());

  // Maps first, then attach: the first instant the programs run, they run with the
  // right policy. On re-adoption the pinned links keep enforcing the pinned maps until
  // the atomic program swap in attach().
  ks_config cfg{};
  cfg.netns_cookie = current_netns_cookie();
  cfg.flags = KS_CONFIG_READY;
  cfg.abi_version = KS_ABI_VERSION;
  enforcement_.write_config(cfg);
  adopt_existing_apps();
  apply_policy("start");
  enforcement_.attach(root_cgroup_);
  attached_root_id_ = cgroup_id(root_cgroup_);

  // Prove it before saying ready: every hook must be effective on the tree root.
  std::string missing = not_effective_on(root_cgroup_);
  if (!missing.empty())
    throw Error("programs not effective on " + root_cgroup_ + " after attach: " + missing);

  if (!options_.attach_only) server_->listen(options_.socket_path);
  log_info("enforcement attached to " + root_cgroup_ + ", pins in " + options_.pin_dir +
           ", admin socket " + options_.socket_path);
  if (!kernel_has_unix_hooks())
    log_info(std::string("this kernel has no cgroup/connect_unix (Linux 6.7+): the unix "
                         "sockets of systemd-resolved and nscd are refused to protected apps "
                         "from ") +
             kResolverGuardTarget + " instead (resolver_guard, docs/kernels.md)");
}

ProfileIds Daemon::pinned_profile_ids() const {
  // Ids given before (by this or an earlier ksd), removed profiles included: sockets carry
  // them in their storage, so an id never silently changes its meaning.
  ProfileIds ids;
  for (std::uint32_t id = 1; id < KS_MAX_PROFILES; ++id) {
    ks_profile p = enforcement_.read_profile(id);
    if (p.name[0]) ids[std::string(p.name, strnlen(p.name, sizeof(p.name)))] = id;
  }
  return ids;
}

void Daemon::setup_cgroups() {
  cgroup_mount_ = find_cgroup2_mount();
  root_cgroup_ = cgroup_mount_ + "/" + options_.slice;
  if (ensure_cgroup_dir(root_cgroup_)) log_info("created protected tree " + root_cgroup_);
  for (const auto& p : config_.profiles) ensure_cgroup_dir(profile_slice_path(p.name));
}

std::string Daemon::profile_slice_path(const std::string& profile) const {
  return root_cgroup_ + "/" + slice_stem(options_.slice) + "-" + profile + ".slice";
}

std::string Daemon::profile_slice_unit(const std::string& profile) const {
  return slice_stem(options_.slice) + "-" + profile + ".slice";
}

std::string Daemon::relative(const std::string& absolute_cgroup) const {
  return absolute_cgroup.substr(cgroup_mount_.size());
}

void Daemon::adopt_existing_apps() {
  // App cgroups made by an earlier ksd: keep tracking them, so they are listed and swept,
  // with the counter slots it gave them (their sockets carry them in their marks).
  const auto entries = enforcement_.cgroup_entries();
  for (const auto& p : config_.profiles) {
    // Only cgroups ksd made itself are ksd's to remove; services and ksrun scopes on
    // systemd hosts belong to systemd.
    registry_.adopt_slice(
        profile_slice_path(p.name), p.name, entries, [this](const std::string& name) {
          return name.starts_with("protect-") || (name.starts_with("ksrun-") && !scopes_);
        });
  }
}

void Daemon::apply_policy(const char* why) {
  PolicyPlan plan = plan_policy(config_, profile_ids_, links_.links());

  // Order matters for fail-closed: the tunnel sets go first (a removed tunnel leaves its
  // profile's set before anything else changes; a removed profile's set is emptied before
  // the profile is marked invalid, since egress takes a set hit as proof of a valid
  // profile), then the profile entries that name bind targets.
  enforcement_.replace_tunnels(plan.tunnels);
  for (std::uint32_t id = 1; id < KS_MAX_PROFILES; ++id) {
    auto it = plan.profiles.find(id);
    if (it != plan.profiles.end()) {
      enforcement_.write_profile(id, it->second);
    } else {
      ks_profile old = enforcement_.read_profile(id);
      if (old.flags & KS_PROFILE_VALID) {
        old.flags = 0;  // removed profile: its sockets are blocked
        old.bind_ifindex_v4 = old.bind_ifindex_v6 = 0;
        enforcement_.write_profile(id, old);
      }
    }
  }
  enforcement_.replace_lan(plan_lan(config_, profile_ids_));

  // Steering: every profile id in use (and KS_PROFILE_NONE, and ids of removed
  // profiles) has its rules; tables of invalid profiles stay empty, so their lookups end
  // at the unreachable rule.
  std::vector<RuleSpec> rules;
  for (std::uint32_t id = 0; id < KS_MAX_PROFILES; ++id) {
    auto it = plan.profiles.find(id);
    if (it == plan.profiles.end() && id != KS_PROFILE_NONE &&
        enforcement_.read_profile(id).name[0] == 0)
      continue;  // never used
    const Profile* profile = nullptr;
    for (const auto& [name, pid] : profile_ids_)
      if (pid == id) profile = config_.find_profile(name);
    for (auto& r : plan_rules(id, profile)) rules.push_back(r);
    routing_.sync_table(table_for_profile(id),
                        plan_routes(it != plan.profiles.end() ? it->second : ks_profile{}));
  }
  // Kernel-made replies (RST, ICMP) sourced from a tunnel's address stay in the tunnel:
  // by the table of the first profile (in config order) that names the tunnel.
  std::vector<LinkAddress> sourced;
  for (const auto& profile : config_.profiles) {
    for (const auto& tunnel : profile.tunnels) {
      for (const auto& [ifindex, link] : links_.links()) {
        if (link.name != tunnel) continue;
        for (const auto& address : link.addresses) {
          if (std::find(sourced.begin(), sourced.end(), address) != sourced.end()) continue;
          sourced.push_back(address);
          for (auto& r :
               plan_source_rules(address, table_for_profile(profile_ids_.at(profile.name))))
            rules.push_back(r);
        }
      }
    }
  }
  routing_.sync_rules(rules);

  // Cgroup classification: tree root -> default profile (or none), profile slices,
  // apps. Entries for cgroups that no longer exist are dropped.
  std::map<std::uint64_t, ks_cgroup_value> want;
  auto def = profile_ids_.find(std::string(kDefaultProfile));
  want[cgroup_id(root_cgroup_)] = {def != profile_ids_.end() ? def->second : KS_PROFILE_NONE, 0};
  for (const auto& p : config_.profiles) {
    std::string slice = profile_slice_path(p.name);
    ensure_cgroup_dir(slice);
    want[cgroup_id(slice)] = {profile_ids_.at(p.name), 0};
  }
  for (const auto& [id, app] : registry_.apps()) {
    auto pid = profile_ids_.find(app.profile);
    want[id] = {pid != profile_ids_.end() ? pid->second : KS_PROFILE_NONE, app.slot};
  }
  // Only what differs is written: with 10,000 apps this runs on every link event.
  const auto have = enforcement_.cgroup_entries();
  for (const auto& [id, value] : have)
    if (!want.count(id)) enforcement_.remove_cgroup(id);
  for (const auto& [id, value] : want) {
    auto it = have.find(id);
    if (it == have.end() || it->second.profile_id != value.profile_id ||
        it->second.app_slot != value.app_slot)
      enforcement_.set_cgroup(id, value.profile_id, value.app_slot);
  }

  // Log what changed in the tunnels' states.
  for (const auto& [profile, tunnels] : plan.status) {
    auto old = plan_.status.find(profile);
    for (std::size_t i = 0; i < tunnels.size(); ++i) {
      const TunnelStatus& t = tunnels[i];
      bool changed = old == plan_.status.end() || i >= old->second.size() ||
                     old->second[i].state != t.state || old->second[i].ifindex != t.ifindex ||
                     old->second[i].ipv4 != t.ipv4 || old->second[i].ipv6 != t.ipv6;
      if (changed && t.state == TunnelState::kUp) loosen_rp_filter(t.name);
      if (changed)
        log_info(std::string(why) + ": profile " + profile + ": tunnel " + t.name + " " +
                 tunnel_state_name(t.state) +
                 (t.ifindex ? " (ifindex " + std::to_string(t.ifindex) + ")" : "") +
                 (t.state == TunnelState::kUp
                      ? std::string(t.ipv4 ? " ipv4" : "") + (t.ipv6 ? " ipv6" : "")
                      : ""));
    }
  }
  plan_ = std::move(plan);

  std::string status;
  for (const auto& [profile, tunnels] : plan_.status)
    for (const auto& t : tunnels)
      status += profile + ":" + t.name + "=" + tunnel_state_name(t.state) + " ";
  sd_notifyf(0, "STATUS=%s", status.c_str());
}

void Daemon::run() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  signal_fd_ = UniqueFd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_) throw_errno("signalfd");
  ::signal(SIGPIPE, SIG_IGN);

  timer_fd_ = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer_fd_) throw_errno("timerfd_create");
  itimerspec its{};
  its.it_interval.tv_sec = kSweepIntervalSeconds;
  its.it_value.tv_sec = kSweepIntervalSeconds;
  timerfd_settime(timer_fd_.get(), 0, &its, nullptr);

  events_ = std::make_unique<EventReader>(enforcement_.events_fd(),
                                          [this](const ks_event& e) { on_event(e); });
  tree_watch_fd_ = UniqueFd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!tree_watch_fd_) log_warning(std::string("inotify_init1: ") + std::strerror(errno));
  watch_tree();

  for (int fd : {signal_fd_.get(), timer_fd_.get(), links_.fd(), tree_watch_fd_.get(),
                 events_->fd(), registry_.watch_fd()})
    if (fd >= 0) loop_.watch(fd);

  std::uint64_t watchdog_usec = 0;
  watchdog_ = sd_watchdog_enabled(0, &watchdog_usec) > 0;
  if (watchdog_ && watchdog_usec < 2 * kSweepIntervalSeconds * 1000000ull)
    log_warning("WatchdogSec= is shorter than twice the 1 s sweep; expect watchdog kills");
  sd_notify(0, "READY=1");
  for (;;) {
    for (int fd : loop_.wait()) {
      if (fd == links_.fd()) {
        // A failure here must not end the daemon: enforcement stays in force from the
        // pinned state, and the timer retries until the maps are current again.
        try {
          if (links_.process()) apply_policy("netlink");
        } catch (const std::exception& e) {
          log_error(std::string("cannot update the policy (will retry): ") + e.what());
          policy_stale_ = true;
        }
      } else if (fd == signal_fd_.get()) {
        signalfd_siginfo si{};
        while (::read(signal_fd_.get(), &si, sizeof(si)) == sizeof(si)) {
          if (si.ssi_signo == SIGHUP) {
            nlohmann::json r = reload();
            log_info(r.value("ok", false) ? "reloaded " + options_.config_path
                                          : "reload refused: " + r.value("error", std::string()));
          } else {
            sd_notify(0, "STOPPING=1");
            log_info("stopping; enforcement stays pinned in " + options_.pin_dir);
            ::unlink(options_.socket_path.c_str());
            return;
          }
        }
      } else if (fd == timer_fd_.get()) {
        std::uint64_t expirations = 0;
        (void)!::read(timer_fd_.get(), &expirations, sizeof(expirations));
        try {
          if (policy_stale_) {
            links_.resync();
            apply_policy("retry");
            policy_stale_ = false;
            log_info("policy is current again");
          }
          if (scopes_) scopes_->expire(std::chrono::steady_clock::now());
          guard_tree();
          registry_.sweep();
          if (++sweeps_since_summary_ >= kSummaryEverySweeps) log_event_summary();
          if (watchdog_) sd_notify(0, "WATCHDOG=1");
        } catch (const std::exception& e) {
          log_error(std::string("periodic work failed (will retry): ") + e.what());
          policy_stale_ = true;
        }
        // The ring buffer wakes us only when we had caught up with it (adaptive
        // notification); reading it here too bounds any missed wakeup to one sweep.
        consume_events();
      } else if (fd == registry_.watch_fd()) {
        // Events the apps' last moments produced first, while ksd still knows the apps.
        consume_events();
        registry_.on_watch_ready();
      } else if (fd == tree_watch_fd_.get()) {
        alignas(inotify_event) char events_buf[4096];
        while (::read(tree_watch_fd_.get(), events_buf, sizeof(events_buf)) > 0) {
        }
        try {
          guard_tree();
        } catch (const std::exception& e) {
          log_error(std::string("cannot re-attach to the re-created tree (will retry): ") +
                    e.what());
          policy_stale_ = true;
        }
      } else if (fd == events_->fd()) {
        consume_events();
      } else if (fd == scopes_fd_ && scopes_) {
        scopes_->process();
      } else {
        server_->on_ready(fd);
      }
    }
    watch_scopes_fd();  // the manager connection's fd and wanted events change
  }
}

std::optional<std::string> Daemon::handle(AdminServer::ClientId client, const ipc::Request& request,
                                          const ipc::PeerCred& peer) {
  switch (request.op) {
    case ipc::Op::kStatus:
      return ipc::message_text(status_json());
    case ipc::Op::kList:
      return list_text();
    case ipc::Op::kReload:
      return ipc::message_text(reload());
    case ipc::Op::kLaunch: {
      std::optional<nlohmann::json> reply = launch(client, request, peer);
      if (!reply) return std::nullopt;
      return ipc::message_text(*reply);
    }
    case ipc::Op::kProtect:
      return ipc::message_text(protect(request));
    case ipc::Op::kEvents:
      return ipc::message_text(events_json(client, request));
  }
  return ipc::message_text({{"ok", false}, {"error", "unhandled request"}});
}

nlohmann::json Daemon::unknown_profile(const std::string& profile) const {
  std::string known;
  for (const auto& p : config_.profiles)
    if (p.name != kVerifyProfile) known += (known.empty() ? "" : ", ") + p.name;
  return {{"ok", false},
          {"error", "unknown profile \"" + profile + "\" (configured: " + known + ")"}};
}

std::optional<nlohmann::json> Daemon::launch(AdminServer::ClientId client,
                                             const ipc::Request& request,
                                             const ipc::PeerCred& peer) {
  if (!profile_ids_.count(request.profile)) return unknown_profile(request.profile);
  if (peer.pid <= 0)
    return nlohmann::json{{"ok", false}, {"error", "cannot identify the calling process"}};
  const std::string stem = "ksrun-" + std::to_string(peer.pid);

  if (!scopes_) {
    // One cgroup per launch, named after the launcher's pid (which becomes the app's).
    App& app = registry_.create(profile_slice_path(request.profile), request.profile, stem);
    move_pid_to_cgroup(app.path, peer.pid);
    return finish_launch(request, peer, app);
  }

  // systemd moves the caller into a new scope in the profile's slice; the programs on the
  // tree root are inherited by the scope's cgroup the moment systemd creates it, and the
  // caller is waiting for our answer, so it runs nothing in between.
  ensure_cgroup_dir(profile_slice_path(request.profile));
  std::string cmd = request.argv.empty() ? "" : request.argv.front();
  scopes_->start(
      stem, profile_slice_unit(request.profile), peer.pid,
      "Killswitch-protected " + cmd.substr(0, 100) + " (profile " + request.profile + ")",
      [this, client, request, peer](const std::string& error) {
        nlohmann::json reply;
        try {
          if (!error.empty()) throw Error(error);
          const std::string cgroup = cgroup_mount_ + cgroup_of_pid(peer.pid);
          const std::string slice = profile_slice_path(request.profile);
          if (cgroup.rfind(slice + "/", 0) != 0)
            throw Error("systemd put the process in " + relative(cgroup) + ", outside " +
                        relative(slice));
          const App& app = registry_.add(App{cgroup, request.profile, cgroup_id(cgroup), false});
          reply = finish_launch(request, peer, app);
        } catch (const std::exception& e) {
          log_warning("launch for pid " + std::to_string(peer.pid) + " refused: " + e.what());
          reply = {{"ok", false}, {"error", e.what()}};
        }
        server_->reply_later(client, reply);
      });
  watch_scopes_fd();
  return std::nullopt;
}

void Daemon::watch_scopes_fd() {
  if (!scopes_) return;
  const int fd = scopes_->fd();
  if (scopes_fd_ >= 0 && fd != scopes_fd_) loop_.unwatch(scopes_fd_);
  scopes_fd_ = fd;
  if (fd < 0) return;
  // POLLIN/POLLOUT have the values of EPOLLIN/EPOLLOUT.
  loop_.watch_for(fd, static_cast<std::uint32_t>(scopes_->events()));
}

nlohmann::json Daemon::finish_launch(const ipc::Request& request, const ipc::PeerCred& peer,
                                     const App& app) {
  // What ksrun is about to exec (until then /proc shows ksrun itself), for `ksctl list`.
  if (App* tracked = registry_.find(app.cgroup_id)) {
    std::string command;
    for (const auto& arg : request.argv) command += (command.empty() ? "" : " ") + arg;
    tracked->command = command;
  }
  std::string missing = not_effective_on(app.path);
  if (!missing.empty())
    return {{"ok", false},
            {"error", "enforcement is not effective on " + relative(app.path) + ": " + missing}};

  std::string cmd;
  for (const auto& a : request.argv) cmd += (cmd.empty() ? "" : " ") + a;
  log_info("launch: uid " + std::to_string(peer.uid) + " pid " + std::to_string(peer.pid) +
           " profile " + request.profile + " in " + relative(app.path) + ": " + cmd.substr(0, 200));

  nlohmann::json prog_ids = nlohmann::json::object();
  for (const auto& [hook, pid] : enforcement_.program_ids()) prog_ids[hook] = pid;
  return {{"ok", true},
          {"cgroup", relative(app.path)},
          {"cgroup_id", app.cgroup_id},
          {"profile", request.profile},
          {"program_ids", prog_ids}};
}

nlohmann::json Daemon::protect(const ipc::Request& request) {
  if (!profile_ids_.count(request.profile)) return unknown_profile(request.profile);
  const pid_t pid = request.pid;
  const std::string who = "process " + std::to_string(pid);
  if (pid == ::getpid()) return {{"ok", false}, {"error", "ksd does not protect itself"}};
  std::string original;
  try {
    original = cgroup_of_pid(pid);
  } catch (const Error&) {
    return {{"ok", false}, {"error", "no " + who}};
  }
  const std::string tree = relative(root_cgroup_);
  if (original == tree || original.rfind(tree + "/", 0) == 0)
    return {{"ok", false}, {"error", who + " is already protected (" + original + ")"}};

  // Move first, then look: sockets the process creates from the move on are protected,
  // and every socket it held before shows up in the check. If there are any, it goes
  // back where it was: a socket keeps the cgroup it was created in, so adopting the
  // process would leave them unprotected while looking protected.
  const App& app = registry_.create(profile_slice_path(request.profile), request.profile,
                                    "protect-" + std::to_string(pid));
  move_pid_to_cgroup(app.path, pid);
  std::size_t sockets = 0;
  try {
    sockets = count_inet_sockets(pid);
  } catch (const Error& e) {
    move_pid_to_cgroup(cgroup_mount_ + original, pid);
    return {{"ok", false}, {"error", std::string("cannot check its sockets: ") + e.what()}};
  }
  if (sockets > 0) {
    move_pid_to_cgroup(cgroup_mount_ + original, pid);
    return {{"ok", false},
            {"error", who + " has " + std::to_string(sockets) +
                          " network socket(s) opened before protection; they would stay "
                          "unprotected, so it was not adopted. Restart it with ksrun."}};
  }
  std::string missing = not_effective_on(app.path);
  if (!missing.empty())
    return {{"ok", false},
            {"error", "enforcement is not effective on " + relative(app.path) + ": " + missing}};
  log_info("protect: " + who + " adopted into " + relative(app.path) + " (profile " +
           request.profile + "); its threads and future children are protected");
  return {{"ok", true}, {"cgroup", relative(app.path)}, {"profile", request.profile}};
}

std::string Daemon::not_effective_on(const std::string& cgroup_path) const {
  UniqueFd cg = open_cgroup(cgroup_path);
  std::string missing = check_effective(cg.get(), enforcement_.program_ids());
  std::string global = enforcement_.global_hooks_missing();
  if (!global.empty()) missing += (missing.empty() ? "" : ", ") + global;
  return missing;
}

void Daemon::guard_tree() {
  // systemd removes a slice's cgroup when the slice is stopped and makes a new, empty one
  // (without our programs) when it is started again. Re-create it at once and attach
  // again; protected units check their own cgroup before they start (ksctl verify --self
  // in their ExecStartPre), so the moment between the two cannot start one unprotected.
  bool missing = ensure_cgroup_dir(root_cgroup_);
  std::uint64_t id = cgroup_id(root_cgroup_);
  if (missing || id != attached_root_id_) {
    log_warning("the protected tree " + root_cgroup_ + " was " +
                (missing ? "removed" : "re-created") + "; attaching again");
    apply_policy("tree re-created");
    enforcement_.attach(root_cgroup_);
    attached_root_id_ = id;
    std::string not_effective = not_effective_on(root_cgroup_);
    if (!not_effective.empty())
      throw Error("programs not effective on " + root_cgroup_ + " after attach: " + not_effective);
    log_info("enforcement attached again to " + root_cgroup_);
    watch_tree();
    return;
  }
  // A profile slice re-created alone keeps the programs (inherited from the root) but
  // loses its classification: its apps would be judged by the root's (default) profile
  // and use that profile's tunnel. Classify the new cgroup.
  auto known = enforcement_.cgroups();
  for (const auto& p : config_.profiles) {
    std::string slice = profile_slice_path(p.name);
    if (ensure_cgroup_dir(slice) || !known.count(cgroup_id(slice))) {
      log_warning("the profile slice " + relative(slice) + " was re-created; classifying it");
      apply_policy("profile slice re-created");
      return;
    }
  }
}

void Daemon::watch_tree() {
  if (!tree_watch_fd_) return;
  const std::string parent = root_cgroup_.substr(0, root_cgroup_.find_last_of('/'));
  // Adding a watch again on the same directory only updates it; a re-created directory
  // is a new inode and gets a new watch (the old one ends with IN_IGNORED).
  for (const std::string& dir : {parent, root_cgroup_})
    if (::inotify_add_watch(tree_watch_fd_.get(), dir.c_str(), IN_CREATE | IN_DELETE | IN_ONLYDIR) <
        0)
      log_warning("cannot watch " + dir + " (" + std::strerror(errno) +
                  "); a re-created slice is noticed within 1 s instead");
}

void Daemon::remember_retired(const App& app) {
  // Its events may still be in the ring: they keep naming the app (a bounded cache).
  if (cgroup_paths_.size() > 4 * EventLog::kKept) cgroup_paths_.clear();
  cgroup_paths_[app.cgroup_id] = relative(app.path);
}

std::uint32_t Daemon::profile_of_cgroup(const std::string& absolute_cgroup,
                                        const std::map<std::uint64_t, std::uint32_t>& known) const {
  std::string path = absolute_cgroup;
  while (path.size() >= root_cgroup_.size()) {
    try {
      auto it = known.find(cgroup_id(path));
      if (it != known.end()) return it->second;
    } catch (const Error&) {
    }
    auto slash = path.find_last_of('/');
    if (slash == std::string::npos) break;
    path = path.substr(0, slash);
  }
  return KS_PROFILE_NONE;
}

nlohmann::json Daemon::status_json() {
  nlohmann::json j;
  j["ok"] = true;
  j["daemon"] = "running";
  j["version"] = KS_VERSION;
  j["pid"] = ::getpid();
  j["config"] = options_.config_path;
  j["cgroup_root"] = root_cgroup_;
  j["pin_dir"] = options_.pin_dir;
  // Tunnels are looked up, and protected sockets judged, in ksd's network namespace.
  struct stat netns {};
  if (::stat("/proc/self/ns/net", &netns) == 0) j["netns_inode"] = netns.st_ino;

  ProgramIds ids = enforcement_.program_ids();
  std::string missing = not_effective_on(root_cgroup_);
  nlohmann::json programs;
  programs["pinned"] = Enforcement::pins_present(options_.pin_dir);
  programs["attached"] = missing.empty();
  if (!missing.empty()) programs["missing"] = missing;
  for (const auto& [hook, id] : ids) programs["ids"][hook] = id;
  j["programs"] = programs;

  nlohmann::json profiles = nlohmann::json::object();
  for (const auto& p : config_.profiles) {
    if (p.name == kVerifyProfile) continue;  // internal
    nlohmann::json pj;
    pj["id"] = profile_ids_.at(p.name);
    pj["cgroup"] = relative(profile_slice_path(p.name));
    pj["tunnels"] = nlohmann::json::array();
    bool any_up = false;
    for (const auto& t : plan_.status[p.name]) {
      pj["tunnels"].push_back({{"name", t.name},
                               {"state", tunnel_state_name(t.state)},
                               {"ifindex", t.ifindex},
                               {"ipv4", t.ipv4},
                               {"ipv6", t.ipv6}});
      any_up = any_up || t.state == TunnelState::kUp;
    }
    if (any_up) {
      pj["traffic"] = "through tunnel";
    } else {
      // Why: each tunnel and its state ("wg0 missing", "wg1 down").
      std::string why;
      for (const auto& t : plan_.status[p.name])
        why += (why.empty() ? "" : ", ") + t.name + " " + tunnel_state_name(t.state);
      pj["traffic"] = "blocked: " + (why.empty() ? std::string("no tunnel configured") : why);
    }
    pj["counters"] = counters_json(enforcement_.profile_counters(profile_ids_.at(p.name)));
    pj["dns"] = nlohmann::json::array();
    for (const auto& d : p.dns) pj["dns"].push_back(d.text);
    pj["allow_lan"] = nlohmann::json::array();
    for (const auto& c : p.allow_lan) pj["allow_lan"].push_back(c.text);
    profiles[p.name] = pj;
  }
  j["profiles"] = profiles;

  // With only known cgroups in the tree, the tracked apps are the count (one that emptied
  // leaves at the next sweep, within a second): no walk and no read per app, which with
  // 10,000 apps cost 0.4 s per status. Anything unknown in the tree: walk and look.
  std::size_t protected_apps = 0;
  if (tree_holds_only_known_cgroups()) {
    protected_apps = registry_.apps().size();
    for (const auto& p : config_.profiles)
      if (!cgroup_pids(profile_slice_path(p.name)).empty()) ++protected_apps;
  } else {
    walk_cgroups(root_cgroup_, [&](const std::string& cg) {
      if (!cgroup_pids(cg).empty()) ++protected_apps;
    });
  }
  j["protected_apps"] = protected_apps;
  Counters totals = enforcement_.totals();
  j["blocked_total"] = totals.blocked_packets + totals.blocked_connects;
  j["counters"] = counters_json(totals);
  return j;
}

bool Daemon::tree_holds_only_known_cgroups() const {
  // cgroup.stat counts the live descendants: equal to the profile slices plus the tracked
  // apps means there is nothing else (a service's own sub-cgroups, a directory someone
  // made, an app that vanished before the sweep saw it).
  std::size_t known = registry_.apps().size();
  for (const auto& p : config_.profiles)
    if (::access(profile_slice_path(p.name).c_str(), F_OK) == 0) ++known;
  return cgroup_descendants(root_cgroup_) == known;
}

namespace {

// JSON text, written directly: `ksctl list` with 10,000 apps is about 4 MB of it, and
// building a JSON tree first cost more than reading every app's cgroup.procs.
void append_json_string(std::string& out, std::string_view s) {
  if (std::any_of(s.begin(), s.end(), [](char c) { return (c & 0x80) != 0; })) {
    out += ipc::message_text(nlohmann::json(s));  // not ASCII: validated, U+FFFD if need be
    return;
  }
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof(esc), "\\u%04x", static_cast<unsigned>(c));
      out += esc;
    } else {
      out += c;
    }
  }
  out += '"';
}

void append_member(std::string& out, const char* key, std::uint64_t value) {
  out += '"';
  out += key;
  out += "\":";
  out += std::to_string(value);
}

// counters_json's fields, as text.
void append_counters(std::string& out, const Counters& c) {
  out += '{';
  append_member(out, "allowed_packets", c.allowed_packets);
  out += ',';
  append_member(out, "allowed_bytes", c.allowed_bytes);
  out += ',';
  append_member(out, "blocked_packets", c.blocked_packets);
  out += ',';
  append_member(out, "blocked_bytes", c.blocked_bytes);
  out += ',';
  append_member(out, "blocked_connects", c.blocked_connects);
  out += ',';
  append_member(out, "blocked", c.blocked());
  out += ',';
  append_member(out, "events_dropped", c.events_dropped);
  out += '}';
}

}  // namespace

std::optional<PidsByCgroup> Daemon::pids_by_cgroup() {
  if (!task_cgroups_tried_) {
    task_cgroups_tried_ = true;
    std::string why_not;
    task_cgroups_ = TaskCgroups::load(why_not);
    if (!task_cgroups_) log_info("ksctl list reads every app's cgroup.procs: " + why_not);
  }
  if (!task_cgroups_) return std::nullopt;
  try {
    return task_cgroups_->read();
  } catch (const Error& e) {
    log_warning(std::string("ksctl list falls back to cgroup.procs: ") + e.what());
    return std::nullopt;
  }
}

std::string Daemon::list_text() {
  std::map<std::uint32_t, std::string> names;
  for (const auto& [name, id] : profile_ids_) names[id] = name;
  // One read of the classification map for the whole list, not one per app.
  const auto entries = enforcement_.cgroup_entries();
  std::map<std::uint64_t, std::uint32_t> known;
  for (const auto& [id, value] : entries) known[id] = value.profile_id;
  // The apps ksd tracks need no stat, no walk up the tree and no /proc read: their id,
  // profile and command are known (with 10,000 apps, that was most of the time).
  std::unordered_map<std::string, App*> tracked;
  for (auto& [id, app] : registry_.apps()) tracked[app.path] = &app;
  const auto by_cgroup = enforcement_.all_counters_by_cgroup();
  const auto by_slot = enforcement_.all_counters_by_slot();
  // Only known cgroups in the tree: those are the ones to list, no directory walk (three
  // syscalls per app). Anything else and the walk finds it.
  std::vector<std::string> cgroups;
  if (tree_holds_only_known_cgroups()) {
    for (const auto& p : config_.profiles) cgroups.push_back(profile_slice_path(p.name));
    for (const auto& [id, app] : registry_.apps()) cgroups.push_back(app.path);
  } else {
    walk_cgroups(root_cgroup_, [&](const std::string& cg) { cgroups.push_back(cg); });
  }
  std::string out = R"({"ok":true,"apps":[)";
  // About 430 bytes per app; reserved generously, so that the text is never copied to a
  // doubled buffer (pages reserved but never written cost no memory).
  out.reserve(cgroups.size() * 1024);
  bool first = true;
  const auto all_pids = pids_by_cgroup();
  // Without the iterator: apps share their slice, so open it once and read each app's
  // cgroup.procs relative to it (sorted, so that each slice's apps come together).
  std::sort(cgroups.begin(), cgroups.end());
  std::string parent_path;
  UniqueFd parent;
  for (const std::string& cg : cgroups) {
    auto app = tracked.find(cg);
    const bool is_app = app != tracked.end();
    // The id of a cgroup ksd does not track needs a stat; 0 when it is gone meanwhile.
    auto id_of = [&]() -> std::uint64_t {
      if (is_app) return app->second->cgroup_id;
      try {
        return cgroup_id(cg);
      } catch (const Error&) {
        return 0;
      }
    };
    std::vector<pid_t> read_pids;
    std::span<const pid_t> pids;
    std::uint64_t id = 0;
    if (all_pids) {
      if ((id = id_of()) == 0) continue;
      pids = all_pids->of(id);
    } else {
      const std::size_t slash = cg.find_last_of('/');
      if (std::string_view(cg).substr(0, slash) != parent_path) {
        parent_path = cg.substr(0, slash);
        parent = UniqueFd(::open(parent_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      }
      read_pids = parent ? cgroup_pids_at(parent.get(), cg.substr(slash + 1)) : cgroup_pids(cg);
      pids = read_pids;
    }
    if (pids.empty()) continue;
    if (!all_pids && (id = id_of()) == 0) continue;  // (a stat: only for cgroups with processes)
    std::uint32_t profile = KS_PROFILE_NONE;
    if (auto entry = known.find(id); is_app && entry != known.end())
      profile = entry->second;
    else
      profile = profile_of_cgroup(cg, known);
    if (is_app && app->second->command.empty()) app->second->command = read_cmdline(pids.front());
    Counters c;
    if (auto it = by_cgroup.find(id); it != by_cgroup.end()) c += it->second;
    if (auto entry = entries.find(id); entry != entries.end() && entry->second.app_slot != 0 &&
                                       entry->second.app_slot < by_slot.size())
      c += by_slot[entry->second.app_slot];

    out += first ? "{" : ",{";
    first = false;
    out += R"("cgroup":)";
    append_json_string(out, relative(cg));
    out += ',';
    append_member(out, "cgroup_id", id);
    out += R"(,"profile":)";
    append_json_string(out, names.count(profile) ? names[profile] : "(none: blocked)");
    out += R"(,"pids":[)";
    for (std::size_t i = 0; i < pids.size(); ++i) {
      if (i) out += ',';
      out += std::to_string(pids[i]);
    }
    out += R"(],"command":)";
    append_json_string(out, is_app ? app->second->command : read_cmdline(pids.front()));
    out += ',';
    append_member(out, "allowed_packets", c.allowed_packets);
    out += ',';
    append_member(out, "blocked_packets", c.blocked_packets);
    out += R"(,"counters":)";
    append_counters(out, c);
    out += '}';
  }
  out += "]}";
  return out;
}

// ---- events ----

std::string Daemon::profile_name(std::uint32_t profile_id) const {
  for (const auto& [name, id] : profile_ids_)
    if (id == profile_id) return name;
  return profile_id == KS_PROFILE_NONE ? "(none)" : "(removed)";
}

std::string Daemon::cgroup_path_of(std::uint64_t id) {
  auto it = cgroup_paths_.find(id);
  if (it != cgroup_paths_.end()) return it->second;
  if (const App* app = registry_.find(id)) return cgroup_paths_[id] = relative(app->path);
  // Services and scopes systemd made: look once through the tree. Events are rate
  // limited per app, so this runs a few times a second at most.
  if (cgroup_paths_.size() > 4 * EventLog::kKept) cgroup_paths_.clear();
  std::string found;
  if (id == attached_root_id_) found = relative(root_cgroup_);
  walk_cgroups(root_cgroup_, [&](const std::string& cg) {
    if (found.empty()) {
      try {
        if (cgroup_id(cg) == id) found = relative(cg);
      } catch (const Error&) {
      }
    }
  });
  if (found.empty()) return "(cgroup " + std::to_string(id) + ", gone)";
  return cgroup_paths_[id] = found;
}

std::string Daemon::command_of(std::uint32_t pid, const std::string& app) const {
  std::string command = pid ? read_cmdline(static_cast<pid_t>(pid)) : "";
  if (command.empty() && !app.empty() && app.front() == '/') {
    auto pids = cgroup_pids(cgroup_mount_ + app);
    if (!pids.empty()) command = read_cmdline(pids.front());
  }
  return command;
}

void Daemon::consume_events() {
  try {
    events_->consume();
  } catch (const std::exception& e) {
    log_error(e.what());
  }
}

void Daemon::on_event(const ks_event& event) {
  nlohmann::json j = event_log_.record(event, boottime_to_realtime_us(event.time_ns));
  if (server_) server_->push_event(j);
}

void Daemon::log_event_summary() {
  sweeps_since_summary_ = 0;
  for (const std::string& line : event_log_.take_summary(kSummaryEverySweeps)) log_warning(line);
}

nlohmann::json Daemon::events_json(AdminServer::ClientId client, const ipc::Request& request) {
  if (request.follow) server_->follow(client);
  Counters totals = enforcement_.totals();
  return {{"ok", true},
          {"events", event_log_.query(request.since, request.limit)},
          {"next_seq", event_log_.next_seq()},
          {"kept", EventLog::kKept},
          {"blocked_total", totals.blocked()},
          {"events_dropped", totals.events_dropped},
          {"follow", request.follow}};
}

nlohmann::json Daemon::reload() {
  Config next;
  ProfileIds ids;
  try {
    next = load_config_with_probe(options_.config_path);
    ids = assign_profile_ids(next, pinned_profile_ids());
  } catch (const Error& e) {
    // Keep the last good policy: nothing has been touched yet.
    return {{"ok", false}, {"error", e.what()}};
  }
  config_ = std::move(next);
  profile_ids_ = std::move(ids);
  try {
    for (const auto& p : config_.profiles) ensure_cgroup_dir(profile_slice_path(p.name));
    apply_policy("reload");
  } catch (const std::exception& e) {
    policy_stale_ = true;  // the timer retries
    return {{"ok", false},
            {"error", std::string("reload accepted but not applied yet: ") + e.what()}};
  }
  return {{"ok", true}};
}

}  // namespace ks
