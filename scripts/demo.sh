#!/usr/bin/env bash
# Killswitch demo: installs what is needed, builds, and shows the kill switch at work in a
# self-contained lab (two network namespaces, a real WireGuard tunnel run by wireguard-go,
# a packet capture on the "physical" link). Nothing outside the lab is touched, and the
# lab is removed at the end. Run as root on Debian 12:  sudo ./scripts/demo.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export KS_BUILD_DIR=${KS_BUILD_DIR:-$root/build}

if [[ ${1:-} != --no-build ]]; then
  "$root/scripts/install-deps.sh"
  cmake -S "$root" -B "$KS_BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$KS_BUILD_DIR" -j"$(nproc)" >/dev/null
fi

source "$root/tests/lab/lib.sh"
source "$root/tests/lab/killswitch.sh"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '   %s\n' "$@"; }
summary() { # NAME JSON
  local sent replies errors
  sent=$(json_get "$2" /sent 0)
  replies=$(json_get "$2" /replies 0)
  errors=$(json_get "$2" /errors '{}')
  printf '   %-12s sent %5s  answered %5s  errors %s\n' "$1" "$sent" "$replies" "$errors"
}

say "Building the lab: client and ISP network namespaces, WireGuard tunnel wg0"
lab_up
show "client eth0 $LAB_CLIENT_IP4 -> ISP $LAB_GW_IP4; 'internet' host $LAB_NET_IP4:$LAB_ECHO_PORT" \
  "wg0 (ifindex $(tunnel_ifindex)) carries the VPN; the default route stays on eth0, as after" \
  "a VPN client crash or a TunnelVision route: unprotected traffic takes eth0."

say "Starting ksd in the client namespace (profile default: tunnels = [\"wg0\"])"
ks_up
ks_wait_tunnel_state up
ks_ctl status | sed 's/^/   /'

say "Two senders, 50 datagrams a second each: one under ksrun, one plain"
ks_spawn_protected protected "$KS_PROBE" udp --dst "$LAB_TARGET4" --src 0.0.0.0:40001 \
  --duration 9 --interval-ms 20 --expect-reply
prot_pid=$LAB_LAST_PID
lab_spawn_client unprotected "$KS_PROBE" udp --dst "$LAB_TARGET4" --src 0.0.0.0:40002 \
  --duration 9 --interval-ms 20 --expect-reply
unprot_pid=$LAB_LAST_PID
sleep 2
ks_ctl list | sed 's/^/   /'

say "The VPN client crashes: wireguard-go is killed with SIGKILL, wg0 disappears"
capture_start outage
tunnel_kill
show "capturing on the ISP side of eth0 for 3 seconds..."
sleep 3
capture_stop
show "frames that reached the physical link outside the tunnel during the outage:" \
  "  from the protected sender:   $(leak_count "udp src port 40001")" \
  "  from the unprotected sender: $(leak_count "udp src port 40002")"
ks_ctl status | grep -E 'tunnel|blocked' | sed 's/^/   /'

say "The VPN comes back (new wg0, new ifindex): protected traffic resumes by itself"
tunnel_recreate >/dev/null
show "wg0 is back as ifindex $(tunnel_ifindex)"
ks_wait_tunnel_state up
sleep 3

say "Results"
_lab_wait_until 10 _lab_not _lab_alive "$prot_pid" || true
_lab_wait_until 10 _lab_not _lab_alive "$unprot_pid" || true
summary protected "$(tail -n 1 "$LAB_DIR/protected.log")"
summary unprotected "$(tail -n 1 "$LAB_DIR/unprotected.log")"
show "The protected sender got an error for every datagram while the tunnel was gone and" \
  "was answered again once it was back; nothing it sent ever reached the physical link" \
  "outside the tunnel. Run the leak lab tests for the proof: sudo ./scripts/test.sh"
say "Cleaning up the lab"
