// ksctl verify: the kill-switch article's five-minute manual test, automated against the
// live installation, without touching the user's tunnel:
//   1. ksd answers; the programs are pinned (each pin readable, as root) and in force on the
//      protected tree;
//   2. a throw-away protected probe in the profile (default: "default") proves its own
//      protection (ksrun's canaries) and sends a few datagrams to TEST-NET-1; with the
//      tunnel up, ksd's counters must show every one leaving through the tunnel and none
//      refused;
//   3. a second probe in ksd's tunnel-less profile (kVerifyProfile) tries a TCP connect and
//      UDP sends: each must fail at once, and the counters must show nothing at all left
//      any interface.
// Each probe is a child process that ksd moves into its own protected cgroup, exactly as
// ksrun is; the parent reads the probe's counters from ksd while the child still lives.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>

#include "commands.hpp"
#include "killswitch/config.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/ipc.hpp"
#include "killswitch/launch_proof.hpp"
#include "output.hpp"

namespace ksctl {
namespace {

// TEST-NET-1 (RFC 5737), the discard port: never routed on the internet, harmless.
constexpr const char* kProbeAddress = "192.0.2.1";
constexpr int kProbeUdpPort = 9;
constexpr int kProbeTcpPort = 443;
constexpr int kProbeSends = 3;
constexpr double kFastMs = 100;  // "at once": a refused connect takes microseconds

std::string errno_name(int err) {
  switch (err) {
    case 0:
      return "ok";
    case ENETUNREACH:
      return "ENETUNREACH";
    case EPERM:
      return "EPERM";
    case EHOSTUNREACH:
      return "EHOSTUNREACH";
    case ETIMEDOUT:
      return "ETIMEDOUT";
    case ECONNREFUSED:
      return "ECONNREFUSED";
    case EINPROGRESS:
      return "EINPROGRESS";
  }
  return std::strerror(err);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

sockaddr_in probe_addr(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, kProbeAddress, &a.sin_addr);
  return a;
}

// In the child, inside its protected cgroup: what the probe's sends and connect did.
nlohmann::json probe_traffic(bool with_connect) {
  nlohmann::json r;
  r["sends"] = nlohmann::json::array();
  ks::UniqueFd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in dst = probe_addr(kProbeUdpPort);
  for (int i = 0; i < kProbeSends; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    ssize_t n =
        ::sendto(udp.get(), "ksctl verify", 12, 0, reinterpret_cast<sockaddr*>(&dst), sizeof(dst));
    int err = n < 0 ? errno : 0;
    r["sends"].push_back({{"result", errno_name(err)}, {"ms", ms_since(t0)}});
  }
  if (with_connect) {
    ks::UniqueFd tcp(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_in t = probe_addr(kProbeTcpPort);
    auto t0 = std::chrono::steady_clock::now();
    int rc = ::connect(tcp.get(), reinterpret_cast<sockaddr*>(&t), sizeof(t));
    int err = rc < 0 ? errno : 0;
    r["connect"] = {{"result", errno_name(err)}, {"ms", ms_since(t0)}};
  }
  return r;
}

[[noreturn]] void run_child(const std::string& socket_path, const std::string& profile,
                            bool verify_probe, int out_fd, int in_fd) {
  nlohmann::json result;
  try {
    nlohmann::json request = {
        {"op", "launch"},
        {"profile", profile},
        {"verify_probe", verify_probe},
        {"argv", {"ksctl", "verify", verify_probe ? "(tunnel-less probe)" : "(tunnel probe)"}}};
    nlohmann::json reply = ks::ipc::call(socket_path, request);
    if (!reply.value("ok", false))
      throw ks::Error("ksd refused the probe: " + reply.value("error", std::string("?")));
    ks::prove_protection(reply);
    ks::drop_bypass_capabilities();
    result = probe_traffic(verify_probe);
    result["cgroup"] = reply.value("cgroup", std::string());
  } catch (const std::exception& e) {
    result = {{"error", e.what()}};
  }
  std::string line = ks::ipc::message_text(result) + "\n";
  (void)!::write(out_fd, line.data(), line.size());
  char c;
  (void)!::read(in_fd, &c, 1);  // until the parent has read our counters
  ::_exit(0);
}

// The implicit moves of nlohmann::json members do not throw; clang-tidy cannot see through
// the library's assertions.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct Probe {
  nlohmann::json result;    // the child's report
  nlohmann::json counters;  // ksd's counters for the child's cgroup (null if not listed)
};

Probe run_probe(const std::string& socket_path, const std::string& profile, bool verify_probe) {
  int to_parent[2], to_child[2];
  if (::pipe2(to_parent, O_CLOEXEC) != 0 || ::pipe2(to_child, O_CLOEXEC) != 0)
    ks::throw_errno("pipe");
  pid_t pid = ::fork();
  if (pid < 0) ks::throw_errno("fork");
  if (pid == 0) {
    ::close(to_parent[0]);
    ::close(to_child[1]);
    run_child(socket_path, profile, verify_probe, to_parent[1], to_child[0]);
  }
  ::close(to_parent[1]);
  ::close(to_child[0]);
  ks::UniqueFd from_child(to_parent[0]), release(to_child[1]);

  std::string text;
  char buf[4096];
  ssize_t n;
  while (text.find('\n') == std::string::npos &&
         (n = ::read(from_child.get(), buf, sizeof(buf))) > 0)
    text.append(buf, static_cast<std::size_t>(n));
  Probe probe;
  probe.result = nlohmann::json::parse(text, nullptr, false);
  if (probe.result.is_discarded()) probe.result = {{"error", "the probe died without a report"}};
  if (!probe.result.contains("error")) {
    try {
      nlohmann::json list = ks::ipc::call(socket_path, {{"op", "list"}});
      for (const auto& app : list["apps"])
        if (app.value("cgroup", std::string()) == probe.result.value("cgroup", std::string()))
          probe.counters = app["counters"];
    } catch (const ks::Error& e) {
      probe.result["error"] = std::string("cannot read the probe's counters: ") + e.what();
    }
  }
  release.reset();  // the child exits
  int status = 0;
  ::waitpid(pid, &status, 0);
  return probe;
}

std::uint64_t counter(const nlohmann::json& c, const char* key) {
  return c.is_object() ? c.value(key, std::uint64_t{0}) : 0;
}

}  // namespace

int verify_command(const VerifyOptions& options) {
  Checks checks(options.json);

  // ---- 1. daemon, pins, attachment ----
  nlohmann::json status;
  bool daemon_down = false;  // exit 3, as for every command that needs ksd (ksctl(8))
  try {
    status = ks::ipc::call(options.socket_path, {{"op", "status"}});
  } catch (const ks::Error& e) {
    daemon_down = true;
    checks.line(ks::Verdict::kFail, "daemon", e.what(), "start ksd (systemctl start ksd)");
  }
  if (!status.is_null()) {
    checks.line(ks::Verdict::kOk, "daemon",
                "ksd " + status.value("version", std::string("?")) + " (pid " +
                    std::to_string(status.value("pid", 0)) + ") answers");
    const auto& programs = status["programs"];
    if (::geteuid() == 0) {
      try {
        ks::ProgramIds pinned = ks::Enforcement::pinned_program_ids(options.pin_dir);
        bool same = true;
        for (const auto& [hook, id] : pinned) same = same && programs["ids"].value(hook, 0u) == id;
        checks.line(same ? ks::Verdict::kOk : ks::Verdict::kFail, "pins",
                    same ? std::to_string(pinned.size()) + " programs pinned in " + options.pin_dir
                         : "the pinned links run other programs than ksd loaded",
                    "restart ksd: it re-pins and swaps its programs in");
      } catch (const ks::Error& e) {
        checks.line(ks::Verdict::kFail, "pins", e.what(),
                    "restart ksd (systemctl restart ksd): it pins and attaches again");
      }
    } else {
      checks.line(programs.value("pinned", false) ? ks::Verdict::kOk : ks::Verdict::kFail, "pins",
                  programs.value("pinned", false) ? "ksd reports every program pinned"
                                                  : "ksd reports missing pins",
                  "restart ksd");
    }
    checks.line(
        programs.value("attached", false) ? ks::Verdict::kOk : ks::Verdict::kFail, "attached",
        programs.value("attached", false)
            ? "every program is in force on " + status.value("cgroup_root", std::string())
            : "not in force on the protected tree: " + programs.value("missing", std::string("?")),
        "restart ksd: it attaches again");
  }

  // ---- 2. through the tunnel ----
  std::string traffic;
  if (!status.is_null()) {
    // Sockets of another network namespace get loopback only, whatever the tunnel does:
    // the probes would prove nothing.
    struct stat own {};
    if (::stat("/proc/self/ns/net", &own) == 0 && status.contains("netns_inode") &&
        status["netns_inode"].get<std::uint64_t>() != own.st_ino) {
      checks.line(ks::Verdict::kFail, "netns",
                  "ksctl runs in another network namespace than ksd, so its probes cannot "
                  "test the tunnel",
                  "run it in ksd's: nsenter --net=/proc/" + std::to_string(status.value("pid", 0)) +
                      "/ns/net ksctl verify");
      status = nullptr;
    }
  }
  if (!status.is_null()) {
    auto profile = status["profiles"].find(options.profile);
    if (profile == status["profiles"].end()) {
      checks.line(ks::Verdict::kFail, "profile",
                  "no profile \"" + options.profile + "\" in the configuration",
                  "ksctl verify --profile NAME, with NAME from ksctl status");
    } else {
      traffic = profile->value("traffic", std::string());
      Probe p = run_probe(options.socket_path, options.profile, false);
      const std::string check = "tunnel (" + options.profile + ")";
      if (p.result.contains("error")) {
        checks.line(ks::Verdict::kFail, check, p.result.value("error", std::string()));
      } else {
        std::size_t sent = 0;
        for (const auto& s : p.result["sends"]) sent += s.value("result", std::string()) == "ok";
        const std::uint64_t allowed = counter(p.counters, "allowed_packets");
        const std::uint64_t blocked = counter(p.counters, "blocked");
        if (traffic.rfind("blocked", 0) == 0) {
          checks.line(sent == 0 && allowed == 0 ? ks::Verdict::kSkip : ks::Verdict::kFail, check,
                      sent == 0 && allowed == 0
                          ? "traffic is " + traffic + ": the probe's sends were refused and " +
                                "nothing left, so the way through the tunnel cannot be tested now"
                          : "traffic is " + traffic + ", yet " + std::to_string(allowed) +
                                " probe packet(s) left",
                      "bring the VPN up and run ksctl verify again");
        } else if (sent == static_cast<std::size_t>(kProbeSends) && allowed >= sent &&
                   blocked == 0) {
          checks.line(ks::Verdict::kOk, check,
                      "the protected probe's " + std::to_string(sent) +
                          " datagrams left through the tunnel; none was refused or dropped");
        } else {
          checks.line(ks::Verdict::kFail, check,
                      std::to_string(sent) + " of " + std::to_string(kProbeSends) +
                          " probe sends succeeded; ksd counted " + std::to_string(allowed) +
                          " packets through the tunnel and " + std::to_string(blocked) +
                          " refused or dropped (ksctl events shows why)",
                      "check the tunnel's routes and ksctl events");
        }
      }
    }

    // ---- 3. tunnel missing ----
    Probe p = run_probe(options.socket_path, options.profile, true);
    const std::string check = "no tunnel";
    if (p.result.contains("error")) {
      checks.line(ks::Verdict::kFail, check, p.result.value("error", std::string()));
    } else {
      bool fast = true, refused = true;
      double worst = 0;
      auto judge = [&](const nlohmann::json& r) {
        std::string result = r.value("result", std::string());
        refused = refused && (result == "ENETUNREACH" || result == "EPERM");
        worst = std::max(worst, r.value("ms", 0.0));
        fast = fast && r.value("ms", 0.0) < kFastMs;
      };
      for (const auto& s : p.result["sends"]) judge(s);
      judge(p.result["connect"]);
      const std::uint64_t allowed = counter(p.counters, "allowed_packets");
      const std::uint64_t blocked = counter(p.counters, "blocked");
      const bool counted = p.counters.is_object() && blocked >= kProbeSends + 1;
      char worst_text[32];
      std::snprintf(worst_text, sizeof(worst_text), "%.2f ms", worst);
      if (refused && fast && allowed == 0 && counted) {
        checks.line(ks::Verdict::kOk, check,
                    "with its tunnel missing, the probe's connect and sends failed at once "
                    "(" +
                        p.result["connect"].value("result", std::string()) + ", at most " +
                        worst_text + ") and nothing left any interface (" +
                        std::to_string(allowed) + " packets allowed, " + std::to_string(blocked) +
                        " attempts refused)");
      } else {
        checks.line(ks::Verdict::kFail, check,
                    std::string("with its tunnel missing: ") +
                        (refused ? "" : "a connect or send was NOT refused; ") +
                        (fast ? "" : std::string("a refusal took ") + worst_text + "; ") +
                        std::to_string(allowed) + " packet(s) left, " + std::to_string(blocked) +
                        " attempt(s) counted as refused",
                    "run ksctl doctor; see ksctl events");
      }
    }
  }

  if (options.json) {
    std::cout << json_text({{"ok", !checks.failed()}, {"checks", checks.all()}}) << "\n";
  } else {
    std::printf("%s\n", checks.failed() ? red("the kill switch is NOT working as it should").c_str()
                                        : green("the kill switch works").c_str());
  }
  if (daemon_down) return kDaemonDown;
  return checks.failed() ? kFailed : kOk;
}

}  // namespace ksctl
