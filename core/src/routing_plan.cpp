#include "killswitch/routing_plan.hpp"

#include <arpa/inet.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace ks {
namespace {

const char* family_name(int family) { return family == AF_INET ? "IPv4" : "IPv6"; }

}  // namespace

std::string RouteSpec::describe() const {
  std::string where = "default";
  if (dst_len > 0) {
    char addr[INET6_ADDRSTRLEN] = "";
    inet_ntop(family, dst.data(), addr, sizeof(addr));
    where = std::string(addr) + "/" + std::to_string(dst_len);
  }
  std::string kind = type == RTN_UNICAST ? "" : "type " + std::to_string(type) + " ";
  return std::string(family_name(family)) + " " + kind + where + " dev ifindex " +
         std::to_string(oif) + " metric " + std::to_string(metric);
}

std::string RuleSpec::describe() const {
  char mark_text[32];
  std::snprintf(mark_text, sizeof(mark_text), "0x%x/0x%x", mark, mark_mask);
  std::string s = std::string(family_name(family)) + " pref " + std::to_string(priority) +
                  (mark ? std::string(" fwmark ") + mark_text : std::string());
  if (src_len > 0) {
    char addr[INET6_ADDRSTRLEN] = "";
    inet_ntop(family, src.data(), addr, sizeof(addr));
    s += " from " + std::string(addr) + "/" + std::to_string(src_len);
  }
  if (dst_len > 0) {
    char addr[INET6_ADDRSTRLEN] = "";
    inet_ntop(family, dst.data(), addr, sizeof(addr));
    s += " to " + std::string(addr) + "/" + std::to_string(dst_len);
  }
  return s + (action == FR_ACT_UNREACHABLE ? " unreachable" : " lookup " + std::to_string(table));
}

std::vector<RouteSpec> plan_routes(const ks_profile& entry) {
  std::vector<RouteSpec> routes;
  if (!(entry.flags & KS_PROFILE_VALID)) return routes;
  if (entry.bind_ifindex_v4) routes.push_back({AF_INET, entry.bind_ifindex_v4});
  if (entry.bind_ifindex_v6) routes.push_back({AF_INET6, entry.bind_ifindex_v6});
  return routes;
}

std::vector<RuleSpec> plan_rules(std::uint32_t profile_id, const Profile* profile) {
  std::vector<RuleSpec> rules;
  const std::uint32_t mark = KS_MARK_BASE | profile_id;
  if (profile) {
    for (const Cidr& c : profile->allow_lan) {
      RuleSpec lan;
      lan.family = c.address.family;
      lan.priority = kLanRulePriority;
      lan.mark = mark;
      lan.mark_mask = KS_MARK_RULE_MASK;
      lan.action = FR_ACT_TO_TBL;
      lan.table = RT_TABLE_MAIN;
      std::memcpy(lan.dst.data(), c.address.bytes.data(), address_length(lan.family));
      lan.dst_len = static_cast<std::uint8_t>(c.prefix_len);
      rules.push_back(lan);
    }
  }
  for (int family : {AF_INET, AF_INET6}) {
    RuleSpec table;
    table.family = family;
    table.priority = kTableRulePriority;
    table.mark = mark;
    table.mark_mask = KS_MARK_RULE_MASK;
    table.action = FR_ACT_TO_TBL;
    table.table = table_for_profile(profile_id);
    rules.push_back(table);
    RuleSpec unreachable;
    unreachable.family = family;
    unreachable.priority = kUnreachableRulePriority;
    unreachable.mark = mark;
    unreachable.mark_mask = KS_MARK_RULE_MASK;
    unreachable.action = FR_ACT_UNREACHABLE;
    rules.push_back(unreachable);
  }
  return rules;
}

std::vector<RuleSpec> plan_source_rules(const LinkAddress& address, std::uint32_t table) {
  RuleSpec lookup;
  lookup.family = address.family;
  lookup.priority = kSourceRulePriority;
  lookup.action = FR_ACT_TO_TBL;
  lookup.table = table;
  lookup.src = address.bytes;
  lookup.src_len = static_cast<std::uint8_t>(address_length(address.family) * 8);
  RuleSpec unreachable = lookup;
  unreachable.priority = kSourceUnreachableRulePriority;
  unreachable.action = FR_ACT_UNREACHABLE;
  unreachable.table = 0;
  return {lookup, unreachable};
}

std::vector<RuleSpec> plan_all_rules(const Config& config, const ProfileIds& ids,
                                     const std::set<std::uint32_t>& ids_in_use,
                                     const std::map<std::uint32_t, LinkState>& links) {
  std::vector<RuleSpec> rules;
  for (std::uint32_t id : ids_in_use) {
    const Profile* profile = nullptr;
    for (const auto& [name, profile_id] : ids)
      if (profile_id == id) profile = config.find_profile(name);
    for (auto& r : plan_rules(id, profile)) rules.push_back(r);
  }
  std::vector<LinkAddress> sourced;
  for (const auto& profile : config.profiles) {
    auto id = ids.find(profile.name);
    if (id == ids.end()) continue;
    for (const auto& tunnel : profile.tunnels) {
      for (const auto& [ifindex, link] : links) {
        if (link.name != tunnel) continue;
        for (const auto& address : link.addresses) {
          if (std::find(sourced.begin(), sourced.end(), address) != sourced.end()) continue;
          sourced.push_back(address);
          for (auto& r : plan_source_rules(address, table_for_profile(id->second)))
            rules.push_back(r);
        }
      }
    }
  }
  return rules;
}

std::optional<ParsedRule> parse_rule_message(const void* message, std::size_t length) {
  const auto* h = static_cast<const nlmsghdr*>(message);
  if (length < NLMSG_LENGTH(sizeof(fib_rule_hdr)) ||
      h->nlmsg_len < NLMSG_LENGTH(sizeof(fib_rule_hdr)) || h->nlmsg_len > length)
    return std::nullopt;
  const auto* hdr = static_cast<const fib_rule_hdr*>(NLMSG_DATA(h));
  RuleSpec r;
  r.family = hdr->family;
  r.action = hdr->action;
  r.dst_len = hdr->dst_len;
  r.src_len = hdr->src_len;
  r.table = hdr->table;
  std::uint8_t protocol = 0;
  bool other_selector = false;  // iif, oif, src, uid range, ports, ...: not a rule of ours
  int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*hdr)));
  for (auto* a = reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(hdr) +
                                                 NLMSG_ALIGN(sizeof(*hdr)));
       RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    const std::size_t payload = RTA_PAYLOAD(a);
    const void* data = RTA_DATA(a);
    std::uint32_t u32 = 0;
    if (payload >= 4) std::memcpy(&u32, data, 4);
    switch (a->rta_type) {
      case FRA_PRIORITY:
        r.priority = u32;
        break;
      case FRA_FWMARK:
        r.mark = u32;
        break;
      case FRA_FWMASK:
        r.mark_mask = u32;
        break;
      case FRA_TABLE:
        r.table = u32;
        break;
      case FRA_DST:
        std::memcpy(r.dst.data(), data, std::min<std::size_t>(payload, 16));
        break;
      case FRA_SRC:
        std::memcpy(r.src.data(), data, std::min<std::size_t>(payload, 16));
        break;
      case FRA_PROTOCOL:
        if (payload >= 1) std::memcpy(&protocol, data, 1);
        break;
      case FRA_SUPPRESS_PREFIXLEN:  // always dumped; -1 means unused
      case FRA_SUPPRESS_IFGROUP:
        other_selector = other_selector || u32 != 0xffffffffu;
        break;
      default:
        other_selector = true;
    }
  }
  if (r.action != FR_ACT_TO_TBL) r.table = 0;
  const bool mark_rule = r.priority >= kLanRulePriority && r.priority <= kUnreachableRulePriority;
  const bool source_rule =
      r.priority == kSourceRulePriority || r.priority == kSourceUnreachableRulePriority;
  const bool ours =
      protocol == kRouteProtocol && !other_selector && hdr->tos == 0 &&
      !(hdr->flags & FIB_RULE_INVERT) &&
      // Exact marks (0xffffffff) are an older ksd's rules: ours to replace.
      ((mark_rule && (r.mark_mask == KS_MARK_RULE_MASK || r.mark_mask == 0xffffffffu) &&
        hdr->src_len == 0 && (r.mark & KS_MARK_TAG_MASK) == KS_MARK_BASE) ||
       (source_rule && r.mark == 0 && hdr->src_len > 0 && hdr->dst_len == 0));
  return ParsedRule{r, ours};
}

}  // namespace ks
