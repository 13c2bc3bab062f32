// Throw-away network namespaces for kernel tests.
//
//   class MyTest : public ks::test::NetnsTest {};
//   TEST_F(MyTest, X) {
//     ASSERT_TRUE(Run("ip link add va type veth peer name vb"));  // inside the namespace
//     ...                                                        // this thread is in it too
//   }
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace ks::test {

struct CommandResult {
  int status = -1;     // exit code; -1 when the command did not exit normally
  std::string output;  // stdout and stderr, interleaved
  bool ok() const { return status == 0; }
};

// A fresh network namespace, with only its loopback interface (brought up), that the
// constructing thread is moved into until destruction, when the thread goes back to the
// namespace it was in.
//
// The namespace is anonymous on purpose: nothing is mounted under /run/netns, so the
// namespace and every interface created in it disappear with the last reference (our
// fd and our thread), even if the test process crashes. Network namespaces are per
// thread, so the rest of the process stays where it was. Sockets opened by this thread
// while inside (netlink, /dev/net/tun, ...) belong to the namespace.
//
// Must be destroyed on the thread that created it.
class ScopedNetns {
 public:
  ScopedNetns() {
    saved_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (saved_ < 0) fail("open /proc/thread-self/ns/net");
    if (::unshare(CLONE_NEWNET) != 0) {
      const int err = errno;
      ::close(saved_);
      saved_ = -1;
      errno = err;
      fail("unshare(CLONE_NEWNET) (kernel tests must run as root)");
    }
    ns_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    const int err = errno;
    if (ns_ < 0) {
      leave();
      errno = err;
      fail("open new /proc/thread-self/ns/net");
    }
    const CommandResult lo = run({"ip", "link", "set", "lo", "up"});
    if (!lo.ok()) {
      leave();
      throw std::runtime_error("ip link set lo up in the test namespace failed: " + lo.output);
    }
  }

  ~ScopedNetns() { leave(); }

  ScopedNetns(const ScopedNetns&) = delete;
  ScopedNetns& operator=(const ScopedNetns&) = delete;

  // A path naming the namespace for other processes, e.g. for nsenter --net=.
  std::string path() const {
    return "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(ns_);
  }

  // Runs argv inside the namespace (via nsenter, so it works from any thread) and
  // collects its output. PATH is fixed to the system directories, so "ip" is found even
  // when the test runs with a user's PATH.
  CommandResult run(const std::vector<std::string>& argv) const {
    std::vector<std::string> full = {"nsenter", "--net=" + path(), "--"};
    full.insert(full.end(), argv.begin(), argv.end());
    std::vector<char*> cargv;
    for (auto& arg : full) cargv.push_back(arg.data());
    cargv.push_back(nullptr);

    std::vector<std::string> env = {
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      if (std::strncmp(*e, "PATH=", 5) != 0) env.emplace_back(*e);
    }
    std::vector<char*> cenv;
    for (auto& var : env) cenv.push_back(var.data());
    cenv.push_back(nullptr);

    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) fail("pipe2");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, pipefd[1], 1);
    posix_spawn_file_actions_adddup2(&actions, pipefd[1], 2);
    pid_t pid = -1;
    const int rc = ::posix_spawnp(&pid, "nsenter", &actions, nullptr, cargv.data(), cenv.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipefd[1]);
    if (rc != 0) {
      ::close(pipefd[0]);
      errno = rc;
      fail("posix_spawnp nsenter");
    }

    CommandResult result;
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(pipefd[0], buf, sizeof buf);
      if (n > 0) {
        result.output.append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        break;
      }
    }
    ::close(pipefd[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) fail("waitpid");
    }
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
  }

 private:
  [[noreturn]] static void fail(const std::string& what) {
    throw std::runtime_error(what + ": " + std::strerror(errno));
  }

  void leave() noexcept {
    if (saved_ < 0) return;
    // Staying in the test namespace would silently run every later test (and anything
    // else on this thread) in the wrong place; that is not recoverable.
    if (::setns(saved_, CLONE_NEWNET) != 0) {
      std::perror("ScopedNetns: setns back to the original network namespace");
      std::abort();
    }
    ::close(saved_);
    saved_ = -1;
    if (ns_ >= 0) ::close(ns_);
    ns_ = -1;
  }

  int saved_ = -1;
  int ns_ = -1;
};

// GoogleTest fixture: every test body runs on a thread inside its own fresh namespace.
// Not being root is a test failure, never a skip: CI runs as root, and a silently skipped
// kernel test hides exactly the breakage it exists to catch.
class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "kernel tests need root (network namespaces, rtnetlink, "
                                  "tun); run ks_kernel_tests / ctest -R kernel as root";
    try {
      netns_.emplace();
    } catch (const std::exception& e) {
      FAIL() << "cannot create a test network namespace: " << e.what();
    }
  }

  void TearDown() override { netns_.reset(); }

  ScopedNetns& netns() { return *netns_; }

  // Runs a whitespace-separated command line (no quoting) inside the namespace.
  ::testing::AssertionResult Run(const std::string& command_line) {
    std::vector<std::string> argv;
    std::istringstream words(command_line);
    for (std::string word; words >> word;) argv.push_back(word);
    const CommandResult r = netns_->run(argv);
    if (r.ok()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "`" << command_line << "` exited with " << r.status << ": " << r.output;
  }

  // Like Run, but returns the output; an empty optional (plus a test failure) on error.
  std::optional<std::string> Output(const std::string& command_line) {
    std::vector<std::string> argv;
    std::istringstream words(command_line);
    for (std::string word; words >> word;) argv.push_back(word);
    CommandResult r = netns_->run(argv);
    if (r.ok()) return std::move(r.output);
    ADD_FAILURE() << "`" << command_line << "` exited with " << r.status << ": " << r.output;
    return std::nullopt;
  }

 private:
  std::optional<ScopedNetns> netns_;
};

}  // namespace ks::test
