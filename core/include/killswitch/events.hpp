// Blocked-attempt events: reading them from the BPF ring buffer (ks_events) and turning
// them into the JSON that `ksctl events` shows. The decoding is pure (unit-tested); the
// reader owns the libbpf ring buffer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "killswitch_abi.h"

struct ring_buffer;

namespace ks {

// "no_tunnel", "not_tunnel", ...: the names events and counters use for enum ks_reason.
const char* reason_name(std::uint8_t reason);
// What the reason means, for people.
const char* reason_text(std::uint8_t reason);
// "connect4", "sendmsg6", "connect_unix", "egress", "ingress".
const char* hook_name(std::uint8_t hook);
// "tcp", "udp", "icmp", "icmpv6", or the number.
std::string protocol_name(std::uint8_t protocol);
// The remote end: "203.0.113.10:443", "[2001:db8::1]:53", "203.0.113.10" (no port),
// "" for unix sockets.
std::string event_destination(const ks_event& event);

// CLOCK_BOOTTIME nanoseconds (bpf_ktime_get_boot_ns) to wall-clock microseconds, by the
// clocks' offset now.
std::int64_t boottime_to_realtime_us(std::uint64_t boot_ns);
// "2026-11-26T05:16:03.123456Z"
std::string format_utc(std::int64_t realtime_us);
// "2026-11-26 06:16:03.123" in the local time zone, for people.
std::string format_local(std::int64_t realtime_us);

// What ksd knows about an event's app that the kernel does not put in the event.
struct EventApp {
  std::string app;      // the cgroup, "/killswitch.slice/..."
  std::string profile;  // the profile's name
  std::string command;  // the command line, at most 200 bytes of it
};

// The event as JSON text: seq, time, time_us, cgroup_id, pid, comm, profile_id, hook,
// reason, reason_text, protocol, family, address, port, destination, ifindex, bytes, app,
// profile, command (docs/interface.md).
std::string event_text(const ks_event& event, std::uint64_t seq, std::int64_t realtime_us,
                       const EventApp& app);

// Consumes the ring buffer; `on_event` runs for every record.
class EventReader {
 public:
  using Callback = std::function<void(const ks_event&)>;
  // Throws ks::Error when the ring buffer cannot be opened.
  EventReader(int ring_map_fd, Callback on_event);
  ~EventReader();
  EventReader(const EventReader&) = delete;
  EventReader& operator=(const EventReader&) = delete;

  int fd() const;  // epoll fd of the ring buffer: readable when records are waiting
  // Reads everything that is there now; returns the number of records. Throws ks::Error
  // when the ring cannot be read, or after reading it when the callback threw for some
  // records (those are consumed all the same: one bad record must not stop the stream).
  int consume();

 private:
  static int on_record(void* self, void* data, std::size_t size);
  Callback on_event_;
  // The callback's failures during one consume(): an exception must not unwind through
  // libbpf's C frames (it would also leave the record unconsumed, to fail again forever).
  int failed_ = 0;
  std::string first_failure_;
  ring_buffer* ring_ = nullptr;
};

}  // namespace ks
