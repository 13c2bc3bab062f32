#!/usr/bin/env bash
# ksctl protect --pid: a running process without network sockets is adopted (its later
# sockets and children are protected); one that already holds sockets is refused with a
# clear message and left where it was, since those sockets would stay unprotected.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

lab_up
ks_up
ks_wait_tunnel_state up

# A process that waits for a go file, then runs a UDP probe as a child (a new process with
# new sockets) to the target over the main table's route (eth0).
waiter() { # NAME GO-FILE
  lab_spawn_client "$1" sh -c 'while [ ! -e "$1" ]; do sleep 0.05; done; exec "$2" udp --dst "$3" --count 20 --interval-ms 1 --expect-reply' \
    sh "$2" "$KS_PROBE" "$LAB_TARGET4"
}

# Positive control: left alone, the waiter's probe leaks.
waiter control "$LAB_DIR/go.control"
capture_start control
touch "$LAB_DIR/go.control"
_lab_wait_until 10 grep -q '"cmd"' "$LAB_DIR/control.log" || fail "control probe did not finish"
capture_stop
assert_ge "$(leak_count)" 20 "positive control: the unadopted process leaks"

# Adopted: the same process, protected before it sends; its child goes through the tunnel.
waiter adopted "$LAB_DIR/go.adopted"
pid=$LAB_LAST_PID
out=$(ks_ctl protect --pid "$pid")
pass "protect: $out"
[[ $(lab_cgroup_of "$pid") == /"$KS_SLICE"/* ]] || fail "pid $pid is not in the protected tree: $(lab_cgroup_of "$pid")"
capture_start adopted
touch "$LAB_DIR/go.adopted"
_lab_wait_until 10 grep -q '"cmd"' "$LAB_DIR/adopted.log" || fail "adopted probe did not finish"
capture_stop
assert_eq "$(leak_count)" 0 "an adopted process's new child leaks nothing"
assert_eq "$(json_get "$(tail -n 1 "$LAB_DIR/adopted.log")" /replies)" 20 "... and works through the tunnel"

# Refused: a process that already holds a UDP socket.
lab_spawn_client holder python3 -c 'import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 0)); time.sleep(60)'
holder=$LAB_LAST_PID
_lab_wait_until 5 sh -c "ls -l /proc/$holder/fd 2>/dev/null | grep -q socket" || fail "holder has no socket"
before=$(lab_cgroup_of "$holder")
set +e
err=$(ks_ctl protect --pid "$holder" 2>&1)
rc=$?
set -e
assert_eq "$rc" 1 "protecting a process that holds sockets is refused"
[[ $err == *"socket(s) opened before protection"* ]] || fail "refusal message: $err"
pass "refusal says why: $err"
assert_eq "$(lab_cgroup_of "$holder")" "$before" "the refused process is left where it was"

# Bad input changes nothing.
assert_fails "no such process" ks_ctl protect --pid 999999
assert_fails "unknown profile" ks_ctl protect --pid "$holder" --profile nosuch
assert_fails "unprivileged callers may not adopt" lab_as_nobody "$KS_KSCTL" --socket "$KS_SOCK" protect --pid "$holder"

# --json: the adoption as one JSON document.
lab_spawn_client jsonwaiter sleep 60
out=$(ks_ctl protect --pid "$LAB_LAST_PID" --json)
[[ $(json_get "$out" /cgroup) == /"$KS_SLICE"/* && $(json_get "$out" /profile) == default ]] ||
  fail "ksctl protect --json: $out"
pass "ksctl protect --json: $out"
