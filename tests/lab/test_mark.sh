#!/usr/bin/env bash
# The socket mark as the per-packet classification (KS_MARK_BASE in bpf/killswitch_abi.h):
# a protected process that keeps CAP_NET_ADMIN (a root service, adopted here with
# `ksctl protect --pid`) rewrites its UDP socket's mark with SO_MARK. Whatever it writes,
# nothing leaves through eth0: a mark that is not ours sends the egress program to the
# socket's storage (still the protected profile, so only the tunnel), a mark of ours naming
# no profile is refused. Positive control: the same process unprotected, with the mark 0,
# leaks. And the mark sock_create gave is there (tag, profile, the app's counter slot),
# works through the tunnel, and the app's packets are counted by that slot.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

lab_up
ks_up
ks_wait_tunnel_state up

# marked NAME MARK PROTECT: a root process waits for a go file, then sends 5 datagrams to
# the target from one UDP socket whose mark it first sets to MARK (-1: left as created);
# PROTECT=1 adopts it into the protected tree first. Prints "<mark as created> <result>..."
# (each result "sent" or the errno name) into NAME.log; captures while it sends.
marked() {
  local name=$1 mark=$2 protect=$3
  lab_spawn_client "$name" sh -c 'while [ ! -e "$1" ]; do sleep 0.05; done; exec python3 -c "$2" "$3" "$4" "$5"' \
    sh "$LAB_DIR/go.$name" '
import errno, socket, sys, time
SO_MARK = 36
mark, dst, port = int(sys.argv[1], 0), sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
created = s.getsockopt(socket.SOL_SOCKET, SO_MARK)
if mark >= 0:
    s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
out = []
for _ in range(5):
    try:
        s.sendto(b"x", (dst, port))
        out.append("sent")
    except OSError as e:
        out.append(errno.errorcode[e.errno])
print(hex(created), " ".join(out), flush=True)
time.sleep(60)  # stays listed by ksctl list (lab_down ends it)' "$mark" "$LAB_NET_IP4" "$LAB_ECHO_PORT"
  local pid=$LAB_LAST_PID
  MARKED_PID=$pid
  if ((protect)); then ks_ctl protect --pid "$pid" >/dev/null; fi
  capture_start "$name"
  touch "$LAB_DIR/go.$name"
  _lab_wait_until 10 grep -q '^0x' "$LAB_DIR/$name.log" || fail "$name: no result: $(cat "$LAB_DIR/$name.log")"
  capture_stop
}
result() { grep '^0x' "$LAB_DIR/$1.log"; }

# Positive control: unprotected, with the mark 0, the sends leave through eth0.
marked control 0 0
assert_eq "$(result control)" "0x0 sent sent sent sent sent" "control: the unprotected sends went out"
assert_ge "$(leak_count)" 5 "positive control: the detector sees the unprotected sends"
lab_stop "$MARKED_PID" KILL 5

default_id=$(ks_status_field /profiles/default/id)
marked asis -1 1
read -r created sends <<<"$(result asis)"
assert_eq "$(printf '0x%x' $((created & 0xffff003f)))" "$(printf '0x%x' $((0x4b530000 | default_id)))" \
  "protected: the socket carries our tag and the default profile's id"
slot=$(((created & 0xffc0) >> 6))
assert_ge "$slot" 1 "... and its app's counter slot"
assert_eq "$sends" "sent sent sent sent sent" "... and sends through the tunnel"
assert_eq "$(leak_count)" 0 "... nothing on eth0"
# Its packets are counted by slot (ks_app_counters), and ksctl list adds them to the app.
assert_ge "$(ks_app_counter "$MARKED_PID" allowed_packets)" 5 \
  "ksctl list counts the app's packets (counted by its slot)"
lab_stop "$MARKED_PID" KILL 5

for case in "zero 0" "foreign 0x12345678" "ours-no-profile 0x4b530000" "ours-unknown-profile 0x4b53003f"; do
  read -r name mark <<<"$case"
  marked "$name" "$mark" 1
  res=$(result "$name")
  read -r created sends <<<"$res"
  (((created & 0xffff003f) == (0x4b530000 | default_id))) || fail "$name: created with mark $created"
  [[ $sends != *sent* ]] || fail "SO_MARK $mark: a send was not refused: $res"
  pass "SO_MARK $mark ($name): every send refused (${res#* })"
  assert_eq "$(leak_count)" 0 "SO_MARK $mark ($name): nothing on eth0"
  lab_stop "$MARKED_PID" KILL 5
done
