#!/usr/bin/env bash
# Escapes that do not go through the protected app's own sockets:
#   1. Another network namespace with its own way out, whose interface has the tunnel's
#      ifindex number: a protected root process enters it (nsenter; ksrun keeps
#      CAP_SYS_ADMIN for root) and sends. Sockets made there are "foreign" (their netns is
#      not ksd's): loopback only, whatever the ifindex says. Positive control: the same probe
#      unprotected in that namespace is answered and seen on its link.
#   2. SCM_RIGHTS. Protection belongs to the socket (classified when it is created, by the
#      creator's cgroup), not to the process that uses it:
#      - a protected app's socket handed to an unprotected process still goes only through
#        the tunnel;
#      - a socket an UNPROTECTED process creates and hands to a protected app is not
#        protected: this is asserted here as the documented limit (docs/threat-model.md).
#        It takes a cooperating unprotected process, which could as well send itself.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

lab_up
ks_up
ks_wait_tunnel_state up

# UDP: one datagram to HOST PORT; "REPLY", or "ERR <errno>" / "ERR timeout".
UDP='
import socket, sys
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    s.sendto(b"probe", (sys.argv[1], int(sys.argv[2]))); s.recvfrom(100); print("REPLY")
except socket.timeout:
    print("ERR timeout")
except OSError as e:
    print("ERR", e.errno)
'
TCP='
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1); print("CONNECTED")
except socket.timeout:
    print("ERR timeout")
except OSError as e:
    print("ERR", e.errno)
'

# ---- 1. a side network namespace whose interface has the tunnel's ifindex --------------------
tidx=$(tunnel_ifindex)
side=$(lab_side_netns_up "$tidx")
assert_eq "$(ip -n "$side" -o link show "$LAB_SIDE_IF" | cut -d: -f1)" "$tidx" \
  "the side namespace's $LAB_SIDE_IF has the tunnel's ifindex"

capture_start side-control "$LAB_SIDE_ISP_IF"
udp=$(nsenter --net="/run/netns/$side" python3 -c "$UDP" "$LAB_NET_IP4" "$LAB_ECHO_PORT")
tcp=$(nsenter --net="/run/netns/$side" python3 -c "$TCP" "$LAB_NET_IP4" "$LAB_ECHO_PORT")
capture_stop
[[ $udp == REPLY && $tcp == CONNECTED ]] || fail "side control: udp=$udp tcp=$tcp"
assert_ge "$(capture_count "dst host $LAB_NET_IP4")" 2 \
  "positive control: unprotected probes from the side namespace are answered and seen on its link"

capture_start side-protected "$LAB_SIDE_ISP_IF"
udp=$(ks_run_client nsenter --net="/run/netns/$side" python3 -c "$UDP" "$LAB_NET_IP4" "$LAB_ECHO_PORT")
tcp=$(ks_run_client nsenter --net="/run/netns/$side" python3 -c "$TCP" "$LAB_NET_IP4" "$LAB_ECHO_PORT")
cg=$(ks_run_client nsenter --net="/run/netns/$side" cat /proc/self/cgroup)
capture_stop
[[ $cg == *"/$KS_SLICE/"* ]] || fail "nsenter: the process left its protected cgroup: $cg"
assert_eq "$udp" "ERR 101" "protected UDP from the side namespace fails at once (ENETUNREACH)"
assert_eq "$tcp" "ERR 101" "protected TCP connect from the side namespace fails at once (ENETUNREACH)"
assert_eq "$(capture_count "not arp")" 0 "nothing of the protected app on the side namespace's link"

# ---- 2. SCM_RIGHTS ------------------------------------------------------------------------------
# GIVER PATH: hands a fresh UDP socket to every client that connects to the unix socket PATH.
GIVER='
import socket, sys
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); srv.bind(sys.argv[1]); srv.listen(4)
while True:
    conn, _ = srv.accept()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    socket.send_fds(conn, [b"fd"], [udp.fileno()])
    conn.close(); udp.close()
'
# TAKER PATH HOST PORT: receives a socket from PATH and sends one datagram through it.
TAKER='
import socket, sys
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(sys.argv[1])
_, fds, _, _ = socket.recv_fds(c, 10, 1)
s = socket.socket(fileno=fds[0]); s.settimeout(1)
try:
    s.sendto(b"handed", (sys.argv[2], int(sys.argv[3]))); s.recvfrom(100); print("REPLY")
except socket.timeout:
    print("ERR timeout")
except OSError as e:
    print("ERR", e.errno)
'
out_sock=$LAB_DIR/protected-giver.sock
in_sock=$LAB_DIR/unprotected-giver.sock
ks_spawn_protected protected-giver python3 -c "$GIVER" "$out_sock"
lab_spawn_client unprotected-giver python3 -c "$GIVER" "$in_sock"
lab_wait_file "$out_sock"
lab_wait_file "$in_sock"

capture_start scm-out
out=$(lab_exec_client python3 -c "$TAKER" "$out_sock" "$LAB_NET_IP4" "$LAB_ECHO_PORT")
capture_stop
assert_eq "$out" REPLY "a protected socket used by an unprotected process is answered"
assert_eq "$(leak_count)" 0 "... and its datagram went through the tunnel, not the physical link"
assert_ge "$(capture_count "$LAB_WG_FLOW_FILTER")" 1 "... (seen as tunnel traffic)"

capture_start scm-in
out=$(ks_run_client python3 -c "$TAKER" "$in_sock" "$LAB_NET_IP4" "$LAB_ECHO_PORT")
capture_stop
assert_eq "$out" REPLY "documented limit: an unprotected socket handed to a protected app sends"
assert_ge "$(leak_count "udp and dst port $LAB_ECHO_PORT")" 1 \
  "documented limit: ... outside the tunnel (the socket belongs to its unprotected creator)"
