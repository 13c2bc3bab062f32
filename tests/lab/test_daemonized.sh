#!/usr/bin/env bash
# Daemonized children stay protected: the launcher and its direct child exit while the
# grandchild keeps sending in a new session; and an unprivileged grandchild that tries to
# leave the protected tree (writing its pid into the cgroup2 root's cgroup.procs) is refused.
#
# Three protected long-lived UDP senders, each the grandchild of a ksrun that has exited:
#   setsid   ksrun sh -c 'setsid -f ks-probe udp ...; exit 0'           (as root)
#   subshell ksrun sh -c '(setsid ks-probe udp ... &); exit 0'           (as root)
#   escaper  ksrun sh -c 'setsid -f sh escape.sh ...; exit 0'             (as nobody: the script
#            writes its pid into <cgroup2>/cgroup.procs, then execs ks-probe udp)
# Asserted: the launchers have exited; each grandchild is alive, in a new session, in the
# protected tree and listed by `ksctl list`; the escaper's write fails (EACCES/EPERM) and it
# stays in its protected cgroup; traffic goes through the tunnel; after tunnel_kill they keep
# sending (refused at once) and not one protected frame leaves on the physical link.
# Positive control: the same double-forked sender without ksrun, to a second "internet"
# address ($LAB_CONTROL_NET_IP4) so its frames can be told apart, leaks before and after
# tunnel_kill and the detector sees it.
# shellcheck disable=SC2016,SC2119  # sh -c scripts take "$0", "$1"...; lab_up/ks_up take options
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

command -v pgrep >/dev/null 2>&1 || fail "pgrep (procps) is missing; refusing to run"

INTERVAL_MS=5 # every sender (4 of them)
# How long the daemonized senders run: 30 s, longer under emulation (LAB_WAIT_SCALE). An
# environment variable: the senders' scripts are single-quoted and run under ksrun.
export KS_SENDER_S=$((30 * LAB_WAIT_SCALE))

# ---- helpers -------------------------------------------------------------------------------------
status_field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# ---- setup -----------------------------------------------------------------------------------------
lab_up
ks_up
ks_wait_tunnel_state up
lab_add_control_dst
CG2=$(_ks_cgroup2_mount)
NB=$LAB_DIR/nobody # where the unprivileged processes write
mkdir -m 755 "$NB"
chown nobody:nogroup "$NB"

# ksd's socket must be reachable by nobody (ks_up makes LAB_DIR traversable).
if ! lab_as_nobody test -w "$KS_SOCK"; then
  fail "nobody cannot reach ksd's socket $KS_SOCK:" \
    "$(stat -c "%A %n" "$LAB_DIR" "$LAB_DIR/run" "$KS_SOCK" | tr "\n" " ")"
fi
rc=0
err=$(ks_run_nobody -- true 2>&1) || rc=$?
assert_eq "$rc" 0 "ksrun as nobody runs a command${err:+ (stderr: $err)}"

# The escaper: a new session, try to leave the protected tree, then send.
cat >"$NB/escape.sh" <<'EOF'
#!/bin/sh
out=$1 root=$2 probe=$3 dst=$4 interval=$5
if { echo $$ >"$root/cgroup.procs"; } 2>"$out/escape.err"; then r=moved; else r=refused; fi
echo "$r" >"$out/escape.result"
exec "$probe" udp --dst "$dst" --duration "$KS_SENDER_S" --interval-ms "$interval" --expect-reply \
  --ready-file "$out/escape.ready" >"$out/escape.json" 2>&1
EOF
chmod 755 "$NB/escape.sh"

capture_start all
T0=$(lab_now)

# ---- the daemonized senders -----------------------------------------------------------------------
ks_run_client sh -c 'setsid -f "$0" udp --dst "$1" --duration "$KS_SENDER_S" --interval-ms "$2" \
  --expect-reply --ready-file "$3" </dev/null >"$4" 2>&1; exit 0' \
  "$KS_PROBE" "$LAB_TARGET4" "$INTERVAL_MS" "$LAB_DIR/setsid.ready" "$LAB_DIR/setsid.json"
pass "setsid: the launcher (ksrun) and its child exited with status 0"
ks_run_client sh -c '(setsid "$0" udp --dst "$1" --duration "$KS_SENDER_S" --interval-ms "$2" \
  --expect-reply --ready-file "$3" </dev/null >"$4" 2>&1 &); exit 0' \
  "$KS_PROBE" "$LAB_TARGET4" "$INTERVAL_MS" "$LAB_DIR/subshell.ready" "$LAB_DIR/subshell.json"
pass "subshell: the launcher (ksrun) and its child exited with status 0"
ks_run_nobody -- sh -c 'setsid -f sh "$0" "$@" </dev/null >/dev/null 2>&1; exit 0' \
  "$NB/escape.sh" "$NB" "$CG2" "$KS_PROBE" "$LAB_TARGET4" "$INTERVAL_MS"
pass "escaper: the launcher (ksrun as nobody) and its child exited with status 0"
# Positive control: the same double fork without ksrun.
lab_exec_client sh -c 'setsid -f "$0" udp --dst "$1" --duration "$KS_SENDER_S" --interval-ms "$2" \
  --expect-reply --ready-file "$3" </dev/null >"$4" 2>&1; exit 0' \
  "$KS_PROBE" "$LAB_CONTROL_TARGET4" "$INTERVAL_MS" "$LAB_DIR/control.ready" "$LAB_DIR/control.json"

declare -A PID
for d in setsid subshell control; do
  lab_wait_file "$LAB_DIR/$d.ready"
  PID[$d]=$(<"$LAB_DIR/$d.ready")
done
lab_wait_file "$NB/escape.ready"
PID[escaper]=$(<"$NB/escape.ready")

for d in setsid subshell escaper; do
  pid=${PID[$d]}
  marker=$LAB_DIR/$d.ready
  [[ $d == escaper ]] && marker=$NB/escape.ready
  assert_eq "$(pgrep -f -- "$marker" | tr '\n' ' ')" "$pid " \
    "$d: pgrep finds the grandchild by its marker argument"
  assert_ok "$d: the grandchild ($pid) is alive" _lab_alive "$pid"
  cg=$(lab_cgroup_of "$pid")
  [[ $cg == /$KS_SLICE/*/ksrun-*.scope ]] || fail "$d: grandchild $pid is not in a protected cgroup: $cg"
  pass "$d: the grandchild is in the protected tree ($cg)"
  launcher=${cg##*/ksrun-}
  launcher=${launcher%%[.-]*}
  assert_fails "$d: its launcher (ksrun pid $launcher, the cgroup's name) has exited" _lab_alive "$launcher"
  assert_ne "$(lab_stat_field "$pid" 4)" "$launcher" "$d: the grandchild's parent is not the launcher"
  assert_eq "$(lab_stat_field "$pid" 6)" "$pid" "$d: the grandchild leads its own session (setsid)"
  caps=$(status_field "$pid" CapEff)
  assert_eq "$(((16#$caps >> 12) & 3))" 0 \
    "$d: the grandchild has neither CAP_NET_ADMIN nor CAP_NET_RAW (CapEff $caps)"
done
assert_eq "$(status_field "${PID[escaper]}" CapEff)" 0000000000000000 "escaper: no capability at all"
assert_eq "$(status_field "${PID[escaper]}" Uid | cut -f1)" 65534 "escaper: runs as nobody"
assert_eq "$(<"$NB/escape.result")" refused "escaper: writing its pid into $CG2/cgroup.procs fails"
esc_err=$(<"$NB/escape.err")
[[ $esc_err == *"Permission denied"* || $esc_err == *"Operation not permitted"* ]] ||
  fail "escaper: unexpected error from the cgroup.procs write: $esc_err"
pass "escaper: ... with EACCES/EPERM ($esc_err)"
ESC_CG=$(lab_cgroup_of "${PID[escaper]}")
apps=$(ks_ctl list --json)
for d in setsid subshell escaper; do
  [[ $apps =~ [\[,]${PID[$d]}[],] ]] || fail "$d: ksctl list does not show pid ${PID[$d]}: $apps"
  pass "$d: ksctl list shows the grandchild (pid ${PID[$d]})"
done
cg=$(lab_cgroup_of "${PID[control]}")
[[ $cg != /$KS_SLICE/* ]] || fail "control: the unprotected sender is in the protected tree: $cg"

# Traffic flows through the tunnel (ksd's per-app counters: sends and replies). Until each
# has had well over 100 replies (asserted below), not for a fixed time: on a busy machine
# (CI runs a qemu guest meanwhile) a sender got through 102 sends in 1.6 s.
for d in setsid subshell escaper; do
  lab_poll_until 20 ks_app_grows "${PID[$d]}" allowed_packets 0 300 ||
    fail "$d: the grandchild's traffic does not flow through the tunnel"
done
pass "every grandchild's traffic flows through the tunnel"

# ---- tunnel killed: they keep sending, nothing leaks -------------------------------------------------
T_KILL=$(lab_now)
tunnel_kill
T_GONE=$(lab_now)
ks_wait_tunnel_state missing
declare -A BASE
for d in setsid subshell escaper; do BASE[$d]=$(ks_app_counter "${PID[$d]}" blocked_connects); done
for d in setsid subshell escaper; do
  lab_poll_until 5 ks_app_grows "${PID[$d]}" blocked_connects "${BASE[$d]}" 100 ||
    fail "$d: the grandchild does not keep sending (refused) after tunnel_kill"
done
pass "every grandchild keeps sending after tunnel_kill (refused at once, counted by ksd)"
_lab_sleep 1
for d in setsid subshell escaper; do
  assert_ok "$d: the grandchild is still alive" _lab_alive "${PID[$d]}"
done
assert_eq "$(lab_cgroup_of "${PID[escaper]}")" "$ESC_CG" "escaper: still in its protected cgroup"

declare -A APP_CG
for d in setsid subshell escaper; do APP_CG[$d]=$(lab_cgroup_of "${PID[$d]}"); done
T_STOP=$(lab_now)
for d in setsid subshell escaper control; do kill -TERM "${PID[$d]}"; done
for d in setsid subshell escaper control; do
  _lab_wait_until 5 _lab_gone "${PID[$d]}" || fail "$d: pid ${PID[$d]} did not stop on SIGTERM"
done
capture_stop

# Emptied apps leave: ksd removes their cgroups (told by inotify on cgroup.events, or by
# its sweep) and the classification with them.
apps_gone() {
  local d
  for d in setsid subshell escaper; do [[ ! -d $CG2${APP_CG[$d]} ]] || return 1; done
  ! ks_ctl list --json | grep -q '"ksrun-'
}
t_gone=${EPOCHREALTIME/./}
_lab_wait_until 5 apps_gone || fail "the emptied apps' cgroups are still there: $(ks_ctl list --json)"
pass "ksd removed the emptied apps' cgroups; ksctl list shows none" \
  "($((($(date +%s%6N) - t_gone) / 1000)) ms after the last process was gone)"
lab_log "timeline (ms from start at $T0): tunnel kill $(((${T_KILL/./} - ${T0/./}) / 1000))" \
  "(gone +$(((${T_GONE/./} - ${T_KILL/./}) / 1000))), stop $(((${T_STOP/./} - ${T0/./}) / 1000))"

# ---- results -----------------------------------------------------------------------------------------
declare -A OUT
OUT[setsid]=$(tail -n 1 "$LAB_DIR/setsid.json")
OUT[subshell]=$(tail -n 1 "$LAB_DIR/subshell.json")
OUT[escaper]=$(tail -n 1 "$NB/escape.json")
OUT[control]=$(tail -n 1 "$LAB_DIR/control.json")
for d in setsid subshell escaper control; do lab_log "$d: ${OUT[$d]}"; done
for d in setsid subshell escaper; do
  out=${OUT[$d]}
  assert_gt "$(json_get "$out" /replies)" 100 "$d: replies through the tunnel before tunnel_kill"
  refused=$(json_sum_errors "$out" ENETUNREACH EPERM)
  assert_gt "$refused" 100 "$d: sends refused (ENETUNREACH/EPERM) after tunnel_kill"
  assert_eq "$(json_get "$out" /attempts)" "$(($(json_get "$out" /sent) + refused))" \
    "$d: no other send error (every failure said ENETUNREACH or EPERM)"
done
assert_eq "$(json_get "${OUT[control]}" /errors)" "{}" "control: the unprotected sender never failed"

CONTROL="ip and dst host $LAB_CONTROL_NET_IP4"
assert_no_leak "no frame of the daemonized protected senders left outside the tunnel" "not ($CONTROL)"
assert_gt "$(leak_count_between "$T0" "$T_KILL" "($CONTROL) and udp")" 0 \
  "positive control: the detector sees the unprotected double-forked sender leak (tunnel up)"
assert_gt "$(leak_count_between "$T_GONE" "$T_STOP" "($CONTROL) and udp")" 0 \
  "positive control: ... and after tunnel_kill"
assert_ge "$(capture_count "$LAB_WG_FLOW_FILTER")" 300 "the protected traffic was in the WireGuard flow"
