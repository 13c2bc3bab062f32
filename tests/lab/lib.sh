# shellcheck shell=bash
# shellcheck disable=SC2016  # single-quoted sh -c scripts get their values as "$1"...
# shellcheck disable=SC2034  # LAB_* constants and filters are for the scenario scripts
# The leak lab: the library every end-to-end scenario of Killswitch sources.
#
#   #!/usr/bin/env bash
#   set -euo pipefail
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   lab_up                      # installs `trap ... EXIT`: lab_down runs whatever happens
#   capture_start
#   lab_probe_client udp --dst "$LAB_TARGET4" --count 10
#   capture_stop
#   assert_eq "$(leak_count)" 0 "no leak"
#
# Topology (one lab = two network namespaces; nothing is ever sent outside them):
#
#   client netns  ksl<id>c                          ISP netns  ksl<id>i
#   ┌───────────────────────────────┐              ┌──────────────────────────────────────┐
#   │ eth0 198.51.100.2/24          │── veth ──────│ isp0 198.51.100.1/24                 │
#   │      2001:db8:1::2/64         │              │      2001:db8:1::1/64                │
#   │ default via 198.51.100.1      │              │ lo   203.0.113.10/32                 │
#   │ default via 2001:db8:1::1     │              │      2001:db8:ff::10/128  ("internet")│
#   │                               │              │ echo server (ks-probe) on *:7000     │
#   │ wg0 10.99.0.2/32 [fd99::2/128]│══ WireGuard ═│ wgs0 10.99.0.1/24 [fd99::1/64]       │
#   │  wireguard-go, port 51821     │  over eth0   │  wireguard-go, port 51820            │
#   │  route 10.99.0.0/24 dev wg0   │              │  peer AllowedIPs 10.99.0.2/32        │
#   └───────────────────────────────┘              └──────────────────────────────────────┘
#
# Positive controls add 198.51.100.3 [2001:db8:1::3] on eth0 and 203.0.113.11 on the ISP
# loopback (LAB_CONTROL_*).
# The client's default routes stay on eth0 on purpose: an unprotected socket leaks, and only
# a socket pinned to wg0 (SO_BINDTODEVICE, or the kill switch) goes through the tunnel. The
# leak detector is a tcpdump on isp0 (frames arriving from the client), see LAB_LEAK_EXEMPT.
#
# Rules for scenario authors:
#   - Call lab_up in the main shell (not in a subshell or a pipeline): its EXIT trap must
#     belong to the script. If the scenario needs its own EXIT work, define lab_on_exit()
#     (the libraries' own teardown, LAB_EXIT_HOOKS, runs after it in any case).
#   - Enter the namespaces with lab_exec_client / lab_exec_isp (nsenter --net only). Never
#     use `ip netns exec`: it remounts /sys and hides /sys/fs/cgroup and /sys/fs/bpf.
#   - Inside the namespaces /sys/class/net is the HOST's (sysfs is not remounted): ask
#     `ip` for interface data (tunnel_ifindex does).
#   - Background processes: use lab_spawn_client / lab_spawn_isp so lab_down can account
#     for them (anything left in the namespaces is SIGKILLed by lab_down anyway).
#   - Don't write `local x=$(cmd)`: `local` hides cmd's failure from `set -e`.
#
# Environment:
#   KS_BUILD_DIR        build tree with tests/ks-probe (ksd, ksrun, ksctl); default /work/main/build
#   KS_LAB_TUNNEL_IPV6  1: also give the tunnel IPv6 addresses (same as lab_up --tunnel-ipv6)
#   KS_LAB_KEEP         1: keep the lab's temp dir (pcaps, logs) after lab_down, for debugging
#   KS_LAB_STATE_FILE   if set, lab_up/lab_spawn_* append "ns NAME", "dir PATH" and
#                       "pid PID STARTTIME NAME" lines to it (test_cleanup.sh checks them)

if [[ -n ${_KS_LAB_LIB_SOURCED:-} ]]; then return 0; fi
_KS_LAB_SOURCED_FROM=${BASH_SOURCE[1]:-$0}
_KS_LAB_LIB_SOURCED=1

# ctest sets both; run by hand, a scenario uses the checkout it is in and its build/.
KS_SOURCE_DIR=${KS_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
KS_BUILD_DIR=${KS_BUILD_DIR:-$KS_SOURCE_DIR/build}
KS_PROBE=${KS_PROBE:-$KS_BUILD_DIR/tests/ks-probe}
KS_KSD=$KS_BUILD_DIR/ksd        # not checked by the preflight: scenarios that need them do
KS_KSRUN=$KS_BUILD_DIR/ksrun
KS_KSCTL=$KS_BUILD_DIR/ksctl
KS_LAB_SCENARIO=$(basename "$_KS_LAB_SOURCED_FROM" .sh)

# ---- addresses and ports (constants) ----------------------------------------------------------
LAB_CLIENT_PHYS=eth0                 # client's "physical" NIC
LAB_ISP_IF=isp0                      # its peer in the ISP netns (the capture point)
LAB_TUNNEL_IF=wg0                    # client tunnel (wireguard-go)
LAB_SERVER_TUNNEL_IF=wgs0            # server tunnel in the ISP netns (wireguard-go)
LAB_CLIENT_IP4=198.51.100.2
LAB_CLIENT_IP6=2001:db8:1::2
LAB_GW_IP4=198.51.100.1              # ISP side of the link, also the WireGuard endpoint
LAB_GW_IP6=2001:db8:1::1
LAB_NET_IP4=203.0.113.10             # "internet host" (ISP loopback)
LAB_NET_IP6=2001:db8:ff::10
LAB_ECHO_PORT=7000                   # ks-probe echo-server, TCP+UDP, on every ISP address
LAB_TARGET4=$LAB_NET_IP4:$LAB_ECHO_PORT
LAB_TARGET6=[$LAB_NET_IP6]:$LAB_ECHO_PORT
LAB_WG_CLIENT_IP4=10.99.0.2
LAB_WG_SERVER_IP4=10.99.0.1
LAB_WG_CLIENT_IP6=fd99::2
LAB_WG_SERVER_IP6=fd99::1
LAB_WG_SERVER_PORT=51820
LAB_WG_CLIENT_PORT=51821
LAB_WG_TABLE=51820                   # client IPv6 table for sockets bound to wg0 (--tunnel-ipv6)
# Positive controls: unprotected probes that run next to protected ones under the same
# conditions and must be seen leaking. From a second client address or to a second
# "internet" address, their frames are told apart from the protected ones in one capture
# (lab_add_control_src / lab_add_control_dst add the addresses).
LAB_CONTROL_IP4=198.51.100.3         # client eth0, control traffic only
LAB_CONTROL_IP6=2001:db8:1::3
LAB_CONTROL_NET_IP4=203.0.113.11     # ISP loopback, served by the echo server too
LAB_CONTROL_TARGET4=$LAB_CONTROL_NET_IP4:$LAB_ECHO_PORT
# A second way out for escape tests (lab_side_netns_up): netns ksl<ID>x with x0 ↔ xisp0 (ISP).
LAB_SIDE_IF=x0
LAB_SIDE_ISP_IF=xisp0
LAB_SIDE_IP4=192.0.2.2
LAB_SIDE_GW_IP4=192.0.2.1

# ---- the leak predicate ---------------------------------------------------------------------
# The capture sees every frame the client puts on its physical link (tcpdump -i isp0 -Q in in
# the ISP netns). A frame is a LEAK unless it is one of these, whatever its IP source address:
#   1. the WireGuard flow: IPv4 UDP 198.51.100.2:51821 -> 198.51.100.1:51820 whose payload
#      starts with a WireGuard message header (type 1..4, three zero bytes);
#   2. ARP;
#   3. IPv6 neighbour discovery, ICMPv6 133-137 (RS, RA, NS, NA, redirect) with hop limit
#      255 (RFC 4861 requires it; it also means a routed packet cannot pass for ND). Any
#      source address: the kernel answers the ISP's solicitation for 2001:db8:1::2 with an NA
#      from that global address, and NUD probes use the global address too;
#   4. the kernel's own MLD, from a link-local (fe80::/10) or the unspecified (::) source,
#      directly after the IPv6 header or after an 8-byte hop-by-hop header (the router-alert
#      option the kernel adds): a query (130), an MLDv1 report or done (131, 132) for a
#      solicited-node group (ff02::1:ffXX:XXXX, which the kernel joins for each of its own
#      addresses), or an MLDv2 report (143) of one or two records, each a solicited-node
#      group without sources. A report that names any other group is a LEAK: it announces a
#      group some program joined (BitTorrent's Local Service Discovery, ff15::efc0:988f; SSDP,
#      ff02::c), and a kill switch must refuse such joins outside the tunnel
#      (test_multicast.sh). IGMP is never exempt: the kernel reports no IPv4 group of its own;
#   5. the client kernel's ICMP port unreachable for the encrypted flow: IPv4 ICMP type 3
#      code 3, 198.51.100.2 -> 198.51.100.1, quoting (IPv4 header without options) a UDP
#      datagram 198.51.100.1:51820 -> 198.51.100.2:51821 whose payload starts with a
#      WireGuard message header. Once the client's wireguard-go is gone (crashed, killed,
#      being re-created), the VPN server's packets still arrive at its closed port 51821 and
#      the kernel answers them. That frame belongs to no socket and goes to the VPN server
#      itself, which already sees the encrypted flow: it carries only that flow's headers
#      and ciphertext, never a tunnel address or a protected program's data. Anything else
#      of its shape (another code, another quoted flow, a quoted plain-text packet) leaks.
# Everything else — any TCP, UDP, ICMP, any IPv6 traffic, other ethertypes — is a leak; so
# are the kernel's own replies (RST, ICMP errors) sourced from the tunnel address: ksd keeps
# them in the tunnel (source rules 92/93, see core/include/killswitch/routing.hpp).
# The kernel's own ARP/ND/MLD cannot be filtered by a cgroup program and carry no app data.
#
# Every filter here and in the scenarios reads at most LAB_CAPTURE_SNAPLEN bytes of a frame
# (see capture_start; the farthest are the WireGuard header, udp[8..11], and the quoted one,
# icmp[36..39], even behind a 60-byte IPv4 header). A filter that reads past the captured
# bytes does not match at all, so `not (...)` would hide a leak: capture_stop checks that
# LAB_LEAK_FILTER and LAB_LEAK_EXEMPT together decide every captured frame.
_lab_ip4_int() { # _lab_ip4_int A.B.C.D: the address as a 32-bit number (pcap filters)
  local a b c d
  IFS=. read -r a b c d <<<"$1"
  echo $(((a << 24) | (b << 16) | (c << 8) | d))
}
_lab_wg_hdr() { echo "$1[$2] >= 1 and $1[$2] <= 4 and $1[$(($2 + 1)):2] = 0 and $1[$(($2 + 3))] = 0"; }
_lab_wg_flow="ip and udp and src host $LAB_CLIENT_IP4 and src port $LAB_WG_CLIENT_PORT\
 and dst host $LAB_GW_IP4 and dst port $LAB_WG_SERVER_PORT and $(_lab_wg_hdr udp 8)"
_lab_nd="ip6 and ip6[6] = 58 and ip6[7] = 255 and ip6[40] >= 133 and ip6[40] <= 137"
# _lab_solicited OFFSET: the 16 bytes at ip6[OFFSET] are a solicited-node group.
_lab_solicited() {
  echo "ip6[$1:4] = 0xff020000 and ip6[$(($1 + 4)):4] = 0 and ip6[$(($1 + 8)):4] = 1\
 and ip6[$(($1 + 12))] = 0xff"
}
# _lab_mld_at OFFSET: the ICMPv6 message at ip6[OFFSET] is the kernel's own MLD (see 4.
# above). A v2 record is type, aux length, source count, group: each starts 20 bytes after
# the one before when that one has no sources and no aux data. The kernel merges pending
# changes into one report (three solicited-node groups once an address is added while
# the others' reports are still being repeated), so up to LAB_MLD_RECORDS records are read;
# the farthest byte, behind the hop-by-hop header, is frame byte 14 + 48 + 88 = 150 <
# LAB_CAPTURE_SNAPLEN. A report of more records is a leak.
LAB_MLD_RECORDS=4
_lab_mld_at() {
  local o=$1 n k records="" all=""
  for ((n = 1; n <= LAB_MLD_RECORDS; n++)); do
    all=""
    for ((k = 0; k < n; k++)); do
      all+="${all:+ and }ip6[$((o + 9 + 20 * k))] = 0 and ip6[$((o + 10 + 20 * k)):2] = 0"
      all+=" and $(_lab_solicited $((o + 12 + 20 * k)))"
    done
    records+="${records:+ or }(ip6[$((o + 6)):2] = $n and $all)"
  done
  echo "(ip6[$o] = 130\
 or ((ip6[$o] = 131 or ip6[$o] = 132) and $(_lab_solicited $((o + 8))))\
 or (ip6[$o] = 143 and ($records)))"
}
_lab_mld="ip6 and (ip6 src net fe80::/10 or ip6 src host ::) and\
 ((ip6[6] = 58 and $(_lab_mld_at 40))\
 or (ip6[6] = 0 and ip6[40] = 58 and ip6[41] = 0 and $(_lab_mld_at 48)))"
# icmp[8..27]: the quoted IPv4 header (0x45: version 4, no options; [17] protocol; [20:4]
# source; [24:4] destination); icmp[28..35] the quoted UDP header; icmp[36..] its payload.
_lab_wg_unreach="ip and icmp and src host $LAB_CLIENT_IP4 and dst host $LAB_GW_IP4\
 and icmp[0] = 3 and icmp[1] = 3 and icmp[8] = 0x45 and icmp[17] = 17\
 and icmp[20:4] = $(_lab_ip4_int "$LAB_GW_IP4") and icmp[24:4] = $(_lab_ip4_int "$LAB_CLIENT_IP4")\
 and icmp[28:2] = $LAB_WG_SERVER_PORT and icmp[30:2] = $LAB_WG_CLIENT_PORT and $(_lab_wg_hdr icmp 36)"
LAB_WG_FLOW_FILTER="$_lab_wg_flow"   # pcap filters for each exempt class, for scenarios
LAB_ND_FILTER="$_lab_nd"
LAB_MLD_FILTER="$_lab_mld"
LAB_WG_UNREACH_FILTER="$_lab_wg_unreach"
LAB_LEAK_EXEMPT="($_lab_wg_flow) or arp or ($_lab_nd) or ($_lab_mld) or ($_lab_wg_unreach)"
LAB_LEAK_FILTER="not ($LAB_LEAK_EXEMPT)"

# ---- capture settings (capture_start, server_capture_start) -------------------------------------
# libpcap sizes each ring slot for the largest frame it may see: on a veth with offloads 64 KiB
# (tcpdump's default 2 MiB buffer: 32 slots), on a TUN device 256 KiB (8 slots). Frames of
# both directions pass through the ring (-Q in is applied after it), and on a loaded 2-CPU
# machine a tcpdump that waits a few tens of ms for a CPU overruns 32 slots. With
# -s 128 -B 32768 the ring had 161310 slots of 208 bytes (`ss -0 -e` shows ring_rx); -s 160
# (for MLD reports of four records) makes that about 140,000 slots of 240 bytes: minutes
# of a 1-per-ms flow. SCHED_FIFO then runs tcpdump before the traffic it watches; it sleeps
# in poll between frames and takes the rest of the machine next to nothing.
LAB_CAPTURE_BUFFER_KIB=32768
LAB_CAPTURE_SNAPLEN=160      # every filter's farthest read (see above: MLD, byte 150)
LAB_CAPTURE_PRIORITY=20      # SCHED_FIFO priority of the leak detector
LAB_SERVER_CAPTURE_PRIORITY=10 # ... of the capture at the VPN server (below the detector)

# ---- state (per lab; lab_down resets it) --------------------------------------------------------
LAB_ID=""          # short id, from the owner shell's PID ($$) + an optional letter
LAB_NS_C=""        # client netns name
LAB_NS_I=""        # ISP netns name
LAB_DIR=""         # temp dir: keys, logs, pcaps, pid files
LAB_TUNNEL_IPV6=0
LAB_UP_MS=""       # how long lab_up took
LAB_LAST_PID=""    # pid of the last lab_spawn_* process

# ---- messages and assertions --------------------------------------------------------------------
lab_log() { echo "lab[$KS_LAB_SCENARIO]: $*" >&2; }

pass() { echo "PASS: $*"; }

# fail MSG: prints "FAIL: MSG" and exits 1 (the EXIT trap then tears the lab down). Inside a
# command substitution it only ends the subshell; `x=$(...)` then fails and set -e exits.
fail() {
  echo "FAIL: $*" >&2
  _lab_record_failure F "$*"
  exit 1
}

# The first failure is repeated as the scenario's last line (CI shows only the output's tail,
# after the diagnostics). Kept in a file because fail() often runs in a subshell.
# _lab_record_failure KIND MSG: KIND F for fail(), E for a command that failed under set -e.
_lab_record_failure() {
  if [[ -n $LAB_DIR && -d $LAB_DIR ]]; then echo "$1 $2" >>"$LAB_DIR/failures"; fi
}
# A command that ends the script through set -e without fail(): say which. (It also fires in
# command substitutions, where set -e is off, so only the last such record is shown.)
_lab_on_err() {
  _lab_record_failure E "${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}: '$BASH_COMMAND' exited with status $1"
}
# _lab_first_failure: the first fail() message, else the last command that failed.
_lab_first_failure() {
  [[ -n $LAB_DIR && -s $LAB_DIR/failures ]] || return 0
  local line
  line=$(grep -m 1 '^F ' "$LAB_DIR/failures" || tail -n 1 "$LAB_DIR/failures")
  echo "${line#? }"
}
set -E
trap '_lab_on_err $?' ERR

_lab_die() {
  echo "FAIL: lab: $*" >&2
  _lab_record_failure F "lab: $*"
  exit 1
}

_lab_is_num() { [[ $1 =~ ^-?[0-9]+([.][0-9]+)?$ ]]; }

# _lab_cmp ACTUAL OP BOUND: numeric comparison (floats allowed).
_lab_cmp() {
  _lab_is_num "$1" || fail "not a number: '$1'"
  _lab_is_num "$3" || fail "not a number: '$3'"
  awk -v a="$1" -v b="$3" -v op="$2" 'BEGIN {
    r = (op == "<=") ? a <= b : (op == ">=") ? a >= b : (op == "<") ? a < b : (op == ">") ? a > b : a == b
    exit !r }'
}

# assert_eq ACTUAL EXPECTED MSG  (string equality)
assert_eq() {
  if [[ $1 == "$2" ]]; then pass "$3 ($1)"; else fail "$3: got '$1', expected '$2'"; fi
}
# assert_ne ACTUAL UNEXPECTED MSG
assert_ne() {
  if [[ $1 != "$2" ]]; then pass "$3 ($1)"; else fail "$3: got '$1', expected anything else"; fi
}
# assert_le ACTUAL MAX MSG ; assert_ge ACTUAL MIN MSG ; assert_gt ACTUAL MIN MSG (numbers)
assert_le() { if _lab_cmp "$1" "<=" "$2"; then pass "$3 ($1 <= $2)"; else fail "$3: $1 > $2"; fi; }
assert_ge() { if _lab_cmp "$1" ">=" "$2"; then pass "$3 ($1 >= $2)"; else fail "$3: $1 < $2"; fi; }
assert_gt() { if _lab_cmp "$1" ">" "$2"; then pass "$3 ($1 > $2)"; else fail "$3: $1 <= $2"; fi; }
# assert_between ACTUAL MIN MAX MSG
assert_between() {
  if _lab_cmp "$1" ">=" "$2" && _lab_cmp "$1" "<=" "$3"; then
    pass "$4 ($2 <= $1 <= $3)"
  else
    fail "$4: $1 not in [$2, $3]"
  fi
}
# assert_ok MSG CMD...: CMD must succeed.  assert_fails MSG CMD...: CMD must fail.
assert_ok() {
  local msg=$1; shift
  if "$@"; then pass "$msg"; else fail "$msg: '$*' failed"; fi
}
assert_fails() {
  local msg=$1; shift
  if "$@"; then fail "$msg: '$*' succeeded"; else pass "$msg"; fi
}

# json_get JSON POINTER [DEFAULT]: one value of a ks-probe summary (/sent, /errors/EPERM, ...).
json_get() {
  if (($# > 2)); then
    printf '%s\n' "$1" | "$KS_PROBE" json-get "$2" --default "$3"
  else
    printf '%s\n' "$1" | "$KS_PROBE" json-get "$2"
  fi
}

# json_pairs JSON POINTER: the members of a flat object (a ks-probe summary's /errors, ksd's
# /programs/ids) as "KEY:VALUE" lines, nothing for {}. Keys and values must not contain
# commas, colons or quotes (errno names and numbers do not).
json_pairs() {
  json_get "$1" "$2" | tr -d '{}"' | tr ',' '\n' | awk 'NF'
}

# json_sum_errors JSON KEY...: the sum of /errors/KEY over the KEYs (0 for a missing one):
# how many of a ks-probe's attempts failed with one of these errors.
json_sum_errors() {
  local json=$1 key n=0
  shift
  for key; do n=$((n + $(json_get "$json" "/errors/$key" 0))); done
  echo "$n"
}

# ---- preflight: refuse (never skip) when the lab cannot work -------------------------------------
lab_preflight() {
  ((EUID == 0)) || _lab_die "must run as root (network namespaces, TUN, tcpdump); refusing to run"
  local c
  for c in ip nsenter unshare mount wireguard-go wg tcpdump awk chrt setpriv; do
    command -v "$c" >/dev/null 2>&1 ||
      _lab_die "'$c' is missing; install it with scripts/install-deps.sh; refusing to run"
  done
  [[ -c /dev/net/tun ]] || _lab_die "/dev/net/tun is missing (wireguard-go needs TUN); refusing to run"
  [[ -x $KS_PROBE ]] ||
    _lab_die "$KS_PROBE is not built (KS_BUILD_DIR=$KS_BUILD_DIR); build the project first"
}
lab_preflight

# ---- small process helpers ----------------------------------------------------------------------
_lab_sleep() { sleep "${1:-0.01}"; }

# lab_stat_field PID N: field N (3 or later) of /proc/PID/stat (the comm field, 2, may
# contain spaces): 4 the parent, 6 the session, 22 the start time. Fails quietly when PID is
# gone.
lab_stat_field() {
  local stat f
  # Not $(<file): in bash 5.2 a failing $(<file) ends a `set -e` script even after `||`.
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  read -ra f <<<"${stat##*) }" # f[0] is field 3 (state)
  echo "${f[$2 - 3]}"
}

# _lab_starttime PID: its start time (tells a process from a later one with the same PID).
_lab_starttime() { lab_stat_field "$1" 22; }

# lab_cgroup_of PID: its cgroup2 path, relative to the cgroup2 mount ("/kstest….slice/…").
lab_cgroup_of() { awk -F: '$1 == "0" { print $3 }' "/proc/$1/cgroup"; }

# lab_as_nobody CMD...: CMD as nobody:nogroup without supplementary groups. LAB_AS_NOBODY is
# the command prefix, for `lab_exec_client "${LAB_AS_NOBODY[@]}" CMD...` (nsenter first).
LAB_AS_NOBODY=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
lab_as_nobody() { "${LAB_AS_NOBODY[@]}" "$@"; }

# _lab_alive PID [STARTTIME]: running (not a zombie) and, if given, still the same process.
_lab_alive() {
  local stat f
  [[ -n ${1:-} ]] || return 1
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  read -ra f <<<"${stat##*) }"
  [[ ${f[0]} != Z && ${f[0]} != X ]] || return 1
  [[ -z ${2:-} || ${f[19]} == "$2" ]]
}

# Under emulation (scripts/kernel-matrix.sh runs the lab in qemu's TCG, which sets
# QR_GUEST=1) processes start 15-20x slower: the bounds of waits for a condition (never of
# assertions about how fast something fails) are LAB_WAIT_SCALE times longer there.
LAB_WAIT_SCALE=${LAB_WAIT_SCALE:-$([[ ${QR_GUEST:-} == 1 ]] && echo 4 || echo 1)}

# _lab_wait_until TIMEOUT_S CMD...: poll CMD every 10 ms until it succeeds (0) or the
# timeout (whole seconds, times LAB_WAIT_SCALE) passes (1).
_lab_wait_until() {
  local timeout=$1
  shift
  local deadline=$((${EPOCHREALTIME/./} + ${timeout%.*} * LAB_WAIT_SCALE * 1000000))
  until "$@"; do
    ((${EPOCHREALTIME/./} < deadline)) || return 1
    _lab_sleep 0.01
  done
  return 0
}

_lab_now_us() { echo "${EPOCHREALTIME/./}"; }

# ---- time, for scenarios that log a timeline or read captures by timestamp ------------------
# Times are epoch seconds with microseconds ($EPOCHREALTIME), the clock of tcpdump -tt.
lab_now() { echo "$EPOCHREALTIME"; }
# lab_plus T SECONDS: T + SECONDS.   lab_ms FROM TO: whole milliseconds from FROM to TO.
lab_plus() { awk -v t="$1" -v d="$2" 'BEGIN { printf "%.6f", t + d }'; }
lab_ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 }'; }
# lab_sleep_until T: sleep until epoch time T (at once if it has passed). Scenario phases
# that must last a while use it; they are short and bounded.
lab_sleep_until() {
  sleep "$(awk -v t="$1" -v n="$EPOCHREALTIME" 'BEGIN { d = t - n; print (d > 0 ? d : 0) }')"
}

# lab_poll_until TIMEOUT_S CMD...: like _lab_wait_until, but every 200 ms: for CMDs that cost
# (ksctl, reading /proc/net/dev in a netns): polling them every 10 ms would take CPU from the
# captures on a busy machine.
lab_poll_until() {
  local deadline=$((${EPOCHREALTIME/./} + $1 * LAB_WAIT_SCALE * 1000000))
  shift
  until "$@"; do
    ((${EPOCHREALTIME/./} < deadline)) || return 1
    _lab_sleep 0.2
  done
}

_lab_state() { [[ -z ${KS_LAB_STATE_FILE:-} ]] || echo "$*" >>"$KS_LAB_STATE_FILE"; }

_lab_gone() { ! _lab_alive "$@"; }
_lab_not() { ! "$@"; }

# _lab_spawn NS NAME CMD...: start CMD in the background inside netns NS (stdin /dev/null,
# stdout+stderr appended to $LAB_DIR/NAME.log). Sets LAB_LAST_PID (no command substitution
# needed, so the process stays our child and bash reaps it quietly after `disown`).
_lab_spawn() {
  local ns=$1 name=$2
  shift 2
  nsenter --net="/run/netns/$ns" -- "$@" </dev/null >>"$LAB_DIR/$name.log" 2>&1 &
  LAB_LAST_PID=$!
  disown "$LAB_LAST_PID" 2>/dev/null || true
  local st
  st=$(_lab_starttime "$LAB_LAST_PID" || echo 0)
  echo "$LAB_LAST_PID $st $name" >>"$LAB_DIR/spawned"
  _lab_state "pid $LAB_LAST_PID $st $name"
}

# lab_spawn_client NAME CMD... / lab_spawn_isp NAME CMD...: run a background process in the
# client / ISP netns; its pid is in LAB_LAST_PID, its output in $LAB_DIR/NAME.log.
lab_spawn_client() { _lab_need_up; _lab_spawn "$LAB_NS_C" "$@"; }
lab_spawn_isp() { _lab_need_up; _lab_spawn "$LAB_NS_I" "$@"; }

# lab_stop PID [SIGNAL] [TIMEOUT_S]: signal a lab process (default TERM) and wait until it is
# gone. Refuses PIDs that lab_spawn_* did not start.
lab_stop() {
  local pid=$1 sig=${2:-TERM} timeout=${3:-5} st
  st=$(awk -v p="$pid" '$1 == p { s = $2 } END { print s }' "$LAB_DIR/spawned" 2>/dev/null)
  [[ -n $st ]] || fail "lab_stop: $pid was not started by this lab"
  _lab_alive "$pid" "$st" || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  _lab_wait_until "$timeout" _lab_gone "$pid" "$st" ||
    fail "lab_stop: process $pid did not exit within ${timeout}s of SIG$sig"
}

_lab_ready_or_dead() { [[ -e $1 ]] || ! _lab_alive "$2"; }

# lab_wait_file PATH [TIMEOUT_S]: wait for a --ready-file.
lab_wait_file() {
  # 10 s (times LAB_WAIT_SCALE): a python that binds and writes its ready file takes well
  # under a second here, but over 20 s in a qemu guest on a machine that is busy too.
  _lab_wait_until "${2:-10}" test -e "$1" || fail "timed out waiting for $1"
}

# lab_checkpoint NAME: a named point in a scenario where the cleanup tests can break in.
#   KS_LAB_FAIL_AT=NAME  fail here ("forced failure"), as a failing assertion would;
#   KS_LAB_HANG_AT=NAME  write "hang NAME" to KS_LAB_STATE_FILE and wait here to be killed.
lab_checkpoint() {
  if [[ ${KS_LAB_FAIL_AT:-} == "$1" ]]; then
    fail "forced failure at checkpoint '$1' (KS_LAB_FAIL_AT)"
  fi
  if [[ ${KS_LAB_HANG_AT:-} == "$1" ]]; then
    lab_log "hanging at checkpoint '$1' (KS_LAB_HANG_AT)"
    _lab_state "hang $1"
    while :; do _lab_sleep 0.05; done
  fi
}

# ---- entering the namespaces --------------------------------------------------------------------
_lab_need_up() { [[ -n $LAB_ID ]] || fail "the lab is not up (call lab_up first)"; }

# lab_exec_client CMD... / lab_exec_isp CMD...: run CMD in the client / ISP netns. Only the
# network namespace changes: cgroups, bpffs, /sys/fs/cgroup stay the host's.
lab_exec_client() { _lab_need_up; nsenter --net="/run/netns/$LAB_NS_C" -- "$@"; }
lab_exec_isp() { _lab_need_up; nsenter --net="/run/netns/$LAB_NS_I" -- "$@"; }

# lab_probe_client ARGS... / lab_probe_isp ARGS...: run ks-probe in the client / ISP netns.
lab_probe_client() { lab_exec_client "$KS_PROBE" "$@"; }
lab_probe_isp() { lab_exec_isp "$KS_PROBE" "$@"; }

# ---- WireGuard (wireguard-go) -------------------------------------------------------------------
# wireguard-go puts its UAPI socket at /var/run/wireguard/<ifname>.sock, a path shared by all
# network namespaces: two labs (or a host VPN) with a "wg0" would collide ("unix socket in
# use"), and `wg` would configure the wrong daemon. So each wireguard-go runs in its own
# mount namespace with a private tmpfs on /run; `wg` is run inside that mount namespace
# (_lab_wg). The socket dies with the process: nothing stale is left behind.

# _lab_wg_spawn NS IFNAME PIDFILE: start wireguard-go in the foreground (-f keeps the PID:
# nsenter, env, unshare and sh all exec) in a private mount namespace.
_lab_wg_spawn() {
  local ns=$1 ifname=$2 pidfile=$3
  _lab_spawn "$ns" "wireguard-go-$ifname" \
    env LOG_LEVEL=verbose unshare --mount --propagation private -- \
    sh -c 'mount -t tmpfs -o mode=0755,size=1m ks-lab-run /run && exec wireguard-go -f "$1"' \
    sh "$ifname"
  echo "$LAB_LAST_PID" >"$pidfile"
}

# _lab_wg_ready NS PID IFNAME: wireguard-go answers (or died: stop waiting). Until the exec
# the process may still see the host's /run, so only talk to it once it is wireguard-go.
_lab_wg_ready() {
  _lab_alive "$2" || return 0
  [[ $(_lab_read "/proc/$2/comm") == wireguard-go ]] &&
    _lab_wg "$1" "$2" show "$3" >/dev/null 2>&1
}

# _lab_wg_wait NS IFNAME PIDFILE: wait until that wireguard-go answers on its UAPI socket.
_lab_wg_wait() {
  local ns=$1 ifname=$2 pid
  pid=$(_lab_read "$3") || fail "no pid file $3"
  _lab_wait_until 5 _lab_wg_ready "$ns" "$pid" "$ifname" ||
    fail "wireguard-go for $ifname did not come up: $(tail -5 "$LAB_DIR/wireguard-go-$ifname.log")"
  _lab_alive "$pid" ||
    fail "wireguard-go for $ifname died: $(tail -5 "$LAB_DIR/wireguard-go-$ifname.log")"
}

# _lab_wg NS PID ARGS...: run `wg ARGS` next to the wireguard-go with that PID.
_lab_wg() {
  local ns=$1 pid=$2
  shift 2
  nsenter --net="/run/netns/$ns" --mount="/proc/$pid/ns/mnt" -- wg "$@"
}

# _lab_read FILE: print its first line; fails quietly when it does not exist.
_lab_read() {
  local line
  { read -r line <"$1"; } 2>/dev/null || return 1
  [[ -n $line ]] && echo "$line"
}
_lab_client_wg_pid() { _lab_read "$LAB_DIR/wg-client.pid"; }
_lab_server_wg_pid() { _lab_read "$LAB_DIR/wg-server.pid"; }

# tunnel_wg ARGS... / server_wg ARGS...: `wg` for the client's wg0 / the server's wgs0.
tunnel_wg() {
  local pid
  pid=$(_lab_client_wg_pid) || fail "tunnel_wg: no client wireguard-go"
  _lab_wg "$LAB_NS_C" "$pid" "$@"
}
server_wg() {
  local pid
  pid=$(_lab_server_wg_pid) || fail "server_wg: no server wireguard-go"
  _lab_wg "$LAB_NS_I" "$pid" "$@"
}

_lab_server_tunnel_configure() {
  local allowed=$LAB_WG_CLIENT_IP4/32
  ((LAB_TUNNEL_IPV6)) && allowed+=,$LAB_WG_CLIENT_IP6/128
  server_wg set "$LAB_SERVER_TUNNEL_IF" private-key "$LAB_DIR/server.key" \
    listen-port "$LAB_WG_SERVER_PORT" peer "$(<"$LAB_DIR/client.pub")" allowed-ips "$allowed"
  lab_exec_isp sh -euc '
    ip link set "$1" addrgenmode none
    ip addr add "$2/24" dev "$1"
    [ "$4" = 0 ] || ip -6 addr add "$3/64" dev "$1" nodad
    ip link set "$1" up' sh "$LAB_SERVER_TUNNEL_IF" "$LAB_WG_SERVER_IP4" "$LAB_WG_SERVER_IP6" \
    "$LAB_TUNNEL_IPV6"
}

# Addresses and routes of a fresh or re-enabled wg0 (idempotent).
#  - IPv4: only 10.99.0.0/24 is routed via wg0. A socket bound to wg0 still reaches any IPv4
#    address through it: with no matching route the kernel assumes the destination is on-link
#    of the bound device.
#  - IPv6 (--tunnel-ipv6): IPv6 has no such fallback; a socket bound to wg0 gets ENETUNREACH
#    unless a route via wg0 exists. So the lab adds, like a VPN client's policy routing
#    would, `ip -6 rule oif wg0 lookup 51820` + `default dev wg0 table 51820`: only sockets
#    bound to wg0 use it; unbound IPv6 traffic still leaks via eth0. Without --tunnel-ipv6 a
#    socket bound to wg0 gets ENETUNREACH for IPv6 (an IPv4-only tunnel).
_lab_client_tunnel_addrs() {
  lab_exec_client sh -euc '
    ip addr replace "$2/32" dev "$1"
    [ "$4" = 0 ] || ip -6 addr replace "$3/128" dev "$1" nodad
    ip link set "$1" up
    ip route replace "${5%.*}.0/24" dev "$1"
    if [ "$4" != 0 ]; then
      ip -6 route replace "${6%::*}::/64" dev "$1"
      ip -6 route replace default dev "$1" table "$7"
      ip -6 rule del oif "$1" lookup "$7" 2>/dev/null || true
      ip -6 rule add oif "$1" lookup "$7" priority 1000
    fi' sh "$LAB_TUNNEL_IF" "$LAB_WG_CLIENT_IP4" "$LAB_WG_CLIENT_IP6" "$LAB_TUNNEL_IPV6" \
    "$LAB_WG_SERVER_IP4" "$LAB_WG_SERVER_IP6" "$LAB_WG_TABLE"
}

_lab_client_tunnel_configure() {
  tunnel_wg set "$LAB_TUNNEL_IF" private-key "$LAB_DIR/client.key" \
    listen-port "$LAB_WG_CLIENT_PORT" peer "$(<"$LAB_DIR/server.pub")" \
    endpoint "$LAB_GW_IP4:$LAB_WG_SERVER_PORT" allowed-ips 0.0.0.0/0,::/0
  # Like a kernel WireGuard interface: no IPv6 link-local address (the TUN device would get
  # one, and its RS/MLD would go into the tunnel and be dropped by the server).
  lab_exec_client ip link set "$LAB_TUNNEL_IF" addrgenmode none
  _lab_client_tunnel_addrs
}

_lab_client_tunnel_start() {
  _lab_wg_spawn "$LAB_NS_C" "$LAB_TUNNEL_IF" "$LAB_DIR/wg-client.pid"
  _lab_wg_wait "$LAB_NS_C" "$LAB_TUNNEL_IF" "$LAB_DIR/wg-client.pid"
  _lab_client_tunnel_configure
}

# lab_add_control_src [--ipv6]: the client's eth0 also gets LAB_CONTROL_IP4 (and
# LAB_CONTROL_IP6): a probe run with --src LAB_CONTROL_IP4 is the control.
lab_add_control_src() {
  lab_exec_client ip addr add "$LAB_CONTROL_IP4/24" dev "$LAB_CLIENT_PHYS"
  [[ ${1:-} != --ipv6 ]] ||
    lab_exec_client ip -6 addr add "$LAB_CONTROL_IP6/64" dev "$LAB_CLIENT_PHYS" nodad
}
# lab_add_control_dst: the "internet" host also answers on LAB_CONTROL_NET_IP4
# (LAB_CONTROL_TARGET4): probes sent there are the control.
lab_add_control_dst() { lab_exec_isp ip addr add "$LAB_CONTROL_NET_IP4/32" dev lo; }

# tunnel_ifindex: prints wg0's ifindex in the client netns (fails when wg0 does not exist).
tunnel_ifindex() {
  local line
  line=$(lab_exec_client ip -o link show dev "$LAB_TUNNEL_IF" 2>/dev/null) || return 1
  echo "${line%%:*}"
}

# tunnel_exists: wg0 exists in the client netns.
tunnel_exists() { lab_exec_client ip link show dev "$LAB_TUNNEL_IF" >/dev/null 2>&1; }

# tunnel_down / tunnel_up: `ip link set wg0 down/up`. tunnel_up restores what the kernel
# removed on down (routes, IPv6 addresses); the WireGuard configuration survives.
tunnel_down() { lab_exec_client ip link set "$LAB_TUNNEL_IF" down; }
tunnel_up() { _lab_client_tunnel_addrs; }

# tunnel_kill: SIGKILL the client's wireguard-go (a crashed VPN client); waits until the
# kernel has deleted wg0.
tunnel_kill() {
  _lab_need_up
  local pid
  pid=$(_lab_client_wg_pid) || fail "tunnel_kill: no client wireguard-go"
  lab_stop "$pid" KILL 5
  rm -f "$LAB_DIR/wg-client.pid"
  _lab_wait_until 5 _lab_not tunnel_exists ||
    fail "tunnel_kill: $LAB_TUNNEL_IF still exists after wireguard-go died"
}

# tunnel_recreate: kill the client wireguard-go if it runs, start a new one and configure
# it like lab_up did. Prints the new wg0 ifindex. `idx=$(tunnel_recreate)` works, but then
# the new wireguard-go is a child of the subshell and, once it dies, a zombie until init
# reaps it; calling it directly and then tunnel_ifindex avoids that.
tunnel_recreate() {
  _lab_need_up
  local pid
  if pid=$(_lab_client_wg_pid) && _lab_alive "$pid"; then tunnel_kill; fi
  _lab_client_tunnel_start >&2
  tunnel_ifindex
}

# tunnel_handshake_check [SINCE]: proves the WireGuard tunnel itself is up without sending from the
# client's tunnel address: a persistent keepalive makes the client's wireguard-go complete
# a fresh handshake with the server (then the keepalive is switched off again). Used
# where the client deliberately refuses all traffic of its tunnel address (ksd dead after
# a re-creation: its source rules fail closed until it is back).
_lab_handshake_after() {
  local latest
  latest=$(client_latest_handshake) || return 1
  ((latest >= $1))
}
client_latest_handshake() {
  local out
  out=$(tunnel_wg show "$LAB_TUNNEL_IF" latest-handshakes) || return 1
  echo "${out##*[[:space:]]}"
}
tunnel_handshake_check() { # [SINCE: epoch seconds a handshake may be as old as; default now]
  local since=${1:-} peer rc=0
  [[ -n $since ]] || since=$(date +%s)
  peer=$(<"$LAB_DIR/server.pub")
  tunnel_wg set "$LAB_TUNNEL_IF" peer "$peer" persistent-keepalive 1
  _lab_wait_until 5 _lab_handshake_after "$since" || rc=1
  tunnel_wg set "$LAB_TUNNEL_IF" peer "$peer" persistent-keepalive 0
  return $rc
}

# tunnel_check [COUNT]: a ks-probe bound to wg0 sends COUNT (default 3) datagrams to the echo
# server through the tunnel; succeeds when every one is echoed back.
tunnel_check() {
  local n=${1:-3} out
  out=$(lab_probe_client udp --dst "$LAB_TARGET4" --bind-dev "$LAB_TUNNEL_IF" --count "$n" \
    --interval-ms 1 --expect-reply --reply-wait-ms 2000) || return 1
  [[ $(json_get "$out" /replies) == "$n" ]] || {
    lab_log "tunnel_check: $out"
    return 1
  }
}

# ---- the leak detector --------------------------------------------------------------------------
_lab_capture_pid() { _lab_read "$LAB_DIR/capture.pid"; }

# tcpdump listens (or died: stop waiting).
_lab_capture_ready() { ! _lab_alive "$1" || grep -q "listening on" "$2" 2>/dev/null; }

# _lab_tcpdump_start NAME PRIORITY TCPDUMP_ARGS...: tcpdump ARGS in the ISP netns with the
# lab's capture settings (LAB_CAPTURE_*), its output in $LAB_DIR/NAME.tcpdump.log, at
# SCHED_FIFO PRIORITY. Fails when the priority cannot be set: a capture that can starve may
# drop frames. Returns once tcpdump listens: it prints "listening on IF" to stderr only after
# the packet socket is bound and the ring set up, so nothing sent afterwards can be missed.
# --immediate-mode makes libpcap use TPACKET_V2 (no TPACKET_V3 block timeout holding frames
# back) and -U writes each frame at once, so a SIGINT right after the last probe loses
# nothing. The pid is in LAB_LAST_PID.
_lab_tcpdump_start() {
  local name=$1 prio=$2 pid log err policy
  shift 2
  log=$LAB_DIR/$name.tcpdump.log
  rm -f "$log"
  _lab_spawn "$LAB_NS_I" "$name.tcpdump" tcpdump -n -U --immediate-mode -Z root \
    -B "$LAB_CAPTURE_BUFFER_KIB" -s "$LAB_CAPTURE_SNAPLEN" "$@"
  pid=$LAB_LAST_PID
  # Set on the pid at once (nsenter execs tcpdump; the policy survives exec), so tcpdump runs
  # at this priority before it listens; checked again below.
  err=$(chrt -f -p "$prio" "$pid" 2>&1) ||
    fail "capture $name: cannot run tcpdump at real-time priority (chrt -f -p $prio $pid: $err);" \
      "a starved capture drops frames and its leak count means nothing"
  _lab_wait_until 5 _lab_capture_ready "$pid" "$log" ||
    fail "capture $name: tcpdump did not start listening: $(cat "$log")"
  _lab_alive "$pid" || fail "capture $name: tcpdump died: $(cat "$log")"
  policy=$(chrt -p "$pid" 2>&1) || fail "capture $name: chrt -p $pid: $policy"
  [[ $policy == *SCHED_FIFO*"priority: $prio"* ]] ||
    fail "capture $name: tcpdump does not run at SCHED_FIFO $prio: $policy"
  LAB_LAST_PID=$pid
}

# _lab_tcpdump_stop PID NAME: SIGINT that capture, wait for it, and fail if the kernel
# dropped frames (the counts would be unreliable).
_lab_tcpdump_stop() {
  local pid=$1 name=$2 stats
  lab_stop "$pid" INT 5
  # tcpdump says "1 packet", "2 packets".
  stats=$(grep -E "packets? (captured|received by filter|dropped by kernel)" \
    "$LAB_DIR/$name.tcpdump.log" | tr '\n' ' ')
  lab_log "capture $name: $stats"
  [[ $stats =~ ([0-9]+)\ packets?\ dropped\ by\ kernel ]] ||
    fail "capture $name: tcpdump did not report its drop count: $(cat "$LAB_DIR/$name.tcpdump.log")"
  if ((BASH_REMATCH[1] > 0)); then
    fail "capture $name: the kernel dropped ${BASH_REMATCH[1]} frames; its counts are unreliable"
  fi
}

# capture_start [NAME [IF]]: the leak detector: tcpdump on isp0 (or IF, e.g. LAB_SIDE_ISP_IF;
# ISP netns) of every frame coming from the client, into $LAB_DIR/NAME.pcap (default "capture"), with LAB_CAPTURE_BUFFER_KIB,
# LAB_CAPTURE_SNAPLEN and SCHED_FIFO LAB_CAPTURE_PRIORITY (see "capture settings" above).
capture_start() {
  _lab_need_up
  local name=${1:-capture} iface=${2:-$LAB_ISP_IF} pid
  if pid=$(_lab_capture_pid) && _lab_alive "$pid"; then
    fail "capture_start: a capture is already running"
  fi
  local pcap=$LAB_DIR/$name.pcap
  rm -f "$pcap"
  _lab_tcpdump_start "$name" "$LAB_CAPTURE_PRIORITY" -i "$iface" -Q in -w "$pcap"
  echo "$LAB_LAST_PID" >"$LAB_DIR/capture.pid"
  echo "$pcap" >"$LAB_DIR/capture.current"
}

# capture_stop: SIGINT the capture, wait for it, check the kernel dropped nothing and that
# the leak predicate decides every captured frame (see LAB_CAPTURE_SNAPLEN).
capture_stop() {
  _lab_need_up
  local pid pcap
  pid=$(_lab_capture_pid) || fail "capture_stop: no capture running"
  pcap=$(<"$LAB_DIR/capture.current")
  _lab_tcpdump_stop "$pid" "$(basename "$pcap" .pcap)"
  rm -f "$LAB_DIR/capture.pid"
  _lab_capture_check_predicate
}

# Every captured frame must be either a leak or exempt. A filter that reads past the captured
# bytes (a snaplen too small for it) matches neither way, and would hide a leak.
_lab_capture_check_predicate() {
  local all leaks exempt
  all=$(capture_count)
  leaks=$(capture_count "$LAB_LEAK_FILTER")
  exempt=$(capture_count "$LAB_LEAK_EXEMPT")
  ((leaks + exempt == all)) ||
    fail "capture: $all frames, but $leaks leaks + $exempt exempt: the leak predicate reads" \
      "past the $LAB_CAPTURE_SNAPLEN captured bytes of some frames (LAB_CAPTURE_SNAPLEN)"
  lab_log "capture: $leaks leaked, $exempt exempt frames, of which" \
    "$(capture_count "$LAB_WG_UNREACH_FILTER") ICMP port unreachable for the WireGuard flow"
}

# capture_select NAME: make an earlier (stopped) capture the one leak_count & co. read.
capture_select() {
  [[ -e $LAB_DIR/$1.pcap ]] || fail "capture_select: no capture named '$1'"
  echo "$LAB_DIR/$1.pcap" >"$LAB_DIR/capture.current"
}

_lab_pcap() {
  local pid
  [[ -s $LAB_DIR/capture.current ]] || fail "no capture: call capture_start/capture_stop first"
  if pid=$(_lab_capture_pid) && _lab_alive "$pid"; then
    fail "the capture is still running: call capture_stop first"
  fi
  cat "$LAB_DIR/capture.current"
}

# capture_count [FILTER]: number of captured frames matching a pcap FILTER (default: all).
capture_count() {
  local pcap out
  pcap=$(_lab_pcap)
  out=$(tcpdump -r "$pcap" -n ${1:+"$1"} 2>"$LAB_DIR/read.err") ||
    fail "capture_count: tcpdump -r failed: $(cat "$LAB_DIR/read.err")"
  if [[ -z $out ]]; then echo 0; else wc -l <<<"$out"; fi
}

# leak_count [FILTER]: number of leaked frames (see LAB_LEAK_EXEMPT), optionally only those
# also matching FILTER (e.g. "udp and dst port 7000").
leak_count() {
  if [[ -n ${1:-} ]]; then
    capture_count "($LAB_LEAK_FILTER) and ($1)"
  else
    capture_count "$LAB_LEAK_FILTER"
  fi
}

# assert_no_leak MSG [FILTER]: no leaked frame (optionally: none that also matches FILTER, e.g.
# "not ($CONTROL)" for everything but a scenario's positive control) in the capture; else
# prints up to 20 of them and fails.
assert_no_leak() {
  local n
  n=$(leak_count "${2:-}")
  ((n == 0)) || leak_show "${2:-}" 20
  assert_eq "$n" 0 "$1"
}

# leak_show [FILTER] [MAX]: print the leaked frames (default at most 50) for diagnostics.
leak_show() {
  local pcap filter=$LAB_LEAK_FILTER
  pcap=$(_lab_pcap)
  [[ -z ${1:-} ]] || filter="($filter) and ($1)"
  tcpdump -r "$pcap" -n -e -tt -v "$filter" 2>/dev/null | head -n "${2:-50}" || true
}

# ---- reading captures by time --------------------------------------------------------------------
# pcap_window PCAP FROM TO FILTER: the frames of a stopped capture PCAP (tcpdump -n -tt lines,
# starting with the epoch timestamp) that match FILTER with FROM <= timestamp < TO.
pcap_window() {
  local out
  out=$(tcpdump -r "$1" -n -tt "$4" 2>"$LAB_DIR/read.err") ||
    fail "pcap_window: tcpdump -r $1 failed: $(cat "$LAB_DIR/read.err")"
  [[ -z $out ]] || awk -v a="$2" -v b="$3" '$1 >= a && $1 < b' <<<"$out"
}
# pcap_window_count PCAP FROM TO FILTER: how many.
pcap_window_count() {
  local out
  out=$(pcap_window "$@") || exit 1
  if [[ -z $out ]]; then echo 0; else wc -l <<<"$out"; fi
}
# pcap_first PCAP FROM FILTER: the timestamp of the first such frame at or after FROM (empty
# when there is none).
pcap_first() {
  local out
  out=$(pcap_window "$1" "$2" 9999999999 "$3") || exit 1
  [[ -z $out ]] || awk 'NR == 1 { print $1 }' <<<"$out"
}

# leak_count_between FROM TO [FILTER]: leak_count over the frames of the (stopped) leak
# capture with FROM <= timestamp < TO: per phase of a scenario.
leak_count_between() {
  local pcap filter=$LAB_LEAK_FILTER
  pcap=$(_lab_pcap)
  [[ -z ${3:-} ]] || filter="($filter) and ($3)"
  pcap_window_count "$pcap" "$1" "$2" "$filter"
}

# ---- the VPN server's side of the tunnel ------------------------------------------------------
# A capture on the server's wgs0 (ISP netns): the decrypted traffic that came through the
# tunnel, both ways, with timestamps. Scenarios read it after it stopped to tell what went
# through the tunnel in each phase; while they run, the cheap wgs0 packet counters
# (server_tx) pace them: reading a growing capture every 100 ms costs enough CPU to matter on
# a busy 2-CPU machine.
LAB_SERVER_PCAP=""

# server_capture_start: start it (LAB_CAPTURE_* settings; SCHED_FIFO at
# LAB_SERVER_CAPTURE_PRIORITY, below the leak detector), into LAB_SERVER_PCAP.
server_capture_start() {
  _lab_need_up
  LAB_SERVER_PCAP=$LAB_DIR/server.pcap
  rm -f "$LAB_SERVER_PCAP"
  _lab_tcpdump_start server "$LAB_SERVER_CAPTURE_PRIORITY" -i "$LAB_SERVER_TUNNEL_IF" \
    -w "$LAB_SERVER_PCAP"
  echo "$LAB_LAST_PID" >"$LAB_DIR/server-capture.pid"
}

# server_capture_stop: SIGINT it, wait for it, fail if the kernel dropped frames.
server_capture_stop() {
  local pid
  pid=$(_lab_read "$LAB_DIR/server-capture.pid") || fail "server_capture_stop: no server capture"
  _lab_tcpdump_stop "$pid" server
  rm -f "$LAB_DIR/server-capture.pid"
}

# server_count FROM TO FILTER / server_first FROM FILTER: pcap_window_count / pcap_first on it.
server_count() { pcap_window_count "$LAB_SERVER_PCAP" "$@"; }
server_first() { pcap_first "$LAB_SERVER_PCAP" "$@"; }

# server_tx: packets the VPN server has sent into the tunnel so far (replies to the client).
server_tx() {
  lab_exec_isp awk -v i="$LAB_SERVER_TUNNEL_IF:" '$1 == i { print $11 }' /proc/net/dev
}
# server_replies_since COUNT MIN: the server sent at least MIN packets into the tunnel since
# the server_tx reading COUNT.
server_replies_since() { (($(server_tx) - $1 >= $2)); }

# ---- lab_up / lab_down --------------------------------------------------------------------------
_lab_pick_id() {
  local s
  for s in "" a b c d e f g h i j k l m n o p q r s t u v w x y z; do
    if [[ ! -e /run/netns/ksl$$${s}c && ! -e /run/netns/ksl$$${s}i ]]; then
      echo "$$$s"
      return 0
    fi
  done
  _lab_die "no free lab id for pid $$"
}

# lab_up [--tunnel-ipv6]: build the lab (see the picture at the top), start the echo server
# and both wireguard-go, check the tunnel carries traffic. Sets LAB_ID, LAB_NS_C, LAB_NS_I,
# LAB_DIR, LAB_UP_MS and installs the EXIT/INT/TERM/HUP traps that run lab_down.
_lab_t() { [[ -z ${KS_LAB_TIMING:-} ]] || lab_log "t+$((($(_lab_now_us) - t0) / 1000)) ms: $1"; }
lab_up() {
  local t0
  t0=$(_lab_now_us)
  LAB_TUNNEL_IPV6=${KS_LAB_TUNNEL_IPV6:-0}
  while (($#)); do
    case $1 in
      --tunnel-ipv6) LAB_TUNNEL_IPV6=1 ;;
      *) _lab_die "lab_up: unknown option '$1'" ;;
    esac
    shift
  done
  [[ -z $LAB_ID ]] || _lab_die "lab_up: a lab is already up ($LAB_ID)"
  ((BASH_SUBSHELL == 0)) || _lab_die "lab_up must run in the main shell, not in a subshell"
  lab_reap_stale

  trap _lab_exit_handler EXIT
  trap 'exit 129' HUP
  trap 'exit 130' INT
  trap 'exit 143' TERM

  LAB_ID=$(_lab_pick_id)
  LAB_NS_C=ksl${LAB_ID}c
  LAB_NS_I=ksl${LAB_ID}i
  LAB_DIR=$(mktemp -d "/tmp/ksl$LAB_ID.XXXXXX")
  echo $$ >"$LAB_DIR/owner"
  : >"$LAB_DIR/spawned"
  _lab_state "dir $LAB_DIR"
  _lab_state "ns $LAB_NS_C"
  _lab_state "ns $LAB_NS_I"

  ip netns add "$LAB_NS_C" || _lab_die "ip netns add $LAB_NS_C failed"
  ip netns add "$LAB_NS_I" || _lab_die "ip netns add $LAB_NS_I failed"
  # No DAD: addresses are usable at once (the link-locals too). The client's rp_filter is
  # loose: replies arriving on wg0 for an address routed via eth0 must not be dropped.
  local sysctls='
    for k in all default; do
      echo 0 >/proc/sys/net/ipv6/conf/$k/accept_dad
      echo 2 >/proc/sys/net/ipv4/conf/$k/rp_filter
    done
    ip link set lo up'
  lab_exec_isp sh -euc "$sysctls"
  lab_exec_client sh -euc "$sysctls"

  # Both wireguard-go take ~100 ms to come up: start them now, configure them later.
  (
    umask 077
    wg genkey >"$LAB_DIR/client.key"
    wg genkey >"$LAB_DIR/server.key"
  )
  wg pubkey <"$LAB_DIR/client.key" >"$LAB_DIR/client.pub"
  wg pubkey <"$LAB_DIR/server.key" >"$LAB_DIR/server.pub"
  _lab_wg_spawn "$LAB_NS_I" "$LAB_SERVER_TUNNEL_IF" "$LAB_DIR/wg-server.pid"
  _lab_wg_spawn "$LAB_NS_C" "$LAB_TUNNEL_IF" "$LAB_DIR/wg-client.pid"

  # The veth is created inside the client netns with its peer directly in the ISP netns:
  # no interface ever appears in the host's namespace.
  lab_exec_client ip link add "$LAB_CLIENT_PHYS" type veth peer name "$LAB_ISP_IF" netns "$LAB_NS_I"
  lab_exec_isp sh -euc '
    ip addr add "$2/32" dev lo
    ip -6 addr add "$3/128" dev lo
    ip addr add "$4/24" dev "$1"
    ip -6 addr add "$5/64" dev "$1" nodad
    ip link set "$1" up' sh "$LAB_ISP_IF" "$LAB_NET_IP4" "$LAB_NET_IP6" "$LAB_GW_IP4" "$LAB_GW_IP6"
  lab_exec_client sh -euc '
    ip addr add "$2/24" dev "$1"
    ip -6 addr add "$3/64" dev "$1" nodad
    ip link set "$1" up
    ip route add default via "$4" dev "$1"
    ip -6 route add default via "$5" dev "$1"' sh \
    "$LAB_CLIENT_PHYS" "$LAB_CLIENT_IP4" "$LAB_CLIENT_IP6" "$LAB_GW_IP4" "$LAB_GW_IP6"
  _lab_t "netns+veth"
  lab_checkpoint lab-up-partial

  lab_spawn_isp echo-server "$KS_PROBE" echo-server \
    --tcp "0.0.0.0:$LAB_ECHO_PORT" --udp "0.0.0.0:$LAB_ECHO_PORT" \
    --tcp "[::]:$LAB_ECHO_PORT" --udp "[::]:$LAB_ECHO_PORT" --ready-file "$LAB_DIR/echo.ready"
  echo "$LAB_LAST_PID" >"$LAB_DIR/echo.pid"

  _lab_wg_wait "$LAB_NS_I" "$LAB_SERVER_TUNNEL_IF" "$LAB_DIR/wg-server.pid"
  _lab_server_tunnel_configure
  _lab_t "server tunnel"
  _lab_wg_wait "$LAB_NS_C" "$LAB_TUNNEL_IF" "$LAB_DIR/wg-client.pid"
  _lab_client_tunnel_configure
  _lab_t "client tunnel"

  _lab_wait_until 5 _lab_ready_or_dead "$LAB_DIR/echo.ready" "$(<"$LAB_DIR/echo.pid")" || true
  [[ -e $LAB_DIR/echo.ready ]] ||
    fail "lab_up: the echo server is not ready: $(cat "$LAB_DIR/echo-server.log")"
  _lab_t "echo ready"
  tunnel_check 1 || fail "lab_up: the WireGuard tunnel does not carry traffic"
  _lab_t "tunnel check"
  LAB_UP_MS=$((($(_lab_now_us) - t0) / 1000))
  lab_log "up in ${LAB_UP_MS} ms: netns $LAB_NS_C (client) $LAB_NS_I (ISP), wg0 ifindex" \
    "$(tunnel_ifindex), dir $LAB_DIR"
}

# lab_side_netns_up IFINDEX: a third netns, ksl<ID>x, with its own way to the ISP: veth
# x0 (created with ifindex IFINDEX, e.g. the tunnel's number) ↔ xisp0 in the ISP netns,
# 192.0.2.2/24 ↔ 192.0.2.1/24, default route via the ISP. For "a protected app enters
# another network namespace" tests; lab_down removes it. Prints the netns name.
lab_side_netns_up() {
  _lab_need_up
  local ns=ksl${LAB_ID}x
  ip netns add "$ns"
  # IPv4 only: no IPv6 autoconfiguration chatter (MLD, RS, DAD) on the link, so that every
  # frame the side namespace sends there is one a test sent.
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
    net.ipv6.conf.default.disable_ipv6=1
  ip -n "$ns" link set lo up
  ip -n "$ns" link add "$LAB_SIDE_IF" index "$1" type veth peer name "$LAB_SIDE_ISP_IF" \
    netns "$LAB_NS_I"
  ip -n "$ns" addr add "$LAB_SIDE_IP4/24" dev "$LAB_SIDE_IF"
  ip -n "$ns" link set "$LAB_SIDE_IF" up
  ip -n "$LAB_NS_I" addr add "$LAB_SIDE_GW_IP4/24" dev "$LAB_SIDE_ISP_IF"
  ip -n "$LAB_NS_I" link set "$LAB_SIDE_ISP_IF" up
  ip -n "$ns" route add default via "$LAB_SIDE_GW_IP4"
  echo "$ns"
}

# _lab_kill_ns NS: SIGKILL every process in netns NS until none is left, and wait until each
# is gone: a process leaves its namespaces early in its exit, while it still runs (a
# wireguard-go's threads, a tcpdump's capture take a moment).
_lab_kill_ns() {
  local ns=$1 pids i killed=() pid
  [[ -e /run/netns/$ns ]] || return 0
  for ((i = 0; i < 500; i++)); do
    pids=$(ip netns pids "$ns" 2>/dev/null) || pids=""
    if [[ -z $pids ]]; then
      for pid in "${killed[@]}"; do
        _lab_wait_until 5 _lab_gone "$pid" || lab_log "WARNING: pid $pid still runs after SIGKILL"
      done
      return 0
    fi
    # shellcheck disable=SC2206
    killed+=($pids)
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    _lab_sleep 0.01
  done
  lab_log "WARNING: processes still in $ns after SIGKILL: $(ip netns pids "$ns" | tr '\n' ' ')"
  return 1
}

# lab_down: kill everything the lab started (every process in its namespaces), delete both
# namespaces (which destroys the veth and the tunnels) and the temp dir. Idempotent.
lab_down() {
  [[ -n $LAB_ID ]] || return 0
  local ns rc=0 pid st name
  # Processes in the namespaces (wireguard-go, tcpdump, echo server, probes, ksd, ...).
  for ns in "$LAB_NS_C" "$LAB_NS_I" "ksl${LAB_ID}x"; do _lab_kill_ns "$ns" || rc=1; done
  # Anything lab_spawn_* started that somehow left the namespaces.
  # A process leaves its namespaces early in its exit, before it is gone (a wireguard-go's
  # threads take a moment): each is waited for, so that nothing of the lab still runs once
  # lab_down returns.
  if [[ -s $LAB_DIR/spawned ]]; then
    while read -r pid st name; do
      _lab_alive "$pid" "$st" || continue
      kill -KILL "$pid" 2>/dev/null || true
      _lab_wait_until 1 _lab_gone "$pid" "$st" && continue # (it was exiting)
      lab_log "killed $name ($pid) outside the lab namespaces"
      _lab_wait_until 5 _lab_gone "$pid" "$st" ||
        { lab_log "WARNING: $name ($pid) still runs after SIGKILL" && rc=1; }
    done <"$LAB_DIR/spawned"
  fi
  for ns in "$LAB_NS_C" "$LAB_NS_I" "ksl${LAB_ID}x"; do
    if [[ -e /run/netns/$ns ]]; then ip netns del "$ns" || rc=1; fi
  done
  if [[ ${KS_LAB_KEEP:-0} == 1 ]]; then
    rm -f "$LAB_DIR/owner" # lab_reap_stale leaves it alone
    lab_log "kept $LAB_DIR (KS_LAB_KEEP=1)"
  else
    rm -rf "$LAB_DIR"
  fi
  LAB_ID="" LAB_NS_C="" LAB_NS_I="" LAB_DIR=""
  return $rc
}

# lab_reap_stale: remove labs whose owner shell is gone (e.g. SIGKILLed by a ctest timeout,
# so its EXIT trap never ran). A lab's netns names carry the owner PID (ksl<PID>[a-z]c/i/x);
# labs whose owner PID still exists are left alone. lab_up calls it.
lab_reap_stale() {
  local f name owner d
  for f in /run/netns/ksl*; do
    [[ -e $f ]] || continue
    name=${f##*/}
    [[ $name =~ ^ksl([0-9]+)[a-z]?[cix]$ ]] || continue
    owner=${BASH_REMATCH[1]}
    [[ $owner != "$$" ]] || continue
    [[ ! -e /proc/$owner ]] || continue
    lab_log "reaping stale lab netns $name (owner $owner is gone)"
    _lab_kill_ns "$name" || true
    ip netns del "$name" 2>/dev/null || true
  done
  for d in /tmp/ksl[0-9]*.*; do
    [[ -d $d ]] || continue
    owner=$(_lab_read "$d/owner") || continue
    [[ $owner =~ ^[0-9]+$ && $owner != "$$" && ! -e /proc/$owner ]] || continue
    # Under qemu (scripts/run-in-kernel.sh) /tmp is the host's, seen through an overlay: a
    # host lab's directory has an owner PID the guest does not know, and the host may still
    # be writing into it ("Directory not empty"). Reaping is housekeeping, never a failure.
    rm -rf "$d" 2>/dev/null || lab_log "could not remove stale lab directory $d"
  done
}

# Printed when a scenario fails while the lab is up.
_lab_diagnostics() {
  echo "---- lab diagnostics ($LAB_ID) ----"
  echo "# client:"
  lab_exec_client ip -br addr 2>&1 | sed 's/^/  /'
  lab_exec_client ip route 2>&1 | sed 's/^/  /'
  lab_exec_client ip -6 route 2>&1 | sed 's/^/  /'
  echo "# client wg:"
  tunnel_wg show 2>&1 | sed 's/^/  /' || true
  local f
  for f in "$LAB_DIR"/*.log; do
    [[ -s $f ]] || continue
    echo "# $(basename "$f") (last lines):"
    tail -n 8 "$f" | sed 's/^/  /'
  done
  echo "----"
}

# Teardown steps of the libraries (killswitch.sh adds ks_down): they run at exit after the
# scenario's own lab_on_exit, whatever that one does, and one that cannot remove
# everything fails the scenario.
LAB_EXIT_HOOKS=()

_lab_exit_handler() {
  local rc=$? hook
  trap - EXIT
  if declare -F lab_on_exit >/dev/null; then lab_on_exit || true; fi
  for hook in "${LAB_EXIT_HOOKS[@]}"; do
    "$hook" || {
      echo "FAIL: cleanup: $hook could not remove everything" >&2
      ((rc != 0)) || rc=1
    }
  done
  if ((rc != 0)) && [[ -n $LAB_ID ]]; then _lab_diagnostics >&2 || true; fi
  local first_failure=""
  if ((rc != 0)); then first_failure=$(_lab_first_failure); fi
  lab_down || {
    echo "FAIL: lab_down could not clean up completely" >&2
    ((rc != 0)) || rc=1
  }
  if ((rc != 0)); then
    echo "FAIL: $KS_LAB_SCENARIO exited with status $rc${first_failure:+ (first failure: $first_failure)}" >&2
  fi
  exit "$rc"
}
