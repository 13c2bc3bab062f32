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
#include <set>
#include <vector>

#include "killswitch/error.hpp"

namespace ks {
namespace {

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

Message route_message(std::uint16_t type, std::uint16_t flags, std::uint32_t table,
                      const RouteSpec& r) {
  rtmsg rt{};
  rt.rtm_family = static_cast<unsigned char>(r.family);
  rt.rtm_table = RT_TABLE_UNSPEC;  // the 32-bit RTA_TABLE below carries it
  if (type == RTM_DELROUTE) {
    // Delete exactly what the dump showed, whoever added it: any protocol, any scope.
    rt.rtm_protocol = RTPROT_UNSPEC;
    rt.rtm_scope = RT_SCOPE_NOWHERE;
  } else {
    rt.rtm_protocol = kRouteProtocol;
    // A unicast route via the point-to-point tunnel: its peer is "on link".
    rt.rtm_scope = r.type == RTN_UNICAST ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
  }
  rt.rtm_type = r.type;
  rt.rtm_dst_len = r.dst_len;
  Message m(type, flags, &rt, sizeof(rt));
  m.add_u32(RTA_TABLE, table);
  if (r.dst_len > 0) m.add(RTA_DST, r.dst.data(), address_length(r.family));
  if (r.type == RTN_UNICAST && r.oif != 0) m.add_u32(RTA_OIF, r.oif);
  m.add_u32(RTA_PRIORITY, r.metric);
  return m;
}

Message rule_message(std::uint16_t type, std::uint16_t flags, const RuleSpec& r) {
  fib_rule_hdr h{};
  h.family = static_cast<unsigned char>(r.family);
  h.action = r.action;
  h.dst_len = r.dst_len;
  h.src_len = r.src_len;
  Message m(type, flags, &h, sizeof(h));
  std::uint8_t protocol = kRouteProtocol;
  m.add(FRA_PROTOCOL, &protocol, sizeof(protocol));
  m.add_u32(FRA_PRIORITY, r.priority);
  if (r.mark != 0) {
    m.add_u32(FRA_FWMARK, r.mark);
    m.add_u32(FRA_FWMASK, r.mark_mask);
  }
  if (r.src_len > 0) m.add(FRA_SRC, r.src.data(), address_length(r.family));
  if (r.action == FR_ACT_TO_TBL) m.add_u32(FRA_TABLE, r.table);
  if (r.dst_len > 0) m.add(FRA_DST, r.dst.data(), address_length(r.family));
  return m;
}

template <typename T>
bool contains(const std::vector<T>& v, const T& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

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

template <typename Visit>
void PolicyRouting::dump(std::uint16_t type, int family, std::size_t fixed_len, Visit visit) {
  std::vector<char> fixed(fixed_len, 0);
  fixed[0] = static_cast<char>(family);  // rtm_family / fib_rule_hdr.family come first
  Message m(type, NLM_F_REQUEST | NLM_F_DUMP, fixed.data(), fixed.size());
  m.header()->nlmsg_seq = ++seq_;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(sock_.get(), m.header(), m.header()->nlmsg_len, 0,
               reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) < 0)
    throw_errno("netlink dump");
  std::vector<char> buf(65536);
  for (;;) {
    pollfd p{sock_.get(), POLLIN, 0};
    if (::poll(&p, 1, kReplyTimeoutMs) <= 0) throw Error("netlink: dump timed out");
    ssize_t n = ::recv(sock_.get(), buf.data(), buf.size(), 0);
    if (n < 0) throw_errno("netlink dump");
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, static_cast<unsigned>(n));
         h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != seq_) continue;
      if (h->nlmsg_type == NLMSG_DONE) return;
      if (h->nlmsg_type == NLMSG_ERROR)
        throw_errno("netlink dump", -static_cast<nlmsgerr*>(NLMSG_DATA(h))->error);
      visit(h);
    }
  }
}

std::vector<RuleSpec> PolicyRouting::our_rules() {
  std::vector<RuleSpec> out;
  for (int family : {AF_INET, AF_INET6}) {
    dump(RTM_GETRULE, family, sizeof(fib_rule_hdr), [&](nlmsghdr* h) {
      if (h->nlmsg_type != RTM_NEWRULE) return;
      auto parsed = parse_rule_message(h, h->nlmsg_len);
      if (parsed && parsed->ours) out.push_back(parsed->rule);
    });
  }
  return out;
}

void PolicyRouting::sync_rules(const std::vector<RuleSpec>& want) {
  std::vector<RuleSpec> have = our_rules();
  for (const auto& r : want) {
    if (contains(have, r)) continue;
    Message m = rule_message(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, r);
    try {
      request(m.header(), m.header()->nlmsg_len, /*ignore_exists=*/true, false);
    } catch (const Error& e) {
      throw Error("cannot add routing rule " + r.describe() + ": " + e.what(), e.sys_errno());
    }
  }
  for (const auto& r : have) {
    if (contains(want, r)) continue;
    Message m = rule_message(RTM_DELRULE, 0, r);
    request(m.header(), m.header()->nlmsg_len, false, /*ignore_missing=*/true);
  }
}

std::vector<RouteSpec> PolicyRouting::routes_in_table(std::uint32_t table) {
  return routes_by_table({table})[table];
}

std::map<std::uint32_t, std::vector<RouteSpec>> PolicyRouting::routes_by_table(
    const std::set<std::uint32_t>& tables) {
  std::map<std::uint32_t, std::vector<RouteSpec>> out;
  for (int family : {AF_INET, AF_INET6}) {
    dump(RTM_GETROUTE, family, sizeof(rtmsg), [&](nlmsghdr* h) {
      if (h->nlmsg_type != RTM_NEWROUTE) return;
      auto* rt = static_cast<rtmsg*>(NLMSG_DATA(h));
      RouteSpec r;
      r.family = rt->rtm_family;
      r.metric = 0;
      r.type = rt->rtm_type;
      r.dst_len = rt->rtm_dst_len;
      std::uint32_t route_table = rt->rtm_table;
      int len = static_cast<int>(RTM_PAYLOAD(h));
      for (auto* a = RTM_RTA(rt); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if (a->rta_type == RTA_TABLE) std::memcpy(&route_table, RTA_DATA(a), 4);
        if (a->rta_type == RTA_OIF) std::memcpy(&r.oif, RTA_DATA(a), 4);
        if (a->rta_type == RTA_PRIORITY) std::memcpy(&r.metric, RTA_DATA(a), 4);
        if (a->rta_type == RTA_DST)
          std::memcpy(r.dst.data(), RTA_DATA(a), std::min<std::size_t>(RTA_PAYLOAD(a), 16));
      }
      // IPv6 reports error and throw routes on "dev lo": no device to match them by.
      if (r.type != RTN_UNICAST) r.oif = 0;
      if (tables.count(route_table)) out[route_table].push_back(r);  // (not the host's)
    });
  }
  return out;
}

void PolicyRouting::sync_table(std::uint32_t table, const std::vector<RouteSpec>& want) {
  sync_table_from(table, routes_in_table(table), want);
}

void PolicyRouting::sync_tables(const std::map<std::uint32_t, std::vector<RouteSpec>>& want) {
  std::set<std::uint32_t> tables;
  for (const auto& entry : want) tables.insert(entry.first);
  auto have = routes_by_table(tables);
  for (const auto& [table, routes] : want) sync_table_from(table, have[table], routes);
}

void PolicyRouting::sync_table_from(std::uint32_t table, const std::vector<RouteSpec>& have,
                                    const std::vector<RouteSpec>& want) {
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

void PolicyRouting::remove_all() {
  sync_rules({});
  std::map<std::uint32_t, std::vector<RouteSpec>> empty;
  for (std::uint32_t id = 0; id < KS_MAX_PROFILES; ++id) empty[table_for_profile(id)] = {};
  sync_tables(empty);
}

}  // namespace ks
