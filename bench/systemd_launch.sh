#!/usr/bin/env bash
# Benchmark 4 on a real systemd: inside a booted Debian 12 container (tests/systemd's), with
# ksd.service running, the launch latency of `true`, `systemd-run --scope --quiet true` and
# `ksrun true` (on a systemd host ksd asks systemd for a transient scope per ksrun, so this
# is ksrun's systemd path). Called by bench/run.sh; prints one JSON line with the p50s in
# microseconds. Usage: bench/systemd_launch.sh RUNS
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
p50() { json_get "$(in_ct /ks/build/tests/ks-bench launch "$RUNS" -- "$@")" /p50_us; }
plain=$(p50 /usr/bin/true)
scope=$(p50 /usr/bin/systemd-run --scope --quiet /usr/bin/true)
ksrun=$(p50 /usr/local/bin/ksrun /usr/bin/true)
echo "{\"runs\":$RUNS,\"true_p50_us\":$plain,\"scope_p50_us\":$scope,\"ksrun_p50_us\":$ksrun}"
