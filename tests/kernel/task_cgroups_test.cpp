// The task iterators (bpf/task_cgroups.bpf.c), against the real kernel: the one behind
// `ksctl list` must report exactly what cgroup.procs reports, one pid per process (not per
// thread); the one behind ksrun's single-instance check every process running a file.
#include "killswitch/task_cgroups.hpp"

#include <dirent.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "killswitch/cgroup.hpp"
#include "killswitch/proc.hpp"

namespace ks {
namespace {

std::vector<pid_t> as_vector(std::span<const pid_t> pids) { return {pids.begin(), pids.end()}; }

// A throw-away cgroup with three paused children in it, one of them with a second
// thread; everything is removed again, also when an assertion fails.
class TaskCgroupsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = find_cgroup2_mount() + "/kstest-task-cgroups-" + std::to_string(::getpid());
    ASSERT_TRUE(ensure_cgroup_dir(path_));
    for (int i = 0; i < 3; ++i) {
      pid_t pid = ::fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        if (i == 0) std::thread([] { ::pause(); }).detach();
        ::pause();
        ::_exit(0);
      }
      children_.push_back(pid);
      move_pid_to_cgroup(path_, pid);
    }
    std::sort(children_.begin(), children_.end());
  }
  void TearDown() override {
    for (pid_t pid : children_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    remove_cgroup_tree(path_);
  }
  std::string path_;
  std::vector<pid_t> children_;
};

TEST_F(TaskCgroupsTest, ReportsWhatCgroupProcsReports) {
  std::string why_not;
  auto iterator = TaskCgroups::load(why_not);
  ASSERT_TRUE(iterator) << why_not;
  // The second thread of the first child needs a moment to exist; cgroup.procs lists
  // processes either way.
  const auto all = iterator->read();
  const auto listed = as_vector(all.of(cgroup_id(path_)));
  EXPECT_EQ(listed, children_);
  EXPECT_EQ(listed, cgroup_pids(path_));
  // And this test process is listed under its own cgroup.
  auto own = all.of(cgroup_id(find_cgroup2_mount() + cgroup_of_pid(::getpid())));
  EXPECT_TRUE(std::binary_search(own.begin(), own.end(), ::getpid()));
  EXPECT_TRUE(all.of(0).empty()) << "no cgroup has id 0";
}

TEST_F(TaskCgroupsTest, EachReadIsFresh) {
  std::string why_not;
  auto iterator = TaskCgroups::load(why_not);
  ASSERT_TRUE(iterator) << why_not;
  ASSERT_EQ(iterator->read().of(cgroup_id(path_)).size(), 3u);
  ::kill(children_.back(), SIGKILL);
  ::waitpid(children_.back(), nullptr, 0);
  children_.pop_back();
  EXPECT_EQ(as_vector(iterator->read().of(cgroup_id(path_))), children_);
}

// The children run this test's executable (forked, not exec'd), and so does the test: each
// is reported once (the first child has two threads), and everything reported runs a file
// with that inode number.
TEST_F(TaskCgroupsTest, FindsTheProcessesRunningAnExecutable) {
  std::string why_not;
  auto iterator = TaskCgroups::load(why_not);
  ASSERT_TRUE(iterator) << why_not;
  struct stat self {};
  ASSERT_EQ(::stat("/proc/self/exe", &self), 0);
  const std::vector<pid_t> found = iterator->running_inode(self.st_ino);
  EXPECT_TRUE(std::is_sorted(found.begin(), found.end()));
  EXPECT_EQ(std::adjacent_find(found.begin(), found.end()), found.end()) << "a pid twice";
  for (pid_t pid : children_) EXPECT_TRUE(std::binary_search(found.begin(), found.end(), pid));
  EXPECT_TRUE(std::binary_search(found.begin(), found.end(), ::getpid()));
  for (pid_t pid : found) {
    struct stat st {};
    if (::stat(("/proc/" + std::to_string(pid) + "/exe").c_str(), &st) == 0) {
      EXPECT_EQ(st.st_ino, self.st_ino) << "pid " << pid;
    }
  }
  // No process runs a file with inode number 0, and kernel threads run none at all.
  EXPECT_TRUE(iterator->running_inode(0).empty());

  // The candidates are then checked as a walk of /proc would: by path, owner and cgroup.
  // Pid 1 runs another program, and the caller's own pid is left out.
  char exe[PATH_MAX] = {};
  ASSERT_GT(::readlink("/proc/self/exe", exe, sizeof(exe) - 1), 0);
  std::vector<pid_t> candidates = found;
  candidates.push_back(1);
  std::vector<pid_t> copies;
  for (const auto& copy : running_copies_among(candidates, exe, ::getuid(), ::getpid())) {
    copies.push_back(copy.pid);
    if (std::binary_search(children_.begin(), children_.end(), copy.pid)) {
      EXPECT_EQ(find_cgroup2_mount() + copy.cgroup, path_);
    }
  }
  EXPECT_EQ(std::count(copies.begin(), copies.end(), 1), 0);
  EXPECT_EQ(std::count(copies.begin(), copies.end(), ::getpid()), 0);
  for (pid_t pid : children_) EXPECT_EQ(std::count(copies.begin(), copies.end(), pid), 1);
  // The walk of /proc finds the same.
  std::vector<pid_t> walked;
  for (const auto& copy : running_copies(exe, ::getuid(), ::getpid())) walked.push_back(copy.pid);
  std::sort(copies.begin(), copies.end());
  std::sort(walked.begin(), walked.end());
  EXPECT_EQ(copies, walked);
}

// The iterator reports the initial namespace's pids, so ksd uses it only there. Inside a
// container /proc/self/status's NSpid has one entry too, which once fooled this check
// (the systemd container test caught it); the namespace's inode number does not.
TEST(PidNamespace, OnlyTheInitialOneCounts) {
  ASSERT_TRUE(in_initial_pid_namespace()) << "the tests run in the initial pid namespace";
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) ::_exit(2);
    pid_t grandchild = ::fork();  // the first process of the new namespace
    if (grandchild < 0) ::_exit(2);
    if (grandchild == 0) {
      // As in a container: its own /proc, so NSpid starts at this namespace.
      if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
          ::mount("proc", "/proc", "proc", 0, nullptr) != 0)
        ::_exit(2);
      ::_exit(in_initial_pid_namespace() ? 1 : 0);
    }
    int status = 0;
    ::waitpid(grandchild, &status, 0);
    ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 2);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: a new pid namespace passed for the initial one; "
                                       "2: could not make one";
}

// ksd adopts apps at start-up by the inode numbers readdir reports (no stat per app); it
// checks the first of each slice against stat, and this checks the assumption itself.
TEST_F(TaskCgroupsTest, ReaddirReportsEachCgroupsId) {
  for (const char* name : {"a", "b", "c"}) ASSERT_TRUE(ensure_cgroup_dir(path_ + "/" + name));
  DIR* dir = ::opendir(path_.c_str());
  ASSERT_NE(dir, nullptr);
  int seen = 0;
  while (dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (e->d_type != DT_DIR || name == "." || name == "..") continue;
    EXPECT_EQ(e->d_ino, cgroup_id(path_ + "/" + name)) << name;
    ++seen;
  }
  ::closedir(dir);
  EXPECT_EQ(seen, 3);
}

}  // namespace
}  // namespace ks
