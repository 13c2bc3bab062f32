#!/usr/bin/env bash
# The distributions' kernels: boots each Debian kernel package under qemu
# (scripts/run-in-kernel.sh: TCG, the host's file system read-only with a tmpfs overlay)
# and runs there, with this checkout's build, `ksctl doctor`, the unit tests, the kernel
# tests and (--lab) leak-lab scenarios. Prints one line per kernel and exits non-zero if
# any failed.
#
#   sudo scripts/kernel-matrix.sh [--lab none|ci|core|all] [KERNEL...]
#
#   --lab core   the lab's core scenarios: tunnel up, down, VPN client crash and
#                re-creation (lab_tunnel_down: protected traffic flows through the tunnel
#                before, between and after the outages), ksd SIGKILLed then tunnel gone and
#                re-created (lab_ksd_killed), DNS (lab_dns), and the resolvers' unix sockets
#                (resolver_guard stands in for cgroup/connect_unix before 6.7)
#   --lab ci     what CI runs on 6.1 (.ci/run): the core set
#   --lab all    every lab scenario (tests/lab; about 25 minutes per kernel under TCG)
#   --lab none   doctor, unit and kernel tests only (the default)
#   --lab 'lab_(dns|escapes)'   the scenarios a ctest regex names (one that starts with lab_)
#
# KERNEL is what run-in-kernel.sh takes: an alias (6.1, 6.12: the newest such package in the
# apt sources) or an ABI (6.1.0-57-amd64); default: 6.1 6.12 (Debian 12's kernel and the
# newest its archive offers, from bookworm-backports). KS_BUILD_DIR names the build
# (default build/), KS_KERNEL_TIMEOUT the seconds one kernel may take (default 1500, 3600
# with --lab all). The .deb is downloaded once (/var/tmp/run-in-kernel).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${KS_BUILD_DIR:-$root/build}
tool=$root/scripts/run-in-kernel.sh
lab=none
if [[ ${1:-} == --lab ]]; then
  lab=${2:?--lab wants none, ci, core, all or a regex of lab_ names}
  shift 2
fi
case $lab in
  none) lab_regex='' ;;
  ci | core) lab_regex='^lab_(tunnel_down|ksd_killed|dns|local_resolver)$' ;;
  all) lab_regex='^lab_' ;;
  lab_*|'^lab_'*) lab_regex=$lab ;;
  *) echo "kernel-matrix: --lab wants none, ci, core, all or a regex of lab_ names, not $lab" >&2; exit 2 ;;
esac
timeout=${KS_KERNEL_TIMEOUT:-$([[ $lab == all ]] && echo 3600 || echo 1500)}
[[ -x $build/ksctl && -x $build/tests/ks_kernel_tests ]] ||
  { echo "kernel-matrix: build first (cmake --build $build)" >&2; exit 2; }
(($#)) || set -- 6.1 6.12

failed=0
summary=()
for kernel in "$@"; do
  log=$(mktemp "/tmp/kernel-matrix-$kernel.XXXXXX")
  rc=0
  start=$SECONDS
  # In the guest: everything the host's CI runs minus what needs the host (lint, systemd
  # containers). ctest writes its Testing/ into the guest's overlay, not into the build.
  bash "$tool" -s 2 -t "$timeout" -C "$build" "$kernel" -- sh -c '
    echo "== $(uname -r)"
    ./ksctl doctor || true
    ./tests/ks_unit_tests --gtest_brief=1 || exit 1
    ./tests/ks_kernel_tests --gtest_brief=1 || exit 1
    if [ -n "$1" ]; then ctest --output-on-failure -R "$1" || exit 1; fi' sh "$lab_regex" \
    >"$log" 2>&1 || rc=$?
  release=$(sed -n 's/^== //p' "$log" | head -1)
  gtests=$(grep -c '^\[  PASSED  \]' "$log" || true)
  lab_line=$(grep -E '^[0-9]+% tests passed' "$log" | tail -1 || true)
  took=$((SECONDS - start))
  if ((rc == 0 && gtests == 2)); then
    summary+=("PASS ${release:-$kernel} in ${took}s: doctor, unit and kernel tests${lab_line:+, lab ($lab): $lab_line} (log: $log)")
  else
    summary+=("FAIL ${release:-$kernel} (exit $rc) after ${took}s: see $log")
    failed=1
    tail -60 "$log" >&2
  fi
done
printf '%s\n' "${summary[@]}"
exit "$failed"
