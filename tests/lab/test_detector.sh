#!/usr/bin/env bash
# shellcheck disable=SC2119  # lab functions take optional arguments, not the script's
# Positive controls: proves the leak lab and its leak detector before any kill-switch
# scenario relies on them.
#   (a) unprotected UDP/TCP probes over the default route (IPv4 and IPv6) ARE counted as
#       leaks, one leak per datagram, and nothing else is (ARP/ND present but exempt);
#   (b) probes pinned to wg0 reach the echo server through the tunnel and leak nothing,
#       while the capture demonstrably saw their WireGuard packets;
#   (c) SIGKILLing the client's wireguard-go deletes wg0; the client kernel's ICMP port
#       unreachable for the encrypted flow is exempt, the same ICMP for anything else leaks;
#       re-creating wg0 gives a new ifindex and a working tunnel; lab_down removes everything
#       and is idempotent.
# Cleanup on failure is covered by test_cleanup.sh (KS_LAB_FAIL_AT / KS_LAB_HANG_AT).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=20  # datagrams per UDP probe
T=5   # TCP attempts per probe

lab_up --tunnel-ipv6
pass "lab up in ${LAB_UP_MS} ms"

# ---- (a) unprotected traffic leaks, and the detector counts it -------------------------------
# Forget the neighbours so ARP and neighbour discovery happen inside the capture window: the
# exemptions must be exercised, not just present.
lab_exec_client ip neigh flush dev "$LAB_CLIENT_PHYS"
capture_start unprotected
lab_checkpoint capture-running
# A probe still running when the checkpoint fires proves lab_down kills strays.
if [[ -n ${KS_LAB_FAIL_AT:-}${KS_LAB_HANG_AT:-} ]]; then
  lab_spawn_client stray-probe "$KS_PROBE" udp --dst "$LAB_TARGET4" --duration 60 --interval-ms 100
fi
lab_checkpoint probe-running
u4=$(lab_probe_client udp --dst "$LAB_TARGET4" --count "$N" --interval-ms 2 --expect-reply)
u6=$(lab_probe_client udp --dst "$LAB_TARGET6" --count "$N" --interval-ms 2 --expect-reply)
t4=$(lab_probe_client tcp --dst "$LAB_TARGET4" --count "$T" --interval-ms 2)
t6=$(lab_probe_client tcp --dst "$LAB_TARGET6" --count "$T" --interval-ms 2)
capture_stop

assert_eq "$(json_get "$u4" /sent)" "$N" "unprotected IPv4 UDP: all datagrams sent"
assert_eq "$(json_get "$u4" /replies)" "$N" "unprotected IPv4 UDP: all echoed (the path works)"
assert_eq "$(json_get "$u6" /sent)" "$N" "unprotected IPv6 UDP: all datagrams sent"
assert_eq "$(json_get "$u6" /replies)" "$N" "unprotected IPv6 UDP: all echoed"
assert_eq "$(json_get "$t4" /ok)" "$T" "unprotected IPv4 TCP: all attempts echoed"
assert_eq "$(json_get "$t6" /ok)" "$T" "unprotected IPv6 TCP: all attempts echoed"

leak_u4=$(leak_count "ip and udp and dst host $LAB_NET_IP4 and dst port $LAB_ECHO_PORT")
leak_u6=$(leak_count "ip6 and udp and dst host $LAB_NET_IP6 and dst port $LAB_ECHO_PORT")
assert_eq "$leak_u4" "$N" "detector: each unprotected IPv4 datagram is one leak"
assert_eq "$leak_u6" "$N" "detector: each unprotected IPv6 datagram is one leak"
syn4=$(leak_count "ip and tcp and dst port $LAB_ECHO_PORT and tcp[tcpflags] & tcp-syn != 0")
syn6=$(leak_count "ip6 and ip6[6] = 6 and dst port $LAB_ECHO_PORT and ip6[53] & 2 != 0")
assert_eq "$syn4" "$T" "detector: each unprotected IPv4 TCP attempt is one leaked SYN"
assert_eq "$syn6" "$T" "detector: each unprotected IPv6 TCP attempt is one leaked SYN"
leak_t4=$(leak_count "ip and tcp and dst port $LAB_ECHO_PORT")
leak_t6=$(leak_count "ip6 and tcp and dst port $LAB_ECHO_PORT")
assert_between "$leak_t4" $((3 * T)) $((8 * T)) "detector: IPv4 TCP leak frames ~ 6 per attempt"
assert_between "$leak_t6" $((3 * T)) $((8 * T)) "detector: IPv6 TCP leak frames ~ 6 per attempt"
total=$(leak_count)
assert_eq "$total" $((leak_u4 + leak_u6 + leak_t4 + leak_t6)) \
  "detector: every leak is a probe frame (no false positives)"
assert_gt "$(capture_count arp)" 0 "ARP was on the link and is exempt"
assert_gt "$(capture_count "$LAB_ND_FILTER")" 0 "neighbour discovery was on the link and is exempt"

# ---- (b) through the tunnel: replies, and zero leaks ------------------------------------------
capture_start tunnel
v4=$(lab_probe_client udp --dst "$LAB_TARGET4" --bind-dev "$LAB_TUNNEL_IF" --count "$N" \
  --interval-ms 2 --expect-reply)
v6=$(lab_probe_client udp --dst "$LAB_TARGET6" --bind-dev "$LAB_TUNNEL_IF" --count "$N" \
  --interval-ms 2 --expect-reply)
w4=$(lab_probe_client tcp --dst "$LAB_TARGET4" --bind-dev "$LAB_TUNNEL_IF" --count "$T" --interval-ms 2)
w6=$(lab_probe_client tcp --dst "$LAB_TARGET6" --bind-dev "$LAB_TUNNEL_IF" --count "$T" --interval-ms 2)
capture_stop

assert_eq "$(json_get "$v4" /replies)" "$N" "tunnel IPv4 UDP: all datagrams echoed through wg0"
assert_eq "$(json_get "$v6" /replies)" "$N" "tunnel IPv6 UDP: all datagrams echoed through wg0"
assert_eq "$(json_get "$w4" /ok)" "$T" "tunnel IPv4 TCP: all attempts echoed through wg0"
assert_eq "$(json_get "$w6" /ok)" "$T" "tunnel IPv6 TCP: all attempts echoed through wg0"
assert_no_leak "detector: traffic through the tunnel is not a leak"
assert_ge "$(capture_count "$LAB_WG_FLOW_FILTER")" $((2 * N + 2 * 3 * T)) \
  "the capture saw the tunnel's WireGuard packets on the link"

# ---- (c) a crashed VPN client: wg0 disappears; re-creation; cleanup -----------------------------
old_idx=$(tunnel_ifindex)
tunnel_kill
assert_fails "wg0 is gone after SIGKILL of the client wireguard-go" tunnel_exists
ct=$(lab_probe_client connect-time --udp --dst "$LAB_TARGET4" --bind-dev "$LAB_TUNNEL_IF")
assert_eq "$(json_get "$ct" /errno)" ENODEV "a socket pinned to the dead wg0 fails with ENODEV"
# With wireguard-go dead, the VPN server's WireGuard packets reach the closed port 51821 and
# the client kernel answers with ICMP port unreachable: exempt (LAB_LEAK_EXEMPT, class 5), and
# only that. The same ICMP for other datagrams from the VPN server's address (to a closed
# port; to port 51821 from another port) leaks.
icmp_unreach_sent() { # the client's Icmp OutDestUnreachs (/proc/net/snmp: names, then values)
  lab_exec_client awk '$1 == "Icmp:" && !c { for (i = 2; i <= NF; i++) if ($i == "OutDestUnreachs") c = i; next }
    $1 == "Icmp:" { print $c; exit }' /proc/net/snmp
}
icmp_unreach_since() { (($(icmp_unreach_sent) >= $1 + $2)); }
u0=$(icmp_unreach_sent)
capture_start wg-unreach
lab_probe_isp udp --dst "$LAB_WG_CLIENT_IP4:4444" --count 2 --interval-ms 1 >/dev/null
_lab_wait_until 2 icmp_unreach_since "$u0" 1 || fail "no ICMP port unreachable for the WireGuard flow"
lab_probe_isp udp --src "$LAB_GW_IP4" --dst "$LAB_CLIENT_IP4:4444" --count 1 >/dev/null
lab_probe_isp udp --src "$LAB_GW_IP4:40000" --dst "$LAB_CLIENT_IP4:$LAB_WG_CLIENT_PORT" --count 1 >/dev/null
_lab_wait_until 2 icmp_unreach_since "$u0" 3 || fail "the client kernel sent no ICMP port unreachable"
capture_stop
lab_log "client ICMP destination unreachable sent: $(($(icmp_unreach_sent) - u0))"
assert_ge "$(capture_count "$LAB_WG_UNREACH_FILTER")" 1 \
  "ICMP port unreachable for the WireGuard flow was on the link and is exempt"
assert_eq "$(leak_count "icmp and icmp[0] = 3 and icmp[1] = 3")" 2 \
  "detector: ICMP port unreachable quoting any other datagram is a leak"
assert_eq "$(leak_count)" 2 "detector: ... and nothing else leaked"
tunnel_recreate >/dev/null  # (not in $(...): the new wireguard-go stays this script's child)
new_idx=$(tunnel_ifindex)
assert_ne "$new_idx" "$old_idx" "re-created wg0 has a new ifindex (was $old_idx)"
assert_ok "the re-created tunnel carries traffic" tunnel_check 5

lab_dir=$LAB_DIR
namespaces=("$LAB_NS_C" "$LAB_NS_I")
mapfile -t spawned <"$LAB_DIR/spawned"
lab_down
for ns in "${namespaces[@]}"; do
  assert_fails "lab_down deleted netns $ns" test -e "/run/netns/$ns"
done
assert_fails "lab_down removed $lab_dir" test -e "$lab_dir"
for entry in "${spawned[@]}"; do
  read -r pid st name <<<"$entry"
  assert_fails "lab_down ended $name ($pid)" _lab_alive "$pid" "$st"
done
assert_ok "lab_down is idempotent" lab_down
