#include "launches.hpp"

#include <pthread.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <csignal>
#include <system_error>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"
#include "killswitch/log.hpp"
#include "killswitch/proc.hpp"

namespace ks {
namespace {

std::string joined(const std::vector<std::string>& argv) {
  std::string text;
  for (const auto& arg : argv) text += (text.empty() ? "" : " ") + arg;
  return text;
}

}  // namespace

Launches::Launches(EventLoop& loop, const PolicySync& policy, ProtectedTree& tree,
                   AppRegistry& registry, const Enforcement& enforcement, bool systemd_scopes,
                   ReplyLater reply_later)
    : loop_(loop),
      policy_(policy),
      tree_(tree),
      registry_(registry),
      enforcement_(enforcement),
      reply_later_(std::move(reply_later)) {
  load_copies_iterator();
  if (!systemd_scopes) return;
  if (tree_.slices_are_systemd_units()) {
    scopes_ = std::make_unique<systemd::TransientScopes>();
    ready_ = std::make_unique<ReadyScopes>(*scopes_, tree_, registry_);
    after_launch_ = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!after_launch_) throw_errno("timerfd_create");
    loop_.watch(after_launch_.get());
    log_info("systemd host: ksrun apps get scopes from systemd, made ahead of launches");
  } else {
    log_warning(
        "the tree's slice name has a dash, so systemd would not nest its profile "
        "slices in it; ksrun apps get cgroups made by ksd instead of transient scopes");
  }
}

void Launches::start() {
  if (!ready_) return;
  std::size_t n = 0;
  for (const auto& p : policy_.config().profiles)
    if (n++ < kMaxProfilesReadyAtStart) ready_->fill(p.name, kReadyAtStart);
  rewatch();
}

std::string Launches::scope_description(const ipc::Request& request) {
  const std::string cmd = request.argv.empty() ? "" : request.argv.front();
  return "Killswitch-protected " + cmd.substr(0, 100) + " (profile " + request.profile + ")";
}

bool Launches::owns_cgroup(const std::string& name) const {
  return name.starts_with("protect-") || (name.starts_with("ksrun-") && !scopes_);
}

std::optional<nlohmann::json> Launches::launch(AdminServer::ClientId client,
                                               const ipc::Request& request,
                                               const ipc::PeerCred& peer) {
  policy_.id_of(request.profile);  // an unknown profile is refused here
  if (peer.pid <= 0) throw Error("cannot identify the calling process");
  const std::string stem = "ksrun-" + std::to_string(peer.pid);

  if (!scopes_) {
    // One cgroup per launch, named after the launcher's pid (which becomes the app's).
    App& app = registry_.create(tree_.profile_slice_path(request.profile), request.profile, stem);
    move_pid_to_cgroup(app.path, peer.pid);
    return finish(request, peer, app);
  }

  ensure_cgroup_dir(tree_.profile_slice_path(request.profile));
  // A scope systemd made ahead: the caller joins it, the next one is asked for.
  if (App* app = ready_->take(request.profile, peer.pid)) {
    nlohmann::json reply = finish(request, peer, *app);
    after_launch(request.profile, app->path.substr(app->path.find_last_of('/') + 1),
                 scope_description(request));
    return reply;
  }

  // systemd moves the caller into a new scope in the profile's slice; the programs on the
  // tree root are inherited by the scope's cgroup the moment systemd creates it, and the
  // caller is waiting for our answer, so it runs nothing in between.
  scopes_->start(
      stem, tree_.profile_slice_unit(request.profile), peer.pid, scope_description(request),
      [this, client, request, peer](const std::string& error) {
        nlohmann::json reply;
        try {
          if (!error.empty()) throw Error(error);
          const std::string cgroup = tree_.scope_cgroup_of(peer.pid, request.profile);
          const App& app = registry_.add(App{cgroup, request.profile, cgroup_id(cgroup), false});
          reply = finish(request, peer, app);
        } catch (const std::exception& e) {
          log_warning("launch for pid " + std::to_string(peer.pid) + " refused: " + e.what());
          reply = {{"ok", false}, {"error", e.what()}};
        }
        reply_later_(client, reply);
        if (error.empty()) after_launch(request.profile, "", "");
      });
  rewatch();
  return std::nullopt;
}

nlohmann::json Launches::finish(const ipc::Request& request, const ipc::PeerCred& peer,
                                const App& app) {
  // What ksrun is about to exec (until then /proc shows ksrun itself), for `ksctl list`.
  const std::string command = joined(request.argv);
  if (App* tracked = registry_.find(app.cgroup_id)) tracked->command = command;
  const std::string missing = tree_.not_effective_on(app.path);
  if (!missing.empty())
    throw Error("enforcement is not effective on " + tree_.relative(app.path) + ": " + missing);
  log_info("launch: uid " + std::to_string(peer.uid) + " pid " + std::to_string(peer.pid) +
           " profile " + request.profile + " in " + tree_.relative(app.path) + ": " +
           command.substr(0, 200));

  nlohmann::json prog_ids = nlohmann::json::object();
  for (const auto& [hook, id] : enforcement_.program_ids()) prog_ids[hook] = id;
  nlohmann::json reply = {{"ok", true},
                          {"cgroup", tree_.relative(app.path)},
                          {"cgroup_id", app.cgroup_id},
                          {"profile", request.profile},
                          {"program_ids", prog_ids}};
  // ksrun's single-instance check: copies of the command the caller runs outside the tree.
  // Looked for here, where ksd can use the task iterator (ksrun, a new process, took ~0.5
  // ms to read /proc), and only when ksrun's pid is the one ksd sees: then both see the
  // same processes. Otherwise ksrun looks itself.
  if (!request.executable.empty() && request.pid == peer.pid)
    reply["unprotected_copies"] = unprotected_copies(request, peer);
  return reply;
}

void Launches::load_copies_iterator() {
  // The thread starts with every signal blocked: ksd's loop blocks SIGTERM and the others
  // only once it runs, and until then a thread that did not block them could take one with
  // its default action, ending ksd before it removes its socket (lab_ksrun_refuses saw it).
  sigset_t all;
  sigset_t before;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &before);
  try {
    copies_loading_ = std::async(std::launch::async, [] {
      std::string why_not;
      auto loaded = TaskCgroups::load(why_not);
      if (!loaded) throw Error(why_not);
      return loaded;
    });
  } catch (const std::system_error& e) {  // no thread: /proc it is
    log_info(std::string("ksrun's single-instance check reads /proc: ") + e.what());
  }
  ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
}

TaskCgroups* Launches::copies() {
  if (copies_loading_.valid() &&
      copies_loading_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    try {
      copies_ = copies_loading_.get();
      log_info("ksrun's single-instance check uses the task iterator");
    } catch (const std::exception& e) {
      log_info(std::string("ksrun's single-instance check reads /proc: ") + e.what());
    }
  }
  return copies_.get();
}

std::vector<pid_t> Launches::unprotected_copies(const ipc::Request& request,
                                                const ipc::PeerCred& peer) {
  const std::string tree = tree_.relative(tree_.root());
  // The file as the caller would exec it (its root and mount namespace, which need not be
  // ksd's), by inode number: the iterator reports the processes running a file with that
  // number, and each is then checked by its /proc/PID/exe as the walk of /proc would.
  struct stat st {};
  TaskCgroups* iterator = copies();
  if (iterator && request.executable.starts_with('/') &&
      ::stat(("/proc/" + std::to_string(peer.pid) + "/root" + request.executable).c_str(), &st) ==
          0) {
    try {
      const std::vector<pid_t> candidates = iterator->running_inode(st.st_ino);
      return outside(running_copies_among(candidates, request.executable, peer.uid, peer.pid),
                     tree);
    } catch (const Error& e) {
      log_warning(std::string("single-instance check: ") + e.what() + "; reading /proc");
    }
  }
  return outside(running_copies(request.executable, peer.uid, peer.pid), tree);
}

nlohmann::json Launches::protect(const ipc::Request& request) {
  policy_.id_of(request.profile);  // an unknown profile is refused here
  const pid_t pid = request.pid;
  const std::string who = "process " + std::to_string(pid);
  if (pid == ::getpid()) throw Error("ksd does not protect itself");
  std::string original;
  try {
    original = cgroup_of_pid(pid);
  } catch (const Error&) {
    throw Error("no " + who);
  }
  const std::string tree = tree_.relative(tree_.root());
  if (original == tree || original.rfind(tree + "/", 0) == 0)
    throw Error(who + " is already protected (" + original + ")");

  // Move first, then look: sockets the process creates from the move on are protected,
  // and every socket it held before shows up in the check. If there are any, it goes
  // back where it was: a socket keeps the cgroup it was created in, so adopting the
  // process would leave them unprotected while looking protected.
  const App& app = registry_.create(tree_.profile_slice_path(request.profile), request.profile,
                                    "protect-" + std::to_string(pid));
  move_pid_to_cgroup(app.path, pid);
  std::size_t sockets = 0;
  try {
    sockets = count_inet_sockets(pid);
  } catch (const Error& e) {
    move_pid_to_cgroup(tree_.mount() + original, pid);
    throw Error(std::string("cannot check its sockets: ") + e.what());
  }
  if (sockets > 0) {
    move_pid_to_cgroup(tree_.mount() + original, pid);
    throw Error(who + " has " + std::to_string(sockets) +
                " network socket(s) opened before protection; they would stay unprotected, "
                "so it was not adopted. Restart it with ksrun.");
  }
  const std::string missing = tree_.not_effective_on(app.path);
  if (!missing.empty())
    throw Error("enforcement is not effective on " + tree_.relative(app.path) + ": " + missing);
  log_info("protect: " + who + " adopted into " + tree_.relative(app.path) + " (profile " +
           request.profile + "); its threads and future children are protected");
  return {{"ok", true}, {"cgroup", tree_.relative(app.path)}, {"profile", request.profile}};
}

void Launches::after_launch(const std::string& profile, std::string unit, std::string description) {
  to_fill_.insert(profile);
  if (!unit.empty()) to_describe_.emplace_back(std::move(unit), std::move(description));
  // Every launch pushes the timer back: during a burst of launches (a script starting many)
  // the ones after the ready scopes wait for systemd as before, and the next ready scopes
  // are made once the burst is over, instead of competing with every launch in it.
  itimerspec its{};
  its.it_value.tv_nsec = kAfterLaunchDelayNs;
  if (::timerfd_settime(after_launch_.get(), 0, &its, nullptr) != 0)
    on_after_launch();  // no timer: at once, then
}

void Launches::on_after_launch() {
  std::uint64_t expirations = 0;
  (void)!::read(after_launch_.get(), &expirations, sizeof(expirations));
  for (const auto& [unit, description] : to_describe_) scopes_->describe(unit, description);
  to_describe_.clear();
  for (const std::string& profile : to_fill_) ready_->fill(profile, kReadyInUse);
  to_fill_.clear();
  rewatch();
}

void Launches::on_scopes_ready() {
  if (scopes_) scopes_->process();
}

void Launches::rewatch() {
  if (!scopes_) return;
  const int fd = scopes_->fd();
  if (scopes_fd_ >= 0 && fd != scopes_fd_) loop_.unwatch(scopes_fd_);
  scopes_fd_ = fd;
  if (fd < 0) return;
  // POLLIN/POLLOUT have the values of EPOLLIN/EPOLLOUT.
  loop_.watch_for(fd, static_cast<std::uint32_t>(scopes_->events()));
}

void Launches::expire(std::chrono::steady_clock::time_point now) {
  if (!scopes_) return;
  scopes_->expire(now);
  ready_->expire([this](const std::string& profile) {
    for (const auto& p : policy_.config().profiles)
      if (p.name == profile) return true;
    return false;
  });
}

}  // namespace ks
