// Finding cgroup v2 from /proc text: the mount in /proc/self/mountinfo and a process's
// cgroup in /proc/<pid>/cgroup, on unified and hybrid hosts.
#include <gtest/gtest.h>

#include <string>

#include "killswitch/cgroup.hpp"

namespace ks {
namespace {

// ---------------------------------------------------------------------------------------
// cgroup2_mount_from_mountinfo

// Ubuntu 22.04 / Fedora: systemd in unified mode.
const char* kUnifiedHost =
    "22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
    "23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
    "24 28 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev "
    "rw,size=8116012k,nr_inodes=2029003,mode=755,inode64\n"
    "25 24 0:23 / /dev/pts rw,nosuid,noexec,relatime shared:3 - devpts devpts "
    "rw,gid=5,mode=620,ptmxmode=000\n"
    "26 28 0:24 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs "
    "rw,size=1630372k,mode=755,inode64\n"
    "28 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro\n"
    "29 22 0:6 / /sys/kernel/security rw,nosuid,nodev,noexec,relatime shared:8 - "
    "securityfs securityfs rw\n"
    "30 24 0:25 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw,inode64\n"
    "32 22 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
    "33 22 0:28 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw\n"
    "34 22 0:29 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:11 - bpf bpf rw,mode=700\n";

// Ubuntu 20.04 / Debian 10 / CentOS 8: systemd in hybrid mode. The v1 hierarchies (fstype
// "cgroup", a prefix of "cgroup2") and the tmpfs holding them come first.
const char* kHybridHost =
    "22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
    "28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "30 22 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
    "32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup "
    "cgroup rw,xattr,name=systemd\n"
    "35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup "
    "cgroup rw,memory\n"
    "36 30 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup "
    "cgroup rw,cpu,cpuacct\n"
    "37 30 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:17 - "
    "cgroup cgroup rw,net_cls,net_prio\n"
    "38 30 0:34 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:18 - cgroup "
    "cgroup rw,pids\n"
    "31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 "
    "cgroup2 rw,nsdelegate\n"
    "39 22 0:35 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:19 - bpf none rw,mode=700\n";

// Legacy-only host (cgroup v1, no v2 anywhere); "cgroup2" appears only in names.
const char* kV1OnlyHost =
    "22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
    "28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "30 22 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
    "32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup "
    "cgroup rw,xattr,name=systemd\n"
    "35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup "
    "cgroup rw,memory\n"
    "40 28 8:2 / /mnt/cgroup2 rw,relatime shared:20 - ext4 /dev/cgroup2 rw\n"
    "41 28 0:40 / /srv/data rw,relatime shared:21 - tmpfs cgroup2 rw\n";

TEST(Cgroup2Mount, UnifiedHost) {
  EXPECT_EQ(cgroup2_mount_from_mountinfo(kUnifiedHost), "/sys/fs/cgroup");
}

TEST(Cgroup2Mount, HybridHostWithV1MountsFirst) {
  EXPECT_EQ(cgroup2_mount_from_mountinfo(kHybridHost), "/sys/fs/cgroup/unified");
}

TEST(Cgroup2Mount, SuperOptionsAndFavorDynmods) {
  EXPECT_EQ(cgroup2_super_options_from_mountinfo(kHybridHost), "rw,nsdelegate");
  EXPECT_FALSE(cgroup2_favors_dynmods(cgroup2_super_options_from_mountinfo(kHybridHost)));
  EXPECT_EQ(cgroup2_super_options_from_mountinfo(kV1OnlyHost), "");
  EXPECT_TRUE(cgroup2_favors_dynmods(cgroup2_super_options_from_mountinfo(
      "32 22 0:27 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 "
      "rw,nsdelegate,favordynmods,memory_recursiveprot\n")));
  EXPECT_TRUE(cgroup2_favors_dynmods("favordynmods"));
  EXPECT_FALSE(cgroup2_favors_dynmods("rw,nofavordynmods"));
  EXPECT_FALSE(cgroup2_favors_dynmods(""));
}

TEST(Cgroup2Mount, NoneMounted) {
  EXPECT_EQ(cgroup2_mount_from_mountinfo(kV1OnlyHost), "");
  EXPECT_EQ(cgroup2_mount_from_mountinfo(""), "");
  EXPECT_EQ(cgroup2_mount_from_mountinfo("\n\n"), "");
  EXPECT_EQ(cgroup2_mount_from_mountinfo("not a mountinfo line\n"), "");
}

TEST(Cgroup2Mount, EscapedMountpoint) {
  // The kernel writes space, tab, newline and backslash in paths as \ooo.
  EXPECT_EQ(cgroup2_mount_from_mountinfo(
                "28 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
                "50 28 0:40 / /mnt/my\\040cgroup rw,relatime shared:30 - cgroup2 none rw\n"),
            "/mnt/my cgroup");
  EXPECT_EQ(cgroup2_mount_from_mountinfo(
                "50 28 0:40 / /mnt/a\\011b\\012c\\134d rw,relatime - cgroup2 none rw\n"),
            "/mnt/a\tb\nc\\d");
  // An escape as the very last characters of the field.
  EXPECT_EQ(cgroup2_mount_from_mountinfo("50 28 0:40 / /mnt/trailing\\040 rw - cgroup2 none rw\n"),
            "/mnt/trailing ");
}

TEST(Cgroup2Mount, OptionalFieldsBeforeSeparator) {
  // Zero, one and several optional fields ("shared:N master:N propagate_from:N
  // unbindable") may stand between the mount options and " - ".
  EXPECT_EQ(
      cgroup2_mount_from_mountinfo(
          "32 22 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw\n"),
      "/sys/fs/cgroup");
  EXPECT_EQ(cgroup2_mount_from_mountinfo("32 22 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec "
                                         "shared:9 master:3 propagate_from:2 unbindable - "
                                         "cgroup2 cgroup2 rw,nsdelegate\n"),
            "/sys/fs/cgroup");
}

TEST(Cgroup2Mount, ContainerWithCgroupNamespace) {
  // Docker / podman with a private cgroup namespace: source "cgroup", read-only, no
  // optional fields, and a non-"/" root on older runtimes.
  const char* text =
      "1104 1050 0:55 / / rw,relatime master:540 - overlay overlay "
      "rw,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/var/"
      "lib/docker/overlay2/123/diff,workdir=/var/lib/docker/overlay2/123/work\n"
      "1105 1104 0:58 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
      "1108 1104 0:60 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro\n"
      "1109 1108 0:27 /../../.. /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup "
      "rw,nsdelegate,memory_recursiveprot\n";
  EXPECT_EQ(cgroup2_mount_from_mountinfo(text), "/sys/fs/cgroup");
}

TEST(Cgroup2Mount, FirstCgroup2MountWins) {
  EXPECT_EQ(
      cgroup2_mount_from_mountinfo("31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
                                   "60 28 0:27 / /run/other-cgroup2 rw - cgroup2 cgroup2 rw\n"),
      "/sys/fs/cgroup/unified");
}

TEST(Cgroup2Mount, LastLineWithoutNewline) {
  EXPECT_EQ(
      cgroup2_mount_from_mountinfo("28 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
                                   "32 22 0:27 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw"),
      "/sys/fs/cgroup");
}

// ---------------------------------------------------------------------------------------
// cgroup_from_proc_text

TEST(CgroupFromProc, HybridHost) {
  const char* text =
      "12:devices:/user.slice\n"
      "11:memory:/user.slice/user-1000.slice/user@1000.service\n"
      "10:cpu,cpuacct:/user.slice\n"
      "9:net_cls,net_prio:/\n"
      "8:freezer:/\n"
      "7:blkio:/user.slice\n"
      "6:pids:/user.slice/user-1000.slice/user@1000.service\n"
      "5:perf_event:/\n"
      "4:hugetlb:/\n"
      "3:rdma:/\n"
      "2:cpuset:/\n"
      "1:name=systemd:/user.slice/user-1000.slice/user@1000.service/app.slice/"
      "gnome-terminal.scope\n"
      "0::/x.slice/y.scope\n";
  EXPECT_EQ(cgroup_from_proc_text(text), "/x.slice/y.scope");
}

TEST(CgroupFromProc, UnifiedHost) {
  EXPECT_EQ(cgroup_from_proc_text("0::/killswitch.slice/default.slice/app-1234.scope\n"),
            "/killswitch.slice/default.slice/app-1234.scope");
  EXPECT_EQ(cgroup_from_proc_text("0::/\n"), "/");
  EXPECT_EQ(cgroup_from_proc_text("0::/no/trailing/newline"), "/no/trailing/newline");
}

TEST(CgroupFromProc, V2LineNotLast) {
  EXPECT_EQ(cgroup_from_proc_text("0::/first.scope\n1:name=systemd:/user.slice\n"), "/first.scope");
}

TEST(CgroupFromProc, ColonsInThePathAreKept) {
  EXPECT_EQ(cgroup_from_proc_text("1:name=systemd:/a\n0::/odd:name.scope\n"), "/odd:name.scope");
}

TEST(CgroupFromProc, NoV2Line) {
  const char* text =
      "12:devices:/user.slice\n"
      "11:memory:/user.slice\n"
      "10:cpu,cpuacct:/user.slice\n"
      "1:name=systemd:/user.slice/user-1000.slice/session-2.scope\n";
  EXPECT_EQ(cgroup_from_proc_text(text), "");
  EXPECT_EQ(cgroup_from_proc_text(""), "");
  // Hierarchy ids that merely end or start with 0 are v1.
  EXPECT_EQ(cgroup_from_proc_text("10:pids:/a\n100::/b\n"), "");
}

}  // namespace
}  // namespace ks
