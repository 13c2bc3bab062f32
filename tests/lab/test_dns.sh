#!/usr/bin/env bash
# DNS: a protected app's queries (UDP and TCP port 53) go only to its profile's resolver,
# through the tunnel, whatever server it addressed — the ISP's resolver, the local stub
# 127.0.0.53, a hard-coded public one — and the answers carry the address it asked.
# Without a resolver in the profile, DNS is refused at once. DNS-over-TLS (853) is not
# redirected: like any other port it goes through the tunnel, or fails at once without one.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

lab_up
# A "resolver" on every ISP address (echo on port 53, and DNS-over-TLS port 853): 198.51.100.1 is the ISP's own,
# 10.99.0.1 the one behind the tunnel, 203.0.113.10 a "public" one.
lab_spawn_isp dns "$KS_PROBE" echo-server --udp 0.0.0.0:53 --tcp 0.0.0.0:53 --tcp 0.0.0.0:853 \
  --ready-file "$LAB_DIR/dns.ready"
lab_wait_file "$LAB_DIR/dns.ready"
ks_up "$(printf '[profiles.default]\ntunnels = ["wg0"]\ndns = ["%s"]\n[profiles.nodns]\ntunnels = ["wg0"]\n' "$LAB_WG_SERVER_IP4")"
ks_wait_tunnel_state up

# One query per server and transport; prints "OK <server> <transport> <answer source>"
# or "ERR <server> <transport> <errno>".
QUERIES='
import socket, sys
for host in sys.argv[1:]:
    dst = (host, 53)
    for kind in ("udp-sendto", "udp-connected", "tcp"):
        try:
            if kind == "udp-sendto":
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
                s.sendto(b"query", dst); _, src = s.recvfrom(100)
            elif kind == "udp-connected":
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
                s.connect(dst); s.send(b"query"); s.recv(100); src = s.getpeername()
            else:
                s = socket.create_connection(dst, timeout=2); s.send(b"query"); s.recv(100)
                src = s.getpeername()
            print("OK", host, kind, src[0])
        except OSError as e:
            print("ERR", host, kind, e.errno)
'
SERVERS=("$LAB_GW_IP4" 127.0.0.53 "$LAB_NET_IP4")

# Positive control: unprotected, the queries to the ISP and public resolvers go out in
# the clear (the stub has no listener in the lab and simply fails).
capture_start control
lab_exec_client python3 -c "$QUERIES" "$LAB_GW_IP4" "$LAB_NET_IP4" >/dev/null
capture_stop
assert_ge "$(leak_count "port 53")" 6 "positive control: unprotected DNS is seen on the physical link"

capture_start protected
out=$(ks_run_client python3 -c "$QUERIES" "${SERVERS[@]}")
printf '%s\n' "$out" | sed 's/^/   /'
for host in "${SERVERS[@]}"; do
  for kind in udp-sendto udp-connected tcp; do
    [[ $out == *"OK $host $kind $host"* ]] ||
      fail "protected $kind query to $host did not get an answer from $host: $out"
  done
done
pass "every protected query was answered, from the address it asked"
# Tunnel Vision against the resolver: a route for the ISP resolver's /32 via eth0 changes
# nothing for protected DNS.
lab_exec_client ip route add "$LAB_NET_IP4/32" via "$LAB_GW_IP4" dev eth0
out=$(ks_run_client python3 -c "$QUERIES" "$LAB_NET_IP4")
[[ $(grep -c "^OK $LAB_NET_IP4 .* $LAB_NET_IP4\$" <<<"$out") == 3 ]] || fail "with a /32 route: $out"
pass "with a TunnelVision route on the resolver's address, DNS still goes through the tunnel"
capture_stop
assert_eq "$(leak_count)" 0 "no DNS (and nothing else) of the protected app on the physical link"
assert_ge "$(capture_count "$LAB_WG_FLOW_FILTER")" 12 "the queries travelled inside the tunnel"

# No resolver in the profile: DNS is refused at once instead of going anywhere.
out=$(ks_run_client --profile nodns python3 -c "$QUERIES" "$LAB_GW_IP4")
[[ $(grep -c "^ERR $LAB_GW_IP4 .* 101\$" <<<"$out") == 3 ]] || fail "profile without dns: $out"
pass "a profile without dns refuses DNS with ENETUNREACH"

# DNS-over-TLS to a hard-coded public server (port 853): ordinary traffic, so it follows the
# tunnel rule. Positive control first: unprotected, it is seen on the physical link.
DOT='
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], 853), timeout=2); s.send(b"tls"); s.recv(100)
    print("OK", s.getpeername()[0])
except OSError as e:
    print("ERR", e.errno)
'
capture_start dot-control
out=$(lab_exec_client python3 -c "$DOT" "$LAB_NET_IP4")
capture_stop
[[ $out == "OK $LAB_NET_IP4" ]] || fail "DoT control: $out"
assert_ge "$(leak_count "tcp port 853")" 1 "positive control: unprotected DoT is seen on the physical link"
capture_start dot
out=$(ks_run_client python3 -c "$DOT" "$LAB_NET_IP4")
[[ $out == "OK $LAB_NET_IP4" ]] || fail "protected DoT with the tunnel up: $out"
pass "protected DoT is answered through the tunnel"
tunnel_down
ks_wait_tunnel_state down
out=$(ks_run_client python3 -c "$DOT" "$LAB_NET_IP4")
[[ $out == "ERR 101" ]] || fail "protected DoT with the tunnel down: $out"
pass "protected DoT with the tunnel down fails at once with ENETUNREACH"
capture_stop
assert_eq "$(leak_count)" 0 "no DoT (and nothing else) of the protected app on the physical link"
assert_ge "$(capture_count "$LAB_WG_FLOW_FILTER")" 1 "the DoT connection travelled inside the tunnel"
