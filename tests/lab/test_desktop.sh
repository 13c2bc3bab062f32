#!/usr/bin/env bash
# The desktop: menu entries that start protected, and blocked attempts as notifications.
# Everything desktop-side runs as nobody (a desktop user), on a real session bus: a
# dbus-daemon --session of this scenario, with ks-notify-recorder (tests/tools/) owning
# org.freedesktop.Notifications and recording every Notify call, one JSON line each.
#   1. `ksctl desktop protect ksfake` writes the override of a fake application's entry
#      (found in a temporary $XDG_DATA_DIRS) into a temporary $XDG_DATA_HOME: its Exec lines
#      (main and action) run through ksrun, DBusActivatable=false, the marker keys;
#      `ksctl desktop list --json` lists it;
#   2. `gio open ksfake://...` (GLib, the launcher of GNOME's menus and URI handlers) starts
#      the application by its desktop file id, GLib's own lookup picking the user's override:
#      the application runs in the protected tree (its /proc/PID/cgroup), and its send with
#      the tunnel gone is blocked; `gio launch FILE` of the override too;
#   3. `ksctl notify` turns that blocked attempt into a notification: app_name Killswitch,
#      "ks-probe blocked: VPN tunnel down", the destination in the body;
#   4. a flood of blocked sends of one app gives one notification at once and, after the
#      interval, ONE update "N more blocked attempts" that replaces it (replaces_id);
#   5. ksd stopped: a notification says it is unreachable; ksd started again: "is back"
#      replaces it, and a new blocked attempt is notified again (the stream reconnected);
#   6. `ksctl desktop unprotect` removes the override: launched again, the application runs
#      outside the protected tree (the original entry is DBusActivatable: the bus starts it
#      from its D-Bus service file, which the override's DBusActivatable=false prevented);
#   7. a user's own override of the id is never replaced by protect nor removed by unprotect;
#   8. SIGTERM ends ksctl notify cleanly.
# dbus-daemon, the recorder and ksctl notify are lab processes (lab_spawn_*): the lab's EXIT
# trap stops them; the temporary XDG directories live in $LAB_DIR, which it removes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

# Refuse, never skip (in CI as anywhere): scripts/install-deps.sh installs them.
command -v dbus-daemon >/dev/null 2>&1 || fail "dbus-daemon is missing (package dbus-daemon or dbus); refusing to run"
command -v gio >/dev/null 2>&1 || fail "gio is missing (package libglib2.0-bin); refusing to run"
RECORDER=$KS_BUILD_DIR/tests/ks-notify-recorder
[[ -x $RECORDER ]] || fail "$RECORDER is not built; build the project first"

INTERVAL=3 # ksctl notify --interval

lab_up
ks_up
tunnel_kill
ks_wait_tunnel_state missing

# ---- the desktop user's world ------------------------------------------------------------------
D=$LAB_DIR/desktop
install -d -m 755 "$D" "$D/sys/applications" "$D/bin"
install -d -m 700 -o nobody -g nogroup "$D/home" "$D/data" "$D/run" "$D/config"
# The desktop's choice of handler for the fake app's URI scheme (what a browser link or
# `xdg-open ksfake://...` would start).
printf '[Default Applications]\nx-scheme-handler/ksfake=org.example.KsFake.desktop\n' >"$D/config/mimeapps.list"
chown nobody:nogroup "$D/config/mimeapps.list"
NOTES=$D/run/notes.jsonl
BUS=unix:path=$D/run/bus
cat >"$D/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$D/run/bus</listen>
  <auth>EXTERNAL</auth>
  <servicedir>$D/sys/dbus-1/services</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
EOF
# The application: records where it runs (its own /proc/PID/cgroup), then becomes a send to
# the internet, which the kill switch blocks when protected (the tunnel is gone).
cat >"$D/bin/ks-fake-app" <<EOF
#!/bin/sh
out=$D/run/launch
{ echo "\$\$"; cat /proc/self/cgroup; echo "args \$*"; } >"\$out.tmp" && mv "\$out.tmp" "\$out"
exec "$KS_PROBE" udp --dst "$LAB_TARGET4" --count 1
EOF
chmod 755 "$D/bin/ks-fake-app"
cat >"$D/sys/applications/org.example.KsFake.desktop" <<EOF
[Desktop Entry]
Type=Application
Name=Killswitch fake app
Name[de]=Killswitch-Testprogramm
Comment=records its cgroup; a "quoted" comment\\twith an escape
Exec=$D/bin/ks-fake-app %U
TryExec=$D/bin/ks-fake-app
DBusActivatable=true
Terminal=false
MimeType=x-scheme-handler/ksfake;
Actions=second;

[Desktop Action second]
Name=Second window
Exec=$D/bin/ks-fake-app action
EOF

# The application is D-Bus activatable too, as many are (DBusActivatable=true above): a
# launcher then asks the bus to start it, from this service file, and never runs Exec=.
install -d -m 755 "$D/sys/dbus-1/services"
cat >"$D/sys/dbus-1/services/org.example.KsFake.service" <<EOF
[D-BUS Service]
Name=org.example.KsFake
Exec=$D/bin/ks-fake-app --gapplication-service
EOF

# as_user CMD...: CMD as nobody in ksd's netns, with the desktop session's environment.
as_user() {
  lab_exec_client "${LAB_AS_NOBODY[@]}" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$D/home" \
    XDG_DATA_HOME="$D/data" XDG_DATA_DIRS="$D/sys" XDG_CONFIG_HOME="$D/config" \
    XDG_CONFIG_DIRS="$D/config" DBUS_SESSION_BUS_ADDRESS="$BUS" KILLSWITCH_SOCKET="$KS_SOCK" "$@"
}
spawn_as_user() {
  local name=$1
  shift
  lab_spawn_client "$name" "${LAB_AS_NOBODY[@]}" env -i PATH=/usr/local/bin:/usr/bin:/bin \
    HOME="$D/home" DBUS_SESSION_BUS_ADDRESS="$BUS" "$@"
}
# launch: start the application the way the desktop does, by desktop file id: `gio open
# ksfake://...` makes GLib look up the default handler of the URI scheme (mimeapps.list) and
# its entry by id, the user's $XDG_DATA_HOME first, then $XDG_DATA_DIRS; wait for the app's
# record.
launch() {
  rm -f "$D/run/launch"
  as_user gio open "ksfake://launch" || fail "gio open failed"
  lab_wait_file "$D/run/launch"
}
launched_cgroup() { awk -F: '$1 == "0" { print $3 }' "$D/run/launch"; }
notes() { cat "$NOTES" 2>/dev/null || true; }
note_count() { if [[ -f $NOTES ]]; then wc -l <"$NOTES"; else echo 0; fi; }
# note N FIELD: a field of the Nth recorded notification (1-based).
note() { sed -n "${1}p" "$NOTES" | "$KS_PROBE" json-get "/$2"; }
# wait_note SUMMARY_PREFIX FROM: the first notification after line FROM whose summary starts
# so; its line number on stdout.
_find_note() {
  local i n
  n=$(note_count)
  for ((i = $2 + 1; i <= n; i++)); do
    [[ $(note "$i" summary) == "$1"* ]] && { echo "$i" && return 0; }
  done
  return 1
}
_has_note() { _find_note "$@" >/dev/null; }
wait_note() {
  _lab_wait_until 10 _has_note "$1" "$2" || fail "no notification \"$1...\" after #$2: $(notes)"
  _find_note "$1" "$2"
}

spawn_as_user dbus dbus-daemon --config-file="$D/bus.conf" --nofork --nopidfile
_bus_up() { [[ -S $D/run/bus ]]; }
_lab_wait_until 10 _bus_up || fail "dbus-daemon did not come up: $(cat "$LAB_DIR/dbus.log")"
spawn_as_user recorder "$RECORDER" "$NOTES"
_serving() { grep -q serving "$LAB_DIR/recorder.log"; }
_lab_wait_until 10 _serving || fail "the recorder did not come up: $(cat "$LAB_DIR/recorder.log")"
spawn_as_user notify "$KS_KSCTL" --socket "$KS_SOCK" notify --interval "$INTERVAL" --max-backoff 1
NOTIFY_PID=$LAB_LAST_PID
_following() { grep -q "following ksd's events" "$LAB_DIR/notify.log"; }
_lab_wait_until 10 _following || fail "ksctl notify did not follow ksd: $(cat "$LAB_DIR/notify.log")"
pass "a session bus, the recording notification server and ksctl notify run as nobody"

# ---- 1. protect ----------------------------------------------------------------------------------
OVERRIDE=$D/data/applications/org.example.KsFake.desktop
out=$(as_user "$KS_KSCTL" desktop protect ksfake --profile default) || fail "desktop protect: $out"
[[ -f $OVERRIDE ]] || fail "no override written: $out"
assert_eq "$(stat -c %U "$OVERRIDE")" nobody "the override belongs to the user"
assert_eq "$(grep -c "^Exec=$KS_KSRUN --profile default -- $D/bin/ks-fake-app " "$OVERRIDE")" 2 \
  "both Exec lines (main and action) run through ksrun, field codes kept"
grep -q "^Exec=.* %U$" "$OVERRIDE" || fail "the %U field code is gone: $(cat "$OVERRIDE")"
grep -qx "DBusActivatable=false" "$OVERRIDE" || fail "DBusActivatable not false: $(cat "$OVERRIDE")"
grep -qx "X-Killswitch-Protected=true" "$OVERRIDE" || fail "no marker: $(cat "$OVERRIDE")"
grep -qx "Name\[de\]=Killswitch-Testprogramm" "$OVERRIDE" || fail "translations lost"
pass "the override: ksrun in every Exec, DBusActivatable=false, the marker, translations kept"
list=$(as_user "$KS_KSCTL" desktop list --json)
assert_eq "$(json_get "$list" /entries/0/id)" org.example.KsFake.desktop "desktop list --json: the id"
assert_eq "$(json_get "$list" /entries/0/profile)" default "desktop list --json: the profile"

# ---- 2. + 3. launched from the entry: protected, blocked, notified -------------------------------
before=$(note_count)
launch
cg=$(launched_cgroup)
[[ $cg == /$KS_SLICE/* ]] || fail "the launched app runs in $cg, not under /$KS_SLICE"
assert_eq "$(sed -n 's/^args //p' "$D/run/launch")" ksfake://launch "the override's Exec ran, with %U"
pass "gio open started the application by its id in the protected tree ($cg)"
rm -f "$D/run/launch"
as_user gio launch "$OVERRIDE" || fail "gio launch failed"
lab_wait_file "$D/run/launch"
[[ $(launched_cgroup) == /$KS_SLICE/* ]] || fail "gio launch FILE: the app runs in $(launched_cgroup)"
pass "gio launch of the override file: protected too ($(launched_cgroup))"
i=$(wait_note "ks-probe blocked: VPN tunnel down" "$before")
assert_eq "$(note "$i" app_name)" Killswitch "the notification's app_name"
[[ $(note "$i" body) == *"$LAB_TARGET4"* ]] || fail "no destination in the body: $(note "$i" body)"
pass "the blocked attempt became a notification: $(note "$i" summary) / $(note "$i" body)"

# ---- 4. the rate limit ---------------------------------------------------------------------------
before=$(note_count)
ks_run_client "$KS_PROBE" udp --dst "$LAB_TARGET4" --count 200 --interval-ms 1 >/dev/null || true
first=$(wait_note "ks-probe blocked:" "$before")
first_id=$(note "$first" id)
sleep 1
assert_eq "$(($(note_count) - before))" 1 "one notification for the flood within the interval"
more=$(wait_note "ks-probe: " "$first")
[[ $(note "$more" summary) =~ ^ks-probe:\ ([0-9]+)\ more\ blocked\ attempts?$ ]] ||
  fail "the summary update: $(note "$more" summary)"
assert_ge "${BASH_REMATCH[1]}" 1 "the update counts the suppressed attempts"
assert_eq "$(note "$more" replaces_id)" "$first_id" "the update replaces the first notification"
sleep "$INTERVAL"
assert_eq "$(($(note_count) - before))" 2 "two notifications in all for the flood"

# ---- 5. ksd goes away and comes back ---------------------------------------------------------------
before=$(note_count)
ks_stop
gone=$(wait_note "Killswitch daemon unreachable" "$before")
ks_start
back=$(wait_note "Killswitch daemon is back" "$gone")
assert_eq "$(note "$back" replaces_id)" "$(note "$gone" id)" "'is back' replaces 'unreachable'"
_lab_wait_until 10 grep -q "answers again" "$LAB_DIR/notify.log" || fail "notify did not reconnect"
sleep 0.5 # the subscription is in place once it said so; give ksd's event stream a moment
ks_run_client "$KS_PROBE" udp --dst "$LAB_TARGET4" --count 1 >/dev/null || true
wait_note "ks-probe blocked: VPN tunnel down" "$back" >/dev/null
pass "after ksd's restart, blocked attempts are notified again"

# ---- 6. unprotect ----------------------------------------------------------------------------------
out=$(as_user "$KS_KSCTL" desktop unprotect ksfake) || fail "desktop unprotect: $out"
[[ ! -e $OVERRIDE ]] || fail "the override is still there"
# The original is DBusActivatable: GLib has the bus start it from the service file (which
# the override's DBusActivatable=false avoided: it would bypass ksrun). The fake app does not
# answer org.freedesktop.Application, so gio reports an error, but the app ran.
rm -f "$D/run/launch"
# (gio waits for the name that never comes: 5 s are enough to see the app start.)
as_user timeout 5 gio open "ksfake://launch" >/dev/null 2>&1 || true
lab_wait_file "$D/run/launch"
assert_eq "$(sed -n 's/^args //p' "$D/run/launch")" --gapplication-service \
  "the original entry was started by D-Bus activation"
cg=$(launched_cgroup)
[[ $cg != /$KS_SLICE/* ]] || fail "unprotected, the app still runs in the protected tree: $cg"
pass "after unprotect, gio open starts the original entry (D-Bus activated), unprotected ($cg)"

# ---- 7. a user's own override ----------------------------------------------------------------------
as_user sh -c "mkdir -p '$D/data/applications' && sed 's/^Name=.*/Name=My own/' \
  '$D/sys/applications/org.example.KsFake.desktop' >'$OVERRIDE'"
sum=$(sha256sum "$OVERRIDE")
rc=0
as_user "$KS_KSCTL" desktop protect org.example.KsFake >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 1 "protect refuses to replace the user's own override"
rc=0
as_user "$KS_KSCTL" desktop unprotect org.example.KsFake >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 1 "unprotect refuses to remove it"
assert_eq "$(sha256sum "$OVERRIDE")" "$sum" "the user's own override is untouched"
assert_eq "$(json_get "$(as_user "$KS_KSCTL" desktop list --json)" /entries/0 none)" none \
  "desktop list does not claim it"

# ---- 8. SIGTERM --------------------------------------------------------------------------------------
lab_stop "$NOTIFY_PID" TERM 5
grep -q "signal 15, exiting" "$LAB_DIR/notify.log" || fail "ksctl notify did not exit on SIGTERM: $(cat "$LAB_DIR/notify.log")"
pass "SIGTERM ends ksctl notify"
