#!/usr/bin/env bash
# Prints, for each test the last ctest run failed, the lines that say why: lab scenarios'
# FAIL/WARNING lines (the last of which names the first failure) and GoogleTest's failure
# lines. scripts/test.sh runs it after a failed ctest, so that the reason is in the last
# lines of the output, which is what a CI log excerpt shows.
# Usage: scripts/failure-digest.sh BUILD_DIR
set -euo pipefail
log=$1/Testing/Temporary/LastTest.log
failed=$1/Testing/Temporary/LastTestsFailed.log
[[ -s $failed && -s $log ]] || exit 0

echo "==== why the failed tests failed (scripts/failure-digest.sh) ===="
while IFS=: read -r _ name; do
  echo "-- $name:"
  # The test's output block, then at most 12 lines of it that explain the failure.
  awk -v test="$name" '
    $0 ~ "^[0-9]+/[0-9]+ Test: " test "$" { inside = 1; next }
    inside && /^<end of output>/ { exit }
    inside' "$log" |
    grep -E -A2 '^FAIL|WARNING|\[  FAILED  \]|: Failure$' | grep -v '^--$' | tail -n 12 |
    sed 's/^/   /' || true
done <"$failed"
