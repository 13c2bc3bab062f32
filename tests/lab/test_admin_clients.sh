#!/usr/bin/env bash
# The admin socket's clients end cleanly (issue 14). A client that follows the events and
# then stops reading its replies is closed by ksd once a reply cannot be delivered (after
# ipc's 5 s send timeout). Before the admin server had one close path, that client's fd
# number stayed among the event followers, and the next client to get the number
# received someone else's event stream (reproduced with the old ksd: B0 below got it).
#
# Clients B0..B4 connect right after, without asking for anything: one of them gets the
# closed client's fd number. Then C follows the events (positive control: an event is
# pushed, and C gets it), and a protected app makes a refused attempt. No B may receive it.
#
# Then lists whose clients stop reading: more of them than ksd has list threads (each
# waits for its client once 256 KiB are made ahead), with 5,000 apps so that a list is
# more than the socket buffers hold. status is still answered, ksd stops within its
# usual time while the threads wait, and after a restart a list is whole.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

lab_up
ks_up "$(printf '[profiles.default]\ntunnels = ["wg0"]\n')"
ks_wait_tunnel_state up

python3 - "$KS_SOCK" "$LAB_WAIT_SCALE" >"$LAB_DIR/clients.out" 2>&1 <<'PY' &
import json, socket, sys, time
path, scale = sys.argv[1], int(sys.argv[2])  # scale: LAB_WAIT_SCALE (slower under emulation)
def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path)
    return s
a = connect()
a.send(json.dumps({"op": "events", "follow": True}).encode()); a.recv(1 << 20)
# Never read again: replies queue up until ksd cannot deliver one and closes A.
a.settimeout(20 * scale)
for _ in range(5000):
    try:
        a.send(json.dumps({"op": "status"}).encode())
    except OSError:
        break
replies = 0
a.setblocking(False)
deadline = time.time() + 20 * scale
while time.time() < deadline:
    try:
        m = a.recv(1 << 20)
        if not m:
            print("A CLOSED after", replies, "replies", flush=True)
            break
        replies += 1
    except BlockingIOError:
        time.sleep(0.05)
bs = [connect() for _ in range(5)]
time.sleep(0.3)
c = connect()
c.send(json.dumps({"op": "events", "follow": True}).encode()); c.recv(1 << 20)
print("READY", flush=True)
time.sleep(3 * scale)
for name, s in [("C", c)] + [("B%d" % i, b) for i, b in enumerate(bs)]:
    s.setblocking(False)
    try:
        print(name, "GOT", s.recv(1 << 20).decode()[:120].replace("\n", " "), flush=True)
    except BlockingIOError:
        print(name, "NOTHING", flush=True)
PY
clients=$!
_lab_wait_until 40 grep -q READY "$LAB_DIR/clients.out" || fail "the clients never got ready: $(cat "$LAB_DIR/clients.out")"
# The refused attempt: a multicast join outside the tunnel (EPERM and an event on every
# kernel; a connect to nscd's socket makes none on kernels before 6.7 where no nscd runs,
# since resolver_guard judges the listening socket, and there is none).
ks_run_client python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try: s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton("239.1.2.3") + socket.inet_aton("0.0.0.0"))
except OSError as e: print("refused", e.errno)' >/dev/null || true
wait "$clients" || true
out=$(cat "$LAB_DIR/clients.out")
printf '%s\n' "$out" | sed 's/^/   /'
[[ $out == *"A CLOSED after"* ]] || fail "ksd did not close the client that stopped reading: $out"
pass "ksd closed the client whose replies could not be delivered"
[[ $out == *'C GOT {"event"'* ]] || fail "positive control: the follower C got no event: $out"
pass "positive control: a follower gets the pushed event"
if grep -q '^B[0-9] GOT' <<<"$out"; then
  fail "a client that asked for nothing received an event (another client's stream): $(grep '^B[0-9] GOT' <<<"$out")"
fi
pass "no new client inherits the closed client's event stream"
st=$(ks_ctl status --json)
assert_eq "$(json_get "$st" /daemon)" running "ksd still serves"

# Lists nobody reads. The apps as after a restart: cgroups in the profile slice, adopted.
KS_BENCH=$KS_BUILD_DIR/tests/ks-bench
ks_stop
"$KS_BENCH" apps "$KS_CGROUP_ROOT/${KS_SLICE%.slice}-default.slice" 5000 >/dev/null
ks_start
python3 - "$KS_SOCK" >"$LAB_DIR/stalled.out" 2>&1 <<'PY' &
import json, socket, sys, time
held = []
for _ in range(6):  # ksd makes 4 lists at a time (ListMaker::kThreads)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sys.argv[1])
    s.send(json.dumps({"op": "list"}).encode())
    held.append(s)
print("ASKED", flush=True)
time.sleep(600)  # never reads; ends with the lab
PY
stalled=$!
_lab_wait_until 20 grep -q ASKED "$LAB_DIR/stalled.out" || fail "the listers never asked: $(cat "$LAB_DIR/stalled.out")"
# Until the threads have made what they may ahead and wait.
list_threads() { ps -L -o comm= -p "$KS_DAEMON_PID" | grep -c '^ksd-list$' || true; }
four_list_threads() { (($(list_threads) >= 4)); }
_lab_wait_until 20 four_list_threads || fail "ksd has $(list_threads) list threads, not 4"
sleep 1
threads=$(list_threads)
((threads == 4)) || fail "ksd runs $threads list threads for 6 lists; at most 4"
pass "6 lists nobody reads: ksd makes 4 at a time (each waits for its client), no more"
t0=${EPOCHREALTIME/./}
st=$(timeout 5 "$KS_KSCTL" --socket "$KS_SOCK" status --json) || fail "status was not answered while lists wait"
assert_eq "$(json_get "$st" /daemon)" running "status while 6 lists wait for their clients"
pass "status answered in $(((${EPOCHREALTIME/./} - t0) / 1000)) ms while the lists wait"
t0=${EPOCHREALTIME/./}
ks_stop # fails unless ksd exits within 5 s of SIGTERM
pass "ksd stopped in $(((${EPOCHREALTIME/./} - t0) / 1000)) ms with its list threads waiting"
kill "$stalled" 2>/dev/null || true
wait "$stalled" 2>/dev/null || true
ks_start
listed=$(ks_ctl list --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["apps"]))')
((listed >= 5000)) || fail "the list after the restart has $listed apps, not 5,000"
pass "after the restart a list is whole: $listed apps"
