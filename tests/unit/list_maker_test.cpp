// ksd's list maker without a kernel: its threads get a made-up kernel side, and the tests
// play ksd's loop (give the apps, take the text). What they pin down: the text is the
// list, a client that stops taking holds a thread but nothing else, a job abandoned or a
// maker destroyed while a thread waits ends that thread, and more lists than threads wait
// their turn.
#include "list_maker.hpp"

#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "killswitch/error.hpp"

namespace ks {
namespace {

constexpr std::uint32_t kDefault = 7;

// `apps` tracked apps with cgroup ids 1000.., one process each (pid = id), classified to
// kDefault, with 3 allowed packets each.
ListMaker::ReadKernelSide fake_kernel(int apps, std::atomic<int>* reads = nullptr) {
  return [apps, reads](ListFindings& found) {
    if (reads) ++*reads;
    ListKernelSide side;
    std::vector<PidsByCgroup::Entry> pids;
    for (int i = 0; i < apps; ++i) {
      const std::uint64_t id = 1000 + static_cast<std::uint64_t>(i);
      side.entries[id] = ks_cgroup_value{kDefault, 0};
      side.by_cgroup[id].allowed_packets = 3;
      pids.push_back({id, static_cast<pid_t>(id)});
    }
    side.pids = PidsByCgroup(std::move(pids));
    found.notes.push_back("read");
    return side;
  };
}

ListInput input_for(int apps) {
  ListInput in;
  in.cgroup_mount = "/sys/fs/cgroup";
  in.tree_root = "/sys/fs/cgroup/ks.slice";
  in.profile_names[kDefault] = "default";
  for (int i = 0; i < apps; ++i)
    in.add("/sys/fs/cgroup/ks.slice/ks-default.slice/app" + std::to_string(i) + ".scope",
           1000 + static_cast<std::uint64_t>(i), true, "app --number " + std::to_string(i));
  return in;
}

bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

// Takes the whole text as ksd's loop does: waits on the job's fd whenever there is none.
std::string take_all(ListMaker::Job& job) {
  std::string text;
  for (;;) {
    switch (job.take(text)) {
      case ListMaker::Job::Taken::kText:
        continue;
      case ListMaker::Job::Taken::kNothingYet:
        if (!readable(job.fd(), 10000)) throw Error("the job's fd never became readable");
        continue;
      case ListMaker::Job::Taken::kEnded:
        return text;
    }
  }
}

TEST(ListMaker, MakesTheListFromTheKernelSideAndTheApps) {
  ListMaker maker(fake_kernel(3));
  auto job = maker.start();
  job->give(input_for(3));
  const auto list = nlohmann::json::parse(take_all(*job));
  EXPECT_EQ(job->findings().error, "");
  EXPECT_EQ(job->findings().notes, std::vector<std::string>{"read"});
  ASSERT_EQ(list["apps"].size(), 3u);
  EXPECT_EQ(list["ok"], true);
  const auto& app = list["apps"][1];
  EXPECT_EQ(app["cgroup"], "/ks.slice/ks-default.slice/app1.scope");
  EXPECT_EQ(app["cgroup_id"], 1001);
  EXPECT_EQ(app["profile"], "default");
  EXPECT_EQ(app["pids"], nlohmann::json::array({1001}));
  EXPECT_EQ(app["command"], "app --number 1");
  EXPECT_EQ(app["allowed_packets"], 3);
  EXPECT_TRUE(job->findings().commands.empty()) << "every command was known";
}

// An app that ended after ksd copied it has no processes in the kernel's side: not listed.
TEST(ListMaker, AnAppWithoutProcessesIsNotListed) {
  ListMaker maker(fake_kernel(2));
  auto job = maker.start();
  job->give(input_for(3));  // the third (id 1002) has no process
  const auto list = nlohmann::json::parse(take_all(*job));
  EXPECT_EQ(list["apps"].size(), 2u);
}

TEST(ListMaker, AFailedReadIsTheListsError) {
  ListMaker maker([](ListFindings&) -> ListKernelSide { throw Error("cannot read ks_cgroups"); });
  auto job = maker.start();
  job->give(input_for(1));
  EXPECT_EQ(take_all(*job), "");
  EXPECT_EQ(job->findings().error, "cannot read ks_cgroups");
}

// A client that takes nothing: the thread makes kMaxQueuedBytes ahead and waits (ksd's
// memory holds no more than that); the text goes on once it takes again.
TEST(ListMaker, AThreadWaitsForItsClient) {
  const int apps = 20000;  // ~4 MB of text
  ListMaker maker(fake_kernel(apps));
  auto job = maker.start();
  job->give(input_for(apps));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_GT(job->queued_bytes(), 0u);
  EXPECT_LE(job->queued_bytes(), ListMaker::kMaxQueuedBytes + 2 * ListMaker::kPartBytes);
  const auto list = nlohmann::json::parse(take_all(*job));
  EXPECT_EQ(list["apps"].size(), static_cast<std::size_t>(apps));
}

// Clients that stop taking hold their threads, and only until they go: with every thread
// waiting for one, their end frees the threads for the next list.
TEST(ListMaker, AbandonedJobsFreeTheirThreads) {
  const int apps = 20000;
  ListMaker maker(fake_kernel(apps));
  std::vector<std::shared_ptr<ListMaker::Job>> stalled;
  for (std::size_t i = 0; i < ListMaker::kThreads; ++i) {
    stalled.push_back(maker.start());
    stalled.back()->give(input_for(apps));
  }
  for (auto& job : stalled)
    while (job->queued_bytes() < ListMaker::kMaxQueuedBytes)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  for (auto& job : stalled) job->abandon();
  auto next = maker.start();
  next->give(input_for(2));
  EXPECT_EQ(nlohmann::json::parse(take_all(*next))["apps"].size(), 2u);
}

// ksd ends while lists wait for their clients (and more wait for a thread): the maker's
// end ends them all, it does not hang.
TEST(ListMaker, EndsWhileThreadsWaitForTheirClients) {
  const int apps = 20000;
  std::vector<std::shared_ptr<ListMaker::Job>> jobs;
  {
    ListMaker maker(fake_kernel(apps));
    for (std::size_t i = 0; i < ListMaker::kThreads + 2; ++i) {
      jobs.push_back(maker.start());
      jobs.back()->give(input_for(apps));
    }
    auto not_given = maker.start();  // (its thread would wait for the apps)
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }  // ~ListMaker: returns only once every thread has ended
  SUCCEED();
}

// More lists than threads: the ones beyond kThreads are made as threads come free; each
// list reads the kernel's side once.
TEST(ListMaker, MoreListsThanThreadsWaitTheirTurn) {
  std::atomic<int> reads{0};
  ListMaker maker(fake_kernel(50, &reads));
  std::vector<std::shared_ptr<ListMaker::Job>> jobs;
  for (std::size_t i = 0; i < 3 * ListMaker::kThreads; ++i) {
    jobs.push_back(maker.start());
    jobs.back()->give(input_for(50));
  }
  for (auto& job : jobs) {
    const auto list = nlohmann::json::parse(take_all(*job));
    EXPECT_EQ(list["apps"].size(), 50u);
  }
  EXPECT_EQ(reads.load(), static_cast<int>(jobs.size()));
}

// A client gone before ksd copied its apps: the thread waiting for them ends the job.
TEST(ListMaker, AJobAbandonedBeforeItsAppsCameEnds) {
  std::atomic<int> reads{0};
  ListMaker maker(fake_kernel(1, &reads));
  for (std::size_t i = 0; i < 2 * ListMaker::kThreads; ++i) maker.start()->abandon();
  auto job = maker.start();
  job->give(input_for(1));
  EXPECT_EQ(nlohmann::json::parse(take_all(*job))["apps"].size(), 1u);
}

}  // namespace
}  // namespace ks
