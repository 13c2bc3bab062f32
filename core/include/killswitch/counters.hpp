// The counters ksd reports for the whole tree, a profile and an app, summed over CPUs.
#pragma once

#include <cstdint>

namespace ks {

struct Counters {
  std::uint64_t allowed_packets = 0, allowed_bytes = 0;
  std::uint64_t blocked_packets = 0, blocked_bytes = 0;
  std::uint64_t blocked_connects = 0;
  std::uint64_t events_dropped = 0;  // blocked attempts without an event (rate limit, ring full)
  std::uint64_t blocked() const { return blocked_packets + blocked_connects; }
  template <typename C>  // Counters, or the kernel's ks_counters (one CPU's share)
  Counters& operator+=(const C& c) {
    allowed_packets += c.allowed_packets;
    allowed_bytes += c.allowed_bytes;
    blocked_packets += c.blocked_packets;
    blocked_bytes += c.blocked_bytes;
    blocked_connects += c.blocked_connects;
    events_dropped += c.events_dropped;
    return *this;
  }
};

// The counters' fields as `ksctl status --json`, `list --json` and `events` show them
// (docs/interface.md), in that order: the one list of their names. visit(name, value).
template <typename Visit>
void for_each_counter(const Counters& c, Visit&& visit) {
  visit("allowed_packets", c.allowed_packets);
  visit("allowed_bytes", c.allowed_bytes);
  visit("blocked_packets", c.blocked_packets);
  visit("blocked_bytes", c.blocked_bytes);
  visit("blocked_connects", c.blocked_connects);
  visit("blocked", c.blocked());
  visit("events_dropped", c.events_dropped);
}

}  // namespace ks
