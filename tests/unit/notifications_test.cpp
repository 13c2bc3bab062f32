// ksctl notify's texts and its rate limit per app (the D-Bus side is tested in lab_desktop).
#include "killswitch/notifications.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace nt = ks::notify;

TEST(Notifications, Texts) {
  nlohmann::json e = {{"app", "/killswitch.slice/killswitch-default.slice/ksrun-42.scope"},
                      {"command", "/usr/bin/qbittorrent --profile x"},
                      {"comm", "qbittorrent"},
                      {"protocol", "tcp"},
                      {"destination", "203.0.113.1:443"},
                      {"reason", "no_tunnel"},
                      {"reason_text", "no tunnel of the profile is up for this address family"},
                      {"profile", "default"}};
  EXPECT_EQ(nt::summary(e), "qbittorrent blocked: VPN tunnel down");
  EXPECT_EQ(nt::body(e),
            "tcp to 203.0.113.1:443: no tunnel of the profile is up for this address family "
            "(profile default)");
  e.erase("command");
  e["comm"] = "qbt-net";
  EXPECT_EQ(nt::app_name(e), "qbt-net");
  e.erase("comm");
  EXPECT_EQ(nt::app_name(e), "ksrun-42.scope");
  EXPECT_EQ(nt::app_name(nlohmann::json::object()), "an app");
  EXPECT_EQ(nt::short_reason("something_new"), "something_new");
}

TEST(Notifications, OnePerAppPerIntervalThenOneSummary) {
  nt::RateLimiter r(10'000);
  EXPECT_TRUE(r.admit("a", 1000));
  EXPECT_TRUE(r.admit("b", 1000));  // apps are limited each on their own
  EXPECT_EQ(r.next_due_ms(), -1);
  for (int i = 0; i < 50; ++i) EXPECT_FALSE(r.admit("a", 1000 + i * 100));
  EXPECT_EQ(r.next_due_ms(), 11'000);
  EXPECT_TRUE(r.due(10'999).empty());
  auto due = r.due(11'000);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].key, "a");
  EXPECT_EQ(due[0].suppressed, 50u);
  EXPECT_EQ(r.next_due_ms(), -1);
  // The summary restarted a's interval.
  EXPECT_FALSE(r.admit("a", 12'000));
  EXPECT_TRUE(r.admit("a", 21'000));
}

TEST(Notifications, IdsForReplacementAndForgetting) {
  nt::RateLimiter r(1000);
  EXPECT_EQ(r.id_of("a"), 0u);
  r.admit("a", 0);
  r.set_id("a", 7);
  EXPECT_EQ(r.id_of("a"), 7u);
  r.admit("b", 0);
  r.admit("b", 10);  // counted: not forgotten while a summary is due
  r.forget_idle(100'000, 50'000);
  EXPECT_FALSE(r.knows("a"));
  EXPECT_TRUE(r.knows("b"));
  EXPECT_EQ(r.due(100'000).size(), 1u);
  r.forget_idle(200'000, 50'000);
  EXPECT_EQ(r.size(), 0u);
}
