// ksctl doctor: can this machine run the kill switch, and is it set up so that it does?
// The machine (kernel, BPF, cgroup2, bpffs, BTF, privileges, firewall, the guarantees)
// comes from core's diagnose(); the setup a user can get wrong is checked here: the
// configuration, the daemon and whether this user can reach it, the runtime directory,
// the killswitch group. Fixes fit the host (systemd or not).
#include <grp.h>
#include <net/if.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "commands.hpp"
#include "killswitch/config.hpp"
#include "killswitch/diagnostics.hpp"
#include "killswitch/error.hpp"
#include "killswitch/ipc.hpp"
#include "killswitch/transient_scopes.hpp"
#include "output.hpp"

namespace ksctl {
namespace {

using ks::Diagnosis;
using ks::Verdict;

Diagnosis make(std::string check, Verdict verdict, std::string detail, std::string fix = "") {
  return Diagnosis{std::move(check), verdict, std::move(detail), std::move(fix), false};
}

std::string start_ksd_fix() {
  return ks::systemd::is_systemd_host()
             ? "systemctl enable --now killswitch-early.service ksd.service"
             : "start ksd (by hand: ksd --config /etc/killswitch/config.toml; at boot without "
               "systemd: /etc/init.d/killswitch, see docs/systemd.md)";
}

// The configuration: there, valid, and what in it is likely wrong.
std::vector<Diagnosis> check_config(const std::string& path, bool& set_up) {
  std::vector<Diagnosis> out;
  if (::access(path.c_str(), F_OK) != 0) {
    set_up = false;
    out.push_back(make("config", Verdict::kWarn,
                       "no configuration file at " + path + ": not set up",
                       "ksctl setup --write (with the VPN connected: it finds the tunnels and "
                       "their DNS), or write one (killswitch.conf(5)); check it with ksd --check "
                       "--config " +
                           path));
    return out;
  }
  ks::Config config;
  try {
    config = ks::load_config(path);
  } catch (const ks::Error& e) {
    set_up = false;
    out.push_back(
        make("config", Verdict::kFail, e.what(),
             "fix the file; ksd refuses it as it is (ksd --check --config " + path + ")"));
    return out;
  }
  std::string names;
  for (const auto& p : config.profiles) names += (names.empty() ? "" : ", ") + p.name;
  out.push_back(
      make("config", Verdict::kOk,
           path + ": " + std::to_string(config.profiles.size()) + " profile(s): " + names));
  for (const std::string& w : ks::config_warnings(
           config, [](const std::string& name) { return ::if_nametoindex(name.c_str()) != 0; }))
    out.push_back(make("config warning", Verdict::kWarn, w,
                       "ksctl setup shows the tunnels and resolvers this machine has"));
  return out;
}

// The socket's directory must let every user through (0755): with 0700 every unprivileged
// ksrun fails with "Permission denied".
Diagnosis check_runtime_dir(const std::string& socket_path) {
  const std::string dir = socket_path.substr(0, socket_path.find_last_of('/'));
  struct stat st {};
  if (dir.empty() || ::stat(dir.c_str(), &st) != 0)
    return make("runtime directory", Verdict::kWarn, dir + " does not exist (ksd makes it)",
                start_ksd_fix());
  char mode[8];
  std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
  if ((st.st_mode & S_IXOTH) == 0)
    return make("runtime directory", Verdict::kFail,
                dir + " has mode " + mode +
                    ": users other than its owner cannot reach ksd's socket, so their ksrun fails",
                "chmod 755 " + dir + " (ksd repairs its default /run/killswitch when it starts)");
  return make("runtime directory", Verdict::kOk, dir + " (mode " + mode + ")");
}

// ksd answering, as this user.
Diagnosis check_daemon(const std::string& socket_path, bool& set_up) {
  try {
    const nlohmann::json st = ks::ipc::call(socket_path, {{"op", "status"}}, 3000);
    const bool attached = st.contains("programs") && st["programs"].value("attached", false);
    return make("daemon", attached ? Verdict::kOk : Verdict::kFail,
                "ksd " + st.value("version", std::string("?")) + " (pid " +
                    std::to_string(st.value("pid", 0)) + ") answers at " + socket_path +
                    (attached ? "; its programs are in force" : "; its programs are NOT in force"),
                "ksctl verify says what is missing");
  } catch (const ks::Error& e) {
    set_up = false;
    if (e.sys_errno() == EACCES)
      return make("daemon", Verdict::kFail,
                  "this user may not connect to " + socket_path + ": " + e.what(),
                  "the socket is 0666 and its directory 0755 when ksd made them; restart ksd");
    return make("daemon", Verdict::kWarn, std::string("not running: ") + e.what(), start_ksd_fix());
  }
}

// Who may change things: root and the killswitch group.
Diagnosis check_group() {
  const group* g = ::getgrnam("killswitch");
  if (!g)
    return make("group", Verdict::kWarn,
                "no killswitch group: only root may reload, protect or tear down",
                "groupadd --system killswitch; usermod -aG killswitch USER");
  return make("group", Verdict::kOk,
              "killswitch group (gid " + std::to_string(g->gr_gid) + ") may reload and protect");
}

}  // namespace

int doctor_command(const DoctorOptions& options) {
  Checks checks(options.json);
  bool warned = false;
  bool set_up = true;
  std::vector<Diagnosis> all = ks::diagnose(options.pin_dir);
  bool machine_failed = false;
  for (const Diagnosis& d : all) machine_failed = machine_failed || d.verdict == Verdict::kFail;
  for (Diagnosis& d : check_config(options.config_path, set_up)) all.push_back(std::move(d));
  all.push_back(check_runtime_dir(options.socket_path));
  all.push_back(check_daemon(options.socket_path, set_up));
  all.push_back(check_group());
  for (const Diagnosis& d : all) {
    checks.line(d.verdict, d.check, d.detail, d.fix);
    warned = warned || d.verdict == Verdict::kWarn;
  }
  if (options.json) {
    std::cout << json_text({{"ok", !checks.failed()},
                            {"set_up", set_up && !checks.failed()},
                            {"checks", checks.all()}})
              << "\n";
  } else if (machine_failed) {
    std::printf("%s\n", red("this system cannot run the kill switch as it is").c_str());
  } else if (checks.failed()) {
    std::printf(
        "%s\n",
        red("this system can run the kill switch, but its setup is broken (FAIL above)").c_str());
  } else if (!set_up) {
    std::printf("%s\n",
                yellow("this system can run the kill switch, but it is not set up yet (see the "
                       "warnings)")
                    .c_str());
  } else {
    std::printf("%s\n", warned ? yellow("the kill switch runs here; see the warnings").c_str()
                               : green("the kill switch runs here").c_str());
  }
  return checks.failed() ? kFailed : kOk;
}

}  // namespace ksctl
