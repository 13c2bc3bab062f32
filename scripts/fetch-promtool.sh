#!/usr/bin/env bash
# Fetches Prometheus's own tools (promtool, and the prometheus server for a scrape) from
# Debian's prometheus package without installing it: installing would enable a Prometheus
# server on the machine. The .deb is downloaded with apt-get download and unpacked into a
# cache directory; nothing is configured, started or registered with dpkg.
#
#   scripts/fetch-promtool.sh          # prints the directory holding promtool and prometheus
#
# KS_PROMTOOL_CACHE names the cache (default /var/cache/killswitch-test/prometheus). A second
# run finds the unpacked tools and downloads nothing. Exit 1 when they cannot be obtained.
set -euo pipefail
cache=${KS_PROMTOOL_CACHE:-/var/cache/killswitch-test/prometheus}
bin=$cache/root/usr/bin
if [[ -x $bin/promtool && -x $bin/prometheus ]] && "$bin/promtool" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
# apt-get download runs as _apt where it can: the directory must be writable by it.
chmod 755 "$work"
chown _apt "$work" 2>/dev/null || true
if ! (cd "$work" && apt-get download -q prometheus >"$work/apt.log" 2>&1); then
  # The package lists may be missing (a fresh container): once more after an update.
  apt-get update -qq >/dev/null 2>&1 || true
  (cd "$work" && apt-get download -q prometheus >"$work/apt.log" 2>&1) || {
    echo "fetch-promtool.sh: apt-get download prometheus failed:" >&2
    cat "$work/apt.log" >&2
    exit 1
  }
fi
deb=$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' | head -n 1)
[[ -n $deb ]] || {
  echo "fetch-promtool.sh: apt-get download left no prometheus_*.deb" >&2
  exit 1
}
dpkg-deb -x "$deb" "$work/root"
"$work/root/usr/bin/promtool" --version >/dev/null
# Replaced whole, so that a run that is cut short never leaves half a tree behind.
rm -rf "$cache/root"
mv "$work/root" "$cache/root"
echo "$bin"
