#include "daemon.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"
#include "killswitch/json_text.hpp"
#include "killswitch/log.hpp"
#include "killswitch/proc.hpp"
#include "killswitch/transient_scopes.hpp"

namespace ks {
namespace {

constexpr int kSweepIntervalSeconds = 1;
constexpr unsigned kSummaryEverySweeps = 10;  // a journal line per app at most every 10 s

// The socket's directory must let every user reach the socket (0755) whatever the umask
// of the shell that started ksd: with umask 077 it was made 0700 and every unprivileged
// ksrun failed with "Permission denied". A directory ksd creates gets 0755; the default
// one (/run/killswitch, ksd's own) is repaired when an earlier start left it wrong. A
// directory someone else made (--socket /tmp/x.sock) is never changed.
void ensure_socket_dir(const std::string& dir) {
  if (dir.empty()) return;
  const bool created = ::mkdir(dir.c_str(), 0755) == 0;
  if (!created && errno != EEXIST) throw_errno("cannot create " + dir);
  const std::string default_dir = ipc::kDefaultSocketPath;
  if (!created && dir != default_dir.substr(0, default_dir.find_last_of('/'))) return;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) throw_errno("cannot stat " + dir);
  if ((st.st_mode & 07777) == 0755) return;
  if (::chmod(dir.c_str(), 0755) != 0) throw_errno("cannot make " + dir + " 0755");
  if (!created) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    log_warning("repaired " + dir + ": mode " + mode +
                " -> 0755, so that every user can reach the admin socket");
  }
}

// A second ksd on the same socket would fight over the maps: refuse to start.
UniqueFd lock_single_instance(const std::string& socket_path) {
  ensure_socket_dir(socket_path.substr(0, socket_path.find_last_of('/')));
  std::string lock_path = socket_path + ".lock";
  UniqueFd fd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) throw_errno("cannot open lock file " + lock_path);
  // A ksd that is still exiting holds the lock until its last thread is gone (after a
  // SIGKILL on a busy machine, a list's thread at SCHED_IDLE may wait a while for the CPU
  // to exit): it is given a moment. One that runs holds it for good.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK || std::chrono::steady_clock::now() >= give_up)
      throw Error("another ksd is already running with socket " + socket_path);
    ::usleep(10'000);
  }
  return fd;
}

// What an app runs: the pid's command line, else that of one of its cgroup's processes.
std::string command_of(const std::string& cgroup_mount, std::uint32_t pid, const std::string& app) {
  std::string command = pid ? read_cmdline(static_cast<pid_t>(pid)) : "";
  if (command.empty() && !app.empty() && app.front() == '/') {
    auto pids = cgroup_pids(cgroup_mount + app);
    if (!pids.empty()) command = read_cmdline(pids.front());
  }
  return command;
}

// An fd that reads as `signals` arrive (they are blocked for the process).
UniqueFd signal_fd(std::initializer_list<int> signals) {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : signals) sigaddset(&mask, s);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  UniqueFd fd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!fd) throw_errno("signalfd");
  return fd;
}

UniqueFd interval_timer_fd(int seconds) {
  UniqueFd fd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!fd) throw_errno("timerfd_create");
  itimerspec its{};
  its.it_interval.tv_sec = its.it_value.tv_sec = seconds;
  timerfd_settime(fd.get(), 0, &its, nullptr);
  return fd;
}

}  // namespace

Daemon::Daemon(DaemonOptions options)
    : options_(std::move(options)),
      lock_fd_(lock_single_instance(options_.socket_path)),
      policy_(options_.config_path, enforcement_, tree_, registry_, links_),
      enforcement_(Enforcement::load(options_.pin_dir)),
      tree_(enforcement_, options_.slice),
      event_log_(
          EventLog::Context{[this](std::uint64_t id) { return app_of(id); },
                            [this](std::uint32_t id) { return policy_.name_of(id); },
                            [this](std::uint32_t pid, const std::string& app) {
                              return command_of(tree_.mount(), pid, app);
                            },
                            [this](std::uint64_t id) { return registry_.counters(id).blocked(); }}),
      app_maps_(enforcement_),
      registry_(
          app_maps_, [this](const std::string& profile) { return policy_.id_of(profile); },
          [this](const App& app) { tree_.remember(app.cgroup_id, app.path); }),
      server_(loop_, ipc::admin_group_id(),
              [this](AdminServer::ClientId client, const ipc::Request& request,
                     const ipc::PeerCred& peer) { return handle(client, request, peer); }),
      launches_(loop_, policy_, tree_, registry_, enforcement_,
                !options_.attach_only && systemd::is_systemd_host(),
                [this](AdminServer::ClientId client, const nlohmann::json& reply) {
                  server_.reply_later(client, reply);
                }),
      reports_(options_.pin_dir, enforcement_, policy_, tree_, registry_) {
  tree_.create(policy_.config());
  policy_.start();

  // Maps first, then attach: the first instant the programs run, they run with the
  // right policy. On re-adoption the pinned links keep enforcing the pinned maps until
  // the atomic program swap in attach().
  ks_config cfg{};
  cfg.netns_cookie = current_netns_cookie();
  cfg.flags = KS_CONFIG_READY;
  cfg.abi_version = KS_ABI_VERSION;
  enforcement_.write_config(cfg);
  // App cgroups made by an earlier ksd: keep tracking them, so they are listed and swept,
  // with the counter slots it gave them (their sockets carry them in their marks).
  const auto entries = enforcement_.cgroup_entries();
  for (const auto& p : policy_.config().profiles)
    registry_.adopt_slice(tree_.profile_slice_path(p.name), p.name, entries,
                          [this](const std::string& name) { return launches_.owns_cgroup(name); });
  registry_.give_spare_slots();
  policy_.apply("start");
  tree_.attach();  // proves every hook effective on the tree root before we say ready

  launches_.start();
  if (!options_.attach_only) server_.listen(options_.socket_path);
  log_info("enforcement attached to " + tree_.root() + ", pins in " + options_.pin_dir +
           ", admin socket " + options_.socket_path);
  if (!kernel_has_unix_hooks())
    log_info(std::string("this kernel has no cgroup/connect_unix (Linux 6.7+): the unix "
                         "sockets of systemd-resolved and nscd are refused to protected apps "
                         "from ") +
             kResolverGuardTarget + " instead (resolver_guard, docs/kernels.md)");
}

void Daemon::run() {
  signal_fd_ = signal_fd({SIGTERM, SIGINT, SIGHUP});
  ::signal(SIGPIPE, SIG_IGN);
  timer_fd_ = interval_timer_fd(kSweepIntervalSeconds);
  events_ = std::make_unique<EventReader>(enforcement_.events_fd(), [this](const ks_event& e) {
    server_.push_event(event_log_.record(e, boottime_to_realtime_us(e.time_ns)));
  });
  for (int fd : {signal_fd_.get(), timer_fd_.get(), links_.fd(), tree_.watch_fd(), events_->fd(),
                 registry_.watch_fd()})
    if (fd >= 0) loop_.watch(fd);

  std::uint64_t watchdog_usec = 0;
  watchdog_ = sd_watchdog_enabled(0, &watchdog_usec) > 0;
  if (watchdog_ && watchdog_usec < 2 * kSweepIntervalSeconds * 1000000ull)
    log_warning("WatchdogSec= is shorter than twice the 1 s sweep; expect watchdog kills");
  sd_notify(0, "READY=1");
  std::vector<int> streams;
  for (;;) {
    // Streams (a list going out) last: a request that came in meanwhile is answered first,
    // so that it waits for at most one turn of a list.
    streams.clear();
    for (int fd : loop_.wait()) {
      if (server_.is_stream_fd(fd)) {
        streams.push_back(fd);
      } else if (fd == links_.fd()) {
        // A failure here must not end the daemon: enforcement stays in force from the
        // pinned state, and the timer retries until the maps are current again.
        try {
          if (links_.process()) policy_.apply_or_retry("netlink");
        } catch (const std::exception& e) {
          log_error(std::string("cannot read the links (will retry): ") + e.what());
          policy_.mark_stale();
        }
      } else if (fd == signal_fd_.get()) {
        if (on_signals()) return;
      } else if (fd == timer_fd_.get()) {
        on_timer();
      } else if (fd == registry_.watch_fd()) {
        // Events the apps' last moments produced first, while ksd still knows the apps.
        consume_events();
        registry_.on_watch_ready();
      } else if (fd == tree_.watch_fd()) {
        tree_.drain_watch();
        guard_tree();
      } else if (fd == events_->fd()) {
        consume_events();
      } else if (fd == launches_.scopes_fd()) {
        launches_.on_scopes_ready();
      } else if (fd == launches_.after_launch_fd()) {
        launches_.on_after_launch();
      } else {
        server_.on_ready(fd);
      }
    }
    for (int fd : streams) server_.on_ready(fd);
    launches_.rewatch();  // the manager connection's fd and wanted events change
  }
}

bool Daemon::on_signals() {
  signalfd_siginfo si{};
  while (::read(signal_fd_.get(), &si, sizeof(si)) == sizeof(si)) {
    if (si.ssi_signo != SIGHUP) {
      sd_notify(0, "STOPPING=1");
      log_info("stopping; enforcement stays pinned in " + options_.pin_dir);
      ::unlink(options_.socket_path.c_str());
      return true;
    }
    try {
      policy_.reload();
      log_info("reloaded " + options_.config_path);
    } catch (const std::exception& e) {
      log_info(std::string("reload refused: ") + e.what());
    }
  }
  return false;
}

void Daemon::on_timer() {
  std::uint64_t expirations = 0;
  (void)!::read(timer_fd_.get(), &expirations, sizeof(expirations));
  try {
    policy_.retry();
    launches_.expire(std::chrono::steady_clock::now());
    server_.expire(std::chrono::steady_clock::now());
    guard_tree();
    registry_.sweep();
    if (++sweeps_since_summary_ >= kSummaryEverySweeps) {
      sweeps_since_summary_ = 0;
      for (const std::string& line : event_log_.take_summary(kSummaryEverySweeps))
        log_warning(line);
    }
    if (watchdog_) sd_notify(0, "WATCHDOG=1");
  } catch (const std::exception& e) {
    log_error(std::string("periodic work failed (will retry): ") + e.what());
    policy_.mark_stale();
  }
  // The ring buffer wakes us only when we had caught up with it (adaptive notification);
  // reading it here too bounds any missed wakeup to one sweep.
  consume_events();
}

void Daemon::guard_tree() {
  try {
    switch (tree_.repair(policy_.config())) {
      case ProtectedTree::Change::kNone:
        break;
      case ProtectedTree::Change::kRootRecreated:
        policy_.apply("tree re-created");
        tree_.attach();
        log_info("enforcement attached again to " + tree_.root());
        break;
      case ProtectedTree::Change::kSliceRecreated:
        policy_.apply("profile slice re-created");
        break;
    }
  } catch (const std::exception& e) {
    log_error(std::string("cannot make the re-created tree whole (will retry): ") + e.what());
    policy_.mark_stale();
  }
}

std::optional<Reply> Daemon::handle(AdminServer::ClientId client, const ipc::Request& request,
                                    const ipc::PeerCred& peer) {
  switch (request.op) {
    case ipc::Op::kStatus:
      return reports_.status_text();
    case ipc::Op::kList:
      return reports_.list_source();
    case ipc::Op::kReload:
      policy_.reload();
      return ipc::message_text({{"ok", true}});
    case ipc::Op::kLaunch: {
      std::optional<nlohmann::json> reply = launches_.launch(client, request, peer);
      if (!reply) return std::nullopt;
      return ipc::message_text(*reply);
    }
    case ipc::Op::kProtect:
      return ipc::message_text(launches_.protect(request));
    case ipc::Op::kEvents:
      return events_text(client, request);
  }
  throw Error("unhandled request");
}

std::string Daemon::events_text(AdminServer::ClientId client, const ipc::Request& request) {
  if (request.follow) server_.follow(client);
  const Counters totals = enforcement_.totals();
  std::string out;
  JsonText j(out);
  j.begin_object().member("ok", true);
  j.key("events").raw(event_log_.query(request.since, request.limit));
  j.member("next_seq", event_log_.next_seq()).member("kept", std::uint64_t{EventLog::kKept});
  j.member("blocked_total", totals.blocked()).member("events_dropped", totals.events_dropped);
  j.member("follow", request.follow).end_object();
  return out;
}

void Daemon::consume_events() {
  try {
    events_->consume();
  } catch (const std::exception& e) {
    log_error(e.what());
  }
}

std::string Daemon::app_of(std::uint64_t cgroup_id) {
  if (const App* app = registry_.find(cgroup_id)) return tree_.relative(app->path);
  if (auto name = tree_.find(cgroup_id)) return *name;
  return "(cgroup " + std::to_string(cgroup_id) + ", gone)";
}

}  // namespace ks
