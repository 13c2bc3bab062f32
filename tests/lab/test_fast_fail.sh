#!/usr/bin/env bash
# shellcheck disable=SC2016  # single-quoted awk/sh -c scripts get their values as arguments
# Fail fast, fail closed: with no usable tunnel a protected connect() fails at once with an
# error (ENETUNREACH, EPERM or ENODEV), never a timeout, and nothing leaves on eth0.
#
# Conditions, each checked with three protected `ks-probe connect-time`s (TCP to
# $LAB_TARGET4, UDP to $LAB_TARGET4, TCP to $LAB_TARGET6), each under 50 ms:
#   A. wg0 down (ksd running);
#   B. wg0 deleted: wireguard-go SIGKILLed (ksd running);
#   C. ksd SIGKILLed while wg0 was up, then wg0 deleted: the pinned maps still name the
#      old ifindex, and nobody updates them;
#   D. (also) wg0 re-created with a new ifindex while ksd is still dead: stays blocked;
#   then ksd restarts and protected traffic resumes through the new wg0.
# A and B run each probe twice: in a fresh `ksrun` (the command must have run: exit 0 and
# a result, not ksrun's refusal 125) and in a protected agent started at the beginning. C
# and D use only the agent, since ksrun refuses (125) without ksd (asserted too).
# Positive control for every condition: the same three probes unprotected succeed (over
# eth0) and the detector sees their frames. They use second client addresses
# (198.51.100.3, 2001:db8:1::3) so their frames can be told from protected ones.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

MAX_MS=50
AGENT="" # the agent's directory (requests and results)

# ---- the protected agent: a long-lived protected shell that measures on request -------------
# It polls for $AGENT/req; for each request it runs the three connect-times and publishes
# their JSON lines atomically as $AGENT/res.
agent_start() {
  AGENT=$LAB_DIR/agent
  mkdir -m 777 "$AGENT"
  ks_spawn_protected agent sh -c '
    p=$1 d=$2 t4=$3 t6=$4
    while :; do
      if [ -e "$d/req" ]; then
        rm -f "$d/req"
        {
          "$p" connect-time --dst "$t4" --timeout-ms 1000
          "$p" connect-time --dst "$t4" --udp
          "$p" connect-time --dst "$t6" --timeout-ms 1000
        } >"$d/res.tmp" 2>&1
        mv "$d/res.tmp" "$d/res"
      fi
      sleep 0.05
    done' sh "$KS_PROBE" "$AGENT" "$LAB_TARGET4" "$LAB_TARGET6"
  AGENT_PID=$LAB_LAST_PID
}
# agent_measure: one round of the agent's probes; prints their three JSON lines.
agent_measure() {
  rm -f "$AGENT/res"
  : >"$AGENT/req"
  _lab_wait_until 5 test -e "$AGENT/res" ||
    fail "the protected agent did not answer (alive: $(_lab_alive "$AGENT_PID" && echo yes || echo no))"
  cat "$AGENT/res"
}
# ksrun_measure: the same three probes, each in a fresh ksrun; prints the three JSON lines.
ksrun_measure() {
  local rc args
  for args in "--dst $LAB_TARGET4 --timeout-ms 1000" "--dst $LAB_TARGET4 --udp" \
    "--dst $LAB_TARGET6 --timeout-ms 1000"; do
    rc=0
    # shellcheck disable=SC2086
    ks_run_client "$KS_PROBE" connect-time $args || rc=$?
    ((rc == 0)) || fail "ksrun connect-time $args exited $rc (125: ksrun refused to run it)"
  done
}
control_measure() { # the same probes unprotected, from the control addresses
  lab_probe_client connect-time --dst "$LAB_TARGET4" --src "$LAB_CONTROL_IP4" --timeout-ms 1000
  lab_probe_client connect-time --dst "$LAB_TARGET4" --src "$LAB_CONTROL_IP4" --udp
  lab_probe_client connect-time --dst "$LAB_TARGET6" --src "$LAB_CONTROL_IP6" --timeout-ms 1000
}

# jf JSON KEY: a top-level scalar of a flat ks-probe JSON line, in bash (json_get starts a
# process per call, which adds up to seconds on a loaded machine).
jf() {
  if [[ $1 =~ \"$2\":(\"([^\"]*)\"|([^,}]*)) ]]; then
    echo "${BASH_REMATCH[2]}${BASH_REMATCH[3]}"
  else
    fail "no $2 in '$1'"
  fi
}

SUMMARY=()
# check_blocked CONDITION WHO RESULTS: each of the three results is a fast-fail error.
check_blocked() {
  local cond=$1 who=$2 line n=0 err msv dst proto
  while IFS= read -r line; do
    [[ $line == *'"cmd":"connect-time"'* ]] || fail "$cond/$who: not a connect-time result: '$line'"
    err=$(jf "$line" errno)
    msv=$(jf "$line" ms)
    dst=$(jf "$line" dst)
    proto=$(jf "$line" proto)
    case $err in
      ENETUNREACH | EPERM | ENODEV) pass "$cond/$who: $proto $dst fails with $err" ;;
      *) fail "$cond/$who: $proto $dst: got '$err', expected ENETUNREACH, EPERM or ENODEV ($line)" ;;
    esac
    assert_le "$msv" "$MAX_MS" "$cond/$who: $proto $dst fails at once (ms)"
    SUMMARY+=("$cond $who $proto $dst: $err in $msv ms (stage $(jf "$line" stage))")
    n=$((n + 1))
  done <<<"$3"
  assert_eq "$n" 3 "$cond/$who: three results"
}
# check_control CONDITION: the unprotected probes succeed (and their frames are captured).
check_control() {
  local line n=0
  while IFS= read -r line; do
    assert_eq "$(jf "$line" errno)" 0 \
      "$1/control: unprotected $(jf "$line" proto) $(jf "$line" dst) succeeds over eth0"
    n=$((n + 1))
  done <<<"$(control_measure)"
  assert_eq "$n" 3 "$1/control: three results"
}
check_condition() { # check_condition NAME [agent-only]
  [[ ${2:-} == agent-only ]] || check_blocked "$1" ksrun "$(ksrun_measure)"
  check_blocked "$1" agent "$(agent_measure)"
  check_control "$1"
}
# check_through_tunnel NAME: the agent's TCP connect works (through the tunnel), its UDP
# connect too; IPv6 fails at once (the tunnel is IPv4-only).
check_through_tunnel() {
  local res
  res=$(agent_measure)
  local -a r
  mapfile -t r <<<"$res"
  assert_eq "$(jf "${r[0]}" errno)" 0 "$1: the agent's protected TCP connect works"
  assert_eq "$(jf "${r[1]}" errno)" 0 "$1: the agent's protected UDP connect works"
  assert_eq "$(jf "${r[2]}" errno)" ENETUNREACH "$1: the agent's IPv6 connect fails (IPv4-only tunnel)"
}

lab_up
ks_up
ks_wait_tunnel_state up
lab_add_control_src --ipv6
capture_start all
agent_start
check_through_tunnel "tunnel up"

# A. wg0 down, ksd running.
tunnel_down
ks_wait_tunnel_state down
check_condition "wg0-down"
tunnel_up
ks_wait_tunnel_state up
check_through_tunnel "wg0 up again"

# B. wg0 deleted (the VPN client crashed), ksd running.
tunnel_kill
ks_wait_tunnel_state missing
check_condition "wg0-deleted"
tunnel_recreate >/dev/null
ks_wait_tunnel_state up
check_through_tunnel "wg0 re-created"
IFINDEX1=$(tunnel_ifindex)

# C. ksd SIGKILLed while wg0 is up (the maps keep its ifindex), then wg0 deleted.
ks_kill9
tunnel_kill
rc=0
ks_run_client sh -c ': >"$1/ran"' sh "$AGENT" 2>"$LAB_DIR/ksrun-refused.err" || rc=$?
assert_eq "$rc" 125 "ksd dead: ksrun refuses ($(tr '\n' ' ' <"$LAB_DIR/ksrun-refused.err"))"
assert_fails "ksd dead: the refused command never ran" test -e "$AGENT/ran"
check_condition "ksd-dead+wg0-deleted" agent-only

# D. wg0 re-created (new ifindex) while ksd is still dead: blocked until ksd is back.
tunnel_recreate >/dev/null
IFINDEX2=$(tunnel_ifindex)
assert_ne "$IFINDEX2" "$IFINDEX1" "the re-created wg0 has a new ifindex ($IFINDEX1 -> $IFINDEX2)"
# With ksd dead, the tunnel address is refused for everyone (ksd's source rules fail closed
# until it is back), so prove the tunnel itself is up by its handshake.
tunnel_handshake_check || fail "the re-created tunnel does not complete a handshake"
check_condition "ksd-dead+wg0-recreated" agent-only
ks_start
ks_wait_tunnel_state up
check_through_tunnel "ksd restarted"

capture_stop
# ---- leaks -----------------------------------------------------------------------------------------
CONTROL="(ip and src host $LAB_CONTROL_IP4) or (ip6 and src host $LAB_CONTROL_IP6)"
assert_no_leak "no protected frame left outside the tunnel, in any condition" "not ($CONTROL)"
# Each condition's control: two TCP handshakes (IPv4, IPv6) of >= 3 frames each from the client.
assert_ge "$(leak_count "$CONTROL")" 24 "positive control: the detector sees the unprotected probes"
for line in "${SUMMARY[@]}"; do lab_log "$line"; done
