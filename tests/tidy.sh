#!/usr/bin/env bash
# clang-tidy with the checks in .clang-tidy over the project's own C++ (core/, daemon/,
# ctl/, launcher/), from a build's compile_commands.json. Any finding fails.
#
#   tests/tidy.sh [BUILD_DIR]      # default build/
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build}
[[ -f $build/compile_commands.json ]] || { echo "tidy: no $build/compile_commands.json" >&2; exit 2; }
mapfile -t files < <(cd "$root" && ls core/src/*.cpp daemon/*.cpp ctl/*.cpp launcher/*.cpp)
start=$SECONDS
out=$(cd "$root" && run-clang-tidy -quiet -p "$build" -j "$(nproc)" "${files[@]/#/$root/}" 2>&1) || {
  grep -E "(warning|error):" <<<"$out" | sort -u
  echo "FAIL: clang-tidy: findings above (.clang-tidy names the checks)"
  exit 1
}
echo "PASS: clang-tidy: ${#files[@]} sources without findings in $((SECONDS - start)) s"
