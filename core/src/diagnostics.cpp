#include "killswitch/diagnostics.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>

#include "killswitch/cgroup.hpp"
#include "killswitch/enforcement.hpp"
#include "killswitch/error.hpp"
#include "killswitch/files.hpp"
#include "killswitch/hooks.hpp"
#include "killswitch/transient_scopes.hpp"

namespace ks {
namespace {

// bpf_set_retval in cgroup sock_addr programs, pid and comm in sockopt programs: the
// oldest kernel the whole object loads on (docs/kernels.md).
constexpr int kMinMajor = 6, kMinMinor = 1;
constexpr int kUnixMajor = 6, kUnixMinor = 7;  // cgroup/connect_unix

Diagnosis make(const char* check, Verdict verdict, std::string detail, std::string fix = "",
               bool essential = false) {
  return {check, verdict, std::move(detail), std::move(fix), essential};
}

std::string run_output(const std::string& command) {
  std::string out;
  if (FILE* p = ::popen((command + " 2>/dev/null").c_str(), "r")) {
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    ::pclose(p);
  }
  return out;
}

bool executable_in_path(const std::string& name) {
  for (const char* dir : {"/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"})
    if (::access((std::string(dir) + "/" + name).c_str(), X_OK) == 0) return true;
  return false;
}

// The kernel's build configuration: /proc/config.gz or /boot/config-<release>.
std::string kernel_config(const std::string& release) {
  std::string text;
  if (gzFile gz = ::gzopen("/proc/config.gz", "rb")) {
    char buf[8192];
    int n;
    while ((n = ::gzread(gz, buf, sizeof(buf))) > 0) text.append(buf, static_cast<std::size_t>(n));
    ::gzclose(gz);
  }
  if (text.empty()) {
    std::ifstream in("/boot/config-" + release);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  return text;
}

Diagnosis check_kernel(const std::string& release) {
  if (!kernel_at_least(release, kMinMajor, kMinMinor))
    return make("kernel", Verdict::kFail,
                "Linux " + release +
                    " is older than 6.1 (bpf_set_retval in connect/sendmsg programs, see "
                    "docs/kernels.md)",
                "run Linux 6.1 or newer (Debian 12's own kernel is 6.1)", true);
  return make("kernel", Verdict::kOk, "Linux " + release);
}

Diagnosis check_kernel_config(const std::string& release) {
  std::string config = kernel_config(release);
  if (config.empty())
    return make("kernel config", Verdict::kWarn,
                "neither /proc/config.gz nor /boot/config-" + release + " is readable",
                "the BPF probes below decide");
  std::string missing;
  for (const char* option : {"CONFIG_BPF_SYSCALL", "CONFIG_CGROUP_BPF", "CONFIG_CGROUPS",
                             "CONFIG_BPF_JIT", "CONFIG_INET"}) {
    const std::string set = std::string(option) + "=y";
    if (config.find(set + "\n") == std::string::npos)
      missing += (missing.empty() ? "" : ", ") + std::string(option);
  }
  if (!missing.empty())
    return make("kernel config", Verdict::kFail, "not built in: " + missing,
                "a kernel built with them (every distribution kernel is)", true);
  bool btf = config.find("CONFIG_DEBUG_INFO_BTF=y\n") != std::string::npos;
  return make("kernel config", Verdict::kOk,
              std::string("CONFIG_BPF_SYSCALL, CONFIG_CGROUP_BPF, CONFIG_BPF_JIT") +
                  (btf ? ", CONFIG_DEBUG_INFO_BTF" : ""));
}

Diagnosis check_bpf() {
  std::string missing;
  auto need_prog = [&](bpf_prog_type type, const char* name) {
    if (libbpf_probe_bpf_prog_type(type, nullptr) != 1)
      missing += (missing.empty() ? "" : ", ") + std::string(name);
  };
  auto need_map = [&](bpf_map_type type, const char* name) {
    if (libbpf_probe_bpf_map_type(type, nullptr) != 1)
      missing += (missing.empty() ? "" : ", ") + std::string(name);
  };
  need_prog(BPF_PROG_TYPE_CGROUP_SKB, "cgroup_skb programs");
  need_prog(BPF_PROG_TYPE_CGROUP_SOCK, "cgroup/sock_create programs");
  need_prog(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, "cgroup sock_addr programs");
  need_prog(BPF_PROG_TYPE_CGROUP_SOCKOPT, "cgroup/setsockopt programs");
  need_map(BPF_MAP_TYPE_SK_STORAGE, "socket storage maps");
  need_map(BPF_MAP_TYPE_RINGBUF, "ring buffers");
  need_map(BPF_MAP_TYPE_LPM_TRIE, "LPM tries");
  // Every helper the programs call, in the program types that call it: a kernel that
  // refuses one would refuse to load the object, and this says which, before libbpf does.
  struct HelperUse {
    bpf_prog_type type;
    bpf_func_id helper;
    const char* name;
  };
  static const HelperUse kHelpers[] = {
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_set_retval, "bpf_set_retval"},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_get_current_pid_tgid,
       "bpf_get_current_pid_tgid (sock_addr)"},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_get_current_comm,
       "bpf_get_current_comm (sock_addr)"},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_get_current_cgroup_id,
       "bpf_get_current_cgroup_id (sock_addr)"},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_sk_storage_get, "bpf_sk_storage_get (sock_addr)"},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_ringbuf_output, "bpf_ringbuf_output (sock_addr)"},
      {BPF_PROG_TYPE_CGROUP_SOCK, BPF_FUNC_get_current_cgroup_id,
       "bpf_get_current_cgroup_id (sock_create)"},
      {BPF_PROG_TYPE_CGROUP_SOCK, BPF_FUNC_get_current_ancestor_cgroup_id,
       "bpf_get_current_ancestor_cgroup_id (sock_create)"},
      {BPF_PROG_TYPE_CGROUP_SOCK, BPF_FUNC_get_netns_cookie, "bpf_get_netns_cookie (sock_create)"},
      {BPF_PROG_TYPE_CGROUP_SOCK, BPF_FUNC_sk_storage_get, "bpf_sk_storage_get (sock_create)"},
      {BPF_PROG_TYPE_CGROUP_SKB, BPF_FUNC_sk_fullsock, "bpf_sk_fullsock (cgroup_skb)"},
      {BPF_PROG_TYPE_CGROUP_SKB, BPF_FUNC_sk_storage_get, "bpf_sk_storage_get (cgroup_skb)"},
      {BPF_PROG_TYPE_CGROUP_SKB, BPF_FUNC_skb_cgroup_id, "bpf_skb_cgroup_id (cgroup_skb)"},
      {BPF_PROG_TYPE_CGROUP_SKB, BPF_FUNC_ringbuf_output, "bpf_ringbuf_output (cgroup_skb)"},
      {BPF_PROG_TYPE_CGROUP_SKB, BPF_FUNC_skb_load_bytes, "bpf_skb_load_bytes (cgroup_skb)"},
      {BPF_PROG_TYPE_CGROUP_SKB, BPF_FUNC_ktime_get_boot_ns, "bpf_ktime_get_boot_ns (cgroup_skb)"},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_ktime_get_boot_ns,
       "bpf_ktime_get_boot_ns (sock_addr)"},
      {BPF_PROG_TYPE_CGROUP_SOCKOPT, BPF_FUNC_set_retval, "bpf_set_retval (setsockopt)"},
      {BPF_PROG_TYPE_CGROUP_SOCKOPT, BPF_FUNC_get_current_pid_tgid,
       "bpf_get_current_pid_tgid (setsockopt)"},
      {BPF_PROG_TYPE_CGROUP_SOCKOPT, BPF_FUNC_get_current_comm,
       "bpf_get_current_comm (setsockopt)"},
      {BPF_PROG_TYPE_CGROUP_SOCKOPT, BPF_FUNC_get_current_cgroup_id,
       "bpf_get_current_cgroup_id (setsockopt)"},
      {BPF_PROG_TYPE_CGROUP_SOCKOPT, BPF_FUNC_sk_storage_get, "bpf_sk_storage_get (setsockopt)"},
      {BPF_PROG_TYPE_CGROUP_SOCKOPT, BPF_FUNC_ringbuf_output, "bpf_ringbuf_output (setsockopt)"},
      {BPF_PROG_TYPE_CGROUP_SOCKOPT, BPF_FUNC_ktime_get_boot_ns,
       "bpf_ktime_get_boot_ns (setsockopt)"},
  };
  for (const HelperUse& use : kHelpers)
    if (libbpf_probe_bpf_helper(use.type, use.helper, nullptr) != 1)
      missing += (missing.empty() ? "" : ", ") + std::string(use.name);
  if (!missing.empty()) {
    if (::geteuid() != 0)
      return make("bpf", Verdict::kWarn,
                  "cannot probe BPF without privileges (missing: " + missing + ")",
                  "run ksctl doctor as root");
    return make("bpf", Verdict::kFail, "the kernel refuses: " + missing,
                "a kernel with BPF and cgroup BPF enabled, and no BPF LSM policy or seccomp "
                "filter forbidding bpf() to root",
                true);
  }
  return make("bpf", Verdict::kOk,
              "bpf() works; cgroup_skb, sock_create and sock_addr programs, socket storage, ring "
              "buffers, bpf_set_retval and every other helper the programs call are available");
}

Diagnosis check_cgroup2() {
  std::string mount;
  try {
    mount = find_cgroup2_mount();
  } catch (const Error& e) {
    return make("cgroup2", Verdict::kFail, e.what(),
                "mount cgroup2 (systemd does; by hand: mount -t cgroup2 none /sys/fs/cgroup)",
                true);
  }
  struct statfs fs {};
  bool unified = ::statfs("/sys/fs/cgroup", &fs) == 0 &&
                 static_cast<unsigned long>(fs.f_type) == CGROUP2_SUPER_MAGIC;
  return make("cgroup2", Verdict::kOk,
              unified ? "unified hierarchy at " + mount
                      : "hybrid hierarchy: cgroup2 at " + mount + " next to cgroup v1");
}

void for_each_option(std::string_view options, const std::function<void(std::string_view)>& f) {
  while (!options.empty()) {
    const auto comma = std::min(options.find(','), options.size());
    if (comma > 0) f(options.substr(0, comma));
    options.remove_prefix(std::min(comma + 1, options.size()));
  }
}

}  // namespace

// Not a protection matter: how long a launch waits to be moved into its app's cgroup. Without
// favordynmods each move after a quiet spell waits for an RCU grace period (+10-20 ms a
// launch on the test VMs; launches in quick succession do not wait); with expedited grace
// periods it waits for one of those (8.0 ms instead of 26.5 in Debian 12's kernel under
// qemu, where a move without any wait took 5.6: docs/benchmarks.md, 4, seventh round).
Diagnosis cgroup_moves_diagnosis(const std::string& release, const std::string& mountinfo,
                                 const std::string& rcu_expedited, const std::string& rcu_normal) {
  const std::string mount = cgroup2_mount_from_mountinfo(mountinfo);
  const std::string options = cgroup2_super_options_from_mountinfo(mountinfo);
  if (mount.empty()) return make("cgroup_moves", Verdict::kSkip, "no cgroup2 mount");
  if (cgroup2_favors_dynmods(options))
    return make("cgroup_moves", Verdict::kOk,
                "cgroup2 is mounted with favordynmods: ksrun's move into its app's cgroup "
                "does not wait for an RCU grace period");
  // rcu_normal overrides rcu_expedited (the kernel's rcu_gp_is_normal()).
  const bool expedited = rcu_expedited.starts_with("1") && !rcu_normal.starts_with("1");
  if (expedited)
    return make("cgroup_moves", Verdict::kOk,
                "RCU grace periods are expedited (/sys/kernel/rcu_expedited): ksrun's move into "
                "its app's cgroup waits for an expedited one only");
  std::string avoid;
  if (kernel_at_least(release, 6, 0)) {
    // The mount's own options are named too: a remount sets all of them anew.
    std::string remount = "remount";
    for_each_option(options, [&](std::string_view option) {
      if (option != "rw" && option != "ro") remount += "," + std::string(option);
    });
    avoid = " To avoid it, at the cost of a memory barrier in every fork and exit: mount -o " +
            remount + ",favordynmods " + mount +
            " (on Linux 6.18 and later it then stays on until the next boot); or, reversible at "
            "any time, echo 1 > /sys/kernel/rcu_expedited (every RCU grace period then "
            "interrupts all busy CPUs at once). docs/benchmarks.md, 4";
  } else {
    avoid =
        " Linux 6.0+ can avoid that (cgroup2 favordynmods); here, echo 1 > "
        "/sys/kernel/rcu_expedited shortens it (every RCU grace period then interrupts all "
        "busy CPUs at once)";
  }
  return make("cgroup_moves", Verdict::kOk,
              "each launch after a quiet spell waits for an RCU grace period to be moved into "
              "its cgroup (~10-20 ms)." +
                  avoid);
}

namespace {

Diagnosis check_cgroup_moves(const std::string& release) {
  return cgroup_moves_diagnosis(release, read_text_file("/proc/self/mountinfo").value_or(""),
                                read_text_file("/sys/kernel/rcu_expedited").value_or(""),
                                read_text_file("/sys/kernel/rcu_normal").value_or(""));
}

Diagnosis check_bpffs() {
  struct statfs fs {};
  if (::statfs("/sys/fs/bpf", &fs) == 0 && static_cast<unsigned long>(fs.f_type) == BPF_FS_MAGIC)
    return make("bpffs", Verdict::kOk, "mounted on /sys/fs/bpf");
  return make("bpffs", Verdict::kWarn, "no BPF filesystem on /sys/fs/bpf",
              "mount -t bpf bpf /sys/fs/bpf (killswitch-early.service and an unsandboxed ksd do "
              "it themselves)");
}

Diagnosis check_btf() {
  if (::access("/sys/kernel/btf/vmlinux", R_OK) == 0)
    return make("btf", Verdict::kOk, "/sys/kernel/btf/vmlinux");
  // libbpf needs the kernel's BTF for an object with CO-RE relocations, even when the
  // program that holds them (connect_unix) is not loaded (docs/kernels.md).
  return make("btf", Verdict::kFail,
              "no /sys/kernel/btf/vmlinux: the BPF programs cannot be loaded without the "
              "kernel's BTF",
              "a kernel built with CONFIG_DEBUG_INFO_BTF=y (every Debian and Ubuntu kernel is)",
              true);
}

Diagnosis check_privileges() {
  if (::geteuid() == 0) {
    // CapEff from /proc/self/status: no libcap needed for three bits.
    std::ifstream status("/proc/self/status");
    std::string line;
    unsigned long long effective = 0;
    while (std::getline(status, line))
      if (line.rfind("CapEff:", 0) == 0) effective = std::stoull(line.substr(7), nullptr, 16);
    std::string missing;
    for (auto [bit, name] :
         {std::pair{39, "CAP_BPF"}, std::pair{12, "CAP_NET_ADMIN"}, std::pair{21, "CAP_SYS_ADMIN"}})
      if (!(effective >> bit & 1)) missing += (missing.empty() ? "" : ", ") + std::string(name);
    if (!missing.empty())
      return make("privileges", Verdict::kFail, "root, but without " + missing,
                  "run ksd with these capabilities (ksd.service has them)", true);
    return make("privileges", Verdict::kOk, "root with CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN");
  }
  return make("privileges", Verdict::kWarn,
              "uid " + std::to_string(::geteuid()) +
                  ": ksd needs root; some checks here are incomplete without it",
              "sudo ksctl doctor");
}

Diagnosis check_firewall() {
  std::vector<std::string> problems;
  bool looked = false;
  if (executable_in_path("nft")) {
    looked = true;
    for (const auto& chain : nft_drop_output_chains(run_output("nft list ruleset")))
      problems.push_back("nftables chain " + chain + " drops output by default");
  }
  if (executable_in_path("iptables-save")) {
    looked = true;
    if (iptables_output_drops(run_output("iptables-save -t filter")))
      problems.push_back("iptables filter OUTPUT policy is DROP");
  }
  if (!looked)
    return make("firewall", Verdict::kOk,
                "neither nft nor iptables-save is installed: nothing to check");
  if (!problems.empty()) {
    std::string detail;
    for (const auto& p : problems) detail += (detail.empty() ? "" : "; ") + p;
    return make("firewall", Verdict::kWarn, detail + " (a manual kill switch?)",
                "it must accept the VPN's own traffic (its UDP endpoint port) and the tunnel "
                "interface, or the tunnel cannot come up; Killswitch does not need such rules");
  }
  return make("firewall", Verdict::kOk, "no output chain drops by default");
}

Diagnosis check_installation(const std::string& pin_dir) {
  if (::geteuid() != 0)
    return make("pins", Verdict::kWarn, "not readable without root", "sudo ksctl doctor");
  if (Enforcement::pins_present(pin_dir))
    return make("pins", Verdict::kOk, "Killswitch's programs are pinned in " + pin_dir);
  return make("pins", Verdict::kWarn,
              "no Killswitch programs pinned in " + pin_dir + ": nothing is protected",
              systemd::is_systemd_host()
                  ? "systemctl enable --now killswitch-early.service ksd.service"
                  : "start ksd (by hand: ksd --config /etc/killswitch/config.toml; at boot "
                    "without systemd: /etc/init.d/killswitch, docs/systemd.md)");
}

// Why resolver_guard could not run here: probed for real as root, else only its BTF entry.
std::optional<std::string> resolver_guard_problem() {
  if (::geteuid() == 0) return resolver_guard_unavailable();
  if (libbpf_find_vmlinux_btf_id(kResolverGuardTarget, BPF_MODIFY_RETURN) > 0) return std::nullopt;
  return std::string("no BTF entry for ") + kResolverGuardTarget;
}

// Each guarantee of docs/threat-model.md and what gives it on this kernel. Most hold the
// same way on every supported kernel (they need what check_bpf() probed); the refusal of
// the resolving services' unix sockets is given by a different hook before 6.7.
std::vector<Diagnosis> check_guarantees(const std::string& release, bool kernel_ok) {
  struct Guarantee {
    const char* name;
    const char* what;
    const char* how;
  };
  static const Guarantee kCommon[] = {
      {"tunnel only", "a protected app's packets leave through its profile's tunnel or not at all",
       "cgroup_skb egress/ingress, policy routing by socket mark"},
      {"fails fast", "connect() and sendto() off the tunnel fail at once (ENETUNREACH)",
       "cgroup connect4/6, sendmsg4/6 with bpf_set_retval"},
      {"dns", "DNS goes only to the profile's resolvers, through the tunnel",
       "sendmsg/connect rewrite, recvmsg/getpeername restore"},
      {"multicast", "no multicast group joins outside the tunnel", "cgroup/setsockopt"},
      {"survives ksd", "enforcement outlives ksd (kill -9, restart, upgrade)",
       "bpf_links pinned in bpffs"},
      {"other netns", "sockets made in another network namespace are refused",
       "netns cookie in sock_create"},
  };
  std::vector<Diagnosis> out;
  const char* unmet = "this kernel cannot run the kill switch (see the checks above)";
  for (const Guarantee& g : kCommon)
    out.push_back(kernel_ok ? make(("guarantee: " + std::string(g.name)).c_str(), Verdict::kOk,
                                   std::string(g.what) + " [" + g.how + "]")
                            : make(("guarantee: " + std::string(g.name)).c_str(), Verdict::kFail,
                                   std::string(g.what) + ": " + unmet));
  // Root can probe the hook itself; anyone can read the kernel's version and BTF.
  const bool unix_hooks =
      ::geteuid() == 0 ? kernel_has_unix_hooks() : kernel_at_least(release, kUnixMajor, kUnixMinor);
  const std::string what =
      "name lookups through systemd-resolved's or nscd's unix socket are refused (they "
      "would be sent outside the tunnel)";
  if (!kernel_ok)
    out.push_back(make("guarantee: local resolvers", Verdict::kFail, what + ": " + unmet));
  else if (unix_hooks)
    out.push_back(
        make("guarantee: local resolvers", Verdict::kOk, what + " [cgroup/connect_unix]"));
  else if (auto why = resolver_guard_problem())
    out.push_back(make("guarantee: local resolvers", Verdict::kFail,
                       what + ": Linux " + release +
                           " has no cgroup/connect_unix (6.7+) and resolver_guard cannot run (" +
                           *why + "), so ksd refuses to start",
                       "Linux 6.7+, or a kernel that allows BPF tracing programs (docs/kernels.md)",
                       true));
  else
    out.push_back(make("guarantee: local resolvers", Verdict::kOk,
                       what + " [Linux " + release + " has no cgroup/connect_unix (6.7+): " +
                           "resolver_guard, fmod_ret on " + kResolverGuardTarget + "]"));
  return out;
}

}  // namespace

const char* verdict_name(Verdict verdict) {
  switch (verdict) {
    case Verdict::kOk:
      return "ok";
    case Verdict::kWarn:
      return "warn";
    case Verdict::kFail:
      return "FAIL";
    case Verdict::kSkip:
      return "skip";
  }
  return "?";
}

bool kernel_at_least(const std::string& release, int major, int minor) {
  int ma = 0, mi = 0;
  if (std::sscanf(release.c_str(), "%d.%d", &ma, &mi) < 2) return false;
  return ma > major || (ma == major && mi >= minor);
}

std::vector<std::string> nft_drop_output_chains(const std::string& ruleset) {
  std::vector<std::string> chains;
  std::istringstream in(ruleset);
  std::string line, table, chain;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string first;
    words >> first;
    if (first == "table") {
      std::string family, name;
      words >> family >> name;
      table = family + " " + name;
    } else if (first == "chain") {
      words >> chain;
    } else if (first == "type" && line.find("hook output") != std::string::npos &&
               line.find("policy drop") != std::string::npos) {
      chains.push_back(table + " " + chain);
    }
  }
  return chains;
}

bool iptables_output_drops(const std::string& save) {
  std::istringstream in(save);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(":OUTPUT DROP", 0) == 0) return true;
  return false;
}

std::vector<Diagnosis> diagnose(const std::string& pin_dir) {
  utsname u{};
  ::uname(&u);
  std::vector<Diagnosis> all = {check_kernel(u.release),
                                check_kernel_config(u.release),
                                check_bpf(),
                                check_cgroup2(),
                                check_cgroup_moves(u.release),
                                check_bpffs(),
                                check_btf(),
                                check_privileges(),
                                check_firewall(),
                                check_installation(pin_dir)};
  bool kernel_ok = true;
  for (const Diagnosis& d : all)
    if (d.essential && d.verdict == Verdict::kFail && d.check != "privileges") kernel_ok = false;
  for (Diagnosis& g : check_guarantees(u.release, kernel_ok)) all.push_back(std::move(g));
  return all;
}

std::vector<Diagnosis> essential_failures() {
  utsname u{};
  ::uname(&u);
  std::vector<Diagnosis> failed;
  for (const Diagnosis& d : {check_kernel(u.release), check_kernel_config(u.release), check_bpf(),
                             check_cgroup2(), check_privileges()})
    if (d.verdict == Verdict::kFail) failed.push_back(d);
  return failed;
}

}  // namespace ks
