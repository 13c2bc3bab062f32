#include "killswitch/cli_hints.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr std::string_view kCommands[] = {"status", "list", "events", "reload", "verify"};
constexpr std::string_view kOptions[] = {"--profile", "--socket", "--help", "-h", "--version"};
constexpr std::string_view kWithValue[] = {"--profile", "--socket"};

TEST(ClosestWord, SuggestsTheNearOneOnly) {
  EXPECT_EQ(ks::closest_word("stauts", kCommands), "status");
  EXPECT_EQ(ks::closest_word("lsit", kCommands), "list");
  EXPECT_EQ(ks::closest_word("--prfile", kOptions), "--profile");
  EXPECT_EQ(ks::closest_word("banana", kCommands), std::nullopt);
  EXPECT_EQ(ks::closest_word("x", kCommands), std::nullopt) << "too short to be a typo of anything";
}

TEST(FirstUnknownOption, FindsTheTypoBeforeTheCommand) {
  using V = std::vector<std::string>;
  EXPECT_EQ(ks::first_unknown_option(V{"--prfile", "work", "qbittorrent"}, kOptions, kWithValue),
            "--prfile");
  EXPECT_EQ(
      ks::first_unknown_option(V{"--profile", "work", "curl", "--bogus"}, kOptions, kWithValue),
      std::nullopt)
      << "options after the command are the command's";
  EXPECT_EQ(
      ks::first_unknown_option(V{"--profile", "--weird-but-a-value", "curl"}, kOptions, kWithValue),
      std::nullopt)
      << "an option's value is not an option";
  EXPECT_EQ(ks::first_unknown_option(V{"--socket=/x", "--", "--not-ours"}, kOptions, kWithValue),
            std::nullopt)
      << "after -- everything is the command";
  EXPECT_EQ(
      ks::first_unknown_option(V{"--profile=work", "--bogus=1", "curl"}, kOptions, kWithValue),
      "--bogus");
}

TEST(FirstWord, SkipsOptionsAndTheirValues) {
  using V = std::vector<std::string>;
  EXPECT_EQ(ks::first_word(V{"--socket", "/s", "stauts"}, kWithValue), "stauts");
  EXPECT_EQ(ks::first_word(V{"--socket=/s", "--json", "list"}, kWithValue), "list");
  EXPECT_EQ(ks::first_word(V{"--", "--odd"}, kWithValue), "--odd");
  EXPECT_EQ(ks::first_word(V{"--json"}, kWithValue), std::nullopt);
}

}  // namespace
