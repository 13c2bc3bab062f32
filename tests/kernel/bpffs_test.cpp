// May ksd mount the BPF filesystem itself? Both outcomes against the real kernel: on the
// host it mounts (the pins would outlive it), inside a private mount namespace, like a
// service sandboxed by systemd or `unshare -m`, it refuses (they would not).
#include "killswitch/bpffs.hpp"

#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "killswitch/error.hpp"

namespace ks {
namespace {

bool is_bpffs(const std::string& path) {
  struct statfs fs {};
  return ::statfs(path.c_str(), &fs) == 0 && static_cast<unsigned long>(fs.f_type) == BPF_FS_MAGIC;
}

// An empty directory for a mount point, removed (and unmounted) whatever happens.
class MountPoint : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ks-bpffs-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    while (is_bpffs(dir_) && ::umount2(dir_.c_str(), MNT_DETACH) == 0) {
    }
    ::rmdir(dir_.c_str());
  }
  std::string dir_;
};

TEST_F(MountPoint, MountsInTheHostsNamespace) {
  ASSERT_FALSE(is_bpffs(dir_));
  std::string why;
  ASSERT_NO_THROW(why = mount_bpffs_if_safe(dir_));
  EXPECT_TRUE(is_bpffs(dir_)) << why;
  EXPECT_NE(why.find("initial mount namespace"), std::string::npos) << why;
}

// In a child: a mount namespace of its own with the given propagation, then the attempt.
// Exit status 0: refused with a message that says why; 1: mounted; 2: setup failed.
int attempt_in_private_namespace(const std::string& dir, unsigned long propagation) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | propagation, nullptr) != 0)
      ::_exit(2);
    try {
      mount_bpffs_if_safe(dir);
    } catch (const Error& e) {
      std::string what = e.what();
      ::_exit(what.find("mount namespace of its own") != std::string::npos ? 0 : 3);
    }
    ::_exit(1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(MountPoint, RefusesInASandboxedServicesNamespace) {
  // systemd's sandboxing: the service's namespace is a slave of the host's.
  EXPECT_EQ(attempt_in_private_namespace(dir_, MS_SLAVE), 0);
  EXPECT_FALSE(is_bpffs(dir_));  // and nothing appeared on the host
}

TEST_F(MountPoint, RefusesInAnUnshareMNamespace) {
  // unshare -m: everything private, exactly like a host without systemd looks from inside.
  EXPECT_EQ(attempt_in_private_namespace(dir_, MS_PRIVATE), 0);
  EXPECT_FALSE(is_bpffs(dir_));
}

}  // namespace
}  // namespace ks
