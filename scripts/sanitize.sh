#!/usr/bin/env bash
# The tests under AddressSanitizer and UndefinedBehaviorSanitizer: configures build-asan/
# with -DKS_SANITIZE=ON (Debug), builds and runs the unit tests; with --kernel also the
# kernel tests (root: real cgroups and BPF programs, ksd's code under the sanitizers).
# Any sanitizer report fails the test that caused it (-fno-sanitize-recover).
#
#   scripts/sanitize.sh [--kernel]
#
# KS_ASAN_BUILD_DIR names the build (default build-asan/). CI runs it without --kernel,
# next to the other tests (.ci/run).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${KS_ASAN_BUILD_DIR:-$root/build-asan}
kernel=0
[[ ${1:-} != --kernel ]] || kernel=1
targets=(ks_unit_tests)
((kernel == 0)) || targets+=(ks_kernel_tests)
cmake -S "$root" -B "$build" -DKS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >/dev/null
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
start=$SECONDS
"$build/tests/ks_unit_tests" --gtest_brief=1
echo "sanitize: unit tests passed under ASan and UBSan in $((SECONDS - start)) s"
if ((kernel)); then
  start=$SECONDS
  "$build/tests/ks_kernel_tests" --gtest_brief=1
  echo "sanitize: kernel tests passed under ASan and UBSan in $((SECONDS - start)) s"
fi
