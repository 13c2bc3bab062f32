// ksd's event log without a kernel: numbering, the window kept, queries by sequence number
// and limit, and the journal summary (the kernel's count, not the events', per app).
#include "event_log.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace ks {
namespace {

ks_event Event(std::uint64_t cgroup_id, std::uint32_t pid = 42) {
  ks_event e{};
  e.cgroup_id = cgroup_id;
  e.pid = pid;
  e.profile_id = 1;
  e.hook = KS_EV_CONNECT4;
  e.reason = KS_REASON_BLOCK_NO_TUNNEL;
  e.protocol = 6;
  e.family = 4;
  e.addr[10] = 0xff;
  e.addr[11] = 0xff;
  e.addr[12] = 203;
  e.addr[15] = 10;
  e.port = 443;
  return e;
}

class EventLogTest : public ::testing::Test {
 protected:
  EventLog log_{EventLog::Context{
      [](std::uint64_t id) { return "/killswitch.slice/app-" + std::to_string(id) + ".scope"; },
      [](std::uint32_t id) { return id == 1 ? std::string("default") : "(removed)"; },
      [](std::uint32_t pid, const std::string&) { return "prog --pid " + std::to_string(pid); },
      [this](std::uint64_t id) { return blocked_[id]; }}};
  std::map<std::uint64_t, std::uint64_t> blocked_;
};

TEST_F(EventLogTest, NumbersAndDescribesEachEvent) {
  auto first = nlohmann::json::parse(log_.record(Event(7), 1000));
  auto second = nlohmann::json::parse(log_.record(Event(8), 2000));
  EXPECT_EQ(first["seq"], 1);
  EXPECT_EQ(second["seq"], 2);
  EXPECT_EQ(log_.next_seq(), 3u);
  EXPECT_EQ(first["app"], "/killswitch.slice/app-7.scope");
  EXPECT_EQ(first["profile"], "default");
  EXPECT_EQ(first["command"], "prog --pid 42");
  EXPECT_EQ(first["hook"], "connect4");
  EXPECT_EQ(first["destination"], "203.0.0.10:443");
}

TEST_F(EventLogTest, KeepsTheNewestAndAnswersBySeqAndLimit) {
  for (std::size_t i = 0; i < EventLog::kKept + 10; ++i) log_.record(Event(7), 0);
  auto all = nlohmann::json::parse(log_.query(0, 100000));
  ASSERT_EQ(all.size(), EventLog::kKept);
  EXPECT_EQ(all.front()["seq"], 11) << "the oldest ten are gone";
  auto newest = nlohmann::json::parse(log_.query(0, 3));
  ASSERT_EQ(newest.size(), 3u);
  EXPECT_EQ(newest.back()["seq"], EventLog::kKept + 10);
  auto since = nlohmann::json::parse(log_.query(EventLog::kKept + 9, 100));
  ASSERT_EQ(since.size(), 2u);
  EXPECT_EQ(log_.query(EventLog::kKept + 11, 100), "[]");
}

TEST_F(EventLogTest, SummaryCountsWhatTheKernelCounted) {
  blocked_[7] = 1;  // the kernel counts before the event arrives
  log_.record(Event(7), 0);
  blocked_[7] = 500;  // most attempts of a flood are rate-limited out of the events
  log_.record(Event(7), 0);
  auto lines = log_.take_summary(10);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("blocked 500 attempt(s) of prog --pid 42"), std::string::npos)
      << lines[0];
  EXPECT_NE(lines[0].find("in the last 10 s; last: connect4 to 203.0.0.10:443 (no_tunnel)"),
            std::string::npos)
      << lines[0];
  EXPECT_TRUE(log_.take_summary(10).empty()) << "a new period starts empty";
}

TEST_F(EventLogTest, SummaryNamesTheTaskWhenTheCommandIsUnknown) {
  EventLog log{EventLog::Context{[](std::uint64_t) { return std::string("/app"); },
                                 [](std::uint32_t) { return std::string("default"); },
                                 [](std::uint32_t, const std::string&) { return std::string(); },
                                 [](std::uint64_t) { return std::uint64_t{1}; }}};
  ks_event e = Event(7);
  std::memcpy(e.comm, "curl", 4);
  log.record(e, 0);
  auto lines = log.take_summary(10);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("blocked 1 attempt(s) of curl (/app, profile default)"),
            std::string::npos)
      << lines[0];
}

TEST_F(EventLogTest, SummaryIsBoundedInLines) {
  for (std::uint64_t app = 1; app <= 25; ++app) log_.record(Event(app), 0);
  auto lines = log_.take_summary(10);
  ASSERT_EQ(lines.size(), EventLog::kSummaryMaxApps + 1);
  EXPECT_NE(lines.back().find("and 15 more app(s)"), std::string::npos) << lines.back();
}

}  // namespace
}  // namespace ks
