#!/usr/bin/env bash
# Smoke test of the systemd test container (container.sh): a real systemd boots, puts
# processes where the project will ask it to (a scope in killswitch.slice), runs our
# binaries, lets root use bpf() and bpffs, joins a given network namespace, and afterwards
# the host is exactly as before (no cgroup dir, nspawn process, nspawn leftovers, mounts).
# Two containers run at the same time, so the shared host bookkeeping is exercised too.
# Never skips: without root, the rootfs or the binaries it FAILS.
#
# Environment: KS_BUILD_DIR, KS_SOURCE_DIR (see container.sh); CT_NAME (default ks-smoke).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/container.sh"

t_start=$(_ct_now_ms)
pass() { echo "PASS: $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# assert_eq ACTUAL EXPECTED MSG
assert_eq() {
  if [[ $1 == "$2" ]]; then pass "$3"; else fail "$3: got '$1', want '$2'"; fi
}
# assert_match ACTUAL REGEX MSG
assert_match() {
  if [[ $1 =~ $2 ]]; then pass "$3 ($1)"; else fail "$3: '$1' does not match /$2/"; fi
}
# /proc/self/cgroup inside still lists the host's v1 hierarchies (the kernel shows every
# mounted hierarchy); only the cgroup2 line "0::PATH" is the container's.
cg2_line() { grep '^0::'; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f s", ms / 1000 }'; }

((EUID == 0)) || fail "must run as root (systemd-nspawn, cgroup2, mmdebstrap); run it with sudo"
for b in ksd ksctl ksrun; do
  [[ -x $KS_BUILD_DIR/$b ]] || fail "$KS_BUILD_DIR/$b is missing: build the project first (KS_BUILD_DIR=$KS_BUILD_DIR)"
done

name=${CT_NAME:-ks-smoke}
name2=$name-ns
netns=ks-ct-smoke-$$

# What the host looks like before; compared after the containers are gone. Only what this
# harness can create: other tests (the leak lab) may run at the same time and add their own
# cgroups and network namespaces.
host_state() {
  echo "# our dirs in the cgroup2 root"
  find "$(_ct_cgroup2_mount)" -mindepth 1 -maxdepth 1 -type d -name 'ks-ct-*' | sort
  echo "# nspawn's host dirs"
  find /run/systemd/nspawn 2>/dev/null | sort || true
  echo "# container state"
  find "$CT_STATE_ROOT" 2>/dev/null | sort || true
  echo "# mounts (but other tests' network namespaces)"
  findmnt -rn -o TARGET,FSTYPE | grep -v '^/run/netns/' | sort
}
# A container of an earlier, SIGKILLed run would be reaped by ct_start and make the
# comparison fail: reap it before taking the picture. Same for such a run's netns (its
# name carries the owner's PID).
ct_reap_stale
for f in /run/netns/ks-ct-smoke-*; do
  [[ -e $f && ! -e /proc/${f##*-} ]] || continue
  echo "removing stale netns ${f##*/}"
  ip netns del "${f##*/}"
done
before=$(host_state)

ct_on_exit() { ip netns del "$netns" 2>/dev/null || true; }
ct_cleanup_on_exit "$name" "$name2"

# ---- rootfs and boot --------------------------------------------------------------------------
ct_rootfs
if ((CT_ROOTFS_BUILT)); then
  echo "TIME: rootfs built in $(secs "$CT_ROOTFS_MS") ($CT_ROOTFS)"
else
  echo "TIME: rootfs cache hit in $(secs "$CT_ROOTFS_MS") ($CT_ROOTFS)"
fi

ct_start "$name"
echo "TIME: boot $name: $(secs "$CT_BOOT_MS")"
boot1_ms=$CT_BOOT_MS
leader=$(ct_pid "$name")
nspawn=$(ct_nspawn_pid "$name")
cg=$(ct_cgroup_dir "$name")

# ---- the manager ------------------------------------------------------------------------------
assert_eq "$(tr -d '\0' </proc/"$leader"/cmdline | head -c 30)" /usr/lib/systemd/systemd "PID 1 of the container is systemd"
assert_eq "$(ct_sh "$name" cat /proc/1/comm)" systemd "systemd is PID 1 in the container's PID namespace"
assert_eq "$(ct_sh "$name" stat -f -c %T /sys/fs/cgroup)" cgroup2fs "the container has a pure cgroup2 tree"
state=$(ct_exec "$name" systemctl is-system-running) || true
assert_match "$state" '^(running|degraded)$' "systemctl is-system-running"
[[ $state == running ]] || ct_exec "$name" systemctl --failed --no-legend --plain || true
# On the host the container's cgroups live in our dedicated dir.
[[ -d $cg/payload ]] || fail "no $cg/payload on the host"
pass "host cgroup dir $cg holds the container"

# ---- the harness itself: units, exit status, environment ---------------------------------------
cgline=$(ct_exec "$name" cat /proc/self/cgroup | cg2_line)
assert_match "$cgline" '^0::/system\.slice/run-[^/]+\.service$' "ct_exec runs CMD in a transient service"
rc=0
ct_exec "$name" sh -c 'exit 7' || rc=$?
assert_eq "$rc" 7 "ct_exec propagates the exit status"
# shellcheck disable=SC2016  # expanded inside the container
assert_eq "$(ct_exec "$name" SMOKE_VAR='a b' -- sh -c 'echo "$SMOKE_VAR:$KS_BUILD_DIR"')" "a b:/ks/build" \
  "ct_exec passes VAR=VAL and KS_BUILD_DIR"
assert_eq "$(echo piped | ct_exec "$name" cat)" piped "ct_exec pipes stdin"
# systemd would expand ${x}, $x (as a word) and $$ itself: ct_exec must hand them over as is.
# shellcheck disable=SC2016  # literal on purpose
assert_eq "$(ct_exec "$name" printf '%s\n' '${x}' '$x' '$$')" $'${x}\n$x\n$$' "ct_exec passes \$ verbatim"
# shellcheck disable=SC2016  # expanded inside the container, by sh and not by systemd
assert_eq "$(ct_exec "$name" sh -c 'x=1; echo "${x}$x"')" 11 "sh -c scripts see their own variables"
cgline=$(ct_exec "$name" --slice=killswitch.slice -- cat /proc/self/cgroup | cg2_line)
assert_match "$cgline" '^0::/killswitch\.slice/run-[^/]+\.service$' "ct_exec --slice= reaches systemd-run"

# ---- what the project needs: a scope in killswitch.slice --------------------------------------
cgline=$(ct_exec "$name" systemd-run --quiet --scope --slice=killswitch.slice cat /proc/self/cgroup | cg2_line)
assert_match "$cgline" '^0::/killswitch\.slice/run-[^/]+\.scope$' "systemd-run --scope --slice=killswitch.slice lands in a scope of the slice"

# ---- our binaries run inside (their libraries are in the rootfs) ------------------------------
missing=$(ct_exec "$name" sh -c 'ldd /ks/build/ksd /ks/build/ksctl /ks/build/ksrun | grep "not found"' || true)
assert_eq "$missing" "" "ldd finds every library of ksd, ksctl, ksrun"
assert_eq "$(ct_exec "$name" /ks/build/ksctl --version)" "$("$KS_BUILD_DIR/ksctl" --version)" "ksctl --version runs inside"
ct_exec "$name" /ks/build/ksd --help >/dev/null || fail "ksd --help fails inside"
pass "ksd --help runs inside"
ct_exec "$name" /ks/build/ksrun --help >/dev/null || fail "ksrun --help fails inside"
pass "ksrun --help runs inside"
ct_exec "$name" test -f /ks/src/CMakeLists.txt || fail "the source tree is not at /ks/src"
rc=0
ct_exec "$name" touch /ks/build/.ct-smoke-write 2>/dev/null || rc=$?
[[ $rc -ne 0 && ! -e $KS_BUILD_DIR/.ct-smoke-write ]] || fail "/ks/build is writable from the container"
pass "/ks/build and /ks/src are bind-mounted, read-only"

# ---- BPF --------------------------------------------------------------------------------------
assert_eq "$(ct_exec "$name" stat -f -c %T /sys/fs/bpf)" bpf_fs "bpffs is mounted on /sys/fs/bpf"
# A real bpf() call (seccomp and capabilities allow it) and a pin in the container's own bpffs,
# which the host must not see.
ct_exec "$name" bpftool map create /sys/fs/bpf/ks_ct_smoke type array key 4 value 4 entries 1 name ks_ct_smoke ||
  fail "bpf(BPF_MAP_CREATE) + pin inside the container"
ct_exec "$name" test -e /sys/fs/bpf/ks_ct_smoke || fail "the pinned map is not in the container's bpffs"
[[ ! -e /sys/fs/bpf/ks_ct_smoke ]] || fail "the container's pin shows up in the host's /sys/fs/bpf"
pass "bpf() works inside; the container's bpffs is private"

# ---- networking -------------------------------------------------------------------------------
assert_eq "$(ct_exec "$name" ip -o link show | awk -F': ' '{ print $2 }' | tr '\n' ' ')" "lo " \
  "without CT_NETNS the container has a private network (lo only)"

# A second container, at the same time, joins a network namespace given by CT_NETNS.
ip netns add "$netns"
ip -n "$netns" link set lo up
ip -n "$netns" addr add 192.0.2.77/32 dev lo
CT_NETNS=/run/netns/$netns ct_start "$name2"
echo "TIME: boot $name2 (CT_NETNS): $(secs "$CT_BOOT_MS")"
lo_addrs() { awk '{ print $4 }' | tr '\n' ' '; }
addrs=$(ct_exec "$name2" ip -o -4 addr show dev lo | lo_addrs)
assert_match "$addrs" '192\.0\.2\.77/32' "CT_NETNS: the container sees the namespace's address"
ct_exec "$name2" ip addr add 192.0.2.78/32 dev lo || fail "CT_NETNS: ip addr add inside (CAP_NET_ADMIN)"
assert_match "$(ip -n "$netns" -o -4 addr show dev lo | lo_addrs)" '192\.0\.2\.78/32' "CT_NETNS: changes made inside are in that namespace"

ct_stop "$name2"
echo "TIME: stop $name2: $(secs "$CT_STOP_MS")"
ip netns del "$netns"
[[ ! -e /run/netns/$netns ]] || fail "netns $netns is left"
# The first container is untouched by the second one's stop.
assert_eq "$(ct_exec "$name" echo alive)" alive "$name still runs after $name2 stopped"

# ---- stop and leftovers -----------------------------------------------------------------------
ct_stop "$name"
echo "TIME: stop $name: $(secs "$CT_STOP_MS")"
stop1_ms=$CT_STOP_MS
[[ ! -e /proc/$nspawn ]] || fail "systemd-nspawn (pid $nspawn) still runs"
[[ ! -e /proc/$leader ]] || fail "the container's systemd (pid $leader) still runs"
left=$(pgrep -a -f -- "systemd-nspawn.*--machine=$name( |$)" || true)
assert_eq "$left" "" "no nspawn process of $name is left"
[[ ! -e $cg ]] || fail "cgroup dir $cg is left on the host"
pass "no cgroup dir left on the host"
[[ ! -e /run/systemd/nspawn/propagate/$name ]] || fail "/run/systemd/nspawn/propagate/$name is left on the host"
pass "no nspawn propagate dir left"
ct_stop "$name" || fail "a second ct_stop fails"
pass "ct_stop is idempotent"
after=$(host_state)
if [[ $after != "$before" ]]; then
  diff <(echo "$before") <(echo "$after") >&2 || true
  fail "the host differs from before the test (diff above: < before, > after)"
fi
pass "the host is exactly as before (our cgroup dirs, /run/systemd/nspawn, state, mounts)"

echo "TIME: rootfs $(secs "$CT_ROOTFS_MS") ($( ((CT_ROOTFS_BUILT)) && echo built || echo cache hit)), boot $(secs "$boot1_ms"), stop $(secs "$stop1_ms"), total $(secs $(($(_ct_now_ms) - t_start)))"
echo "PASS: test_smoke"
