#include "killswitch/hooks.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"

namespace ks {

const std::array<HookInfo, 14> kHooks = {{
    {"sock_create", BPF_CGROUP_INET_SOCK_CREATE, HookKernels::kAll},
    {"connect4", BPF_CGROUP_INET4_CONNECT, HookKernels::kAll},
    {"connect6", BPF_CGROUP_INET6_CONNECT, HookKernels::kAll},
    {"sendmsg4", BPF_CGROUP_UDP4_SENDMSG, HookKernels::kAll},
    {"sendmsg6", BPF_CGROUP_UDP6_SENDMSG, HookKernels::kAll},
    {"egress", BPF_CGROUP_INET_EGRESS, HookKernels::kAll},
    {"ingress", BPF_CGROUP_INET_INGRESS, HookKernels::kAll},
    {"recvmsg4", BPF_CGROUP_UDP4_RECVMSG, HookKernels::kAll},
    {"recvmsg6", BPF_CGROUP_UDP6_RECVMSG, HookKernels::kAll},
    {"getpeername4", BPF_CGROUP_INET4_GETPEERNAME, HookKernels::kAll},
    {"getpeername6", BPF_CGROUP_INET6_GETPEERNAME, HookKernels::kAll},
    {"setsockopt", BPF_CGROUP_SETSOCKOPT, HookKernels::kAll},
    {"connect_unix", kAttachUnixConnect, HookKernels::kUnixHooks},
    // Before 6.7: fmod_ret on security_unix_stream_connect (bpf/killswitch.bpf.c).
    {"resolver_guard", BPF_MODIFY_RETURN, HookKernels::kBeforeUnixHooks},
}};

namespace {

long sys_bpf(int cmd, bpf_attr& attr) { return ::syscall(__NR_bpf, cmd, &attr, sizeof(attr)); }

}  // namespace

namespace {
bool pretend_no_unix_hooks = false;
}

void pretend_kernel_lacks_unix_hooks(bool pretend) { pretend_no_unix_hooks = pretend; }

bool kernel_has_unix_hooks() {
  if (pretend_no_unix_hooks) return false;
  static const bool has = [] {
    // r0 = 1; exit: the smallest program the kernel accepts for the hook.
    const bpf_insn insns[] = {
        {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1},
        {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
    };
    static const char license[] = "GPL";
    bpf_attr attr;
    std::memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_CGROUP_SOCK_ADDR;
    attr.expected_attach_type = kAttachUnixConnect;
    attr.insns = reinterpret_cast<std::uintptr_t>(insns);
    attr.insn_cnt = sizeof(insns) / sizeof(insns[0]);
    attr.license = reinterpret_cast<std::uintptr_t>(license);
    UniqueFd prog(static_cast<int>(sys_bpf(BPF_PROG_LOAD, attr)));
    return static_cast<bool>(prog);
  }();
  return has;
}

std::vector<HookInfo> active_hooks() {
  std::vector<HookInfo> hooks;
  for (const HookInfo& hook : kHooks)
    if (hook.kernels == HookKernels::kAll ||
        (hook.kernels == HookKernels::kUnixHooks) == kernel_has_unix_hooks())
      hooks.push_back(hook);
  return hooks;
}

std::vector<std::uint32_t> query_effective_programs(int cgroup_fd, bpf_attach_type type) {
  std::vector<std::uint32_t> ids(64);
  bpf_attr attr;
  std::memset(&attr, 0, sizeof(attr));
  attr.query.target_fd = static_cast<__u32>(cgroup_fd);
  attr.query.attach_type = type;
  attr.query.query_flags = BPF_F_QUERY_EFFECTIVE;
  attr.query.prog_ids = reinterpret_cast<std::uintptr_t>(ids.data());
  attr.query.prog_cnt = static_cast<__u32>(ids.size());
  if (sys_bpf(BPF_PROG_QUERY, attr) != 0) throw_errno("BPF_PROG_QUERY failed");
  ids.resize(attr.query.prog_cnt);
  return ids;
}

std::string check_effective(int cgroup_fd, const ProgramIds& expected, HookSet hooks) {
  std::string missing;
  for (const HookInfo& hook : kHooks) {
    if (!hook.per_cgroup()) continue;  // system-wide: Enforcement::global_hooks_missing()
    auto it = expected.find(hook.name);
    if (hook.kernels == HookKernels::kUnixHooks) {
      const bool demanded =
          hooks == HookSet::kKernel ? kernel_has_unix_hooks() : it != expected.end();
      if (!demanded) continue;
    }
    if (it == expected.end()) {
      missing += std::string(missing.empty() ? "" : ", ") + hook.name + " (no id reported)";
      continue;
    }
    auto ids = query_effective_programs(cgroup_fd, hook.attach_type);
    bool found = false;
    for (auto id : ids) found = found || id == it->second;
    if (!found) missing += std::string(missing.empty() ? "" : ", ") + hook.name;
  }
  return missing;
}

}  // namespace ks
