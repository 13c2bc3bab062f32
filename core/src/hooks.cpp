#include "killswitch/hooks.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"

namespace ks {

const std::array<HookInfo, 13> kHooks = {{
    {"sock_create", BPF_CGROUP_INET_SOCK_CREATE, false},
    {"connect4", BPF_CGROUP_INET4_CONNECT, false},
    {"connect6", BPF_CGROUP_INET6_CONNECT, false},
    {"sendmsg4", BPF_CGROUP_UDP4_SENDMSG, false},
    {"sendmsg6", BPF_CGROUP_UDP6_SENDMSG, false},
    {"egress", BPF_CGROUP_INET_EGRESS, false},
    {"ingress", BPF_CGROUP_INET_INGRESS, false},
    {"recvmsg4", BPF_CGROUP_UDP4_RECVMSG, false},
    {"recvmsg6", BPF_CGROUP_UDP6_RECVMSG, false},
    {"getpeername4", BPF_CGROUP_INET4_GETPEERNAME, false},
    {"getpeername6", BPF_CGROUP_INET6_GETPEERNAME, false},
    {"setsockopt", BPF_CGROUP_SETSOCKOPT, false},
    {"connect_unix", kAttachUnixConnect, true},
}};

namespace {

long sys_bpf(int cmd, bpf_attr& attr) { return ::syscall(__NR_bpf, cmd, &attr, sizeof(attr)); }

}  // namespace

bool kernel_has_unix_hooks() {
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
    if (!hook.needs_unix_hooks || kernel_has_unix_hooks()) hooks.push_back(hook);
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
    auto it = expected.find(hook.name);
    if (hook.needs_unix_hooks) {
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
