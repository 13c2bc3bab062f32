#!/usr/bin/env bash
# ksd learns that an app has ended from inotify on its cgroup.events. When more apps end at
# once than the inotify queue holds, the kernel drops the changes and queues one overflow
# event instead: ksd must then read every app at its next sweep, so that no emptied app
# stays listed (and its cgroup, classification and counter slot stay taken) for a minute.
#
# The queue is made one event long for ksd alone: fs.inotify.max_queued_events is read
# when an inotify instance is created, so it is 1 only while ksd starts and restored at
# once (and by the exit hook, whatever happens).
# Asserted: twenty protected apps, all watched, killed at the same moment; ksd logs the
# overflow (the control: the situation under test did happen) and every app is gone from
# `ksctl list` and from the cgroup tree within a few seconds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

SYSCTL=/proc/sys/fs/inotify/max_queued_events
OLD_QUEUE=$(cat "$SYSCTL")
lab_on_exit() {
  echo "$OLD_QUEUE" >"$SYSCTL"
  # Never leave ksd stopped (below), whatever failed.
  [[ -z ${KS_DAEMON_PID:-} ]] || kill -CONT "$KS_DAEMON_PID" 2>/dev/null || true
}

lab_up
echo 1 >"$SYSCTL"
ks_up
echo "$OLD_QUEUE" >"$SYSCTL"
assert_eq "$(cat "$SYSCTL")" "$OLD_QUEUE" "fs.inotify.max_queued_events is back to $OLD_QUEUE"

APPS=20 # many exits at once: an overflow even when a busy machine spreads them out
pids=()
for ((i = 0; i < APPS; i++)); do
  ks_spawn_protected "sleeper$i" sleep 600
  pids+=("$LAB_LAST_PID")
done
listed() { (($(ks_ctl list --json | python3 -c 'import json, sys
print(sum(1 for a in json.load(sys.stdin)["apps"] if "/ksrun-" in a["cgroup"]))') == APPS)); }
_lab_wait_until 5 listed || fail "the $APPS apps are not listed: $(ks_ctl list --json | head -c 600)"
pass "$APPS protected apps are listed"
# ksd starts watching an app's cgroup.events at the first sweep that finds it populated
# (every second): after two sweeps all of them are watched.
sleep 2.2

cgroups=()
for pid in "${pids[@]}"; do cgroups+=("$(lab_cgroup_of "$pid")"); done
# ksd is stopped while the apps die, so that it cannot drain the one-event queue between
# two exits (on a busy machine it sometimes did, and no overflow happened): every exit is
# queued while ksd sleeps, the second one overflows the queue. ksd continues once all the
# apps' cgroups say they are empty.
kill -STOP "$KS_DAEMON_PID"
kill -KILL "${pids[@]}"
t_killed=${EPOCHREALTIME/./}
all_empty() {
  local cg
  for cg in "${cgroups[@]}"; do
    ! grep -q 'populated 1' "$(_ks_cgroup2_mount)$cg/cgroup.events" 2>/dev/null || return 1
  done
}
_lab_wait_until 5 all_empty || fail "the killed apps' cgroups did not empty"
kill -CONT "$KS_DAEMON_PID"

overflowed() { grep -q "inotify queue overflowed" "$LAB_DIR/ksd.log"; }
_lab_wait_until 5 overflowed ||
  fail "ksd did not log an inotify overflow (the test did not provoke one): $(tail -5 "$LAB_DIR/ksd.log")"
pass "the inotify queue overflowed, and ksd says so"
all_gone() {
  local cg
  for cg in "${cgroups[@]}"; do [[ ! -d $(_ks_cgroup2_mount)$cg ]] || return 1; done
  ! ks_ctl list --json | grep -q '"/[^"]*/ksrun-'
}
left() {
  local cg
  for cg in "${cgroups[@]}"; do [[ ! -d $(_ks_cgroup2_mount)$cg ]] || printf '%s ' "$cg"; done
}
_lab_wait_until 5 all_gone ||
  fail "emptied apps still there after the overflow: cgroups [ $(left)]; list $(ks_ctl list --json | head -c 400)"
pass "every emptied app is retired after the overflow" \
  "($((($(date +%s%6N) - t_killed) / 1000)) ms after the kill)"
