#include "event_log.hpp"

#include <algorithm>
#include <cstring>

#include "killswitch/events.hpp"
#include "killswitch/json_text.hpp"

namespace ks {

const std::string& EventLog::record(const ks_event& event, std::int64_t realtime_us) {
  EventApp app;
  app.app = context_.app_of(event.cgroup_id);
  app.profile = context_.profile_of(event.profile_id);
  app.command = context_.command_of(event.pid, app.app).substr(0, 200);
  const std::uint64_t seq = next_seq_++;
  recent_.push_back(Kept{seq, event_text(event, seq, realtime_us, app)});
  if (recent_.size() > kKept) recent_.pop_front();

  Summary& s = summary_[event.cgroup_id];
  if (s.events++ == 0) {
    // The kernel counted this attempt already: the period starts just before it.
    const std::uint64_t blocked = context_.blocked_of(event.cgroup_id);
    s.blocked_before = blocked > 0 ? blocked - 1 : 0;
  }
  s.last.who = !app.command.empty()
                   ? app.command
                   : std::string(event.comm, strnlen(event.comm, sizeof(event.comm)));
  s.last.app = std::move(app.app);
  s.last.profile = std::move(app.profile);
  s.last.hook = hook_name(event.hook);
  s.last.destination = event_destination(event);
  s.last.reason = reason_name(event.reason);
  return recent_.back().text;
}

std::string EventLog::query(std::uint64_t since, std::size_t limit) const {
  // Kept in order of seq: the matching ones are the tail from the first >= since.
  auto first = std::find_if(recent_.begin(), recent_.end(),
                            [since](const Kept& k) { return k.seq >= since; });
  const auto matching = static_cast<std::size_t>(recent_.end() - first);
  if (matching > limit) first += static_cast<std::ptrdiff_t>(matching - limit);
  std::string out;
  JsonText j(out);
  j.begin_array();
  for (auto it = first; it != recent_.end(); ++it) j.raw(it->text);
  j.end_array();
  return out;
}

std::vector<std::string> EventLog::take_summary(unsigned seconds) {
  std::vector<std::string> lines;
  std::size_t shown = 0;
  for (const auto& [cgroup, s] : summary_) {
    if (++shown > kSummaryMaxApps) break;
    // The kernel's count, which includes attempts the rate limit kept out of the events.
    const std::uint64_t now = context_.blocked_of(cgroup);
    const Last& e = s.last;
    lines.push_back(
        "blocked " + std::to_string(now > s.blocked_before ? now - s.blocked_before : s.events) +
        " attempt(s) of " + (e.who.empty() ? std::string("an app") : e.who.substr(0, 80)) + " (" +
        e.app + ", profile " + e.profile + ") in the last " + std::to_string(seconds) +
        " s; last: " + e.hook + (e.destination.empty() ? "" : " to " + e.destination) + " (" +
        e.reason + ")");
  }
  if (summary_.size() > kSummaryMaxApps)
    lines.push_back("... and " + std::to_string(summary_.size() - kSummaryMaxApps) +
                    " more app(s) with blocked attempts; see ksctl events");
  summary_.clear();
  return lines;
}

}  // namespace ks
