# shellcheck shell=bash
# shellcheck disable=SC2034  # CT_* results (CT_BOOT_MS, ...) are for the scripts that source us
# A real systemd manager for tests: the library the systemd-integration tests source.
#
# The host's PID 1 is not systemd and its cgroups are hybrid (v1 + cgroup2 at
# /sys/fs/cgroup/unified), so we boot a minimal Debian 12 rootfs with
# `systemd-nspawn --boot`: the container's PID 1 is a genuine systemd with a pure cgroup2
# tree, BPF-capable root, and our build and source trees bind-mounted read-only.
# Recipe, timings and pitfalls: /work/shared/design/systemd-test-container.md.
#
#   #!/usr/bin/env bash
#   set -euo pipefail
#   source "$(dirname "${BASH_SOURCE[0]}")/container.sh"
#   ct_rootfs                         # cached Debian rootfs (built once, 2-3 min)
#   ct_cleanup_on_exit ksfoo          # EXIT/INT/TERM/HUP: ct_stop ksfoo, whatever happens
#   ct_start ksfoo                    # returns once systemd is running (or degraded)
#   ct_exec ksfoo /ks/build/ksctl --version        # a transient service; its exit status
#   ct_exec ksfoo --slice=killswitch.slice -- sh -c 'cat /proc/self/cgroup'
#   ct_sh ksfoo ls /sys/fs/bpf        # raw nsenter, not inside a unit
#
# Public functions (all return non-zero on failure with a "ct: ..." message on stderr; they
# never exit the caller's shell themselves, `set -e` in the caller does):
#   ct_rootfs                    build or reuse the cached rootfs; sets CT_ROOTFS
#   ct_start NAME [NSPAWN_ARG]...  boot container NAME; extra args go to systemd-nspawn
#   ct_exec NAME [VAR=VAL]... [--OPT=VAL]... [--] CMD [ARG]...
#                                run CMD inside as a transient service (systemd-run --wait
#                                --pipe), VAR=VAL become -E VAR=VAL, --OPT=VAL are passed to
#                                systemd-run (--slice=, --property=, --uid=...); exit status
#                                of CMD is returned
#   ct_sh NAME CMD [ARG]...      run CMD with nsenter into all of the container's namespaces
#   ct_pid NAME                  print the host PID of the container's systemd (PID 1 inside)
#   ct_nspawn_pid NAME           print the host PID of its systemd-nspawn
#   ct_cgroup_dir NAME           print the host cgroup2 dir the container lives in
#   ct_console NAME [LINES]      print the tail of the container's console log
#   ct_stop NAME                 power off, remove cgroups and nspawn leftovers; idempotent
#   ct_cleanup_on_exit NAME...   install EXIT/INT/TERM/HUP traps that ct_stop them
#   ct_reap_stale                stop containers whose owner shell is gone (ct_start calls it)
#
# Rules:
#   - Call ct_start / ct_cleanup_on_exit in the main shell (not in a subshell or pipeline):
#     the traps must belong to the script. A script that needs its own EXIT work defines
#     ct_on_exit(); the handler calls it before stopping the containers.
#   - Inside, run tests with ct_exec, not ct_sh: `nsenter -a` enters the container's cgroup
#     namespace but leaves the process in the HOST's cgroup (shows up as 0::/../..), and
#     systemd does not know about it.
#   - systemd-run does not pass the caller's environment: pass VAR=VAL to ct_exec.
#     CMD and its arguments reach the service verbatim (ct_exec escapes systemd's $-expansion).
#     KS_BUILD_DIR=/ks/build and KS_SOURCE_DIR=/ks/src are always passed.
#   - A slice's cgroup dir exists only while the slice is active: start it (or a unit in it)
#     before looking at /sys/fs/cgroup/<slice> inside.
#   - bpffs is mounted on /sys/fs/bpf after the boot (nspawn's /sys is read-only and systemd
#     does not mount one) unless a unit mounted it during the boot (killswitch-early.service
#     does: /sys/fs/bpf is a tmpfs to mount it on).
#   - Names: [a-z0-9][a-z0-9-]*, at most 32 characters, unique per concurrent container.
#
# Environment:
#   KS_BUILD_DIR      build tree, bind-mounted read-only at /ks/build (default /work/main/build)
#   KS_SOURCE_DIR     source tree, bind-mounted read-only at /ks/src (default /work/main)
#   CT_NETNS          a network namespace file (e.g. /run/netns/ksl123c, or just ksl123c) the
#                     container joins; unset: a private, empty one (loopback only)
#   CT_CACHE_DIR      rootfs cache (default /var/cache/killswitch-tests)
#   CT_EXTRA_PKGS     more packages for the rootfs (space separated; part of the cache key)
#   CT_BOOT_TIMEOUT   seconds to wait for `running`/`degraded` (default 60)
#   CT_STOP_TIMEOUT   seconds to wait for the poweroff before SIGKILL (default 30)

if [[ -n ${_KS_CT_LIB_SOURCED:-} ]]; then return 0; fi
_KS_CT_LIB_SOURCED=1

KS_BUILD_DIR=${KS_BUILD_DIR:-/work/main/build}
KS_SOURCE_DIR=${KS_SOURCE_DIR:-/work/main}
CT_CACHE_DIR=${CT_CACHE_DIR:-/var/cache/killswitch-tests}
CT_BOOT_TIMEOUT=${CT_BOOT_TIMEOUT:-60}
CT_STOP_TIMEOUT=${CT_STOP_TIMEOUT:-30}
CT_SUITE=bookworm
# Per-container state (pids, console log) lives here while containers run; the last ct_stop
# removes it. /run, not the cache: it must not survive a reboot of the host.
CT_STATE_ROOT=/run/killswitch-tests
# Bump when the way the rootfs is built changes (not the package list or CT_DISABLED_UNITS:
# those are hashed).
_CT_ROOTFS_RECIPE=5

# What runs inside. systemd-sysv: /sbin/init and poweroff; dbus: systemd-run/systemctl talk
# to PID 1 over the bus for transient units; libtomlplusplus3 and the other lib*: the
# runtime libraries of ksd/ksctl/ksrun (ldd); bpftool: later tests inspect attached
# programs with it, as the host lab does; python3-minimal: test helpers;
# qbittorrent-nox: the app the README's quick start runs through ksrun (systemd_quickstart);
# transmission-daemon and transmission-cli (transmission-remote): systemd_transmission's
# real client, in the one rootfs all scenarios share (a CT_EXTRA_PKGS rootfs of its own
# would be a second 2-3 min build on every fresh machine). Its unit, which the package
# enables, is disabled in the image (CT_DISABLED_UNITS): it would otherwise start at every
# boot and put its DHT/tracker traffic on the lab link of the other scenarios.
# systemd-resolved and network-manager: systemd_setup's sources of tunnels and resolvers
# (`ksctl setup` asks them over D-Bus); disabled too, so that they touch no other scenario's
# links (NetworkManager would take over the lab's veth): systemd_setup starts them. The
# symlink systemd-resolved's package makes of /etc/resolv.conf (to its stub, absent while it
# is disabled) becomes a plain file again, as the other scenarios expect.
CT_PKGS=(
  systemd systemd-sysv dbus iproute2 procps python3-minimal bpftool
  libbpf1 libsystemd0 libelf1 zlib1g libstdc++6 libgcc-s1 libtomlplusplus3
  transmission-daemon transmission-cli systemd-resolved network-manager qbittorrent-nox
)
CT_DISABLED_UNITS=(transmission-daemon.service systemd-resolved.service NetworkManager.service
  NetworkManager-wait-online.service NetworkManager-dispatcher.service)

# Set by the functions, for the caller's timing reports.
CT_ROOTFS=""         # path of the rootfs in the cache (ct_rootfs)
CT_ROOTFS_BUILT=0    # 1: ct_rootfs built it now, 0: cache hit
CT_ROOTFS_MS=0       # ct_rootfs wall time
CT_BOOT_MS=0         # last ct_start: launch to `running`
CT_STOP_MS=0         # last ct_stop

_CT_CLEANUP_NAMES=()

_ct_log() { echo "ct: $*" >&2; }
_ct_err() {
  echo "ct: ERROR: $*" >&2
  return 1
}
_ct_now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

# ---- small helpers ----------------------------------------------------------------------------

_ct_check_name() {
  [[ ${1:-} =~ ^[a-z0-9][a-z0-9-]{0,31}$ ]] ||
    _ct_err "bad container name '${1:-}' (want [a-z0-9][a-z0-9-]*, at most 32 characters)"
}

_ct_need_root() {
  ((EUID == 0)) || _ct_err "must run as root (systemd-nspawn, cgroups, mmdebstrap)"
}

# _ct_starttime PID: field 22 of /proc/PID/stat (after the ")" that ends comm, which may hold
# spaces). PID + start time names a process; a bare PID may be recycled.
_ct_starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # shellcheck disable=SC2086  # split the fields on purpose
  set -- $stat
  echo "${20}"
}

# _ct_alive PID STARTTIME: the process still exists, is that process, and is not a zombie
# (kill -0 succeeds on a zombie our shell has not reaped yet).
_ct_alive() {
  local stat
  [[ -n ${1:-} && -n ${2:-} ]] || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]] || return 1
  [[ $(_ct_starttime "$1") == "$2" ]]
}

# _ct_wait_until SECONDS CMD...: poll CMD every 50 ms.
_ct_wait_until() {
  local deadline=$(($(_ct_now_ms) + $1 * 1000))
  shift
  until "$@"; do
    (($(_ct_now_ms) < deadline)) || return 1
    sleep 0.05
  done
}

_ct_not() { ! "$@"; }

# _ct_with_lock [-n] FILE CMD...: run CMD under an exclusive flock on FILE (in our cache dir,
# which is permanent anyway, so the lock file is no leftover). -n: if the lock is taken,
# do nothing and succeed.
_ct_with_lock() {
  local nb="" file fd rc=0
  [[ $1 != -n ]] || { nb=-n; shift; }
  file=$1
  shift
  mkdir -p "${file%/*}"
  exec {fd}>"$file"
  if flock $nb "$fd"; then
    "$@" || rc=$?
  elif [[ -z $nb ]]; then
    rc=1
  fi
  exec {fd}>&-
  return $rc
}

# The host's cgroup2 mount point, from /proc/self/mountinfo (fields: ... MOUNTPOINT(5) ...
# " - " FSTYPE SOURCE OPTIONS). On this hybrid host /sys/fs/cgroup/unified, on a pure cgroup2
# host /sys/fs/cgroup.
_ct_cgroup2_mount() {
  local mnt
  mnt=$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break } }' \
    /proc/self/mountinfo)
  [[ -n $mnt ]] || _ct_err "no cgroup2 mount in /proc/self/mountinfo"
  echo "$mnt"
}

ct_cgroup_dir() {
  local mnt
  _ct_check_name "${1:-}" || return 1
  mnt=$(_ct_cgroup2_mount) || return 1
  echo "$mnt/ks-ct-$1"
}

_ct_state_dir() { echo "$CT_STATE_ROOT/ct-$1"; }

# ---- rootfs -----------------------------------------------------------------------------------

# The host's apt sources for our suite, as files for mmdebstrap (it pastes a file argument
# into the chroot's sources.list). That is the mirror this VM may reach; nothing else is.
# Files for other suites/vendors (e.g. "cloud-sdk-bookworm") are skipped: the suite must be
# a word of its own.
_ct_host_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v suite="$CT_SUITE" '!/^[[:space:]]*#/ { for (i = 1; i <= NF; i++) if ($i == suite) found = 1 }
      END { exit !found }' "$f" || continue
    echo "$f"
  done
}

_ct_rootfs_key() {
  local pkgs
  # shellcheck disable=SC2086  # CT_EXTRA_PKGS is a space separated list
  pkgs=$(printf '%s\n' "${CT_PKGS[@]}" ${CT_EXTRA_PKGS:-} | sort -u | tr '\n' ' ')
  echo "recipe=$_CT_ROOTFS_RECIPE suite=$CT_SUITE variant=minbase pkgs=$pkgs disabled=${CT_DISABLED_UNITS[*]}" |
    sha256sum | cut -c1-16
}

# Under the rootfs lock. A build that was interrupted (even by SIGKILL) left only a temp dir;
# nobody else is building (we hold the lock), so they are garbage. --one-file-system:
# mmdebstrap runs in its own mount namespace, but never recurse into a mount if one were
# left there.
_ct_sweep_builds_locked() {
  local d
  for d in "$CT_CACHE_DIR"/.rootfs-*.tmp.*; do
    [[ -e $d ]] || continue
    _ct_log "removing an interrupted rootfs build: $d"
    rm -rf --one-file-system "$d"
  done
}

# Under the rootfs lock: one builder at a time, the others wait and then find the cache.
_ct_rootfs_build_locked() {
  local final=$1 key=$2 tmp sources pkgs
  [[ ! -e $final ]] || return 0
  _ct_sweep_builds_locked
  if ! command -v mmdebstrap >/dev/null || ! command -v systemd-nspawn >/dev/null; then
    # Normally scripts/install-deps.sh did this. No recommends: systemd-container recommends
    # libnss-mymachines, which edits the host's /etc/nsswitch.conf.
    _ct_log "installing mmdebstrap and systemd-container"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      mmdebstrap systemd-container >/dev/null || return 1
  fi
  mapfile -t sources < <(_ct_host_sources)
  ((${#sources[@]})) || _ct_err "no apt source for '$CT_SUITE' in /etc/apt/sources.list(.d)" || return 1
  # shellcheck disable=SC2086
  pkgs=$(printf '%s,' "${CT_PKGS[@]}" ${CT_EXTRA_PKGS:-})
  tmp=$(mktemp -d "$CT_CACHE_DIR/.rootfs-$key.tmp.XXXXXX") || return 1
  # mktemp makes it 0700; it becomes the container's / and non-root users must traverse it.
  chmod 0755 "$tmp"
  _ct_log "building rootfs $final (mmdebstrap, sources: ${sources[*]})"
  # --mode=unshare as root: no user namespace, but a private mount namespace, so a killed
  # build cannot leave /proc or /dev mounted inside the temp dir on the host.
  # The dpkg path excludes only save time and space: nobody reads docs in the container.
  # Hooks: mmdebstrap copies the host's /etc/hostname; without it nspawn names the container
  # after --machine, so its logs say which container they come from. The timers would start
  # apt/dpkg/e2scrub/fstrim jobs behind a test's back; a test container has no use for them.
  # CT_DISABLED_UNITS: packaged services that a scenario starts itself, never at boot.
  # shellcheck disable=SC2016  # "$1" is the hook's argument (the rootfs), not ours
  if ! mmdebstrap --quiet --mode=unshare --variant=minbase --include="${pkgs%,}" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -f "$1/etc/hostname"' \
    --customize-hook='systemctl --root="$1" --quiet mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer' \
    --customize-hook="systemctl --root=\"\$1\" --quiet disable ${CT_DISABLED_UNITS[*]}" \
    --customize-hook='if [ -L "$1/etc/resolv.conf" ]; then rm "$1/etc/resolv.conf" && : >"$1/etc/resolv.conf"; fi' \
    "$CT_SUITE" "$tmp" "${sources[@]}"; then
    rm -rf --one-file-system "$tmp"
    _ct_err "mmdebstrap failed"
    return 1
  fi
  [[ -x $tmp/usr/lib/systemd/systemd ]] || {
    rm -rf --one-file-system "$tmp"
    _ct_err "the new rootfs has no /usr/lib/systemd/systemd"
    return 1
  }
  # rename(2) within one file system is atomic: the cache holds a complete rootfs or none.
  mv -T "$tmp" "$final"
  CT_ROOTFS_BUILT=1
}

# ct_rootfs: sets CT_ROOTFS to the cached rootfs for the current package list, building it
# first if needed. The rootfs is never written to (containers boot it with
# --volatile=overlay), so it can be reused indefinitely.
ct_rootfs() {
  local t0 key final
  _ct_need_root || return 1
  t0=$(_ct_now_ms)
  key=$(_ct_rootfs_key)
  final=$CT_CACHE_DIR/rootfs-$CT_SUITE-$key
  CT_ROOTFS_BUILT=0
  if [[ ! -x $final/usr/lib/systemd/systemd ]]; then
    _ct_with_lock "$CT_CACHE_DIR/.rootfs.lock" _ct_rootfs_build_locked "$final" "$key" || return 1
  else
    # Cache hit: still drop interrupted builds (200 MB each), unless someone is building now.
    _ct_with_lock -n "$CT_CACHE_DIR/.rootfs.lock" _ct_sweep_builds_locked || true
  fi
  CT_ROOTFS=$final
  CT_ROOTFS_MS=$(($(_ct_now_ms) - t0))
}

# ---- host bookkeeping -------------------------------------------------------------------------

# Directories systemd-nspawn creates on the host and never removes (it has no machined to
# tell, and /run is not a tmpfs here). Deepest first.
_CT_NSPAWN_HOST_DIRS=(/run/systemd/nspawn/propagate /run/systemd/nspawn/locks /run/systemd/nspawn /run/systemd)

# Under the state lock. The first container of ours records which of those existed before;
# the last ct_stop removes the others, so the host ends exactly as it was.
_ct_register_locked() {
  local name=$1 dir d
  dir=$(_ct_state_dir "$name")
  if [[ ! -d $CT_STATE_ROOT ]]; then
    mkdir -p "$CT_STATE_ROOT"
    for d in "${_CT_NSPAWN_HOST_DIRS[@]}"; do
      [[ ! -e $d ]] || echo "$d"
    done >"$CT_STATE_ROOT/host-dirs-before"
  fi
  mkdir "$dir" || return 1
  echo $$ >"$dir/owner"
  # nspawn's lock files for the image, shared by all our containers of that rootfs
  # (--volatile locks it shared): /run/systemd/nspawn/locks/inode-DEV:INO, which nspawn
  # never removes, and .#<rootfs>.lck next to the rootfs, left when nspawn is SIGKILLed.
  {
    echo "/run/systemd/nspawn/locks/inode-$(stat -c %d:%i "$CT_ROOTFS")"
    echo "${CT_ROOTFS%/*}/.#${CT_ROOTFS##*/}.lck"
  } >>"$CT_STATE_ROOT/nspawn-locks"
}

_ct_unregister_locked() {
  local name=$1 d lock
  rm -rf "$(_ct_state_dir "$name")"
  [[ -d $CT_STATE_ROOT ]] || return 0
  for d in "$CT_STATE_ROOT"/ct-*; do
    [[ ! -e $d ]] || return 0 # another container of ours still runs
  done
  # Last container of ours: the image locks of our rootfs go (nobody of ours holds them
  # now), then the directories nspawn made. rmdir only: anything else in them is not ours.
  if [[ -f $CT_STATE_ROOT/nspawn-locks ]]; then
    sort -u "$CT_STATE_ROOT/nspawn-locks" | while read -r lock; do
      rm -f "$lock"
    done
  fi
  for d in "${_CT_NSPAWN_HOST_DIRS[@]}"; do
    grep -qxF "$d" "$CT_STATE_ROOT/host-dirs-before" 2>/dev/null && continue
    [[ ! -d $d ]] || rmdir "$d" 2>/dev/null || _ct_log "warning: $d is not empty, left in place"
  done
  rm -f "$CT_STATE_ROOT/host-dirs-before" "$CT_STATE_ROOT/nspawn-locks"
  rmdir "$CT_STATE_ROOT"
}

# ---- start ------------------------------------------------------------------------------------

# ct_reap_stale: stop every container whose owner shell is gone (SIGKILLed by a ctest
# timeout, so its EXIT trap never ran). Containers of live shells are left alone.
ct_reap_stale() {
  local d name owner
  for d in "$CT_STATE_ROOT"/ct-*; do
    [[ -d $d ]] || continue
    name=${d##*/ct-}
    owner=$(cat "$d/owner" 2>/dev/null) || owner=""
    [[ $owner != "$$" ]] || continue
    [[ -z $owner || ! -e /proc/$owner ]] || continue
    _ct_log "reaping stale container $name (owner ${owner:-?} is gone)"
    ct_stop "$name" || true
  done
}

ct_pid() {
  local name=${1:-} dir pid start
  _ct_check_name "$name" || return 1
  dir=$(_ct_state_dir "$name")
  read -r pid start 2>/dev/null <"$dir/leader.pid" || _ct_err "container $name is not running" || return 1
  _ct_alive "$pid" "$start" || _ct_err "container $name is not running (its systemd, pid $pid, is gone)" || return 1
  echo "$pid"
}

ct_nspawn_pid() {
  local name=${1:-} pid start
  _ct_check_name "$name" || return 1
  read -r pid start 2>/dev/null <"$(_ct_state_dir "$name")/nspawn.pid" || _ct_err "container $name is not running" || return 1
  _ct_alive "$pid" "$start" || _ct_err "container $name: its systemd-nspawn (pid $pid) is gone" || return 1
  echo "$pid"
}

ct_console() {
  local name=${1:-} f
  _ct_check_name "$name" || return 1
  f=$(_ct_state_dir "$name")/console.log
  [[ -f $f ]] || return 0
  tail -n "${2:-40}" "$f"
}

_ct_leader_of() { pgrep -P "$1" -x systemd; }
_ct_nspawn_alive() { _ct_alive "$_ct_npid" "$_ct_nstart"; }
_ct_leader_ready() { _ct_leader=$(_ct_leader_of "$_ct_npid") || _ct_not _ct_nspawn_alive; }
_ct_booted() {
  _ct_state=$(nsenter -t "$_ct_leader" -a systemctl is-system-running 2>/dev/null) || true
  [[ $_ct_state == running || $_ct_state == degraded ]] || _ct_not _ct_nspawn_alive
}

# ct_start NAME [NSPAWN_ARG]...: boot container NAME from CT_ROOTFS (ct_rootfs first) and
# wait until its systemd reports `running` or `degraded`. On failure it prints the console
# log, stops what it started and returns 1.
ct_start() {
  local name=${1:-} t0 dir cg net rc build src
  _ct_need_root || return 1
  _ct_check_name "$name" || return 1
  shift
  [[ -n $CT_ROOTFS && -x $CT_ROOTFS/usr/lib/systemd/systemd ]] || _ct_err "ct_start: call ct_rootfs first" || return 1
  # nspawn wants absolute paths.
  build=$(realpath -e "$KS_BUILD_DIR") && [[ -d $build ]] ||
    _ct_err "KS_BUILD_DIR $KS_BUILD_DIR is not a directory" || return 1
  src=$(realpath -e "$KS_SOURCE_DIR") && [[ -d $src ]] ||
    _ct_err "KS_SOURCE_DIR $KS_SOURCE_DIR is not a directory" || return 1
  if [[ -n ${CT_NETNS:-} ]]; then
    net=$CT_NETNS
    # A bare name is one of `ip netns`'s.
    [[ $net == */* ]] || net=/run/netns/$net
    [[ -e $net ]] || _ct_err "CT_NETNS $net does not exist" || return 1
    net=--network-namespace-path=$net
  else
    net=--private-network
  fi
  t0=$(_ct_now_ms)
  ct_reap_stale
  dir=$(_ct_state_dir "$name")
  [[ ! -e $dir ]] || _ct_err "container $name is already running (owner $(cat "$dir/owner" 2>/dev/null))" || return 1
  _ct_with_lock "$CT_CACHE_DIR/.state.lock" _ct_register_locked "$name" || return 1

  cg=$(ct_cgroup_dir "$name") || { ct_stop "$name"; return 1; }
  # nspawn with --keep-unit creates payload/ (the container) and supervisor/ (itself) INSIDE
  # the cgroup2 dir it runs in: give it a dir of its own, never the root.
  mkdir "$cg" || { ct_stop "$name"; return 1; }

  # setsid: nspawn gets its own session, so a ^C to the test's process group does not hit
  # it directly; our trap powers it off cleanly instead. The inner shell joins the cgroup and
  # writes its own PID before exec'ing, so the recorded PID is nspawn's whatever setsid does.
  # SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1: a pure cgroup2 tree inside (else nspawn copies the
  # host's hybrid layout). --register=no --keep-unit: there is no host systemd/machined.
  # --system-call-filter + CAP_BPF/CAP_PERFMON: nspawn's seccomp filter and capability set
  # refuse bpf() otherwise. --tmpfs=/sys/fs/bpf: nspawn's /sys is read-only and has no fs/bpf
  # to mount bpffs on. --link-journal=no: never touch the host's /var/log/journal.
  # --console=read-only: the console goes to our log, nothing reads the test's stdin.
  # shellcheck disable=SC2016  # $$ and $1.. belong to the inner shell
  setsid bash -c 'echo $$ >"$1/cgroup.procs" && echo $$ >"$2" && shift 2 && exec "$@"' _ \
    "$cg" "$dir/nspawn.pid.tmp" \
    env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 \
    systemd-nspawn --directory="$CT_ROOTFS" --volatile=overlay --boot --machine="$name" \
    --register=no --keep-unit --link-journal=no --console=read-only "$net" \
    --capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN,CAP_IPC_LOCK,CAP_SYS_RESOURCE \
    --system-call-filter='bpf perf_event_open' \
    --tmpfs=/sys/fs/bpf:mode=700 \
    --bind-ro="$build":/ks/build --bind-ro="$src":/ks/src \
    "$@" >"$dir/console.log" 2>&1 </dev/null &
  # Not a job of the caller's shell any more: no "Killed" report if ct_stop must SIGKILL it
  # (bash still reaps it).
  disown $!

  _ct_npid="" _ct_nstart="" _ct_leader="" _ct_state=""
  if ! _ct_wait_until 10 test -s "$dir/nspawn.pid.tmp"; then
    _ct_err "systemd-nspawn did not start"
    ct_console "$name" >&2
    ct_stop "$name"
    return 1
  fi
  _ct_npid=$(cat "$dir/nspawn.pid.tmp")
  _ct_nstart=$(_ct_starttime "$_ct_npid") || _ct_nstart=gone
  echo "$_ct_npid $_ct_nstart" >"$dir/nspawn.pid"
  rm -f "$dir/nspawn.pid.tmp"

  rc=0
  if ! _ct_wait_until "$CT_BOOT_TIMEOUT" _ct_leader_ready || [[ -z $_ct_leader ]]; then
    _ct_err "container $name: systemd did not start (nspawn exited or timed out)"
    rc=1
  else
    echo "$_ct_leader $(_ct_starttime "$_ct_leader")" >"$dir/leader.pid"
    if ! _ct_wait_until "$CT_BOOT_TIMEOUT" _ct_booted ||
      [[ $_ct_state != running && $_ct_state != degraded ]]; then
      _ct_err "container $name did not boot within ${CT_BOOT_TIMEOUT}s (is-system-running: ${_ct_state:-?})"
      rc=1
    # systemd does not mount bpffs; the project pins its programs there. A unit that ran at
    # boot (killswitch-early.service) may have mounted it already: keep that one.
    elif ! nsenter -t "$_ct_leader" -a sh -c \
      '[ "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs ] || mount -t bpf bpf /sys/fs/bpf'; then
      _ct_err "container $name: cannot mount bpffs on /sys/fs/bpf"
      rc=1
    fi
  fi
  if ((rc)); then
    echo "---- console of $name (last lines) ----" >&2
    ct_console "$name" 40 >&2
    echo "----" >&2
    ct_stop "$name"
    return 1
  fi
  if [[ $_ct_state == degraded ]]; then
    _ct_log "container $name is degraded; failed units:"
    nsenter -t "$_ct_leader" -a systemctl --failed --no-legend --plain >&2 || true
  fi
  CT_BOOT_MS=$(($(_ct_now_ms) - t0))
}

# ---- inside -----------------------------------------------------------------------------------

ct_exec() {
  local name=${1:-} pid
  local args=(-E KS_BUILD_DIR=/ks/build -E KS_SOURCE_DIR=/ks/src)
  shift || true
  pid=$(ct_pid "$name") || return 1
  while (($#)); do
    case $1 in
      --) shift; break ;;
      --?*=*) args+=("$1") ;;
      *) [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || break; args+=(-E "$1") ;;
    esac
    shift
  done
  (($#)) || _ct_err "ct_exec $name: no command" || return 2
  # systemd expands ${VAR}, $VAR (as a whole word) and $$ in ExecStart, also for transient
  # units (systemd-run has no --expand-environment=no before v254): `sh -c 'echo ${x}'`
  # would print systemd's idea of x. Doubling every $ hands CMD over verbatim.
  set -- "${@//\$/\$\$}"
  # --wait --pipe: systemd-run waits for the service, wires our stdin/out/err to it and
  # exits with its exit status. --collect: a failed unit does not linger. --service-type=exec:
  # a command that cannot be exec'ed fails the start instead of an exit status 203 later.
  nsenter -t "$pid" -a -- systemd-run --wait --pipe --quiet --collect --service-type=exec \
    "${args[@]}" -- "$@"
}

# ct_install_killswitch NAME: the build tree's ksd, ksctl, ksrun and unit files installed
# in the container the way `cmake --install` lays them out (links into /ks/build), and an
# empty /etc/killswitch; the caller writes the configuration.
ct_install_killswitch() {
  ct_exec "$1" sh -c '
    set -e
    ln -s /ks/build/ksd /usr/local/sbin/ksd
    ln -s /ks/build/ksctl /usr/local/bin/ksctl
    ln -s /ks/build/ksrun /usr/local/bin/ksrun
    cp /ks/build/systemd/ksd.service /ks/build/systemd/killswitch-early.service \
       /ks/build/systemd/killswitch.slice /etc/systemd/system/
    mkdir -p /etc/killswitch'
}

ct_sh() {
  local name=${1:-} pid
  shift || true
  pid=$(ct_pid "$name") || return 1
  (($#)) || _ct_err "ct_sh $name: no command" || return 2
  nsenter -t "$pid" -a -- "$@"
}

# ---- stop -------------------------------------------------------------------------------------

_ct_cg_populated() { grep -qx 'populated 1' "$1/cgroup.events" 2>/dev/null; }
_ct_rmdir_tree() { [[ ! -d $1 ]] || { find "$1" -depth -type d -exec rmdir {} + 2>/dev/null; [[ ! -d $1 ]]; }; }

# ct_stop NAME: SIGTERM to nspawn (it asks the container's systemd for a clean poweroff),
# SIGKILL of everything in the container's cgroup after CT_STOP_TIMEOUT, then the cgroup
# dirs (depth first: payload/init.scope and friends may linger), nspawn's leftovers on the
# host and our state. Safe to call twice, for a container that never started, and from a trap.
ct_stop() {
  local name=${1:-} t0 dir cg pid start rc=0
  _ct_check_name "$name" || return 1
  t0=$(_ct_now_ms)
  dir=$(_ct_state_dir "$name")
  cg=$(ct_cgroup_dir "$name") || return 1

  if read -r pid start 2>/dev/null <"$dir/nspawn.pid" && _ct_alive "$pid" "$start"; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! _ct_wait_until "$CT_STOP_TIMEOUT" _ct_not _ct_alive "$pid" "$start"; then
      # Not an error of ct_stop: the host is still cleaned below.
      _ct_log "warning: container $name did not power off within ${CT_STOP_TIMEOUT}s; killing it"
    fi
  fi
  # Whatever is still in the cgroup dies now: nspawn that ignored SIGTERM, or a container
  # whose nspawn was killed (its PID 1 does not die with nspawn). cgroup.kill (5.14+)
  # SIGKILLs the whole subtree at once, no race with forking processes.
  if [[ -d $cg ]] && _ct_cg_populated "$cg"; then
    _ct_log "container $name: killing what is left in $cg"
    echo 1 >"$cg/cgroup.kill" 2>/dev/null || true
    _ct_wait_until 10 _ct_not _ct_cg_populated "$cg" || { _ct_err "cannot empty cgroup $cg"; rc=1; }
  fi
  # An empty cgroup may still be busy for a moment while the kernel reaps the last tasks.
  _ct_wait_until 10 _ct_rmdir_tree "$cg" || { _ct_err "cannot remove cgroup $cg"; rc=1; }

  # nspawn's per-machine propagation dir (machinectl bind/copy-to) stays behind on the host.
  rm -rf "/run/systemd/nspawn/propagate/$name"
  if [[ -d $dir || -d $CT_STATE_ROOT ]]; then
    _ct_with_lock "$CT_CACHE_DIR/.state.lock" _ct_unregister_locked "$name" || rc=1
  fi
  CT_STOP_MS=$(($(_ct_now_ms) - t0))
  return $rc
}

_ct_exit_handler() {
  local rc=$? name i
  trap - EXIT
  if declare -F ct_on_exit >/dev/null; then ct_on_exit || true; fi
  for ((i = ${#_CT_CLEANUP_NAMES[@]} - 1; i >= 0; i--)); do
    name=${_CT_CLEANUP_NAMES[i]}
    if ((rc != 0)) && [[ -s $(_ct_state_dir "$name")/console.log ]]; then
      echo "---- console of $name (last lines) ----" >&2
      ct_console "$name" 30 >&2 || true
      echo "----" >&2
    fi
    ct_stop "$name" || {
      echo "FAIL: ct_stop $name could not clean up completely" >&2
      ((rc != 0)) || rc=1
    }
  done
  exit "$rc"
}

# ct_cleanup_on_exit NAME...: whatever ends the script (exit, set -e, ^C, SIGTERM, SIGHUP),
# the containers are stopped and the host cleaned. Replaces the script's EXIT/INT/TERM/HUP
# traps (define ct_on_exit() for your own EXIT work). May be called again to add names.
ct_cleanup_on_exit() {
  local name
  ((BASH_SUBSHELL == 0)) || _ct_err "ct_cleanup_on_exit must run in the main shell, not in a subshell" || return 1
  for name in "$@"; do
    _ct_check_name "$name" || return 1
    _CT_CLEANUP_NAMES+=("$name")
  done
  trap _ct_exit_handler EXIT
  # A signal would kill bash without running the EXIT trap's cleanup reliably: turn it
  # into an exit with the conventional status.
  trap 'exit 129' HUP
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
