// May ksd mount /sys/fs/bpf itself? The pure decision (killswitch/bpffs.hpp) from the
// mount namespaces it could read and /proc/self/mountinfo.
#include "killswitch/bpffs.hpp"

#include <gtest/gtest.h>

#include <string>

namespace ks {
namespace {

// A host whose PID 1 is not systemd (the developers' and CI's VMs): nothing is shared.
const char* kPlainHost =
    "21 26 0:20 / /proc rw,relatime - proc proc rw\n"
    "22 26 0:21 / /sys rw,relatime - sysfs sysfs rw\n"
    "26 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    "30 22 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n";

// A systemd host: everything shared, bpffs mounted.
const char* kSystemdHost =
    "22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
    "28 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n"
    "34 22 0:29 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:11 - bpf bpf rw,mode=700\n";

// A service sandboxed by systemd (ProtectSystem=, PrivateTmp=, ...): its namespace is a
// slave of the host's, and here the host has no bpffs.
const char* kSandboxedService =
    "520 519 259:2 / / ro,relatime master:1 - ext4 /dev/nvme0n1p2 rw\n"
    "521 520 0:21 / /sys ro,nosuid,nodev,noexec,relatime master:7 - sysfs sysfs rw\n";

TEST(MountHolding, LongestMountPointWins) {
  auto sys = mount_holding(kSystemdHost, "/sys/fs/bpf/killswitch");
  ASSERT_TRUE(sys);
  EXPECT_EQ(sys->mountpoint, "/sys/fs/bpf");
  EXPECT_EQ(sys->fstype, "bpf");
  EXPECT_TRUE(sys->shared);
  EXPECT_FALSE(sys->slave);

  auto plain = mount_holding(kPlainHost, "/sys/fs/bpf");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->mountpoint, "/sys");
  EXPECT_FALSE(plain->shared);
  EXPECT_FALSE(plain->slave);

  // "/sys/fs/cgroup" is no parent of "/sys/fs/cgroupx", "/" is everyone's.
  EXPECT_EQ(mount_holding(kPlainHost, "/sys/fs/cgroupx")->mountpoint, "/sys");
  EXPECT_EQ(mount_holding(kPlainHost, "/srv")->mountpoint, "/");
  EXPECT_FALSE(mount_holding("", "/sys/fs/bpf"));
  EXPECT_FALSE(mount_holding("garbage\nmore garbage - \n", "/sys"));
}

TEST(MountHolding, SlaveMountsAndStackedMounts) {
  auto sandboxed = mount_holding(kSandboxedService, "/sys/fs/bpf");
  ASSERT_TRUE(sandboxed);
  EXPECT_EQ(sandboxed->mountpoint, "/sys");
  EXPECT_TRUE(sandboxed->slave);

  // Two mounts on one point: the later one is on top. Escaped spaces are undone.
  const char* stacked =
      "22 1 0:21 / /sys rw - sysfs sysfs rw\n"
      "40 22 0:40 / /sys/fs/bpf rw shared:3 - tmpfs tmpfs rw\n"
      "41 40 0:41 / /sys/fs/bpf rw master:9 - bpf bpf rw\n"
      "42 1 0:42 / /mnt/with\\040space rw - tmpfs tmpfs rw\n";
  auto top = mount_holding(stacked, "/sys/fs/bpf/x");
  ASSERT_TRUE(top);
  EXPECT_EQ(top->fstype, "bpf");
  EXPECT_TRUE(top->slave);
  EXPECT_EQ(mount_holding(stacked, "/mnt/with space/a")->mountpoint, "/mnt/with space");
}

TEST(JudgeBpffsMount, KnownNamespacesDecide) {
  const std::string host = "mnt:[4026531832]";
  EXPECT_TRUE(judge_bpffs_mount(host, host, kSandboxedService, "/sys/fs/bpf").safe);
  auto other = judge_bpffs_mount("mnt:[4026532100]", host, kPlainHost, "/sys/fs/bpf");
  EXPECT_FALSE(other.safe);
  EXPECT_NE(other.why.find("mount namespace of its own"), std::string::npos) << other.why;
}

TEST(JudgeBpffsMount, UnknownInitialNamespaceFallsBackToPropagation) {
  // The fresh Debian VM: /proc/1/ns/mnt unreadable even for root.
  auto plain = judge_bpffs_mount("mnt:[4026531832]", std::nullopt, kPlainHost, "/sys/fs/bpf");
  EXPECT_TRUE(plain.safe) << plain.why;
  auto sandboxed =
      judge_bpffs_mount("mnt:[4026532100]", std::nullopt, kSandboxedService, "/sys/fs/bpf");
  EXPECT_FALSE(sandboxed.safe);
  EXPECT_NE(sandboxed.why.find("slave"), std::string::npos) << sandboxed.why;
  // Neither namespace known, no mountinfo: nothing says "sandboxed".
  EXPECT_TRUE(judge_bpffs_mount(std::nullopt, std::nullopt, "", "/sys/fs/bpf").safe);
}

}  // namespace
}  // namespace ks
