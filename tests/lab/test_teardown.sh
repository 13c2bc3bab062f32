#!/usr/bin/env bash
# ksctl teardown cannot surprise: refused while ksd runs (it would put protection back),
# refused while protected apps run (they would send outside the tunnel), asks on a
# terminal (and "n" removes nothing), then says exactly what it removed; a second one finds
# nothing to remove.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

lab_up
ks_up
ks_wait_tunnel_state up
# What teardown names and removes: this lab's ksd, pins and tree (never the defaults).
teardown() { lab_exec_client "$KS_KSCTL" --socket "$KS_SOCK" --pin-dir "$KS_PIN_DIR" teardown --slice "$KS_SLICE" "$@"; }
our_rules() { lab_exec_client ip rule | grep -c 'proto 75' || true; }
assert_ge "$(our_rules)" 1 "ksd's routing rules are in place"

RC=0
out=$(teardown --yes 2>&1) || RC=$?
assert_eq "$RC" 1 "teardown is refused while ksd runs"
[[ $out == *"ksd (pid $KS_DAEMON_PID) is running with pins in $KS_PIN_DIR"*"Nothing was removed"* ]] ||
  fail "teardown does not say why: $out"
pass "it names the running ksd and what it uses: $out"
[[ -e $KS_PIN_DIR && -d $KS_CGROUP_ROOT ]] || fail "a refused teardown removed something"

ks_spawn_protected sleeper sleep 600
_lab_wait_until 10 grep -q 'populated 1' "$KS_CGROUP_ROOT/cgroup.events" || fail "the protected app did not start"
ks_stop
RC=0
out=$(teardown --yes 2>&1) || RC=$?
assert_eq "$RC" 1 "teardown is refused while protected apps run"
[[ $out == *"protected processes are still running"*"Nothing was removed"* ]] || fail "teardown: $out"
[[ -e $KS_PIN_DIR ]] || fail "a refused teardown removed the pins"
pass "... and removes nothing"
echo 1 >"$KS_CGROUP_ROOT/cgroup.kill"
_lab_wait_until 5 _ks_tree_empty || fail "the protected app did not end"

# On a terminal it asks; "n" keeps everything.
RC=0
out=$(printf 'n\n' | script -qec "$(printf '%q ' "$KS_KSCTL" --socket "$KS_SOCK" --pin-dir "$KS_PIN_DIR" teardown --slice "$KS_SLICE")" /dev/null 2>&1) || RC=$?
[[ $out == *"Remove protection:"*"$KS_PIN_DIR"*"[y/N]"* ]] || fail "teardown on a terminal does not ask: $out"
assert_eq "$RC" 1 "answering n ends teardown with status 1"
[[ $out == *"nothing was removed"* && -e $KS_PIN_DIR && -d $KS_CGROUP_ROOT ]] ||
  fail "answering n removed something: $out"
pass "on a terminal it asks first, naming what it would remove; n removes nothing"

out=$(teardown --yes --json)
printf '%s\n' "$out" | sed 's/^/   /'
assert_eq "$(json_get "$out" /removed_pins)" true "teardown --json: the pins removed"
assert_eq "$(json_get "$out" /pin_dir)" "$KS_PIN_DIR" "... from this pin dir"
assert_ge "$(json_get "$out" /removed_routing_rules)" 1 "... the routing rules of ours"
assert_eq "$(json_get "$out" /removed_tree)" true "... the protected tree"
assert_eq "$(json_get "$out" /tree)" "$KS_CGROUP_ROOT" "... this one"
[[ ! -e $KS_PIN_DIR && ! -d $KS_CGROUP_ROOT ]] || fail "teardown left pins or the tree"
assert_eq "$(our_rules)" 0 "no Killswitch routing rule is left"
pass "teardown removed exactly what it said"
out=$(teardown --yes)
[[ $out == "nothing to remove:"* ]] || fail "a second teardown: $out"
pass "a second teardown finds nothing to remove"
out=$(teardown --yes --json)
assert_eq "$(json_get "$out" /removed_pins)/$(json_get "$out" /removed_tree)/$(json_get "$out" /removed_routing_rules)" \
  false/false/0 "... and --json says it removed nothing"
