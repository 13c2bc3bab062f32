// LinkWatcher over a raw NETLINK_ROUTE socket.
//
// Consistency design. Two sockets, both opened in the constructor so that both belong to
// the network namespace of the constructing thread (a later resync() from a thread in
// another namespace must still dump *this* namespace):
//
//   sock_       subscribed to RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR. It only
//               ever receives notifications; we never send on it, so no dump reply can be
//               interleaved with the notifications.
//   dump_sock_  never subscribed. Carries RTM_GETLINK / RTM_GETADDR dumps and their replies.
//
// Every piece of state we keep is keyed (a link by ifindex, an address by ifindex plus its
// identity), and every notification carries the complete new value of its key (RTM_NEWLINK
// has the full ifinfomsg and name, RTM_NEWADDR/RTM_DELADDR the whole address) or deletes it.
// So "last writer per key wins": applying, in order, a gapless run of notifications that
// starts before a snapshot was taken yields the exact current state, no matter how stale
// or inconsistent across keys the snapshot is (a dump is not atomic; NLM_F_DUMP_INTR is
// therefore harmless here and ignored). A key with no later notification has not changed
// since before the snapshot; a key with one ends at the newest value. resync() thus:
//
//   1. discards everything queued on sock_ (those events precede the snapshot, and after an
//      overrun the queue has a hole, so replaying it on top of the snapshot could resurrect
//      a stale value; everything that arrives from here on is gapless unless the kernel
//      reports another ENOBUFS);
//   2. dumps links, then addresses, over dump_sock_ into fresh maps;
//   3. replays what queued up on sock_ meanwhile. Another overrun starts over.
//
// Overrun detection: ENOBUFS from recvmsg (the kernel dropped a notification because our
// receive buffer was full), NLMSG_OVERRUN, a datagram cut short (MSG_TRUNC) or a malformed
// one all mean a notification was lost, and all lead to the same full resync.
#include "killswitch/links.hpp"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "killswitch/error.hpp"

namespace ks {

namespace {

// Big enough for any datagram the kernel builds: dump skbs are capped at 32 KiB and a
// single notification is far smaller. Anything larger shows up as MSG_TRUNC.
constexpr std::size_t kRecvBufferSize = 64 * 1024;

// Notification bursts (a VPN client re-creating its tunnel, a container host starting many
// veths) should not each cost a full resync, so ask for more than rmem_default.
constexpr int kEventRecvBuffer = 1024 * 1024;

// A dump that does not finish within this time means something is badly wrong; give up
// rather than block the daemon's event loop forever.
constexpr auto kDumpTimeout = std::chrono::seconds(5);

constexpr std::size_t align4(std::size_t len) { return (len + 3) & ~std::size_t{3}; }

// The fixed headers are copied out rather than dereferenced in place: the buffer is only
// 4-byte aligned per netlink framing, and memcpy keeps the parsing free of aliasing games.
template <typename T>
T load(const char* p) {
  T value;
  std::memcpy(&value, p, sizeof value);
  return value;
}

struct Message {
  nlmsghdr hdr;
  const char* payload;  // hdr.nlmsg_len - sizeof(nlmsghdr) bytes
  std::size_t payload_len;
};

// Calls fn(const Message&) for every message in a datagram. Returns false when the framing
// is broken, in which case the rest of the datagram is lost.
template <typename Fn>
bool for_each_message(const char* buf, std::size_t len, Fn&& fn) {
  std::size_t off = 0;
  while (len - off >= sizeof(nlmsghdr)) {
    const auto hdr = load<nlmsghdr>(buf + off);
    if (hdr.nlmsg_len < sizeof(nlmsghdr) || hdr.nlmsg_len > len - off) return false;
    fn(Message{hdr, buf + off + NLMSG_HDRLEN, hdr.nlmsg_len - NLMSG_HDRLEN});
    off += align4(hdr.nlmsg_len);
    if (off >= len) break;
  }
  return true;
}

// Calls fn(type, data, data_len) for every attribute in [p, p + len).
template <typename Fn>
void for_each_attr(const char* p, std::size_t len, Fn&& fn) {
  std::size_t off = 0;
  while (len - off >= sizeof(rtattr)) {
    const auto attr = load<rtattr>(p + off);
    if (attr.rta_len < sizeof(rtattr) || attr.rta_len > len - off) return;
    fn(static_cast<unsigned>(attr.rta_type & NLA_TYPE_MASK), p + off + RTA_LENGTH(0),
       attr.rta_len - RTA_LENGTH(0));
    off += align4(attr.rta_len);
    if (off >= len) break;
  }
}

UniqueFd open_route_socket(int extra_flags, const char* what) {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | extra_flags, NETLINK_ROUTE));
  if (!fd) throw_errno(std::string("rtnetlink ") + what + " socket");
  return fd;
}

struct Received {
  ssize_t len;  // < 0: failed, errno is set
  int flags;    // msg_flags
  std::uint32_t sender;
};

Received receive(int fd, std::vector<char>& buf) {
  sockaddr_nl sender{};
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_name = &sender;
  msg.msg_namelen = sizeof sender;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  const ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT);
  return {n, msg.msg_flags, sender.nl_pid};
}

// Drops whatever is queued on fd. On a dump socket this also runs an abandoned dump to its
// end, since the kernel refills the queue on every read until the dump is done.
void discard_queue(int fd) {
  for (;;) {
    // A zero-length read consumes (and drops) one whole datagram.
    if (::recv(fd, nullptr, 0, MSG_DONTWAIT | MSG_TRUNC) >= 0) continue;
    if (errno == EINTR || errno == ENOBUFS) continue;  // ENOBUFS: a drop we do not care about
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    throw_errno("draining rtnetlink socket");
  }
}

void refresh_address_flags(LinkState& link, const std::map<std::string, unsigned char>* addrs) {
  link.has_ipv4 = false;
  link.has_ipv6 = false;
  link.addresses.clear();
  if (addrs == nullptr) return;
  for (const auto& [key, scope] : *addrs) {
    // Key: family, prefix length, IFA_LOCAL length, IFA_LOCAL, IFA_ADDRESS (see apply()).
    const int family = static_cast<unsigned char>(key[0]);
    // Link-local and host-scope IPv6 (fe80::/10, ::1) cannot carry tunnel traffic.
    if (family == AF_INET6 && scope != RT_SCOPE_UNIVERSE) continue;
    if (family == AF_INET) link.has_ipv4 = true;
    if (family == AF_INET6) link.has_ipv6 = true;
    const std::size_t want = family == AF_INET ? 4 : 16;
    const auto local_len = static_cast<unsigned char>(key[2]);
    // IFA_LOCAL where there is one (IPv4; the other end of a point-to-point link is in
    // IFA_ADDRESS), else IFA_ADDRESS (IPv6).
    const std::size_t at = local_len == want ? 3 : 3 + local_len;
    if (key.size() < at + want) continue;
    LinkAddress a;
    a.family = family;
    std::memcpy(a.bytes.data(), key.data() + at, want);
    link.addresses.push_back(a);
  }
  std::sort(link.addresses.begin(), link.addresses.end());
}

}  // namespace

bool LinkState::usable() const { return (flags & IFF_UP) != 0 && (flags & IFF_RUNNING) != 0; }

LinkWatcher::LinkWatcher()
    : sock_(open_route_socket(SOCK_NONBLOCK, "event")),
      dump_sock_(open_route_socket(SOCK_NONBLOCK, "dump")) {
  // SO_RCVBUFFORCE needs CAP_NET_ADMIN, which ksd has; without it the default buffer only
  // means more resyncs, never wrong state, so failure is fine.
  const int size = kEventRecvBuffer;
  (void)::setsockopt(sock_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);

  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
  // Subscribing before the first dump is what makes the dump + replay scheme complete.
  if (::bind(sock_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    throw_errno("binding rtnetlink event socket");
  }
  addr.nl_groups = 0;
  if (::bind(dump_sock_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    throw_errno("binding rtnetlink dump socket");
  }
  resync();
  resyncs_ = 0;  // the initial dump is not a re-dump
}

bool LinkWatcher::process() {
  const auto before = links_;
  // A resync that threw left the state stale and the event queue partly discarded.
  if (stale_ || drain_events() == Drain::kOverrun) resync();
  // Comparing the visible state, not counting messages: the kernel sends RTM_NEWLINK for
  // many things we do not track (MTU, statistics, bridge ports), which are no change here.
  return links_ != before;
}

void LinkWatcher::resync() {
  stale_ = true;
  for (;;) {
    discard_queue(sock_.get());
    std::map<std::uint32_t, LinkState> links;
    std::map<std::uint32_t, AddressMap> addrs;
    // Links first, so that the address replies find their link and set its flags.
    dump(RTM_GETLINK, links, addrs);
    dump(RTM_GETADDR, links, addrs);
    links_.swap(links);
    addrs_.swap(addrs);
    stale_ = false;
    ++resyncs_;
    // Under an event storm faster than a dump this loops until the storm ends; returning
    // earlier would leave wrong state with possibly nothing left to wake the caller.
    if (drain_events() == Drain::kEmpty) return;
    stale_ = true;
  }
}

std::optional<LinkState> LinkWatcher::find(std::string_view name) const {
  for (const auto& [index, link] : links_) {
    if (link.name == name) return link;
  }
  return std::nullopt;
}

LinkWatcher::Drain LinkWatcher::drain_events() {
  std::vector<char> buf(kRecvBufferSize);
  for (;;) {
    const Received r = receive(sock_.get(), buf);
    if (r.len < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Drain::kEmpty;
      if (errno == ENOBUFS) return Drain::kOverrun;
      throw_errno("reading rtnetlink events");
    }
    if ((r.flags & MSG_TRUNC) != 0) return Drain::kOverrun;
    // Only the kernel may speak for the kernel (nl_pid 0); others need CAP_NET_ADMIN to
    // unicast to us at all, but there is no reason to believe them.
    if (r.sender != 0) continue;
    bool lost = false;
    const bool framed =
        for_each_message(buf.data(), static_cast<std::size_t>(r.len), [&](const Message& m) {
          switch (m.hdr.nlmsg_type) {
            case NLMSG_OVERRUN:
              lost = true;
              break;
            case NLMSG_NOOP:
            case NLMSG_DONE:
            case NLMSG_ERROR:
              // Replies to requests; we never send a request on this socket, so they
              // cannot concern us.
              break;
            default:
              apply(m.payload, m.payload_len, m.hdr.nlmsg_type, links_, addrs_);
          }
        });
    if (!framed || lost) return Drain::kOverrun;
  }
}

void LinkWatcher::dump(std::uint16_t type, std::map<std::uint32_t, LinkState>& links,
                       std::map<std::uint32_t, AddressMap>& addrs) {
  const int fd = dump_sock_.get();
  // An earlier dump abandoned by an exception would make the kernel answer EBUSY.
  discard_queue(fd);

  // ifinfomsg is the larger of the two request headers and starts with the family byte,
  // like ifaddrmsg; AF_UNSPEC asks for everything.
  struct {
    nlmsghdr hdr;
    ifinfomsg body;
  } req{};
  const std::size_t body_len = type == RTM_GETLINK ? sizeof(ifinfomsg) : sizeof(ifaddrmsg);
  req.hdr.nlmsg_len = static_cast<std::uint32_t>(NLMSG_LENGTH(body_len));
  req.hdr.nlmsg_type = type;
  req.hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.hdr.nlmsg_seq = ++seq_;
  req.body.ifi_family = AF_UNSPEC;
  const char* what = type == RTM_GETLINK ? "rtnetlink link dump" : "rtnetlink address dump";

  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  for (;;) {
    if (::sendto(fd, &req, req.hdr.nlmsg_len, 0, reinterpret_cast<const sockaddr*>(&kernel),
                 sizeof kernel) >= 0) {
      break;
    }
    if (errno != EINTR) throw_errno(std::string("sending ") + what);
  }

  const auto deadline = std::chrono::steady_clock::now() + kDumpTimeout;
  std::vector<char> buf(kRecvBufferSize);
  bool done = false;
  while (!done) {
    const Received r = receive(fd, buf);
    if (r.len < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) throw_errno(std::string("reading ") + what);
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) throw Error(std::string(what) + ": no answer from the kernel");
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left.count()) + 1) < 0 && errno != EINTR) {
        throw_errno(std::string("waiting for ") + what);
      }
      continue;
    }
    // A lost part of a dump cannot be re-requested; the caller has to start over.
    if ((r.flags & MSG_TRUNC) != 0) throw Error(std::string(what) + ": reply truncated");
    if (r.sender != 0) continue;
    const bool framed =
        for_each_message(buf.data(), static_cast<std::size_t>(r.len), [&](const Message& m) {
          // Stale parts of an earlier dump (different sequence number) are skipped.
          if (done || m.hdr.nlmsg_seq != req.hdr.nlmsg_seq) return;
          switch (m.hdr.nlmsg_type) {
            case NLMSG_NOOP:
              break;
            case NLMSG_DONE:
              // Since Linux 4.x NLMSG_DONE may carry the dump's negative errno.
              if (m.payload_len >= sizeof(int)) {
                const int err = load<int>(m.payload);
                if (err < 0) throw_errno(what, -err);
              }
              done = true;
              break;
            case NLMSG_ERROR: {
              if (m.payload_len < sizeof(nlmsgerr)) throw Error(std::string(what) + ": bad error");
              const auto err = load<nlmsgerr>(m.payload);
              if (err.error != 0) throw_errno(what, -err.error);
              done = true;  // a plain ACK; not requested, but it ends the exchange too
              break;
            }
            case NLMSG_OVERRUN:
              throw Error(std::string(what) + ": overrun");
            default:
              // Only the multipart replies of this dump reach here. NLM_F_DUMP_INTR is
              // ignored on purpose; see the comment at the top of the file.
              apply(m.payload, m.payload_len, m.hdr.nlmsg_type, links, addrs);
          }
        });
    if (!framed) throw Error(std::string(what) + ": malformed reply");
  }
}

bool LinkWatcher::apply_datagram(const char* buf, std::size_t len,
                                 std::map<std::uint32_t, LinkState>& links) {
  std::map<std::uint32_t, AddressMap> addrs;
  return for_each_message(buf, len, [&](const Message& m) {
    if (m.hdr.nlmsg_type >= NLMSG_MIN_TYPE)  // what drain_events() passes on
      apply(m.payload, m.payload_len, m.hdr.nlmsg_type, links, addrs);
  });
}

void LinkWatcher::apply(const char* payload, std::size_t len, std::uint16_t type,
                        std::map<std::uint32_t, LinkState>& links,
                        std::map<std::uint32_t, AddressMap>& addrs) {
  switch (type) {
    case RTM_NEWLINK:
    case RTM_DELLINK: {
      if (len < sizeof(ifinfomsg)) return;
      const auto ifi = load<ifinfomsg>(payload);
      // The bridge driver reports port changes with AF_BRIDGE on the same group, and its
      // RTM_DELLINK only means "no longer a bridge port", not that the device is gone.
      // Real link notifications are always AF_UNSPEC.
      if (ifi.ifi_family != AF_UNSPEC || ifi.ifi_index <= 0) return;
      const auto index = static_cast<std::uint32_t>(ifi.ifi_index);
      if (type == RTM_DELLINK) {
        // The kernel also sends RTM_DELADDR for each address, but dropping them here does
        // not depend on that (nor on it happening before the ifindex could ever be reused).
        links.erase(index);
        addrs.erase(index);
        return;
      }
      LinkState& link = links[index];
      link.ifindex = index;
      link.flags = ifi.ifi_flags;
      link.type = ifi.ifi_type;
      // A rename arrives as RTM_NEWLINK with the same ifindex and the new IFLA_IFNAME.
      for_each_attr(payload + NLMSG_ALIGN(sizeof(ifinfomsg)),
                    len - std::min(len, std::size_t{NLMSG_ALIGN(sizeof(ifinfomsg))}),
                    [&](unsigned attr, const char* data, std::size_t data_len) {
                      if (attr == IFLA_IFNAME) link.name.assign(data, ::strnlen(data, data_len));
                      // The driver's name (`ksctl setup` tells WireGuard from OpenVPN's
                      // tun by it), nested in IFLA_LINKINFO.
                      if (attr == IFLA_LINKINFO) {
                        for_each_attr(data, data_len,
                                      [&](unsigned info, const char* value, std::size_t size) {
                                        if (info == IFLA_INFO_KIND)
                                          link.kind.assign(value, ::strnlen(value, size));
                                      });
                      }
                    });
      const auto it = addrs.find(index);
      refresh_address_flags(link, it == addrs.end() ? nullptr : &it->second);
      return;
    }
    case RTM_NEWADDR:
    case RTM_DELADDR: {
      if (len < sizeof(ifaddrmsg)) return;
      const auto ifa = load<ifaddrmsg>(payload);
      if (ifa.ifa_family != AF_INET && ifa.ifa_family != AF_INET6) return;
      // The kernel fills both notifications of one address from the same object, so the
      // family, prefix length and the IFA_LOCAL / IFA_ADDRESS bytes identify it. (Two IPv4
      // addresses may share IFA_LOCAL with different prefixes or peers.)
      std::string key;
      key.push_back(static_cast<char>(ifa.ifa_family));
      key.push_back(static_cast<char>(ifa.ifa_prefixlen));
      std::string local;
      std::string address;
      const std::size_t hdr = NLMSG_ALIGN(sizeof(ifaddrmsg));
      for_each_attr(payload + std::min(len, hdr), len - std::min(len, hdr),
                    [&](unsigned attr, const char* data, std::size_t data_len) {
                      if (attr == IFA_LOCAL) local.assign(data, data_len);
                      if (attr == IFA_ADDRESS) address.assign(data, data_len);
                    });
      key.push_back(static_cast<char>(local.size()));
      key += local;
      key += address;

      AddressMap& on_link = addrs[ifa.ifa_index];
      if (type == RTM_NEWADDR) {
        on_link[key] = ifa.ifa_scope;
      } else {
        on_link.erase(key);
      }
      const AddressMap* current = &on_link;
      if (on_link.empty()) {
        addrs.erase(ifa.ifa_index);
        current = nullptr;
      }
      // An address for a link we have not seen yet is kept; its RTM_NEWLINK (or the link
      // dump) picks the flags up.
      if (const auto it = links.find(ifa.ifa_index); it != links.end()) {
        refresh_address_flags(it->second, current);
      }
      return;
    }
    default:
      return;
  }
}

}  // namespace ks
