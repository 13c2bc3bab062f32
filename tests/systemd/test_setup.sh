#!/usr/bin/env bash
# ksctl setup's D-Bus sources, against the real services in a real systemd (container.sh):
# systemd-resolved's per-link DNS (what OpenVPN's update-systemd-resolved and NetworkManager
# set) and NetworkManager's tunnel connections. The lab covers links, wireguard-go, wg-quick
# files and resolvconf records (tests/lab/test_setup.sh).
#   1. both services stopped: setup says it could not ask them (and still works);
#   2. resolved running, a tun device without per-link DNS: no resolver (the positive
#      control of 3); then `resolvectl dns`: setup finds it and names the source;
#   3. NetworkManager brings up a tun connection "Lab VPN" with a resolver: setup finds the
#      device, names the connection, and takes the resolver NetworkManager gave resolved.
# Never skips: without root, the rootfs or the binaries it FAILS.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/container.sh"

pass() { echo "PASS: $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# assert_eq ACTUAL EXPECTED MSG
assert_eq() {
  if [[ $1 == "$2" ]]; then pass "$3 ($1)"; else fail "$3: got '$1', want '$2'"; fi
}
# assert_has TEXT WORDS MSG
assert_has() {
  if [[ $1 == *"$2"* ]]; then pass "$3"; else fail "$3: '$2' not in: $1"; fi
}

((EUID == 0)) || fail "must run as root (systemd-nspawn, cgroup2, mmdebstrap)"
[[ -x $KS_BUILD_DIR/ksctl ]] || fail "$KS_BUILD_DIR/ksctl is missing: build the project first"

name=ks-setup-$$
ct_rootfs
ct_cleanup_on_exit "$name"
ct_start "$name"

# json_get JSON POINTER: one value (python3 in the host's test helpers' way).
json_get() { python3 -c 'import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2].split("/")[1:]:
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v if isinstance(v, str) else json.dumps(v))' "$1" "$2"; }
# tunnel_json JSON NAME: the tunnels[] entry of NAME.
tunnel_json() { python3 -c 'import json, sys
print(json.dumps(next(t for t in json.loads(sys.argv[1])["tunnels"] if t["name"] == sys.argv[2])))' "$1" "$2"; }
setup() { ct_exec "$name" /ks/build/ksctl setup --json --wireguard-dir /nonexistent "$@"; }

# ---- 1. neither service runs ---------------------------------------------------------------
ct_exec "$name" ip tuntap add dev tun7 mode tun
ct_exec "$name" ip link set tun7 up
out=$(setup --tunnel tun7)
assert_has "$(json_get "$out" /not_detected)" "systemd-resolved: not running" \
  "setup says systemd-resolved is not running"
assert_has "$(json_get "$out" /not_detected)" "NetworkManager: not running" \
  "setup says NetworkManager is not running"
assert_eq "$(json_get "$out" /chosen_tunnels)" '["tun7"]' "... and still proposes the named tunnel"

# ---- 2. systemd-resolved's per-link DNS ----------------------------------------------------
ct_exec "$name" systemctl start systemd-resolved.service
out=$(setup --tunnel tun7)
assert_eq "$(json_get "$out" /dns)" '[]' "positive control: no per-link DNS on tun7, no resolver"
ct_exec "$name" resolvectl dns tun7 10.8.0.1 fd00:8::1
out=$(setup --tunnel tun7)
assert_eq "$(json_get "$out" /dns)" '["10.8.0.1", "fd00:8::1"]' \
  "setup takes tun7's resolvers from systemd-resolved over D-Bus"
assert_has "$(json_get "$(tunnel_json "$out" tun7)" /dns_why)" \
  "systemd-resolved, per-link DNS of tun7" "... and names the source"
[[ $(json_get "$out" /not_detected) != *systemd-resolved* ]] ||
  fail "resolved runs, yet: $(json_get "$out" /not_detected)"

# ---- 3. NetworkManager's tunnel connection -------------------------------------------------
# NetworkManager hands DNS to systemd-resolved on its own only when /etc/resolv.conf is
# resolved's stub; the image keeps a plain file, so it is told (in /run: gone at power-off).
ct_exec "$name" sh -c 'mkdir -p /run/NetworkManager/conf.d &&
  printf "[main]\ndns=systemd-resolved\n" >/run/NetworkManager/conf.d/50-ks-test.conf'
ct_exec "$name" systemctl start NetworkManager.service
ct_exec "$name" nmcli connection add type tun ifname nmtun0 con-name "Lab VPN" mode tun \
  ipv4.method manual ipv4.addresses 10.9.0.2/24 ipv4.dns 10.9.0.1 ipv6.method disabled \
  >/dev/null
ct_exec "$name" nmcli --wait 20 connection up "Lab VPN" >/dev/null ||
  fail "NetworkManager did not bring up Lab VPN: $(ct_exec "$name" nmcli -t device status)"
out=$(setup --tunnel nmtun0)
entry=$(tunnel_json "$out" nmtun0)
assert_eq "$(json_get "$entry" /what)" "tun (OpenVPN or another VPN client)" "nmtun0 is a tun device"
assert_has "$(json_get "$entry" /why)" 'NetworkManager connection \"Lab VPN\" (tun)' \
  "setup names NetworkManager's connection"
assert_eq "$(json_get "$out" /dns)" '["10.9.0.1"]' \
  "setup takes the resolver NetworkManager gave systemd-resolved"
[[ $(json_get "$out" /not_detected) == '[]' ]] ||
  fail "both services run, yet: $(json_get "$out" /not_detected)"
pass "nothing left undetected with both services running"
