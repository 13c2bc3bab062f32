#include "killswitch/setup_plan.hpp"

#include <net/if_arp.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "killswitch/error.hpp"
#include "killswitch/json_text.hpp"

namespace ks::setup {
namespace {

std::string_view trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

template <typename Fn>
void for_each_line(std::string_view text, Fn&& fn) {
  while (!text.empty()) {
    const auto end = text.find('\n');
    fn(trim(text.substr(0, end)));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
}

// wg-quick reads section names and keys without regard to case.
bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool same_address(const IpAddress& a, const IpAddress& b) {
  return a.family == b.family && a.bytes == b.bytes;
}

void add_unique(std::vector<IpAddress>& to, const IpAddress& address) {
  if (std::none_of(to.begin(), to.end(),
                   [&](const IpAddress& seen) { return same_address(seen, address); }))
    to.push_back(address);
}

// A TOML basic string. Interface names may hold quotes and backslashes (Linux forbids only
// '/', ':' and whitespace), so they are escaped, never pasted.
std::string toml_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned char>(c));
      out += escaped;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

template <typename Items, typename Fn>
std::string toml_array(const Items& items, Fn&& text_of) {
  std::string out = "[";
  for (const auto& item : items) {
    if (out.size() > 1) out += ", ";
    out += toml_string(text_of(item));
  }
  return out + "]";
}

// What a link is, if it is a tunnel a VPN client makes; "" for anything else (Ethernet,
// veth, bridges, and tunnels no VPN client uses: ipip, gre, sit).
std::string describe_link(const LinkState& link, bool has_wireguard_socket) {
  if (link.kind == "wireguard") return "WireGuard (kernel)";
  if (has_wireguard_socket) return "WireGuard (userspace: wireguard-go or boringtun)";
  if (link.kind == "tun")
    return link.type == ARPHRD_NONE ? "tun (OpenVPN or another VPN client)"
                                    : "tap (OpenVPN, bridged)";
  return "";
}

// The VPN clients whose interface names say who made them.
std::string client_of(std::string_view name) {
  if (name.find("mullvad") != std::string_view::npos) return "the Mullvad app";
  if (name.starts_with("proton") || name.starts_with("pvpn")) return "the Proton VPN app";
  if (name == "nordlynx" || name.starts_with("nordtun")) return "the NordVPN app";
  if (name.starts_with("wgpia")) return "the PIA app";
  if (name.starts_with("tailscale")) return "Tailscale";
  return "";
}

// A configuration file is UTF-8 (TOML), an interface name any bytes but '/', ':' and
// whitespace: a name that is not UTF-8 cannot be written into a profile.
bool nameable(const std::string& name) { return valid_utf8(name) == name; }
constexpr const char* kNotNameable =
    "its name is not UTF-8, which a configuration file cannot hold: rename the interface";

Tunnel& candidate(std::vector<Tunnel>& tunnels, const std::string& name) {
  for (auto& tunnel : tunnels)
    if (tunnel.name == name) return tunnel;
  Tunnel tunnel;
  tunnel.name = name;
  tunnels.push_back(std::move(tunnel));
  return tunnels.back();
}

void add_dns(Tunnel& tunnel, const std::vector<IpAddress>& servers, const std::string& source) {
  for (const auto& server : servers) {
    const auto before = tunnel.dns.size();
    add_unique(tunnel.dns, server);
    if (tunnel.dns.size() != before) tunnel.dns_why.push_back(address_text(server) + ": " + source);
  }
}

}  // namespace

std::vector<IpAddress> parse_wg_quick_dns(std::string_view text) {
  std::vector<IpAddress> servers;
  bool in_interface = false;
  for_each_line(text, [&](std::string_view line) {
    if (line.starts_with('[')) {
      in_interface = equals_ignoring_case(line, "[Interface]");
      return;
    }
    const auto eq = line.find('=');
    if (!in_interface || eq == std::string_view::npos ||
        !equals_ignoring_case(trim(line.substr(0, eq)), "DNS"))
      return;
    std::string_view values = line.substr(eq + 1);
    while (!values.empty()) {
      const auto comma = values.find(',');
      // Search domains sit next to addresses on the same line; only addresses are resolvers.
      if (const auto address = parse_ip_address(trim(values.substr(0, comma))))
        add_unique(servers, *address);
      if (comma == std::string_view::npos) break;
      values.remove_prefix(comma + 1);
    }
  });
  return servers;
}

std::vector<IpAddress> parse_resolv_conf_nameservers(std::string_view text) {
  std::vector<IpAddress> servers;
  for_each_line(text, [&](std::string_view line) {
    if (!line.starts_with("nameserver")) return;
    line.remove_prefix(std::string_view("nameserver").size());
    if (line.empty() || (line.front() != ' ' && line.front() != '\t')) return;
    auto value = trim(line);
    value = value.substr(0, value.find_first_of(" \t#;"));
    // A link-local IPv6 resolver carries its zone ("fe80::1%wg0"); ksd takes no zones.
    if (const auto address = parse_ip_address(value)) add_unique(servers, *address);
  });
  return servers;
}

bool resolvconf_record_names(std::string_view file, std::string_view interface) {
  if (interface.empty()) return false;
  // wg-quick registers "tun.NAME" (Debian's interface-order prefix); OpenVPN's scripts and
  // ifupdown "NAME" or "NAME.openvpn", "NAME.inet".
  if (file.starts_with("tun.") && file.substr(4) == interface) return true;
  return file.starts_with(interface) &&
         (file.size() == interface.size() || file[interface.size()] == '.');
}

Proposal plan_setup(const Observations& seen, const Request& request) {
  Proposal proposal;
  proposal.profile = request.profile;
  proposal.not_detected = seen.not_detected;

  // Every candidate: tunnel links first (by ifindex), then wg-quick configs not up now.
  std::vector<Tunnel> tunnels;
  for (const auto& link : seen.links) {
    const auto what = describe_link(link, seen.wireguard_sockets.contains(link.name));
    if (what.empty()) continue;
    Tunnel& tunnel = candidate(tunnels, link.name);
    tunnel.ifindex = link.ifindex;
    tunnel.up = link.usable();
    tunnel.what = what;
    tunnel.why.push_back("interface " + link.name + " (ifindex " + std::to_string(link.ifindex) +
                         ", " + (tunnel.up ? "up" : "down") + "): " + what);
    if (const auto client = client_of(link.name); !client.empty())
      tunnel.why.push_back("its name is the one " + client + " gives its tunnel");
  }
  for (const auto& config : seen.wg_quick) {
    Tunnel& tunnel = candidate(tunnels, config.interface);
    if (tunnel.what.empty()) tunnel.what = "WireGuard (wg-quick, not up now)";
    tunnel.why.push_back("wg-quick configuration " + config.path);
    add_dns(tunnel, config.dns, "DNS = in " + config.path);
  }
  for (const auto& device : seen.networkmanager) {
    for (auto& tunnel : tunnels) {
      if (tunnel.name != device.interface) continue;
      tunnel.why.push_back(device.connection.empty()
                               ? "NetworkManager knows it (no active connection)"
                               : "NetworkManager connection \"" + device.connection + "\" (" +
                                     device.type + ")");
    }
  }
  for (auto& tunnel : tunnels) {
    if (tunnel.ifindex != 0) {
      std::vector<IpAddress> servers;
      for (const auto& server : seen.resolved)
        if (server.ifindex == tunnel.ifindex) servers.push_back(server.address);
      add_dns(tunnel, servers, "systemd-resolved, per-link DNS of " + tunnel.name);
    }
    for (const auto& record : seen.resolvconf)
      if (resolvconf_record_names(record.file, tunnel.name))
        add_dns(tunnel, record.nameservers, "resolvconf record " + record.path);
  }

  // Which ones the profile gets.
  std::vector<std::string> chosen;
  if (!request.tunnels.empty()) {
    for (const auto& name : request.tunnels) {
      if (!nameable(name)) {
        proposal.warnings.push_back(std::string("--tunnel: ") + kNotNameable);
        continue;
      }
      Tunnel& tunnel = candidate(tunnels, name);
      if (tunnel.what.empty()) tunnel.what = "named with --tunnel";
      if (tunnel.ifindex == 0) {
        // An interface no VPN client made (a veth, a bridge): the user's word counts.
        for (const auto& link : seen.links) {
          if (link.name != name) continue;
          tunnel.ifindex = link.ifindex;
          tunnel.up = link.usable();
          tunnel.why.push_back("interface " + name + " (ifindex " + std::to_string(link.ifindex) +
                               ", " + (tunnel.up ? "up" : "down") + ", driver " +
                               (link.kind.empty() ? "unknown" : link.kind) +
                               "): named with --tunnel");
        }
      }
      if (tunnel.why.empty())
        tunnel.why.push_back("named with --tunnel; not found on this machine");
      if (std::find(chosen.begin(), chosen.end(), name) == chosen.end()) chosen.push_back(name);
    }
  } else {
    const auto eligible = [&](Tunnel& tunnel, bool need_up) {
      if (!nameable(tunnel.name)) {
        tunnel.left_out = kNotNameable;
        return false;
      }
      if (client_of(tunnel.name) == "Tailscale") {
        tunnel.left_out =
            "Tailscale carries the tailnet, not the internet (unless an exit node is set): "
            "name it with --tunnel if that is what you want";
        return false;
      }
      return !need_up || tunnel.up;
    };
    for (auto& tunnel : tunnels)
      if (eligible(tunnel, true)) chosen.push_back(tunnel.name);
    if (chosen.empty()) {
      for (auto& tunnel : tunnels)
        if (eligible(tunnel, false)) chosen.push_back(tunnel.name);
      if (!chosen.empty())
        proposal.warnings.push_back(
            "no tunnel is up now: the profile names the ones found; its apps stay blocked "
            "until one is up");
    }
  }
  if (chosen.size() > kMaxTunnelsPerProfile) {
    proposal.warnings.push_back("more than " + std::to_string(kMaxTunnelsPerProfile) +
                                " tunnels found: the profile takes the first ones");
    chosen.resize(kMaxTunnelsPerProfile);
  }
  for (auto& tunnel : tunnels) {
    tunnel.chosen = std::find(chosen.begin(), chosen.end(), tunnel.name) != chosen.end();
    if (!tunnel.chosen && tunnel.left_out.empty())
      tunnel.left_out =
          request.tunnels.empty() ? "not up now while others are" : "not named with --tunnel";
  }
  // Chosen first, in the order chosen; then the others as they were found.
  std::stable_sort(tunnels.begin(), tunnels.end(), [&](const Tunnel& a, const Tunnel& b) {
    const auto rank = [&](const Tunnel& t) {
      const auto it = std::find(chosen.begin(), chosen.end(), t.name);
      return static_cast<std::size_t>(it - chosen.begin());
    };
    return rank(a) < rank(b);
  });
  proposal.tunnels = tunnels;
  proposal.chosen_tunnels = chosen;
  if (chosen.empty()) {
    proposal.warnings.push_back(
        "no VPN tunnel found: no WireGuard link, tun/tap device, wg-quick configuration or "
        "NetworkManager tunnel. Bring your VPN up and run `ksctl setup` again, or name its "
        "interface with --tunnel");
    return proposal;
  }

  for (const auto& tunnel : proposal.tunnels) {
    if (!tunnel.chosen) continue;
    if (tunnel.ifindex == 0)
      proposal.warnings.push_back(tunnel.name +
                                  " does not exist now: the profile's apps are blocked until it "
                                  "appears");
    for (const auto& server : tunnel.dns) add_unique(proposal.dns, server);
  }
  if (proposal.dns.size() > kMaxDnsPerProfile) {
    proposal.warnings.push_back("more than " + std::to_string(kMaxDnsPerProfile) +
                                " resolvers found: the profile takes the first ones");
    proposal.dns.resize(kMaxDnsPerProfile);
  }
  if (proposal.dns.empty())
    proposal.warnings.push_back(
        "no resolver found for the tunnel (no per-link DNS in systemd-resolved, no DNS = in "
        "a wg-quick file, no resolvconf record): with dns = [] a protected app resolves no "
        "names. Put your VPN's resolver in dns (your provider names it; it is reached "
        "through the tunnel)");

  std::string toml =
      "# Killswitch configuration, written by `ksctl setup` (run it without --write to see\n"
      "# what it found and why). Check an edit: ksd --check. Every key: killswitch.conf(5).\n\n";
  toml += "[profiles." + proposal.profile + "]\n";
  toml += "tunnels   = " + toml_array(chosen, [](const std::string& s) { return s; }) + "\n";
  toml += "dns       = " + toml_array(proposal.dns, address_text) + "\n";
  toml += "allow_lan = []  # CIDRs reachable outside the tunnel, e.g. [\"192.168.1.0/24\"]\n";
  // What we write must be what ksd accepts: a name the parser refuses is our bug, not a file
  // for the user to debug later.
  (void)parse_config(toml, "(ksctl setup)");
  proposal.toml = std::move(toml);
  return proposal;
}

}  // namespace ks::setup
