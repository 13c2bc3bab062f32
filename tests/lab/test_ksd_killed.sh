#!/usr/bin/env bash
# ksd SIGKILLed while protected traffic runs without pause; then the tunnel dies and is
# re-created while ksd is still dead; then ksd starts again.
#
# A protected UDP sender (one long-lived unconnected socket, a datagram every 2 ms, expecting
# echoes) and a protected TCP loop (a new socket per attempt, every 40 ms) run through:
#   A. ksd SIGKILLed, tunnel up: enforcement stays (pinned links and maps); traffic keeps
#      flowing through the tunnel and replies keep coming;
#   B. ksd dead, tunnel killed (wireguard-go SIGKILLed, wg0 deleted): nothing leaks, sends
#      and connects fail at once;
#   C. ksd dead, tunnel re-created (new ifindex, it carries traffic): protected traffic stays
#      blocked: nothing leaks AND nothing goes through the new tunnel (no ksd to adopt it).
#      A NEW ksrun is refused (125) and its command never runs;
#   D. ksd started again: it re-adopts the pinned state, updates the maps, and the running
#      protected programs resume by themselves; `ksctl status` shows the new ifindex and the
#      programs attached and pinned; every hook is attached exactly once (no duplicate
#      attachment from the restart).
# One leak capture on the physical link spans A-D; a second capture on the VPN server's wgs0
# shows, by timestamp, what went through the tunnel in each phase. Phase probes: protected
# processes started before the kill, each blocked on its FIFO, run one TCP connect and 20
# datagrams in their phase with fresh sockets (a new ksrun cannot start while ksd is dead).
# Positive control: the same probes (long-lived UDP sender, TCP loop, phase probes) run
# unprotected at the same time, under the same conditions, towards a second "internet"
# address ($LAB_CONTROL_NET_IP4, also served by the echo server), so their frames can be told
# apart; the detector must see them leak in phases A, B and C.
# Kernel-made answers sourced from the tunnel address (TCP RST, ICMP port unreachable for
# replies that come back through the tunnel after a protected socket is gone) count as leaks
# like any other frame.
# shellcheck disable=SC2016,SC2119  # sh -c scripts take "$1"...; lab_up/ks_up take options
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

command -v bpftool >/dev/null 2>&1 || fail "bpftool is missing (scripts/install-deps.sh); refusing to run"
command -v ss >/dev/null 2>&1 || fail "ss (iproute2) is missing; refusing to run"

PHASE_S=1.2 # how long each phase lasts at least
# The long-lived control probes are the protected ones at a lower rate: a leak is a leak at
# any rate.
CONTROL_UDP_MS=20
CONTROL_TCP_MS=50
# The protected senders: as fast as the leak capture reliably keeps up with when two labs
# run at once on this 2-CPU machine (1 ms and 20 ms made it drop frames).
# Under qemu's emulation (LAB_WAIT_SCALE) the UDP sender goes LAB_WAIT_SCALE times slower: the
# emulated guest cannot keep up anyway, its CPU is what CI's time goes to, and the counts
# asserted below scale with it.
UDP_MS=$((2 * LAB_WAIT_SCALE))
TCP_MS=40

# ---- helpers ---------------------------------------------------------------------------------
# fast_errno LABEL ERRNO: a protected connect/send refused at once must say ENETUNREACH or
# EPERM (docs/interface.md).
fast_errno() {
  case $2 in
    ENETUNREACH | EPERM) pass "$1 ($2)" ;;
    *) fail "$1: $2, expected ENETUNREACH or EPERM" ;;
  esac
}

# ---- the VPN server's capture (server_capture_start): what came through the tunnel ----------
# Filters on wgs0 (decrypted, at the VPN server). The long-lived sender is told apart from
# the phase probes by its source port.
FROM_CLIENT="ip and src host $LAB_WG_CLIENT_IP4"
TO_CLIENT="ip and dst host $LAB_WG_CLIENT_IP4"
long_udp_replies() { echo "$TO_CLIENT and udp and src port $LAB_ECHO_PORT and dst port $LONG_PORT"; }
TCP_ECHO="$TO_CLIENT and tcp and src port $LAB_ECHO_PORT and tcp[tcpflags] & tcp-push != 0"

# ---- phase probes ------------------------------------------------------------------------------
# spawn_phase_probe NAME DST [ksrun]: a process that waits for a line on the FIFO
# $LAB_DIR/NAME.go, then runs one TCP connect-time and 20 datagrams (fresh sockets), JSON
# lines into $LAB_DIR/NAME.log. Blocking on a FIFO costs no CPU while it waits.
declare -A PHASE_PID
spawn_phase_probe() {
  local name=$1 dst=$2 script
  mkfifo -m 600 "$LAB_DIR/$name.go"
  script='read -r go <"$1"
    "$2" connect-time --dst "$3" --timeout-ms 2000
    exec "$2" udp --dst "$3" --count 20 --interval-ms 1 --expect-reply --reply-wait-ms "$4"'
  # How long the echoes may take: 500 ms, longer under emulation (LAB_WAIT_SCALE).
  local reply_wait_ms=$((500 * LAB_WAIT_SCALE))
  if [[ ${3:-} == ksrun ]]; then
    ks_spawn_protected "$name" sh -c "$script" sh "$LAB_DIR/$name.go" "$KS_PROBE" "$dst" \
      "$reply_wait_ms"
  else
    lab_spawn_client "$name" sh -c "$script" sh "$LAB_DIR/$name.go" "$KS_PROBE" "$dst" \
      "$reply_wait_ms"
  fi
  PHASE_PID[$name]=$LAB_LAST_PID
}
# run_phase_probes PHASE: trigger the protected and the control probe of PHASE, wait for both.
# The FIFOs are opened read-write (never blocks) and kept open until the probes are done.
run_phase_probes() {
  local fd1 fd2 name
  exec {fd1}<>"$LAB_DIR/$1.go" {fd2}<>"$LAB_DIR/ctl-$1.go"
  echo go >&"$fd1"
  echo go >&"$fd2"
  for name in "$1" "ctl-$1"; do
    _lab_wait_until 5 _lab_gone "${PHASE_PID[$name]}" || fail "phase probe $name did not finish"
  done
  exec {fd1}>&- {fd2}>&-
}
phase_json() { sed -n "${2}p" "$LAB_DIR/$1.log"; } # phase_json NAME LINE (1: connect, 2: udp)

# ksrun_refused_while_dead PHASE: a NEW ksrun while ksd is dead exits 125, says why, and its
# command (which would create a marker file) never runs.
ksrun_refused_while_dead() {
  local marker=$LAB_DIR/marker-$1 rc=0 err
  err=$(lab_exec_client "$KS_KSRUN" --socket "$KS_SOCK" -- sh -c 'touch "$1"' sh "$marker" 2>&1) ||
    rc=$?
  assert_eq "$rc" 125 "$1: a new ksrun is refused while ksd is dead"
  [[ $err == *"cannot reach ksd"* ]] || fail "$1: ksrun does not say why: $err"
  pass "$1: ksrun says why: $(head -n 1 <<<"$err")"
  assert_fails "$1: the refused command never ran (no marker file)" test -e "$marker"
}

# bpftool_attach_types CGROUP [effective]: the attach types, sorted, space-separated.
bpftool_attach_types() {
  bpftool cgroup show "$@" | awk 'NR > 1 && NF { print $2 }' | sort | tr '\n' ' '
}

# ---- setup ---------------------------------------------------------------------------------------
lab_up
ks_up
ks_wait_tunnel_state up
lab_add_control_dst
IDX1=$(tunnel_ifindex)
TYPES_BEFORE=$(bpftool_attach_types "$KS_CGROUP_ROOT")
[[ -n $TYPES_BEFORE ]] || fail "no program attached to $KS_CGROUP_ROOT after ks_up"

for p in A B C; do
  spawn_phase_probe "$p" "$LAB_TARGET4" ksrun
  spawn_phase_probe "ctl-$p" "$LAB_CONTROL_TARGET4"
done

capture_start all
server_capture_start
T0=$(lab_now)
ks_spawn_protected udp-sender "$KS_PROBE" udp --dst "$LAB_TARGET4" --duration 600 \
  --interval-ms "$UDP_MS" --expect-reply --ready-file "$LAB_DIR/udp.ready"
UDP_PID=$LAB_LAST_PID
ks_spawn_protected tcp-loop "$KS_PROBE" tcp --dst "$LAB_TARGET4" --duration 600 \
  --interval-ms "$TCP_MS" --timeout-ms 1000 --ready-file "$LAB_DIR/tcp.ready"
TCP_PID=$LAB_LAST_PID
lab_spawn_client ctl-udp-sender "$KS_PROBE" udp --dst "$LAB_CONTROL_TARGET4" --duration 600 \
  --interval-ms "$CONTROL_UDP_MS" --expect-reply --ready-file "$LAB_DIR/ctl-udp.ready"
CTL_UDP_PID=$LAB_LAST_PID
lab_spawn_client ctl-tcp-loop "$KS_PROBE" tcp --dst "$LAB_CONTROL_TARGET4" --duration 600 \
  --interval-ms "$CONTROL_TCP_MS" --timeout-ms 1000 --ready-file "$LAB_DIR/ctl-tcp.ready"
CTL_TCP_PID=$LAB_LAST_PID
for f in udp tcp ctl-udp ctl-tcp; do lab_wait_file "$LAB_DIR/$f.ready"; done
LONG_PORT=""
long_port_known() {
  LONG_PORT=$(lab_exec_client ss -Hunap | awk -v p="pid=$UDP_PID," 'index($0, p) {
    n = split($4, a, ":"); print a[n]; exit }')
  [[ -n $LONG_PORT && $LONG_PORT != 0 ]]
}
_lab_wait_until 5 long_port_known || fail "no socket of the protected UDP sender in ss"
lab_poll_until 5 ks_app_grows "$UDP_PID" allowed_packets 0 100 ||
  fail "protected UDP does not flow through the tunnel"
lab_poll_until 5 ks_app_grows "$TCP_PID" allowed_packets 0 20 ||
  fail "protected TCP does not flow through the tunnel"
UDP_CGROUP=$(lab_cgroup_of "$UDP_PID")
[[ $UDP_CGROUP == /$KS_SLICE/* ]] || fail "the UDP sender is not in the protected tree: $UDP_CGROUP"
pass "protected UDP sender (port $LONG_PORT) and TCP loop run through the tunnel; wg0 ifindex $IDX1"

# ---- A: ksd SIGKILLed, tunnel up ------------------------------------------------------------------
T_KILL=$(lab_now)
ks_kill9
T_A=$(lab_now)
out=$(ks_ctl status --json) && fail "ksctl status succeeds with ksd dead: $out"
assert_eq "$(json_get "$out" /daemon)" "not running" "A: ksctl status: daemon not running"
assert_eq "$(json_get "$out" /programs/pinned)" true "A: ksctl status: enforcement still pinned"
run_phase_probes A
assert_eq "$(json_get "$(phase_json A 1)" /errno)" 0 \
  "A: a new protected TCP connect works with ksd dead"
assert_eq "$(json_get "$(phase_json A 2)" /replies)" 20 \
  "A: new protected datagrams are echoed with ksd dead"
lab_sleep_until "$(lab_plus "$T_A" "$PHASE_S")"

# ---- B: ksd dead, tunnel killed -------------------------------------------------------------------
T_TK0=$(lab_now)
tunnel_kill
T_B=$(lab_now)
run_phase_probes B
ct=$(phase_json B 1)
fast_errno "B: a protected connect fails" "$(json_get "$ct" /errno)"
assert_le "$(json_get "$ct" /ms)" 50 "B: ... at once (ms)"
u=$(phase_json B 2)
assert_eq "$(json_get "$u" /attempts)" 20 "B: the protected phase probe tried 20 sends"
assert_eq "$(json_get "$u" /sent)" 0 "B: no protected datagram is sent"
assert_eq "$(json_get "$u" /replies)" 0 "B: no protected reply"
for e in $(json_pairs "$u" /errors | cut -d: -f1); do fast_errno "B: protected sendto fails" "$e"; done
assert_le "$(json_get "$u" /duration_ms)" 500 "B: 20 refused sendto take no time (ms)"
ksrun_refused_while_dead B
lab_sleep_until "$(lab_plus "$T_B" "$PHASE_S")"

# ---- C: ksd dead, tunnel re-created ---------------------------------------------------------------
T_RC0=$(lab_now)
RC0_S=$(date +%s)
tunnel_recreate >/dev/null
IDX2=$(tunnel_ifindex)
assert_ne "$IDX2" "$IDX1" "C: the re-created wg0 has a new ifindex"
# With ksd dead the tunnel address is refused for everyone (ksd's source rules fail closed
# until it is back), so the tunnel itself is proven up by a fresh WireGuard handshake: one
# since the re-creation (a slow machine may have made it before the check begins).
assert_ok "C: the new tunnel is up (fresh WireGuard handshake)" tunnel_handshake_check "$RC0_S"
assert_fails "C: ... but its address carries nothing while ksd is dead" tunnel_check 1
T_C=$(lab_now) # after tunnel_check: from here on nothing may reach the server from the client
run_phase_probes C
ct=$(phase_json C 1)
fast_errno "C: a protected connect fails" "$(json_get "$ct" /errno)"
assert_le "$(json_get "$ct" /ms)" 50 "C: ... at once (ms)"
u=$(phase_json C 2)
assert_eq "$(json_get "$u" /attempts)" 20 "C: the protected phase probe tried 20 sends"
assert_eq "$(json_get "$u" /sent)" 0 "C: no protected datagram is sent"
assert_eq "$(json_get "$u" /replies)" 0 "C: no protected reply through the new tunnel"
for e in $(json_pairs "$u" /errors | cut -d: -f1); do fast_errno "C: protected sendto fails" "$e"; done
ksrun_refused_while_dead C
lab_sleep_until "$(lab_plus "$T_C" "$PHASE_S")"

# ---- D: ksd started again --------------------------------------------------------------------------
T_S0=$(lab_now)
ks_start
ks_wait_tunnel_state up
T_D=$(lab_now)
st=$(ks_ctl status --json)
assert_eq "$(json_get "$st" /daemon)" running "D: ksd runs again"
assert_eq "$(json_get "$st" /profiles/default/tunnels/0/ifindex)" "$IDX2" \
  "D: ksctl status shows the new ifindex"
assert_eq "$(json_get "$st" /programs/attached)" true "D: programs attached"
assert_eq "$(json_get "$st" /programs/pinned)" true "D: programs pinned"
assert_ge "$(json_get "$st" /protected_apps)" 2 "D: the running protected apps are adopted"
apps=$(ks_ctl list --json)
for pid in "$UDP_PID" "$TCP_PID"; do
  [[ $apps =~ [\[,]${pid}[],] ]] || fail "D: ksctl list does not show protected pid $pid: $apps"
done
pass "D: ksctl list shows the protected UDP sender and TCP loop"

udp_base=$(ks_app_counter "$UDP_PID" allowed_packets)
tcp_base=$(ks_app_counter "$TCP_PID" allowed_packets)
lab_poll_until 5 ks_app_grows "$TCP_PID" allowed_packets "$tcp_base" 20 ||
  fail "D: the protected TCP loop did not resume after ksd restarted"
pass "D: the protected TCP loop resumed by itself (ksd counts its packets again)"
lab_poll_until 5 ks_app_grows "$UDP_PID" allowed_packets "$udp_base" 40 ||
  fail "D: the long-lived protected UDP sender did not resume after ksd restarted:" \
    "$(lab_exec_client ss -Hunap | grep "pid=$UDP_PID,")"
pass "D: the long-lived protected UDP sender resumed by itself (ksd counts its packets again)"

# Exactly one attachment per hook: the restart replaced the programs in the pinned links.
types_after=$(bpftool_attach_types "$KS_CGROUP_ROOT")
assert_eq "$(tr ' ' '\n' <<<"$types_after" | uniq -d | tr '\n' ' ')" "" \
  "D: no hook attached twice to $KS_SLICE"
assert_eq "$types_after" "$TYPES_BEFORE" "D: the same hooks are attached as before the kill"
eff=$(bpftool_attach_types "$(_ks_cgroup2_mount)$UDP_CGROUP" effective)
assert_eq "$(tr ' ' '\n' <<<"$eff" | uniq -d | tr '\n' ' ')" "" \
  "D: no hook runs twice for the protected app (effective)"
assert_eq "$eff" "$TYPES_BEFORE" "D: every hook is effective for the protected app"
ids_bpftool=$(bpftool cgroup show "$KS_CGROUP_ROOT" | awk 'NR > 1 && NF { print $1 }' |
  sort -n | tr '\n' ' ')
# Debian 12's bpftool (7.1) does not know attach types newer than Linux 6.1, so the
# cgroup/connect_unix hook (attach type 49) is checked with ks-probe prog-query.
# Before 6.7 resolver_guard (a system-wide tracing link, not a cgroup hook) stands in for it.
ids_status=$(json_pairs "$st" /programs/ids | grep -v '^connect_unix:\|^resolver_guard:' |
  cut -d: -f2 | sort -n | tr '\n' ' ')
assert_eq "$ids_bpftool" "$ids_status" "D: the attached programs are those the new ksd loaded"
if ks_kernel_has_unix_hooks; then
  unix_id=$(json_get "$st" /programs/ids/connect_unix)
  assert_eq "$("$KS_PROBE" prog-query "$KS_CGROUP_ROOT" 49 | tr -d ' ')" \
    "{\"cmd\":\"prog-query\",\"ids\":[$unix_id]}" "D: connect_unix attached once, the new ksd's program"
  assert_eq "$("$KS_PROBE" prog-query "$(_ks_cgroup2_mount)$UDP_CGROUP" 49 --effective | tr -d ' ')" \
    "{\"cmd\":\"prog-query\",\"ids\":[$unix_id]}" "D: connect_unix effective once for the protected app"
else
  guard_id=$(json_get "$st" /programs/ids/resolver_guard)
  guard_links=$(bpftool link show | grep -c "prog $guard_id\b" || true)
  assert_eq "$guard_links" 1 "D: resolver_guard attached once, the new ksd's program (Linux $(uname -r))"
  assert_eq "$(find "$KS_PIN_DIR" -name 'link_resolver_guard*' | wc -l)" 1 \
    "D: one resolver_guard pin, no leftover of the replacement"
fi
_lab_sleep 0.5

# ---- stop everything, read the results -----------------------------------------------------------
for pid in "$UDP_PID" "$TCP_PID" "$CTL_UDP_PID" "$CTL_TCP_PID"; do lab_stop "$pid" TERM 5; done
T_END=$(lab_now)
capture_stop
server_capture_stop
udp=$(tail -n 1 "$LAB_DIR/udp-sender.log")
tcp=$(tail -n 1 "$LAB_DIR/tcp-loop.log")
lab_log "protected udp sender: $udp"
lab_log "protected tcp loop:   $tcp"
lab_log "control udp sender: $(tail -n 1 "$LAB_DIR/ctl-udp-sender.log")"
lab_log "control tcp loop:   $(tail -n 1 "$LAB_DIR/ctl-tcp-loop.log")"
lab_log "timeline (ms from start at $T0): kill9 $(lab_ms "$T0" "$T_KILL"), tunnel kill $(lab_ms "$T0" "$T_TK0")" \
  "(wg0 gone +$(lab_ms "$T_TK0" "$T_B")), re-create $(lab_ms "$T0" "$T_RC0") (+$(lab_ms "$T_RC0" "$T_C") incl." \
  "tunnel_check), ksd start $(lab_ms "$T0" "$T_S0") (up +$(lab_ms "$T_S0" "$T_D")), end $(lab_ms "$T0" "$T_END");" \
  "wg0 ifindex $IDX1 -> $IDX2"

# ---- leaks: none from protected traffic; the control is seen in every phase ----------------------
CONTROL="ip and dst host $LAB_CONTROL_NET_IP4"
# Every leak that is not the control's counts, kernel-made RST/ICMP from the tunnel address
# included (a packet that comes back through the tunnel for a protected socket that is gone:
# an echo after the UDP sender stopped, a SYN-ACK after a connect was abandoned).
PROTECTED="not ($CONTROL)"
assert_no_leak "no protected frame left outside the tunnel, from start to end (A-D)" "$PROTECTED"
for phase in "A:$T_A:$T_TK0" "B:$T_B:$T_RC0" "C:$T_C:$T_S0"; do
  IFS=: read -r name from to <<<"$phase"
  assert_gt "$(leak_count_between "$from" "$to" "($CONTROL) and udp")" 0 \
    "$name: positive control: the detector sees the unprotected UDP probes leak"
  assert_gt "$(leak_count_between "$from" "$to" "($CONTROL) and tcp")" 0 \
    "$name: positive control: the detector sees the unprotected TCP probes leak"
  assert_eq "$(leak_count_between "$from" "$to" "$PROTECTED")" 0 \
    "$name: no protected leak"
done
for p in A B C; do
  assert_eq "$(json_get "$(phase_json "ctl-$p" 2)" /replies)" 20 \
    "$p: the unprotected phase probe gets its 20 echoes (over eth0)"
done

# ---- through the tunnel: flowing in A, nothing in C, resumed in D ------------------------------
a_udp=$(server_count "$T_A" "$T_TK0" "$(long_udp_replies)")
a_tcp=$(server_count "$T_A" "$T_TK0" "$TCP_ECHO")
assert_gt "$a_udp" 0 "A: replies keep coming to the long-lived UDP sender with ksd dead"
assert_gt "$a_tcp" 0 "A: the TCP loop keeps getting echoes with ksd dead"
b_all=$(server_count "$(lab_plus "$T_B" 0.05)" "$T_RC0" "$FROM_CLIENT")
assert_eq "$b_all" 0 "B: nothing from the client through the tunnel (sanity: it is gone)"
c_from=$(server_count "$T_C" "$T_S0" "$FROM_CLIENT")
c_udp=$(server_count "$T_C" "$T_S0" "$TO_CLIENT and udp")
c_tcp=$(server_count "$T_C" "$T_S0" "$TO_CLIENT and tcp")
assert_eq "$c_from" 0 "C: no protected packet through the new tunnel while ksd is dead"
assert_eq "$c_udp" 0 "C: no UDP reply through the new tunnel while ksd is dead"
# TCP towards the client in C can only be the server's retransmissions for connections that
# were in flight when wg0 died (nothing new was sent); they are logged, not counted as replies.
((c_tcp == 0)) || lab_log "C: $c_tcp TCP retransmission(s) of the server reached the client:" \
  "$(pcap_window "$LAB_SERVER_PCAP" "$T_C" "$T_S0" "$TO_CLIENT and tcp" | head -n 3 | tr '\n' ' ')"
d_udp=$(server_count "$T_D" "$T_END" "$(long_udp_replies)")
d_tcp=$(server_count "$T_D" "$T_END" "$TCP_ECHO")
assert_gt "$d_tcp" 0 "D: the TCP loop's echoes come through the new tunnel"
assert_gt "$d_udp" 0 "D: the long-lived UDP sender's replies grow again"
# first_after FILTER: ms from ksd's start (T_S0) to the first matching frame on wgs0.
first_after() {
  local t
  t=$(server_first "$T_S0" "$1")
  if [[ -n $t ]]; then lab_ms "$T_S0" "$t"; else echo never; fi
}
lab_log "D: first reply after ksd start (wgs0): UDP +$(first_after "$(long_udp_replies)") ms," \
  "TCP echo +$(first_after "$TCP_ECHO") ms; ksd answered 'up' +$(lab_ms "$T_S0" "$T_D") ms"
lab_log "tunnel: A: $a_udp UDP replies, $a_tcp TCP echoes; C: $c_from packets from the client," \
  "$c_udp UDP / $c_tcp TCP to it; D: $d_udp UDP replies, $d_tcp TCP echoes"

# ---- the protected senders never stalled ----------------------------------------------------------
assert_eq "$(json_get "$udp" /interrupted)" true "the protected UDP sender ran until stopped"
assert_gt "$(json_get "$udp" /replies)" $((500 / LAB_WAIT_SCALE)) "protected UDP sender: replies received"
refused=0
for e in $(json_pairs "$udp" /errors); do
  fast_errno "protected UDP sender: its failed sends" "${e%%:*}"
  refused=$((refused + ${e##*:}))
done
# B and C last >= 2 x PHASE_S; a refused sendto returns at once: ~1 per UDP_MS.
assert_ge "$refused" $((1200 / UDP_MS)) "protected UDP sender: sends refused at once in B and C, not stalled"
assert_gt "$(json_get "$tcp" /ok)" 30 "protected TCP loop: connections echoed"
slow=$(($(json_get "$tcp" /errors/ETIMEDOUT 0) + $(json_get "$tcp" /errors/EOF 0)))
fastn=0
for e in $(json_pairs "$tcp" /errors); do
  case ${e%%:*} in
    ETIMEDOUT | EOF) ;;
    *) fast_errno "protected TCP loop: its failed connects" "${e%%:*}"; fastn=$((fastn + ${e##*:})) ;;
  esac
done
assert_ge "$fastn" 30 "protected TCP loop: connects refused at once in B and C, not stalled"
# A connection caught in flight when wg0 disappears may time out, and so may the attempts
# that wait out the new tunnel's first handshake once ksd is back: at most one per second
# (the loop is sequential, 1 s timeout) from ksd's start to the first echo through the new
# tunnel (under a second here; ksd alone took 28 s to start under emulation once). A stall
# would be dozens. The unprotected control loop over eth0 (no tunnel in its way) shows how
# many time out on this machine anyway: none here, dozens under qemu's emulation
# (scripts/kernel-matrix.sh).
ctl_tcp=$(tail -n 1 "$LAB_DIR/ctl-tcp-loop.log")
ctl_slow=$(($(json_get "$ctl_tcp" /errors/ETIMEDOUT 0) + $(json_get "$ctl_tcp" /errors/EOF 0)))
t_echo=$(server_first "$T_S0" "$TCP_ECHO")
resume_s=$((${t_echo:+$(lab_ms "$T_S0" "$t_echo") / 1000} + 1))
# Under emulation the protected loop's path (through wireguard-go, whose crypto is CPU work
# TCG makes 20x slower) loses more connections than the control's plain eth0: twice the
# control's count there (47 against 30 once). Here the control loses none. Stalls instead of
# refusals are caught by the "refused at once" counts above either way.
ctl_allow=$((LAB_WAIT_SCALE > 1 ? 2 * ctl_slow : ctl_slow))
assert_le "$slow" "$((2 + resume_s + ctl_allow))" \
  "protected TCP loop: at most the connections caught in flight or waiting for the new tunnel time out (control: $ctl_slow, resuming took ${resume_s} s)"
