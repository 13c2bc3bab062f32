#include "event_log.hpp"

#include "killswitch/events.hpp"

namespace ks {

nlohmann::json EventLog::record(const ks_event& event, std::int64_t realtime_us) {
  nlohmann::json j = event_json(event, next_seq_++, realtime_us);
  const std::string app = context_.app_of(event.cgroup_id);
  j["app"] = app;
  j["profile"] = context_.profile_of(event.profile_id);
  j["command"] = context_.command_of(event.pid, app).substr(0, 200);

  recent_.push_back(j);
  if (recent_.size() > kKept) recent_.pop_front();

  Summary& s = summary_[event.cgroup_id];
  if (s.events++ == 0) {
    // The kernel counted this attempt already: the period starts just before it.
    const std::uint64_t blocked = context_.blocked_of(event.cgroup_id);
    s.blocked_before = blocked > 0 ? blocked - 1 : 0;
  }
  s.last = j;
  return j;
}

nlohmann::json EventLog::query(std::uint64_t since, std::size_t limit) const {
  std::size_t matching = 0;
  for (const auto& e : recent_)
    if (e["seq"].get<std::uint64_t>() >= since) ++matching;
  const std::size_t skip = matching > limit ? matching - limit : 0;
  nlohmann::json events = nlohmann::json::array();
  std::size_t seen = 0;
  for (const auto& e : recent_) {
    if (e["seq"].get<std::uint64_t>() < since) continue;
    if (seen++ < skip) continue;
    events.push_back(e);
  }
  return events;
}

std::vector<std::string> EventLog::take_summary(unsigned seconds) {
  std::vector<std::string> lines;
  std::size_t shown = 0;
  for (const auto& [cgroup, s] : summary_) {
    if (++shown > kSummaryMaxApps) break;
    // The kernel's count, which includes attempts the rate limit kept out of the events.
    const std::uint64_t now = context_.blocked_of(cgroup);
    const nlohmann::json& e = s.last;
    std::string who = e.value("command", std::string());
    if (who.empty()) who = e.value("comm", std::string());
    const std::string destination = e.value("destination", std::string());
    lines.push_back(
        "blocked " + std::to_string(now > s.blocked_before ? now - s.blocked_before : s.events) +
        " attempt(s) of " + (who.empty() ? std::string("an app") : who.substr(0, 80)) + " (" +
        e.value("app", std::string()) + ", profile " + e.value("profile", std::string()) +
        ") in the last " + std::to_string(seconds) + " s; last: " + e.value("hook", std::string()) +
        (destination.empty() ? "" : " to " + destination) + " (" +
        e.value("reason", std::string()) + ")");
  }
  if (summary_.size() > kSummaryMaxApps)
    lines.push_back("... and " + std::to_string(summary_.size() - kSummaryMaxApps) +
                    " more app(s) with blocked attempts; see ksctl events");
  summary_.clear();
  return lines;
}

}  // namespace ks
