#!/usr/bin/env bash
# ksctl doctor on this machine, and ksd's refusal to start without what it needs:
#   1. as root: every verdict matches what the machine really has (kernel, BPF, cgroup2
#      unified or hybrid, bpffs, BTF, privileges), exit 0;
#   2. as nobody: the privileged checks say they are incomplete (warn), exit 0;
#   3. firewall: in a network namespace whose nftables output chain drops by default, or
#      whose iptables OUTPUT policy is DROP, doctor warns and names it; without them
#      (the control) it does not;
#   4. ksd run as root without CAP_BPF refuses to start, says why, and creates nothing;
#   5. the setup a user can get wrong, each for its real cause: no configuration, a bad one,
#      one that names a tunnel that does not exist, ksd not running (a fix that fits the
#      host), a runtime directory other users cannot enter, the pin dir named by --pin-dir;
#      and a setup that works: a running ksd in the lab.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

NS=ksdoc$$
PIN=/sys/fs/bpf/ksdoc$$
cleanup() {
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$PIN" "/tmp/ksdoc$$" 2>/dev/null || true
}
trap cleanup EXIT
doctor_json() { "$KS_KSCTL" doctor --json; }
verdict() { json_get "$1" "/checks/$2/verdict"; }
detail() { json_get "$1" "/checks/$2/detail"; }
index_of() { # JSON CHECK: position of a check in the list
  python3 -c 'import json, sys; print([c["check"] for c in json.loads(sys.argv[1])["checks"]].index(sys.argv[2]))' "$1" "$2"
}
expect() { # JSON CHECK VERDICT [DETAIL-SUBSTRING]
  local i
  i=$(index_of "$1" "$2")
  assert_eq "$(verdict "$1" "$i")" "$3" "doctor: $2 is $3"
  [[ -z ${4:-} || $(detail "$1" "$i") == *"$4"* ]] || fail "doctor: $2 detail '$(detail "$1" "$i")' lacks '$4'"
}

# ---- 1. as root --------------------------------------------------------------------------
j=$(doctor_json)
expect "$j" kernel ok "$(uname -r)"
# Every guarantee holds on every supported kernel; the one that differs names its hook.
for g in "tunnel only" "fails fast" dns multicast "survives ksd" "other netns"; do
  expect "$j" "guarantee: $g" ok
done
if ks_kernel_has_unix_hooks; then
  expect "$j" "guarantee: local resolvers" ok "[cgroup/connect_unix]"
else
  expect "$j" "guarantee: local resolvers" ok "resolver_guard"
fi
expect "$j" bpf ok
if [[ $(stat -f -c %T /sys/fs/cgroup) == cgroup2fs ]]; then
  expect "$j" cgroup2 ok "unified hierarchy"
else
  expect "$j" cgroup2 ok "hybrid hierarchy"
fi
[[ $(stat -f -c %T /sys/fs/bpf) == bpf_fs ]] && expect "$j" bpffs ok || expect "$j" bpffs warn
[[ -r /sys/kernel/btf/vmlinux ]] && expect "$j" btf ok || expect "$j" btf FAIL
expect "$j" privileges ok
assert_ok "doctor exits 0 on this machine" "$KS_KSCTL" doctor

# ---- 2. as nobody -------------------------------------------------------------------------
j=$("${LAB_AS_NOBODY[@]}" "$KS_KSCTL" doctor --json)
expect "$j" privileges warn "uid 65534"
expect "$j" bpf warn "without privileges"
assert_ok "doctor as nobody exits 0 (warnings only)" "${LAB_AS_NOBODY[@]}" "$KS_KSCTL" doctor

# ---- 3. firewall ---------------------------------------------------------------------------
ip netns add "$NS"
in_ns() { ip netns exec "$NS" "$@"; }
expect "$(in_ns "$KS_KSCTL" doctor --json)" firewall ok "no output chain"
in_ns nft add table inet kstest
in_ns nft add chain inet kstest out '{ type filter hook output priority 0; policy drop; }'
expect "$(in_ns "$KS_KSCTL" doctor --json)" firewall warn "nftables chain inet kstest out drops output by default"
in_ns nft delete table inet kstest
in_ns iptables -P OUTPUT DROP
expect "$(in_ns "$KS_KSCTL" doctor --json)" firewall warn "iptables filter OUTPUT policy is DROP"
in_ns iptables -P OUTPUT ACCEPT
expect "$(in_ns "$KS_KSCTL" doctor --json)" firewall ok

# ---- 4. ksd refuses without CAP_BPF --------------------------------------------------------------
mkdir -p "/tmp/ksdoc$$"
printf '[profiles.default]\ntunnels = ["wg0"]\n' >"/tmp/ksdoc$$/config.toml"
set +e
out=$(setpriv --bounding-set=-bpf --inh-caps=-all "$KS_KSD" --config "/tmp/ksdoc$$/config.toml" \
  --socket "/tmp/ksdoc$$/ksd.sock" --pin-dir "$PIN" --slice "ksdoc$$.slice" 2>&1)
rc=$?
set -e
assert_eq "$rc" 1 "ksd without CAP_BPF exits 1"
[[ $out == *"privileges: root, but without CAP_BPF"*"refusing to start"* ]] || fail "ksd said: $out"
pass "... naming the missing capability and the fix"
assert_fails "... and pinned nothing" test -e "$PIN"
assert_fails "... and made no cgroup" test -e "$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)/ksdoc$$.slice"

# ---- 5. the setup -----------------------------------------------------------------------------
D=/tmp/ksdoc$$
doc() { "$KS_KSCTL" --socket "$D/run/ksd.sock" --pin-dir "$PIN" doctor --json "$@"; }
j=$(doc --config "$D/none.toml")
expect "$j" config warn "no configuration file at $D/none.toml: not set up"
assert_eq "$(json_get "$j" /set_up)" false "no configuration: doctor says it is not set up"
expect "$j" daemon warn "not running"
if [[ -d /run/systemd/system ]]; then
  [[ $(json_get "$j" "/checks/$(index_of "$j" daemon)/fix") == *"systemctl enable --now"* ]] ||
    fail "no systemctl fix on a systemd host: $j"
  pass "on a systemd host, the fix is systemctl"
else
  [[ $(json_get "$j" "/checks/$(index_of "$j" daemon)/fix") == *"/etc/init.d/killswitch"* ]] ||
    fail "the fix for a host without systemd does not fit it: $j"
  pass "without systemd, the fix names the init script, not systemctl"
fi
expect "$j" pins warn "no Killswitch programs pinned in $PIN"
printf '[profiles.default]\ntunels = ["wg0"]\n' >"$D/bad.toml"
set +e
j=$(doc --config "$D/bad.toml")
rc=$?
set -e
assert_eq "$rc" 1 "a configuration ksd would refuse makes doctor fail"
expect "$j" config FAIL "$D/bad.toml:2: profiles.default.tunels: unknown key"
printf '[profiles.default]\ntunnels = ["kstest-none0"]\ndns = ["10.99.0.1"]\n' >"$D/notun.toml"
j=$(doc --config "$D/notun.toml")
expect "$j" config ok "1 profile(s): default"
expect "$j" "config warning" warn "tunnel kstest-none0 does not exist now"
install -d -m 700 "$D/run"
j=$("${LAB_AS_NOBODY[@]}" "$KS_KSCTL" --socket "$D/run/ksd.sock" doctor --json --config "$D/notun.toml" || true)
expect "$j" "runtime directory" FAIL "$D/run has mode 0700"

# A working setup: the lab's ksd, its config and socket. (lab_up installs the lab's own
# cleanup trap: this scenario's is run now.)
cleanup
trap - EXIT
lab_up
ks_up
ks_wait_tunnel_state up
j=$(lab_exec_client "$KS_KSCTL" --socket "$KS_SOCK" --pin-dir "$KS_PIN_DIR" doctor --json --config "$KS_CONF")
expect "$j" config ok
expect "$j" daemon ok "answers at $KS_SOCK; its programs are in force"
expect "$j" pins ok "pinned in $KS_PIN_DIR"
expect "$j" "runtime directory" ok
