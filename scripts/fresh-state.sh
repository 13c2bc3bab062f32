#!/usr/bin/env bash
# Puts what Killswitch touches back into the state of a freshly booted machine, as far as
# that is safe, so that CI exercises the first run on every submission (the developers'
# machine keeps state between runs; a user's fresh Debian 12 has none of it):
#   - an empty BPF filesystem on /sys/fs/bpf is unmounted (a fresh host has none mounted
#     unless systemd mounted it; ksd then has to mount it itself), one that holds pins is
#     kept and named;
#   - the runtime directory /run/killswitch is removed;
#   - a protected tree (killswitch*.slice under the cgroup2 mount) without processes is
#     removed.
# Nothing is touched while a ksd runs. Run as root: scripts/fresh-state.sh
set -euo pipefail
say() { echo "fresh-state: $*"; }

if pids=$(pgrep -x ksd); then
  say "ksd is running (pid $(tr '\n' ' ' <<<"$pids")); leaving its state alone"
  exit 0
fi

# maps.debug and progs.debug: the kernel's own iterators, in every new bpffs (BPF_PRELOAD).
pins() {
  local entry found=1
  for entry in /sys/fs/bpf/* /sys/fs/bpf/.[!.]*; do
    [[ -e $entry && $entry != */maps.debug && $entry != */progs.debug ]] || continue
    echo "${entry##*/}"
    found=0
  done
  return "$found"
}
while [[ $(stat -f -c %T /sys/fs/bpf 2>/dev/null) == bpf_fs ]]; do
  if pins >/dev/null; then
    say "/sys/fs/bpf holds pins, kept mounted: $(pins | head -5 | tr '\n' ' ')"
    break
  fi
  umount /sys/fs/bpf
  say "unmounted an empty BPF filesystem from /sys/fs/bpf"
done

if [[ -e /run/killswitch ]]; then
  rm -rf /run/killswitch
  say "removed /run/killswitch"
fi

# mountinfo: ... mountpoint(5) options [optional fields] - fstype ...
cgroup2=$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break } }' /proc/self/mountinfo)
if [[ -n $cgroup2 ]]; then
  for tree in "$cgroup2"/killswitch*.slice; do
    [[ -d $tree ]] || continue
    if grep -q 'populated 1' "$tree/cgroup.events" 2>/dev/null; then
      say "$tree has processes, kept"
      continue
    fi
    find "$tree" -depth -type d -exec rmdir {} + 2>/dev/null || true
    if [[ -d $tree ]]; then say "could not remove all of $tree"; else say "removed $tree"; fi
  done
fi
