#!/usr/bin/env bash
# Killswitch at boot without systemd: the LSB init script packaging/sysvinit/killswitch (for
# sysvinit hosts; OpenRC runs it too), driven as an init system would, in the lab.
#   1. `start` with the tunnel not there yet (as at boot, before the network): enforcement
#      is pinned at once (`ksd --attach-only`) and ksd runs in the background; a protected
#      sender is refused and nothing leaves on eth0 while an unprotected one leaks (control);
#      the tunnel comes up: ksd follows it and the protected sender goes through it;
#   2. `status` says running (0); `start` again changes nothing;
#   3. `stop`: ksd is gone (`status` 3), protection stays pinned: with the tunnel killed, a
#      protected sender that was already running is refused at once and nothing leaves;
#   4. `start` again: ksd re-adopts the pins, and the re-created tunnel carries protected
#      traffic again; a service put into the profile slice while no ksd ran (as one started
#      at boot before ksd) is adopted with a spare counter slot: its new sockets carry the
#      slot in their mark, go through the tunnel and are counted in its row of the list.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

INIT=$KS_SOURCE_DIR/packaging/sysvinit/killswitch

lab_up
lab_add_control_src
tunnel_kill # boot: no VPN yet
ks_prepare
DEFAULTS=$LAB_DIR/killswitch.default
PIDFILE=$LAB_DIR/ksd.pid
cat >"$DEFAULTS" <<DEFAULTS
KSD=$KS_KSD
KSD_OPTS="--config $KS_CONF --socket $KS_SOCK --pin-dir $KS_PIN_DIR --slice $KS_SLICE"
PIDFILE=$PIDFILE
LOGFILE=$LAB_DIR/ksd.log
DEFAULTS
# init ACTION: the init script in the client namespace, as init would run it (no env).
init() { lab_exec_client env -i KILLSWITCH_DEFAULTS="$DEFAULTS" sh "$INIT" "$1"; }
# The daemon the script started, accounted like lab_spawn's (lab_stop, cleanup).
adopt_daemon() {
  KS_DAEMON_PID=$(<"$PIDFILE")
  echo "$KS_DAEMON_PID $(_lab_starttime "$KS_DAEMON_PID") ksd-init" >>"$LAB_DIR/spawned"
  _lab_wait_until 10 _ks_answers || fail "ksd started by the init script does not answer"
}
send() { # LABEL: a protected and an unprotected sender, 20 datagrams each
  local out
  out=$(ks_run_client "$KS_PROBE" udp --dst "$LAB_TARGET4" --count 20 --interval-ms 5 --expect-reply)
  echo "$out"
  lab_probe_client udp --dst "$LAB_TARGET4" --src "$LAB_CONTROL_IP4" --count 20 --interval-ms 5 >/dev/null
}

# ---- 1. boot: start before the tunnel exists --------------------------------------------------------
capture_start
init start
adopt_daemon
[[ -e $KS_PIN_DIR/link_egress ]] || fail "start: enforcement is not pinned"
out=$(send "no tunnel")
assert_eq "$(json_get "$out" /replies 0)" 0 "no tunnel yet: the protected sender gets no reply"
assert_ge "$(json_get "$out" /errors/ENETUNREACH 0)" 20 "no tunnel yet: each protected send refused at once"
tunnel_recreate >/dev/null
ks_wait_tunnel_state up
out=$(send "tunnel up")
assert_eq "$(json_get "$out" /replies 0)" 20 "tunnel up: ksd followed it, the protected sender goes through it"

# ---- 2. status, start twice ---------------------------------------------------------------------------
init status >/dev/null || fail "status: ksd is not reported running"
pid=$KS_DAEMON_PID
init start >/dev/null
assert_eq "$(<"$PIDFILE")" "$pid" "a second start leaves the running ksd alone"

# ---- 3. stop: protection stays --------------------------------------------------------------------------
# ksrun needs ksd to launch: a protected sender started now runs on through the stop.
ks_spawn_protected sender "$KS_PROBE" udp --dst "$LAB_TARGET4" --duration $((4 * LAB_WAIT_SCALE)) --interval-ms 5 \
  --expect-reply
SENDER=$LAB_LAST_PID
_lab_sleep 0.5
init stop
rc=0
init status >/dev/null || rc=$?
assert_eq "$rc" 3 "stopped: status exits 3"
_lab_gone "$pid" "$(awk -v p="$pid" '$1 == p { print $2 }' "$LAB_DIR/spawned")" || fail "ksd still runs after stop"
KS_DAEMON_PID=""
[[ -e $KS_PIN_DIR/link_egress ]] || fail "stop removed the pins"
tunnel_kill
lab_probe_client udp --dst "$LAB_TARGET4" --src "$LAB_CONTROL_IP4" --count 20 --interval-ms 5 >/dev/null
_lab_wait_until 10 _lab_not _lab_alive "$SENDER" || fail "the protected sender did not finish"
# A service the init system starts into the profile slice while no ksd runs; it waits for
# GO, then prints a new socket's mark, sends 20 datagrams and stays (to be listed).
EARLY_CG=$KS_CGROUP_ROOT/${KS_SLICE%.slice}-default.slice/early.service
mkdir "$EARLY_CG"
# shellcheck disable=SC2016  # sh -c script
lab_spawn_client early sh -c 'echo $$ >"$1/cgroup.procs" && while [ ! -e "$2" ]; do sleep 0.05; done &&
  python3 -c "import socket; print(socket.socket(socket.AF_INET, socket.SOCK_DGRAM).getsockopt(socket.SOL_SOCKET, 36))" &&
  "$3" udp --dst "$4" --count 20 --interval-ms 5 --expect-reply && exec sleep 60' sh "$EARLY_CG" "$LAB_DIR/early.go" \
  "$KS_PROBE" "$LAB_TARGET4"
EARLY=$LAB_LAST_PID
out=$(tail -n 1 "$LAB_DIR/sender.log")
lab_log "protected sender across stop and tunnel loss: $out"
assert_gt "$(json_get "$out" /replies 0)" 0 "the protected sender went through the tunnel before"
assert_gt "$(json_get "$out" /errors/ENETUNREACH 0)" 0 "ksd stopped, tunnel gone: its sends are refused at once"

# ---- 4. start again: re-adopted ----------------------------------------------------------------------
tunnel_recreate >/dev/null
init start
adopt_daemon
ks_wait_tunnel_state up
out=$(send "restarted")
assert_eq "$(json_get "$out" /replies 0)" 20 "started again: the re-created tunnel carries protected traffic"
touch "$LAB_DIR/early.go"
early_sent() { (($(wc -l <"$LAB_DIR/early.log") >= 2)); }
_lab_wait_until 10 early_sent || fail "the early service did not send: $(cat "$LAB_DIR/early.log")"
mark=$(head -n 1 "$LAB_DIR/early.log")
assert_ne "$(((mark & 0xffc0) >> 6))" 0 "the service found without a counter slot got a spare one (mark $mark)"
assert_eq "$(json_get "$(tail -n 1 "$LAB_DIR/early.log")" /replies 0)" 20 "its sends go through the tunnel"
early_allowed() {
  ks_ctl list --json | python3 -c 'import json, sys
apps = [a for a in json.load(sys.stdin)["apps"] if a["cgroup"].endswith("/early.service")]
print(apps[0]["allowed_packets"] if apps else 0)'
}
assert_ge "$(early_allowed)" 20 "they are counted in its row of ksctl list"
lab_stop "$EARLY" KILL
init stop >/dev/null
KS_DAEMON_PID=""
capture_stop

assert_ge "$(leak_count "src host $LAB_CONTROL_IP4")" 60 "control: the unprotected sender's datagrams are on eth0"
assert_no_leak "no frame of the protected sender on eth0" "not src host $LAB_CONTROL_IP4"
