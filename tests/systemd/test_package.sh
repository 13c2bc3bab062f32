#!/usr/bin/env bash
# The Debian package against a real Debian 12 systemd (the test container):
#   1. scripts/package.sh builds the .deb (prefix /usr, cpack, dependencies from
#      dpkg-shlibdeps);
#   2. `dpkg -i` installs it: binaries, units, man pages, bash, zsh and fish completion,
#      the example configuration; the killswitch group exists; nothing is enabled or started;
#   3. ksd.service starts from it, ksctl status/doctor/verify work, completion completes;
#   4. `dpkg --purge` stops ksd, takes enforcement down (pins, protected tree), removes the
#      group and every file: the file system is as it was before the install.
set -euo pipefail
HERE=$(dirname "${BASH_SOURCE[0]}")
source "$HERE/../lab/lib.sh"
source "$HERE/container.sh"

CT=ks-pkg$$
CT=${CT:0:32}
# package.sh's own default, next to build/: at the same depth in the checkout, so that
# ccache finds every object of the main build (paths are hashed relative to the checkout).
DEB_DIR=$KS_SOURCE_DIR/build-deb
SNAP=$(mktemp -d /tmp/ks-pkg-test.XXXXXX)
ct_rootfs
ct_on_exit() {
  ct_stop "$CT" || true
  rm -rf "$SNAP"
}
ct_cleanup_on_exit "$CT"

# ---- 1. build ----------------------------------------------------------------------------------
t0=$(date +%s)
deb=$("$KS_SOURCE_DIR/scripts/package.sh" "$DEB_DIR" | tail -1)
[[ -f $deb ]] || fail "scripts/package.sh made no .deb"
lab_log "built $(basename "$deb") in $(($(date +%s) - t0)) s"
depends=$(dpkg-deb -f "$deb" Depends)
[[ $depends == *libbpf1* && $depends == *libsystemd0* && $depends == *libtomlplusplus3* ]] ||
  fail "Depends: $depends"
pass "the package depends on its shared libraries ($depends)"

CT_NETNS="" ct_start "$CT" --bind-ro="$(dirname "$deb")":/deb
lab_log "container $CT booted in ${CT_BOOT_MS} ms"
in_ct() { ct_exec "$CT" "$@"; }
# Everything on the root file system but what changes by itself (dpkg's own records, logs,
# caches, runtime and kernel file systems).
snapshot() {
  in_ct sh -c 'find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run \
    -o -path /tmp -o -path /var/lib/dpkg -o -path /var/log -o -path /var/cache \
    -o -path /var/lib/systemd -o -path /deb -o -path /ks -o -path /var/tmp \) -prune -o -print' |
    sort
}
# The test rootfs is minimal: dpkg skips docs and man pages there. A normal Debian 12 does
# not, and the package must install (and purge) them.
in_ct sh -c 'grep -l "^path-exclude" /etc/dpkg/dpkg.cfg.d/* | xargs -r rm -f'
snapshot >"$SNAP/before"
groups_before=$(in_ct getent group | sort)

# ---- 2. install ----------------------------------------------------------------------------
in_ct sh -c 'dpkg -i /deb/killswitch_*.deb'
for f in /usr/sbin/ksd /usr/bin/ksctl /usr/bin/ksrun /usr/lib/systemd/system/ksd.service \
  /usr/lib/systemd/system/killswitch-early.service /usr/lib/systemd/system/killswitch.slice \
  /usr/lib/systemd/user/killswitch-notify.service \
  /usr/share/man/man8/ksd.8 /usr/share/man/man8/ksctl.8 /usr/share/man/man1/ksrun.1 \
  /usr/share/man/man5/killswitch.conf.5 /usr/share/bash-completion/completions/ksctl \
  /usr/share/zsh/vendor-completions/_ksctl /usr/share/fish/vendor_completions.d/ksctl.fish \
  /etc/killswitch/config.toml /usr/share/doc/killswitch/architecture.md; do
  in_ct test -e "$f" || fail "not installed: $f"
done
pass "binaries, units, man pages, completion, configuration and docs are installed"
assert_ok "the killswitch group exists" in_ct getent group killswitch
assert_eq "$(in_ct systemctl is-enabled ksd.service killswitch-early.service | sort -u)" disabled \
  "nothing is enabled"
assert_fails "nothing is running" in_ct systemctl is-active --quiet ksd.service
assert_eq "$(in_ct systemctl show -P ExecStart ksd.service | grep -o '/usr/sbin/ksd' | head -1)" /usr/sbin/ksd \
  "ksd.service runs the packaged /usr/sbin/ksd"

# ---- 3. use ---------------------------------------------------------------------------------
in_ct systemctl start ksd.service
assert_eq "$(json_get "$(in_ct ksctl status --json)" /programs/attached)" true \
  "ksd.service from the package: enforcement attached"
assert_ok "ksctl doctor passes" in_ct ksctl doctor
out=$(in_ct ksctl verify) || fail "ksctl verify from the package: $out"
[[ $out == *"ok   no tunnel"* ]] || fail "ksctl verify: $out"
pass "ksctl verify passes (no tunnel in the container: the tunnel path is skipped)"
# shellcheck disable=SC2016
completions=$(in_ct bash -c 'source /usr/share/bash-completion/completions/ksctl
  COMP_WORDS=(ksctl ev); COMP_CWORD=1; _ksctl; echo "${COMPREPLY[@]}"
  COMP_WORDS=(ksctl systemd un); COMP_CWORD=2; _ksctl; echo "${COMPREPLY[@]}"')
assert_eq "$completions" "events
unprotect" "bash completion completes ksctl's commands"

# ---- 4. purge ------------------------------------------------------------------------------
in_ct dpkg --purge killswitch
assert_fails "ksd is stopped" in_ct systemctl is-active --quiet ksd.service
assert_fails "the pins are gone" in_ct test -e /sys/fs/bpf/killswitch
assert_fails "the protected tree is gone" in_ct test -e /sys/fs/cgroup/killswitch.slice/killswitch-default.slice
assert_eq "$(in_ct getent group | sort)" "$groups_before" "the killswitch group is gone"
snapshot >"$SNAP/after"
if ! diff "$SNAP/before" "$SNAP/after" >"$SNAP/diff"; then
  cat "$SNAP/diff" >&2
  fail "the file system differs after the purge"
fi
pass "after dpkg --purge the file system is as it was before the install"
