// Protecting systemd services: the drop-in that moves a service into the protected slice,
// and the few manager calls ksctl needs (over sd-bus). The text and name rules are pure
// functions (unit-tested); the bus calls talk to the running systemd.
#pragma once

#include <string>

namespace ks::systemd {

// The drop-in file name ksctl owns inside UNIT.d/.
inline constexpr const char* kDropInName = "50-killswitch.conf";
inline constexpr const char* kDefaultUnitDir = "/etc/systemd/system";

// "qbittorrent" -> "qbittorrent.service"; "x.service" stays. Only services can be
// protected (Slice= and ExecStartPre= are service settings). Throws ks::Error for empty,
// over-long, path-like or otherwise invalid names, and for other unit types.
std::string service_name(const std::string& unit);

// The slice a profile's services run in: killswitch-<profile>.slice (systemd nests it
// under killswitch.slice by its name).
std::string profile_slice(const std::string& profile);

// The whole drop-in text for a service of `profile`; ksctl_path is the absolute path of
// the ksctl binary for ExecStartPre.
std::string drop_in_text(const std::string& profile, const std::string& ksctl_path);

// <unit_dir>/<service>.d/50-killswitch.conf
std::string drop_in_path(const std::string& unit_dir, const std::string& service);

// Manager calls (system bus). Throw ks::Error with the bus error message.
// LoadState of a unit ("loaded", "not-found", "masked", ...).
std::string load_state(const std::string& unit);
// ActiveState ("active", "inactive", "failed", ...).
std::string active_state(const std::string& unit);
// systemctl daemon-reload, waiting until the manager has reloaded.
void daemon_reload();
// systemctl stop UNIT (job mode "replace"), without waiting for the job. A unit systemd
// does not know is not an error.
void stop_unit(const std::string& unit);

}  // namespace ks::systemd
