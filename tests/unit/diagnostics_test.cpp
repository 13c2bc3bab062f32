// The pure parts of ksctl doctor: kernel release comparison, firewall rule parsing, what it
// says about moves into cgroups.
#include "killswitch/diagnostics.hpp"

#include <gtest/gtest.h>

TEST(Diagnostics, KernelRelease) {
  EXPECT_TRUE(ks::kernel_at_least("6.1.0-13-amd64", 6, 1));
  EXPECT_FALSE(ks::kernel_at_least("6.0.19", 6, 1));
  EXPECT_TRUE(ks::kernel_at_least("6.1.0-13-amd64", 5, 18));
  EXPECT_TRUE(ks::kernel_at_least("5.18.0", 5, 18));
  EXPECT_FALSE(ks::kernel_at_least("5.10.0-26-amd64", 5, 18));
  EXPECT_FALSE(ks::kernel_at_least("6.1.0", 6, 7));
  EXPECT_TRUE(ks::kernel_at_least("6.18.44-fc", 6, 7));
  EXPECT_FALSE(ks::kernel_at_least("garbage", 5, 18));
}

TEST(Diagnostics, CgroupMovesNamesWhatSparesTheGracePeriod) {
  const std::string unified =
      "32 22 0:27 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
  const std::string favoring =
      "32 22 0:27 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 "
      "rw,nsdelegate,favordynmods\n";
  auto moves = [](const std::string& release, const std::string& mountinfo,
                  const std::string& expedited, const std::string& normal) {
    const ks::Diagnosis d = ks::cgroup_moves_diagnosis(release, mountinfo, expedited, normal);
    EXPECT_EQ(d.check, "cgroup_moves");
    EXPECT_FALSE(d.essential) << "informational only";
    return d;
  };
  EXPECT_NE(moves("6.1.0", favoring, "0\n", "0\n").detail.find("does not wait"), std::string::npos);
  // Expedited grace periods: said so, nothing to do; unless rcu_normal overrides them.
  EXPECT_NE(moves("6.1.0", unified, "1\n", "0\n").detail.find("expedited one only"),
            std::string::npos);
  EXPECT_NE(moves("5.15.0", unified, "1\n", "").detail.find("expedited one only"),
            std::string::npos);
  const std::string normal = moves("6.1.0", unified, "1\n", "1\n").detail;
  EXPECT_NE(normal.find("waits for an RCU grace period"), std::string::npos) << normal;
  // Neither: both ways out, the remount naming the mount's own options.
  const std::string waits = moves("6.1.0-13-amd64", unified, "0\n", "0\n").detail;
  EXPECT_NE(waits.find("mount -o remount,nsdelegate,favordynmods /sys/fs/cgroup"),
            std::string::npos)
      << waits;
  EXPECT_NE(waits.find("echo 1 > /sys/kernel/rcu_expedited"), std::string::npos) << waits;
  // Before 6.0 there is no favordynmods to mount with.
  const std::string old = moves("5.15.0", unified, "", "").detail;
  EXPECT_EQ(old.find("mount -o"), std::string::npos) << old;
  EXPECT_NE(old.find("rcu_expedited"), std::string::npos) << old;
  EXPECT_EQ(moves("6.1.0", "", "0", "0").verdict, ks::Verdict::kSkip);
}

TEST(Diagnostics, NftOutputPolicyDrop) {
  const char* ruleset = R"(table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
	}
	chain output {
		type filter hook output priority filter; policy drop;
		oifname "wg0" accept
	}
}
table ip nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
	}
}
table inet killswitch {
	chain out {
		type filter hook output priority 0; policy accept;
	}
}
)";
  auto chains = ks::nft_drop_output_chains(ruleset);
  ASSERT_EQ(chains.size(), 1u);
  EXPECT_EQ(chains[0], "inet filter output");
  EXPECT_TRUE(ks::nft_drop_output_chains("").empty());
}

TEST(Diagnostics, IptablesOutputPolicy) {
  EXPECT_TRUE(
      ks::iptables_output_drops("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT DROP [0:0]\nCOMMIT\n"));
  EXPECT_FALSE(ks::iptables_output_drops("*filter\n:INPUT DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"));
}

// ksctl doctor names every guarantee of docs/threat-model.md with what gives it here; the
// one that differs by kernel names its hook. (Runs the real checks: without root the
// local-resolver line is decided by the kernel's version and BTF.)
TEST(Diagnostics, NamesEachGuaranteeAndItsHook) {
  std::vector<std::string> guarantees;
  std::string local_resolvers;
  for (const ks::Diagnosis& d : ks::diagnose()) {
    if (d.check.rfind("guarantee: ", 0) != 0) continue;
    guarantees.push_back(d.check.substr(11));
    if (d.check == "guarantee: local resolvers")
      local_resolvers = std::string(ks::verdict_name(d.verdict)) + " " + d.detail;
  }
  const std::vector<std::string> expected = {"tunnel only",    "fails fast",   "dns",
                                             "multicast",      "survives ksd", "other netns",
                                             "local resolvers"};
  EXPECT_EQ(guarantees, expected);
  const bool named = local_resolvers.find("connect_unix") != std::string::npos ||
                     local_resolvers.find("resolver_guard") != std::string::npos;
  EXPECT_TRUE(named) << local_resolvers;
}
