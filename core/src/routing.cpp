#include "killswitch/routing.hpp"

#include <arpa/inet.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "killswitch/error.hpp"

namespace ks {
namespace {

constexpr std::uint32_t kUnreachableMetric = 0xffffffffu;
// Not 0: IPv6 turns metric 0 into 1024, and the table would never compare equal.
constexpr std::uint32_t kRouteMetric = 1;
constexpr int kReplyTimeoutMs = 5000;

// A netlink message under construction: header, fixed part, then attributes.
class Message {
 public:
  Message(std::uint16_t type, std::uint16_t flags, const void* fixed, std::size_t fixed_len) {
    buf_.resize(NLMSG_SPACE(fixed_len));
    auto* h = header();
    h->nlmsg_type = type;
    h->nlmsg_flags = flags;
    h->nlmsg_len = static_cast<std::uint32_t>(NLMSG_LENGTH(fixed_len));
    std::memcpy(NLMSG_DATA(h), fixed, fixed_len);
  }
  void add(std::uint16_t type, const void* data, std::size_t len) {
    std::size_t at = NLMSG_ALIGN(header()->nlmsg_len);
    buf_.resize(at + RTA_SPACE(len));
    auto* rta = reinterpret_cast<rtattr*>(buf_.data() + at);
    rta->rta_type = type;
    rta->rta_len = static_cast<std::uint16_t>(RTA_LENGTH(len));
    std::memcpy(RTA_DATA(rta), data, len);
    header()->nlmsg_len = static_cast<std::uint32_t>(at + RTA_ALIGN(RTA_LENGTH(len)));
  }
  void add_u32(std::uint16_t type, std::uint32_t v) { add(type, &v, sizeof(v)); }
  nlmsghdr* header() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }

 private:
  std::vector<char> buf_;
};

std::size_t address_length(int family) { return family == AF_INET ? 4 : 16; }

Message route_message(std::uint16_t type, std::uint16_t flags, std::uint32_t table,
                      const RouteSpec& r) {
  rtmsg rt{};
  rt.rtm_family = static_cast<unsigned char>(r.family);
  rt.rtm_dst_len = r.dst_len;
  rt.rtm_table = RT_TABLE_UNSPEC;  // the 32-bit RTA_TABLE below carries it
  rt.rtm_protocol = kRouteProtocol;
  rt.rtm_scope = r.type == RTN_UNICAST ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
  rt.rtm_type = r.type;
  Message m(type, flags, &rt, sizeof(rt));
  m.add_u32(RTA_TABLE, table);
  if (r.dst_len > 0) m.add(RTA_DST, r.dst.data(), address_length(r.family));
  if (r.type == RTN_UNICAST) m.add_u32(RTA_OIF, r.oif);
  m.add_u32(RTA_PRIORITY, r.metric);
  return m;
}

Message rule_message(std::uint16_t type, std::uint16_t flags, int family, std::uint32_t mark,
                     std::uint32_t table) {
  fib_rule_hdr h{};
  h.family = static_cast<unsigned char>(family);
  h.action = FR_ACT_TO_TBL;
  Message m(type, flags, &h, sizeof(h));
  m.add_u32(FRA_PRIORITY, kRulePriority);
  m.add_u32(FRA_FWMARK, mark);
  m.add_u32(FRA_FWMASK, 0xffffffffu);
  m.add_u32(FRA_TABLE, table);
  return m;
}

}  // namespace

std::string RouteSpec::describe() const {
  char addr[INET6_ADDRSTRLEN] = "";
  inet_ntop(family, dst.data(), addr, sizeof(addr));
  std::string what = type == RTN_UNREACHABLE ? "unreachable " : type == RTN_THROW ? "throw " : "";
  std::string s = what + (dst_len ? std::string(addr) + "/" + std::to_string(dst_len)
                                  : std::string(family == AF_INET ? "default" : "default ipv6"));
  if (type == RTN_UNICAST) s += " dev ifindex " + std::to_string(oif);
  return s + " metric " + std::to_string(metric);
}

std::vector<RouteSpec> plan_routes(const ks_profile& entry, const Profile* profile) {
  std::vector<RouteSpec> routes;
  bool valid = (entry.flags & KS_PROFILE_VALID) != 0;
  for (int family : {AF_INET, AF_INET6}) {
    RouteSpec unreachable;
    unreachable.family = family;
    unreachable.type = RTN_UNREACHABLE;
    unreachable.metric = kUnreachableMetric;
    routes.push_back(unreachable);
    std::uint32_t oif = family == AF_INET ? entry.bind_ifindex_v4 : entry.bind_ifindex_v6;
    if (valid && oif != 0) {
      RouteSpec tunnel;
      tunnel.family = family;
      tunnel.type = RTN_UNICAST;
      tunnel.oif = oif;
      tunnel.metric = kRouteMetric;
      routes.push_back(tunnel);
    }
  }
  if (valid && profile) {
    for (const Cidr& c : profile->allow_lan) {
      RouteSpec lan;
      lan.family = c.address.family;
      lan.type = RTN_THROW;
      std::memcpy(lan.dst.data(), c.address.bytes.data(), address_length(lan.family));
      lan.dst_len = static_cast<std::uint8_t>(c.prefix_len);
      lan.metric = kRouteMetric;
      routes.push_back(lan);
    }
  }
  return routes;
}

PolicyRouting::PolicyRouting()
    : sock_(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)) {
  if (!sock_) throw_errno("cannot open a NETLINK_ROUTE socket");
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (::bind(sock_.get(), reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0)
    throw_errno("cannot bind the NETLINK_ROUTE socket");
}

void PolicyRouting::request(void* message, std::uint32_t length, bool ignore_exists,
                            bool ignore_missing) {
  auto* h = static_cast<nlmsghdr*>(message);
  h->nlmsg_seq = ++seq_;
  h->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(sock_.get(), message, length, 0, reinterpret_cast<sockaddr*>(&kernel),
               sizeof(kernel)) < 0)
    throw_errno("netlink send");
  std::vector<char> buf(16384);
  for (;;) {
    pollfd p{sock_.get(), POLLIN, 0};
    if (::poll(&p, 1, kReplyTimeoutMs) <= 0) throw Error("netlink: no answer from the kernel");
    ssize_t n = ::recv(sock_.get(), buf.data(), buf.size(), 0);
    if (n < 0) throw_errno("netlink receive");
    for (auto* r = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(r, static_cast<unsigned>(n));
         r = NLMSG_NEXT(r, n)) {
      if (r->nlmsg_seq != seq_ || r->nlmsg_type != NLMSG_ERROR) continue;
      int err = -static_cast<nlmsgerr*>(NLMSG_DATA(r))->error;
      if (err == 0 || (ignore_exists && err == EEXIST) ||
          (ignore_missing && (err == ENOENT || err == ESRCH)))
        return;
      throw_errno("netlink request refused", err);
    }
  }
}

void PolicyRouting::ensure_rules(std::uint32_t profile_id) {
  for (int family : {AF_INET, AF_INET6}) {
    Message m = rule_message(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, family,
                             KS_MARK_BASE | profile_id, table_for_profile(profile_id));
    try {
      request(m.header(), m.header()->nlmsg_len, /*ignore_exists=*/true, false);
    } catch (const Error& e) {
      throw Error(std::string("cannot add the ") + (family == AF_INET ? "IPv4" : "IPv6") +
                      " routing rule for profile id " + std::to_string(profile_id) + ": " +
                      e.what(),
                  e.sys_errno());
    }
  }
}

void PolicyRouting::remove_rules(std::uint32_t profile_id) {
  for (int family : {AF_INET, AF_INET6}) {
    Message m = rule_message(RTM_DELRULE, 0, family, KS_MARK_BASE | profile_id,
                             table_for_profile(profile_id));
    request(m.header(), m.header()->nlmsg_len, false, /*ignore_missing=*/true);
  }
}

std::vector<RouteSpec> PolicyRouting::routes_in_table(std::uint32_t table) {
  std::vector<RouteSpec> out;
  for (int family : {AF_INET, AF_INET6}) {
    rtmsg rt{};
    rt.rtm_family = static_cast<unsigned char>(family);
    Message m(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, &rt, sizeof(rt));
    m.header()->nlmsg_seq = ++seq_;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (::sendto(sock_.get(), m.header(), m.header()->nlmsg_len, 0,
                 reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) < 0)
      throw_errno("netlink route dump");
    std::vector<char> buf(65536);
    bool done = false;
    while (!done) {
      pollfd p{sock_.get(), POLLIN, 0};
      if (::poll(&p, 1, kReplyTimeoutMs) <= 0) throw Error("netlink: route dump timed out");
      ssize_t n = ::recv(sock_.get(), buf.data(), buf.size(), 0);
      if (n < 0) throw_errno("netlink route dump");
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, static_cast<unsigned>(n));
           h = NLMSG_NEXT(h, n)) {
        if (h->nlmsg_seq != seq_) continue;
        if (h->nlmsg_type == NLMSG_DONE) {
          done = true;
          break;
        }
        if (h->nlmsg_type == NLMSG_ERROR)
          throw_errno("netlink route dump", -static_cast<nlmsgerr*>(NLMSG_DATA(h))->error);
        if (h->nlmsg_type != RTM_NEWROUTE) continue;
        auto* rt_reply = static_cast<rtmsg*>(NLMSG_DATA(h));
        RouteSpec r;
        r.family = rt_reply->rtm_family;
        r.type = rt_reply->rtm_type;
        r.dst_len = rt_reply->rtm_dst_len;
        std::uint32_t route_table = rt_reply->rtm_table;
        int len = static_cast<int>(RTM_PAYLOAD(h));
        for (auto* a = RTM_RTA(rt_reply); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
          if (a->rta_type == RTA_TABLE) std::memcpy(&route_table, RTA_DATA(a), 4);
          if (a->rta_type == RTA_OIF) std::memcpy(&r.oif, RTA_DATA(a), 4);
          if (a->rta_type == RTA_PRIORITY) std::memcpy(&r.metric, RTA_DATA(a), 4);
          if (a->rta_type == RTA_DST)
            std::memcpy(r.dst.data(), RTA_DATA(a),
                        std::min<std::size_t>(RTA_PAYLOAD(a), r.dst.size()));
        }
        // IPv6 reports error and throw routes on "dev lo"; they have no device for us.
        if (r.type != RTN_UNICAST) r.oif = 0;
        if (route_table == table) out.push_back(r);
      }
    }
  }
  return out;
}

void PolicyRouting::sync_table(std::uint32_t table, const std::vector<RouteSpec>& want) {
  std::vector<RouteSpec> have = routes_in_table(table);
  auto contains = [](const std::vector<RouteSpec>& v, const RouteSpec& r) {
    return std::find(v.begin(), v.end(), r) != v.end();
  };
  for (const auto& r : want) {
    if (contains(have, r)) continue;
    Message m = route_message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, table, r);
    try {
      request(m.header(), m.header()->nlmsg_len, false, false);
    } catch (const Error& e) {
      throw Error("cannot add route " + r.describe() + " to table " + std::to_string(table) + ": " +
                      e.what(),
                  e.sys_errno());
    }
  }
  for (const auto& r : have) {
    if (contains(want, r)) continue;
    Message m = route_message(RTM_DELROUTE, 0, table, r);
    request(m.header(), m.header()->nlmsg_len, false, /*ignore_missing=*/true);
  }
}

void PolicyRouting::flush_table(std::uint32_t table) { sync_table(table, {}); }

}  // namespace ks
