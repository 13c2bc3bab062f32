#include "killswitch/events.hpp"

#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "killswitch/error.hpp"
#include "killswitch/json_text.hpp"

namespace ks {

const char* reason_name(std::uint8_t reason) {
  switch (reason) {
    case KS_REASON_ALLOW_TUNNEL:
      return "allow_tunnel";
    case KS_REASON_ALLOW_LOOPBACK:
      return "allow_loopback";
    case KS_REASON_ALLOW_LAN:
      return "allow_lan";
    case KS_REASON_BLOCK_NOT_TUNNEL:
      return "not_tunnel";
    case KS_REASON_BLOCK_NO_TUNNEL:
      return "no_tunnel";
    case KS_REASON_BLOCK_NO_PROFILE:
      return "no_profile";
    case KS_REASON_BLOCK_WRONG_NETNS:
      return "wrong_netns";
    case KS_REASON_BLOCK_CANARY:
      return "canary";
    case KS_REASON_BLOCK_DNS:
      return "dns";
    case KS_REASON_BLOCK_LOCAL_RESOLVER:
      return "local_resolver";
    case KS_REASON_BLOCK_JOIN_UNNAMED:
      return "join_unnamed";
    case KS_REASON_BLOCK_SOURCE_ROUTE:
      return "source_route";
  }
  return "unknown";
}

const char* reason_text(std::uint8_t reason) {
  switch (reason) {
    case KS_REASON_BLOCK_NOT_TUNNEL:
      return "would have left through a non-tunnel interface";
    case KS_REASON_BLOCK_NO_TUNNEL:
      return "no tunnel of the profile is up for this address family";
    case KS_REASON_BLOCK_NO_PROFILE:
      return "the socket has no (valid) profile";
    case KS_REASON_BLOCK_WRONG_NETNS:
      return "the socket lives in another network namespace";
    case KS_REASON_BLOCK_CANARY:
      return "ksrun's protection proof";
    case KS_REASON_BLOCK_DNS:
      return "DNS, and the profile has no resolver for it";
    case KS_REASON_BLOCK_LOCAL_RESOLVER:
      return "name lookup through a local resolving service (resolved, nscd)";
    case KS_REASON_BLOCK_JOIN_UNNAMED:
      return "a multicast join that names no interface by index (the kernel would pick the "
             "physical one)";
    case KS_REASON_BLOCK_SOURCE_ROUTE:
      return "off the tunnel with IP options or IPv6 extension headers that can source-route "
             "it";
    default:
      return "allowed";
  }
}

const char* hook_name(std::uint8_t hook) {
  switch (hook) {
    case KS_EV_CONNECT4:
      return "connect4";
    case KS_EV_CONNECT6:
      return "connect6";
    case KS_EV_SENDMSG4:
      return "sendmsg4";
    case KS_EV_SENDMSG6:
      return "sendmsg6";
    case KS_EV_CONNECT_UNIX:
      return "connect_unix";
    case KS_EV_EGRESS:
      return "egress";
    case KS_EV_INGRESS:
      return "ingress";
    case KS_EV_MCAST_JOIN:
      return "mcast_join";
  }
  return "unknown";
}

std::string protocol_name(std::uint8_t protocol) {
  switch (protocol) {
    case IPPROTO_TCP:
      return "tcp";
    case IPPROTO_UDP:
      return "udp";
    case IPPROTO_ICMP:
      return "icmp";
    case IPPROTO_ICMPV6:
      return "icmpv6";
    case 0:
      return "";
  }
  return std::to_string(protocol);
}

namespace {
std::string address_text(const ks_event& e) {
  char buf[INET6_ADDRSTRLEN] = {};
  static constexpr std::uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(e.addr, kMappedPrefix, sizeof(kMappedPrefix)) == 0)
    ::inet_ntop(AF_INET, e.addr + 12, buf, sizeof(buf));
  else
    ::inet_ntop(AF_INET6, e.addr, buf, sizeof(buf));
  return buf;
}
}  // namespace

std::string event_destination(const ks_event& e) {
  if (e.family == 0) return "";
  std::string addr = address_text(e);
  if (e.port == 0) return addr;
  if (addr.find(':') != std::string::npos) return "[" + addr + "]:" + std::to_string(e.port);
  return addr + ":" + std::to_string(e.port);
}

std::int64_t boottime_to_realtime_us(std::uint64_t boot_ns) {
  timespec boot{}, real{};
  ::clock_gettime(CLOCK_BOOTTIME, &boot);
  ::clock_gettime(CLOCK_REALTIME, &real);
  const std::int64_t boot_now = boot.tv_sec * 1000000000LL + boot.tv_nsec;
  const std::int64_t real_now = real.tv_sec * 1000000000LL + real.tv_nsec;
  return (real_now - (boot_now - static_cast<std::int64_t>(boot_ns))) / 1000;
}

namespace {
// "YYYY-MM-DD<sep>HH:MM:SS.<fraction>" with `digits` (3 or 6) fractional digits.
std::string format_time(std::int64_t realtime_us, bool utc, char separator, int digits) {
  std::time_t secs = static_cast<std::time_t>(realtime_us / 1000000);
  std::tm tm{};
  if (utc)
    ::gmtime_r(&secs, &tm);
  else
    ::localtime_r(&secs, &tm);
  char date[64];
  const char* format = separator == 'T' ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M:%S";
  std::strftime(date, sizeof(date), format, &tm);
  long long fraction = realtime_us % 1000000;
  if (digits == 3) fraction /= 1000;
  char out[96];
  std::snprintf(out, sizeof(out), "%s.%0*lld%s", date, digits, fraction, utc ? "Z" : "");
  return out;
}
}  // namespace

std::string format_utc(std::int64_t realtime_us) { return format_time(realtime_us, true, 'T', 6); }

std::string format_local(std::int64_t realtime_us) {
  return format_time(realtime_us, false, ' ', 3);
}

std::string event_text(const ks_event& e, std::uint64_t seq, std::int64_t realtime_us,
                       const EventApp& app) {
  std::string out;
  JsonText j(out);
  j.begin_object().member("seq", seq).member("time", format_utc(realtime_us));
  j.member("time_us", realtime_us).member("cgroup_id", std::uint64_t{e.cgroup_id});
  j.member("pid", std::uint32_t{e.pid});
  j.member("comm", std::string_view(e.comm, strnlen(e.comm, sizeof(e.comm))));
  j.member("profile_id", std::uint32_t{e.profile_id}).member("hook", hook_name(e.hook));
  j.member("reason", reason_name(e.reason)).member("reason_text", reason_text(e.reason));
  j.member("protocol", protocol_name(e.protocol)).member("family", std::uint32_t{e.family});
  j.member("address", e.family ? address_text(e) : std::string());
  j.member("port", std::uint32_t{e.port}).member("destination", event_destination(e));
  j.member("ifindex", std::uint32_t{e.ifindex}).member("bytes", std::uint64_t{e.bytes});
  j.member("app", app.app).member("profile", app.profile).member("command", app.command);
  j.end_object();
  return out;
}

EventReader::EventReader(int ring_map_fd, Callback on_event) : on_event_(std::move(on_event)) {
  ring_ = ring_buffer__new(ring_map_fd, &EventReader::on_record, this, nullptr);
  if (!ring_) throw_errno("cannot open the events ring buffer");
}

EventReader::~EventReader() { ring_buffer__free(ring_); }

int EventReader::fd() const { return ring_buffer__epoll_fd(ring_); }

int EventReader::consume() {
  failed_ = 0;
  first_failure_.clear();
  int n = ring_buffer__consume(ring_);
  if (n < 0) throw Error("cannot read the events ring buffer: " + std::string(std::strerror(-n)));
  if (failed_ > 0)
    throw Error("could not handle " + std::to_string(failed_) + " of " + std::to_string(n) +
                " event(s): " + first_failure_);
  return n;
}

int EventReader::on_record(void* self, void* data, std::size_t size) {
  if (size < sizeof(ks_event)) return 0;  // not ours; skip it
  ks_event event;
  std::memcpy(&event, data, sizeof(event));
  auto* reader = static_cast<EventReader*>(self);
  try {
    reader->on_event_(event);
  } catch (const std::exception& e) {
    if (reader->failed_++ == 0) reader->first_failure_ = e.what();
  }
  return 0;
}

}  // namespace ks
