// The enforcement hooks and the kernel's view of them: which programs are in force on a
// cgroup. Deliberately free of libbpf (raw bpf(2) calls): ksrun needs only this part, and
// not having to load libbpf, libelf and zlib keeps its start-up short.
#pragma once

#include <linux/bpf.h>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ks {

// One entry per enforcement program: its name (also the link pin's suffix) and hook.
struct HookInfo {
  const char* name;  // "egress", "connect4", ...
  bpf_attach_type attach_type;
  bool needs_unix_hooks;  // Linux 6.7+ only (cgroup/connect_unix)
};
extern const std::array<HookInfo, 13> kHooks;

// BPF_CGROUP_UNIX_CONNECT (Linux 6.7); Debian 12's kernel headers predate it.
inline constexpr auto kAttachUnixConnect = static_cast<bpf_attach_type>(49);

// True when the running kernel has the cgroup unix-socket hooks (probed once by loading
// a trivial program for BPF_CGROUP_UNIX_CONNECT; needs CAP_BPF).
bool kernel_has_unix_hooks();

// The hooks this kernel has: all of kHooks, minus connect_unix before Linux 6.7.
std::vector<HookInfo> active_hooks();

// Program ids currently attached, by hook name; what ksrun compares with the kernel.
using ProgramIds = std::map<std::string, std::uint32_t>;

// Effective programs on a cgroup for one hook (BPF_F_QUERY_EFFECTIVE); needs
// CAP_NET_ADMIN. Throws ks::Error.
std::vector<std::uint32_t> query_effective_programs(int cgroup_fd, bpf_attach_type type);

// Which hooks check_effective() demands.
enum class HookSet {
  kKernel,    // every hook this kernel has (probes the kernel once; needs CAP_BPF)
  kReported,  // every hook all kernels have, plus the optional ones `expected` names:
              // for callers that trust ksd's list and must not probe (ksrun)
};

// Checks that every program of `expected` is effective on the cgroup. Returns an empty
// string when it holds, otherwise what is missing.
std::string check_effective(int cgroup_fd, const ProgramIds& expected,
                            HookSet hooks = HookSet::kKernel);

}  // namespace ks
