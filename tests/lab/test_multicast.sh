#!/usr/bin/env bash
# shellcheck disable=SC2016  # sh -c scripts take "$1"...
# Multicast group joins: the kernel's membership reports (IGMP, MLD) leave through the
# interface a group is joined on, sent by the kernel itself with no socket attached, so no
# socket hook or egress program sees them. cgroup/setsockopt judges the join instead.
#   1. positive control: an unprotected process joins groups on eth0 with every API
#      (IP_ADD_MEMBERSHIP with ip_mreqn and ip_mreq, IP_ADD_SOURCE_MEMBERSHIP,
#      MCAST_JOIN_GROUP and MCAST_JOIN_SOURCE_GROUP at SOL_IP and SOL_IPV6,
#      IPV6_JOIN_GROUP), by index, by address and unnamed: the joins succeed and the leak
#      detector sees the IGMP and MLD reports for its groups on the physical link;
#   2. protected (ksrun, as nobody): the same joins on eth0, by address and unnamed are
#      refused with EPERM; a join on the tunnel and on loopback (by index) works; a join in
#      a buffer longer than a page is judged like any other; a non-join setsockopt longer
#      than a page still works; no report for any of its groups on the physical link;
#   3. each refused join is counted (blocked_connects of the app) and is an "mcast_join"
#      event with the group, the interface asked for and the reason;
#   4. a membership on the tunnel while the tunnel dies (VPN client crash) and is re-created
#      with a new ifindex: still no report on the physical link, and the app cannot join
#      there meanwhile;
#   5. as root under ksrun (CAP_NET_ADMIN removed): IPV6_JOIN_ANYCAST refused too.
# The control has a capture of its own (its reports go on for seconds after its joins); a
# second capture covers everything protected, and its leak count must be 0 with nothing
# left out: any IGMP frame, and any MLD report that names a group other than the kernel's
# solicited-node groups, is a leak (the lab's predicate, lib.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

JOIN=$KS_SOURCE_DIR/tests/lab/mcast_join.py
py() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

# Every API on the physical link, by index, by address and unnamed. $1: IPv4 group prefix
# (239.x.x), $2: IPv6 group prefix (ff15::x), $3/$4: SSM group prefixes (232.x.x / ff35::x).
phys_cases() {
  local g4=$1 g6=$2 s4=$3 s6=$4 ip4=$LAB_CLIENT_IP4
  echo "mreqn,$g4.11,eth0 mreqn,$g4.12,$ip4 mreqn,$g4.13, mreq,$g4.14,$ip4 mreq,$g4.15,"
  echo "source,$s4.16,$ip4,$LAB_GW_IP4 group,$g4.17,eth0 group,$g4.18, sgroup,$s4.19,eth0,$LAB_GW_IP4"
  echo "group6,$g6:21,eth0 group6,$g6:22, sgroup6,$s6:23,eth0,$LAB_GW_IP6 ipv6,$g6:24,eth0"
  echo "ipv6,$g6:25, biggroup,$g4.26,eth0"
}
# reports GROUP: IGMP/MLD frames in the capture that name GROUP among their first records
# (tcpdump -v decodes them; the capture's snaplen keeps about 9 IGMPv3 and 2 MLDv2
# records: a report of more is a leak either way). `ip6`, not `icmp6`: MLD comes behind a
# hop-by-hop header.
reports() {
  tcpdump -r "$(_lab_pcap)" -n -v 'igmp or ip6' 2>/dev/null | grep -c -w -F -- "$1" || true
}

lab_up
ks_up
ks_wait_tunnel_state up
WG_INDEX=$(tunnel_ifindex)
capture_start control

# ---- 1. positive control ---------------------------------------------------------------------------
# shellcheck disable=SC2046  # one word per case
out=$(lab_exec_client python3 "$JOIN" --hold 2 $(phys_cases 239.3.3 ff15::3 232.3.3 ff35::3))
lab_log "unprotected joins: $out"
for c in $(phys_cases 239.3.3 ff15::3 232.3.3 ff35::3); do
  assert_eq "$(py "d['$c']" <<<"$out")" ok "unprotected join $c"
done
out=$(lab_exec_client python3 "$JOIN" "anycast,2001:db8:1::97,eth0")
assert_eq "$(py "d['anycast,2001:db8:1::97,eth0']" <<<"$out")" ok "unprotected root: anycast join works"
sleep 3 # the reports' retransmissions, and the leave reports
capture_stop
control=0
for c in $(phys_cases 239.3.3 ff15::3 232.3.3 ff35::3); do
  IFS=, read -r _ group _ <<<"$c"
  n=$(reports "$group")
  lab_log "control group $group: $n report(s) on eth0"
  control=$((control + n))
done
assert_gt "$control" 0 "control: membership reports on the physical link"
assert_gt "$(reports 239.3.3.11)" 0 "control: IGMP report for an ip_mreqn join on eth0"
assert_gt "$(reports 239.3.3.13)" 0 "control: IGMP report for an unnamed join (the kernel picks eth0)"
assert_gt "$(reports ff15::3:24)" 0 "control: MLD report for an IPV6_JOIN_GROUP on eth0"
assert_gt "$(leak_count)" 0 "control: the leak detector counts them as leaks"

capture_start protected

# ---- 2. protected, as nobody --------------------------------------------------------------------------
# shellcheck disable=SC2046
out=$(ks_run_nobody python3 "$JOIN" $(phys_cases 239.2.2 ff15::2 232.2.2 ff35::2) \
  "mreqn,239.2.2.31,wg0" "group,239.2.2.32,wg0" "mreqn,239.2.2.33,lo" "biggroup,239.2.2.34,wg0" \
  "bigsndbuf,,")
lab_log "protected joins: $out"
for c in $(phys_cases 239.2.2 ff15::2 232.2.2 ff35::2); do
  assert_eq "$(py "d['$c']" <<<"$out")" EPERM "protected join $c refused"
done
for c in mreqn,239.2.2.31,wg0 group,239.2.2.32,wg0 mreqn,239.2.2.33,lo biggroup,239.2.2.34,wg0 "bigsndbuf,,"; do
  assert_eq "$(py "d['$c']" <<<"$out")" ok "protected $c works"
done

# ---- 3. counters and events ---------------------------------------------------------------------------
seq0=$(ks_ctl events --json --limit 1 | py "d['next_seq']")
connects0=$(ks_ctl status --json | py "d['profiles']['default']['counters']['blocked_connects']")
out=$(ks_run_client python3 "$JOIN" "mreqn,239.2.2.41,eth0" "group6,ff15::2:42,")
assert_eq "$(py "d['mreqn,239.2.2.41,eth0']" <<<"$out")" EPERM "protected join on eth0 refused"
connects1=$(ks_ctl status --json | py "d['profiles']['default']['counters']['blocked_connects']")
# blocked_connects also counts refused unix-socket connects, which a protected Python can
# make at start-up (glibc asking nscd for a user name, pyenv's shell scripts): at least 2.
assert_ge "$((connects1 - connects0))" 2 "the two refused joins are counted"
# joins: the mcast_join events since seq0, as {"events": [...]}.
joins() {
  ks_ctl events --json --since "$seq0" |
    py "json.dumps({'events': [e for e in d['events'] if e['hook'] == 'mcast_join']})"
}
got_events() { (($(joins | py "len(d['events'])") >= 2)); }
_lab_wait_until 5 got_events || fail "no events for the refused joins: $(ks_ctl events --json --since "$seq0")"
ev=$(joins)
lab_log "events: $ev"
assert_eq "$(py "len(d['events'])" <<<"$ev")" 2 "exactly two mcast_join events"
assert_eq "$(py "d['events'][0]['destination']" <<<"$ev")" 239.2.2.41 "event 0: the group"
assert_eq "$(py "d['events'][0]['reason']" <<<"$ev")" not_tunnel "event 0: reason"
assert_ne "$(py "d['events'][0]['ifindex']" <<<"$ev")" 0 "event 0: the interface asked for"
assert_eq "$(py "d['events'][1]['destination']" <<<"$ev")" ff15::2:42 "event 1: the group"
assert_eq "$(py "d['events'][1]['reason']" <<<"$ev")" join_unnamed "event 1: reason"
assert_eq "$(py "d['events'][1]['ifindex']" <<<"$ev")" 0 "event 1: no interface asked for"
human=$(ks_ctl events --since "$seq0")
[[ $human == *mcast_join*239.2.2.41* ]] || fail "ksctl events does not show the join: $human"
pass "refused joins are counted and reported"

# ---- 4. a membership on the tunnel while the tunnel dies and comes back -----------------------------
ks_spawn_protected member python3 "$JOIN" --hold 30 --ready "$LAB_DIR/member.ready" \
  "mreqn,239.2.2.51,wg0" "group,239.2.2.52,wg0"
MEMBER=$LAB_LAST_PID
lab_wait_file "$LAB_DIR/member.ready" 10 "$MEMBER"
tunnel_kill
ks_wait_tunnel_state missing
out=$(ks_run_client python3 "$JOIN" "mreqn,239.2.2.53,eth0" "mreqn,239.2.2.54," "mreqn,239.2.2.55,wg0")
assert_eq "$(py "d['mreqn,239.2.2.53,eth0']" <<<"$out")" EPERM "tunnel gone: join on eth0 refused"
assert_eq "$(py "d['mreqn,239.2.2.54,']" <<<"$out")" EPERM "tunnel gone: unnamed join refused"
[[ $(py "d['mreqn,239.2.2.55,wg0']" <<<"$out") != ok ]] || fail "tunnel gone: join on wg0 worked"
sleep 2
tunnel_recreate >/dev/null
ks_wait_tunnel_state up
[[ $(tunnel_ifindex) != "$WG_INDEX" ]] || fail "the tunnel came back with the same ifindex"
out=$(ks_run_client python3 "$JOIN" "mreqn,239.2.2.56,wg0")
assert_eq "$(py "d['mreqn,239.2.2.56,wg0']" <<<"$out")" ok "re-created tunnel: join on the new wg0 works"
sleep 2
lab_stop "$MEMBER" TERM 5

# ---- 5. root under ksrun: anycast -------------------------------------------------------------------
out=$(ks_run_client python3 "$JOIN" "anycast,2001:db8:1::99,eth0" "anycast,2001:db8:1::98,")
assert_eq "$(py "d['anycast,2001:db8:1::99,eth0']" <<<"$out")" EPERM "anycast join on eth0 refused"
assert_eq "$(py "d['anycast,2001:db8:1::98,']" <<<"$out")" EPERM "unnamed anycast join refused"

sleep 1
capture_stop

# ---- the physical link, protected --------------------------------------------------------------------
for c in $(phys_cases 239.2.2 ff15::2 232.2.2 ff35::2) x,239.2.2.41 x,ff15::2:42 \
  x,239.2.2.51 x,239.2.2.52 x,239.2.2.53 x,239.2.2.54 x,239.2.2.55 x,239.2.2.56 x,239.2.2.31 \
  x,239.2.2.32 x,239.2.2.34; do
  IFS=, read -r _ group _ <<<"$c"
  assert_eq "$(reports "$group")" 0 "no report for the protected group $group on eth0"
done
assert_eq "$(capture_count igmp)" 0 "no IGMP frame at all"
assert_no_leak "no leaked frame (membership reports included)"
pass "no membership report of a protected app on the physical link"
