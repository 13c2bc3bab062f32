#!/usr/bin/env bash
# Killswitch benchmarks: every figure next to its baseline, measured in the same run, in the
# leak lab (network namespaces, a real WireGuard tunnel through wireguard-go, ksd, ksrun).
# Not part of the test suite; `--quick` is a short smoke run (CI runs it).
#
#   sudo bench/run.sh [--quick] [--only NAME[,NAME...]]
#
# NAME: per_packet throughput connect_rate launch recovery flap scale
# (launch also boots the systemd test container: bench/systemd_launch.sh)
# Results: a table on stdout and JSON lines in $KS_BENCH_OUT (default build/bench-results.jsonl).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../tests/lab/lib.sh"
source "$HERE/../tests/lab/killswitch.sh"

QUICK=0
ONLY=""
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --only) ONLY=,$2, && shift ;;
    *) _lab_die "usage: bench/run.sh [--quick] [--only NAME[,NAME...]]" ;;
  esac
  shift
done
wanted() { [[ -z $ONLY || $ONLY == *",$1,"* ]]; }
q() { if ((QUICK)); then echo "$1"; else echo "$2"; fi; } # q QUICK_VALUE FULL_VALUE

KS_BENCH=$KS_BUILD_DIR/tests/ks-bench
OUT=${KS_BENCH_OUT:-$KS_BUILD_DIR/bench-results.jsonl}
: >"$OUT"
SERVER=$LAB_WG_SERVER_IP4 # the VPN server's tunnel address: reached through wg0 by
# unprotected programs (main table, 10.99.0.0/24 dev wg0) and protected ones alike
ROWS=()
# row NAME FIGURE BASELINE RESULT TARGET VERDICT: one line of the final table (and JSON).
row() {
  ROWS+=("$(printf '%-34s %-22s %-22s %-18s %-16s %s' "$@")")
  python3 -c 'import json, sys; print(json.dumps(dict(zip(
    ["benchmark", "figure", "baseline", "result", "target", "verdict"], sys.argv[1:]))))' "$@" >>"$OUT"
  lab_log "$1: $2 (baseline $3) -> $4 [target $5: $6]"
}
verdict() { if awk "BEGIN { exit !($1) }"; then echo met; else echo MISSED; fi; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

STATS_WAS=""
BENCH_PINS=()
BENCH_CGROUPS=()
bench_cleanup() {
  local p c
  # Thousands of scale apps take longer to die than ks_down waits: end them first.
  if [[ -n ${KS_CGROUP_ROOT:-} && -d $KS_CGROUP_ROOT ]]; then
    echo 1 >"$KS_CGROUP_ROOT/cgroup.kill" 2>/dev/null || true
    _lab_wait_until 180 _ks_tree_empty || lab_log "WARNING: processes left in $KS_CGROUP_ROOT"
  fi
  for p in "${BENCH_PINS[@]}"; do rm -f "$p"; done
  for c in "${BENCH_CGROUPS[@]}"; do
    [[ -d $c ]] && echo 1 >"$c/cgroup.kill" 2>/dev/null
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  [[ -z $STATS_WAS ]] || sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"
  lab_exec_client iptables -F 2>/dev/null || true
  lab_exec_client nft delete table inet ksbench 2>/dev/null || true
}
lab_on_exit() { bench_cleanup; } # (ks_down follows: LAB_EXIT_HOOKS)

# The cgroup2 mount: with favordynmods (Linux 6.0+) a move into a cgroup does not wait for an
# RCU grace period (benchmark 4, one launch at a time). Only reported: the benchmark never
# changes it (on Linux 6.18 turning it on is one-way until the next boot).
CG2_LINE=$(awk '/ - cgroup2 / { print; exit }' /proc/self/mountinfo)
CG2_MOUNT=$(awk '{ print $5 }' <<<"$CG2_LINE")
CG2_SUPER=$(sed 's/.* - cgroup2 [^ ]* //' <<<"$CG2_LINE")

lab_up
ks_up
ks_wait_tunnel_state up
lab_spawn_isp iperf3 iperf3 -s -B "$SERVER"
sleep 0.3
lab_log "machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r); quick=$QUICK"
# Mitigations decide what a memory access costs after a system call: page-table isolation
# without PCID flushes the TLB at every kernel entry and exit.
MITIGATIONS="meltdown: $(cat /sys/devices/system/cpu/vulnerabilities/meltdown 2>/dev/null || echo unknown); PCID: $(grep -qw pcid /proc/cpuinfo && echo yes || echo no); spectre_v2: $(cut -c1-60 /sys/devices/system/cpu/vulnerabilities/spectre_v2 2>/dev/null || echo unknown)"
lab_log "mitigations: $MITIGATIONS"
lab_log "cgroup2: $CG2_MOUNT ($CG2_SUPER)"

# ---- 1. per-packet cost: egress under real traffic, between two empty programs -------------------
# mark_of_protected_socket: the mark sock_create gives a protected app's socket (its profile
# and app slot), read by a protected process.
mark_of_protected_socket() {
  ks_run_client --no-instance-check python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print(s.getsockopt(socket.SOL_SOCKET, socket.SO_MARK))'
}
# per_packet_row ROW: benchmark 1 (also run again at scale). Sets MARGINAL.
#
# Which program first reads a packet's fields pays for bringing the skb's cache lines in; the
# programs after it find them loaded (measured: the floor program attached before ours cost
# 16-26 ns more than attached after it). So each candidate is measured in the
# same place: the first program that reads the packet. Rounds: ours alone between the two
# empties; the floor, or the counting floor, attached on the profile slice right after the
# first empty (before ours); the three kinds in rotating order, twice (once in --quick).
per_packet_row() {
  local name=$1 slice pin_before pin_after pin_candidate before_id after_id egress_id ifindex
  local round kind kinds candidate_id before after secs
  # Two empty programs run for the same packets as ours: one before it (on the profile slice:
  # a descendant's programs run before its ancestors'), one after it (on the tree root,
  # attached after ours). Their mean is the baseline, so that the order's effect on caches
  # and the TLB (the first program of a packet pays for loading what all of them share)
  # cancels instead of counting against ours.
  slice=$KS_CGROUP_ROOT/${KS_SLICE%.slice}-default.slice
  pin_before=/sys/fs/bpf/ksbench-empty-before-$LAB_ID
  pin_after=/sys/fs/bpf/ksbench-empty-after-$LAB_ID
  pin_candidate=/sys/fs/bpf/ksbench-candidate-$LAB_ID
  BENCH_PINS+=("$pin_before" "$pin_after" "$pin_candidate")
  ifindex=$(lab_exec_client ip -o link show dev wg0 | cut -d: -f1)
  before_id=$(json_get "$("$KS_BENCH" attach-empty "$slice" "$pin_before")" /prog_id)
  after_id=$(json_get "$("$KS_BENCH" attach-empty "$KS_CGROUP_ROOT" "$pin_after")" /prog_id)
  egress_id=$(ks_status_field /programs/ids/egress)
  # bpf_stats only around this measurement: with it on, every program run reads the clock
  # twice, which the unprotected side of every other benchmark does not pay.
  STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)
  sysctl -qw kernel.bpf_stats_enabled=1
  secs=$(q 1 5)
  local -A marginal=() cost=() packets=()
  kinds=(ours floor counting)
  for ((round = 0; round < $(q 1 2) * 3; round++)); do
    kind=${kinds[round % 3]}
    ((round < 3)) || kind=${kinds[(5 - round) % 3]} # the second pass in reverse order
    case $kind in
      ours) candidate_id=$egress_id ;;
      floor) candidate_id=$(json_get "$("$KS_BENCH" attach-floor "$slice" "$pin_candidate" --ifindex "$ifindex")" /prog_id) ;;
      counting) candidate_id=$(json_get "$("$KS_BENCH" attach-floor "$slice" "$pin_candidate" --ifindex "$ifindex" --count)" /prog_id) ;;
    esac
    before=$("$KS_BENCH" prog-stats "$candidate_id" "$before_id" "$after_id")
    ks_run_client --no-instance-check iperf3 -c "$SERVER" -u -b "${KS_BENCH_RATE:-0}" -l 64 -t "$secs" >/dev/null
    after=$("$KS_BENCH" prog-stats "$candidate_id" "$before_id" "$after_id")
    rm -f "$pin_candidate" # the floors' links end with their pin
    # "program ns, its marginal over the empties' mean, packets" of this round
    local c m n
    read -r c m n < <(python3 -c '
import json, sys
b, a = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def per(i):
    return (a[i]["run_time_ns"] - b[i]["run_time_ns"]) / max(1, a[i]["run_cnt"] - b[i]["run_cnt"])
c = per(sys.argv[3])
print("%.1f %.1f %d" % (c, c - (per(sys.argv[4]) + per(sys.argv[5])) / 2,
      a[sys.argv[3]]["run_cnt"] - b[sys.argv[3]]["run_cnt"]))' "$before" "$after" "$candidate_id" "$before_id" "$after_id")
    cost[$kind]+="$c "
    marginal[$kind]+="+$m "
    packets[$kind]=$((${packets[$kind]:-0} + n))
    lab_log "per-packet round $round ($kind): $c ns/packet, +$m over the empties ($n packets)"
  done
  sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"
  STATS_WAS=""
  # mean of a kind's rounds
  mean_of() { awk '{ for (i = 1; i <= NF; i++) t += $i } END { printf "%.1f", t / NF }' <<<"$1"; }
  local ours_m floor_m counting_m gap
  ours_m=$(mean_of "${marginal[ours]//+/}")
  floor_m=$(mean_of "${marginal[floor]//+/}")
  counting_m=$(mean_of "${marginal[counting]//+/}")
  gap=$(awk -v a="$ours_m" -v b="$counting_m" 'BEGIN { printf "%+.1f", a - b }')
  MARGINAL=$ours_m
  row "$name" "${cost[ours]% } ns/packet" "two empty programs, before and after ours" "+$ours_m ns (rounds: ${marginal[ours]% })" \
    "<= 10 ns" "$(verdict "$MARGINAL <= 10") (${packets[ours]} packets; $gap ns from the counting floor)"
  row "${name}_floor" "${cost[floor]% } ns/packet" "(the same empties)" "+$floor_m ns (rounds: ${marginal[floor]% })" "—" \
    "the least a pass path can cost: mark and interface as constants, nothing counted"
  row "${name}_floor_counting" "${cost[counting]% } ns/packet" "(the same empties)" "+$counting_m ns (rounds: ${marginal[counting]% })" "—" \
    "the least a pass path with exact per-app counts can cost: the floor plus one 64-byte row per CPU and app slot, as ours"
  # Warm: the same programs under BPF_PROG_TEST_RUN, 100,000 runs in a row on one packet with
  # a protected socket's mark through wg0 (the pass path), rounds alternating the order.
  local mark warm retval floor_id floorc_id ours empty_before floor floorc
  floor_id=$(json_get "$("$KS_BENCH" attach-floor "$slice" "$pin_candidate" --ifindex "$ifindex")" /prog_id)
  local pin_candidate2=$pin_candidate-counting
  BENCH_PINS+=("$pin_candidate2")
  floorc_id=$(json_get "$("$KS_BENCH" attach-floor "$slice" "$pin_candidate2" --ifindex "$ifindex" --count)" /prog_id)
  mark=$(mark_of_protected_socket)
  warm=$(lab_exec_client "$KS_BENCH" test-run "$egress_id" "$before_id" "$floor_id" "$floorc_id" \
    --ifindex "$ifindex" --mark "$mark")
  retval=$(json_get "$warm" "/$egress_id/retval")
  read -r ours empty_before floor floorc < <(python3 -c '
import json, sys
w = json.loads(sys.argv[1])
print("%.1f %.1f %.1f %.1f" % tuple(w[i]["ns"] for i in sys.argv[2:6]))' "$warm" "$egress_id" "$before_id" "$floor_id" "$floorc_id")
  local warm_marginal
  warm_marginal=$(awk -v a="$ours" -v b="$empty_before" 'BEGIN { printf "%.1f", a - b }')
  row "${name}_warm" "$ours ns/run" "empty: $empty_before ns; floor: $floor ns; counting floor: $floorc ns" "+$warm_marginal ns" \
    "<= 3 ns" "$(verdict "$warm_marginal <= 3 && $retval == 1") (pass path: returned $retval)"
  rm -f "$pin_before" "$pin_after" "$pin_candidate" "$pin_candidate2"
}
if wanted per_packet; then
  per_packet_row per_packet_egress_ns
fi

# ---- 2. throughput through the tunnel ------------------------------------------------------------
if wanted throughput; then
  CG2=$(_ks_cgroup2_mount)
  NFT_CG=ksbench-nft-$LAB_ID
  mkdir -p "$CG2/$NFT_CG"
  # nft names cgroups relative to /sys/fs/cgroup ("unified/..." on hybrid hosts).
  NFT_PATH=${CG2#/sys/fs/cgroup}/$NFT_CG
  NFT_PATH=${NFT_PATH#/}
  BENCH_CGROUPS+=("$CG2/$NFT_CG")
  # The kill-switch article's manual iptables recipe, for wg0.
  iptables_on() {
    lab_exec_client sh -ec '
      iptables -P INPUT DROP; iptables -P FORWARD DROP; iptables -P OUTPUT DROP
      iptables -A INPUT -i lo -j ACCEPT; iptables -A OUTPUT -o lo -j ACCEPT
      iptables -A INPUT -i wg0 -j ACCEPT; iptables -A OUTPUT -o wg0 -j ACCEPT
      iptables -A OUTPUT -o eth0 -p udp --dport 51820 -j ACCEPT
      iptables -A INPUT -i eth0 -p udp --sport 51820 -j ACCEPT'
  }
  iptables_off() { lab_exec_client sh -c 'iptables -F; iptables -P INPUT ACCEPT; iptables -P FORWARD ACCEPT; iptables -P OUTPUT ACCEPT'; }
  # nftables, matching the app's cgroup: its sockets may leave only through lo and wg0.
  nft_on() {
    lab_exec_client nft -f - <<NFT
table inet ksbench {
  chain out {
    type filter hook output priority 0; policy accept;
    socket cgroupv2 level 1 "$NFT_PATH" oifname != { "lo", "wg0" } drop
  }
}
NFT
  }
  nft_off() { lab_exec_client nft delete table inet ksbench; }
  # iperf_run MODE ARGS...: bits per second of one iperf3 client run.
  iperf_run() {
    local mode=$1 out
    shift
    case $mode in
      unprotected | iptables) out=$(lab_exec_client iperf3 -J -c "$SERVER" "$@") ;;
      protected) out=$(ks_run_client --no-instance-check iperf3 -J -c "$SERVER" "$@") ;;
      nftables) out=$(lab_exec_client sh -c 'echo $$ >"$1/cgroup.procs"; shift; exec iperf3 "$@"' \
        sh "$CG2/$NFT_CG" -J -c "$SERVER" "$@") ;;
    esac
    python3 -c '
import json, sys
e = json.loads(sys.argv[1])["end"]
s = e.get("sum_received") or e.get("sum")
print(int(s["bits_per_second"]))' "$out"
  }
  nft_ok=1
  nft_on 2>/dev/null && nft_off || nft_ok=0
  T=$(q 1 4)
  REPS=$(q 1 3)
  for kind in "tcp:" "udp1400:-u -b 0 -l 1400" "udp64:-u -b 0 -l 64"; do
    name=${kind%%:*}
    read -ra args <<<"${kind#*:}"
    declare -A res=()
    modes=(unprotected protected iptables nftables)
    for ((r = 0; r < REPS; r++)); do
      # A different order each round: no mode always runs first, on a cold or a warm path.
      modes=("${modes[@]:1}" "${modes[0]}")
      for mode in "${modes[@]}"; do
        [[ $mode == nftables && $nft_ok == 0 ]] && continue
        [[ $mode == iptables ]] && iptables_on
        [[ $mode == nftables ]] && nft_on
        res[$mode]+="$(iperf_run "$mode" -t "$T" "${args[@]}") "
        [[ $mode == iptables ]] && iptables_off
        [[ $mode == nftables ]] && nft_off
      done
    done
    med() { tr ' ' '\n' <<<"${res[$1]}" | grep . | median; }
    un=$(med unprotected) pr=$(med protected) ip=$(med iptables)
    nf=$([[ $nft_ok == 1 ]] && med nftables || echo 0)
    mbit() { awk -v b="$1" 'BEGIN { printf "%.0f Mbit/s", b / 1e6 }'; }
    ratio=$(awk -v a="$pr" -v b="$un" 'BEGIN { printf "%.3f", a / b }')
    row "throughput_$name" "protected $(mbit "$pr")" "unprotected $(mbit "$un")" "x$ratio" ">= x0.98" \
      "$(verdict "$ratio >= 0.98")"
    row "throughput_${name}_vs_firewalls" "protected $(mbit "$pr")" \
      "iptables $(mbit "$ip"), nft $(mbit "$nf")" \
      "x$(awk -v a="$pr" -v b="$ip" 'BEGIN { printf "%.3f", a / b }') / x$(awk -v a="$pr" -v b="$nf" 'BEGIN { printf "%.3f", b ? a / b : 0 }')" \
      ">= both" "$(verdict "$pr >= 0.98 * $ip && ($nf == 0 || $pr >= 0.98 * $nf)") (2% noise band)"
    unset res
  done
fi

# ---- 3. connection rate ------------------------------------------------------------------------
if wanted connect_rate; then
  # rate_compare ROW SUBCOMMAND COUNT: ks-bench SUBCOMMAND unprotected, protected, and in the
  # floor cgroup (below) in rounds (the order rotating), compared by the median of the
  # rounds' ratios: on this kind of machine the rate drifts by tens of percent between rounds
  # (wireguard-go and the echo replies share the CPUs), far more than within a round. The
  # thread's CPU time per operation (BPF included, waiting excluded) is shown next to it.
  rate_compare() {
    local name=$1 cmd=$2 n=$3 r k mode out u p f uc pc fc ratio slower cpu_more floor_ratio floor_slower
    local ratios=() floor_ratios=() ucpu=() pcpu=() fcpu=() un=() pr=() fl=() modes=(u p f)
    local args=("$KS_BENCH" "$cmd" --dst "$SERVER:$LAB_ECHO_PORT" --count "$n")
    for ((r = 0; r < $(q 2 7); r++)); do
      for ((k = 0; k < 3; k++)); do
        mode=${modes[(r + k) % 3]}
        # (ks-bench exits 1 when an operation failed; the rate still counts the attempts)
        case $mode in
          u) out=$(lab_exec_client "${args[@]}" || true) ;;
          p) out=$(ks_run_client --no-instance-check "${args[@]}" || true) ;;
          f) out=$(lab_exec_client sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$FLOOR_CG" "${args[@]}" --mark "$FLOOR_MARK" || true) ;;
        esac
        case $mode in
          u) un+=("$(json_get "$out" /per_second)") ucpu+=("$(json_get "$out" /cpu_ns_per_op)") ;;
          p) pr+=("$(json_get "$out" /per_second)") pcpu+=("$(json_get "$out" /cpu_ns_per_op)") ;;
          f) fl+=("$(json_get "$out" /per_second)") fcpu+=("$(json_get "$out" /cpu_ns_per_op)") ;;
        esac
      done
      ratios+=("$(awk -v u="${un[-1]}" -v p="${pr[-1]}" 'BEGIN { printf "%.4f", p / u }')")
      floor_ratios+=("$(awk -v u="${un[-1]}" -v f="${fl[-1]}" 'BEGIN { printf "%.4f", f / u }')")
    done
    u=$(printf '%s\n' "${un[@]}" | median) p=$(printf '%s\n' "${pr[@]}" | median)
    f=$(printf '%s\n' "${fl[@]}" | median)
    uc=$(printf '%s\n' "${ucpu[@]}" | median) pc=$(printf '%s\n' "${pcpu[@]}" | median)
    fc=$(printf '%s\n' "${fcpu[@]}" | median)
    ratio=$(printf '%s\n' "${ratios[@]}" | median)
    floor_ratio=$(printf '%s\n' "${floor_ratios[@]}" | median)
    slower=$(awk -v r="$ratio" 'BEGIN { printf "%.1f", (1 - r) * 100 }')
    floor_slower=$(awk -v r="$floor_ratio" 'BEGIN { printf "%.1f", (1 - r) * 100 }')
    cpu_more=$(awk -v u="$uc" -v p="$pc" 'BEGIN { printf "%+.1f", (p / u - 1) * 100 }')
    UNPROTECTED_CPU_NS=$(printf '%.0f' "$uc")
    row "$name" "$(printf '%.0f' "$p")/s, $(printf '%.0f' "$pc") ns CPU/op" \
      "$(printf '%.0f' "$u")/s, $(printf '%.0f' "$uc") ns CPU/op" \
      "$slower% slower (median of ${#ratios[@]} ratios); CPU/op $cpu_more%" "<= 3%" \
      "$(verdict "$slower <= 3")"
    row "${name}_floor" "$(printf '%.0f' "$f")/s, $(printf '%.0f' "$fc") ns CPU/op" \
      "(the same unprotected rounds)" \
      "$floor_slower% slower; CPU/op $(awk -v u="$uc" -v f="$fc" 'BEGIN { printf "%+.1f", (f / u - 1) * 100 }')%" "—" \
      "empty programs on ksd's hooks (sock_create, connect4, sendmsg4, egress, ingress), sockets marked as ours: what any cgroup kill switch that steers by mark costs here"
  }
  # The floor cgroup: an empty program (return 1) on each hook ours use for a connect or a
  # send, nothing else; outside the kill switch's tree. Its sockets carry a protected
  # socket's mark (SO_MARK), so the same policy rules route them into the tunnel: the floor
  # is what any kill switch that steers by mark and runs programs on these hooks costs.
  FLOOR_MARK=$(mark_of_protected_socket)
  FLOOR_CG=$(_ks_cgroup2_mount)/ksbench-floor-$LAB_ID
  mkdir -p "$FLOOR_CG"
  BENCH_CGROUPS+=("$FLOOR_CG")
  FLOOR_IDS=()
  for h in sock_create connect4 sendmsg4 egress ingress; do
    BENCH_PINS+=("/sys/fs/bpf/ksbench-floor-$h-$LAB_ID")
    FLOOR_IDS+=("$(json_get "$("$KS_BENCH" attach-empty --hook "$h" "$FLOOR_CG" \
      "/sys/fs/bpf/ksbench-floor-$h-$LAB_ID")" /prog_id)")
  done
  # Thousands of connects per round leave TIME_WAIT sockets behind; with the default port
  # range, later rounds would search for free ports (protected or not). Reuse them.
  lab_exec_client sysctl -qw net.ipv4.tcp_tw_reuse=1
  # bpf_ns_per_op ROW SUBCOMMAND COUNT: one more protected round with bpf_stats on (only for
  # it): the time our programs ran per operation, by hook, next to the whole operation's CPU
  # time unprotected (UNPROTECTED_CPU_NS, from the rounds above). Steadier than the rate,
  # which moves by several percent between rounds here.
  bpf_ns_per_op() {
    local name=$1 cmd=$2 n=$3 hooks=(sock_create connect4 sendmsg4 egress ingress) ids=() h b a
    for h in "${hooks[@]}"; do ids+=("$(ks_status_field "/programs/ids/$h")"); done
    # An empty sendmsg4 program on the profile slice runs for the same sends: the least any
    # sendmsg4 program costs here (bpf_stats' clock reads and the call included).
    local pin=/sys/fs/bpf/ksbench-empty-sendmsg4-$LAB_ID
    BENCH_PINS+=("$pin")
    hooks+=(empty_sendmsg4)
    ids+=("$(json_get "$("$KS_BENCH" attach-empty --hook sendmsg4 \
      "$KS_CGROUP_ROOT/${KS_SLICE%.slice}-default.slice" "$pin")" /prog_id)")
    STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)
    sysctl -qw kernel.bpf_stats_enabled=1
    b=$("$KS_BENCH" prog-stats "${ids[@]}")
    ks_run_client --no-instance-check "$KS_BENCH" "$cmd" --dst "$SERVER:$LAB_ECHO_PORT" --count "$n" >/dev/null || true
    a=$("$KS_BENCH" prog-stats "${ids[@]}")
    # and one round in the floor cgroup: the empty programs' time per operation
    local fb fa floor_total
    fb=$("$KS_BENCH" prog-stats "${FLOOR_IDS[@]}")
    lab_exec_client sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$FLOOR_CG" "$KS_BENCH" "$cmd" \
      --dst "$SERVER:$LAB_ECHO_PORT" --count "$n" --mark "$FLOOR_MARK" >/dev/null || true
    fa=$("$KS_BENCH" prog-stats "${FLOOR_IDS[@]}")
    sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"
    STATS_WAS=""
    floor_total=$(python3 -c '
import json, sys
b, a, n = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
hooks, ids = sys.argv[4].split(), sys.argv[5].split()
per = {h: (a[i]["run_time_ns"] - b[i]["run_time_ns"]) / n for h, i in zip(hooks, ids)}
print("%.0f (%s)" % (sum(per.values()), ", ".join("%s %.0f" % (h, v) for h, v in per.items() if v >= 1)))' \
      "$fb" "$fa" "$n" "sock_create connect4 sendmsg4 egress ingress" "${FLOOR_IDS[*]}")
    rm -f "$pin"
    read -r total detail < <(python3 -c '
import json, sys
b, a, n = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
hooks, ids = sys.argv[4].split(), sys.argv[5].split()
per = {h: (a[i]["run_time_ns"] - b[i]["run_time_ns"]) / n for h, i in zip(hooks, ids)}
empty = per.pop("empty_sendmsg4")
print("%.0f" % sum(per.values()), ", ".join("%s %.0f" % (h, v) for h, v in per.items() if v >= 1)
      + ("; an empty sendmsg4 %.0f" % empty if empty >= 1 else ""))' \
      "$b" "$a" "$n" "${hooks[*]}" "${ids[*]}")
    row "${name}_bpf" "$total ns of BPF per op" "unprotected: $UNPROTECTED_CPU_NS ns CPU/op; empty programs on the same hooks: $floor_total ns of BPF per op" \
      "+$(awk -v t="$total" -v u="$UNPROTECTED_CPU_NS" 'BEGIN { printf "%.1f", t / u * 100 }')%" "<= 3%" \
      "$(verdict "$total <= 0.03 * $UNPROTECTED_CPU_NS") ($detail; bpf_stats, one extra round)"
  }
  rate_compare connect_close_per_s connect-rate "$(q 300 2000)"
  bpf_ns_per_op connect_close_per_s connect-rate "$(q 300 2000)"
  rate_compare udp_sendto_per_s send-rate "$(q 20000 200000)"
  bpf_ns_per_op udp_sendto_per_s send-rate "$(q 20000 200000)"
fi

# ---- 4. launch latency -----------------------------------------------------------------------------
if wanted launch; then
  N=$(q 50 300)
  # The three in turn, one of each per round, so that the machine's drift (tens of percent
  # here between runs a minute apart) falls on all alike. env(1) is the floor of any
  # launcher that execs the command: one exec more than `true`.
  runs=$(lab_exec_client "$KS_BENCH" launch "$N" -- true ::: env true ::: \
    "$KS_KSRUN" --socket "$KS_SOCK" true)
  a=$(json_get "$runs" /p50_us/0) w=$(json_get "$runs" /p50_us/1) b=$(json_get "$runs" /p50_us/2)
  added=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b - a) / 1000 }')
  over_wrapper=$(awk -v w="$w" -v b="$b" 'BEGIN { printf "%.2f", (b - w) / 1000 }')
  row launch_ksrun_true "p50 $(awk -v b="$b" 'BEGIN { printf "%.2f ms", b / 1000 }')" \
    "true: $(awk -v a="$a" 'BEGIN { printf "%.2f ms", a / 1000 }'); env true: $(awk -v w="$w" 'BEGIN { printf "%.2f ms", w / 1000 }')" \
    "+$added ms (+$over_wrapper ms over env)" "<= 1 ms over env" \
    "$(verdict "$over_wrapper <= 1") (direct cgroup path: no systemd here)"
  # One launch at a time, 100 ms apart, the way a person starts apps: a move into a cgroup
  # (ksrun's, through cgroup.procs) waits for an RCU grace period unless another move came
  # within one (launches in a row do not wait) or cgroup2 is mounted with favordynmods.
  N1=$(q 10 60)
  one_at_a_time() {
    local r
    r=$(lab_exec_client "$KS_BENCH" launch --gap-ms 100 "$N1" -- true ::: env true ::: \
      "$KS_KSRUN" --socket "$KS_SOCK" true)
    awk -v w="$(json_get "$r" /p50_us/1)" -v b="$(json_get "$r" /p50_us/2)" \
      'BEGIN { printf "%.2f %.2f %.2f", b / 1000, w / 1000, (b - w) / 1000 }'
  }
  fdm=$([[ ,$CG2_SUPER, == *,favordynmods,* ]] && echo on || echo off)
  read -r b w over <<<"$(one_at_a_time)"
  row launch_one_at_a_time "p50 $b ms" "env true: $w ms" "+$over ms over env" "<= 1 ms over env" \
    "$(verdict "$over <= 1") (100 ms apart; cgroup2 favordynmods $fdm; on 6.18 a move may skip the grace period anyway once favordynmods was ever on since boot)"
  # The systemd path and systemd's own transient scope, in the tests' systemd container.
  sd=$("$HERE/systemd_launch.sh" "$(q 30 200)" 2>"$LAB_DIR/systemd_launch.log") ||
    fail "systemd launch benchmark failed: $(tail -5 "$LAB_DIR/systemd_launch.log")"
  t=$(json_get "$sd" /true_p50_us) sc=$(json_get "$sd" /scope_p50_us) kr=$(json_get "$sd" /ksrun_p50_us)
  ev=$(json_get "$sd" /env_p50_us)
  added=$(awk -v a="$t" -v b="$kr" 'BEGIN { printf "%.2f", (b - a) / 1000 }')
  faster=$(awk -v s="$sc" -v k="$kr" 'BEGIN { printf "%.1f", s / k }')
  floor=$(awk -v s="$sc" -v e="$ev" 'BEGIN { printf "%.1f", s / e }')
  row launch_systemd_ksrun_true "p50 $(awk -v b="$kr" 'BEGIN { printf "%.2f ms", b / 1000 }')" \
    "true $(awk -v a="$t" 'BEGIN { printf "%.2f", a / 1000 }') ms; env true $(awk -v a="$ev" 'BEGIN { printf "%.2f", a / 1000 }') ms; systemd-run --scope true $(awk -v a="$sc" 'BEGIN { printf "%.2f", a / 1000 }') ms" \
    "+$added ms; ${faster}x faster than systemd-run --scope (env true: ${floor}x)" ">= 5x" \
    "$(verdict "$faster >= 5") (systemd 252 in a container, one launch at a time, 30 ms apart: ksrun joins a scope made ahead; env true is the most any launcher that execs could reach)"
  kb=$(json_get "$sd" /ksrun_back_to_back_p50_us) sb=$(json_get "$sd" /scope_back_to_back_p50_us)
  row launch_systemd_back_to_back "p50 $(awk -v b="$kb" 'BEGIN { printf "%.2f ms", b / 1000 }')" \
    "systemd-run --scope true $(awk -v a="$sb" 'BEGIN { printf "%.2f", a / 1000 }') ms" \
    "$(awk -v s="$sb" -v k="$kb" 'BEGIN { printf "%.1f", s / k }')x faster" "-" \
    "(launches in a row: the ready scopes, then transient ones)"
fi

# ---- 5+6. recovery latency and flap storm ------------------------------------------------------------
if wanted recovery || wanted flap; then
  CYCLES=$(q 10 100)
  # A protected sender at 10,000+ packets per second (paced at 15 us: the loop itself and
  # the capture on wg0 take their share of the two CPUs), all the time.
  ks_spawn_protected flapper "$KS_PROBE" udp --dst "$SERVER:$LAB_ECHO_PORT" --duration 3600 --interval-ms 0.015
  flapper=$LAB_LAST_PID
  sleep 0.5
  lab_spawn_client wgcap tcpdump -i wg0 -n -tt -l -Q out "udp and dst host $SERVER"
  wgcap=$LAB_LAST_PID
  lab_spawn_client linkmon ip -timestamp monitor link dev wg0
  linkmon=$LAB_LAST_PID
  steady0=$EPOCHREALTIME
  sleep 0.5
  capture_start flap
  up_total=0
  cycles0=$EPOCHREALTIME
  for ((c = 0; c < CYCLES; c++)); do
    lab_exec_client ip link set wg0 down
    sleep 0.05
    lab_exec_client ip link set wg0 up
    t0=${EPOCHREALTIME/./}
    sleep 0.1
    up_total=$((up_total + ${EPOCHREALTIME/./} - t0))
  done
  cycles1=$EPOCHREALTIME
  capture_stop
  sleep 0.2
  lab_stop "$flapper" TERM 5
  lab_stop "$wgcap" TERM 5
  lab_stop "$linkmon" TERM 5
  leaks=$(leak_count)
  # Link-up times from the monitor ("Timestamp: Thu Nov 26 05:22:17 2026 123456 usec" lines
  # precede each event); first packet on wg0 after each.
  python3 - "$LAB_DIR/linkmon.log" "$LAB_DIR/wgcap.log" "$CYCLES" "$up_total" \
    "$steady0" "$cycles0" "$cycles1" >"$LAB_DIR/recovery.txt" <<'PY'
import re, sys, time, datetime
mon, cap, cycles, up_us = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
steady0, cycles0, cycles1 = (float(x) for x in sys.argv[5:8])
ups, events, ts = [], [], None
for line in open(mon):
    m = re.match(r"Timestamp: (.+) (\d+) usec", line)
    if m:
        ts = time.mktime(time.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")) + int(m.group(2)) / 1e6
        continue
    f = re.search(r"wg0: <([^>]*)>", line)
    if ts is not None and f:
        up = "UP" in f.group(1).split(",")
        if not events or events[-1][1] != up:
            events.append((ts, up))
            if up:
                ups.append(ts)
    ts = None
pkts = sorted(float(l.split()[0]) for l in open(cap) if re.match(r"^\d+\.\d+ ", l))
lat = []
import bisect
for u in ups:
    i = bisect.bisect_right(pkts, u)
    if i < len(pkts):
        lat.append((pkts[i] - u) * 1000)
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
# The sender's real rate, measured before the storm; the share of it that flowed while the
# tunnel was up during the storm.
steady = [p for p in pkts if steady0 + 0.1 <= p < cycles0]
rate = len(steady) / max(1e-9, cycles0 - steady0 - 0.1)
flowed = len([p for p in pkts if cycles0 <= p <= cycles1])
# Up-time inside the storm, from the link events themselves.
up_s, state, since = 0.0, True, cycles0
for t, up in events:
    if t < cycles0 or t > cycles1:
        continue
    if state and not up:
        up_s += t - since
    if up and not state:
        since = t
    state = up
if state:
    up_s += cycles1 - since
expected = rate * up_s
print("%d %.2f %.2f %d %.3f %.0f" % (len(lat), pct(0.5), pct(0.99), flowed,
      flowed / expected if expected else 0, rate))
PY
  read -r n p50 p99 _flowed_packets frac pps <"$LAB_DIR/recovery.txt"
  if wanted recovery; then
    row recovery_link_up_ms "p50 $p50 ms, p99 $p99 ms" "($n link-ups)" "p99 $p99 ms" "p99 <= 5 ms" \
      "$(verdict "$p99 <= 5")"
    # What bounds it: ksd's own update after each link-up, from its log ("routed in X ms":
    # until the profile table's routes were back, the step the packets waited for).
    read -r r50 r99 rn < <(python3 -c '
import re, sys
v = sorted(float(m.group(1)) for l in open(sys.argv[1])
           if " up (" in l and (m := re.search(r"routed in ([0-9.]+) ms", l)))
pct = lambda p: v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")
print("%.2f %.2f %d" % (pct(0.5), pct(0.99), len(v)))' "$LAB_DIR/ksd.log")
    row recovery_ksd_update_ms "p50 $r50 ms, p99 $r99 ms" "($rn link-ups in ksd.log)" \
      "ksd's share of the recovery" "—" "informational (netlink event to routes written)"
  fi
  if wanted flap; then
    row flap_storm "$CYCLES drops, sender at $pps pkt/s" "leaks must be 0" \
      "$leaks leaked; flowed $(awk -v f="$frac" 'BEGIN { printf "%.0f%%", f * 100 }') of up-time" \
      "0 leaks" "$(verdict "$leaks == 0")"
  fi
fi

# ---- 7. scale ----------------------------------------------------------------------------------
if wanted scale; then
  APPS=${KS_BENCH_APPS:-$(q 300 10000)}
  SOCKS=$(q 10000 100000)
  slice=$KS_CGROUP_ROOT/${KS_SLICE%.slice}-default.slice
  # Apps as ksd finds them after a restart: cgroups in the profile slice, each with a
  # process (a sleep), adopted by the new ksd.
  ks_stop
  t0=${EPOCHREALTIME/./}
  "$KS_BENCH" apps "$slice" "$APPS" >/dev/null
  lab_log "scale: $APPS apps started in $(((${EPOCHREALTIME/./} - t0) / 1000)) ms"
  # ksd start-up with all of them: re-adoption of the pinned state and the apps, three
  # times (stopped in between; the pins and the apps stay), the median and the slowest.
  starts=()
  for ((r = 0; r < 3; r++)); do
    ((r == 0)) || ks_stop
    t0=${EPOCHREALTIME/./}
    ks_start
    starts+=($(((${EPOCHREALTIME/./} - t0) / 1000)))
  done
  startup_ms=$(printf '%s\n' "${starts[@]}" | median)
  startup_max=$(printf '%s\n' "${starts[@]}" | sort -n | tail -1)
  # Several processes: RLIMIT_NOFILE's hard limit may be low (raising it needs
  # CAP_SYS_RESOURCE, which this machine's root does not have).
  per=$(($(ulimit -Hn) - 100))
  procs=$(((SOCKS + per - 1) / per))
  for ((i = 0; i < procs; i++)); do
    n=$((i + 1 < procs ? per : SOCKS - per * (procs - 1)))
    ks_spawn_protected "sockets$i" "$KS_BENCH" sockets "$n" --ready-file "$LAB_DIR/sockets$i.ready"
  done
  sockets_ready() { (($(ls "$LAB_DIR"/sockets*.ready 2>/dev/null | wc -l) == procs)); }
  _lab_wait_until 120 sockets_ready ||
    fail "scale: sockets not opened: $(tail -3 "$LAB_DIR/sockets0.log")"
  rss_kib=$(awk '/VmRSS/ { print $2 }' "/proc/$KS_DAEMON_PID/status")
  list_ms=()
  for ((r = 0; r < 5; r++)); do
    t0=${EPOCHREALTIME/./}
    ks_ctl list --json >/dev/null || fail "ksctl list failed; ksd: $(tail -5 "$LAB_DIR/ksd.log")"
    list_ms+=($(((${EPOCHREALTIME/./} - t0) / 1000)))
  done
  lm=$(printf '%s\n' "${list_ms[@]}" | median)
  # Again after the lists (the first loads the task iterator): the larger of the two.
  rss_after=$(awk '/VmRSS/ { print $2 }' "/proc/$KS_DAEMON_PID/status")
  if ((rss_after > rss_kib)); then rss_kib=$rss_after; fi
  # A launch with all of them up, one at a time as in 4: ksd's single-instance check looks
  # for copies of the command among 10,000+ processes (a readlink of each /proc/PID/exe
  # until the task iterator did it in one walk); --no-instance-check shows its share.
  r=$(lab_exec_client "$KS_BENCH" launch --gap-ms 100 "$(q 10 40)" -- env true ::: \
    "$KS_KSRUN" --socket "$KS_SOCK" true ::: \
    "$KS_KSRUN" --socket "$KS_SOCK" --no-instance-check true)
  read -r scale_launch scale_env scale_launch_over scale_check <<<"$(awk \
    -v w="$(json_get "$r" /p50_us/0)" -v b="$(json_get "$r" /p50_us/1)" \
    -v n="$(json_get "$r" /p50_us/2)" \
    'BEGIN { printf "%.2f %.2f %.2f %.2f", b / 1000, w / 1000, (b - w) / 1000, (b - n) / 1000 }')"
  # Whether a list holds up everyone else: ksd's answer time for status and a short events
  # query, alone and while another client asks for the list over and over.
  alone=$("$KS_BENCH" admin-latency --socket "$KS_SOCK" --count "$(q 100 1000)")
  listing=$("$KS_BENCH" admin-latency --socket "$KS_SOCK" --count "$(q 100 1000)" --while-listing)
  lab_log "scale: admin latency alone $alone; while listing $listing"
  lat() { json_get "$1" "/$2" | awk '{ printf "%.1f", $1 / 1000 }'; }
  # ksd's CPU time while nothing happens (its 1 s timer runs), over 5 s.
  cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$KS_DAEMON_PID/stat"; }
  c0=$(cpu_ticks)
  sleep 5
  idle_ms=$((($(cpu_ticks) - c0) * 1000 / $(getconf CLK_TCK) / 5))
  row scale_ksd_startup "$startup_ms ms (max $startup_max)" "($APPS apps to adopt)" \
    "${starts[*]} ms" "<= 500 ms" "$(verdict "$startup_max <= 500") (3 starts, incl. waiting for the socket)"
  row scale_ksd_rss "$((rss_kib / 1024)) MiB" "($APPS apps, $SOCKS sockets)" "$rss_kib KiB" "<= 16 MiB" \
    "$(verdict "$rss_kib <= 16384") (after the lists)"
  row scale_ksctl_list "$lm ms" "($APPS apps)" "$lm ms" "<= 100 ms" "$(verdict "$lm <= 100") (median of 5)"
  row scale_launch "p50 $scale_launch ms" "env true: $scale_env ms" "+$scale_launch_over ms over env" \
    "<= 1 ms over env" "$(verdict "$scale_launch_over <= 1") (ksrun true, 100 ms apart, $APPS apps up; the single-instance check $scale_check ms of it)"
  row scale_status_during_list "p99 $(lat "$listing" status_p99_us) ms" \
    "p99 $(lat "$alone" status_p99_us) ms alone" \
    "p50 $(lat "$listing" status_p50_us) ms, max $(lat "$listing" status_max_us)" "unaffected" \
    "$(json_get "$listing" /lists) lists meanwhile"
  row scale_events_during_list "p99 $(lat "$listing" events_p99_us) ms" \
    "p99 $(lat "$alone" events_p99_us) ms alone" \
    "p50 $(lat "$listing" events_p50_us) ms, max $(lat "$listing" events_max_us)" "unaffected" \
    "(events --limit 10)"
  row scale_ksd_idle_cpu "$idle_ms ms/s" "($APPS apps)" "$idle_ms ms CPU per s" "—" \
    "informational"
  # Per-packet cost with the maps full: the same measurement as benchmark 1.
  if wanted per_packet; then
    empty_maps=$MARGINAL
    per_packet_row scale_per_packet_egress_ns
    change=$(awk -v a="$MARGINAL" -v b="$empty_maps" 'BEGIN { printf "%+.1f", a - b }')
    row scale_per_packet "+$MARGINAL ns marginal" "+$empty_maps ns (empty maps)" "$change ns" \
      "within 5%" "$(verdict "$MARGINAL <= $empty_maps * 1.05 || $MARGINAL - $empty_maps <= 1") (+-1 ns resolution)"
  fi
fi

echo
printf '%-34s %-22s %-22s %-18s %-16s %s\n' BENCHMARK FIGURE BASELINE RESULT TARGET VERDICT
printf '%s\n' "${ROWS[@]}"
echo
echo "Linux $(uname -r), $(nproc) CPUs; $MITIGATIONS"
echo "JSON lines: $OUT"
