#!/usr/bin/env bash
# From a fresh install to a protected app, DNS included, with exactly the README's commands
# ("Use it with your VPN"), on a real Debian 12 systemd (the test container) whose network
# is the lab's client namespace with a working WireGuard tunnel (wg0) — a user with a
# working VPN:
#   dpkg -i killswitch_*.deb                  (the package scripts/package.sh builds)
#   ksctl setup; ksctl setup --write          (finds wg0 and, in /etc/wireguard/wg0.conf,
#                                              the VPN's resolver; replaces the shipped example)
#   systemctl enable --now killswitch-early.service ksd.service
#   ksrun APP                                 (as an unprivileged user)
#   ksrun qbittorrent-nox                     (the README's example, as that user)
#   systemctl start killswitch-metrics.socket (the optional metrics endpoint)
# The app resolves through the ISP's resolver address (what /etc/resolv.conf names) and
# connects out: its query is answered by the VPN's resolver through the tunnel and its
# connection goes through the tunnel, with nothing on the physical link; the same app
# unprotected leaks both (the positive control). Debian's qBittorrent (DHT, Local Service
# Discovery, UPnP on) runs in the protected tree, its name lookups go through the tunnel to
# the VPN's resolver and nothing of it reaches the physical link; unprotected it leaks
# (control). Then the VPN client crashes: the protected app's query fails at once, and
# nothing leaks.
set -euo pipefail
HERE=$(dirname "${BASH_SOURCE[0]}")
source "$HERE/../lab/lib.sh"
source "$HERE/container.sh"

CT=ks-qs$$
CT=${CT:0:32}
DEB_DIR=$KS_SOURCE_DIR/build-deb
lab_up
ct_rootfs
ct_on_exit() {
  ct_stop "$CT" || true # before lab_down: the container's processes live in the lab netns
  lab_down || true
}
ct_cleanup_on_exit "$CT"

# The package: systemd_package (which runs before) built it from this build's sources; it
# is built again when it is older than the build or missing.
deb=$(ls -t "$DEB_DIR"/killswitch_*_amd64.deb 2>/dev/null | head -1 || true)
if [[ -z $deb || $deb -ot $KS_BUILD_DIR/ksctl ]]; then
  deb=$("$KS_SOURCE_DIR/scripts/package.sh" "$DEB_DIR" | tail -1)
fi
[[ -f $deb ]] || fail "no package to install"

# The VPN's resolver, behind the tunnel (an echo server on port 53: the answer's source
# address tells who answered), and a TCP echo server on the internet.
lab_spawn_isp dns "$KS_PROBE" echo-server --udp 0.0.0.0:53 --ready-file "$LAB_DIR/dns.ready"
lab_wait_file "$LAB_DIR/dns.ready"

CT_NETNS=/run/netns/$LAB_NS_C ct_start "$CT" --bind-ro="$(dirname "$deb")":/deb
in_ct() { ct_exec "$CT" "$@"; }
as_user() { ct_exec "$CT" --uid=nobody --gid=nogroup "$@"; }

# What the user's machine has: the VPN up (wg0, from the lab), its wg-quick file with the
# resolver, and the LAN's resolver in /etc/resolv.conf.
in_ct sh -c 'mkdir -m 700 -p /etc/wireguard &&
  printf "[Interface]\nAddress = %s/32\nDNS = %s\n\n[Peer]\nEndpoint = %s:51820\n" "$1" "$2" "$3" \
    >/etc/wireguard/wg0.conf && chmod 600 /etc/wireguard/wg0.conf &&
  echo "nameserver $3" >/etc/resolv.conf' sh "$LAB_WG_CLIENT_IP4" "$LAB_WG_SERVER_IP4" "$LAB_GW_IP4"

# The app: one DNS query to the resolver /etc/resolv.conf names, then a TCP connection out.
APP='
import socket
server = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
try:
    s.sendto(b"query", (server, 53)); _, src = s.recvfrom(100); print("dns", "OK", src[0])
except OSError as e:
    print("dns", "ERR", e.errno)
try:
    c = socket.create_connection(("'$LAB_NET_IP4'", '$LAB_ECHO_PORT'), timeout=3)
    c.sendall(b"hello"); c.recv(100); print("tcp", "OK")
except OSError as e:
    print("tcp", "ERR", e.errno)
'

# ---- positive control: the app unprotected leaks its DNS and its connection ----------------
capture_start control
out=$(as_user python3 -c "$APP")
capture_stop
assert_eq "$out" $'dns OK '"$LAB_GW_IP4"$'\ntcp OK' "unprotected, the app resolves and connects"
assert_ge "$(leak_count "udp port 53")" 1 "positive control: its DNS query is on the physical link"
assert_ge "$(leak_count "tcp")" 1 "positive control: its connection is on the physical link"

# ---- the README's commands ------------------------------------------------------------------
in_ct dpkg -i "/deb/$(basename "$deb")" >/dev/null
pass "dpkg -i installed the package"
out=$(in_ct ksctl setup)
[[ $out == *"+ wg0:"* && $out == *"dns:   $LAB_WG_SERVER_IP4: DNS = in /etc/wireguard/wg0.conf"* ]] ||
  fail "ksctl setup did not find wg0 and its resolver: $out"
pass "ksctl setup finds the tunnel and the VPN's resolver"
out=$(in_ct ksctl setup --write)
[[ $out == *"Wrote /etc/killswitch/config.toml (the old one is kept as /etc/killswitch/config.toml.bak-"* ]] ||
  fail "ksctl setup --write: $out"
pass "ksctl setup --write replaces the shipped example (a copy kept)"
in_ct systemctl enable --now killswitch-early.service ksd.service 2>/dev/null
state() { json_get "$(in_ct ksctl status --json)" /profiles/default/tunnels/0/state; }
_up() { [[ $(state 2>/dev/null) == up ]]; }
lab_poll_until 10 _up || fail "ksd does not see wg0 up: $(in_ct ksctl status || true)"
pass "ksd runs (systemctl enable --now) and sees wg0 up"

capture_start protected
out=$(as_user ksrun python3 -c "$APP")
assert_eq "$out" $'dns OK '"$LAB_GW_IP4"$'\ntcp OK' \
  "protected (ksrun as a user), the app resolves and connects"
capture_stop
assert_eq "$(leak_count)" 0 "nothing of the protected app on the physical link"
assert_ge "$(capture_count "$LAB_WG_FLOW_FILTER")" 2 "its query and connection went through the tunnel"

# ---- the README's example: qBittorrent, started through ksrun by the user ------------------
# Its profile: legal notice accepted (it would ask on a terminal), DHT, LSD, PeX and UPnP on
# (its defaults, written out), the WebUI on loopback. It runs QBT_S seconds each way: long
# enough for its DHT bootstrap lookups, LSD announces and UPnP discovery.
QBT_S=8
in_ct sh -c 'install -d -o nobody -g nogroup /tmp/qbt /tmp/qbt/qBittorrent /tmp/qbt/qBittorrent/config &&
  printf "[LegalNotice]\nAccepted=true\n\n[BitTorrent]\nSession\\DHTEnabled=true\nSession\\LSDEnabled=true\nSession\\PeXEnabled=true\n\n[Preferences]\nConnection\\UPnP=true\nWebUI\\Address=127.0.0.1\nWebUI\\Port=8181\n" \
    >/tmp/qbt/qBittorrent/config/qBittorrent.conf && chown -R nobody:nogroup /tmp/qbt'
# qbt [ksrun]: qBittorrent as the user for QBT_S seconds; prints the cgroup it ran in.
QBT='"$@" env HOME=/tmp/qbt qbittorrent-nox --profile=/tmp/qbt >/tmp/qbt/out.log 2>&1 &
  pid=$!; sleep 2; cat /proc/$pid/cgroup 2>/dev/null | sed -n "s/^0:://p"; sleep "$QBT_WAIT"
  kill $pid; wait $pid || true'
qbt() { as_user env QBT_WAIT=$((QBT_S - 2)) sh -c "$QBT" sh "$@"; }

# Protected first: the kernel repeats an IGMP/MLD leave report for the groups the
# unprotected one joined up to a second after it ended, which would land in a capture
# started after it.
capture_start qbt_protected
server_capture_start
out=$(qbt ksrun)
server_capture_stop
capture_stop
[[ $out == /killswitch.slice/killswitch-default.slice/* ]] ||
  fail "ksrun qbittorrent-nox did not run in the protected tree (cgroup: $out); its log: $(in_ct cat /tmp/qbt/out.log | tail -5)"
pass "ksrun qbittorrent-nox runs in the protected tree ($out)"
assert_no_leak "nothing of the protected qBittorrent on the physical link"
assert_ge "$(tcpdump -r "$LAB_SERVER_PCAP" -n "udp and dst host $LAB_WG_SERVER_IP4 and dst port 53" 2>/dev/null | wc -l)" 1 \
  "its name lookups went through the tunnel to the VPN's resolver"

capture_start qbt_control
out=$(qbt)
capture_stop
assert_ge "$(leak_count)" 1 "positive control: qBittorrent unprotected puts traffic on the physical link"
# Its leave reports repeat for up to a second (see above), before the next capture starts.
sleep 2

# ---- the optional metrics endpoint, as installed (its sandboxed unit, for real) -------------
in_ct systemctl start killswitch-metrics.socket
SCRAPE='
import socket
s = socket.create_connection(("127.0.0.1", 9848), timeout=5)
s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.decode())
'
out=$(in_ct python3 -c "$SCRAPE")
[[ $out == "HTTP/1.0 200"* && $out == *$'\nkillswitch_daemon_up 1\n'* && $out == *'killswitch_tunnel_up{profile="default",tunnel="wg0"} 1'* ]] ||
  fail "killswitch-metrics.socket does not serve the metrics: $(head -c 600 <<<"$out")"
pass "killswitch-metrics.socket: its sandboxed ksctl metrics --http serves ksd's metrics"

# ---- the VPN client crashes: refused at once, nothing leaks ---------------------------------
capture_start crash
tunnel_kill
_down() { [[ $(state 2>/dev/null) == missing ]]; }
lab_poll_until 10 _down || fail "ksd does not see wg0 gone: $(state)"
out=$(as_user ksrun python3 -c "$APP")
assert_eq "$out" $'dns ERR 101\ntcp ERR 101' "tunnel gone: the protected app's DNS and connect fail at once (ENETUNREACH)"
capture_stop
assert_eq "$(leak_count)" 0 "nothing leaks with the tunnel gone"
