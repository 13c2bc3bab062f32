// ksctl — the Killswitch admin CLI: status, list, reload and teardown.
//
// Read commands ask ksd over the admin socket; teardown works on the pinned state
// directly, so protection can be removed even with ksd gone.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include "killswitch/cgroup.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/error.hpp"
#include "killswitch/ipc.hpp"
#include "killswitch/routing.hpp"

namespace {

// Exit codes (documented in docs/ksctl.md).
constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kUsage = 2;
constexpr int kDaemonDown = 3;

// One JSON document: indented for a person at a terminal, one line for scripts.
std::string json_text(const nlohmann::json& j) {
  return ::isatty(STDOUT_FILENO) ? j.dump(2) : j.dump();
}

bool color_enabled() { return ::isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR"); }

std::string paint(const std::string& text, const char* code) {
  return color_enabled() ? std::string("\033[") + code + "m" + text + "\033[0m" : text;
}

std::string state_word(const std::string& state) {
  if (state == "up") return paint(state, "32");
  if (state == "down") return paint(state, "33");
  return paint(state, "31");
}

std::string pad(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

void print_status(const nlohmann::json& s) {
  std::printf("daemon:         %s (pid %d, version %s)\n", paint("running", "32").c_str(),
              s.value("pid", 0), s.value("version", std::string("?")).c_str());
  const auto& programs = s["programs"];
  bool attached = programs.value("attached", false);
  bool pinned = programs.value("pinned", false);
  std::printf("enforcement:    %s, %s (%s)\n",
              attached ? paint("attached", "32").c_str() : paint("NOT ATTACHED", "31").c_str(),
              pinned ? "pinned" : paint("NOT PINNED", "31").c_str(),
              s.value("cgroup_root", std::string()).c_str());
  std::printf("protected apps: %zu\n", s.value("protected_apps", std::size_t{0}));
  std::printf("blocked:        %llu\n",
              static_cast<unsigned long long>(s.value("blocked_total", std::uint64_t{0})));
  for (const auto& [name, p] : s["profiles"].items()) {
    std::printf("\nprofile %s: %s\n", name.c_str(), p.value("traffic", std::string()).c_str());
    for (const auto& t : p["tunnels"]) {
      std::string families;
      if (t.value("ipv4", false)) families += " ipv4";
      if (t.value("ipv6", false)) families += " ipv6";
      std::printf("  tunnel %s %s", pad(t.value("name", std::string()), 16).c_str(),
                  state_word(t.value("state", std::string())).c_str());
      if (t.value("ifindex", 0u))
        std::printf("  ifindex %u%s", t.value("ifindex", 0u), families.c_str());
      std::printf("\n");
    }
    if (!p["dns"].empty()) std::printf("  dns       %s\n", p["dns"].dump().c_str());
    if (!p["allow_lan"].empty()) std::printf("  allow_lan %s\n", p["allow_lan"].dump().c_str());
  }
}

void print_list(const nlohmann::json& l) {
  const auto& apps = l["apps"];
  if (apps.empty()) {
    std::printf("no protected apps\n");
    return;
  }
  std::printf("%s %s %s %s %s\n", pad("PROFILE", 10).c_str(), pad("PIDS", 16).c_str(),
              pad("ALLOWED", 10).c_str(), pad("BLOCKED", 10).c_str(), "COMMAND");
  for (const auto& a : apps) {
    std::string pids;
    for (const auto& p : a["pids"])
      pids += (pids.empty() ? "" : ",") + std::to_string(p.get<int>());
    std::printf("%s %s %s %s %s\n", pad(a.value("profile", std::string()), 10).c_str(),
                pad(pids, 16).c_str(),
                pad(std::to_string(a.value("allowed_packets", std::uint64_t{0})), 10).c_str(),
                pad(std::to_string(a.value("blocked_packets", std::uint64_t{0})), 10).c_str(),
                a.value("command", std::string()).c_str());
  }
}

int teardown(const std::string& pin_dir, const std::string& slice, bool kill_apps) {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "ksctl: teardown needs root\n");
    return kFailed;
  }
  std::string root = ks::find_cgroup2_mount() + "/" + slice;
  if (ks::cgroup_populated(root)) {
    if (!kill_apps) {
      std::fprintf(stderr,
                   "ksctl: protected processes are still running in %s; removing protection "
                   "would let them send outside the tunnel. Stop them, or pass --kill-apps.\n",
                   root.c_str());
      return kFailed;
    }
    // cgroup.kill (5.14+) kills the whole subtree at once, including new forks.
    FILE* f = std::fopen((root + "/cgroup.kill").c_str(), "w");
    if (!f || std::fputs("1", f) < 0 || std::fclose(f) != 0) {
      std::fprintf(stderr, "ksctl: cannot kill the processes in %s\n", root.c_str());
      return kFailed;
    }
    for (int i = 0; i < 100 && ks::cgroup_populated(root); ++i) ::usleep(20000);
  }
  ks::Enforcement::remove_pins(pin_dir);
  // The steering rules and tables live in this network namespace (ksd's, normally).
  ks::PolicyRouting().remove_all();
  if (!ks::remove_cgroup_tree(root)) {
    std::fprintf(stderr, "ksctl: could not remove %s\n", root.c_str());
    return kFailed;
  }
  std::printf("protection removed: unpinned %s, removed %s\n", pin_dir.c_str(), root.c_str());
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path = ks::ipc::default_socket_path();
  bool json = false;

  CLI::App app{"ksctl - administer the Killswitch VPN kill switch"};
  app.set_version_flag("--version", std::string("ksctl ") + KS_VERSION);
  app.add_option("--socket", socket_path,
                 "ksd admin socket (default: $KILLSWITCH_SOCKET or /run/killswitch/ksd.sock)");
  std::string pin_dir = "/sys/fs/bpf/killswitch";
  app.add_option("--pin-dir", pin_dir,
                 "pin directory, read when ksd is down (status) or removed (teardown)")
      ->capture_default_str();
  app.require_subcommand(1);

  auto* status = app.add_subcommand("status", "daemon, enforcement, tunnels and totals");
  status->add_flag("--json", json, "print one JSON document");
  auto* list = app.add_subcommand("list", "one row per protected app");
  list->add_flag("--json", json, "print one JSON document");
  app.add_subcommand("reload", "re-read the configuration (a bad file changes nothing)");

  int protect_pid = 0;
  std::string protect_profile = "default";
  auto* protect = app.add_subcommand(
      "protect", "adopt a running process (refused if it already holds network sockets)");
  protect->add_option("--pid", protect_pid, "process id")->required()->check(CLI::PositiveNumber);
  protect->add_option("--profile", protect_profile, "profile")->capture_default_str();

  std::string slice = "killswitch.slice";
  bool kill_apps = false;
  auto* down = app.add_subcommand(
      "teardown", "remove protection: unpin the programs and remove the protected tree");
  down->add_option("--slice", slice, "protected tree name")->capture_default_str();
  down->add_flag("--kill-apps", kill_apps, "kill protected processes first");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }

  try {
    if (down->parsed()) return teardown(pin_dir, slice, kill_apps);

    nlohmann::json request;
    if (status->parsed())
      request = {{"op", "status"}};
    else if (list->parsed())
      request = {{"op", "list"}};
    else if (protect->parsed())
      request = {{"op", "protect"}, {"pid", protect_pid}, {"profile", protect_profile}};
    else
      request = {{"op", "reload"}};

    nlohmann::json reply;
    try {
      reply = ks::ipc::call(socket_path, request);
    } catch (const ks::Error& e) {
      if (status->parsed()) {
        // Say so, but also that enforcement does not depend on the daemon.
        bool pinned = ks::Enforcement::pins_present(pin_dir);
        if (json) {
          std::cout << nlohmann::json{
              {"daemon", "not running"}, {"error", e.what()}, {"programs", {{"pinned", pinned}}}};
          std::cout << "\n";
        } else {
          std::printf("daemon:      %s (%s)\n", paint("not running", "31").c_str(), e.what());
          std::printf("enforcement: %s\n",
                      pinned
                          ? "still pinned: protected apps stay blocked from non-tunnel interfaces"
                          : "no pinned programs found (or not readable without root)");
        }
        return kDaemonDown;
      }
      std::fprintf(stderr, "ksctl: %s\n", e.what());
      return kDaemonDown;
    }
    if (!reply.value("ok", false)) {
      std::fprintf(stderr, "ksctl: %s\n", reply.value("error", std::string("failed")).c_str());
      return kFailed;
    }
    reply.erase("ok");
    if (json) {
      std::cout << json_text(reply) << "\n";
    } else if (status->parsed()) {
      print_status(reply);
    } else if (list->parsed()) {
      print_list(reply);
    } else if (protect->parsed()) {
      std::printf("process %d protected in %s\n", protect_pid,
                  reply.value("cgroup", std::string()).c_str());
    } else {
      std::printf("configuration reloaded\n");
    }
    return kOk;
  } catch (const ks::Error& e) {
    std::fprintf(stderr, "ksctl: %s\n", e.what());
    return kFailed;
  }
}
