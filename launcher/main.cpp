// ksrun — run a program (and all its descendants) inside a protected cgroup.
//
// The order is the point: ask ksd for a protected cgroup and be moved into it, prove
// that enforcement judges this very process, shed the capabilities that could get
// around it, and only then exec. Any failure before exec exits 125 and the command
// never runs.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "killswitch/cgroup.hpp"
#include "killswitch/cli_hints.hpp"
#include "killswitch/config.hpp"
#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/ipc.hpp"
#include "killswitch/launch_proof.hpp"
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
// The look at /proc does not depend on ksd's answer, so it is done while ksd makes the
// cgroup (the round trip and the scan each take most of a millisecond here).
std::vector<ks::RunningCopy> look_for_running_copies(const std::string& command,
                                                     std::string& executable) {
  executable = ks::resolve_executable(command);
  if (executable.empty() || ks::is_shared_runtime(executable)) return {};
  return ks::running_copies(executable, ::getuid(), ::getpid());
}

// Only a warning: running the same tool twice (curl, a script) is normal, and the command
// itself is protected either way.
void warn_about_unprotected_copies(const std::string& executable,
                                   const std::vector<ks::RunningCopy>& copies,
                                   const std::string& cgroup) {
  // The protected tree is the top of the cgroup ksd made ("/killswitch.slice/...").
  const auto second_slash = cgroup.find('/', 1);
  if (copies.empty() || cgroup.size() < 2 || cgroup[0] != '/' || second_slash == std::string::npos)
    return;
  const auto pids = ks::outside(copies, cgroup.substr(0, second_slash));
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
  std::string socket_path = ks::ipc::default_socket_path();
  std::string profile(ks::kDefaultProfile);
  std::vector<std::string> command;

  CLI::App app{
      "ksrun - run COMMAND so that it and everything it starts can only talk through "
      "the VPN tunnel of a Killswitch profile"};
  app.set_version_flag("--version", std::string("ksrun ") + KS_VERSION);
  app.add_option("--profile", profile, "profile to run under")->capture_default_str();
  app.add_option("--socket", socket_path,
                 "ksd admin socket (default: $KILLSWITCH_SOCKET or /run/killswitch/ksd.sock)");
  bool no_instance_check = false;
  app.add_flag("--no-instance-check", no_instance_check,
               "do not look for an unprotected copy of COMMAND already running");
  // Everything from the first non-option word on is COMMAND and its own arguments,
  // untouched and in order (ksrun --profile p -- curl --proxy x ...).
  app.prefix_command();
  app.footer(
      "Usage: ksrun [--profile NAME] [--socket PATH] [--no-instance-check] [--] COMMAND [ARGS...]");
  // An option ksrun does not know, before the command ("--prfile work qbittorrent"), is a
  // typo, not the command: CLI11 would hand it over as COMMAND.
  static constexpr std::string_view kOptions[] = {"--profile", "--socket", "--no-instance-check",
                                                  "--help",    "-h",       "--version"};
  static constexpr std::string_view kWithValue[] = {"--profile", "--socket"};
  const std::vector<std::string> words(argv + 1, argv + argc);
  if (auto bad = ks::first_unknown_option(words, kOptions, kWithValue)) {
    const auto hint = ks::closest_word(*bad, kOptions);
    std::fprintf(stderr,
                 "ksrun: unknown option %s%s; nothing was run (a COMMAND that starts "
                 "with - goes after --)\n",
                 bad->c_str(), hint ? (" (did you mean " + *hint + "?)").c_str() : "");
    return kRefused;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kRefused;
  }
  command = app.remaining();
  if (!command.empty() && command.front() == "--") command.erase(command.begin());
  if (command.empty()) refuse("(nothing)", "no COMMAND given");
  const std::string shown = command.front();

  if (!ks::is_valid_profile_name(profile))
    refuse(shown, "invalid profile name \"" + profile + "\"");

  ks::UniqueFd connection;
  try {
    connection = ks::ipc::connect_to(socket_path);
    ks::ipc::send_message(connection.get(),
                          {{"op", "launch"}, {"profile", profile}, {"argv", command}});
  } catch (const ks::Error& e) {
    refuse(shown, std::string(e.what()) + " (is ksd running?)");
  }
  std::string executable;
  std::vector<ks::RunningCopy> copies;
  if (!no_instance_check) copies = look_for_running_copies(command.front(), executable);
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

  warn_about_unprotected_copies(executable, copies, reply.value("cgroup", ""));

  std::vector<char*> args;
  args.reserve(command.size() + 1);
  for (auto& a : command) args.push_back(a.data());
  args.push_back(nullptr);
  ::execvp(args[0], args.data());
  int err = errno;
  std::fprintf(stderr, "ksrun: cannot run %s: %s\n", shown.c_str(), std::strerror(err));
  return err == ENOENT ? kNotFound : kNotExecutable;
}

// Nothing escapes as an uncaught exception (that would abort with a core dump and exit
// 134): building the command line parser can still throw (std::bad_alloc).
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ksrun: error: %s\n", e.what());
    return kRefused;
  }
}
