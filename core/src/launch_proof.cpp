#include "killswitch/launch_proof.hpp"

#include <arpa/inet.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "killswitch/cgroup.hpp"
#include "killswitch/error.hpp"
#include "killswitch/fd.hpp"
#include "killswitch/hooks.hpp"
#include "killswitch_abi.h"

namespace ks {
namespace {

sockaddr_storage canary_address(int family, socklen_t& len) {
  sockaddr_storage ss{};
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(KS_CANARY_PORT);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(sockaddr_in);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(KS_CANARY_PORT);
    a->sin6_addr = in6addr_loopback;
    len = sizeof(sockaddr_in6);
  }
  return ss;
}

// The egress canary: a connected UDP socket sends one byte to loopback KS_CANARY_PORT.
// Returns the send's errno (0 on success), or -errno when the family is unavailable.
int egress_canary_errno(int family) {
  UniqueFd s(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return -errno;
  socklen_t len = 0;
  sockaddr_storage addr = canary_address(family, len);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) return errno;
  char byte = 0;
  return ::send(s.get(), &byte, 1, 0) < 0 ? errno : 0;
}

// The connect canary: a TCP connect() to loopback KS_CANARY_PORT.
int connect_canary_errno(int family) {
  UniqueFd s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return -errno;
  socklen_t len = 0;
  sockaddr_storage addr = canary_address(family, len);
  return ::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 ? errno : 0;
}

bool has_effective_cap(int cap) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  return (data[cap / 32].effective & (1u << (cap % 32))) != 0;
}

std::string errno_name(int e) { return e == 0 ? "success" : std::strerror(e); }

}  // namespace

void prove_protection(const nlohmann::json& reply) {
  const std::string want = reply.value("cgroup", std::string());
  const std::string have = cgroup_of_pid(0);
  if (want.empty() || have != want)
    throw Error("not in the protected cgroup (expected " + want + ", in " + have + ")");

  prove_canaries();

  if (can_query_programs()) {
    ProgramIds expected;
    if (reply.contains("program_ids") && reply["program_ids"].is_object())
      for (const auto& [hook, id] : reply["program_ids"].items())
        if (id.is_number_unsigned()) expected[hook] = id.get<std::uint32_t>();
    UniqueFd cg = open_cgroup(find_cgroup2_mount() + have);
    // ksd listed the hooks this kernel has (ksrun cannot probe the kernel without CAP_BPF,
    // and must not spend the time): every hook all kernels have must be in that list.
    std::string missing = check_effective(cg.get(), expected, HookSet::kReported);
    if (!missing.empty())
      throw Error("programs missing from this cgroup's effective list: " + missing);
  }
}

bool can_query_programs() { return has_effective_cap(CAP_NET_ADMIN); }

void prove_canaries() {
  int proven_families = 0;
  for (int family : {AF_INET, AF_INET6}) {
    const char* fam = family == AF_INET ? "IPv4" : "IPv6";
    int send_err = egress_canary_errno(family);
    if (send_err < 0) continue;  // no such family on this host: nothing to leak over it
    if (family == AF_INET6 && (send_err == EADDRNOTAVAIL || send_err == ENETUNREACH))
      continue;  // no ::1 (IPv6 disabled on loopback): nothing goes out over IPv6 either
    if (send_err != EPERM)
      throw Error(std::string("the egress program does not judge this process (") + fam +
                  " canary send: " + errno_name(send_err) + ", expected a drop)");
    int connect_err = connect_canary_errno(family);
    if (connect_err != KS_CANARY_ERRNO)
      throw Error(std::string("the connect program does not judge this process (") + fam +
                  " canary connect: " + errno_name(connect_err) + ")");
    ++proven_families;
  }
  // A family may be missing on a host, but a proof with no evidence at all is no proof.
  if (proven_families == 0)
    throw Error("cannot run the enforcement canaries (no IPv4 or IPv6 loopback socket)");
}

void drop_bypass_capabilities() {
  const int caps[] = {CAP_NET_RAW, CAP_NET_ADMIN};
  bool can_setpcap = has_effective_cap(CAP_SETPCAP);
  for (int cap : caps) {
    if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) {
      if (!can_setpcap) {
        // Without CAP_SETPCAP the bounding set cannot shrink; that only matters when
        // the process could gain the capability back (file capabilities).
        continue;
      }
      if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0)
        throw_errno("cannot drop capability " + std::to_string(cap) + " from the bounding set");
    }
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    throw_errno("cannot clear ambient capabilities");

  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &header, data) != 0) throw_errno("capget");
  for (int cap : caps) {
    std::uint32_t bit = 1u << (cap % 32);
    data[cap / 32].effective &= ~bit;
    data[cap / 32].permitted &= ~bit;
    data[cap / 32].inheritable &= ~bit;
  }
  if (::syscall(SYS_capset, &header, data) != 0) throw_errno("capset");
}

}  // namespace ks
