// `ksctl setup`: from what a machine shows about its VPN (links, wg-quick configs,
// resolvers' per-link DNS, NetworkManager's connections) to a profile, with the reason for
// every choice. Pure: ctl/setup.cpp gathers the observations, this decides; unit tests
// feed it observations of machines we do not have.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "killswitch/config.hpp"
#include "killswitch/links.hpp"

namespace ks::setup {

// A wg-quick configuration (/etc/wireguard/NAME.conf): the interface it makes and the
// resolvers its `DNS =` lines name (search domains there are skipped).
struct WgQuickConfig {
  std::string interface;  // NAME
  std::string path;
  std::vector<IpAddress> dns;
};
// Parses the [Interface] section's DNS lines of a wg-quick file (comma-separated addresses
// and search domains, any number of lines); everything else is ignored.
std::vector<IpAddress> parse_wg_quick_dns(std::string_view text);

// One resolvconf record (/run/resolvconf/interface/FILE, openresolv's
// /run/resolvconf/interfaces/FILE): FILE names the interface, with a prefix (wg-quick's
// "tun.wg0") or a suffix (OpenVPN's "tun0.openvpn").
struct ResolvconfRecord {
  std::string file;
  std::string path;
  std::vector<IpAddress> nameservers;
};
std::vector<IpAddress> parse_resolv_conf_nameservers(std::string_view text);
// Whether a resolvconf record's file name stands for the interface.
bool resolvconf_record_names(std::string_view file, std::string_view interface);

// A NetworkManager device that is a tunnel (DeviceType tun or wireguard) or carries an
// active VPN connection.
struct NmDevice {
  std::string interface;
  std::string connection;  // the active connection's Id ("" if none)
  std::string type;        // the active connection's Type ("wireguard", "vpn", "tun", ...)
};

// One resolver systemd-resolved uses for one link (its Manager's DNS property).
struct ResolvedServer {
  std::uint32_t ifindex = 0;  // 0: global, not a link's
  IpAddress address;
};

struct Observations {
  std::vector<LinkState> links;             // this network namespace's interfaces
  std::set<std::string> wireguard_sockets;  // NAME of /run/wireguard/NAME.sock (userspace WG)
  std::vector<WgQuickConfig> wg_quick;
  std::vector<ResolvconfRecord> resolvconf;
  std::vector<ResolvedServer> resolved;
  std::vector<NmDevice> networkmanager;
  std::vector<std::string> nm_vpn_connections;  // active VPN connections' Ids
  // Sources that could not be read, one sentence each ("systemd-resolved: not running").
  std::vector<std::string> not_detected;
};

struct Tunnel {
  std::string name;
  std::uint32_t ifindex = 0;  // 0: no such interface now
  bool up = false;
  std::string what;              // "WireGuard (kernel)", "tun (OpenVPN or another client)"
  std::vector<std::string> why;  // where it was found
  std::vector<IpAddress> dns;
  std::vector<std::string> dns_why;  // where each resolver was found
  bool chosen = false;
  std::string left_out;  // why it is not in the profile (when not chosen)
};

struct Proposal {
  std::string profile;
  std::vector<Tunnel> tunnels;  // every candidate, chosen first, in preference order
  std::vector<std::string> chosen_tunnels;
  std::vector<IpAddress> dns;
  std::vector<std::string> warnings;      // what the user must look at
  std::vector<std::string> not_detected;  // sources that could not be read
  std::string toml;                       // the configuration file to write ("" if none)
};

struct Request {
  std::string profile = "default";
  std::vector<std::string> tunnels;  // --tunnel: these, in this order; empty: detected
};

// What to write and why. Without a usable tunnel, proposal.toml is empty.
Proposal plan_setup(const Observations& seen, const Request& request);

}  // namespace ks::setup

namespace ks::setup {

// Where `ksctl setup` looks. The defaults are the distributions' paths; the lab points them
// at its own directories.
struct Sources {
  std::string wireguard_dir = "/etc/wireguard";         // wg-quick's NAME.conf files
  std::string wireguard_socket_dir = "/run/wireguard";  // userspace WireGuard's NAME.sock
  // Debian's resolvconf and openresolv keep one record per interface here.
  std::vector<std::string> resolvconf_dirs = {"/run/resolvconf/interface",
                                              "/run/resolvconf/interfaces"};
  bool system_bus = true;  // ask systemd-resolved and NetworkManager over D-Bus
};

// Reads this machine (this network namespace's links; files; the system bus). Never throws
// for a source that cannot be read: it lands in Observations::not_detected.
Observations observe(const Sources& sources);

}  // namespace ks::setup
