#!/usr/bin/env bash
# shellcheck disable=SC2016  # single-quoted awk/sh -c scripts get their values as arguments
# Tunnel down and tunnel crash while protected traffic runs without pause.
#
# A protected UDP sender (one long-lived unconnected socket, a datagram every ms) and a
# protected TCP loop (a new connection every 20 ms) run through:
#   (a) `ip link set wg0 down` for ~2 s, then link up (same ifindex);
#   (b) wireguard-go SIGKILLed (wg0 deleted: the VPN client crashed) for ~2 s, then a new
#       wireguard-go (wg0 re-created, new ifindex).
# Asserted:
#   - no frame of the protected programs leaves on the physical link (one capture across
#     all of it);
#   - the senders' errors are fail-fast ones (ENETUNREACH/EPERM/ENODEV; no ETIMEDOUT from the
#     UDP sender) and there are many of them: each attempt was refused at once, not stalled;
#   - protected UDP and TCP go through the tunnel and are answered before, between and after
#     the outages (seen on the VPN server's wgs0, by timestamp): traffic resumed by itself
#     after link up and after the re-creation, with ksd running;
#   - during each outage an unprotected program on the same host keeps working over eth0,
#     and the leak detector sees it (the positive control: same probes, same tunnel
#     condition). It sends from a second client address, 198.51.100.3, so that its frames
#     can be told from the protected programs' in the one capture.
# A known product gap is reported as XFAIL (KS_LAB_STRICT=1 turns it into a failure): see
# "KNOWN BUG" below.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

CONTROL_IP4=198.51.100.3 # unprotected control traffic only
OUTAGE_S=2

now() { echo "$EPOCHREALTIME"; }
plus() { awk -v t="$1" -v d="$2" 'BEGIN { printf "%.6f", t + d }'; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 }'; }
sleep_until() { # sleep_until EPOCH_S: short and bounded (the outages last ~2 s on purpose)
  sleep "$(awk -v t="$1" -v n="$EPOCHREALTIME" 'BEGIN { d = t - n; print (d > 0 ? d : 0) }')"
}
# xfail MSG: a known product bug (reported; see KNOWN BUG below), printed as XFAIL so that
# the scenario still checks everything else. KS_LAB_STRICT=1 makes it a failure.
xfail() {
  [[ ${KS_LAB_STRICT:-0} != 1 ]] || fail "$* (KS_LAB_STRICT=1)"
  echo "XFAIL: $*"
}

# ---- the VPN server's side of the tunnel: what came through it, and when ----------------------
# A capture on wgs0 (decrypted traffic at the server), read only after it stopped; while the
# scenario runs, the cheap wgs0 packet counters pace it (reading the growing capture every
# 100 ms costs enough CPU to make the leak detector drop frames on a busy 2-CPU machine).
TUN_CAP_PID=""
tun_capture_start() {
  lab_spawn_isp tun.tcpdump tcpdump -i "$LAB_SERVER_TUNNEL_IF" -n -s 96 -U --immediate-mode \
    -Z root -w "$LAB_DIR/tun.pcap"
  TUN_CAP_PID=$LAB_LAST_PID
  _lab_wait_until 5 _lab_capture_ready "$TUN_CAP_PID" "$LAB_DIR/tun.tcpdump.log" ||
    fail "tunnel capture did not start: $(cat "$LAB_DIR/tun.tcpdump.log")"
  _lab_alive "$TUN_CAP_PID" || fail "tunnel capture died: $(cat "$LAB_DIR/tun.tcpdump.log")"
}
# detector_start NAME: capture_start, and the leak detector runs before the traffic it
# watches (SCHED_FIFO; it sleeps in poll between frames): on a loaded machine a starved
# tcpdump overruns its ring, and the leak count is void.
detector_start() {
  capture_start "$1"
  chrt -f -p 20 "$(_lab_capture_pid)"
}
tun_capture_stop() { lab_stop "$TUN_CAP_PID" INT 5; }
# tun_count FROM TO FILTER: frames on wgs0 matching FILTER with FROM <= timestamp < TO.
tun_count() {
  tcpdump -r "$LAB_DIR/tun.pcap" -n -tt "$3" 2>/dev/null |
    awk -v a="$1" -v b="$2" '$1 >= a && $1 < b { n++ } END { print n + 0 }'
}
# tun_first FROM FILTER: timestamp of the first such frame at or after FROM (empty if none).
tun_first() {
  tcpdump -r "$LAB_DIR/tun.pcap" -n -tt "$2" 2>/dev/null |
    awk -v a="$1" '$1 >= a && f == "" { f = $1 } END { print f }' # no early exit: no SIGPIPE
}
# wgs0_tx: packets the server has sent into the tunnel so far (replies to the client).
wgs0_tx() {
  lab_exec_isp awk -v i="$LAB_SERVER_TUNNEL_IF:" '$1 == i { print $11 }' /proc/net/dev
}
# replies_flow_since COUNT: the server sent at least 100 packets into the tunnel since the
# wgs0_tx reading COUNT.
replies_flow_since() { (($(wgs0_tx) - $1 >= 100)); }
UDP_IN="ip and udp and src host $LAB_WG_CLIENT_IP4 and dst host $LAB_NET_IP4 and dst port $LAB_ECHO_PORT"
UDP_OUT="ip and udp and src host $LAB_NET_IP4 and src port $LAB_ECHO_PORT and dst host $LAB_WG_CLIENT_IP4"
TCP_SYN="ip and tcp and src host $LAB_WG_CLIENT_IP4 and dst port $LAB_ECHO_PORT and tcp[tcpflags] & tcp-syn != 0"
TCP_ECHO="ip and tcp and src host $LAB_NET_IP4 and src port $LAB_ECHO_PORT and dst host $LAB_WG_CLIENT_IP4 and tcp[tcpflags] & tcp-push != 0"

# control_during_outage LABEL: unprotected probes on the same host keep working over eth0.
control_during_outage() {
  local out
  out=$(lab_probe_client udp --dst "$LAB_TARGET4" --src "$CONTROL_IP4" --count 200 \
    --interval-ms 1 --expect-reply)
  assert_eq "$(json_get "$out" /replies)" 200 "$1: an unprotected UDP program keeps working"
  out=$(lab_probe_client tcp --dst "$LAB_TARGET4" --src "$CONTROL_IP4" --count 5 --interval-ms 20)
  assert_eq "$(json_get "$out" /ok)" 5 "$1: an unprotected TCP program keeps working"
}

lab_up
ks_up
ks_wait_tunnel_state up
lab_exec_client ip addr add "$CONTROL_IP4/24" dev "$LAB_CLIENT_PHYS"
IFINDEX0=$(tunnel_ifindex)

detector_start all
tun_capture_start
T0=$(now)
tx=$(wgs0_tx)
ks_spawn_protected udp-sender "$KS_PROBE" udp --dst "$LAB_TARGET4" --duration 120 \
  --interval-ms 1 --expect-reply --ready-file "$LAB_DIR/udp.ready"
UDP_PID=$LAB_LAST_PID
ks_spawn_protected tcp-loop "$KS_PROBE" tcp --dst "$LAB_TARGET4" --duration 120 \
  --interval-ms 20 --timeout-ms 1000 --ready-file "$LAB_DIR/tcp.ready"
TCP_PID=$LAB_LAST_PID
lab_wait_file "$LAB_DIR/udp.ready"
lab_wait_file "$LAB_DIR/tcp.ready"
_lab_wait_until 5 replies_flow_since "$tx" ||
  fail "protected traffic does not flow through the tunnel (wgs0 tx $tx -> $(wgs0_tx))"
_lab_sleep 0.5

# (a) link down for ~2 s, then up (same ifindex).
B0=$(ks_status_field /blocked_total)
T_DOWN=$(now)
tunnel_down
T_DOWN1=$(now)
ks_wait_tunnel_state down
control_during_outage "wg0 down"
sleep_until "$(plus "$T_DOWN" "$OUTAGE_S")"
B1=$(ks_status_field /blocked_total)
T_UP0=$(now)
tx=$(wgs0_tx)
tunnel_up
T_UP=$(now)
assert_eq "$(tunnel_ifindex)" "$IFINDEX0" "link up keeps the ifindex"
ks_wait_tunnel_state up
_lab_wait_until 5 replies_flow_since "$tx" || fail "protected traffic did not resume after link up"
T_RESUMED1=$(now)
_lab_sleep 0.5

# (b) wireguard-go crashes (wg0 deleted) for ~2 s, then a new one (new ifindex).
B2=$(ks_status_field /blocked_total)
T_KILL=$(now)
tunnel_kill
T_KILL1=$(now)
ks_wait_tunnel_state missing
control_during_outage "wg0 deleted"
sleep_until "$(plus "$T_KILL" "$OUTAGE_S")"
B3=$(ks_status_field /blocked_total)
T_RE0=$(now)
tx=$(wgs0_tx)
tunnel_recreate >/dev/null
T_RE=$(now)
IFINDEX1=$(tunnel_ifindex)
assert_ne "$IFINDEX1" "$IFINDEX0" "the re-created wg0 has a new ifindex"
ks_wait_tunnel_state up
_lab_wait_until 5 replies_flow_since "$tx" || fail "protected traffic did not resume after re-creation"
T_RESUMED2=$(now)
_lab_sleep 1

lab_stop "$UDP_PID" TERM 5
lab_stop "$TCP_PID" TERM 5
T_END=$(now)
capture_stop
tun_capture_stop
udp=$(tail -n 1 "$LAB_DIR/udp-sender.log")
tcp=$(tail -n 1 "$LAB_DIR/tcp-loop.log")
lab_log "udp sender: $udp"
lab_log "tcp loop:   $tcp"
lab_log "timeline (ms from start): down $(ms "$T0" "$T_DOWN"), up $(ms "$T0" "$T_UP")," \
  "replies flow again +$(ms "$T_UP0" "$T_RESUMED1"), kill $(ms "$T0" "$T_KILL")," \
  "recreate $(ms "$T0" "$T_RE0")..$(ms "$T0" "$T_RE"), replies flow again" \
  "+$(ms "$T_RE0" "$T_RESUMED2"), end $(ms "$T0" "$T_END"); wg0 ifindex $IFINDEX0 -> $IFINDEX1"
lab_log "ksd's blocked_total grew by $((B1 - B0)) during the link-down outage, by $((B3 - B2))" \
  "during the deleted outage"

# ---- leaks ---------------------------------------------------------------------------------------
CONTROL="ip and src host $CONTROL_IP4"
# Lab artifact, not a leak: once the client's wireguard-go is dead, the server's WireGuard
# packets to its closed port 51821 get ICMP port-unreachable from the client kernel. It
# quotes only the (encrypted) WireGuard flow.
WG_ICMP="ip and src host $LAB_CLIENT_IP4 and dst host $LAB_GW_IP4 and icmp and icmp[0] = 3\
 and icmp[1] = 3 and icmp[8] = 0x45 and icmp[17] = 17 and icmp[28:2] = $LAB_WG_SERVER_PORT\
 and icmp[30:2] = $LAB_WG_CLIENT_PORT"
# KNOWN BUG (product gap, reported): kernel-generated answers with the TUNNEL address as
# source leave through eth0. A packet that arrives through wg0 and matches no socket (a late
# echo reply for a socket that has just been closed, a retransmit for a connection that died
# with the old wg0) is answered by the kernel itself: ICMP port-unreachable or a TCP RST.
# That answer has no socket, hence no mark and no cgroup: policy routing does not steer it,
# no cgroup program sees it, and the main table sends it out of eth0, revealing the tunnel
# address and the protected program's peer. (Reproducible without ksd: send to a closed port
# of 10.99.0.2 through the tunnel from 203.0.113.10.)
KERNEL_REPLY="ip and src host $LAB_WG_CLIENT_IP4 and (icmp or (tcp and tcp[tcpflags] & tcp-rst != 0))"
n=$(leak_count "not ($CONTROL) and not ($WG_ICMP) and not ($KERNEL_REPLY)")
((n == 0)) || leak_show "not ($CONTROL) and not ($WG_ICMP) and not ($KERNEL_REPLY)" 20
assert_eq "$n" 0 "no frame of the protected programs left outside the tunnel, across both outages"
lab_log "exempt: $(leak_count "$WG_ICMP") ICMP port-unreachable for the dead wireguard-go's port"
n=$(leak_count "$KERNEL_REPLY")
if ((n > 0)); then
  leak_show "$KERNEL_REPLY" 5
  xfail "$n kernel-generated RST/ICMP from the tunnel address $LAB_WG_CLIENT_IP4 (answers to packets that came through the tunnel for closed sockets) left through eth0"
fi
assert_ge "$(leak_count "$CONTROL")" 410 \
  "positive control: the detector sees the unprotected probes of both outages"
assert_ge "$(capture_count "$LAB_WG_FLOW_FILTER")" 1000 "the protected traffic was in the WireGuard flow"

# ---- the senders fail fast during the outages ----------------------------------------------------
fast_fail_errors() { # fast_fail_errors JSON: ENETUNREACH + EPERM + ENODEV
  echo $(($(json_get "$1" /errors/ENETUNREACH 0) + $(json_get "$1" /errors/EPERM 0) +
    $(json_get "$1" /errors/ENODEV 0)))
}
other_errors() { # other_errors JSON: "KEY=N ..." for every other error key
  json_get "$1" /errors | tr -d '{}"' | tr ',' '\n' |
    awk -F: '$1 != "" && $1 != "ENETUNREACH" && $1 != "EPERM" && $1 != "ENODEV" { printf "%s=%s ", $1, $2 }'
}
assert_eq "$(json_get "$udp" /interrupted)" true "the UDP sender ran until stopped"
assert_gt "$(json_get "$udp" /replies)" 1000 "UDP sender: replies received"
# ~2 s of outage each at one datagram per ms: ~4000 refused sends if none stalls.
assert_ge "$(fast_fail_errors "$udp")" 2000 "UDP sender: sends refused at once during the outages"
assert_eq "$(other_errors "$udp")" "" "UDP sender: no other send error (no ETIMEDOUT)"
lab_log "UDP sender errors: $(json_get "$udp" /errors), recv_errors: $(json_get "$udp" /recv_errors)"
assert_gt "$(json_get "$tcp" /ok)" 50 "TCP loop: connections echoed"
# ~4 s of outage at one attempt per 20 ms: ~200 refused connects if none stalls.
assert_ge "$(fast_fail_errors "$tcp")" 100 "TCP loop: connects refused at once during the outages"
lab_log "TCP loop errors: $(json_get "$tcp" /errors), stages: $(json_get "$tcp" /failed_stage)," \
  "connect ms min/avg/max $(json_get "$tcp" /connect_ms_min)/$(json_get "$tcp" /connect_ms_avg)/$(json_get "$tcp" /connect_ms_max)"
# The loop is sequential: one connection in flight when each outage starts can time out
# (1 s), and after each outage up to ~2 attempts can wait out the new WireGuard handshake
# (which takes >1 s on a loaded machine). A stall instead of a refusal would make dozens.
slow=$(($(json_get "$tcp" /errors/ETIMEDOUT 0) + $(json_get "$tcp" /errors/EOF 0)))
assert_le "$slow" 6 "TCP loop: only connections caught in flight by an outage or a handshake time out"

# ---- traffic went through the tunnel before, between and after the outages ---------------------
for phase in "before:$T0:$T_DOWN" "after-link-up:$T_UP0:$T_KILL" "after-recreate:$T_RE0:$T_END"; do
  IFS=: read -r name from to <<<"$phase"
  u_in=$(tun_count "$from" "$to" "$UDP_IN")
  u_out=$(tun_count "$from" "$to" "$UDP_OUT")
  t_syn=$(tun_count "$from" "$to" "$TCP_SYN")
  t_echo=$(tun_count "$from" "$to" "$TCP_ECHO")
  lab_log "through the tunnel $name: UDP $u_in datagrams / $u_out replies, TCP $t_syn SYNs / $t_echo echoes"
  # after-recreate: the UDP sender's socket is the same long-lived one: it resumed too.
  assert_gt "$u_out" 0 "$name: protected UDP goes through the tunnel and is answered"
  assert_gt "$t_echo" 0 "$name: protected TCP goes through the tunnel and is answered"
done
first=$(tun_first "$T_UP0" "$UDP_OUT")
lab_log "first UDP reply after link up: +$(ms "$T_UP0" "${first:-$T_END}") ms;" \
  "first TCP echo: +$(ms "$T_UP0" "$(tun_first "$T_UP0" "$TCP_ECHO")") ms"
lab_log "after the re-creation started: first UDP reply +$(ms "$T_RE0" "$(tun_first "$T_RE0" "$UDP_OUT")") ms;" \
  "first TCP echo +$(ms "$T_RE0" "$(tun_first "$T_RE0" "$TCP_ECHO")") ms"
for phase in "link-down:$T_DOWN1:$T_UP0" "deleted:$T_KILL1:$T_RE0"; do
  IFS=: read -r name from to <<<"$phase"
  # From 50 ms after wg0 went down / away: packets already inside a wireguard-go may pass.
  assert_eq "$(tun_count "$(plus "$from" 0.05)" "$to" "ip and src host $LAB_WG_CLIENT_IP4")" 0 \
    "$name: nothing came through the tunnel while it was out (sanity)"
done
