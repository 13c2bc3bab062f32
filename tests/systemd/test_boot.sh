#!/usr/bin/env bash
# Boot ordering against a real systemd: a protected service that starts at boot, before
# ksd is ready, sends nothing outside the tunnel.
#
# The container boots with the units already installed and enabled (bind-mounted into
# /etc/systemd/system.attached, a unit directory systemd reads at boot and that the rootfs
# leaves empty) and joins the lab's client netns, whose eth0 is up before PID 1 starts; the
# tunnel does not exist yet (a VPN client comes up later at boot). Two senders start as
# early as systemd allows (DefaultDependencies=no, in sysinit.target): "protected" in
# killswitch-default.slice with no ordering against ksd.service at all, and "control" in
# system.slice. ksd.service is slowed down by 3 s, so the senders run for seconds before it
# is ready.
#   1. positive control boot, killswitch-early.service NOT installed: the protected sender
#      leaks on the physical link before ksd is ready (this test can see an ordering hole);
#   2. the real boot, killswitch-early.service installed and enabled: the protected sender
#      starts before ksd is ready, its sends fail at once (ENETUNREACH) and 0 frames leak;
#      the control sender leaks in the same capture. Then the tunnel comes up and the
#      protected sender's traffic flows through it.
set -euo pipefail
HERE=$(dirname "${BASH_SOURCE[0]}")
source "$HERE/../lab/lib.sh"
source "$HERE/container.sh"

CT=ks-boot$$
CT=${CT:0:32}
STAGE=$(mktemp -d /tmp/ks-boot-test.XXXXXX)
lab_up
lab_add_control_src
ct_rootfs
ct_on_exit() {
  ct_stop "$CT" || true # before lab_down: the container's processes live in the lab netns
  lab_down || true
  rm -rf "$STAGE"
}
ct_cleanup_on_exit "$CT"

# ---- what the container finds at boot ----------------------------------------------------------
# units/ becomes /etc/systemd/system.attached, etc/ /etc/killswitch, lib/ /usr/local/lib/kstest.
mkdir -p "$STAGE"/{units,etc,lib}
cp "$KS_BUILD_DIR"/systemd/{ksd.service,killswitch.slice} "$STAGE/units/"
printf '[profiles.default]\ntunnels = ["wg0"]\n' >"$STAGE/etc/config.toml"
mkdir -p "$STAGE/units/ksd.service.d"
printf '[Service]\nExecStartPre=/bin/sleep 3\n' >"$STAGE/units/ksd.service.d/50-slow.conf"
# sender.py DST PORT SRC LOG: UDP every 5 ms for 40 s; LOG ("key value" lines, rewritten every
# 50 ms) has the CLOCK_MONOTONIC times of the first attempt and of the first success, and a
# count per errno. (python3-minimal: no json module.)
cat >"$STAGE/lib/sender.py" <<'PY'
import errno, os, socket, sys, time
dst, port, src, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if src != "-":
    s.bind((src, 0))
mono = lambda: time.clock_gettime(time.CLOCK_MONOTONIC)
state = {"first_attempt": mono(), "first_ok": 0.0, "sent": 0}
end, last_write = mono() + 40, 0
while mono() < end:
    try:
        s.sendto(b"boot", (dst, port))
        state["sent"] += 1
        if not state["first_ok"]:
            state["first_ok"] = mono()
    except OSError as e:
        key = "error_" + errno.errorcode.get(e.errno, str(e.errno))
        state[key] = state.get(key, 0) + 1
    if mono() - last_write > 0.05:
        with open(log + ".tmp", "w") as f:
            f.write("".join("%s %s\n" % kv for kv in state.items()))
        os.rename(log + ".tmp", log)
        last_write = mono()
    time.sleep(0.005)
PY
sender_unit() { # NAME SLICE SRC
  cat <<UNIT
[Unit]
Description=boot-time sender ($1)
DefaultDependencies=no
[Service]
Slice=$2
ExecStart=/usr/bin/python3 /usr/local/lib/kstest/sender.py $LAB_NET_IP4 $LAB_ECHO_PORT $3 /run/sender-$1.log
UNIT
}
sender_unit protected killswitch-default.slice - >"$STAGE/units/protected.service"
sender_unit control system.slice "$LAB_CONTROL_IP4" >"$STAGE/units/control.service"
mkdir -p "$STAGE/units/sysinit.target.wants" "$STAGE/units/multi-user.target.wants"
ln -s ../protected.service ../control.service "$STAGE/units/sysinit.target.wants/"
ln -s ../ksd.service "$STAGE/units/multi-user.target.wants/"

boot() {
  CT_NETNS=/run/netns/$LAB_NS_C ct_start "$CT" \
    --bind-ro="$STAGE/units":/etc/systemd/system.attached \
    --bind-ro="$STAGE/etc":/etc/killswitch \
    --bind-ro="$STAGE/lib":/usr/local/lib/kstest \
    --bind-ro="$KS_BUILD_DIR/ksd":/usr/local/sbin/ksd \
    --bind-ro="$KS_BUILD_DIR/ksctl":/usr/local/bin/ksctl
  lab_log "container $CT booted in ${CT_BOOT_MS} ms"
  # A sender that failed is a broken test, not a result: show why.
  if ! in_ct systemctl is-active --quiet protected.service control.service; then
    in_ct journalctl -b --no-pager -u protected.service -u control.service | tail -20 >&2 || true
    fail "a boot-time sender is not running"
  fi
}
in_ct() { ct_exec "$CT" "$@"; }
mono_usec() { in_ct systemctl show -P "$2" "$1"; }
sender_field() {
  in_ct cat "/run/sender-$1.log" | awk -v k="$2" '$1 == k { v = $2 } END {
    if (k ~ /^first_/) printf "%.0f\n", v * 1000000; else print v + 0 }'
}
sender_log() { lab_log "sender $1: $(in_ct cat "/run/sender-$1.log" | tr '\n' ' ')"; }

tunnel_kill # no tunnel at boot

# ---- 1. positive control: no early enforcement ---------------------------------------------------
# (ksd.service Wants= killswitch-early.service; without the unit file that is a no-op.)
capture_start boot-without-early
boot
capture_stop
sender_log protected
assert_ge "$(leak_count "not src host $LAB_CONTROL_IP4")" 20 \
  "positive control: without killswitch-early.service the protected sender leaks before ksd is ready"
ct_stop "$CT"

# ---- 2. the real boot --------------------------------------------------------------------------
cp "$KS_BUILD_DIR/systemd/killswitch-early.service" "$STAGE/units/"
ln -s ../killswitch-early.service "$STAGE/units/sysinit.target.wants/"
capture_start boot
boot # returns once the boot is complete, i.e. after ksd.service is ready
sender_log protected

assert_eq "$(in_ct systemctl is-active killswitch-early.service ksd.service protected.service | sort -u)" \
  active "killswitch-early, ksd and the protected sender are active"
ksd_ready=$(mono_usec ksd.service ActiveEnterTimestampMonotonic)
early_done=$(mono_usec killswitch-early.service ActiveEnterTimestampMonotonic)
sender_started=$(sender_field protected first_attempt)
assert_gt "$ksd_ready" "$((sender_started + 1000000))" \
  "the protected sender was sending more than 1 s before ksd.service was ready"
assert_ge "$sender_started" "$early_done" "... and after killswitch-early.service had attached enforcement"
assert_eq "$(sender_field protected sent)" 0 "with no tunnel, not one of its sends succeeded"
assert_ge "$(sender_field protected error_ENETUNREACH)" 200 \
  "they failed at once (ENETUNREACH), before and after ksd was ready"
sleep 0.5
capture_stop
assert_eq "$(leak_count "not src host $LAB_CONTROL_IP4")" 0 \
  "the protected sender leaked nothing during the boot"
assert_ge "$(leak_count "src host $LAB_CONTROL_IP4")" 20 \
  "positive control in the same capture: the unprotected boot sender is seen on the physical link"

# The VPN comes up: the protected sender's traffic flows through it.
tx=$(server_tx)
tunnel_recreate >/dev/null
_lab_wait_until 5 server_replies_since "$tx" 50 ||
  fail "once the tunnel is up the protected sender's traffic does not flow through it"
pass "once the tunnel is up the protected sender's traffic flows through it"
