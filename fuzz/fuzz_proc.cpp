// /proc and mountinfo text: cgroup paths of processes (/proc/PID/cgroup, which the process
// itself can influence through its cgroup names), mountinfo fields and escapes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "killswitch/bpffs.hpp"
#include "killswitch/cgroup.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ks::cgroup_from_proc_text(text);
  ks::cgroup2_mount_from_mountinfo(text);
  ks::unescape_mountinfo(text);
  ks::mount_holding(text, "/sys/fs/bpf");
  return 0;
}
