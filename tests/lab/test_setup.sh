#!/usr/bin/env bash
# ksctl setup against a real VPN, from detection to a protected app's DNS query: the lab's
# wireguard-go tunnel wg0 (told from OpenVPN's tun by its UAPI socket), a wg-quick file that
# names the tunnel's resolver, a resolvconf record of an OpenVPN-style tun device; then
# --write (never over an edited file without --force, a copy kept), the written file is what
# ksd runs with, and a protected query to the ISP's resolver is answered through the tunnel
# by the resolver setup found, with nothing on the physical link.
# Positive controls: run outside wireguard-go's mount namespace (no UAPI socket in sight)
# wg0 is only "a tun device": the socket is what tells WireGuard apart; unprotected, the
# same query leaks.
# (systemd-resolved's and NetworkManager's D-Bus sources: tests/systemd/test_setup.sh.)
# shellcheck disable=SC2016  # python and sh -c scripts take "$1"...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

lab_up
# The tunnel's resolver, behind wgs0 (as in lab_dns): an echo server on port 53.
lab_spawn_isp dns "$KS_PROBE" echo-server --udp 0.0.0.0:53 --ready-file "$LAB_DIR/dns.ready"
lab_wait_file "$LAB_DIR/dns.ready"

WG_DIR=$LAB_DIR/wireguard
RC_DIR=$LAB_DIR/resolvconf
mkdir -m 0700 "$WG_DIR" "$RC_DIR"
printf '[Interface]\nPrivateKey = (the lab keeps its own)\nAddress = %s/32\nDNS = %s, lab.example\n\n[Peer]\nEndpoint = %s:51820\n' \
  "$LAB_WG_CLIENT_IP4" "$LAB_WG_SERVER_IP4" "$LAB_GW_IP4" >"$WG_DIR/wg0.conf"
# An OpenVPN-style tun device (no process holds it: no carrier, so it is "down") with the
# record OpenVPN's update-resolv-conf leaves.
lab_exec_client ip tuntap add dev tun7 mode tun
lab_exec_client ip link set tun7 up
printf 'nameserver 10.8.0.1\n' >"$RC_DIR/tun7.openvpn"

# setup ARGS...: ksctl setup in the client netns AND wireguard-go's mount namespace (its
# UAPI socket lives in a private /run there), pointed at the lab's files.
WG_MNT=/proc/$(_lab_client_wg_pid)/ns/mnt
setup() {
  nsenter --net="/run/netns/$LAB_NS_C" --mount="$WG_MNT" -- "$KS_KSCTL" setup \
    --wireguard-dir "$WG_DIR" --resolvconf-dir "$RC_DIR" "$@"
}

# ---- what it finds ------------------------------------------------------------------------
out=$(setup --json --config "$LAB_DIR/none.toml")
assert_eq "$(json_get "$out" /chosen_tunnels)" '["wg0"]' "setup picks the tunnel that is up"
assert_eq "$(json_get "$out" /tunnels/0/what)" "WireGuard (userspace: wireguard-go or boringtun)" \
  "wg0 is WireGuard (wireguard-go's UAPI socket)"
assert_eq "$(json_get "$out" /dns)" "[\"$LAB_WG_SERVER_IP4\"]" "the resolver of wg0.conf's DNS ="
[[ $(json_get "$out" /tunnels/0/dns_why/0) == *"DNS = in $WG_DIR/wg0.conf"* ]] ||
  fail "the resolver's source is not named: $(json_get "$out" /tunnels/0/dns_why)"
pass "and says where the resolver came from"
assert_eq "$(json_get "$out" /tunnels/1/name)" tun7 "the tun device is a candidate"
assert_eq "$(json_get "$out" /tunnels/1/what)" "tun (OpenVPN or another VPN client)" "... of OpenVPN's kind"
assert_eq "$(json_get "$out" /tunnels/1/left_out)" "not up now while others are" "... left out: no carrier"
[[ $(json_get "$out" /not_detected) == *"no system D-Bus"* ]] ||
  fail "setup does not say it could not ask systemd-resolved/NetworkManager: $(json_get "$out" /not_detected)"
pass "setup says what it could not look at (no system bus here)"
assert_eq "$(json_get "$out" /written)" false "without --write nothing is written"
assert_fails "... and no file appears" test -e "$LAB_DIR/none.toml"
human=$(setup --config "$LAB_DIR/none.toml")
[[ $human == *"[profiles.default]"* && $human == *"found: wg-quick configuration $WG_DIR/wg0.conf"* ]] ||
  fail "the human output lacks the profile or the reasons: $human"
pass "the human output shows the profile and the reasons"

# Positive control: without wireguard-go's socket in sight, wg0 is just a tun device.
out=$(lab_exec_client "$KS_KSCTL" setup --json --wireguard-dir "$WG_DIR" --resolvconf-dir "$RC_DIR")
assert_eq "$(json_get "$out" /tunnels/0/what)" "tun (OpenVPN or another VPN client)" \
  "positive control: outside wireguard-go's mount namespace wg0 looks like any tun"

# A tunnel named by the user, with the resolvconf record's resolver.
out=$(setup --json --tunnel tun7 --profile openvpn)
assert_eq "$(json_get "$out" /chosen_tunnels)" '["tun7"]' "--tunnel picks the named one"
assert_eq "$(json_get "$out" /dns)" '["10.8.0.1"]' "... with the resolver of its resolvconf record"
rc=0
setup --tunnel 'bad/name' >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 2 "a bad interface name is a usage error"

# ---- --write: new file, unchanged, edited (refused), --force (copy kept), shipped example --
CONF=$LAB_DIR/etc/killswitch/config.toml
setup --write --config "$CONF" >/dev/null
assert_ok "--write creates the file (and its directory)" test -s "$CONF"
assert_eq "$(stat -c %a "$CONF")" 644 "... mode 0644"
assert_ok "... and ksd accepts it (ksd --check)" "$KS_KSD" --check --config "$CONF"
out=$(setup --write --config "$CONF")
[[ $out == *"already holds this configuration"* ]] || fail "a second --write: $out"
pass "a second --write changes nothing and says so"
printf '# my note\n' >>"$CONF"
edited=$(sha256sum <"$CONF")
rc=0
err=$(setup --write --config "$CONF" 2>&1 >/dev/null) || rc=$?
assert_eq "$rc" 1 "--write over an edited file is refused"
[[ $err == *"--force replaces it"* ]] || fail "the refusal does not say what to do: $err"
assert_eq "$(sha256sum <"$CONF")" "$edited" "... and the file is untouched"
out=$(setup --write --force --json --config "$CONF")
backup=$(json_get "$out" /backup)
assert_eq "$(sha256sum <"$backup")" "$edited" "--force keeps the edited file as $(basename "$backup")"
[[ $(cat "$CONF") != *"my note"* ]] || fail "--force did not replace the file"
pass "--force replaces it"
cp "$KS_SOURCE_DIR/config/config.toml" "$CONF"
out=$(setup --write --json --config "$CONF")
assert_eq "$(json_get "$out" /written)" true "the shipped example is replaced without --force"
assert_ok "... a copy of it kept" cmp -s "$(json_get "$out" /backup)" "$KS_SOURCE_DIR/config/config.toml"
rc=0
err=$(nsenter --net="/run/netns/$LAB_NS_C" --mount="$WG_MNT" -- "${LAB_AS_NOBODY[@]}" "$KS_KSCTL" setup \
  --wireguard-dir "$WG_DIR" --write --force --config "$CONF" 2>&1 >/dev/null) || rc=$?
assert_eq "$rc" 1 "an unprivileged --write fails"
[[ $err == *"(run as root)"* ]] || fail "... without saying why: $err"
pass "... and says to run it as root"

# ---- end to end: the written file is ksd's, a protected DNS query goes through the tunnel --
QUERY='
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
try:
    s.sendto(b"query", (sys.argv[1], 53)); _, src = s.recvfrom(100); print("OK", src[0])
except OSError as e:
    print("ERR", e.errno)
'
capture_start control
out=$(lab_exec_client python3 -c "$QUERY" "$LAB_GW_IP4")
capture_stop
assert_ge "$(leak_count "udp port 53")" 1 "positive control: the unprotected query is on the physical link"
ks_up "$(cat "$CONF")"
ks_wait_tunnel_state up
capture_start protected
out=$(ks_run_client python3 -c "$QUERY" "$LAB_GW_IP4")
capture_stop
assert_eq "$out" "OK $LAB_GW_IP4" "a protected query to the ISP's resolver is answered (by the tunnel's)"
assert_eq "$(leak_count)" 0 "nothing of the protected app on the physical link"
assert_ge "$(capture_count "$LAB_WG_FLOW_FILTER")" 1 "the query travelled inside the tunnel"
