#!/usr/bin/env bash
# Builds the Debian package: a build with prefix /usr (so the units name /usr/sbin/ksd),
# without tests, then cpack. Prints the .deb's path last.
#   scripts/package.sh [BUILD_DIR]      (default: build-deb next to the sources)
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$src/build-deb}
cmake -S "$src" -B "$out" -DCMAKE_INSTALL_PREFIX=/usr -DBUILD_TESTING=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$out" -j"$(nproc)" >/dev/null
rm -f "$out"/killswitch_*.deb
(cd "$out" && cpack -G DEB >/dev/null)
ls "$out"/killswitch_*.deb
