// ksrun — run a program (and all its descendants) inside a protected cgroup.
//
// The order is the point: ask ksd for a protected cgroup and be moved into it, prove
// that enforcement judges this very process, shed the capabilities that could get
// around it, and only then exec. Any failure before exec exits 125 and the command
// never runs.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "killswitch/cgroup.hpp"
#include "killswitch/config.hpp"
#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/ipc.hpp"
#include "killswitch/launch_proof.hpp"
#include "killswitch/launcher_args.hpp"
#include "killswitch/proc.hpp"

namespace {

constexpr int kRefused = 125;  // like env(1)/chroot(1): the launcher itself failed
constexpr int kNotExecutable = 126;
constexpr int kNotFound = 127;
constexpr int kReplyTimeoutMs = 10000;

[[noreturn]] void refuse(const std::string& command, const std::string& why) {
  std::fprintf(stderr, "ksrun: %s\nksrun: refusing to run %s unprotected\n", why.c_str(),
               command.c_str());
  std::exit(kRefused);
}

// A single-instance app hands a new start over to its running copy and exits: with an
// unprotected copy running, the user's "protected" window would be the unprotected one.
// ksd looks for such copies while it makes the cgroup (its /proc scan is warm; in this new
// process the same scan took ~0.5 ms): ksrun sends the executable and its own pid, and the
// answer lists the pids. An older ksd, or one in another pid namespace, does not answer:
// then ksrun looks itself. Empty: nothing to look for (not found, or a shared runtime
// such as a shell or python, whose copies are other programs).
std::string executable_to_check(const std::string& command) {
  std::string executable = ks::resolve_executable(command);
  if (executable.empty() || ks::is_shared_runtime(executable)) return {};
  return executable;
}

std::vector<pid_t> unprotected_copies(const std::string& executable, const nlohmann::json& reply) {
  if (executable.empty()) return {};
  if (auto listed = reply.find("unprotected_copies"); listed != reply.end()) {
    std::vector<pid_t> pids;
    for (const auto& pid : *listed)
      if (pid.is_number_integer()) pids.push_back(pid.get<pid_t>());
    return pids;
  }
  // The protected tree is the top of the cgroup ksd made ("/killswitch.slice/...").
  const std::string cgroup = reply.value("cgroup", "");
  const auto second_slash = cgroup.find('/', 1);
  if (cgroup.size() < 2 || cgroup[0] != '/' || second_slash == std::string::npos) return {};
  return ks::outside(ks::running_copies(executable, ::getuid(), ::getpid()),
                     cgroup.substr(0, second_slash));
}

// Only a warning: running the same tool twice (curl, a script) is normal, and the command
// itself is protected either way.
void warn_about_unprotected_copies(const std::string& executable, const std::vector<pid_t>& pids) {
  if (pids.empty()) return;
  std::string list;
  for (std::size_t i = 0; i < pids.size() && i < 5; ++i)
    list += (i ? ", " : "") + std::to_string(pids[i]);
  if (pids.size() > 5) list += ", ...";
  std::fprintf(stderr,
               "ksrun: warning: %s already runs unprotected (pid %s). An app that keeps a "
               "single instance hands this start over to that copy, which stays "
               "unprotected: quit it first (--no-instance-check silences this)\n",
               executable.c_str(), list.c_str());
}

}  // namespace

static int run(int argc, char** argv) {
  const std::vector<std::string> words(argv + 1, argv + argc);
  ks::LauncherArgs args;
  try {
    args = ks::parse_launcher_args(words, std::string(ks::kDefaultProfile),
                                   ks::ipc::default_socket_path());
  } catch (const ks::Error& e) {
    // An option ksrun does not know, before the command ("--prfile work qbittorrent"), is
    // a typo, never the command.
    std::fprintf(stderr, "ksrun: %s; nothing was run\n", e.what());
    return kRefused;
  }
  if (args.help) {
    std::fputs(ks::launcher_help(ks::kDefaultProfile).c_str(), stdout);
    return 0;
  }
  if (args.version) {
    std::printf("ksrun %s\n", KS_VERSION);
    return 0;
  }
  const std::string& profile = args.profile;
  std::vector<std::string>& command = args.command;
  if (command.empty()) refuse("(nothing)", "no COMMAND given");
  const std::string shown = command.front();

  if (!ks::is_valid_profile_name(profile))
    refuse(shown, "invalid profile name \"" + profile + "\"");

  const std::string executable =
      args.no_instance_check ? std::string() : executable_to_check(command.front());
  nlohmann::json request = {{"op", "launch"}, {"profile", profile}, {"argv", command}};
  if (!executable.empty()) {
    request["executable"] = executable;
    request["pid"] = ::getpid();
  }
  ks::UniqueFd connection;
  try {
    connection = ks::ipc::connect_to(args.socket_path);
    ks::ipc::send_message(connection.get(), request);
  } catch (const ks::Error& e) {
    refuse(shown, std::string(e.what()) + " (is ksd running?)");
  }
  nlohmann::json reply;
  try {
    reply = ks::ipc::receive_message(connection.get(), kReplyTimeoutMs);
  } catch (const ks::Error& e) {
    refuse(shown, std::string(e.what()) + " (is ksd running?)");
  }
  if (!reply.value("ok", false))
    refuse(shown, "ksd refused: " + reply.value("error", std::string("no reason given")));

  try {
    ks::prove_protection(reply);
    ks::drop_bypass_capabilities();
  } catch (const ks::Error& e) {
    refuse(shown, e.what());
  }

  warn_about_unprotected_copies(executable, unprotected_copies(executable, reply));

  std::vector<char*> exec_args;
  exec_args.reserve(command.size() + 1);
  for (auto& a : command) exec_args.push_back(a.data());
  exec_args.push_back(nullptr);
  ::execvp(exec_args[0], exec_args.data());
  int err = errno;
  std::fprintf(stderr, "ksrun: cannot run %s: %s\n", shown.c_str(), std::strerror(err));
  return err == ENOENT ? kNotFound : kNotExecutable;
}

// Nothing escapes as an uncaught exception (that would abort with a core dump and exit
// 134): anything before exec can still throw (std::bad_alloc).
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ksrun: error: %s\n", e.what());
    return kRefused;
  }
}
