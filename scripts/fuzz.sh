#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang with ASan and UBSan) and runs each for a
# bounded time from the seed corpus in fuzz/corpus/. Any crash, leak or sanitizer report
# fails the run; the input that caused it is kept in the work directory and named.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      # default 15: 120 s for the eight targets
#
# KS_FUZZ_BUILD_DIR names the build (default build-fuzz/). New inputs the fuzzers find go to
# a temporary work directory, not into the repository's seeds.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${KS_FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${1:-15}
cmake -S "$root/fuzz" -B "$build" -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
work=$(mktemp -d /tmp/ks-fuzz.XXXXXX)
failed=0
total=0
for target in admin_request config proc netlink json_text metrics desktop_entry setup_files; do
  mkdir -p "$work/$target"
  log=$work/$target.log
  rc=0
  (cd "$work" && "$build/fuzz_$target" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=1024 \
    -artifact_prefix="$work/$target-" "$work/$target" "$root/fuzz/corpus/$target") >"$log" 2>&1 ||
    rc=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  found=$(find "$work/$target" -type f | wc -l)
  if ((rc != 0)); then
    failed=1
    echo "FAIL fuzz_$target (exit $rc): $(grep -m1 -E 'ERROR|runtime error|SUMMARY' "$log" || tail -1 "$log")"
    ls "$work/$target-"* 2>/dev/null | sed 's/^/     input: /' || true
  else
    echo "ok   fuzz_$target: ${runs:-?} executions in ${seconds} s, ${cov:-cov: ?} edges, $found new inputs"
    total=$((total + ${runs:-0}))
  fi
done
echo "fuzz: $total executions in all; work directory $work"
((failed == 0)) && rm -rf "$work"
exit "$failed"
