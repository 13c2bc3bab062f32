#!/usr/bin/env bash
# shellcheck disable=SC2016  # sh -c scripts take "$1"...
# A real client that does what a browser does: curl (Debian's), as an unprivileged user,
# with the resolver a DHCP server would give (the ISP's, 198.51.100.1, in /etc/resolv.conf
# of a private mount namespace) and names that resolve to IPv6 and IPv4 (Happy Eyeballs).
# The lab's "internet" (web_lab.py in the ISP namespace) answers DNS for *.lab on every ISP
# address and serves HTTP on port 8080.
#   1. control: unprotected, the same requests resolve through the ISP's resolver and fetch
#      over eth0: the leak detector sees the DNS and HTTP frames;
#   2. protected, tunnel up: name lookups are answered through the tunnel by the profile's
#      resolver (the responder sees them from the tunnel address), a dual-stack name falls
#      back from IPv6 (refused at once: the tunnel carries IPv4 only) to IPv4 without delay,
#      five parallel transfers, a literal IPv6 URL fails at once, `--interface eth0` gets
#      nowhere (as nobody curl falls back to binding eth0's address; that goes into the tunnel,
#      whose server drops a source it does not know);
#   3. the VPN client crashes: every request fails at once (no hang, no timeout), and after
#      the tunnel is re-created the same commands work again, without any user action;
#   4. 0 leaked frames across 2 and 3.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

command -v curl >/dev/null || fail "curl is not installed (scripts/install-deps.sh)"
WEB=$KS_SOURCE_DIR/tests/lab/web_lab.py

lab_up
lab_spawn_isp web python3 "$WEB" --log "$LAB_DIR/web.log" --ready "$LAB_DIR/web.ready"
lab_wait_file "$LAB_DIR/web.ready" 10 "$LAB_LAST_PID"
ks_up "$(printf '[profiles.default]\ntunnels = ["wg0"]\ndns = ["%s"]\n' "$LAB_WG_SERVER_IP4")"
ks_wait_tunnel_state up
echo "nameserver $LAB_GW_IP4" >"$LAB_DIR/resolv.conf"
chmod 644 "$LAB_DIR/resolv.conf"
chmod 755 "$LAB_DIR"

# in_resolv CMD...: CMD in the client netns, in a private mount namespace whose
# /etc/resolv.conf names the ISP's resolver.
in_resolv() {
  lab_exec_client unshare -m --propagation private sh -c \
    'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"' sh "$LAB_DIR/resolv.conf" "$@"
}
# curl_as MODE ARGS...: curl as nobody, protected (MODE protected) or not (plain); prints
# curl's -w line ("CODE REMOTE_IP SECONDS") or "ERR <exit> <seconds>".
curl_as() {
  local mode=$1 t0 rc=0 out
  shift
  local -a cmd=("${LAB_AS_NOBODY[@]}")
  [[ $mode == plain ]] || cmd+=("$KS_KSRUN" --socket "$KS_SOCK" --)
  t0=$(_lab_now_us)
  out=$(in_resolv "${cmd[@]}" curl -sS --max-time 10 -o /dev/null \
    -w '%{http_code} %{remote_ip} %{time_total}\n' "$@" 2>"$LAB_DIR/curl.err") || rc=$?
  if ((rc != 0)); then
    echo "ERR $rc $(((($(_lab_now_us) - t0) / 1000))) ms $(head -c 200 "$LAB_DIR/curl.err" | tr '\n' ' ')"
  else
    echo "$out"
  fi
}
http_from() { grep -c -E "^http (::ffff:)?$1 " "$LAB_DIR/web.log" || true; }
dns_from() { grep -c "^dns $1 " "$LAB_DIR/web.log" || true; }

# ---- 1. control ------------------------------------------------------------------------------------
capture_start control
out=$(curl_as plain http://www.web.lab:8080/control)
lab_log "unprotected: $out"
[[ $out == "200 "* ]] || fail "control: unprotected curl failed: $out"
capture_stop
assert_gt "$(leak_count "udp and dst port 53 and dst host $LAB_GW_IP4")" 0 \
  "control: the detector sees the DNS query to the ISP's resolver on eth0"
assert_gt "$(leak_count "tcp and dst port 8080")" 0 "control: ... and the HTTP fetch"
assert_gt "$(dns_from "$LAB_CLIENT_IP4")" 0 "control: the ISP's resolver saw the query from eth0"

# ---- 2. protected, tunnel up -------------------------------------------------------------------------
capture_start protected
http0=$(http_from "$LAB_WG_CLIENT_IP4")
dns0=$(dns_from "$LAB_WG_CLIENT_IP4")
out=$(curl_as protected http://www.web.lab:8080/protected)
lab_log "protected: $out"
[[ $out == "200 203.0.113.10 "* ]] || fail "protected curl by name did not fetch over IPv4: $out"
read -r _ _ seconds <<<"$out"
python3 -c "import sys; sys.exit(0 if float('$seconds') < 1.0 else 1)" ||
  fail "Happy Eyeballs fell back to IPv4 only after $seconds s"
pass "a dual-stack name: IPv6 refused at once, fetched over IPv4 through the tunnel in $seconds s"
assert_gt "$(($(dns_from "$LAB_WG_CLIENT_IP4") - dns0))" 0 "name lookups answered through the tunnel"
out=$(curl_as protected --parallel --parallel-immediate http://a.web.lab:8080/1 \
  -o /dev/null http://b.web.lab:8080/2 -o /dev/null http://c.web.lab:8080/3 \
  -o /dev/null http://d.web.lab:8080/4 -o /dev/null http://e.web.lab:8080/5)
[[ $out == *"200 "*"200 "*"200 "*"200 "*"200 "* ]] || fail "parallel transfers: $out"
assert_eq "$(($(http_from "$LAB_WG_CLIENT_IP4") - http0))" 6 "the server saw all six fetches from the tunnel address"
out=$(curl_as protected "http://[$LAB_NET_IP6]:8080/v6")
[[ $out == "ERR "* ]] || fail "a literal IPv6 URL worked without an IPv6 tunnel: $out"
read -r _ _ ms _ <<<"$out"
assert_le "$ms" 2000 "a literal IPv6 URL fails at once ($out)"
# As nobody, SO_BINDTODEVICE fails (no CAP_NET_RAW) and curl falls back to binding eth0's
# address: the connection then goes into the tunnel with that source, where the VPN server
# drops it (a timeout inside the tunnel, nothing on eth0).
out=$(curl_as protected --connect-timeout 2 --interface eth0 http://www.web.lab:8080/iface)
[[ $out == "ERR "* ]] || fail "--interface eth0 worked: $out"
pass "curl --interface eth0 gets nowhere ($out)"

# ---- 3. the VPN client crashes -------------------------------------------------------------------------
tunnel_kill
ks_wait_tunnel_state missing
for url in http://www.web.lab:8080/down "http://$LAB_NET_IP4:8080/down-literal"; do
  out=$(curl_as protected "$url")
  [[ $out == "ERR "* ]] || fail "tunnel gone: $url worked: $out"
  read -r _ _ ms _ <<<"$out"
  assert_le "$ms" 2000 "tunnel gone: $url fails at once ($out)"
done
tunnel_recreate >/dev/null
ks_wait_tunnel_state up
out=$(curl_as protected http://www.web.lab:8080/back)
[[ $out == "200 "* ]] || fail "tunnel re-created: curl does not work again: $out"
pass "tunnel re-created: curl works again by itself"
capture_stop

# ---- 4. the physical link --------------------------------------------------------------------------------
assert_no_leak "no leaked frame of the protected curl"
