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
# address ($CONTROL_NET_IP4) so its frames can be told apart, leaks before and after
# tunnel_kill and the detector sees it.
# shellcheck disable=SC2016,SC2119  # sh -c scripts take "$0", "$1"...; lab_up/ks_up take options
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

command -v setpriv >/dev/null 2>&1 || fail "setpriv (util-linux) is missing; refusing to run"
command -v pgrep >/dev/null 2>&1 || fail "pgrep (procps) is missing; refusing to run"

CONTROL_NET_IP4=203.0.113.11 # unprotected control traffic only
CONTROL_TARGET4=$CONTROL_NET_IP4:$LAB_ECHO_PORT
INTERVAL_MS=5 # every sender: 4 of them at 1 ms would crowd the leak capture (see capture_priority)

# ---- helpers -------------------------------------------------------------------------------------
now() { echo "$EPOCHREALTIME"; }
# capture_priority PID: run a capture (tcpdump) with real-time priority. Parallel labs load
# this 2-CPU machine; libpcap sizes the ring of a capture on a veth with offloads for 64 KiB
# frames, ~30 of them in the default 2 MiB, so a starved tcpdump drops frames within tens of
# milliseconds (capture_stop then refuses the counts). tcpdump needs little CPU.
capture_priority() {
  chrt -f -p 20 "$1" >/dev/null || lab_log "WARNING: cannot raise the priority of capture $1"
}
# window_count FROM TO FILTER: frames of the leak capture matching FILTER, FROM <= time < TO.
window_count() {
  tcpdump -r "$LAB_DIR/all.pcap" -n -tt "$3" 2>/dev/null |
    awk -v a="$1" -v b="$2" '$1 >= a && $1 < b { n++ } END { print n + 0 }'
}
# poll_until TIMEOUT_S CMD...: every 200 ms until CMD succeeds (CMD runs ksctl).
poll_until() {
  local deadline=$((${EPOCHREALTIME/./} + $1 * 1000000))
  shift
  until "$@"; do
    ((${EPOCHREALTIME/./} < deadline)) || return 1
    _lab_sleep 0.2
  done
}
# app_counter PID KEY: a counter (allowed_packets, blocked_connects, ...) that ksd keeps for
# the protected app PID belongs to (`ksctl list`).
app_counter() {
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
# grows PID KEY BASE MIN: that counter is at least BASE + MIN.
grows() {
  local n
  n=$(app_counter "$1" "$2") || return 1
  ((n >= $3 + $4))
}
cgroup_of() { awk -F: '$1 == "0" { print $3 }' "/proc/$1/cgroup"; }
stat_field() { # stat_field PID N: field N of /proc/PID/stat (after the comm field)
  local stat f
  read -r stat <"/proc/$1/stat"
  read -ra f <<<"${stat##*) }"
  echo "${f[$(($2 - 3))]}"
}
status_field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# ksrun_nobody ARGS...: ksrun as nobody:nogroup without supplementary groups.
ksrun_nobody() {
  lab_exec_client setpriv --reuid=nobody --regid=nogroup --clear-groups \
    "$KS_KSRUN" --socket "$KS_SOCK" "$@"
}

# ---- setup -----------------------------------------------------------------------------------------
lab_up
ks_up
ks_wait_tunnel_state up
lab_exec_isp ip addr add "$CONTROL_NET_IP4/32" dev lo
CG2=$(_ks_cgroup2_mount)
NB=$LAB_DIR/nobody # where the unprivileged processes write
mkdir -m 755 "$NB"
chown nobody:nogroup "$NB"

# ksd's socket must be reachable by nobody (ks_up makes LAB_DIR traversable).
if ! setpriv --reuid=nobody --regid=nogroup --clear-groups test -w "$KS_SOCK"; then
  fail "nobody cannot reach ksd's socket $KS_SOCK:" \
    "$(stat -c "%A %n" "$LAB_DIR" "$LAB_DIR/run" "$KS_SOCK" | tr "\n" " ")"
fi
rc=0
err=$(ksrun_nobody -- true 2>&1) || rc=$?
assert_eq "$rc" 0 "ksrun as nobody runs a command${err:+ (stderr: $err)}"

# The escaper: a new session, try to leave the protected tree, then send.
cat >"$NB/escape.sh" <<'EOF'
#!/bin/sh
out=$1 root=$2 probe=$3 dst=$4 interval=$5
if { echo $$ >"$root/cgroup.procs"; } 2>"$out/escape.err"; then r=moved; else r=refused; fi
echo "$r" >"$out/escape.result"
exec "$probe" udp --dst "$dst" --duration 30 --interval-ms "$interval" --expect-reply \
  --ready-file "$out/escape.ready" >"$out/escape.json" 2>&1
EOF
chmod 755 "$NB/escape.sh"

capture_start all
capture_priority "$(<"$LAB_DIR/capture.pid")"
T0=$(now)

# ---- the daemonized senders -----------------------------------------------------------------------
ks_run_client sh -c 'setsid -f "$0" udp --dst "$1" --duration 30 --interval-ms "$2" \
  --expect-reply --ready-file "$3" </dev/null >"$4" 2>&1; exit 0' \
  "$KS_PROBE" "$LAB_TARGET4" "$INTERVAL_MS" "$LAB_DIR/setsid.ready" "$LAB_DIR/setsid.json"
pass "setsid: the launcher (ksrun) and its child exited with status 0"
ks_run_client sh -c '(setsid "$0" udp --dst "$1" --duration 30 --interval-ms "$2" \
  --expect-reply --ready-file "$3" </dev/null >"$4" 2>&1 &); exit 0' \
  "$KS_PROBE" "$LAB_TARGET4" "$INTERVAL_MS" "$LAB_DIR/subshell.ready" "$LAB_DIR/subshell.json"
pass "subshell: the launcher (ksrun) and its child exited with status 0"
ksrun_nobody -- sh -c 'setsid -f sh "$0" "$@" </dev/null >/dev/null 2>&1; exit 0' \
  "$NB/escape.sh" "$NB" "$CG2" "$KS_PROBE" "$LAB_TARGET4" "$INTERVAL_MS"
pass "escaper: the launcher (ksrun as nobody) and its child exited with status 0"
# Positive control: the same double fork without ksrun.
lab_exec_client sh -c 'setsid -f "$0" udp --dst "$1" --duration 30 --interval-ms "$2" \
  --expect-reply --ready-file "$3" </dev/null >"$4" 2>&1; exit 0' \
  "$KS_PROBE" "$CONTROL_TARGET4" "$INTERVAL_MS" "$LAB_DIR/control.ready" "$LAB_DIR/control.json"

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
  cg=$(cgroup_of "$pid")
  [[ $cg == /$KS_SLICE/*/ksrun-*.scope ]] || fail "$d: grandchild $pid is not in a protected cgroup: $cg"
  pass "$d: the grandchild is in the protected tree ($cg)"
  launcher=${cg##*/ksrun-}
  launcher=${launcher%%[.-]*}
  assert_fails "$d: its launcher (ksrun pid $launcher, the cgroup's name) has exited" _lab_alive "$launcher"
  assert_ne "$(stat_field "$pid" 4)" "$launcher" "$d: the grandchild's parent is not the launcher"
  assert_eq "$(stat_field "$pid" 6)" "$pid" "$d: the grandchild leads its own session (setsid)"
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
ESC_CG=$(cgroup_of "${PID[escaper]}")
apps=$(ks_ctl list --json)
for d in setsid subshell escaper; do
  [[ $apps =~ [\[,]${PID[$d]}[],] ]] || fail "$d: ksctl list does not show pid ${PID[$d]}: $apps"
  pass "$d: ksctl list shows the grandchild (pid ${PID[$d]})"
done
cg=$(cgroup_of "${PID[control]}")
[[ $cg != /$KS_SLICE/* ]] || fail "control: the unprotected sender is in the protected tree: $cg"

# Traffic flows through the tunnel (ksd's per-app counters).
for d in setsid subshell escaper; do
  poll_until 5 grows "${PID[$d]}" allowed_packets 0 100 ||
    fail "$d: the grandchild's traffic does not flow through the tunnel"
done
pass "every grandchild's traffic flows through the tunnel"
_lab_sleep 0.5

# ---- tunnel killed: they keep sending, nothing leaks -------------------------------------------------
T_KILL=$(now)
tunnel_kill
T_GONE=$(now)
ks_wait_tunnel_state missing
declare -A BASE
for d in setsid subshell escaper; do BASE[$d]=$(app_counter "${PID[$d]}" blocked_connects); done
for d in setsid subshell escaper; do
  poll_until 5 grows "${PID[$d]}" blocked_connects "${BASE[$d]}" 100 ||
    fail "$d: the grandchild does not keep sending (refused) after tunnel_kill"
done
pass "every grandchild keeps sending after tunnel_kill (refused at once, counted by ksd)"
_lab_sleep 1
for d in setsid subshell escaper; do
  assert_ok "$d: the grandchild is still alive" _lab_alive "${PID[$d]}"
done
assert_eq "$(cgroup_of "${PID[escaper]}")" "$ESC_CG" "escaper: still in its protected cgroup"

T_STOP=$(now)
for d in setsid subshell escaper control; do kill -TERM "${PID[$d]}"; done
for d in setsid subshell escaper control; do
  _lab_wait_until 5 _lab_gone "${PID[$d]}" || fail "$d: pid ${PID[$d]} did not stop on SIGTERM"
done
capture_stop
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
  refused=$(($(json_get "$out" /errors/ENETUNREACH 0) + $(json_get "$out" /errors/EPERM 0)))
  assert_gt "$refused" 100 "$d: sends refused (ENETUNREACH/EPERM) after tunnel_kill"
  assert_eq "$(json_get "$out" /attempts)" "$(($(json_get "$out" /sent) + refused))" \
    "$d: no other send error (every failure said ENETUNREACH or EPERM)"
done
assert_eq "$(json_get "${OUT[control]}" /errors)" "{}" "control: the unprotected sender never failed"

CONTROL="ip and dst host $CONTROL_NET_IP4"
# ICMP port unreachable from the client's kernel for the VPN server's packets to the killed
# wireguard-go: an artifact of tunnel_kill, from no app (it quotes WireGuard ciphertext only).
WG_UNREACH="icmp and src host $LAB_CLIENT_IP4 and dst host $LAB_GW_IP4 and icmp[0] = 3 and\
 icmp[1] = 3 and icmp[17] = 17 and icmp[28:2] = $LAB_WG_SERVER_PORT and icmp[30:2] = $LAB_WG_CLIENT_PORT"
PROTECTED="not ($CONTROL) and not ($WG_UNREACH)"
n=$(leak_count "$PROTECTED")
((n == 0)) || leak_show "$PROTECTED" 20
assert_eq "$n" 0 "no frame of the daemonized protected senders left outside the tunnel"
lab_log "kernel ICMP port unreachable for the killed wireguard-go: $(leak_count "$WG_UNREACH") frames"
assert_gt "$(window_count "$T0" "$T_KILL" "($LAB_LEAK_FILTER) and ($CONTROL) and udp")" 0 \
  "positive control: the detector sees the unprotected double-forked sender leak (tunnel up)"
assert_gt "$(window_count "$T_GONE" "$T_STOP" "($LAB_LEAK_FILTER) and ($CONTROL) and udp")" 0 \
  "positive control: ... and after tunnel_kill"
assert_ge "$(capture_count "$LAB_WG_FLOW_FILTER")" 300 "the protected traffic was in the WireGuard flow"
