// Desktop notifications of blocked attempts (`ksctl notify`): the texts, the rate limit per
// app, and the org.freedesktop.Notifications client on the session bus (sd-bus).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

struct sd_bus;

namespace ks::notify {

// The notification's texts for one blocked attempt (an event of `ksctl events --json`).
std::string app_name(const nlohmann::json& event);  // "qbittorrent" from its command
std::string summary(const nlohmann::json& event);   // "qbittorrent blocked: VPN tunnel down"
std::string body(const nlohmann::json& event);      // what, where, why, which profile
std::string short_reason(const std::string& reason);

// At most one notification per app per interval: the first attempt is shown at once, the
// ones after it are counted, and when the interval has passed one update says how many
// there were. Each app's notifications replace its previous one (replaces_id), so a flood
// is one notification on the screen, not a stack. Pure logic, times in milliseconds.
class RateLimiter {
 public:
  explicit RateLimiter(std::int64_t interval_ms) : interval_ms_(interval_ms) {}
  // True when the event for KEY at NOW is to be shown; false when it was counted instead.
  bool admit(const std::string& key, std::int64_t now_ms);
  struct Due {
    std::string key;
    std::uint64_t suppressed;
  };
  // The apps whose counted attempts are due for their summary now (counts reset, each
  // app's interval restarts).
  std::vector<Due> due(std::int64_t now_ms);
  // When the next due() has something; -1 when nothing is counted.
  std::int64_t next_due_ms() const;
  // The notification id of KEY's last notification (0: none), for replaces_id.
  std::uint32_t id_of(const std::string& key) const;
  void set_id(const std::string& key, std::uint32_t id);
  // Forgets apps idle for longer than IDLE_MS with nothing counted (bounded memory).
  void forget_idle(std::int64_t now_ms, std::int64_t idle_ms);
  std::size_t size() const { return apps_.size(); }
  bool knows(const std::string& key) const { return apps_.count(key) != 0; }

 private:
  struct App {
    std::int64_t last_shown_ms = 0;
    std::uint64_t suppressed = 0;
    std::uint32_t id = 0;
  };
  std::int64_t interval_ms_;
  std::map<std::string, App> apps_;
};

// A client of the session bus's notification server. Connects on first use and again
// after the bus failed; throws ks::Error when there is no bus or the server does not answer.
class SessionNotifier {
 public:
  SessionNotifier();
  ~SessionNotifier();
  SessionNotifier(const SessionNotifier&) = delete;
  SessionNotifier& operator=(const SessionNotifier&) = delete;
  // org.freedesktop.Notifications.Notify: returns the server's id of the notification.
  // URGENCY 0 low, 1 normal, 2 critical.
  std::uint32_t send(const std::string& summary, const std::string& body, std::uint32_t replaces_id,
                     std::uint8_t urgency = 1, std::int32_t expire_timeout_ms = -1);

 private:
  struct BusCloser {
    void operator()(sd_bus* bus) const;
  };
  std::unique_ptr<sd_bus, BusCloser> bus_;
};

}  // namespace ks::notify
