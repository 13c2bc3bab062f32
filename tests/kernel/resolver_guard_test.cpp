// resolver_guard (bpf/killswitch.bpf.c), the pre-6.7 way to refuse protected apps the
// unix sockets of systemd-resolved and nscd, against the real kernel: loaded as ksd loads
// it on a kernel without cgroup/connect_unix (pretend_kernel_lacks_unix_hooks), with a
// throw-away pin directory and cgroup. On Debian 12's 6.1 (scripts/kernel-matrix.sh) the
// pretending is what the kernel really is.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "killswitch/cgroup.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/hooks.hpp"

namespace ks {
namespace {

constexpr std::uint32_t kProfile = 1;

// A listening unix socket at path (backlog enough for the test's connects).
UniqueFd Listen(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(fd.get(), 64) != 0)
    return UniqueFd();
  return fd;
}

// 0 when a stream connect to path succeeds, else its errno.
int ConnectErrno(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return errno;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 ? 0 : errno;
}

class ResolverGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pretend_kernel_lacks_unix_hooks(true);
    if (auto why = resolver_guard_unavailable())
      GTEST_SKIP() << "resolver_guard cannot run on Linux with this configuration (" << *why
                   << "); KsdRefusesToStartWithoutIt checks the refusal, and CI runs these "
                      "tests on Debian 12's 6.1 under qemu (scripts/kernel-ci.sh)";
    const std::string id = std::to_string(::getpid());
    pin_dir_ = "/sys/fs/bpf/kstest-guard-" + id;
    cgroup_ = find_cgroup2_mount() + "/kstest-guard-" + id;
    char dir[] = "/tmp/kstest-guard-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    RemovePins();
    try {
      ensure_cgroup_dir(cgroup_);
      enforcement_.emplace(Enforcement::load(pin_dir_));
      enforcement_->set_cgroup(cgroup_id(cgroup_), kProfile);
      enforcement_->attach(cgroup_);
    } catch (const std::exception& e) {
      FAIL() << "cannot load and attach the programs as on a kernel without "
                "cgroup/connect_unix: "
             << e.what();
    }
    // resolved's socket by its last component, nscd's by its directory is not possible
    // here (/run/nscd/ is the machine's): io.systemd.Resolve anywhere is refused.
    resolver_ = dir_ + "/io.systemd.Resolve";
    ordinary_ = dir_ + "/ordinary.sock";
    resolver_listener_ = Listen(resolver_);
    ordinary_listener_ = Listen(ordinary_);
    ASSERT_TRUE(resolver_listener_) << std::strerror(errno);
    ASSERT_TRUE(ordinary_listener_) << std::strerror(errno);
    ASSERT_EQ(::symlink(resolver_.c_str(), (dir_ + "/innocent-name").c_str()), 0);
  }

  void TearDown() override {
    if (pin_dir_.empty()) {  // skipped
      pretend_kernel_lacks_unix_hooks(false);
      return;
    }
    enforcement_.reset();
    RemovePins();
    remove_cgroup_tree(cgroup_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    pretend_kernel_lacks_unix_hooks(false);
  }

  void RemovePins() {
    try {
      Enforcement::remove_pins(pin_dir_);
    } catch (const std::exception&) {
    }
    std::error_code ec;
    std::filesystem::remove_all(pin_dir_, ec);
  }

  // Runs ConnectErrno for each path in a child inside the protected cgroup; their errnos.
  std::vector<int> ConnectFromProtectedChild(const std::vector<std::string>& paths) {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return {};
    UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
    pid_t child = ::fork();
    if (child == 0) {
      try {
        move_pid_to_cgroup(cgroup_, ::getpid());
      } catch (...) {
        ::_exit(2);
      }
      for (const auto& path : paths) {
        int err = ConnectErrno(path);
        if (::write(write_end.get(), &err, sizeof(err)) != sizeof(err)) ::_exit(3);
      }
      ::_exit(0);
    }
    write_end.reset();
    std::vector<int> errs;
    int err;
    while (::read(read_end.get(), &err, sizeof(err)) == sizeof(err)) errs.push_back(err);
    int status = 0;
    ::waitpid(child, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
    return errs;
  }

  std::string pin_dir_, cgroup_, dir_, resolver_, ordinary_;
  std::optional<Enforcement> enforcement_;
  UniqueFd resolver_listener_, ordinary_listener_;
};

TEST_F(ResolverGuardTest, UsedInsteadOfConnectUnixAndInForce) {
  const ProgramIds ids = enforcement_->program_ids();
  EXPECT_EQ(ids.count("connect_unix"), 0u);
  EXPECT_EQ(ids.count("resolver_guard"), 1u);
  EXPECT_EQ(enforcement_->global_hooks_missing(), "");
  EXPECT_TRUE(Enforcement::pins_present(pin_dir_));
  UniqueFd cg = open_cgroup(cgroup_);
  EXPECT_EQ(check_effective(cg.get(), ids), "");
}

TEST_F(ResolverGuardTest, RefusesAProtectedAppTheResolverSocketByItsBoundName) {
  const Counters before = enforcement_->counters_of(cgroup_id(cgroup_));
  // The resolver by its path, by a symlink, by a relative path through ".." (all name the
  // same listening socket, bound as .../io.systemd.Resolve); an ordinary socket works.
  const auto errs = ConnectFromProtectedChild(
      {resolver_, dir_ + "/innocent-name",
       dir_ + "/../" + std::filesystem::path(dir_).filename().string() + "/io.systemd.Resolve",
       ordinary_});
  ASSERT_EQ(errs.size(), 4u);
  EXPECT_EQ(errs[0], EPERM) << std::strerror(errs[0]);
  EXPECT_EQ(errs[1], EPERM) << "through a symlink: " << std::strerror(errs[1]);
  EXPECT_EQ(errs[2], EPERM) << "through ..: " << std::strerror(errs[2]);
  EXPECT_EQ(errs[3], 0) << "ordinary socket: " << std::strerror(errs[3]);
  const Counters after = enforcement_->counters_of(cgroup_id(cgroup_));
  EXPECT_EQ(after.blocked_connects - before.blocked_connects, 3u);
}

TEST_F(ResolverGuardTest, LeavesUnprotectedProcessesAlone) {
  // The hook is system-wide; this process is outside the protected cgroup.
  EXPECT_EQ(ConnectErrno(resolver_), 0) << std::strerror(ConnectErrno(resolver_));
  EXPECT_EQ(ConnectErrno(dir_ + "/innocent-name"), 0);
}

TEST_F(ResolverGuardTest, ARestartedKsdReplacesTheLinkWithoutAGap) {
  const ProgramIds first = Enforcement::pinned_program_ids(pin_dir_);
  // A second ksd: its own program objects over the same pinned maps, attached while the
  // first one's link still holds.
  Enforcement second = Enforcement::load(pin_dir_);
  second.attach(cgroup_);
  const ProgramIds now = Enforcement::pinned_program_ids(pin_dir_);
  EXPECT_NE(now.at("resolver_guard"), first.at("resolver_guard"));
  EXPECT_EQ(second.global_hooks_missing(), "");
  EXPECT_FALSE(std::filesystem::exists(pin_dir_ + "/link_resolver_guard_next"));
  enforcement_.reset();  // the first ksd is gone
  const auto errs = ConnectFromProtectedChild({resolver_});
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0], EPERM) << std::strerror(errs[0]);
}

TEST_F(ResolverGuardTest, PinnedLinkOutlivesTheLoader) {
  enforcement_.reset();  // ksd killed: only the pins hold the programs
  const auto errs = ConnectFromProtectedChild({resolver_});
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0], EPERM) << std::strerror(errs[0]);
  // Teardown (unpinning) lifts it.
  RemovePins();
  const auto after = ConnectFromProtectedChild({resolver_});
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0], 0) << std::strerror(after[0]);
}

// Where the guard cannot run (BPF tracing forbidden, as on the developers' VMs, or no BTF
// entry), a kernel without cgroup/connect_unix must make ksd refuse to start: loading
// fails with the reason, and nothing is pinned.
TEST(ResolverGuardRefusal, KsdRefusesToStartWithoutIt) {
  pretend_kernel_lacks_unix_hooks(true);
  const auto why = resolver_guard_unavailable();
  if (!why) {
    pretend_kernel_lacks_unix_hooks(false);
    GTEST_SKIP() << "resolver_guard runs on this kernel: ResolverGuardTest covers it";
  }
  const std::string pin_dir = "/sys/fs/bpf/kstest-guard-refusal-" + std::to_string(::getpid());
  try {
    Enforcement::load(pin_dir);
    ADD_FAILURE() << "loaded without connect_unix and without resolver_guard";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("refuses to start"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(*why), std::string::npos) << e.what();
  }
  pretend_kernel_lacks_unix_hooks(false);
  std::error_code ec;
  EXPECT_FALSE(std::filesystem::exists(pin_dir + "/link_resolver_guard"));
  std::filesystem::remove_all(pin_dir, ec);
}

}  // namespace
}  // namespace ks
