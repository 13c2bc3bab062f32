#!/usr/bin/env bash
# shellcheck disable=SC2119  # lab functions take optional arguments, not the script's
# The default lab (IPv4-only tunnel) and the tunnel helpers that kill-switch scenarios use:
#   - IPv4 pinned to wg0 goes through the tunnel; IPv6 pinned to wg0 fails at once with
#     ENETUNREACH (no IPv6 route via an IPv4-only tunnel) and leaks nothing;
#   - tunnel_down: a socket pinned to wg0 gets an error and leaks nothing; tunnel_up restores
#     the tunnel with the same ifindex.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

lab_up
pass "lab (IPv4-only tunnel) up in ${LAB_UP_MS} ms"
idx=$(tunnel_ifindex)

capture_start v4only
ct6=$(lab_probe_client connect-time --udp --dst "$LAB_TARGET6" --bind-dev "$LAB_TUNNEL_IF")
u6=$(lab_probe_client udp --dst "$LAB_TARGET6" --bind-dev "$LAB_TUNNEL_IF" --count 5 --interval-ms 1)
u4=$(lab_probe_client udp --dst "$LAB_TARGET4" --bind-dev "$LAB_TUNNEL_IF" --count 5 \
  --interval-ms 1 --expect-reply)
capture_stop
assert_eq "$(json_get "$ct6" /errno)" ENETUNREACH "IPv6 pinned to an IPv4-only wg0: ENETUNREACH"
assert_le "$(json_get "$ct6" /ms)" 50 "IPv6 pinned to an IPv4-only wg0 fails fast (ms)"
assert_eq "$(json_get "$u6" /errors/ENETUNREACH 0)" 5 "every IPv6 sendto pinned to wg0 fails"
assert_eq "$(json_get "$u4" /replies)" 5 "IPv4 pinned to wg0 goes through the tunnel"
assert_no_leak "no leak from sockets pinned to an IPv4-only wg0"

tunnel_down
capture_start down
d4=$(lab_probe_client udp --dst "$LAB_TARGET4" --bind-dev "$LAB_TUNNEL_IF" --count 5 --interval-ms 1)
dt=$(lab_probe_client connect-time --dst "$LAB_TARGET4" --bind-dev "$LAB_TUNNEL_IF")
capture_stop
assert_eq "$(json_get "$d4" /sent)" 0 "wg0 down: no datagram pinned to wg0 is sent"
lab_log "wg0 down: udp errors $(json_get "$d4" /errors), tcp connect $(json_get "$dt" /errno)"
assert_ne "$(json_get "$dt" /errno)" 0 "wg0 down: a TCP connect pinned to wg0 fails"
assert_no_leak "wg0 down: nothing pinned to wg0 leaks"

tunnel_up
assert_ok "tunnel_up: the tunnel carries traffic again" tunnel_check 3
assert_eq "$(tunnel_ifindex)" "$idx" "tunnel_up keeps the ifindex"
