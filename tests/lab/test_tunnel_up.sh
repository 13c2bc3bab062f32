#!/usr/bin/env bash
# Tunnel up: protected TCP and UDP work, and go through the tunnel only; an IPv6
# destination fails at once with an IPv4-only tunnel; other programs are not affected.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

lab_up

# Kernel-made replies: packets arriving through the tunnel for closed ports are answered
# by the kernel (ICMP port unreachable, TCP RST) without any socket; from an internet
# address (not the tunnel subnet) their route is the main table's. Positive control,
# before ksd runs: those answers, sourced from the tunnel address, leave through eth0.
kernel_replies() {
  lab_probe_isp udp --src "$LAB_NET_IP4" --dst "$LAB_WG_CLIENT_IP4:4444" --count 5 --interval-ms 1 >/dev/null
  lab_probe_isp tcp --src "$LAB_NET_IP4" --dst "$LAB_WG_CLIENT_IP4:4445" --count 2 --timeout-ms 200 >/dev/null
}
capture_start kernel-control
kernel_replies
capture_stop
assert_ge "$(leak_count "src host $LAB_WG_CLIENT_IP4")" 5 \
  "positive control: kernel replies from the tunnel address leak without ksd"

# Strict reverse-path filtering, as some distributions ship it: the tunnel's replies would
# be dropped (their source routes via eth0); ksd must loosen it on the tunnel alone.
lab_exec_client sh -c 'echo 1 >/proc/sys/net/ipv4/conf/all/rp_filter; echo 1 >/proc/sys/net/ipv4/conf/wg0/rp_filter'
ks_up
ks_wait_tunnel_state up
assert_eq "$(lab_exec_client cat /proc/sys/net/ipv4/conf/wg0/rp_filter)" 2 "ksd loosened rp_filter on wg0"
assert_eq "$(lab_exec_client cat /proc/sys/net/ipv4/conf/all/rp_filter)" 1 "... and nothing else"

capture_start kernel-protected
kernel_replies
capture_stop
assert_no_leak "with ksd, kernel replies from the tunnel address stay in the tunnel"

# Positive control: the same probes unprotected leak, and the detector sees it.
capture_start control
out=$(lab_probe_client udp --dst "$LAB_TARGET4" --count 20 --interval-ms 1 --expect-reply)
assert_eq "$(json_get "$out" /replies)" 20 "unprotected UDP reaches the target"
out=$(lab_probe_client tcp --dst "$LAB_TARGET4" --count 3)
assert_eq "$(json_get "$out" /ok)" 3 "unprotected TCP reaches the target"
capture_stop
assert_ge "$(leak_count)" 23 "positive control: the detector sees the unprotected probes"

# Protected: same probes through ksrun.
capture_start protected
out=$(ks_run_client "$KS_PROBE" udp --dst "$LAB_TARGET4" --count 20 --interval-ms 1 --expect-reply)
assert_eq "$(json_get "$out" /replies)" 20 "protected UDP works (through the tunnel)"
out=$(ks_run_client "$KS_PROBE" tcp --dst "$LAB_TARGET4" --count 3)
assert_eq "$(json_get "$out" /ok)" 3 "protected TCP works (through the tunnel)"
out=$(ks_run_client "$KS_PROBE" connect-time --dst "$LAB_TARGET6")
assert_eq "$(json_get "$out" /errno)" ENETUNREACH "protected IPv6 with an IPv4-only tunnel fails"
assert_le "$(json_get "$out" /ms)" 50 "  ... at once"
out=$(ks_run_client "$KS_PROBE" udp --dst "$LAB_TARGET6" --count 5 --interval-ms 1)
assert_eq "$(json_get "$out" /errors/ENETUNREACH 0)" 5 "protected IPv6 UDP sends fail"
capture_stop
assert_no_leak "no protected frame leaves outside the tunnel"
assert_ge "$(capture_count "$LAB_WG_FLOW_FILTER")" 23 "the protected traffic is in the WireGuard flow"

# An unprotected program on the same host keeps its normal routing.
out=$(lab_probe_client udp --dst "$LAB_TARGET4" --count 5 --interval-ms 1 --expect-reply)
assert_eq "$(json_get "$out" /replies)" 5 "an unprotected program is not affected"

# Per-app counters saw the protected traffic.
out=$(ks_ctl status --json)
assert_gt "$(json_get "$out" /counters/allowed_packets)" 0 "ksd counts allowed packets"
assert_ge "$(json_get "$out" /blocked_total)" 6 "ksd counts the refused IPv6 attempts"

# Ingress: a protected server gets nothing that arrives on the physical link. Positive
# control first: the same echo server unprotected answers the ISP side.
lab_spawn_client open-echo "$KS_PROBE" echo-server --udp 0.0.0.0:7101 --ready-file "$LAB_DIR/open.ready"
lab_wait_file "$LAB_DIR/open.ready"
out=$(lab_probe_isp udp --dst "$LAB_CLIENT_IP4:7101" --count 5 --interval-ms 1 --expect-reply --reply-wait-ms 500)
assert_eq "$(json_get "$out" /replies)" 5 "positive control: an unprotected server answers via eth0"
ks_spawn_protected prot-echo "$KS_PROBE" echo-server --udp 0.0.0.0:7102 --ready-file "$LAB_DIR/prot.ready"
lab_wait_file "$LAB_DIR/prot.ready"
out=$(lab_probe_isp udp --dst "$LAB_CLIENT_IP4:7102" --count 5 --interval-ms 1 --expect-reply --reply-wait-ms 500)
assert_eq "$(json_get "$out" /replies)" 0 "a protected server gets nothing from the physical link"

# CVE-2019-14899 style: the local network sends to the *tunnel address* over the physical
# link (the client's kernel accepts it: weak host model). A protected server must not
# answer; the same server unprotected does (positive control).
lab_exec_isp ip route add "$LAB_WG_CLIENT_IP4/32" via "$LAB_CLIENT_IP4" dev "$LAB_ISP_IF"
lab_spawn_client open-echo2 "$KS_PROBE" echo-server --udp 0.0.0.0:7103 --ready-file "$LAB_DIR/open2.ready"
lab_wait_file "$LAB_DIR/open2.ready"
out=$(lab_probe_isp udp --src "$LAB_NET_IP4" --dst "$LAB_WG_CLIENT_IP4:7103" --count 5 --interval-ms 1 \
  --expect-reply --reply-wait-ms 500)
assert_eq "$(json_get "$out" /replies)" 5 "positive control: an unprotected server answers probes to the tunnel address from the physical link"
ks_spawn_protected prot-echo2 "$KS_PROBE" echo-server --udp 0.0.0.0:7104 --ready-file "$LAB_DIR/prot2.ready"
lab_wait_file "$LAB_DIR/prot2.ready"
out=$(lab_probe_isp udp --src "$LAB_NET_IP4" --dst "$LAB_WG_CLIENT_IP4:7104" --count 5 --interval-ms 1 \
  --expect-reply --reply-wait-ms 500)
assert_eq "$(json_get "$out" /replies)" 0 "a protected server does not answer probes to the tunnel address from the physical link"
