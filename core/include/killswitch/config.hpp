// Killswitch configuration: the TOML file described in shared/spec/interface.md.
//
//   [profiles.default]
//   tunnels   = ["wg0"]
//   dns       = ["10.99.0.1"]
//   allow_lan = ["192.168.1.0/24"]
//
// Parsing is strict: an unknown key, a bad CIDR or address, an empty tunnels list, an
// invalid interface or profile name is an error whose message names file, line and key.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ks {

struct IpAddress {
  int family = 0;                        // AF_INET or AF_INET6
  std::array<std::uint8_t, 16> bytes{};  // network order; IPv4 uses the first 4 bytes
  std::string text;                      // as written in the file
};

struct Cidr {
  IpAddress address;  // host bits are zero
  int prefix_len = 0;
  std::string text;
};

struct Profile {
  std::string name;
  std::vector<std::string> tunnels;  // in order of preference
  std::vector<IpAddress> dns;
  std::vector<Cidr> allow_lan;
};

struct Config {
  std::string path;
  std::vector<Profile> profiles;  // in file order

  const Profile* find_profile(std::string_view name) const;
};

inline constexpr std::string_view kDefaultConfigPath = "/etc/killswitch/config.toml";
inline constexpr std::string_view kDefaultProfile = "default";
// ksd's own profile for `ksctl verify`: no tunnels, so everything its probes send must be
// refused at once. Not a valid name in a configuration file (the dot), so it cannot clash.
inline constexpr std::string_view kVerifyProfile = "ksctl.verify";
inline constexpr std::size_t kMaxTunnelsPerProfile = 8;
inline constexpr std::size_t kMaxDnsPerProfile = 4;  // KS_MAX_DNS
inline constexpr std::size_t kMaxProfiles = 63;      // KS_MAX_PROFILES - 1: id 0 means "none"

// Throws ks::Error("PATH:LINE: profiles.NAME.KEY: what is wrong") on any problem.
Config parse_config(std::string_view toml_text, const std::string& path);
Config load_config(const std::string& path);

// What is legal in a configuration but likely not what its author meant, one sentence each
// (`ksd --check`): no `default` profile (ksrun without --profile is refused), a profile
// without `dns` (its apps resolve no names: their DNS is refused), a tunnel that does not
// exist now (its profile's apps are blocked until it appears). link_exists(name) says
// whether an interface of that name exists.
std::vector<std::string> config_warnings(
    const Config& config, const std::function<bool(const std::string&)>& link_exists);

// Validators, also used by ksctl and the admin protocol.
bool is_valid_interface_name(std::string_view name);  // Linux dev_valid_name()
bool is_valid_profile_name(std::string_view name);    // [A-Za-z0-9_]{1,31}
std::optional<IpAddress> parse_ip_address(std::string_view text);
// The address as inet_ntop(3) writes it, whatever the text it was parsed from.
std::string address_text(const IpAddress& address);
std::optional<Cidr> parse_cidr(std::string_view text);  // rejects host bits set
// Same, and on failure stores in *why_not a message a user can act on (it quotes the text;
// for host bits set it suggests the network address). why_not may be null.
std::optional<Cidr> parse_cidr(std::string_view text, std::string* why_not);

}  // namespace ks
