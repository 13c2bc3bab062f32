#!/usr/bin/env bash
# Single-instance hand-off: an app that keeps one instance (browsers, many torrent and chat
# clients) hands a new start over to the copy already running and exits, so `ksrun APP`
# next to an unprotected APP would really open a window of the unprotected copy. ksrun
# warns about such a copy of the same executable run by the same user, and only then:
#   - the same user's unprotected copy: warned about, its pid named; the command still runs
#     (running a tool twice is normal; the new process itself is protected);
#   - another user's copy, a protected copy, a shell (`ksrun sh -c ...`): no warning;
#   - --no-instance-check: no warning;
#   - ksd looks for the copies itself (with a BPF task iterator that finds the processes
#     running the file, then checks each by /proc/PID/exe; ksrun would read all of /proc)
#     and names them in the launch's answer when the caller's pid is the one it sees; when
#     it is not (ksrun in another pid namespace) it names none and ksrun looks itself, and
#     still warns. (The kernel test TaskCgroupsTest.FindsTheProcessesRunningAnExecutable
#     checks that ksd's two ways, iterator and /proc, find the same.)
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

# ksd's own look, by a raw launch request (what ksrun sends): its pid as ksd sees it, then
# one ksd cannot see (another pid namespace's).
raw_launch() {
  lab_exec_client "${LAB_AS_NOBODY[@]}" /usr/bin/python3 -c '
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
pid = os.getpid() + int(sys.argv[3])
s.send(json.dumps({"op": "launch", "profile": "default", "argv": ["single-app"],
                   "executable": sys.argv[2], "pid": pid}).encode())
print(json.dumps(json.loads(s.recv(1 << 20)).get("unprotected_copies")))' "$KS_SOCK" "$APP" "$1"
}
assert_eq "$(raw_launch 0)" "[$COPY]" "ksd names the unprotected copy in its answer"
assert_eq "$(raw_launch 1)" null "ksd does not look for a caller whose pid it does not see"
# ksrun in a pid namespace of its own (its pid there is not the one ksd sees; /proc is still
# the host's): ksd names nothing, ksrun looks itself.
rc=0
err=$(ksrun_stderr lab_exec_client unshare --pid --fork "${LAB_AS_NOBODY[@]}" "$KS_KSRUN" \
  --socket "$KS_SOCK" "$APP" 0) || rc=$?
assert_eq "$rc" 0 "ksrun in another pid namespace runs the command"
[[ $err == *"$APP $WARNING (pid $COPY)"* ]] ||
  fail "ksrun in another pid namespace does not warn about $COPY: $err"
pass "ksrun in another pid namespace looks itself and warns (pid $COPY)"

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

# What was tested is ksd's iterator, not its fallback: ksd says which one it took at the
# first launch after the iterator's load ended (launches before that read /proc).
grep -q "single-instance check uses the task iterator" "$LAB_DIR/ksd.log" ||
  fail "ksd did not look with the task iterator: $(grep "single-instance" "$LAB_DIR/ksd.log")"
pass "ksd looked with its task iterator"
