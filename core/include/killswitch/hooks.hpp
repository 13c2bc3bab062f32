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

// Which kernels a hook is used on.
enum class HookKernels {
  kAll,
  kUnixHooks,        // Linux 6.7+ only (cgroup/connect_unix)
  kBeforeUnixHooks,  // only where the kernel lacks them: the same guarantee another way
};

// One entry per enforcement program: its name (also the link pin's suffix) and hook.
struct HookInfo {
  const char* name;  // "egress", "connect4", ...
  bpf_attach_type attach_type;
  HookKernels kernels;
  // A cgroup hook runs for the protected tree only and is checked per cgroup
  // (check_effective); the others are system-wide (BPF_MODIFY_RETURN on a kernel
  // function) and judge the caller's cgroup themselves.
  bool per_cgroup() const { return attach_type != BPF_MODIFY_RETURN; }
};
extern const std::array<HookInfo, 14> kHooks;

// What resolver_guard modifies the return value of (before Linux 6.7).
inline constexpr const char* kResolverGuardTarget = "security_unix_stream_connect";

// BPF_CGROUP_UNIX_CONNECT (Linux 6.7); Debian 12's kernel headers predate it.
inline constexpr auto kAttachUnixConnect = static_cast<bpf_attach_type>(49);

// True when the running kernel has the cgroup unix-socket hooks (probed once by loading
// a trivial program for BPF_CGROUP_UNIX_CONNECT; needs CAP_BPF).
bool kernel_has_unix_hooks();

// For kernel tests of the pre-6.7 path on a newer kernel: while set, this process
// behaves as if the kernel had no cgroup unix-socket hooks.
void pretend_kernel_lacks_unix_hooks(bool pretend);

// The hooks used on this kernel: connect_unix on 6.7+, resolver_guard before.
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
