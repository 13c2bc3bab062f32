#!/usr/bin/env bash
# ksrun's contract at its edges (docs/interface.md, "ksrun"):
#   - ksd unreachable (stopped: no socket; SIGKILLed: a stale socket file; a path that never
#     existed, given by --socket or by $KILLSWITCH_SOCKET): exit 125, says why on stderr, and
#     COMMAND never runs (it would have created a marker file);
#   - unknown profile: 125 with a message naming the profile, COMMAND never runs; an invalid
#     profile name too;
#   - no COMMAND (`ksrun`, `ksrun --`, `ksrun --profile default`): 125;
#   - with ksd up: ksrun exits with COMMAND's status (7, 0, 1; 127 when COMMAND is not found);
#   - ksrun as an unprivileged user (nobody) works: COMMAND runs as nobody, in the protected
#     tree, with its traffic through the tunnel;
#   - `ksrun [--] CMD ARGS...` hands ARGS to CMD untouched and in order, even when they look
#     like ksrun's own options (--profile, --socket, --help, --version, --) or are empty.
# shellcheck disable=SC2016,SC2119  # sh -c scripts take "$1"...; lab_up/ks_up take options
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"


# run_ksrun [ENV=V...] -- ARGS...: ksrun ARGS in the client netns; sets RC, OUT, ERR.
RC=0 OUT="" ERR=""
run_ksrun() {
  local envs=()
  while [[ $1 != -- ]]; do
    envs+=("$1")
    shift
  done
  shift
  RC=0
  OUT=$(lab_exec_client env ${envs[@]+"${envs[@]}"} "$KS_KSRUN" "$@" 2>"$LAB_DIR/ksrun.err") || RC=$?
  ERR=$(<"$LAB_DIR/ksrun.err")
}

# refused LABEL NEEDLE: the last run_ksrun exited 125 and said NEEDLE on stderr.
refused() {
  assert_eq "$RC" 125 "$1: ksrun exits 125"
  [[ $ERR == *"$2"* ]] || fail "$1: stderr does not say '$2': $ERR"
  pass "$1: ksrun says why: $(head -n 1 <<<"$ERR")"
}

# refuses_marker LABEL NEEDLE [ENV=V...] -- KSRUN_OPTIONS...: `ksrun OPTIONS -- sh -c 'touch M'`
# is refused with NEEDLE on stderr, and M does not exist.
N=0
refuses_marker() {
  local label=$1 needle=$2 marker
  shift 2
  N=$((N + 1))
  marker=$LAB_DIR/marker-$N
  run_ksrun "$@" -- sh -c 'touch "$1"' sh "$marker"
  refused "$label" "$needle"
  [[ $ERR == *"refusing to run sh unprotected"* ]] || fail "$label: stderr lacks the refusal line: $ERR"
  assert_fails "$label: COMMAND never ran (no marker file)" test -e "$marker"
}

lab_up
ks_up
ks_wait_tunnel_state up

# ---- ksd unreachable ---------------------------------------------------------------------------------
refuses_marker "no such socket (--socket)" "cannot reach ksd at $LAB_DIR/run/nosuch.sock" \
  -- --socket "$LAB_DIR/run/nosuch.sock"
refuses_marker "no such socket (\$KILLSWITCH_SOCKET)" "cannot reach ksd at $LAB_DIR/run/env.sock" \
  KILLSWITCH_SOCKET="$LAB_DIR/run/env.sock" --
ks_kill9
assert_ok "ksd SIGKILLed: its socket file is left behind" test -S "$KS_SOCK"
refuses_marker "ksd SIGKILLed (stale socket)" "cannot reach ksd" -- --socket "$KS_SOCK"
ks_start
ks_stop
assert_fails "ksd stopped: its socket file is gone" test -e "$KS_SOCK"
refuses_marker "ksd stopped (SIGTERM)" "cannot reach ksd at $KS_SOCK" -- --socket "$KS_SOCK"
# Also when the command is given without "--" and is not a shell.
marker=$LAB_DIR/marker-touch
run_ksrun -- --socket "$KS_SOCK" touch "$marker"
refused "ksd stopped, 'ksrun touch M'" "cannot reach ksd"
assert_fails "ksd stopped, 'ksrun touch M': COMMAND never ran" test -e "$marker"

# ---- no command (ksd not needed: refused before it is asked) -------------------------------------
run_ksrun -- --socket "$KS_SOCK"
refused "ksrun with no command" "no COMMAND given"
run_ksrun -- --socket "$KS_SOCK" --
refused "'ksrun --' with no command" "no COMMAND given"
run_ksrun -- --socket "$KS_SOCK" --profile default
refused "'ksrun --profile default' with no command" "no COMMAND given"

# ---- with ksd up ---------------------------------------------------------------------------------------
ks_start
ks_wait_tunnel_state up
refuses_marker "unknown profile" 'unknown profile "nosuch"' -- --socket "$KS_SOCK" --profile nosuch
run_ksrun -- --socket "$KS_SOCK" --profile nosuch true
refused "'ksrun --profile nosuch true'" 'unknown profile "nosuch"'
refuses_marker "invalid profile name" 'invalid profile name "../x"' -- --socket "$KS_SOCK" --profile ../x

run_ksrun -- --socket "$KS_SOCK" sh -c 'exit 7'
assert_eq "$RC" 7 "ksrun sh -c 'exit 7' exits with COMMAND's status"
run_ksrun -- --socket "$KS_SOCK" true
assert_eq "$RC" 0 "ksrun true exits 0"
run_ksrun -- --socket "$KS_SOCK" false
assert_eq "$RC" 1 "ksrun false exits 1"
run_ksrun -- --socket "$KS_SOCK" "$LAB_DIR/no-such-program"
assert_eq "$RC" 127 "ksrun of a missing program exits 127 (not 125: the launcher worked)"
[[ $ERR == *"cannot run"* ]] || fail "missing program: stderr does not say so: $ERR"

# Arguments untouched and in order, with and without "--".
ARGS=(--with --flags "two words" "" -- --profile nosuch --socket /nonexistent --help --version -h
  "*" '$HOME' "tab	char")
expected=$(printf '<%s>' "${ARGS[@]}")
run_ksrun -- --socket "$KS_SOCK" -- printf '<%s>' "${ARGS[@]}"
assert_eq "$RC" 0 "ksrun -- printf ARGS runs"
assert_eq "$OUT" "$expected" "ksrun -- CMD ARGS: ARGS reach CMD untouched and in order"
run_ksrun -- --socket "$KS_SOCK" printf '<%s>' "${ARGS[@]}"
assert_eq "$OUT" "$expected" "ksrun CMD ARGS (no --): ARGS reach CMD untouched and in order"
run_ksrun -- --socket "$KS_SOCK" --profile default -- printf '<%s>' -- x
assert_eq "$OUT" "<--><x>" "ksrun --profile default -- CMD -- x: CMD's own -- is kept"

# ---- as an unprivileged user ---------------------------------------------------------------------------
run_nobody() { # run_nobody ARGS...: ksrun ARGS as nobody:nogroup without groups; sets RC, OUT, ERR
  RC=0
  OUT=$(ks_run_nobody "$@" 2>"$LAB_DIR/ksrun.err") || RC=$?
  ERR=$(<"$LAB_DIR/ksrun.err")
}
NOBODY_SCRIPT='id -u; grep "^0::" /proc/self/cgroup | cut -d: -f3; grep ^CapEff /proc/self/status | cut -f2
  exec "$1" udp --dst "$2" --count 5 --interval-ms 1 --expect-reply'
run_nobody -- sh -c "$NOBODY_SCRIPT" sh "$KS_PROBE" "$LAB_TARGET4"
assert_eq "$RC" 0 "ksrun as nobody runs its command${ERR:+ (stderr: $ERR)}"
mapfile -t lines <<<"$OUT"
assert_eq "${lines[0]}" 65534 "as nobody: COMMAND runs as nobody"
[[ ${lines[1]} == /$KS_SLICE/*/ksrun-*.scope ]] ||
  fail "as nobody: COMMAND is not in the protected tree: ${lines[1]}"
pass "as nobody: COMMAND runs in the protected tree (${lines[1]})"
assert_eq "${lines[2]}" 0000000000000000 "as nobody: COMMAND holds no capability"
assert_eq "$(json_get "${lines[3]}" /replies)" 5 "as nobody: COMMAND's traffic goes through the tunnel"

# ---- a mistyped option is named, never run as the command -----------------------------------
# CLI11 handed "--prfile" over as COMMAND ("refusing to run --prfile unprotected").
marker=$LAB_DIR/typo-ran
RC=0
ERR=$(ks_run_client --prfile work touch "$marker" 2>&1) || RC=$?
assert_eq "$RC" 125 "ksrun --prfile (a typo) is refused"
[[ $ERR == *"unknown option --prfile (did you mean --profile?)"* ]] ||
  fail "ksrun does not name the mistyped option: $ERR"
pass "ksrun names the mistyped option and the one meant: $ERR"
assert_fails "... and runs nothing" test -e "$marker"
RC=0
ERR=$(ks_ctl stauts 2>&1) || RC=$?
assert_eq "$RC" 2 "ksctl stauts (a typo) is a usage error"
[[ $ERR == *'unknown command "stauts" (did you mean status?)'* ]] ||
  fail "ksctl does not name the mistyped command: $ERR"
pass "ksctl names the mistyped command and the one meant: $ERR"
# Global options after the subcommand are taken too.
assert_eq "$(json_get "$("$KS_KSCTL" status --json --socket "$KS_SOCK")" /daemon)" running \
  "ksctl status --json --socket PATH (the global option after the subcommand) reaches ksd"
# A bad number is named plainly (CLI11's own check printed a 309-digit range).
RC=0
ERR=$(ks_ctl protect --pid abc 2>&1) || RC=$?
assert_eq "$RC" 2 "ksctl protect --pid abc is a usage error"
[[ $ERR == *'"abc" is not a whole number from 1 to'* && ${#ERR} -lt 200 ]] ||
  fail "ksctl protect --pid abc: $ERR"
pass "... named plainly: $(head -1 <<<"$ERR")"
