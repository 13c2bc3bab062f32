#!/usr/bin/env bash
# shellcheck disable=SC2016  # sh -c scripts take "$1"...
# A real BitTorrent client: Debian's qBittorrent (qbittorrent-nox 4.5.2, libtorrent 2.0.8) as
# an unprivileged user (nobody, its own profile in the lab dir), with DHT, Local Service
# Discovery, PeX and UPnP/NAT-PMP on (its defaults, written into its configuration
# explicitly), its WebUI on loopback only, the resolver a DHCP server would give (the
# ISP's, in /etc/resolv.conf of a private mount namespace; web_lab.py answers it) and one
# torrent it does not have yet, whose tracker (tracker.py, in the ISP namespace) listens
# only on the VPN server's tunnel address and interface: a client reaches it only through
# the tunnel.
#   1. control: unprotected, for CONTROL_S seconds: the leak detector sees what it puts on
#      the physical link, counted per class (LSD announces to 239.192.152.143:6771 and
#      [ff15::efc0:988f]:6771, SSDP to 239.255.255.250:1900, NAT-PMP to the gateway's port
#      5351, DNS lookups of the DHT bootstrap routers, the kernel's IGMP and MLD membership
#      reports for the groups it joined, tracker and peer ports);
#   2. protected (ksrun, as nobody; profile dns = the VPN server): it announces to the
#      tracker through the tunnel (the tracker sees the tunnel address 10.99.0.2);
#   3. the VPN client crashes (wireguard-go SIGKILLed, wg0 deleted) and stays gone for
#      OUTAGE_S seconds while qBittorrent runs and is told to re-announce: nothing reaches
#      the tracker; the tunnel is re-created (new ifindex). libtorrent does not listen on
#      the new wg0 by itself (unprotected neither: it re-reads the interfaces only when an
#      address is added, and wg0 gets its address before it is up), so a new listening port
#      is set through the WebUI, as a user would; then it announces through the tunnel again;
#   4. across 2 and 3 not one leaked frame on the physical link: no LSD, SSDP, NAT-PMP or
#      DNS, no IGMP frame at all and no MLD report for a group it joined (cgroup/setsockopt
#      refuses its joins outside the tunnel; the refusal of its LSD join is an mcast_join
#      event).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

command -v qbittorrent-nox >/dev/null ||
  fail "qbittorrent-nox is not installed (scripts/install-deps.sh)"
command -v curl >/dev/null || fail "curl is not installed (scripts/install-deps.sh)"
TRACKER=$KS_SOURCE_DIR/tests/lab/tracker.py
WEB=$KS_SOURCE_DIR/tests/lab/web_lab.py

CONTROL_S=16        # how long the unprotected qBittorrent runs
OUTAGE_S=10         # how long the tunnel stays gone under the protected one
TRACKER_PORT=6969
BT_PORT=6881        # qBittorrent's listening port (TCP, uTP, DHT)
BT_PORT2=6882       # ... set through the WebUI once the tunnel is back
WEBUI_PORT=8181     # on 127.0.0.1 of the client namespace only
LSD4=239.192.152.143
LSD6=ff15::efc0:988f
ANNOUNCES=""        # the tracker's log (set once the lab is up)

# Classes of what qBittorrent puts on the physical link (pcap filters, disjoint).
CLASSES=(lsd4 lsd6 ssdp natpmp dns igmp mld bittorrent)
declare -A CLASS=(
  [lsd4]="ip and udp and dst host $LSD4 and dst port 6771"
  [lsd6]="ip6 and udp and dst host $LSD6 and dst port 6771"
  [ssdp]="udp and dst port 1900"
  [natpmp]="udp and dst port 5351"
  [dns]="port 53"
  [igmp]="igmp"
  # MLD behind the router-alert hop-by-hop header, or directly (query 130, v1 131/132, v2 143)
  [mld]="ip6 and ((ip6[6] = 0 and ip6[40] = 58) or (ip6[6] = 58 and (ip6[40] = 143 or (ip6[40] >= 130 and ip6[40] <= 132))))"
  [bittorrent]="(tcp or udp) and (port $BT_PORT or port $TRACKER_PORT)"
)
# class_counts: "class=N ..." of the leaks in the current capture, and "other=N".
class_counts() {
  local c out="" rest="" n
  for c in "${CLASSES[@]}"; do
    n=$(leak_count "${CLASS[$c]}")
    out+="$c=$n "
    rest+="${rest:+ and }not (${CLASS[$c]})"
  done
  echo "${out}other=$(leak_count "$rest") total=$(leak_count)"
}
# class_of COUNTS NAME: one count of class_counts' output.
class_of() { sed -n "s/.*\b$2=\([0-9]*\).*/\1/p" <<<"$1"; }
# reports GROUP: IGMP/MLD frames in the current capture that name GROUP (tcpdump -v decodes
# their group records on one line).
reports() {
  tcpdump -r "$(_lab_pcap)" -n -v "igmp or (${CLASS[mld]})" 2>/dev/null |
    grep -c -w -F -- "$1" || true
}
# membership_frames: the IGMP frames and MLD frames that are leaks, decoded.
membership_frames() {
  tcpdump -r "$(_lab_pcap)" -nn -v -tt "($LAB_LEAK_FILTER) and (igmp or (${CLASS[mld]}))" \
    2>/dev/null | head -n 40 || true
}

# qbt_profile NAME: a qBittorrent profile in $LAB_DIR/NAME owned by nobody, with the
# legal notice accepted, DHT, LSD, PeX and UPnP/NAT-PMP on, the WebUI on loopback without
# a login from localhost.
qbt_profile() {
  local dir=$LAB_DIR/$1
  install -d -o nobody -g nogroup "$dir" "$dir/qBittorrent" "$dir/qBittorrent/config" \
    "$dir/downloads"
  cat >"$dir/qBittorrent/config/qBittorrent.conf" <<EOF
[LegalNotice]
Accepted=true

[BitTorrent]
Session\\DHTEnabled=true
Session\\LSDEnabled=true
Session\\PeXEnabled=true
Session\\Port=$BT_PORT
Session\\DefaultSavePath=$dir/downloads

[Preferences]
Connection\\UPnP=true
WebUI\\Enabled=true
WebUI\\Address=127.0.0.1
WebUI\\Port=$WEBUI_PORT
WebUI\\LocalHostAuth=false
WebUI\\UseUPnP=false
EOF
  chown nobody:nogroup "$dir/qBittorrent/config/qBittorrent.conf"
}
QBT_PID=""
# qbt_spawn plain|protected NAME: qBittorrent as nobody (through ksrun when protected) with
# profile $LAB_DIR/NAME and the torrent, in the client netns, the ISP's resolver in its
# /etc/resolv.conf. Its output is in $LAB_DIR/NAME.log, its pid in QBT_PID (ksrun execs).
qbt_spawn() {
  local mode=$1 dir=$LAB_DIR/$2
  local -a cmd=("${LAB_AS_NOBODY[@]}")
  [[ $mode == plain ]] || cmd+=("$KS_KSRUN" --socket "$KS_SOCK" --)
  cmd+=(env HOME="$dir" qbittorrent-nox --profile="$dir" --save-path="$dir/downloads"
    "$LAB_DIR/lab.torrent")
  lab_spawn_client "$2" unshare -m --propagation private sh -c \
    'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"' sh "$LAB_DIR/resolv.conf" \
    "${cmd[@]}"
  QBT_PID=$LAB_LAST_PID
}
# qbt_log NAME: qBittorrent's own log in that profile.
qbt_log() { cat "$LAB_DIR/$1/qBittorrent/data/logs/qbittorrent.log" 2>/dev/null || true; }
# webui PATH [CURL ARGS]: a request to qBittorrent's WebUI (loopback of the client netns).
webui() {
  local path=$1
  shift
  lab_exec_client curl -sS --max-time 5 "$@" "http://127.0.0.1:$WEBUI_PORT$path"
}
qbt_reannounce() { webui /api/v2/torrents/reannounce -d hashes=all >/dev/null 2>&1 || true; }
_webui_up() { webui /api/v2/app/version >/dev/null 2>&1; }
# announces_from ADDR [SINCE [PORT]]: the tracker's announces of our torrent from ADDR (at
# or after epoch time SINCE, naming listening port PORT).
announces_from() {
  awk -v a="$1" -v h="$INFO_HASH" -v t="${2:-0}" -v p="${3:-}" \
    '$3 == a && $4 == h && $2 >= t && (p == "" || $6 == p)' "$ANNOUNCES" | wc -l
}
# listens_on_tunnel PORT: qBittorrent has a TCP socket listening on wg0's address and PORT.
listens_on_tunnel() {
  local out
  out=$(lab_exec_client ss -Htln "sport = :$1") || return 1
  [[ $out == *"$LAB_WG_CLIENT_IP4"* ]]
}
yes_no() { if "$@"; then echo yes; else echo no; fi; }
_announced_since() { (($(announces_from "$LAB_WG_CLIENT_IP4" "$1") > 0)); }

lab_up
chmod 711 "$LAB_DIR" # nobody reaches its profile (nothing listable; the keys stay 0600)
ANNOUNCES=$LAB_DIR/tracker.announces
lab_spawn_isp tracker python3 "$TRACKER" serve --addr "$LAB_WG_SERVER_IP4" --port "$TRACKER_PORT" \
  --device "$LAB_SERVER_TUNNEL_IF" --log "$ANNOUNCES" --ready "$LAB_DIR/tracker.ready"
lab_wait_file "$LAB_DIR/tracker.ready" 10
lab_spawn_isp web python3 "$WEB" --log "$LAB_DIR/web.log" --ready "$LAB_DIR/web.ready"
lab_wait_file "$LAB_DIR/web.ready" 10
echo "nameserver $LAB_GW_IP4" >"$LAB_DIR/resolv.conf"
chmod 644 "$LAB_DIR/resolv.conf"
# The torrent: one 40 KiB file (3 pieces of 16 KiB) that qBittorrent does not have, so it
# is downloading and looks for peers everywhere it may.
head -c 40000 /dev/urandom >"$LAB_DIR/lab-payload.bin"
INFO_HASH=$(python3 "$TRACKER" make-torrent --file "$LAB_DIR/lab-payload.bin" \
  --announce "http://$LAB_WG_SERVER_IP4:$TRACKER_PORT/announce" --out "$LAB_DIR/lab.torrent")
chmod 644 "$LAB_DIR/lab.torrent"
lab_log "torrent info hash $INFO_HASH, tracker http://$LAB_WG_SERVER_IP4:$TRACKER_PORT/announce"

# ---- 1. control: unprotected ----------------------------------------------------------------------
qbt_profile control
capture_start control
T0=$(lab_now)
qbt_spawn plain control
_lab_wait_until 15 _webui_up || fail "control: qBittorrent's WebUI does not answer: $(tail -5 "$LAB_DIR/control.log")"
prefs=$(webui /api/v2/app/preferences)
for k in dht lsd pex upnp; do
  [[ $prefs == *"\"$k\":true"* ]] || fail "control: qBittorrent runs with $k off: $prefs"
done
pass "control: qBittorrent runs as nobody with DHT, LSD, PeX and UPnP/NAT-PMP on"
lab_sleep_until "$(lab_plus "$T0" "$CONTROL_S")"
lab_stop "$QBT_PID" TERM 10
sleep 3 # the kernel's leave reports and their retransmissions
capture_stop
counts=$(class_counts)
lab_log "control: leaks per class: $counts"
lab_log "control: IGMP reports naming $LSD4: $(reports "$LSD4"), MLD reports naming $LSD6: $(reports "$LSD6")"
lab_log "control: tracker saw $(announces_from "$LAB_WG_CLIENT_IP4") announce(s) from $LAB_WG_CLIENT_IP4"
assert_gt "$(class_of "$counts" total)" 0 "control: the detector sees unprotected qBittorrent leak"
assert_gt "$(class_of "$counts" lsd4)" 0 "control: LSD announces to $LSD4:6771 on eth0"
assert_gt "$(class_of "$counts" ssdp)" 0 "control: SSDP (UPnP discovery) on eth0"
assert_gt "$(class_of "$counts" natpmp)" 0 "control: NAT-PMP to the gateway on eth0"
assert_gt "$(class_of "$counts" dns)" 0 "control: DNS lookups (DHT bootstrap routers) on eth0"
assert_gt "$(reports "$LSD4")" 0 "control: the kernel's IGMP reports for $LSD4 on eth0"
assert_gt "$(reports "$LSD6")" 0 "control: the kernel's MLD reports for $LSD6 on eth0"

# ---- 2. protected, tunnel up --------------------------------------------------------------------------
ks_up "$(printf '[profiles.default]\ntunnels = ["wg0"]\ndns = ["%s"]\n' "$LAB_WG_SERVER_IP4")"
ks_wait_tunnel_state up
IFINDEX0=$(tunnel_ifindex)
seq0=$(ks_ctl events --json --limit 1 | python3 -c 'import json, sys; print(json.load(sys.stdin)["next_seq"])')
qbt_profile protected
capture_start protected
T1=$(lab_now)
qbt_spawn protected protected
_lab_wait_until 15 _webui_up || fail "protected: qBittorrent's WebUI does not answer: $(tail -5 "$LAB_DIR/protected.log")"
lab_poll_until 20 _announced_since "$T1" ||
  fail "protected: the tracker saw no announce through the tunnel: $(tail -5 "$ANNOUNCES")"
T_ANN=$(lab_now)
pass "protected: qBittorrent announced through the tunnel ($(lab_ms "$T1" "$T_ANN") ms after start)"
lab_sleep_until "$(lab_plus "$T1" 6)"

# ---- 3. the VPN client crashes, qBittorrent keeps running, the tunnel comes back ------------------
T_KILL=$(lab_now)
tunnel_kill
ks_wait_tunnel_state missing
sleep 2
qbt_reannounce # an announce attempt with the tunnel gone
lab_sleep_until "$(lab_plus "$T_KILL" "$OUTAGE_S")"
_lab_alive "$QBT_PID" || fail "qBittorrent died while the tunnel was gone: $(tail -5 "$LAB_DIR/protected.log")"
tunnel_recreate >/dev/null
T_BACK=$(lab_now)
IFINDEX1=$(tunnel_ifindex)
assert_ne "$IFINDEX1" "$IFINDEX0" "the re-created wg0 has a new ifindex"
ks_wait_tunnel_state up
during=$(awk -v a="$T_KILL" -v b="$T_BACK" '$2 >= a && $2 < b' "$ANNOUNCES" | wc -l)
assert_eq "$during" 0 "no announce reached the tracker while the tunnel was gone"
# libtorrent (2.0.8) re-reads the interfaces only when an address is added, and skips those
# that are down then: the new wg0 gets its address before it is set up (as with wg-quick),
# so qBittorrent does not listen on it by itself, protected or not. A new listening port
# set through the WebUI makes it reopen its sockets on every interface that is up.
lab_log "tunnel back: qBittorrent listens on the new wg0 by itself: $(yes_no listens_on_tunnel "$BT_PORT")"
webui /api/v2/app/setPreferences --data-urlencode "json={\"listen_port\":$BT_PORT2}" >/dev/null ||
  fail "the WebUI refused the new listening port"
_lab_wait_until 10 listens_on_tunnel "$BT_PORT2" ||
  fail "qBittorrent does not listen on the new wg0: $(lab_exec_client ss -tln)"
T_LISTEN=$(lab_now)
deadline=$(lab_plus "$T_LISTEN" 20)
until (($(announces_from "$LAB_WG_CLIENT_IP4" "$T_BACK" "$BT_PORT2") > 0)); do
  _lab_cmp "$(lab_now)" "<" "$deadline" ||
    fail "tunnel back: qBittorrent does not announce through it again: $(tail -5 "$ANNOUNCES")"
  qbt_reannounce
  sleep 1
done
T_ANN2=$(lab_now)
pass "tunnel back: qBittorrent announced through the new wg0 ($(lab_ms "$T_BACK" "$T_ANN2") ms after re-creation, $(lab_ms "$T_LISTEN" "$T_ANN2") ms after it listened there)"
sleep 2
lab_stop "$QBT_PID" TERM 10
sleep 3 # what the kernel would report after its sockets are gone
capture_stop

# ---- 4. the physical link, protected ---------------------------------------------------------------
counts=$(class_counts)
lab_log "protected: leaks per class: $counts"
lab_log "protected: tracker saw announces from: $(awk -v t="$T1" '$2 >= t { print $3 }' "$ANNOUNCES" |
  sort | uniq -c | tr '\n' ' ')"
lab_log "protected: DNS lookups answered through the tunnel: $(grep -c "^dns $LAB_WG_CLIENT_IP4 " "$LAB_DIR/web.log" || true)"
# What ksd refused, per hook, destination and reason (events are rate-limited per app).
ev=$(ks_ctl events --json --since "$seq0" | python3 -c 'import collections, json, sys
d = json.load(sys.stdin)
c = collections.Counter((e["hook"], e["destination"], e["reason"]) for e in d["events"])
print("\n".join("%d %s %s %s" % (n, h, dst or "-", r) for (h, dst, r), n in sorted(c.items(), key=str)))')
lab_log "protected: ksd refused (count hook destination reason):"
sed 's/^/    /' <<<"$ev" >&2
[[ $ev == *" mcast_join $LSD4 "* ]] ||
  fail "no mcast_join event for qBittorrent's LSD group $LSD4: its join was not refused"
pass "qBittorrent's LSD join ($LSD4) outside the tunnel was refused and reported"
lab_log "qBittorrent's warnings (protected run):"
qbt_log protected | grep -E '^\((W|C)\)' | sed 's/^/    /' >&2 || true
n=$(capture_count igmp)
if ((n != 0)) || (($(leak_count "${CLASS[mld]}") != 0)); then
  lab_log "membership reports on eth0:"
  membership_frames >&2
fi
assert_eq "$(reports "$LSD4")" 0 "no IGMP report for $LSD4 on eth0"
assert_eq "$(reports "$LSD6")" 0 "no MLD report for $LSD6 on eth0"
assert_eq "$n" 0 "no IGMP frame at all on eth0"
assert_no_leak "no leaked frame of the protected qBittorrent (membership reports included)"
