#!/usr/bin/env bash
# ksctl verify, the five-minute manual test automated, against a live ksd:
#   1. healthy, tunnel up: exit 0; the probe's datagrams went through the tunnel (the
#      capture on the physical link sees none of them), and the tunnel-less probe was
#      refused at once with nothing sent;
#   2. tunnel gone: exit 0, the tunnel check says it cannot be tested now (skip), the
#      tunnel-less check still passes;
#   3. a program detached behind ksd's back: exit 1, "FAIL attached" naming the hook;
#      a restarted ksd attaches again and verify passes;
#   4. a pin removed: exit 1, "FAIL pins" naming the pin; a restarted ksd pins again.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

# verify_rc [ARGS]: ksctl verify in ksd's netns (or, with --outside, in the host's); its
# output in $out, its exit status in $rc.
verify_rc() {
  local run=ks_ctl_client
  [[ ${1:-} == --outside ]] && run=ks_ctl
  set +e
  out=$("$run" verify)
  rc=$?
  set -e
  echo "$out"
}

lab_up
ks_up
ks_wait_tunnel_state up

# ---- 1. healthy ----------------------------------------------------------------------------
capture_start verify-healthy
out=$(ks_ctl_client verify) || fail "ksctl verify failed on a healthy setup: $out"
capture_stop
echo "$out"
[[ $out == *"ok   tunnel (default): the protected probe's 3 datagrams left through the tunnel"* ]] ||
  fail "verify: no passing tunnel check"
[[ $out == *"ok   no tunnel: with its tunnel missing"* ]] || fail "verify: no passing tunnel-less check"
pass "ksctl verify passes on a healthy setup"
assert_eq "$(leak_count "host 192.0.2.1")" 0 "none of the probe's datagrams appeared on the physical link"
json=$(ks_ctl_client verify --json)
assert_eq "$(json_get "$json" /ok)" true "ksctl verify --json: ok"
verify_rc --outside
assert_eq "$rc" 1 "ksctl verify from another network namespace than ksd's fails ..."
[[ $out == *"FAIL netns: ksctl runs in another network namespace than ksd"* ]] || fail "verify: $out"
pass "... and says so"

# ---- 2. tunnel gone ----------------------------------------------------------------------------
tunnel_kill
ks_wait_tunnel_state missing
out=$(ks_ctl_client verify) || fail "ksctl verify failed with the tunnel gone: $out"
[[ $out == *"skip tunnel (default): traffic is blocked: wg0 missing"* ]] || fail "verify: $out"
[[ $out == *"ok   no tunnel"* ]] || fail "verify: $out"
pass "with the tunnel gone, verify passes and says the tunnel path cannot be tested now"
tunnel_recreate >/dev/null
ks_wait_tunnel_state up

# ---- 3. a program detached -----------------------------------------------------------------
link_id=$(bpftool -j link show pinned "$KS_PIN_DIR/link_egress" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
bpftool link detach id "$link_id"
verify_rc
assert_eq "$rc" 1 "ksctl verify fails with the egress program detached"
[[ $out == *"FAIL attached: not in force on the protected tree: egress"* ]] || fail "verify: $out"
pass "... and says which program is not in force"
ks_kill9
ks_start
assert_ok "a restarted ksd attaches again: verify passes" ks_ctl_client verify

# ---- 4. a pin removed ------------------------------------------------------------------------
rm "$KS_PIN_DIR/link_connect4"
verify_rc
assert_eq "$rc" 1 "ksctl verify fails with a pin removed"
[[ $out == *"FAIL pins: no pinned connect4 link at $KS_PIN_DIR/link_connect4"* ]] || fail "verify: $out"
pass "... and names the missing pin"
ks_kill9
ks_start
assert_ok "a restarted ksd pins again: verify passes" ks_ctl_client verify

# ---- 5. ksd down: exit 3, as for every command that needs ksd (ksctl(8)) ---------------------
ks_stop
verify_rc
assert_eq "$rc" 3 "ksctl verify exits 3 while ksd is down"
[[ $out == *"FAIL daemon: cannot reach ksd"* ]] || fail "verify: $out"
pass "... and says it cannot reach ksd"
