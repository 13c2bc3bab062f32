#!/usr/bin/env bash
# shellcheck disable=SC2119  # lab functions take optional arguments, not the script's
# The lab cleans up after itself whatever happens to a scenario: it runs test_detector.sh
# as a child that (1) fails an assertion midway, (2) is SIGTERMed midway, (3) is SIGKILLed
# midway (no trap can run: the next lab_up's lab_reap_stale must remove the orphaned lab).
# Each time a stray ks-probe is running in the client netns and a capture is active.
# After each: no lab netns, no temp dir, no process the lab started is left.
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
