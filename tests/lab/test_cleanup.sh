#!/usr/bin/env bash
# shellcheck disable=SC2119  # lab functions take optional arguments, not the script's
# The lab cleans up after itself whatever happens to a scenario: it runs test_detector.sh
# as a child that (1) fails an assertion midway, (2) is SIGTERMed midway, (3) is SIGKILLed
# midway (no trap can run: the next lab_up's lab_reap_stale must remove the orphaned lab).
# Each time a stray ks-probe is running in the client netns and a capture is active.
# After each: no lab netns, no temp dir, no process the lab started is left.
# (4) A scenario with ksd that defines its own lab_on_exit (as scenarios may) still leaves
# no pins, no protected tree and no ksd behind (one once did: its lab_on_exit replaced the
# one that tore Killswitch down).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

detector=$(dirname "${BASH_SOURCE[0]}")/test_detector.sh
work=$(mktemp -d /tmp/ks-lab-cleanup.XXXXXX)
trap 'rm -rf "$work"' EXIT

# check_clean STATE_FILE WHAT: everything the child recorded is gone.
check_clean() {
  local state=$1 what=$2 kind a b c n=0
  while read -r kind a b c; do
    case $kind in
      ns) [[ ! -e /run/netns/$a ]] || fail "$what: netns $a still exists" ;;
      dir) [[ ! -e $a ]] || fail "$what: temp dir $a still exists" ;;
      pid) ! _lab_alive "$a" "$b" || fail "$what: $c (pid $a) still runs" ;;
    esac
    n=$((n + 1))
  done <"$state"
  grep -q '^pid .* stray-probe$' "$state" || fail "$what: the child never started its stray probe"
  pass "$what: lab fully cleaned up ($n recorded resources gone)"
}

# start_child MODE STATE LOG: run the detector in the background with the given env.
start_child() {
  KS_LAB_STATE_FILE=$2 env "$1" bash "$detector" >"$3" 2>&1 &
  child=$!
}

wait_hang() {
  _lab_wait_until 30 grep -qs '^hang ' "$1" ||
    fail "the child did not reach its checkpoint: $(tail -5 "$2")"
}

# 1. A failing assertion midway.
state=$work/fail.state
rc=0
KS_LAB_STATE_FILE=$state KS_LAB_FAIL_AT=probe-running bash "$detector" >"$work/fail.log" 2>&1 || rc=$?
assert_ne "$rc" 0 "forced failure: the scenario exits non-zero"
assert_ok "forced failure: it says FAIL" grep -q "^FAIL: forced failure at checkpoint" "$work/fail.log"
assert_ok "forced failure: it printed lab diagnostics" grep -q "lab diagnostics" "$work/fail.log"
check_clean "$state" "forced failure"

# 2. SIGTERM midway (what a user's Ctrl-C or a supervisor does).
state=$work/term.state
start_child KS_LAB_HANG_AT=probe-running "$state" "$work/term.log"
wait_hang "$state" "$work/term.log"
kill -TERM "$child"
rc=0
wait "$child" || rc=$?
assert_eq "$rc" 143 "SIGTERM: the scenario exits 128+15"
check_clean "$state" "SIGTERM"

# 3. SIGKILL midway (e.g. a ctest timeout): nothing runs in the child; the orphaned lab must
# still exist, and the next lab_reap_stale (every lab_up calls it) removes it.
state=$work/kill.state
start_child KS_LAB_HANG_AT=probe-running "$state" "$work/kill.log"
wait_hang "$state" "$work/kill.log"
{
  kill -KILL "$child"
  wait "$child" || true
} 2>/dev/null
ns=$(awk '$1 == "ns" { print $2; exit }' "$state")
assert_ok "SIGKILL: the orphaned lab is still there before reaping" test -e "/run/netns/$ns"
lab_reap_stale 2>"$work/reap.log"
assert_ok "SIGKILL: lab_reap_stale reported the stale lab" grep -q "reaping stale lab netns $ns" \
  "$work/reap.log"
check_clean "$state" "SIGKILL + lab_reap_stale"

# 4. A Killswitch scenario with its own lab_on_exit.
state=$work/own-exit.state
lab_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cat >"$work/own_exit.sh" <<EOF
set -euo pipefail
source "$lab_dir/lib.sh"
source "$lab_dir/killswitch.sh"
lab_on_exit() { echo "the scenario's own exit work" >"$work/own-exit.ran"; }
lab_up
ks_up
EOF
rc=0
KS_LAB_STATE_FILE=$state KS_LAB_SCENARIO=own_exit bash "$work/own_exit.sh" >"$work/own-exit.log" 2>&1 || rc=$?
assert_eq "$rc" 0 "own lab_on_exit: the scenario succeeds"
assert_ok "own lab_on_exit: it ran" test -s "$work/own-exit.ran"
read -r _ pins tree < <(grep '^ks ' "$state")
[[ -n $pins && -n $tree ]] ||
  fail "own lab_on_exit: the scenario never started ksd: $(tail -5 "$work/own-exit.log")"
assert_ok "own lab_on_exit: no pins left ($pins)" test ! -e "$pins"
assert_ok "own lab_on_exit: no protected tree left ($tree)" test ! -e "$tree"
read -r ksd_pid ksd_st < <(awk '$1 == "pid" && $4 == "ksd" { print $2, $3; exit }' "$state")
[[ -n $ksd_pid ]] || fail "own lab_on_exit: no ksd recorded"
! _lab_alive "$ksd_pid" "$ksd_st" || fail "own lab_on_exit: ksd (pid $ksd_pid) still runs"
pass "own lab_on_exit: ksd is gone too"
