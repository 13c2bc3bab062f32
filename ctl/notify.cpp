// ksctl notify: blocked attempts as desktop notifications. A long-running user process
// (systemd/killswitch-notify.service, or the desktop's autostart) that follows ksd's event
// stream like `ksctl events --follow` and sends org.freedesktop.Notifications.Notify on
// the session bus, at most one notification per app per interval.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/ipc.hpp"
#include "killswitch/notifications.hpp"

namespace ksctl {
namespace {

std::int64_t now_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

std::int64_t realtime_us() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}

class Notifier {
 public:
  explicit Notifier(const NotifyOptions& o) : o_(o), limiter_(std::int64_t{o.interval_s} * 1000) {}

  // Sends, or says on stderr why not: a missing notification server must not end the
  // stream (it may come later, with the desktop).
  std::uint32_t send(const std::string& summary, const std::string& body, std::uint32_t replaces,
                     std::uint8_t urgency = 1) {
    try {
      return bus_.send(summary, body, replaces, urgency);
    } catch (const ks::Error& e) {
      std::fprintf(stderr, "ksctl notify: %s (%s)\n", e.what(), summary.c_str());
      return 0;
    }
  }

  void on_event(const nlohmann::json& e) {
    last_time_us_ = std::max(last_time_us_, e.value("time_us", std::int64_t{0}));
    std::string key = e.value("app", std::string());
    if (key.empty()) key = ks::notify::app_name(e);
    last_event_[key] = e;
    if (!limiter_.admit(key, now_ms())) return;
    std::uint32_t id = send(ks::notify::summary(e), ks::notify::body(e), limiter_.id_of(key));
    if (id) limiter_.set_id(key, id);
  }

  // The counted attempts whose interval has passed: one update per app.
  void flush() {
    for (const auto& d : limiter_.due(now_ms())) {
      const nlohmann::json& e = last_event_[d.key];
      std::string summary = ks::notify::app_name(e) + ": " + std::to_string(d.suppressed) +
                            " more blocked attempt" + (d.suppressed == 1 ? "" : "s");
      std::string body = "The last: " + ks::notify::body(e);
      std::uint32_t id = send(summary, body, limiter_.id_of(d.key));
      if (id) limiter_.set_id(d.key, id);
    }
    std::int64_t idle = std::max<std::int64_t>(3'600'000, std::int64_t{o_.interval_s} * 10'000);
    limiter_.forget_idle(now_ms(), idle);
    std::erase_if(last_event_, [&](const auto& kv) { return !limiter_.knows(kv.first); });
  }

  std::int64_t next_flush_ms() const { return limiter_.next_due_ms(); }

  void daemon_lost(const std::string& why) {
    if (daemon_down_) return;
    daemon_down_ = true;
    std::fprintf(stderr, "ksctl notify: ksd is unreachable: %s\n", why.c_str());
    if (o_.daemon_notices)
      daemon_id_ = send("Killswitch daemon unreachable",
                        "ksd does not answer (" + why +
                            "). Protected apps stay blocked without their tunnel, but blocked "
                            "attempts are not reported until it is back.",
                        daemon_id_, 2);
  }

  void daemon_back() {
    if (!daemon_down_) return;
    daemon_down_ = false;
    std::fprintf(stderr, "ksctl notify: ksd answers again\n");
    if (o_.daemon_notices)
      daemon_id_ =
          send("Killswitch daemon is back", "Blocked attempts are reported again.", daemon_id_, 0);
  }

  // Events newer than this are new to us (the backlog a (re)connection brings is not
  // shown twice, nor what happened before ksctl notify started).
  std::int64_t last_time_us_ = realtime_us();

 private:
  const NotifyOptions& o_;
  ks::notify::SessionNotifier bus_;
  ks::notify::RateLimiter limiter_;
  std::map<std::string, nlohmann::json> last_event_;
  bool daemon_down_ = false;
  std::uint32_t daemon_id_ = 0;
};

ks::UniqueFd subscribe(const std::string& socket_path, Notifier& n) {
  ks::UniqueFd fd = ks::ipc::connect_to(socket_path);
  ks::ipc::send_message(fd.get(),
                        {{"op", "events"}, {"since", 0}, {"limit", 100}, {"follow", true}});
  nlohmann::json reply = ks::ipc::receive_message(fd.get(), 10000);
  if (!reply.value("ok", false))
    throw ks::Error("ksd refused the event stream: " + reply.value("error", std::string("?")));
  const std::int64_t seen = n.last_time_us_;
  for (const auto& e : reply["events"])
    if (e.value("time_us", std::int64_t{0}) > seen) n.on_event(e);
  return fd;
}

}  // namespace

int notify_command(const NotifyOptions& options) {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ks::UniqueFd signals(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals) {
    std::perror("ksctl notify: signalfd");
    return kFailed;
  }
  // A closed stream while writing is seen as EPIPE, not a signal that ends the process.
  ::signal(SIGPIPE, SIG_IGN);

  Notifier n(options);
  ks::UniqueFd ksd;
  std::int64_t backoff_ms = 500;
  std::int64_t reconnect_at = 0;
  std::int64_t connected_at = 0;
  for (;;) {
    if (!ksd && now_ms() >= reconnect_at) {
      try {
        ksd = subscribe(options.socket_path, n);
        connected_at = now_ms();
        n.daemon_back();
        backoff_ms = 500;
        std::fprintf(stderr, "ksctl notify: following ksd's events on %s\n",
                     options.socket_path.c_str());
      } catch (const ks::Error& e) {
        n.daemon_lost(e.what());
        reconnect_at = now_ms() + backoff_ms;
        // Doubling up to the limit: a ksd that is gone for good costs a connect per limit.
        backoff_ms =
            std::min<std::int64_t>(backoff_ms * 2, std::int64_t{options.max_backoff_s} * 1000);
      }
    }
    std::int64_t wake = ksd ? -1 : reconnect_at;
    std::int64_t flush_at = n.next_flush_ms();
    if (flush_at >= 0 && (wake < 0 || flush_at < wake)) wake = flush_at;
    int timeout =
        wake < 0 ? -1 : static_cast<int>(std::clamp<std::int64_t>(wake - now_ms(), 0, 60'000));

    pollfd fds[2] = {{signals.get(), POLLIN, 0}, {ksd ? ksd.get() : -1, POLLIN, 0}};
    int r = ::poll(fds, 2, timeout);
    if (r < 0 && errno != EINTR) {
      std::perror("ksctl notify: poll");
      return kFailed;
    }
    if (r > 0 && (fds[0].revents & POLLIN)) {
      signalfd_siginfo si{};
      (void)!::read(signals.get(), &si, sizeof si);
      std::fprintf(stderr, "ksctl notify: signal %u, exiting\n", si.ssi_signo);
      return kOk;
    }
    if (r > 0 && ksd && fds[1].revents) {
      try {
        nlohmann::json message = ks::ipc::receive_message(ksd.get(), 5000);
        if (message.contains("event")) n.on_event(message["event"]);
      } catch (const ks::Error& e) {
        ksd.reset();
        // ksd ends the stream of a follower that fell behind (a notification server that
        // was slow to answer) as well as when it stops: one reconnection at once tells the
        // two apart, and the events in between come with the new stream's backlog. A
        // stream that ends again within a second waits like a failed connect.
        std::fprintf(stderr, "ksctl notify: the event stream ended: %s\n", e.what());
        reconnect_at = now_ms() - connected_at >= 1000 ? now_ms() : now_ms() + backoff_ms;
      }
    }
    n.flush();
  }
}

}  // namespace ksctl
