// ksrun's command line (parse_launcher_args): its options before the command, the command
// and its arguments untouched after it, and a clear error for anything else.
#include "killswitch/launcher_args.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "killswitch/error.hpp"

namespace ks {
namespace {

LauncherArgs parse(std::vector<std::string> words) {
  return parse_launcher_args(words, "default", "/run/killswitch/ksd.sock");
}

std::string error_of(std::vector<std::string> words) {
  try {
    parse(std::move(words));
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

using Words = std::vector<std::string>;

TEST(LauncherArgs, DefaultsAndCommand) {
  auto a = parse({"qbittorrent", "--profile", "x"});
  EXPECT_EQ(a.profile, "default");
  EXPECT_EQ(a.socket_path, "/run/killswitch/ksd.sock");
  EXPECT_FALSE(a.no_instance_check);
  EXPECT_FALSE(a.help);
  EXPECT_FALSE(a.version);
  // Everything from the command on is the command's, even words like ksrun's options.
  EXPECT_EQ(a.command, (Words{"qbittorrent", "--profile", "x"}));
}

TEST(LauncherArgs, OptionsWithValuesInBothForms) {
  auto a = parse({"--profile", "work", "--socket=/tmp/s", "--no-instance-check", "curl", "-v"});
  EXPECT_EQ(a.profile, "work");
  EXPECT_EQ(a.socket_path, "/tmp/s");
  EXPECT_TRUE(a.no_instance_check);
  EXPECT_EQ(a.command, (Words{"curl", "-v"}));
  EXPECT_EQ(parse({"--profile=", "x"}).profile, "");  // refused later: not a valid name
  EXPECT_EQ(parse({"--socket", "--profile", "x"}).socket_path, "--profile");  // a value
}

TEST(LauncherArgs, DoubleDashEndsTheOptions) {
  auto a = parse({"--profile", "p", "--", "--help", "--", ""});
  EXPECT_FALSE(a.help);
  EXPECT_EQ(a.command, (Words{"--help", "--", ""}));
  EXPECT_TRUE(parse({"--"}).command.empty());
  EXPECT_TRUE(parse({}).command.empty());
}

TEST(LauncherArgs, HelpAndVersion) {
  EXPECT_TRUE(parse({"--help"}).help);
  EXPECT_TRUE(parse({"-h", "true"}).help);
  EXPECT_TRUE(parse({"--version"}).version);
  const std::string help = launcher_help("default");
  EXPECT_NE(help.find("Usage: ksrun [--profile NAME]"), std::string::npos);
  // tests/completions reads the options from the lines under "Options:".
  for (std::string_view option : kLauncherOptions)
    EXPECT_TRUE(help.find("  " + std::string(option) + " ") != std::string::npos ||
                help.find(std::string(option) + ",") != std::string::npos ||
                help.find("," + std::string(option) + " ") != std::string::npos)
        << option;
}

TEST(LauncherArgs, ErrorsNameTheProblem) {
  const std::string after = "; a COMMAND that starts with - goes after --";
  EXPECT_EQ(error_of({"--prfile", "work", "true"}),
            "unknown option --prfile (did you mean --profile?)" + after);
  EXPECT_EQ(error_of({"-x", "true"}), "unknown option -x (did you mean -h?)" + after);
  EXPECT_EQ(error_of({"--frobnicate", "true"}), "unknown option --frobnicate" + after);
  EXPECT_EQ(error_of({"--profile"}), "--profile needs a value");
  EXPECT_EQ(error_of({"--no-instance-check=yes", "true"}), "--no-instance-check takes no value");
  EXPECT_EQ(error_of({"--version=1"}), "--version takes no value");
}

TEST(LauncherArgs, LoneDashAndEmptyWordAreCommands) {
  EXPECT_EQ(parse({"-", "x"}).command, (Words{"-", "x"}));
  EXPECT_EQ(parse({"", "x"}).command, (Words{"", "x"}));
}

}  // namespace
}  // namespace ks
