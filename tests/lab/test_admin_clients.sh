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
