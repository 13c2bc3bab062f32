#include "killswitch/systemd_units.hpp"

#include <systemd/sd-bus.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "bus.hpp"
#include "killswitch/error.hpp"

namespace ks::systemd {
namespace {

using namespace bus;
constexpr std::size_t kUnitNameMax = 255;  // systemd's UNIT_NAME_MAX - 1

Bus system_bus() {
  sd_bus* bus = nullptr;
  int r = sd_bus_open_system(&bus);
  if (r < 0)
    throw Error("cannot connect to systemd on the system bus: " + std::string(std::strerror(-r)) +
                " (is this a systemd host?)");
  return Bus(bus);
}

std::string unit_path(sd_bus* bus, const std::string& unit) {
  BusError error;
  sd_bus_message* reply = nullptr;
  int r = sd_bus_call_method(bus, kDestination, kManagerPath, kManager, "LoadUnit", &error.e,
                             &reply, "s", unit.c_str());
  Message owned(reply);
  if (r < 0) throw Error("systemd cannot load " + unit + ": " + error.text(r));
  const char* path = nullptr;
  if ((r = sd_bus_message_read(reply, "o", &path)) < 0)
    throw Error("bad LoadUnit reply: " + std::string(std::strerror(-r)));
  return path;
}

std::string unit_property(const std::string& unit, const char* property) {
  Bus bus = system_bus();
  std::string path = unit_path(bus.get(), unit);
  BusError error;
  char* value = nullptr;
  int r = sd_bus_get_property_string(bus.get(), kDestination, path.c_str(),
                                     "org.freedesktop.systemd1.Unit", property, &error.e, &value);
  if (r < 0)
    throw Error("cannot read " + std::string(property) + " of " + unit + ": " + error.text(r));
  std::string result = value;
  std::free(value);
  return result;
}

bool valid_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' ||
         c == '_' || c == '.' || c == '-' || c == '@' || c == '\\';
}

}  // namespace

std::string service_name(const std::string& unit) {
  if (unit.empty()) throw Error("empty unit name");
  std::string name = unit;
  auto dot = name.rfind('.');
  std::string suffix = dot == std::string::npos ? "" : name.substr(dot);
  static const char* kOtherTypes[] = {".socket", ".target", ".timer",     ".path", ".mount",
                                      ".slice",  ".scope",  ".automount", ".swap", ".device"};
  for (const char* other : kOtherTypes)
    if (suffix == other)
      throw Error("'" + unit + "' is not a service: only services can be protected");
  if (suffix != ".service") name += ".service";
  if (name.size() > kUnitNameMax) throw Error("unit name too long: '" + unit + "'");
  for (char c : name)
    if (!valid_name_char(c))
      throw Error("invalid unit name '" + unit + "' (a unit name, not a path or a command)");
  std::string stem = name.substr(0, name.size() - 8);
  if (stem.empty() || stem.front() == '.' || stem.front() == '-' || stem.front() == '@')
    throw Error("invalid unit name '" + unit + "'");
  if (stem.back() == '@')
    throw Error("'" + unit + "' is a template: protect an instance (name@instance.service)");
  return name;
}

std::string profile_slice(const std::string& profile) { return "killswitch-" + profile + ".slice"; }

std::string drop_in_text(const std::string& profile, const std::string& ksctl_path) {
  return "# Written by `ksctl systemd protect`; remove it with `ksctl systemd unprotect`.\n"
         "# The service runs in the protected slice of profile \"" +
         profile +
         "\": it can send only through\n"
         "# that profile's tunnels. It needs Killswitch's enforcement, and refuses to start\n"
         "# when its own cgroup is not covered by it (ExecStartPre, with full privileges).\n"
         "[Unit]\n"
         "Requires=ksd.service\n"
         "After=ksd.service killswitch-early.service\n"
         "\n"
         "[Service]\n"
         "Slice=" +
         profile_slice(profile) +
         "\n"
         "ExecStartPre=+" +
         ksctl_path +
         " verify --self\n"
         "# Packet sockets bypass every inet hook; CAP_NET_ADMIN could detach programs.\n"
         "CapabilityBoundingSet=~CAP_NET_RAW CAP_NET_ADMIN\n";
}

std::string drop_in_path(const std::string& unit_dir, const std::string& service) {
  return unit_dir + "/" + service + ".d/" + kDropInName;
}

std::string load_state(const std::string& unit) { return unit_property(unit, "LoadState"); }

std::string active_state(const std::string& unit) { return unit_property(unit, "ActiveState"); }

void daemon_reload() {
  Bus bus = system_bus();
  BusError error;
  // Reload returns once the manager has reloaded its configuration.
  int r = sd_bus_call_method(bus.get(), kDestination, kManagerPath, kManager, "Reload", &error.e,
                             nullptr, "");
  if (r < 0) throw Error("systemd daemon-reload failed: " + error.text(r));
}

void stop_unit(const std::string& unit) {
  Bus bus = system_bus();
  BusError error;
  int r = sd_bus_call_method(bus.get(), kDestination, kManagerPath, kManager, "StopUnit", &error.e,
                             nullptr, "ss", unit.c_str(), "replace");
  if (r < 0 && !sd_bus_error_has_name(&error.e, "org.freedesktop.systemd1.NoSuchUnit"))
    throw Error("systemd cannot stop " + unit + ": " + error.text(r));
}

}  // namespace ks::systemd
