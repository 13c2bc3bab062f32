#!/usr/bin/env bash
# Single-instance hand-off: an app that keeps one instance (browsers, many torrent and chat
# clients) hands a new start over to the copy already running and exits, so `ksrun APP`
# next to an unprotected APP would really open a window of the unprotected copy. ksrun
# warns about such a copy of the same executable run by the same user, and only then:
#   - the same user's unprotected copy: warned about, its pid named; the command still runs
#     (running a tool twice is normal; the new process itself is protected);
#   - another user's copy, a protected copy, a shell (`ksrun sh -c ...`): no warning;
#   - --no-instance-check: no warning.
# The app is a copy of sleep(1) under its own name, so that nothing else on the machine
# shares its executable.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

lab_up
ks_up
ks_wait_tunnel_state up

APP=$LAB_DIR/single-app
install -m 0755 "$(command -v sleep)" "$APP"
WARNING="already runs unprotected"

# ksrun_stderr CMD...: CMD's stderr (its stdout dropped); returns its status.
ksrun_stderr() { { "$@" >/dev/null; } 2>&1; }
# runs_app PID: PID is running APP (the exec happened).
runs_app() { [[ $(readlink "/proc/$1/exe" 2>/dev/null) == "$APP" ]]; }

# Positive control first: nothing of APP runs, so no warning.
err=$(ksrun_stderr ks_run_nobody "$APP" 0)
[[ $err != *"$WARNING"* ]] || fail "a warning with no copy running: $err"
pass "no copy running: no warning"

lab_spawn_client unprotected-copy "${LAB_AS_NOBODY[@]}" "$APP" 300
COPY=$LAB_LAST_PID
_lab_wait_until 5 runs_app "$COPY" ||
  fail "the unprotected copy did not start"
rc=0
err=$(ksrun_stderr ks_run_nobody "$APP" 0) || rc=$?
assert_eq "$rc" 0 "with an unprotected copy running, the command still runs"
[[ $err == *"$APP $WARNING (pid $COPY)"* ]] || fail "no warning naming the copy $COPY: $err"
pass "ksrun warns about the same user's unprotected copy and names it (pid $COPY)"
[[ $err == *"quit it first"* ]] || fail "the warning does not say what to do: $err"

err=$(ksrun_stderr ks_run_nobody --no-instance-check "$APP" 0)
[[ $err != *"$WARNING"* ]] || fail "--no-instance-check still warns: $err"
pass "--no-instance-check: no warning"
err=$(ksrun_stderr ks_run_client "$APP" 0)
[[ $err != *"$WARNING"* ]] || fail "root is warned about nobody's copy: $err"
pass "another user's copy: no warning"
err=$(ksrun_stderr ks_run_client sh -c true)
[[ $err != *"$WARNING"* ]] || fail "a shell is warned about: $err"
pass "a shell (many unrelated copies run): no warning"

lab_stop "$COPY"
lab_spawn_client protected-copy "${LAB_AS_NOBODY[@]}" "$KS_KSRUN" --socket "$KS_SOCK" -- "$APP" 300
PROTECTED=$LAB_LAST_PID
_lab_wait_until 5 runs_app "$PROTECTED" ||
  fail "the protected copy did not start"
err=$(ksrun_stderr ks_run_nobody "$APP" 0)
[[ $err != *"$WARNING"* ]] || fail "a protected copy is warned about: $err"
pass "a protected copy: no warning"
lab_stop "$PROTECTED"
