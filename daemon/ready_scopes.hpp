// Scopes systemd made before anyone launched (systemd hosts only), so that a launch only
// joins one: making a transient scope is a round trip through the manager and its job,
// about two thirds of a launch there, and a launch that joins a ready scope costs what it
// costs where ksd makes the cgroup itself.
//
// systemd refuses a scope without a process, so each ready scope holds a placeholder: a
// child of ksd (`ksd-ready-scope`, an exec of sleep) that dies with ksd
// (PR_SET_PDEATHSIG), and with it the scope. A launch moves ksrun's process into the
// scope, kills the placeholder, then answers; the app keeps the scope's name
// (`ksrun-<placeholder pid>.scope`) and gets the usual description. The scope is in the
// profile's slice from the start, so the programs on the tree are in force on it before
// ksrun joins, and it is tracked (classified, a counter slot) like any app, only not
// listed or counted while it waits.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <vector>

#include "app_registry.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/transient_scopes.hpp"
#include "protected_tree.hpp"

namespace ks {

class ReadyScopes {
 public:
  ReadyScopes(systemd::TransientScopes& scopes, ProtectedTree& tree, AppRegistry& registry);
  ~ReadyScopes();  // the placeholders are killed: their scopes end with them
  ReadyScopes(const ReadyScopes&) = delete;
  ReadyScopes& operator=(const ReadyScopes&) = delete;

  // Asks systemd for ready scopes in the profile's slice until `count` are ready or being
  // made. Failures are logged; launches then take the slower way.
  void fill(const std::string& profile, std::size_t count);

  // Moves `pid` into a ready scope of the profile and kills its placeholder: the app, now
  // tracked as a launched one; nullptr when none is ready (or the ones that were have gone),
  // and then nothing was moved.
  App* take(const std::string& profile, pid_t pid);

  // Each second: drops the scopes of profiles that no longer exist and the ones that ended,
  // and reaps placeholders.
  void expire(const std::function<bool(const std::string& profile)>& profile_exists);

 private:
  struct Entry {
    std::uint64_t serial = 0;
    std::string profile;
    pid_t holder = 0;
    UniqueFd holder_fd;           // pidfd: the signal reaches this process, never a pid's reuse
    std::uint64_t cgroup_id = 0;  // 0 while systemd makes the scope
  };
  void made(std::uint64_t serial, const std::string& error);
  void end(Entry& entry);  // kills the placeholder
  void reap();

  systemd::TransientScopes& scopes_;
  ProtectedTree& tree_;
  AppRegistry& registry_;
  std::string sleep_path_;  // empty: no placeholder can be made, so no ready scopes
  std::list<Entry> entries_;
  std::vector<pid_t> unreaped_;
  std::uint64_t next_serial_ = 1;
};

}  // namespace ks
