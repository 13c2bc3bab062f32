// Transient scopes for ksrun on systemd hosts: ksd asks the manager
// (StartTransientUnit) to make `ksrun-<pid>.scope` in the profile's slice with the
// caller's pid in it, and answers the caller only when the job has finished. Without
// this, systemd would not know the cgroup ksd made, and `systemctl status`, resource
// control and `systemctl stop killswitch.slice` would not see the app.
//
// Everything is asynchronous so that a slow or hung manager never stalls ksd's event
// loop (the tunnels' state must stay current): the owner polls fd() for events() and
// calls process() when it is ready, and expire() from its timer.
#pragma once

#include <sys/types.h>
#include <systemd/sd-bus.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>

namespace ks::systemd {

// True when PID 1 is systemd (sd_booted()).
bool is_systemd_host();

class TransientScopes {
 public:
  // "" on success, else why the scope could not be made.
  using Done = std::function<void(const std::string& error)>;

  TransientScopes();
  ~TransientScopes();
  TransientScopes(const TransientScopes&) = delete;
  TransientScopes& operator=(const TransientScopes&) = delete;

  // Ask for `name` (a .scope) in `slice` holding `pid`; `done` runs exactly once: from
  // process() or expire(), or from inside start() when the manager cannot be reached.
  // If the unit exists already, "<stem>-1.scope", "<stem>-2.scope", ... are tried.
  // Connects (or reconnects) to the manager as needed.
  void start(const std::string& name, const std::string& slice, pid_t pid,
             const std::string& description, Done done);

  // Sets a running unit's description (SetUnitProperties, runtime only); the answer is not
  // waited for: a description that did not change is no reason to refuse anything.
  void describe(const std::string& unit, const std::string& description);

  // The connection's fd (-1 when not connected) and the poll events it waits for.
  int fd() const;
  std::uint32_t events() const;

  // Read and dispatch what the manager sent; fail requests whose connection died.
  void process();
  // Fail requests older than the deadline (the manager never finished them).
  void expire(std::chrono::steady_clock::time_point now);

  std::size_t pending() const { return requests_.size(); }

  static constexpr std::chrono::seconds kDeadline{8};  // ksrun waits 10 s for ksd

 private:
  struct Request;
  void connect();
  void disconnect(const std::string& why);
  void send(Request& request);
  void finish(Request& request, const std::string& error);
  void job_finished(const std::string& job, const std::string& result);
  void reap();
  static int on_reply(sd_bus_message* reply, void* userdata, sd_bus_error* error);
  static int on_job_removed(sd_bus_message* signal, void* userdata, sd_bus_error* error);

  sd_bus* bus_ = nullptr;
  sd_bus_slot* job_removed_ = nullptr;
  std::list<Request> requests_;
  // Jobs the manager reported finished before their StartTransientUnit reply was read:
  // job path -> result.
  std::map<std::string, std::string> early_results_;
};

}  // namespace ks::systemd
