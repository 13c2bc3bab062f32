#include "ready_scopes.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"
#include "killswitch/log.hpp"

namespace ks {
namespace {

constexpr const char* kPlaceholderName = "ksd-ready-scope";

// Raw system calls: Debian 12's <sys/pidfd.h> declares these without C linkage for C++.
int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
void pidfd_kill(int pidfd) { ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0); }

std::string find_sleep() {
  for (const char* path : {"/usr/bin/sleep", "/bin/sleep"})
    if (::access(path, X_OK) == 0) return path;
  return "";
}

// A child that sleeps until it is killed or ksd ends. Only async-signal-safe calls between
// fork and exec.
pid_t spawn_placeholder(const std::string& sleep_path) {
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(0);  // ksd ended before the line above
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // ksd's signalfd blocks some
    ::close_range(3, ~0U, 0);                    // ksd's maps, sockets and admin socket
    ::execl(sleep_path.c_str(), kPlaceholderName, "infinity", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

}  // namespace

ReadyScopes::ReadyScopes(systemd::TransientScopes& scopes, ProtectedTree& tree,
                         AppRegistry& registry)
    : scopes_(scopes), tree_(tree), registry_(registry), sleep_path_(find_sleep()) {
  if (sleep_path_.empty())
    log_warning(
        "no sleep(1) for the placeholders of ready scopes; every ksrun waits for "
        "systemd to make its scope");
}

ReadyScopes::~ReadyScopes() {
  for (Entry& e : entries_) end(e);
  reap();
}

void ReadyScopes::fill(const std::string& profile, std::size_t count) {
  if (sleep_path_.empty()) return;
  std::size_t have = 0;
  for (const Entry& e : entries_)
    if (e.profile == profile) ++have;
  for (; have < count; ++have) {
    Entry& entry = entries_.emplace_back();
    entry.serial = next_serial_++;
    entry.profile = profile;
    try {
      entry.holder = spawn_placeholder(sleep_path_);
    } catch (const Error& e) {
      log_warning(std::string("cannot make a ready scope: ") + e.what());
      entries_.pop_back();
      return;
    }
    entry.holder_fd = UniqueFd(pidfd_open(entry.holder));
    const std::uint64_t serial = entry.serial;
    // The scope's name is the placeholder's pid: unique while it lives, like ksrun-<pid>.
    scopes_.start("ksrun-" + std::to_string(entry.holder), tree_.profile_slice_unit(profile),
                  entry.holder, "Killswitch: ready for the next ksrun (profile " + profile + ")",
                  [this, serial](const std::string& error) { made(serial, error); });
  }
}

void ReadyScopes::made(std::uint64_t serial, const std::string& error) {
  auto it = entries_.begin();
  while (it != entries_.end() && it->serial != serial) ++it;
  if (it == entries_.end()) return;  // dropped meanwhile
  Entry& entry = *it;
  try {
    if (!error.empty()) throw Error(error);
    const std::string cgroup = tree_.scope_cgroup_of(entry.holder, entry.profile);
    entry.cgroup_id = registry_.add(App{cgroup, entry.profile, cgroup_id(cgroup), false}).cgroup_id;
    registry_.set_holder(entry.cgroup_id, entry.holder);
  } catch (const std::exception& e) {
    log_warning(std::string("cannot make a ready scope (launches wait for systemd instead): ") +
                e.what());
    end(entry);
    entries_.erase(it);
  }
}

App* ReadyScopes::take(const std::string& profile, pid_t pid) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->profile != profile || it->cgroup_id == 0) {
      ++it;
      continue;
    }
    Entry entry = std::move(*it);
    it = entries_.erase(it);
    App* app = registry_.find(entry.cgroup_id);
    // Its scope ended (the placeholder was killed, the scope stopped): the next one.
    if (!app || app->holder != entry.holder) {
      end(entry);
      continue;
    }
    try {
      move_pid_to_cgroup(app->path, pid);
    } catch (const Error& e) {
      log_warning("ready scope " + tree_.relative(app->path) + " not usable: " + e.what());
      end(entry);
      continue;
    }
    // The caller waits for our answer, so it runs nothing while the placeholder is with it.
    end(entry);
    registry_.set_holder(app->cgroup_id, 0);
    return app;
  }
  return nullptr;
}

void ReadyScopes::end(Entry& entry) {
  if (entry.holder <= 0) return;
  if (entry.holder_fd) {
    pidfd_kill(entry.holder_fd.get());
  } else {
    ::kill(entry.holder, SIGKILL);
  }
  unreaped_.push_back(entry.holder);
  entry.holder = 0;
  entry.holder_fd = UniqueFd();
}

void ReadyScopes::reap() {
  std::erase_if(unreaped_, [](pid_t pid) {
    const pid_t r = ::waitpid(pid, nullptr, WNOHANG);
    return r == pid || (r < 0 && errno == ECHILD);
  });
}

void ReadyScopes::expire(const std::function<bool(const std::string& profile)>& profile_exists) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    // A placeholder that ended on its own (killed by someone, its scope stopped) is reaped
    // here; its emptied scope leaves the registry at the next sweep.
    if (it->holder > 0 && ::waitpid(it->holder, nullptr, WNOHANG) == it->holder) {
      it->holder = 0;
      it = entries_.erase(it);
    } else if (!profile_exists(it->profile) ||
               (it->cgroup_id != 0 && !registry_.find(it->cgroup_id))) {
      end(*it);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  reap();
}

}  // namespace ks
