#include "killswitch/notifications.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "bus.hpp"
#include "killswitch/error.hpp"

namespace ks::notify {

std::string app_name(const nlohmann::json& event) {
  // The command's program, without its directory; the kernel's task name when ksd did not
  // know the command; the app's cgroup as the last resort.
  std::string command = event.value("command", std::string());
  std::string program = command.substr(0, command.find(' '));
  program = program.substr(program.find_last_of('/') + 1);
  if (!program.empty()) return program;
  std::string comm = event.value("comm", std::string());
  if (!comm.empty()) return comm;
  std::string app = event.value("app", std::string());
  app = app.substr(app.find_last_of('/') + 1);
  return app.empty() ? "an app" : app;
}

std::string short_reason(const std::string& reason) {
  if (reason == "no_tunnel") return "VPN tunnel down";
  if (reason == "not_tunnel") return "not through the VPN tunnel";
  if (reason == "dns") return "DNS outside the VPN";
  if (reason == "local_resolver") return "local DNS resolver outside the VPN";
  if (reason == "no_profile") return "no valid profile";
  if (reason == "wrong_netns") return "other network namespace";
  if (reason == "source_route") return "source-routed packet";
  if (reason == "join_unnamed") return "unnamed socket";
  return reason.empty() ? "blocked" : reason;
}

std::string summary(const nlohmann::json& event) {
  return app_name(event) + " blocked: " + short_reason(event.value("reason", std::string()));
}

std::string body(const nlohmann::json& event) {
  std::string what = event.value("protocol", std::string());
  std::string dst = event.value("destination", std::string());
  if (!dst.empty()) what += (what.empty() ? "" : " to ") + dst;
  std::string out = what.empty() ? "A connection" : what;
  std::string why = event.value("reason_text", std::string());
  if (!why.empty()) out += ": " + why;
  std::string profile = event.value("profile", std::string());
  if (!profile.empty()) out += " (profile " + profile + ")";
  return out;
}

bool RateLimiter::admit(const std::string& key, std::int64_t now_ms) {
  auto [it, fresh] = apps_.try_emplace(key);
  App& a = it->second;
  if (fresh || now_ms - a.last_shown_ms >= interval_ms_) {
    a.last_shown_ms = now_ms;
    return true;
  }
  ++a.suppressed;
  return false;
}

std::vector<RateLimiter::Due> RateLimiter::due(std::int64_t now_ms) {
  std::vector<Due> out;
  for (auto& [key, a] : apps_) {
    if (a.suppressed == 0 || now_ms - a.last_shown_ms < interval_ms_) continue;
    out.push_back({key, a.suppressed});
    a.suppressed = 0;
    a.last_shown_ms = now_ms;
  }
  return out;
}

std::int64_t RateLimiter::next_due_ms() const {
  std::int64_t next = -1;
  for (const auto& [key, a] : apps_)
    if (a.suppressed && (next < 0 || a.last_shown_ms + interval_ms_ < next))
      next = a.last_shown_ms + interval_ms_;
  return next;
}

std::uint32_t RateLimiter::id_of(const std::string& key) const {
  auto it = apps_.find(key);
  return it == apps_.end() ? 0 : it->second.id;
}

void RateLimiter::set_id(const std::string& key, std::uint32_t id) { apps_[key].id = id; }

void RateLimiter::forget_idle(std::int64_t now_ms, std::int64_t idle_ms) {
  std::erase_if(apps_, [&](const auto& kv) {
    return kv.second.suppressed == 0 && now_ms - kv.second.last_shown_ms > idle_ms;
  });
}

void SessionNotifier::BusCloser::operator()(sd_bus* bus) const { sd_bus_flush_close_unref(bus); }

SessionNotifier::SessionNotifier() = default;
SessionNotifier::~SessionNotifier() = default;

std::uint32_t SessionNotifier::send(const std::string& summary_text, const std::string& body_text,
                                    std::uint32_t replaces_id, std::uint8_t urgency,
                                    std::int32_t expire_timeout_ms) {
  namespace b = ks::systemd::bus;
  if (!bus_) {
    sd_bus* raw = nullptr;
    int r = sd_bus_open_user(&raw);
    if (r < 0)
      throw Error("cannot connect to the session bus: " + std::string(std::strerror(-r)), -r);
    bus_.reset(raw);
  }
  sd_bus_message* raw_call = nullptr;
  int r = sd_bus_message_new_method_call(bus_.get(), &raw_call, "org.freedesktop.Notifications",
                                         "/org/freedesktop/Notifications",
                                         "org.freedesktop.Notifications", "Notify");
  b::Message call(raw_call);
  if (r >= 0)
    r = sd_bus_message_append(call.get(), "susssas", "Killswitch", replaces_id, "network-vpn",
                              summary_text.c_str(), body_text.c_str(), 0);
  // Hints: the urgency, and the category of the specification for network errors.
  if (r >= 0)
    r = sd_bus_message_append(call.get(), "a{sv}", 2, "urgency", "y", urgency, "category", "s",
                              "network.error");
  if (r >= 0) r = sd_bus_message_append(call.get(), "i", expire_timeout_ms);
  if (r < 0) throw Error("cannot build the Notify call: " + std::string(std::strerror(-r)), -r);
  b::BusError error;
  sd_bus_message* raw_reply = nullptr;
  // A server that hangs must not stall the event stream for long: 5 s, not sd-bus's 25.
  r = sd_bus_call(bus_.get(), call.get(), 5'000'000, &error.e, &raw_reply);
  b::Message reply(raw_reply);
  if (r < 0) {
    std::string text = error.text(r);
    // A broken connection is opened again next time; an error reply leaves it as it is.
    if (!sd_bus_is_open(bus_.get())) bus_.reset();
    throw Error("Notify failed: " + text, -r);
  }
  std::uint32_t id = 0;
  r = sd_bus_message_read(reply.get(), "u", &id);
  if (r < 0) throw Error("Notify: an unexpected reply: " + std::string(std::strerror(-r)), -r);
  // Nothing else is asked for, but whatever the bus sent us (NameAcquired) is read and
  // dropped so that it does not pile up.
  while (sd_bus_process(bus_.get(), nullptr) > 0) {
  }
  return id;
}

}  // namespace ks::notify
