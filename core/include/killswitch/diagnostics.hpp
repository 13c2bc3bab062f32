// What `ksctl doctor` checks, and what ksd refuses to start without: kernel version and
// config, the BPF syscall and the program and map types the kill switch uses, the cgroup2
// mount, bpffs, BTF, privileges, and firewall rules that would keep the tunnel from
// working. Each check has a verdict and, when it is not "ok", a fix.
#pragma once

#include <string>
#include <vector>

namespace ks {

// A check's outcome. kFail: the kill switch cannot run as it is (or, for verify, does not
// protect); kSkip: not checked (a precondition is missing).
enum class Verdict { kOk, kWarn, kFail, kSkip };
// "ok", "warn", "FAIL", "skip": what `ksctl doctor` and `verify` print and put in JSON.
const char* verdict_name(Verdict verdict);

struct Diagnosis {
  std::string check;  // "kernel", "bpf", "cgroup2", ...
  Verdict verdict = Verdict::kOk;
  std::string detail;
  std::string fix;         // what to do when it is not ok
  bool essential = false;  // FAIL here: ksd cannot protect anything
};

// Every check. Runs a few BPF probe loads and reads /proc and /sys; runs `nft` and
// `iptables-save` when they are installed.
// pin_dir: where ksd pins (ksctl --pin-dir).
std::vector<Diagnosis> diagnose(const std::string& pin_dir = "/sys/fs/bpf/killswitch");

// Only what ksd needs to start (kernel, BPF, cgroup2): the failing ones.
std::vector<Diagnosis> essential_failures();

// `cgroup_moves` (informational): whether a launch after a quiet spell waits for an RCU
// grace period to be moved into its cgroup, and how to avoid it, from the kernel release
// and the texts of /proc/self/mountinfo, /sys/kernel/rcu_expedited and rcu_normal ("" when
// missing).
Diagnosis cgroup_moves_diagnosis(const std::string& release, const std::string& mountinfo,
                                 const std::string& rcu_expedited, const std::string& rcu_normal);

// "5.18" <= "6.1.0-13-amd64": compares the leading numeric parts of kernel releases.
bool kernel_at_least(const std::string& release, int major, int minor);

// Output chains of an `nft list ruleset` text whose policy is drop: "inet filter output".
std::vector<std::string> nft_drop_output_chains(const std::string& ruleset);
// True when an `iptables-save` text sets the OUTPUT policy of the filter table to DROP or
// REJECT-like (DROP).
bool iptables_output_drops(const std::string& save);

}  // namespace ks
