#include "killswitch/launcher_args.hpp"

#include <algorithm>
#include <iterator>

#include "killswitch/cli_hints.hpp"
#include "killswitch/error.hpp"

namespace ks {

LauncherArgs parse_launcher_args(std::span<const std::string> args, std::string default_profile,
                                 std::string default_socket) {
  LauncherArgs parsed;
  parsed.profile = std::move(default_profile);
  parsed.socket_path = std::move(default_socket);
  std::size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& word = args[i];
    if (word == "--") {
      ++i;
      break;
    }
    // The first word that is not an option is the command ("-" and "" included, as
    // before: they can only be a command's name).
    if (word.size() < 2 || word[0] != '-') break;
    const auto equals = word.find('=');
    const std::string name = word.substr(0, equals);
    const bool inline_value = equals != std::string::npos;
    if (std::find(std::begin(kLauncherOptionsWithValue), std::end(kLauncherOptionsWithValue),
                  name) != std::end(kLauncherOptionsWithValue)) {
      std::string value;
      if (inline_value) {
        value = word.substr(equals + 1);
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        throw Error(name + " needs a value");
      }
      (name == "--profile" ? parsed.profile : parsed.socket_path) = std::move(value);
      continue;
    }
    const bool flag =
        name == "--no-instance-check" || name == "--help" || name == "-h" || name == "--version";
    if (flag && inline_value) throw Error(name + " takes no value");
    if (name == "--no-instance-check") {
      parsed.no_instance_check = true;
    } else if (name == "--help" || name == "-h") {
      parsed.help = true;
    } else if (name == "--version") {
      parsed.version = true;
    } else {
      const auto hint = closest_word(name, kLauncherOptions);
      throw Error("unknown option " + name + (hint ? " (did you mean " + *hint + "?)" : "") +
                  "; a COMMAND that starts with - goes after --");
    }
  }
  parsed.command.assign(args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
  return parsed;
}

std::string launcher_help(std::string_view default_profile) {
  return "ksrun - run COMMAND so that it and everything it starts can only talk through the "
         "VPN tunnel of a Killswitch profile\n"
         "Usage: ksrun [--profile NAME] [--socket PATH] [--no-instance-check] [--] COMMAND "
         "[ARGS...]\n"
         "\n"
         "Options:\n"
         "  -h,--help                   Print this help message and exit\n"
         "  --version                   Display program version information and exit\n"
         "  --profile NAME              profile to run under (default: " +
         std::string(default_profile) +
         ")\n"
         "  --socket PATH               ksd admin socket (default: $KILLSWITCH_SOCKET or "
         "/run/killswitch/ksd.sock)\n"
         "  --no-instance-check         do not look for an unprotected copy of COMMAND "
         "already running\n";
}

}  // namespace ks
