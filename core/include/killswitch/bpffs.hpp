// The BPF filesystem that holds the pins: may ksd mount it itself?
//
// Pins (and the links they hold) live as long as the bpffs they are in. A bpffs that ksd
// mounts in a mount namespace of its own (a sandboxed service, `unshare -m`) disappears
// with that namespace, and enforcement with it; one mounted in the host's namespace stays.
// So ksd mounts /sys/fs/bpf only when it can tell that its namespace is the host's.
#pragma once

#include <optional>
#include <string>

namespace ks {

// What the mountinfo line of the mount holding a path says.
struct MountEntry {
  std::string mountpoint;  // unescaped
  std::string fstype;
  bool slave = false;   // "master:N": receives mounts from another namespace, sends none back
  bool shared = false;  // "shared:N"
};

// The mount that holds `path` (the longest mount point that is a prefix of it; of mounts
// stacked on one point, the last listed). Empty when the text names none.
std::optional<MountEntry> mount_holding(const std::string& mountinfo_text, const std::string& path);

struct BpffsMountVerdict {
  bool safe;        // a bpffs mounted here outlives this process
  std::string why;  // the evidence, for the log or the refusal
};

// Pure decision, unit-tested. own_ns/init_ns: "mnt:[N]" of this process and of the initial
// mount namespace, when they could be read. Same namespace: safe. Different: refused.
// Unknown (PID 1's namespace unreadable, as on hosts whose PID 1 holds capabilities the
// caller lacks, and no kernel thread visible): refused when the mount holding the mount
// point is a slave of another namespace (how systemd sandboxes a service), else safe.
BpffsMountVerdict judge_bpffs_mount(const std::optional<std::string>& own_ns,
                                    const std::optional<std::string>& init_ns,
                                    const std::string& mountinfo_text,
                                    const std::string& mountpoint);

// "mnt:[N]" of the initial mount namespace: PID 1's, else (PID 1 unreadable, even for
// root when PID 1 holds capabilities the caller lacks) that of a kernel thread, which
// always lives in the initial namespaces (PID 2, kthreadd, in the initial pid namespace).
std::optional<std::string> initial_mount_namespace();

// Mounts a bpffs on `mountpoint` (mode 0700) when judge_bpffs_mount says it is safe for
// this process; otherwise throws ks::Error saying why and how to mount it. Returns the
// verdict's evidence.
std::string mount_bpffs_if_safe(const std::string& mountpoint);

}  // namespace ks
