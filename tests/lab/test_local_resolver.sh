#!/usr/bin/env bash
# Local resolving services: systemd-resolved's varlink socket (what glibc's nss-resolve
# talks to) and nscd resolve names for their callers from their own, unprotected sockets.
# A protected app that asks them would have its lookup sent out of the physical link by
# someone else. cgroup/connect_unix (Linux 6.7+) refuses those sockets to protected apps,
# so glibc falls back to the "dns" module: port 53 to the stub, which the inet hooks send
# through the tunnel to the profile's resolver.
#
# The "services" here are stand-ins that behave like resolved and nscd do for this
# question: on a connection they send a DNS query to the ISP's resolver from their own
# socket. They listen at the real paths inside a private mount namespace (a tmpfs on /run),
# so the machine's own /run is never touched.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

lab_up
lab_spawn_isp dns "$KS_PROBE" echo-server --udp 0.0.0.0:53 --tcp 0.0.0.0:53 \
  --ready-file "$LAB_DIR/dns.ready"
lab_wait_file "$LAB_DIR/dns.ready"
ks_up "$(printf '[profiles.default]\ntunnels = ["wg0"]\ndns = ["%s"]\n' "$LAB_WG_SERVER_IP4")"
ks_wait_tunnel_state up
# Linux 6.7+: cgroup/connect_unix judges the path the app passes. Before: resolver_guard
# (fmod_ret on security_unix_stream_connect) judges the name the service bound, so there a
# symlink the app points at the socket is refused too.
if ks_kernel_has_unix_hooks; then GUARD=connect_unix; else GUARD=resolver_guard; fi
if [[ $(ks_ctl status --json) != *"\"$GUARD\""* ]]; then
  fail "ksd did not attach $GUARD on Linux $(uname -r)"
fi
pass "ksd refuses the resolvers' sockets with $GUARD on Linux $(uname -r)"

# SERVICE: "dns:PATH" answers a connection after sending a query to the ISP resolver from
# its own socket (like resolved or nscd); "echo:PATH" is an ordinary local service.
SERVICE='
import os, socket, sys, threading
resolver = sys.argv[1]
def serve(kind, path):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path); srv.listen(16)
    while True:
        conn, _ = srv.accept()
        conn.recv(100)
        if kind == "dns":
            q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); q.settimeout(2)
            try:
                q.sendto(b"query", (resolver, 53)); q.recvfrom(100); conn.send(b"answered")
            except OSError:
                conn.send(b"failed")
        else:
            conn.send(b"echo")
        conn.close()
for spec in sys.argv[2:]:
    kind, path = spec.split(":", 1)
    threading.Thread(target=serve, args=(kind, path), daemon=True).start()
threading.Event().wait()
'
# CLIENT: one line per path ("CONNECTED <path> <reply>" or "ERR <path> <errno>"); a path
# "DIR//NAME" is connected to as the relative NAME from DIR. Then the glibc fallback: a
# query to the stub 127.0.0.53 ("STUB OK <answer source>" or "STUB ERR <errno>").
CLIENT='
import os, socket, sys
for spec in sys.argv[1:]:
    path = spec
    if "//" in spec:
        directory, path = spec.split("//", 1)
        os.chdir(directory)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(3)
        s.connect(path); s.send(b"example.org")
        print("CONNECTED", spec, s.recv(100).decode())
    except OSError as e:
        print("ERR", spec, e.errno)
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(b"query", ("127.0.0.53", 53)); _, src = s.recvfrom(100)
    print("STUB OK", src[0])
except OSError as e:
    print("STUB ERR", e.errno)
'
RESOLVED=/run/systemd/resolve/io.systemd.Resolve
NSCD=/run/nscd/socket
ORDINARY=/run/ks-ordinary.sock
ALIAS=/run/ks-alias.sock # a symlink to resolved's socket, made by the "app"
REFUSED=("$RESOLVED" "/var/run/systemd/resolve/io.systemd.Resolve"
  "/run/systemd/resolve//io.systemd.Resolve" "$NSCD")
if [[ $GUARD == resolver_guard ]]; then REFUSED+=("$ALIAS"); fi

# in_private_run MODE: starts the services in a private mount namespace (tmpfs on /run) of
# the client netns and runs CLIENT there, unprotected (MODE=plain) or through ksrun.
in_private_run() {
  lab_exec_client unshare --mount --propagation private bash -c '
    set -euo pipefail
    mount -t tmpfs -o mode=0755 ks-lab-run /run
    mkdir -p /run/systemd/resolve /run/nscd
    ln -s '"$RESOLVED"' '"$ALIAS"'
    python3 -c "$1" "$2" "dns:'"$RESOLVED"'" "dns:'"$NSCD"'" "echo:'"$ORDINARY"'" &
    service=$!
    trap "kill $service 2>/dev/null; wait" EXIT
    for _ in $(seq 200); do
      [[ -S '"$RESOLVED"' && -S '"$NSCD"' && -S '"$ORDINARY"' ]] && break
      sleep 0.02
    done
    shift 2
    if [[ $1 == plain ]]; then shift; python3 -c "$@"; else shift; "$@"; fi
  ' _ "$SERVICE" "$LAB_GW_IP4" "$@"
}

# Positive control: unprotected, every service answers and its query leaves in the clear.
capture_start control
out=$(in_private_run plain "$CLIENT" "${REFUSED[@]}" "$ORDINARY")
printf '%s\n' "$out" | sed 's/^/   /'
for path in "${REFUSED[@]}"; do
  [[ $out == *"CONNECTED $path answered"* ]] || fail "control: $path did not answer: $out"
done
capture_stop
assert_ge "$(leak_count "udp port 53")" 4 \
  "positive control: the services' queries for an unprotected app are seen on the physical link"

blocked_before=$(ks_status_field /blocked_total)
capture_start protected
out=$(in_private_run ksrun "$KS_KSRUN" --socket "$KS_SOCK" -- python3 -c "$CLIENT" \
  "${REFUSED[@]}" "$ORDINARY")
printf '%s\n' "$out" | sed 's/^/   /'
capture_stop
for path in "${REFUSED[@]}"; do
  [[ $out == *"ERR $path 1"* ]] || fail "protected: $path was not refused with EPERM: $out"
done
pass "connect() to resolved's and nscd's sockets is refused with EPERM (absolute, /var/run, relative$([[ $GUARD == resolver_guard ]] && echo ", symlink"))"
[[ $out == *"CONNECTED $ORDINARY echo"* ]] || fail "protected: the ordinary socket failed: $out"
pass "other unix sockets keep working for the protected app"
[[ $out == *"STUB OK 127.0.0.53"* ]] || fail "protected: the fallback to the stub failed: $out"
pass "the fallback lookup through the stub is answered (redirected into the tunnel)"
assert_no_leak "no DNS of the protected app leaves the physical link, not even by proxy"
assert_ge "$(capture_count "$LAB_WG_FLOW_FILTER")" 1 "the fallback query travelled inside the tunnel"
assert_ge "$(($(ks_status_field /blocked_total) - blocked_before))" 4 \
  "the refused connects are counted as blocked"
