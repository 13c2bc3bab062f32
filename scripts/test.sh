#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test (unit, kernel, leak lab).
# Run as root on Debian 12:  sudo ./scripts/test.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${KS_BUILD_DIR:-$root/build}

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j"$(nproc)"
cd "$build"
status=0
ctest --output-on-failure "$@" || status=$?
if ((status != 0)); then "$root/scripts/failure-digest.sh" "$build"; fi
exit "$status"
