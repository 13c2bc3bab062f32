#!/usr/bin/env bash
# Installs every Debian 12 package Killswitch needs to build, test and demo.
# Idempotent; run as root. Nothing else has to be installed by hand.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: must run as root (it calls apt-get)" >&2
  exit 1
fi
packages=(
  # build
  cmake g++ make pkg-config clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev
  libsystemd-dev libcli11-dev libtomlplusplus-dev nlohmann-json3-dev
  googletest libgtest-dev libgmock-dev clang-format shellcheck
  ccache # the .deb's second build of the same sources (scripts/package.sh) hits the cache
  libclang-rt-dev # libFuzzer and the sanitizers' runtimes for clang (scripts/fuzz.sh)
  # lab, demo and tests
  iproute2 wireguard-go wireguard-tools tcpdump util-linux procps iperf3 kmod python3
  liburing-dev # ks-probe's io_uring sends
  nftables iptables # ksctl doctor's firewall check is tested against real rules
  qbittorrent-nox curl # lab_qbittorrent: a real BitTorrent client (DHT, LSD, UPnP), its WebUI
  dbus-daemon libglib2.0-bin # lab_desktop: a session bus of its own; gio launch, a real launcher
  dpkg-dev # cpack's .deb: dpkg-shlibdeps computes the package's dependencies
  zsh fish # the completions test drives their completion systems
  # systemd test container
  systemd-container mmdebstrap
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Prometheus's promtool and server for lab_metrics, unpacked into a cache, not installed
# (the package would enable a Prometheus server on this machine).
bash "$(dirname "${BASH_SOURCE[0]}")/fetch-promtool.sh" >/dev/null
