// Parser for the killswitch configuration file (see killswitch/config.hpp).
//
// toml++ as packaged by Debian 12 (libtomlplusplus-dev 3.3.0) is a compiled library:
// pkg-config adds -DTOML_HEADER_ONLY=0 -DTOML_SHARED_LIB=1, so only declarations come from
// the headers and the parser lives in libtomlplusplus.so. The library was built with
// exceptions (its symbols are in toml::v3::ex), so TOML_EXCEPTIONS must be 1 here too or the
// link fails; toml::parse() therefore throws toml::parse_error. The headers live in
// /usr/include (a system directory) and silence their own warnings, so they compile clean
// under the project's -Wall -Wextra -Wshadow -Wconversion -Werror without pragmas.
#include "killswitch/config.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <string>
#include <utility>

#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"
#include "killswitch_abi.h"

#if !TOML_EXCEPTIONS
#error "Debian's libtomlplusplus is built with exceptions; TOML_EXCEPTIONS must be 1"
#endif

namespace ks {

static_assert(kMaxDnsPerProfile == KS_MAX_DNS, "dns limit must match the BPF profile map");
static_assert(kMaxProfiles == KS_MAX_PROFILES - 1, "profile ids are 1..KS_MAX_PROFILES-1");
static_assert(31 == KS_PROFILE_NAME_MAX - 1, "profile names must fit ks_profile.name with NUL");

namespace {

// A config file is a few hundred bytes; the cap only stops `ksctl reload /dev/zero` from
// eating memory.
constexpr std::size_t kMaxConfigBytes = 1 << 20;

// Renders a string for an error message: in double quotes, with quotes, backslashes and
// control characters escaped so a hostile or mistyped value cannot garble the terminal.
std::string quote(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04X", static_cast<unsigned>(u));
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

// A TOML key as the user would write it: bare when it can be, quoted otherwise.
std::string key_text(std::string_view key) {
  const bool bare = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
  return bare ? std::string(key) : quote(key);
}

std::string format_address(int family, const std::array<std::uint8_t, 16>& bytes) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (!inet_ntop(family, bytes.data(), buf, sizeof buf)) return "?";
  return buf;
}

// The 16-byte form the BPF maps use: IPv6 as is, IPv4 as ::ffff:a.b.c.d. Two entries the
// kernel side cannot tell apart are duplicates, whichever way they were written.
std::array<std::uint8_t, 16> mapped_bytes(const IpAddress& address) {
  if (address.family == AF_INET6) return address.bytes;
  std::array<std::uint8_t, 16> out{};
  out[10] = 0xff;
  out[11] = 0xff;
  std::copy_n(address.bytes.begin(), 4, out.begin() + 12);
  return out;
}

const char* type_name(toml::node_type type) {
  switch (type) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

// One key/value of a TOML table. toml::table is a std::map (sorted by key), so entries are
// re-sorted by where their key appears in the file: profiles keep file order and the first
// problem reported is the first one in the file.
struct Entry {
  std::string_view key;
  toml::source_position position;
  const toml::node* node;
};

std::vector<Entry> entries_in_file_order(const toml::table& table) {
  std::vector<Entry> entries;
  entries.reserve(table.size());
  for (const auto& [key, node] : table) {
    entries.push_back({key.str(), key.source().begin, &node});
  }
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.position < b.position; });
  return entries;
}

class Parser {
 public:
  explicit Parser(const std::string& path) : path_(path) {}

  Config parse(std::string_view text) {
    toml::table root;
    try {
      root = toml::parse(text, std::string_view(path_));
    } catch (const toml::parse_error& e) {
      const auto& where = e.source().begin;
      throw Error(path_ + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) +
                  ": TOML syntax error: " + std::string(e.description()));
    }

    Config config;
    config.path = path_;
    bool have_profiles = false;
    for (const Entry& entry : entries_in_file_order(root)) {
      if (entry.key != "profiles") {
        fail(entry.position, key_text(entry.key),
             "unknown key (the only top-level table is [profiles.NAME])");
      }
      have_profiles = true;
      parse_profiles(entry, config);
    }
    if (!have_profiles) {
      // Nothing in the file to point at; line 1 keeps the PATH:LINE: shape.
      fail(toml::source_position{1, 1}, "profiles",
           "no profiles defined; add a [profiles.default] table");
    }
    return config;
  }

 private:
  [[noreturn]] void fail(toml::source_position where, const std::string& key,
                         const std::string& what) const {
    throw Error(path_ + ":" + std::to_string(where.line) + ": " + key + ": " + what);
  }

  void parse_profiles(const Entry& entry, Config& config) const {
    const toml::table* profiles = entry.node->as_table();
    if (!profiles) {
      fail(entry.position, "profiles",
           std::string("expected a table of profiles ([profiles.NAME]), got ") +
               type_name(entry.node->type()));
    }
    if (profiles->empty()) {
      fail(entry.position, "profiles", "no profiles defined; add a [profiles.default] table");
    }
    for (const Entry& profile : entries_in_file_order(*profiles)) {
      const std::string key = "profiles." + key_text(profile.key);
      if (!is_valid_profile_name(profile.key)) {
        fail(profile.position, key,
             "invalid profile name; use 1 to 31 characters from A-Z, a-z, 0-9 and _ ('-' is "
             "not allowed: profile names become systemd slice names, where '-' means nesting)");
      }
      if (config.profiles.size() == kMaxProfiles) {
        fail(profile.position, key,
             "too many profiles (at most " + std::to_string(kMaxProfiles) + ")");
      }
      config.profiles.push_back(parse_profile(profile, key));
    }
  }

  Profile parse_profile(const Entry& entry, const std::string& key) const {
    const toml::table* table = entry.node->as_table();
    if (!table) {
      fail(entry.position, key,
           std::string("expected a table ([") + key + "]), got " + type_name(entry.node->type()));
    }
    Profile profile;
    profile.name = std::string(entry.key);
    bool have_tunnels = false;
    for (const Entry& item : entries_in_file_order(*table)) {
      const std::string item_key = key + "." + key_text(item.key);
      if (item.key == "tunnels") {
        have_tunnels = true;
        parse_tunnels(item, item_key, profile);
      } else if (item.key == "dns") {
        parse_dns(item, item_key, profile);
      } else if (item.key == "allow_lan") {
        parse_allow_lan(item, item_key, profile);
      } else {
        fail(item.position, item_key, "unknown key (expected tunnels, dns or allow_lan)");
      }
    }
    if (!have_tunnels) {
      fail(entry.position, key + ".tunnels",
           "required key is missing (list the tunnel interfaces, e.g. tunnels = [\"wg0\"])");
    }
    return profile;
  }

  // Checks that the value is an array whose every element is a string and returns those
  // strings with the position of each (for multi-line arrays the element's own line).
  std::vector<std::pair<std::string_view, toml::source_position>> string_array(
      const Entry& entry, const std::string& key) const {
    const toml::array* array = entry.node->as_array();
    if (!array) {
      fail(entry.position, key,
           std::string("expected an array of strings, got ") + type_name(entry.node->type()));
    }
    std::vector<std::pair<std::string_view, toml::source_position>> out;
    for (std::size_t i = 0; i < array->size(); ++i) {
      const toml::node& element = *array->get(i);
      const auto* value = element.as_string();
      if (!value) {
        fail(element.source().begin, key,
             "expected an array of strings, but entry " + std::to_string(i + 1) + " is " +
                 type_name(element.type()));
      }
      out.emplace_back(value->get(), element.source().begin);
    }
    return out;
  }

  void parse_tunnels(const Entry& entry, const std::string& key, Profile& profile) const {
    const auto names = string_array(entry, key);
    if (names.empty()) {
      fail(entry.position, key,
           "must name at least one tunnel interface (an empty list would block everything; "
           "remove the profile instead)");
    }
    if (names.size() > kMaxTunnelsPerProfile) {
      fail(entry.position, key,
           "at most " + std::to_string(kMaxTunnelsPerProfile) + " tunnels per profile, got " +
               std::to_string(names.size()));
    }
    for (const auto& [name, where] : names) {
      if (!is_valid_interface_name(name)) {
        fail(where, key,
             quote(name) +
                 " is not a valid interface name (1 to 15 bytes, not \".\" or \"..\", no '/', "
                 "':', whitespace or control characters)");
      }
      if (std::find(profile.tunnels.begin(), profile.tunnels.end(), name) !=
          profile.tunnels.end()) {
        fail(where, key, quote(name) + " is listed twice");
      }
      profile.tunnels.emplace_back(name);
    }
  }

  void parse_dns(const Entry& entry, const std::string& key, Profile& profile) const {
    const auto texts = string_array(entry, key);
    if (texts.size() > kMaxDnsPerProfile) {
      fail(entry.position, key,
           "at most " + std::to_string(kMaxDnsPerProfile) + " resolvers per profile, got " +
               std::to_string(texts.size()));
    }
    for (const auto& [text, where] : texts) {
      auto address = parse_ip_address(text);
      if (!address) {
        fail(where, key,
             quote(text) + (text.find('%') != std::string_view::npos
                                ? " has a zone id; write the address without %ZONE"
                                : " is not an IPv4 or IPv6 address"));
      }
      const auto bytes = mapped_bytes(*address);
      for (const IpAddress& seen : profile.dns) {
        if (mapped_bytes(seen) == bytes) {
          fail(where, key, quote(text) + " is listed twice (also as " + quote(seen.text) + ")");
        }
      }
      profile.dns.push_back(std::move(*address));
    }
  }

  void parse_allow_lan(const Entry& entry, const std::string& key, Profile& profile) const {
    for (const auto& [text, where] : string_array(entry, key)) {
      std::string why;
      auto cidr = parse_cidr(text, &why);
      if (!cidr) fail(where, key, why);
      // A /0 turns the kill switch off for a whole address family; that is never what
      // "reach the LAN" means, so it is refused rather than silently honoured.
      if (cidr->prefix_len == 0) {
        fail(where, key,
             quote(text) + " would let all traffic bypass the tunnel; list the LAN ranges instead");
      }
      for (const Cidr& seen : profile.allow_lan) {
        if (seen.address.family == cidr->address.family &&
            seen.address.bytes == cidr->address.bytes && seen.prefix_len == cidr->prefix_len) {
          fail(where, key, quote(text) + " is listed twice (also as " + quote(seen.text) + ")");
        }
      }
      profile.allow_lan.push_back(std::move(*cidr));
    }
  }

  std::string path_;
};

}  // namespace

std::string address_text(const IpAddress& address) {
  return format_address(address.family, address.bytes);
}

const Profile* Config::find_profile(std::string_view name) const {
  for (const Profile& profile : profiles) {
    if (profile.name == name) return &profile;
  }
  return nullptr;
}

Config parse_config(std::string_view toml_text, const std::string& path) {
  return Parser(path).parse(toml_text);
}

std::vector<std::string> config_warnings(
    const Config& config, const std::function<bool(const std::string&)>& link_exists) {
  std::vector<std::string> warnings;
  if (!config.find_profile(kDefaultProfile))
    warnings.push_back(
        "no profile named \"default\": ksrun and ksctl protect without "
        "--profile are refused, and processes placed directly in the "
        "protected tree's root are blocked");
  for (const Profile& p : config.profiles) {
    if (p.dns.empty())
      warnings.push_back("profile " + p.name +
                         " has no dns: its apps resolve no names (their "
                         "DNS queries are refused, since the system's resolver is outside the "
                         "tunnel); add the resolver your VPN gives you");
    for (const std::string& tunnel : p.tunnels)
      if (!link_exists(tunnel))
        warnings.push_back("profile " + p.name + ": tunnel " + tunnel +
                           " does not exist now: its apps are blocked until it does (normal "
                           "while the VPN is disconnected)");
  }
  return warnings;
}

Config load_config(const std::string& path) {
  // Plain POSIX I/O so the error carries the real errno (ENOENT, EACCES, EISDIR, ...).
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) throw_errno(path + ": cannot read");
  std::string text;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(path + ": cannot read");
    }
    if (n == 0) break;
    if (text.size() + static_cast<std::size_t>(n) > kMaxConfigBytes) {
      throw_errno(path + ": cannot read", EFBIG);
    }
    text.append(buf, static_cast<std::size_t>(n));
  }
  return parse_config(text, path);
}

// Mirrors the kernel's dev_valid_name(): 1..15 bytes (IFNAMSIZ - 1), not "." or "..", no
// '/', ':' or whitespace. The kernel's isspace() also matches byte 0xA0 (Latin-1 NBSP), so
// that byte is refused too. Control characters are allowed by the kernel but refused here:
// such a name cannot be typed in a config file on purpose and would garble every listing.
bool is_valid_interface_name(std::string_view name) {
  if (name.empty() || name.size() >= IFNAMSIZ) return false;
  if (name == "." || name == "..") return false;
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '/' || c == ':') return false;
    if (u <= 0x20 || u == 0x7f || u == 0xa0) return false;  // controls, NUL and space
  }
  return true;
}

// Dotted-quad IPv4 or RFC 4291 IPv6 text, exactly as inet_pton() accepts it: no zone ids
// ("fe80::1%eth0"), no shorthand IPv4 ("10.1"), no surrounding whitespace. IPv4-mapped IPv6
// ("::ffff:10.0.0.1") is accepted and kept as AF_INET6: the BPF maps store IPv4 in exactly
// that form, so it means the same thing to the kernel side as the plain IPv4 address.
std::optional<IpAddress> parse_ip_address(std::string_view text) {
  // inet_pton() reads a C string: an embedded NUL would silently truncate the input.
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN ||
      text.find('\0') != std::string_view::npos) {
    return std::nullopt;
  }
  const std::string copy(text);
  IpAddress address;
  address.family = copy.find(':') == std::string::npos ? AF_INET : AF_INET6;
  if (inet_pton(address.family, copy.c_str(), address.bytes.data()) != 1) return std::nullopt;
  address.text = copy;
  return address;
}

std::optional<Cidr> parse_cidr(std::string_view text) { return parse_cidr(text, nullptr); }

// "ADDRESS/LEN" or a bare "ADDRESS" (meaning /32 or /128). IPv4-mapped IPv6 prefixes such
// as "::ffff:192.168.0.0/112" are accepted and kept as given (AF_INET6, /112): the LAN map
// stores IPv4 mapped into IPv6, so that is the same entry as "192.168.0.0/16".
std::optional<Cidr> parse_cidr(std::string_view text, std::string* why_not) {
  const auto reject = [why_not](std::string why) -> std::optional<Cidr> {
    if (why_not) *why_not = std::move(why);
    return std::nullopt;
  };
  const std::size_t slash = text.find('/');
  const std::string_view address_text = text.substr(0, slash);
  if (address_text.find('%') != std::string_view::npos) {
    return reject(quote(text) + " has a zone id; write the prefix without %ZONE");
  }
  auto address = parse_ip_address(address_text);
  if (!address) {
    return reject(quote(text) +
                  " is not a CIDR (expected ADDRESS/PREFIX_LENGTH, e.g. 192.168.1.0/24)");
  }
  const int max_len = address->family == AF_INET ? 32 : 128;
  const char* family_name = address->family == AF_INET ? "IPv4" : "IPv6";

  int prefix_len = max_len;
  if (slash != std::string_view::npos) {
    // Plain decimal only: no sign, no leading zeros, no spaces ("/024" is a typo magnet).
    const std::string_view len_text = text.substr(slash + 1);
    const bool decimal = !len_text.empty() && len_text.size() <= 3 &&
                         std::all_of(len_text.begin(), len_text.end(),
                                     [](char c) { return c >= '0' && c <= '9'; }) &&
                         !(len_text.size() > 1 && len_text[0] == '0');
    int value = 0;
    if (decimal) {
      for (char c : len_text) value = value * 10 + (c - '0');
    }
    if (!decimal || value > max_len) {
      return reject(quote(text) + ": the prefix length must be a number from 0 to " +
                    std::to_string(max_len) + " for " + family_name);
    }
    prefix_len = value;
  }

  // Host bits must be zero: "192.168.1.5/24" is almost always a mistyped network or a
  // host address pasted by accident, and silently masking it would hide which one.
  std::array<std::uint8_t, 16> network = address->bytes;
  const int byte_count = max_len / 8;
  for (int bit = prefix_len; bit < max_len; ++bit) {
    network[static_cast<std::size_t>(bit / 8)] &=
        static_cast<std::uint8_t>(~(0x80u >> static_cast<unsigned>(bit % 8)));
  }
  if (!std::equal(network.begin(), network.begin() + byte_count, address->bytes.begin())) {
    return reject(std::string(text) + " has host bits set; did you mean " +
                  format_address(address->family, network) + "/" + std::to_string(prefix_len) +
                  "?");
  }

  Cidr cidr;
  cidr.address = std::move(*address);
  cidr.prefix_len = prefix_len;
  cidr.text = std::string(text);
  return cidr;
}

}  // namespace ks
