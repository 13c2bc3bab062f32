# shellcheck shell=bash
# Killswitch in the leak lab: start ksd in the client netns, launch protected probes with
# ksrun, kill and restart the daemon, and clean every trace (processes in the protected
# tree, pins, cgroups) when the scenario ends, whatever way it ends.
#
# Source after lib.sh, call ks_up after lab_up:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"
#   lab_up; ks_up
#   ks_spawn_protected flood "$KS_PROBE" udp --dst "$LAB_TARGET4" --duration 5
#
# Each scenario gets its own pin directory, slice and socket (named after the lab id), so
# a real installation on the machine is never touched and two runs never collide.

if [[ -n ${_KS_LAB_KILLSWITCH_SOURCED:-} ]]; then return 0; fi
_KS_LAB_KILLSWITCH_SOURCED=1

KS_PIN_DIR=""
KS_SLICE=""
KS_SOCK=""
KS_CONF=""
KS_CGROUP_ROOT=""
KS_DAEMON_PID=""

# True on Linux 6.7+ (cgroup/connect_unix); before it ksd uses resolver_guard instead.
ks_kernel_has_unix_hooks() {
  local major minor
  IFS=. read -r major minor _ <<<"$(uname -r)"
  ((major > 6 || (major == 6 && minor >= 7)))
}
_ks_cgroup2_mount() { awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo; }

# ks_write_config [TOML]: writes the scenario's config (default: profile default, tunnel wg0).
ks_write_config() {
  if (($#)); then
    printf '%s\n' "$1" >"$KS_CONF"
  else
    printf '[profiles.default]\ntunnels = ["%s"]\n' "$LAB_TUNNEL_IF" >"$KS_CONF"
  fi
}

# ks_up [TOML]: names this scenario's Killswitch instance and starts ksd in the client netns.
ks_up() {
  ks_prepare "$@"
  ks_start
}

# ks_prepare [CONFIG]: everything ks_up does but start ksd (the KS_* paths, the config), for
# scenarios that start ksd another way (an init script). Cleanup is the same.
ks_prepare() {
  _lab_need_up
  [[ -x $KS_KSD && -x $KS_KSRUN && -x $KS_KSCTL ]] ||
    _lab_die "ksd/ksrun/ksctl not built in $KS_BUILD_DIR"
  KS_PIN_DIR=/sys/fs/bpf/kstest$LAB_ID
  KS_SLICE=kstest$LAB_ID.slice
  # ksd's socket must be reachable by unprivileged users (ksrun as nobody): the lab dir
  # becomes traversable (0711, nothing listable; the WireGuard keys in it stay 0600).
  chmod 711 "$LAB_DIR"
  install -d -m 755 "$LAB_DIR/run"
  KS_SOCK=$LAB_DIR/run/ksd.sock
  KS_CONF=$LAB_DIR/config.toml
  KS_CGROUP_ROOT=$(_ks_cgroup2_mount)/$KS_SLICE
  _lab_state "ks $KS_PIN_DIR $KS_CGROUP_ROOT"
  ks_write_config "$@"
}

# ks_start: start ksd (in the client netns) and wait until it answers status.
ks_start() {
  lab_spawn_client ksd "$KS_KSD" --config "$KS_CONF" --socket "$KS_SOCK" \
    --pin-dir "$KS_PIN_DIR" --slice "$KS_SLICE"
  KS_DAEMON_PID=$LAB_LAST_PID
  _lab_wait_until 10 _ks_answers ||
    fail "ksd did not come up: $(tail -5 "$LAB_DIR/ksd.log")"
}

_ks_answers() { "$KS_KSCTL" --socket "$KS_SOCK" status --json >/dev/null 2>&1; }

# ks_kill9: SIGKILL ksd (a crashed daemon) and wait until it is gone.
ks_kill9() {
  [[ -n $KS_DAEMON_PID ]] || fail "ks_kill9: ksd is not running"
  lab_stop "$KS_DAEMON_PID" KILL 5
  KS_DAEMON_PID=""
}

# ks_stop: SIGTERM ksd.
ks_stop() {
  [[ -n $KS_DAEMON_PID ]] || return 0
  lab_stop "$KS_DAEMON_PID" TERM 5
  KS_DAEMON_PID=""
}

# ks_ctl ARGS...: ksctl against this scenario's ksd.
ks_ctl() { "$KS_KSCTL" --socket "$KS_SOCK" --pin-dir "$KS_PIN_DIR" "$@"; }

# ks_ctl_client ARGS...: the same, run inside the client netns (ksd's): ksctl verify's probes
# must share ksd's network namespace.
ks_ctl_client() { lab_exec_client "$KS_KSCTL" --socket "$KS_SOCK" --pin-dir "$KS_PIN_DIR" "$@"; }

# ks_status_field JSON_POINTER: one field of `ksctl status --json`.
ks_status_field() { json_get "$(ks_ctl status --json)" "$1"; }

# ks_run_client ARGS...: ksrun ARGS in the client netns, in the foreground.
ks_run_client() { lab_exec_client "$KS_KSRUN" --socket "$KS_SOCK" "$@"; }
# ks_run_nobody ARGS...: the same as nobody:nogroup without supplementary groups.
ks_run_nobody() { lab_exec_client "${LAB_AS_NOBODY[@]}" "$KS_KSRUN" --socket "$KS_SOCK" "$@"; }

# ks_spawn_protected NAME CMD...: ksrun CMD in the background in the client netns.
ks_spawn_protected() {
  local name=$1
  shift
  lab_spawn_client "$name" "$KS_KSRUN" --socket "$KS_SOCK" -- "$@"
}

# ks_app_counter PID KEY: one of the counters ksd keeps for the protected app (cgroup) that
# PID belongs to: `ksctl list --json` /apps/N/counters/KEY (allowed_packets,
# blocked_connects, ...). Fails when ksd does not answer or lists no app with PID.
ks_app_counter() {
  local apps i pids
  apps=$(ks_ctl list --json) || return 1
  for ((i = 0; ; i++)); do
    pids=$(json_get "$apps" "/apps/$i/pids" none)
    [[ $pids != none ]] || return 1
    if [[ $pids =~ [\[,]${1}[],] ]]; then
      json_get "$apps" "/apps/$i/counters/$2"
      return 0
    fi
  done
}
# ks_app_grows PID KEY BASE MIN: that counter is at least BASE + MIN (for lab_poll_until:
# "the app's traffic flows", "it keeps being refused").
ks_app_grows() {
  local n
  n=$(ks_app_counter "$1" "$2") || return 1
  ((n >= $3 + $4))
}

# ks_wait_tunnel_state STATE [TIMEOUT]: until ksd reports wg0 in STATE (up/down/missing).
_ks_tunnel_is() { [[ $(ks_status_field /profiles/default/tunnels/0/state 2>/dev/null) == "$1" ]]; }
ks_wait_tunnel_state() {
  _lab_wait_until "${2:-5}" _ks_tunnel_is "$1" ||
    fail "ksd never saw the tunnel $1 (status: $(ks_ctl status --json 2>&1 | tr -d '\n' | cut -c1-400))"
}

# ks_down: everything Killswitch-related this scenario made goes away: protected processes
# (cgroup.kill on the whole tree), ksd, pins, cgroups. Runs at exit (LAB_EXIT_HOOKS), after
# the scenario's lab_on_exit and before lab_down deletes the namespaces; also usable
# mid-scenario (it is idempotent).
ks_down() {
  [[ -n $KS_PIN_DIR ]] || return 0
  local rc=0
  if [[ -d $KS_CGROUP_ROOT ]]; then
    echo 1 >"$KS_CGROUP_ROOT/cgroup.kill" 2>/dev/null || true
    _lab_wait_until 5 _ks_tree_empty || {
      lab_log "WARNING: processes left in $KS_CGROUP_ROOT"
      rc=1
    }
  fi
  if [[ -n $KS_DAEMON_PID ]]; then
    lab_stop "$KS_DAEMON_PID" KILL 5 || rc=1
    KS_DAEMON_PID=""
  fi
  # ksctl teardown is the product's own way; the raw removal below is the safety net. In
  # the client netns: the routing rules it removes are there (never the host's own).
  if [[ -e /run/netns/$LAB_NS_C ]]; then
    lab_exec_client "$KS_KSCTL" --socket "$KS_SOCK" --pin-dir "$KS_PIN_DIR" teardown \
      --slice "$KS_SLICE" --yes >/dev/null 2>&1 || true
  fi
  rm -rf "$KS_PIN_DIR" 2>/dev/null || true
  if [[ -d $KS_CGROUP_ROOT ]]; then
    find "$KS_CGROUP_ROOT" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  fi
  if [[ -e $KS_PIN_DIR || -d $KS_CGROUP_ROOT ]]; then
    lab_log "WARNING: could not remove $KS_PIN_DIR or $KS_CGROUP_ROOT"
    rc=1
  fi
  KS_PIN_DIR=""
  return $rc
}
_ks_tree_empty() { ! grep -q 'populated 1' "$KS_CGROUP_ROOT/cgroup.events" 2>/dev/null; }

LAB_EXIT_HOOKS+=(ks_down)
