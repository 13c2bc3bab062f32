// `ksctl setup`'s eyes: links over rtnetlink, wg-quick files, resolvconf records, and
// systemd-resolved and NetworkManager over the system bus. Every source that cannot be read
// is reported, not fatal: a machine without NetworkManager is a normal machine.
#include <sys/socket.h>
#include <systemd/sd-bus.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bus.hpp"
#include "killswitch/error.hpp"
#include "killswitch/setup_plan.hpp"

namespace ks::setup {
namespace {

namespace fs = std::filesystem;
using namespace ks::systemd::bus;

constexpr std::uintmax_t kMaxFileBytes = 64 * 1024;  // a wg-quick file or resolvconf record

// The file's text, or nullopt with the reason in *why.
std::optional<std::string> read_small_file(const fs::path& path, std::string* why) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) {
    *why = ec.message();
    return std::nullopt;
  }
  if (size > kMaxFileBytes) {
    *why = "larger than 64 KiB";
    return std::nullopt;
  }
  std::ifstream in(path);
  if (!in) {
    *why = std::strerror(errno);
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void observe_wg_quick(const std::string& dir, Observations& seen) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    if (ec != std::errc::no_such_file_or_directory)
      seen.not_detected.push_back("wg-quick configurations in " + dir + ": " + ec.message() +
                                  (ec == std::errc::permission_denied ? " (run as root)" : ""));
    return;
  }
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const fs::path path = it->path();
    if (path.extension() != ".conf") continue;
    const std::string name = path.stem().string();
    if (!is_valid_interface_name(name)) continue;  // wg-quick would refuse it too
    std::string why;
    const auto text = read_small_file(path, &why);
    if (!text) {
      seen.not_detected.push_back("wg-quick configuration " + path.string() + ": " + why +
                                  (why == std::strerror(EACCES) ? " (run as root)" : ""));
      // Its interface is still a candidate, without DNS.
      seen.wg_quick.push_back(WgQuickConfig{.interface = name, .path = path.string(), .dns = {}});
      continue;
    }
    seen.wg_quick.push_back(
        WgQuickConfig{.interface = name, .path = path.string(), .dns = parse_wg_quick_dns(*text)});
  }
}

void observe_wireguard_sockets(const std::string& dir, Observations& seen) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    if (it->path().extension() == ".sock" && it->is_socket(ec))
      seen.wireguard_sockets.insert(it->path().stem().string());
  }
}

void observe_resolvconf(const std::vector<std::string>& dirs, Observations& seen) {
  for (const auto& dir : dirs) {
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      if (!it->is_regular_file(ec)) continue;
      std::string why;
      const auto text = read_small_file(it->path(), &why);
      if (!text) {
        seen.not_detected.push_back("resolvconf record " + it->path().string() + ": " + why);
        continue;
      }
      seen.resolvconf.push_back(
          ResolvconfRecord{.file = it->path().filename().string(),
                           .path = it->path().string(),
                           .nameservers = parse_resolv_conf_nameservers(*text)});
    }
  }
}

// A method call that does not start a service by D-Bus activation: setup looks, it does
// not change what runs.
int get_property(sd_bus* bus, const char* service, const char* path, const char* interface,
                 const char* property, const char* type, BusError& error, Message& reply) {
  sd_bus_message* call = nullptr;
  int r = sd_bus_message_new_method_call(bus, &call, service, path,
                                         "org.freedesktop.DBus.Properties", "Get");
  Message owned_call(call);
  if (r < 0) return r;
  if ((r = sd_bus_message_set_auto_start(call, 0)) < 0) return r;
  if ((r = sd_bus_message_append(call, "ss", interface, property)) < 0) return r;
  sd_bus_message* answer = nullptr;
  r = sd_bus_call(bus, call, 0, &error.e, &answer);
  reply.reset(answer);
  if (r < 0) return r;
  return sd_bus_message_enter_container(answer, 'v', type);
}

bool service_absent(const BusError& error) {
  return sd_bus_error_has_names(&error.e, "org.freedesktop.DBus.Error.ServiceUnknown",
                                "org.freedesktop.DBus.Error.NameHasNoOwner");
}

// systemd-resolved's Manager.DNS: a(iiay), (ifindex, family, address) for every resolver.
void observe_resolved(sd_bus* bus, Observations& seen) {
  BusError error;
  Message reply;
  int r = get_property(bus, "org.freedesktop.resolve1", "/org/freedesktop/resolve1",
                       "org.freedesktop.resolve1.Manager", "DNS", "a(iiay)", error, reply);
  if (r < 0) {
    seen.not_detected.push_back(service_absent(error) ? "systemd-resolved: not running"
                                                      : "systemd-resolved: " + error.text(r));
    return;
  }
  // Returns the first sd-bus error of the walk, or 0.
  const auto read_servers = [&](sd_bus_message* m) {
    int rc = sd_bus_message_enter_container(m, 'a', "(iiay)");
    if (rc < 0) return rc;
    while ((rc = sd_bus_message_enter_container(m, 'r', "iiay")) > 0) {
      std::int32_t ifindex = 0, family = 0;
      const void* bytes = nullptr;
      std::size_t size = 0;
      if ((rc = sd_bus_message_read(m, "ii", &ifindex, &family)) < 0) return rc;
      if ((rc = sd_bus_message_read_array(m, 'y', &bytes, &size)) < 0) return rc;
      if ((rc = sd_bus_message_exit_container(m)) < 0) return rc;
      const std::size_t want = family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
      if (ifindex < 0 || want == 0 || size != want) continue;
      ResolvedServer server;
      server.ifindex = static_cast<std::uint32_t>(ifindex);
      server.address.family = family;
      std::memcpy(server.address.bytes.data(), bytes, size);
      seen.resolved.push_back(server);
    }
    return rc;
  };
  if ((r = read_servers(reply.get())) < 0)
    seen.not_detected.push_back("systemd-resolved: malformed DNS property (" +
                                std::string(std::strerror(-r)) + ")");
}

std::optional<std::string> string_property(sd_bus* bus, const char* path, const char* interface,
                                           const char* property) {
  BusError error;
  Message reply;
  if (get_property(bus, "org.freedesktop.NetworkManager", path, interface, property, "s", error,
                   reply) < 0)
    return std::nullopt;
  const char* value = nullptr;
  if (sd_bus_message_read(reply.get(), "s", &value) < 0 || !value) return std::nullopt;
  return std::string(value);
}

std::optional<std::string> object_property(sd_bus* bus, const char* path, const char* interface,
                                           const char* property) {
  BusError error;
  Message reply;
  if (get_property(bus, "org.freedesktop.NetworkManager", path, interface, property, "o", error,
                   reply) < 0)
    return std::nullopt;
  const char* value = nullptr;
  if (sd_bus_message_read(reply.get(), "o", &value) < 0 || !value) return std::nullopt;
  return std::string(value);
}

std::vector<std::string> object_list(sd_bus* bus, const char* path, const char* interface,
                                     const char* property, BusError& error, int* rc) {
  std::vector<std::string> paths;
  Message reply;
  *rc = get_property(bus, "org.freedesktop.NetworkManager", path, interface, property, "ao", error,
                     reply);
  if (*rc < 0) return paths;
  if ((*rc = sd_bus_message_enter_container(reply.get(), 'a', "o")) < 0) return paths;
  const char* item = nullptr;
  while ((*rc = sd_bus_message_read(reply.get(), "o", &item)) > 0) paths.emplace_back(item);
  return paths;
}

// NetworkManager: its tunnel devices (tun 16, wireguard 29) with their active connection,
// and every active VPN connection's name.
void observe_networkmanager(sd_bus* bus, Observations& seen) {
  constexpr const char* kNm = "org.freedesktop.NetworkManager";
  constexpr const char* kDevice = "org.freedesktop.NetworkManager.Device";
  constexpr const char* kActive = "org.freedesktop.NetworkManager.Connection.Active";
  BusError error;
  int r = 0;
  const auto devices =
      object_list(bus, "/org/freedesktop/NetworkManager", kNm, "Devices", error, &r);
  if (r < 0) {
    seen.not_detected.push_back(service_absent(error) ? "NetworkManager: not running"
                                                      : "NetworkManager: " + error.text(r));
    return;
  }
  for (const auto& device : devices) {
    BusError type_error;
    Message reply;
    if (get_property(bus, kNm, device.c_str(), kDevice, "DeviceType", "u", type_error, reply) < 0)
      continue;
    std::uint32_t type = 0;
    if (sd_bus_message_read(reply.get(), "u", &type) < 0) continue;
    if (type != 16 && type != 29) continue;  // NM_DEVICE_TYPE_TUN, NM_DEVICE_TYPE_WIREGUARD
    NmDevice found;
    found.interface = string_property(bus, device.c_str(), kDevice, "Interface").value_or("");
    if (found.interface.empty()) continue;
    found.type = type == 29 ? "wireguard" : "tun";
    if (const auto active = object_property(bus, device.c_str(), kDevice, "ActiveConnection");
        active && *active != "/") {
      found.connection = string_property(bus, active->c_str(), kActive, "Id").value_or("");
      found.type = string_property(bus, active->c_str(), kActive, "Type").value_or(found.type);
    }
    seen.networkmanager.push_back(found);
  }
  BusError active_error;
  for (const auto& active : object_list(bus, "/org/freedesktop/NetworkManager", kNm,
                                        "ActiveConnections", active_error, &r)) {
    BusError vpn_error;
    Message reply;
    int vpn = 0;
    if (get_property(bus, kNm, active.c_str(), kActive, "Vpn", "b", vpn_error, reply) < 0 ||
        sd_bus_message_read(reply.get(), "b", &vpn) < 0 || !vpn)
      continue;
    seen.nm_vpn_connections.push_back(
        string_property(bus, active.c_str(), kActive, "Id").value_or("?"));
  }
}

}  // namespace

Observations observe(const Sources& sources) {
  Observations seen;
  try {
    LinkWatcher links;
    for (const auto& [index, link] : links.links()) seen.links.push_back(link);
  } catch (const Error& e) {
    seen.not_detected.push_back(std::string("network interfaces: ") + e.what());
  }
  observe_wireguard_sockets(sources.wireguard_socket_dir, seen);
  observe_wg_quick(sources.wireguard_dir, seen);
  observe_resolvconf(sources.resolvconf_dirs, seen);
  if (sources.system_bus) {
    sd_bus* raw = nullptr;
    const int r = sd_bus_open_system(&raw);
    Bus bus(raw);
    if (r < 0) {
      seen.not_detected.push_back("systemd-resolved and NetworkManager: no system D-Bus (" +
                                  std::string(std::strerror(-r)) + ")");
    } else {
      observe_resolved(bus.get(), seen);
      observe_networkmanager(bus.get(), seen);
    }
  }
  return seen;
}

}  // namespace ks::setup
