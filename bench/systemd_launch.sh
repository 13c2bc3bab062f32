#!/usr/bin/env bash
# Benchmark 4 on a real systemd: inside a booted Debian 12 container (tests/systemd's), with
# ksd.service running, the launch latency of `true`, `systemd-run --scope --quiet true` and
# `ksrun true` (on a systemd host ksrun joins a scope systemd made ahead, or waits for a
# transient scope when none is ready: ksrun's systemd path), and `env true`, the floor of
# any launcher that execs its command. Called by bench/run.sh; prints one JSON line with
# the p50s in microseconds. Usage: bench/systemd_launch.sh RUNS
set -euo pipefail
HERE=$(dirname "${BASH_SOURCE[0]}")
source "$HERE/../tests/lab/lib.sh"
source "$HERE/../tests/systemd/container.sh"
RUNS=${1:-100}
# shellcheck disable=SC2034  # read by lib.sh
KS_LAB_SCENARIO=systemd_launch

CT=ks-bench$$
CT=${CT:0:32}
lab_up
ct_rootfs
ct_on_exit() {
  ct_stop "$CT" || true # before lab_down: the container's processes live in the lab netns
  lab_down || true
}
ct_cleanup_on_exit "$CT"
CT_NETNS=/run/netns/$LAB_NS_C ct_start "$CT"
in_ct() { ct_exec "$CT" "$@"; }
ct_install_killswitch "$CT"
in_ct sh -c '
  set -e
  printf "[profiles.default]\ntunnels = [\"wg0\"]\n" > /etc/killswitch/config.toml
  systemctl daemon-reload
  systemctl start ksd.service'
# One launch at a time with 30 ms between them (untimed), the way a person starts apps: ksd
# has made the next ready scope by then. The four commands in turn, so that the machine's
# drift falls on all alike. Then ksrun and systemd-run back to back (a script starting many).
all=$(in_ct /ks/build/tests/ks-bench launch --gap-ms 30 "$RUNS" -- /usr/bin/true ::: \
  /usr/bin/env /usr/bin/true ::: /usr/bin/systemd-run --scope --quiet /usr/bin/true ::: \
  /usr/local/bin/ksrun /usr/bin/true)
b2b() { json_get "$(in_ct /ks/build/tests/ks-bench launch "$RUNS" -- "$@")" /p50_us; }
b2b_ksrun=$(b2b /usr/local/bin/ksrun /usr/bin/true)
b2b_scope=$(b2b /usr/bin/systemd-run --scope --quiet /usr/bin/true)
echo "{\"runs\":$RUNS,\"true_p50_us\":$(json_get "$all" /p50_us/0),\"env_p50_us\":$(json_get "$all" /p50_us/1),\"scope_p50_us\":$(json_get "$all" /p50_us/2),\"ksrun_p50_us\":$(json_get "$all" /p50_us/3),\"ksrun_back_to_back_p50_us\":$b2b_ksrun,\"scope_back_to_back_p50_us\":$b2b_scope}"
