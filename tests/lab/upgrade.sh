#!/usr/bin/env bash
# Upgrade in place: this ksd takes over the pinned state an older ksd left, while that
# ksd's protected app keeps sending. A manual check, not part of ctest (it builds the older
# version from git history, minutes on a small machine):
#
#   sudo tests/lab/upgrade.sh [REV]      # REV: the older version (default: 93ad1d7^, the
#                                        # last one before KS_ABI_VERSION 2)
#   (KS_UPGRADE_FROM_BUILD=DIR: a build of REV made earlier, instead of building it)
#
# The default REV pins a different layout: a ks_tunnels hash and a ks_totals map (both
# retired now), ks_cgroup_value.flags where app_slot is now, exact-match socket marks in
# its routing rules. Steps:
#   1. the older ksd (and its ksrun) protect a long-lived UDP sender, which runs through
#      the tunnel; an unprotected sender to a second address is the positive control;
#   2. the older ksd stops (SIGTERM, as a package upgrade's restart does) and this build's
#      ksd starts on the same pin directory, slice and config;
#   3. asserted: the retired pins are gone and the new maps are there; the older rules are
#      replaced by masked ones; the app is adopted and its sender keeps getting replies;
#      a new ksrun works; the tunnel killed: the old sender is refused; nothing of the
#      protected sender ever left on the physical link, while the control did.
# shellcheck disable=SC2119  # lab_up/ks_up take options
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

REV=${1:-93ad1d7^}
OLD=$(mktemp -d /tmp/ks-upgrade-from.XXXXXX)
cleanup_old() {
  git -C "$KS_SOURCE_DIR" worktree remove --force "$OLD/src" 2>/dev/null || true
  rm -rf "$OLD"
}
trap cleanup_old EXIT # until lab_up takes the EXIT trap over (lab_on_exit below)
if [[ -n ${KS_UPGRADE_FROM_BUILD:-} ]]; then
  OLD_BUILD=$KS_UPGRADE_FROM_BUILD # a build of REV made earlier
else
  lab_log "building $REV in $OLD (ksd, ksrun, ksctl)"
  git -C "$KS_SOURCE_DIR" worktree add -q --detach "$OLD/src" "$REV"
  cmake -S "$OLD/src" -B "$OLD/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$OLD/cmake.log" 2>&1 ||
    fail "cmake of $REV failed: $(tail -5 "$OLD/cmake.log")"
  cmake --build "$OLD/build" -j"$(nproc)" --target ksd ksrun ksctl >"$OLD/build.log" 2>&1 ||
    fail "the build of $REV failed: $(tail -5 "$OLD/build.log")"
  OLD_BUILD=$OLD/build
fi
NEW_KSD=$KS_KSD NEW_KSRUN=$KS_KSRUN NEW_KSCTL=$KS_KSCTL
KS_KSD=$OLD_BUILD/ksd KS_KSRUN=$OLD_BUILD/ksrun KS_KSCTL=$OLD_BUILD/ksctl

lab_up
lab_on_exit() {
  ks_down
  cleanup_old
}
ks_up
ks_wait_tunnel_state up
lab_add_control_dst
[[ -e $KS_PIN_DIR/ks_tunnels && -e $KS_PIN_DIR/ks_totals ]] ||
  fail "$REV did not pin the older layout (ks_tunnels, ks_totals): $(ls "$KS_PIN_DIR")"
pass "$REV's ksd runs with its layout pinned (ks_tunnels, ks_totals)"
exact_rules() { lab_exec_client ip rule show | grep -c 'fwmark 0x4b53[0-9a-f]* lookup\|fwmark 0x4b53[0-9a-f]* unreachable' || true; }
masked_rules() { lab_exec_client ip rule show | grep -c 'fwmark 0x4b53[0-9a-f]*/0xffff003f' || true; }
assert_gt "$(exact_rules)" 0 "$REV's rules match the exact socket mark"

# ---- 1. the older version protects a sender ---------------------------------------------------
capture_start all
ks_spawn_protected sender "$KS_PROBE" udp --dst "$LAB_TARGET4" --duration 120 --interval-ms 5 \
  --expect-reply --ready-file "$LAB_DIR/sender.ready"
SENDER=$LAB_LAST_PID
lab_spawn_client control "$KS_PROBE" udp --dst "$LAB_CONTROL_TARGET4" --duration 120 \
  --interval-ms 20 --ready-file "$LAB_DIR/control.ready"
CONTROL_PID=$LAB_LAST_PID
lab_wait_file "$LAB_DIR/sender.ready"
lab_wait_file "$LAB_DIR/control.ready"
lab_poll_until 5 ks_app_grows "$SENDER" allowed_packets 0 100 ||
  fail "the protected sender does not flow through the tunnel under $REV"
pass "under $REV: the protected sender flows through the tunnel"
APP_CG=$(lab_cgroup_of "$SENDER")

# ---- 2. upgrade: the older ksd stops, this one starts --------------------------------------------
ks_stop
KS_KSD=$NEW_KSD KS_KSRUN=$NEW_KSRUN KS_KSCTL=$NEW_KSCTL
ks_start
ks_wait_tunnel_state up
pass "this build's ksd started on $REV's pinned state"

# ---- 3. what the new ksd made of it --------------------------------------------------------------
assert_fails "the retired ks_tunnels pin is gone" test -e "$KS_PIN_DIR/ks_tunnels"
assert_fails "the retired ks_totals pin is gone" test -e "$KS_PIN_DIR/ks_totals"
assert_ok "ks_tunnel_sets is pinned" test -e "$KS_PIN_DIR/ks_tunnel_sets"
assert_ok "ks_app_counters is pinned" test -e "$KS_PIN_DIR/ks_app_counters"
assert_eq "$(exact_rules)" 0 "no exact-mark rule of $REV is left"
assert_gt "$(masked_rules)" 0 "the rules match tag and profile under the mask"
assert_eq "$(lab_cgroup_of "$SENDER")" "$APP_CG" "the sender stayed in its app cgroup"
base=$(ks_app_counter "$SENDER" allowed_packets) || fail "ksctl list does not show the adopted sender"
pass "the new ksd lists the adopted sender"
lab_poll_until 5 ks_app_grows "$SENDER" allowed_packets "$base" 100 ||
  fail "the sender's traffic does not flow after the upgrade"
pass "the sender started under $REV keeps flowing through the tunnel"
out=$(ks_run_client "$KS_PROBE" udp --dst "$LAB_TARGET4" --count 20 --interval-ms 1 \
  --expect-reply --reply-wait-ms 3000)
assert_eq "$(json_get "$out" /replies)" 20 "a new protected program works after the upgrade"

tunnel_kill
ks_wait_tunnel_state missing
base=$(ks_app_counter "$SENDER" blocked_connects)
lab_poll_until 5 ks_app_grows "$SENDER" blocked_connects "$base" 50 ||
  fail "the old sender is not refused with the tunnel gone"
pass "tunnel gone: the sender started under $REV is refused"
_lab_sleep 1
lab_stop "$SENDER" TERM 5
lab_stop "$CONTROL_PID" TERM 5
capture_stop
lab_log "the protected sender, across the upgrade and the tunnel's end: $(tail -n 1 "$LAB_DIR/sender.log")"

CONTROL="ip and dst host $LAB_CONTROL_NET_IP4"
assert_no_leak "no frame of the protected sender left on the physical link, before, during or after the upgrade" \
  "not ($CONTROL)"
assert_gt "$(leak_count "$CONTROL")" 0 "positive control: the detector sees the unprotected sender"
