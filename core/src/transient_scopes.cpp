#include "killswitch/transient_scopes.hpp"

#include <poll.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "bus.hpp"
#include "killswitch/error.hpp"

namespace ks::systemd {

using namespace bus;

namespace {
constexpr int kMaxNameAttempts = 16;
constexpr const char* kPrivateSocket = "/run/systemd/private";
constexpr std::uint64_t kCallTimeoutUsec = 5'000'000;

std::string scope_name(const std::string& stem, int attempt) {
  return attempt == 0 ? stem + ".scope" : stem + "-" + std::to_string(attempt) + ".scope";
}
}  // namespace

struct TransientScopes::Request {
  TransientScopes* owner = nullptr;
  std::string stem, name, slice, description;
  pid_t pid = 0;
  Done done;
  int attempt = 0;
  sd_bus_slot* call = nullptr;  // the StartTransientUnit call in flight
  std::string job;              // its job, once the manager answered
  std::chrono::steady_clock::time_point deadline;
  bool finished = false;
};

bool is_systemd_host() { return sd_booted() > 0; }

TransientScopes::TransientScopes() = default;

TransientScopes::~TransientScopes() {
  for (auto& r : requests_) sd_bus_slot_unref(r.call);
  sd_bus_slot_unref(job_removed_);
  if (bus_) sd_bus_flush_close_unref(bus_);
}

int TransientScopes::fd() const { return bus_ ? sd_bus_get_fd(bus_) : -1; }

std::uint32_t TransientScopes::events() const {
  if (!bus_) return 0;
  int e = sd_bus_get_events(bus_);
  return e < 0 ? 0 : static_cast<std::uint32_t>(e);
}

void TransientScopes::connect() {
  if (bus_ && sd_bus_is_open(bus_) > 0) return;
  if (bus_) disconnect("the connection to systemd was closed");
  sd_bus* b = nullptr;
  int r;
  // As root, systemd's private socket: it needs no D-Bus broker (early boot, minimal
  // systems) and carries the manager's signals to every direct client unconditionally.
  const bool direct = ::geteuid() == 0 && ::access(kPrivateSocket, F_OK) == 0;
  if (direct) {
    r = sd_bus_new(&b);
    if (r >= 0) r = sd_bus_set_address(b, (std::string("unix:path=") + kPrivateSocket).c_str());
    if (r >= 0) r = sd_bus_start(b);
  } else {
    r = sd_bus_open_system(&b);
  }
  if (r < 0) {
    if (b) sd_bus_unref(b);
    throw Error("cannot connect to systemd: " + std::string(std::strerror(-r)));
  }
  // Subscribe before any job exists, so no JobRemoved can be missed. On the broker the
  // sender is systemd's well-known name; direct messages carry no sender.
  r = sd_bus_match_signal_async(b, &job_removed_, direct ? nullptr : kDestination, kManagerPath,
                                kManager, "JobRemoved", &TransientScopes::on_job_removed, nullptr,
                                this);
  if (r < 0) {
    sd_bus_flush_close_unref(b);
    throw Error("cannot watch systemd's jobs: " + std::string(std::strerror(-r)));
  }
  bus_ = b;
}

void TransientScopes::disconnect(const std::string& why) {
  for (auto& r : requests_)
    if (!r.finished) finish(r, why);
  sd_bus_slot_unref(job_removed_);
  job_removed_ = nullptr;
  for (auto& r : requests_) r.call = sd_bus_slot_unref(r.call);
  if (bus_) sd_bus_flush_close_unref(bus_);
  bus_ = nullptr;
  early_results_.clear();
}

void TransientScopes::start(const std::string& name, const std::string& slice, pid_t pid,
                            const std::string& description, Done done) {
  Request& request = requests_.emplace_back();
  request.owner = this;
  request.stem = name.substr(0, name.size() - (name.ends_with(".scope") ? 6 : 0));
  request.slice = slice;
  request.description = description;
  request.pid = pid;
  request.done = std::move(done);
  request.deadline = std::chrono::steady_clock::now() + kDeadline;
  try {
    connect();
    send(request);
  } catch (const Error& e) {
    finish(request, e.what());
  }
}

void TransientScopes::send(Request& request) {
  request.name = scope_name(request.stem, request.attempt);
  Message m;
  sd_bus_message* raw = nullptr;
  int r = sd_bus_message_new_method_call(bus_, &raw, kDestination, kManagerPath, kManager,
                                         "StartTransientUnit");
  m.reset(raw);
  // mode "fail": never replace a job queued for another unit.
  if (r >= 0) r = sd_bus_message_append(m.get(), "ss", request.name.c_str(), "fail");
  if (r >= 0) r = sd_bus_message_open_container(m.get(), 'a', "(sv)");
  if (r >= 0) r = sd_bus_message_append(m.get(), "(sv)", "Slice", "s", request.slice.c_str());
  if (r >= 0)
    r = sd_bus_message_append(m.get(), "(sv)", "Description", "s", request.description.c_str());
  if (r >= 0)
    r = sd_bus_message_append(m.get(), "(sv)", "PIDs", "au", 1,
                              static_cast<std::uint32_t>(request.pid));
  // A scope that failed is garbage-collected too; its name is free again.
  if (r >= 0) r = sd_bus_message_append(m.get(), "(sv)", "CollectMode", "s", "inactive-or-failed");
  if (r >= 0) r = sd_bus_message_close_container(m.get());
  if (r >= 0) r = sd_bus_message_append(m.get(), "a(sa(sv))", 0);
  if (r >= 0)
    r = sd_bus_call_async(bus_, &request.call, m.get(), &TransientScopes::on_reply, &request,
                          kCallTimeoutUsec);
  if (r < 0) throw Error("cannot ask systemd for " + request.name + ": " + std::strerror(-r));
}

void TransientScopes::describe(const std::string& unit, const std::string& description) {
  try {
    connect();
  } catch (const Error&) {
    return;
  }
  Message m;
  sd_bus_message* raw = nullptr;
  int r = sd_bus_message_new_method_call(bus_, &raw, kDestination, kManagerPath, kManager,
                                         "SetUnitProperties");
  m.reset(raw);
  if (r >= 0) r = sd_bus_message_append(m.get(), "sb", unit.c_str(), 1);
  if (r >= 0)
    r = sd_bus_message_append(m.get(), "a(sv)", 1, "Description", "s", description.c_str());
  // A floating call: sd-bus drops the answer when it comes.
  if (r >= 0) sd_bus_call_async(bus_, nullptr, m.get(), nullptr, nullptr, kCallTimeoutUsec);
}

int TransientScopes::on_reply(sd_bus_message* reply, void* userdata, sd_bus_error*) {
  auto& request = *static_cast<Request*>(userdata);
  TransientScopes& self = *request.owner;
  if (request.finished) return 0;
  if (const sd_bus_error* e = sd_bus_message_get_error(reply)) {
    if (sd_bus_error_has_name(e, "org.freedesktop.systemd1.UnitExists") &&
        request.attempt + 1 < kMaxNameAttempts) {
      ++request.attempt;
      // sd-bus holds its own reference while it dispatches this reply.
      request.call = sd_bus_slot_unref(request.call);
      try {
        self.send(request);
      } catch (const Error& err) {
        self.finish(request, err.what());
      }
      return 0;
    }
    self.finish(request, "systemd refused " + request.name + ": " +
                             (e->message ? e->message
                              : e->name  ? e->name
                                         : "unknown error"));
    return 0;
  }
  const char* job = nullptr;
  if (sd_bus_message_read(reply, "o", &job) < 0 || !job) {
    self.finish(request, "unreadable StartTransientUnit reply from systemd");
    return 0;
  }
  request.job = job;
  auto early = self.early_results_.find(request.job);
  if (early != self.early_results_.end()) {
    std::string result = early->second;
    self.early_results_.erase(early);
    self.job_finished(request.job, result);
  }
  return 0;
}

int TransientScopes::on_job_removed(sd_bus_message* signal, void* userdata, sd_bus_error*) {
  auto& self = *static_cast<TransientScopes*>(userdata);
  std::uint32_t id = 0;
  const char *job = nullptr, *unit = nullptr, *result = nullptr;
  if (sd_bus_message_read(signal, "uoss", &id, &job, &unit, &result) < 0 || !job || !result)
    return 0;
  bool ours_in_flight = false;
  for (auto& r : self.requests_)
    if (!r.finished && r.job.empty() && r.call) ours_in_flight = true;
  for (auto& r : self.requests_)
    if (!r.finished && r.job == job) {
      self.job_finished(job, result);
      return 0;
    }
  // The signal can be read before the reply that names the job: keep the result until
  // the reply comes (only while one of our calls is unanswered, so this stays small).
  if (ours_in_flight) self.early_results_[job] = result;
  return 0;
}

void TransientScopes::job_finished(const std::string& job, const std::string& result) {
  for (auto& r : requests_)
    if (!r.finished && r.job == job) {
      if (result == "done")
        finish(r, "");
      else
        finish(r, "systemd could not start " + r.name + " (job result: " + result + ")");
      return;
    }
}

void TransientScopes::finish(Request& request, const std::string& error) {
  if (request.finished) return;
  request.finished = true;
  Done done = std::move(request.done);
  if (done) done(error);
}

void TransientScopes::process() {
  if (bus_) {
    for (;;) {
      int r = sd_bus_process(bus_, nullptr);
      if (r <= 0) break;
    }
    if (sd_bus_is_open(bus_) <= 0) disconnect("the connection to systemd was lost");
  }
  reap();
}

void TransientScopes::expire(std::chrono::steady_clock::time_point now) {
  process();
  for (auto& r : requests_)
    if (!r.finished && now >= r.deadline)
      finish(r, "systemd did not start " + (r.name.empty() ? r.stem + ".scope" : r.name) +
                    " within " + std::to_string(kDeadline.count()) + " s");
  reap();
  if (requests_.empty()) early_results_.clear();
}

void TransientScopes::reap() {
  for (auto it = requests_.begin(); it != requests_.end();) {
    if (it->finished) {
      sd_bus_slot_unref(it->call);
      it = requests_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace ks::systemd
