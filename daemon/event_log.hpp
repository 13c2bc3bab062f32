// Blocked-attempt events as ksd keeps and shows them: numbered from 1, the newest
// kKept of them answered to `ksctl events`, and a journal summary per app every few
// seconds instead of a line per attempt. What an event needs from the rest of ksd (which
// app a cgroup is, a profile's name, a command line, an app's blocked counter) comes
// through Context, so this part runs in unit tests without a kernel.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "killswitch_abi.h"

namespace ks {

class EventLog {
 public:
  static constexpr std::size_t kKept = 4096;
  static constexpr std::size_t kSummaryMaxApps = 10;  // journal lines per summary

  struct Context {
    // The app's cgroup, relative to the cgroup2 mount ("/killswitch.slice/..."), or a
    // text in parentheses when it is gone.
    std::function<std::string(std::uint64_t cgroup_id)> app_of;
    std::function<std::string(std::uint32_t profile_id)> profile_of;
    // What the app runs: the pid's command line, else one of its cgroup's processes'.
    std::function<std::string(std::uint32_t pid, const std::string& app)> command_of;
    // The app's blocked attempts counted by the kernel so far.
    std::function<std::uint64_t(std::uint64_t cgroup_id)> blocked_of;
  };

  explicit EventLog(Context context) : context_(std::move(context)) {}

  // Numbers the event, keeps it, notes it for the summary; its JSON text (for followers).
  // Rendered once: followers, queries and the summary all use what is kept.
  const std::string& record(const ks_event& event, std::int64_t realtime_us);

  // The newest `limit` events numbered `since` or later, oldest first, as a JSON array.
  std::string query(std::uint64_t since, std::size_t limit) const;
  std::uint64_t next_seq() const { return next_seq_; }

  // One journal line per app with events since the last call (at most kSummaryMaxApps,
  // then one line for the rest); `seconds` is how long that was. Empty when nothing
  // happened. Starts the next period.
  std::vector<std::string> take_summary(unsigned seconds);

 private:
  struct Kept {
    std::uint64_t seq = 0;
    std::string text;  // the event's JSON
  };
  // What the summary line says of an app's last event.
  struct Last {
    std::string who;  // the command, else the task name
    std::string app, profile, hook, destination, reason;
  };
  struct Summary {
    std::uint64_t events = 0;
    std::uint64_t blocked_before = 0;
    Last last;
  };

  Context context_;
  std::deque<Kept> recent_;
  std::uint64_t next_seq_ = 1;
  std::map<std::uint64_t, Summary> summary_;  // by cgroup id
};

}  // namespace ks
