#!/usr/bin/env bash
# The distributions' kernels, by hand (not in CI yet): boots each Debian kernel package
# under qemu (../shared/tools/run-in-kernel.sh: TCG, the host's file system read-only with
# a tmpfs overlay) and runs there `ksctl doctor`, the unit tests and the kernel tests of
# this checkout's build. Prints one line per kernel and exits non-zero if any failed.
#
#   sudo scripts/kernel-matrix.sh [KERNEL...]     # default: 6.1 6.12 (Debian 12's kernels)
#
# KERNEL is what run-in-kernel.sh takes: an alias (6.1, 6.12: the newest such package in the
# apt sources) or an ABI (6.1.0-57-amd64). KS_RUN_IN_KERNEL names the tool if it is not
# next to this checkout; KS_BUILD_DIR the build (default build/). Each kernel takes a few
# minutes (CPU work is 15-20x slower under TCG); the .deb is downloaded once.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${KS_BUILD_DIR:-$root/build}
tool=${KS_RUN_IN_KERNEL:-$root/../shared/tools/run-in-kernel.sh}
[[ -x $tool || -r $tool ]] || { echo "kernel-matrix: no run-in-kernel.sh at $tool (KS_RUN_IN_KERNEL)" >&2; exit 2; }
[[ -x $build/ksctl && -x $build/tests/ks_kernel_tests ]] ||
  { echo "kernel-matrix: build first (cmake --build $build)" >&2; exit 2; }
(($#)) || set -- 6.1 6.12

failed=0
summary=()
for kernel in "$@"; do
  log=$(mktemp "/tmp/kernel-matrix-$kernel.XXXXXX")
  rc=0
  bash "$tool" -s 2 -t 1500 -C "$root" "$kernel" -- sh -c '
    echo "== $(uname -r)"
    "$1/ksctl" doctor || true
    "$1/tests/ks_unit_tests" --gtest_brief=1 || exit 1
    "$1/tests/ks_kernel_tests" --gtest_brief=1 || exit 1' sh "$build" >"$log" 2>&1 || rc=$?
  release=$(sed -n 's/^== //p' "$log" | head -1)
  tests=$(grep -c '^\[  PASSED  \]' "$log" || true)
  if ((rc == 0 && tests == 2)); then
    summary+=("PASS ${release:-$kernel}: doctor run, unit and kernel tests passed (log: $log)")
  else
    summary+=("FAIL ${release:-$kernel} (exit $rc): see $log")
    failed=1
    tail -30 "$log" >&2
  fi
done
printf '%s\n' "${summary[@]}"
exit "$failed"
