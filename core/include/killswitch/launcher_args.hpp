// ksrun's command line, parsed without a parser library: ksrun is on the launch path of
// every protected program, and CLI11 brings <iostream>, whose start-up (the standard
// streams and the classic locale's facets) cost ~0.4 ms per launch on the test machine
// (docs/benchmarks.md, "4. Launch"). Pure; unit-tested.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ks {

struct LauncherArgs {
  std::string profile;
  std::string socket_path;
  bool no_instance_check = false;
  bool help = false;     // --help or -h: print launcher_help() and exit 0
  bool version = false;  // --version
  // Everything from the first word that is not an option (or after "--") on: the command
  // and its own arguments, untouched and in order.
  std::vector<std::string> command;
};

// The options ksrun knows, and those of them that take a value ("--opt V" or "--opt=V").
inline constexpr std::string_view kLauncherOptions[] = {
    "--profile", "--socket", "--no-instance-check", "--help", "-h", "--version"};
inline constexpr std::string_view kLauncherOptionsWithValue[] = {"--profile", "--socket"};

// Parses ARGS (argv without argv[0]); the profile and socket start as the defaults given.
// Throws ks::Error naming the problem: an unknown option (with the closest known one), an
// option without its value, a value given to --no-instance-check/--help/--version.
LauncherArgs parse_launcher_args(std::span<const std::string> args, std::string default_profile,
                                 std::string default_socket);

// ksrun --help, in CLI11's layout (tests/completions reads its "Options:" section).
std::string launcher_help(std::string_view default_profile);

}  // namespace ks
