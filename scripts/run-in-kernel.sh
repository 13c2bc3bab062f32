#!/bin/bash
# shellcheck disable=SC2054  # qemu's -device/-object arguments are comma-separated on purpose
# Copied from the workplace's ../shared/tools/run-in-kernel.sh (it is ours to keep; CI runs
# this copy, scripts/kernel-ci.sh). Changes: shellcheck fixes only.
#
# run-in-kernel.sh - run a host command, as root, inside a Debian kernel booted
# under qemu with TCG (no KVM needed).  The guest's root file system is the
# host's "/" (read-only, via virtiofs or 9p) with a tmpfs overlay on top, so
# every host binary runs unchanged and guest writes are thrown away.
#
#   run-in-kernel.sh [options] KERNEL -- COMMAND [ARGS...]
#
# KERNEL: a Debian kernel ABI as `uname -r` prints it (6.1.0-57-amd64,
# 6.12.118+deb12-amd64, 6.1.0-57-cloud-amd64) or an alias X.Y[-cloud|-rt]
# (6.1, 6.12) = newest such package in the apt sources.  The .deb is fetched
# with `apt-get download` and unpacked under $QR_HOME/kernels/<abi>; nothing is
# installed into /boot.  The exit status is COMMAND's; 124 = timed out;
# 125 = the guest died without reporting one (its console log is printed).
# COMMAND's stdout/stderr arrive on this script's stdout/stderr; stdin is
# /dev/null (unless -i).
#
# In the guest: /proc /sys /dev /dev/pts /dev/shm, tmpfs /run, cgroup2 on
# /sys/fs/cgroup, bpffs on /sys/fs/bpf, debugfs, tracefs, securityfs; lo is
# up; /lib/modules/<abi> holds the guest kernel's modules (modprobe and module
# auto-loading work: veth, nf_tables, tun, ...), /dev/net/tun & co. exist,
# /boot/config-<abi> is the guest kernel's config; cwd = caller's $PWD;
# PATH = the caller's PATH; QR_GUEST=1 and QR_KERNEL=<abi> are set.
# Writes outside -w directories land in guest RAM and vanish at power-off;
# host files changed while the guest runs may look stale in it (virtiofs
# cache=always).  Everything runs under TCG: expect ~15-20x slower CPU work
# and ~20x slower process start-up than on the host; boot costs ~3.5 s.
#
# Options:
#   -m MEM      guest memory (default 2G)
#   -s N        vCPUs (default 2)
#   -t SECS     kill the guest after SECS seconds -> exit 124 (default 900)
#   -w DIR      make host DIR writable in the guest at the same path
#               (repeatable; the guest writes straight into it, as root)
#   -e VAR=VAL  extra environment variable for COMMAND (repeatable)
#   -C DIR      working directory in the guest (default: $PWD)
#   -f FS       root file system transport: virtiofs (default, faster) or 9p
#   -i          interactive: guest console on this terminal (Ctrl-A x kills)
#   -v          copy the guest kernel console to stderr
#   -k          keep the run directory $QR_HOME/out/run.* (console.log, rc)
#   -P          only download and prepare KERNEL, print its directory
#   -h          this help
set -euo pipefail

QR_HOME=${QR_HOME:-/var/tmp/run-in-kernel}
MEM=2G SMP=2 TIMEOUT=900 INTERACTIVE=0 VERBOSE=0 KEEP=0 PREPARE_ONLY=0 FS=virtiofs
CWD=$PWD
RW_DIRS=() ENVS=()
MSIZE=512000   # 9p message size

die() { echo "run-in-kernel: $*" >&2; exit 125; }
log() { if [ "$VERBOSE" = 1 ]; then echo "run-in-kernel: $*" >&2; fi; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

while getopts "m:s:t:w:e:C:f:ivkPh" o; do
  case $o in
    m) MEM=$OPTARG ;; s) SMP=$OPTARG ;; t) TIMEOUT=$OPTARG ;;
    w) d=$(realpath -e "$OPTARG") && [ -d "$d" ] || die "-w: no such directory: $OPTARG"
       [[ $d != *[[:space:]\'\"\\]* ]] || die "-w: no blanks or quotes please: $d"
       RW_DIRS+=("$d") ;;
    e) [[ $OPTARG == [A-Za-z_]*=* ]] || die "-e wants VAR=VALUE"; ENVS+=("$OPTARG") ;;
    C) CWD=$OPTARG ;; f) FS=$OPTARG ;; i) INTERACTIVE=1 ;; v) VERBOSE=1 ;; k) KEEP=1 ;;
    P) PREPARE_ONLY=1 ;; h) usage 0 ;; *) usage 125 >&2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage 125 >&2
KARG=$1; shift
[ "${1:-}" = -- ] && shift
[ $# -ge 1 ] || [ "$PREPARE_ONLY" = 1 ] || die "no command (usage: $0 KERNEL -- COMMAND [ARGS...])"
case $FS in virtiofs|9p) ;; *) die "-f must be virtiofs or 9p" ;; esac
[ "$(id -u)" = 0 ] || die "must run as root (it exports / to the guest and uses apt)"
[[ $QR_HOME != *[[:space:]]* ]] || die "QR_HOME must not contain blanks (it goes on the kernel command line)"

# ------------------------------------------------------------- host tools
VIRTIOFSD=
for v in /usr/lib/qemu/virtiofsd /usr/libexec/virtiofsd; do [ -x "$v" ] && { VIRTIOFSD=$v; break; }; done
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
command -v depmod >/dev/null || need+=(kmod)
command -v python3 >/dev/null || need+=(python3-minimal)
if [ ${#need[@]} -gt 0 ]; then
  echo "run-in-kernel: apt-get install ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2 \
    || die "apt-get install ${need[*]} failed"
  for v in /usr/lib/qemu/virtiofsd /usr/libexec/virtiofsd; do [ -x "$v" ] && { VIRTIOFSD=$v; break; }; done
fi
[ "$FS" = 9p ] || [ -n "$VIRTIOFSD" ] || die "no virtiofsd found; use -f 9p"
mkdir -p "$QR_HOME/kernels" "$QR_HOME/debs" "$QR_HOME/out"

# --------------------------------------------------------- resolve KERNEL
resolve_alias() {  # 6.1 / 6.12 / 6.1-cloud -> newest matching ABI in apt
  local ver=${1%%-*} fl=amd64
  [[ $1 == *-* ]] && fl="${1#*-}-amd64"
  apt-cache pkgnames linux-image- 2>/dev/null \
    | grep -E "^linux-image-${ver//./\\.}[.][0-9.]*(-[0-9]+|\\+deb[0-9]+)-${fl}(-unsigned)?\$" \
    | sed -E 's/^linux-image-//; s/-unsigned$//' | sort -uV | tail -1
}
if [ -e "$QR_HOME/kernels/$KARG/.ready" ]; then
  ABI=$KARG
elif [[ $KARG =~ ^[0-9]+\.[0-9]+(-(cloud|rt))?$ ]]; then
  acache=$QR_HOME/kernels/.alias-$KARG   # valid until the next apt-get update
  if [ -s "$acache" ] && [ "$acache" -nt /var/lib/apt/lists ]; then ABI=$(cat "$acache")
  else ABI=$(resolve_alias "$KARG" || true); [ -z "$ABI" ] || echo "$ABI" >"$acache"; fi
  [ -n "$ABI" ] || die "no linux-image package matches '$KARG' (apt-cache search --names-only '^linux-image-')"
else
  ABI=$KARG
fi
KDIR=$QR_HOME/kernels/$ABI

# ------------------------------------------------------- guest-side scripts
INIT_SCRIPT='#!/bin/busybox sh
# stage 1 (initramfs): load virtio/fs modules, mount the host root read-only
# with a tmpfs overlay on top, switch_root into it.
B=/bin/busybox
$B mount -t proc proc /proc; $B mount -t sysfs sysfs /sys; $B mount -t devtmpfs devtmpfs /dev
t() { read -r up x </proc/uptime; echo "qr-time $up $*"; }
fail() { echo "qr-init: $*"; echo "qr-exit-status 125"; $B sleep 1; $B poweroff -f; }
t init
arg() { $B sed -n "s/.* $1=\([^ ]*\).*/\1/p" /proc/cmdline; }
FS=$(arg qr.fs) MSIZE=$(arg qr.msize)
for m in $($B cat /modules/order.common /modules/order.$FS); do
  $B insmod /modules/$m 2>/dev/null || echo "qr-init: insmod $m failed"
done
t modules
$B mkdir -p /lower /rw /newroot
if [ "$FS" = 9p ]; then
  $B mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=$MSIZE qrroot /lower
else
  $B mount -t virtiofs -o ro qrroot /lower
fi || fail "mounting the host root over $FS failed"
$B mount -t tmpfs -o mode=0755 qrtmp /rw
$B mkdir -p /rw/upper /rw/work
$B mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
  || fail "overlay mount failed"
$B mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run
$B mkdir -p /newroot/run/qr
$B cp /bin/busybox /stage2 /newroot/run/qr/
for d in dev proc sys; do $B mount --move /$d /newroot/$d; done
t switch_root
exec $B switch_root /newroot /run/qr/busybox sh /run/qr/stage2
'
STAGE2_SCRIPT='# stage 2 (PID 1 on the overlay root): mount the usual API file systems,
# run the command, report its exit status over a virtio-serial port, power off.
B=/run/qr/busybox
t() { read -r up x </proc/uptime; echo "qr-time $up $*"; }
t stage2
arg() { $B sed -n "s/.* $1=\([^ ]*\).*/\1/p" /proc/cmdline; }
RUN=$(arg qr.run) FS=$(arg qr.fs) MSIZE=$(arg qr.msize)
. "$RUN/config"
i=0
for d in $QR_RW; do
  if [ "$FS" = 9p ]; then $B mount -t 9p -o trans=virtio,version=9p2000.L,msize=$MSIZE qrrw$i "$d"
  else $B mount -t virtiofs qrrw$i "$d"; fi || echo "qr: mounting $d failed"
  i=$((i+1))
done
# the guest kernel modules, before anything can trigger request_module()
$B mkdir -p "/lib/modules/$QR_KERNEL" && $B mount --bind "$QR_KDIR/lib/modules/$QR_KERNEL" "/lib/modules/$QR_KERNEL"
# static nodes that load their module on first open (/dev/net/tun, /dev/fuse,
# /dev/loop-control, ...), as systemd does with `kmod static-nodes`
while read -r mod dev nr; do
  case $mod in \#*|"") continue ;; esac
  [ -e "/dev/$dev" ] && continue
  maj=${nr#?}; maj=${maj%%:*}; min=${nr#*:}
  case $dev in */*) $B mkdir -p "/dev/${dev%/*}" ;; esac
  $B mknod -m 0600 "/dev/$dev" "${nr%%[0-9]*}" "$maj" "$min"
done <"/lib/modules/$QR_KERNEL/modules.devname"
[ -e /dev/net/tun ] && $B chmod 0666 /dev/net/tun
[ -e /dev/fuse ] && $B chmod 0666 /dev/fuse
$B mkdir -p /boot   # /boot/config-<abi> etc. for bpftool, libbpf (CONFIG_* externs)
for f in config System.map vmlinuz; do $B ln -sf "$QR_KDIR/boot/$f-$QR_KERNEL" "/boot/$f-$QR_KERNEL"; done
m() { $B mkdir -p "$3" 2>/dev/null; $B mount -t "$1" "$2" "$3" ${4:+-o "$4"} || echo "qr: mount $1 on $3 failed"; }
m devpts devpts /dev/pts gid=5,mode=620,ptmxmode=666
m tmpfs tmpfs /dev/shm mode=1777,nosuid,nodev
m cgroup2 cgroup2 /sys/fs/cgroup nsdelegate
m bpf bpf /sys/fs/bpf mode=700
m debugfs debugfs /sys/kernel/debug
m tracefs tracefs /sys/kernel/tracing
m securityfs securityfs /sys/kernel/security
for l in fd:/proc/self/fd stdin:/proc/self/fd/0 stdout:/proc/self/fd/1 stderr:/proc/self/fd/2; do
  $B ln -sf "${l#*:}" "/dev/${l%%:*}"; done
$B mkdir -p /run/lock /run/netns /run/user /run/mount
$B hostname qr-guest
$B ip link set lo up
# virtio-serial ports by name: out, err, ctl (and hvc0 in interactive mode)
OUT= ERR= CTL= n=0
while [ $n -lt 250 ]; do
  for p in /sys/class/virtio-ports/*; do
    [ -c "/dev/${p##*/}" ] || continue
    case $($B cat $p/name 2>/dev/null) in
      out) OUT=/dev/${p##*/} ;; err) ERR=/dev/${p##*/} ;; ctl) CTL=/dev/${p##*/} ;; esac
  done
  if [ "$QR_INTERACTIVE" = 1 ]; then [ -n "$CTL" ] && [ -c /dev/hvc0 ] && break
  else [ -n "$CTL" ] && [ -n "$OUT" ] && [ -n "$ERR" ] && break; fi
  OUT= ERR= CTL=; $B usleep 20000; n=$((n+1))
done
[ -n "$CTL" ] || echo "qr: virtio-serial ports missing"
t command
if [ "$QR_INTERACTIVE" = 1 ]; then
  $B setsid -c /bin/sh -c ". \"$RUN/cmd\"" </dev/hvc0 >/dev/hvc0 2>&1
else
  /bin/sh -c ". \"$RUN/cmd\"" </dev/null >${OUT:-/dev/console} 2>${ERR:-/dev/console}
fi
rc=$?
t exit
echo "qr-exit-status $rc"
[ -n "$CTL" ] && echo "$rc" >$CTL
$B sync
$B poweroff -f
'

# ------------------------------------------- download, unpack, initramfs
prepare_kernel() {
  [ -e "$KDIR/.ready" ] && return 0
  exec 9>"$QR_HOME/.prepare.lock"; flock 9
  [ -e "$KDIR/.ready" ] && { exec 9>&-; return 0; }
  local pkg deb tmp
  for pkg in "linux-image-$ABI-unsigned" "linux-image-$ABI" ""; do
    [ -n "$pkg" ] && [[ $(apt-cache policy "$pkg" 2>/dev/null) == *"Candidate: "[0-9]* ]] && break
  done
  [ -n "$pkg" ] || die "no apt package linux-image-$ABI(-unsigned); apt-get update? apt-cache search --names-only '^linux-image-'"
  echo "run-in-kernel: preparing $ABI from $pkg" >&2
  (cd "$QR_HOME/debs" && apt-get download "$pkg" >&2) || die "apt-get download $pkg failed"
  deb=$(cd "$QR_HOME/debs" && ls -t "${pkg}"_*.deb | head -1)
  tmp=$KDIR.tmp.$$; rm -rf "$tmp"; mkdir -p "$tmp"
  dpkg-deb -x "$QR_HOME/debs/$deb" "$tmp"
  [ -f "$tmp/boot/vmlinuz-$ABI" ] || die "$deb has no boot/vmlinuz-$ABI"
  depmod -b "$tmp" "$ABI"
  # An uncompressed vmlinux is booted through its PVH entry point, which
  # skips the in-guest decompression (about 3 s under TCG).
  if grep -q '^CONFIG_PVH=y' "$tmp/boot/config-$ABI"; then
    python3 - "$tmp/boot/vmlinuz-$ABI" "$tmp/vmlinux" <<'EOF' || rm -f "$tmp/vmlinux"
import sys, lzma, zlib, subprocess
data = open(sys.argv[1], 'rb').read()
def tool(*cmd):  # trailing garbage makes the tool fail after it wrote the data
    return lambda b: subprocess.run(cmd, input=b, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL).stdout
for magic, dec in ((b'\xfd7zXZ\x00', lambda b: lzma.LZMADecompressor().decompress(b)),
                   (b'\x28\xb5\x2f\xfd', tool('zstd', '-dcq')),
                   (b'\x02\x21\x4c\x18', tool('lz4', '-dcq')),
                   (b'\x1f\x8b\x08', lambda b: zlib.decompressobj(31).decompress(b))):
    pos = 0
    while (i := data.find(magic, pos)) >= 0:
        pos = i + 1
        try:
            out = dec(data[i:])
        except Exception:
            continue
        if out[:4] == b'\x7fELF':
            open(sys.argv[2], 'wb').write(out)
            sys.exit(0)
sys.exit("no xz/zstd/lz4/gzip-compressed ELF in " + sys.argv[1])
EOF
  fi
  touch "$tmp/.ready"
  rm -rf "$KDIR"; mv "$tmp" "$KDIR"
  rm -f "$QR_HOME/debs/$deb"
  exec 9>&-
}

build_initrd() {  # static busybox + modules (in load order) + the two scripts
  [ -s "$INITRD" ] && return 0
  exec 9>"$QR_HOME/.prepare.lock"; flock 9
  local ird=$KDIR/initramfs.$$ m
  rm -rf "$ird"; mkdir -p "$ird/bin" "$ird/modules" "$ird/proc" "$ird/sys" "$ird/dev"
  cp /bin/busybox "$ird/bin/busybox"
  printf '%s' "$INIT_SCRIPT" >"$ird/init"; chmod 755 "$ird/init"
  printf '%s' "$STAGE2_SCRIPT" >"$ird/stage2"
  local set
  for set in "common:virtio_pci virtio_console overlay" "virtiofs:fuse virtiofs" "9p:9pnet_virtio 9p"; do
    for m in ${set#*:}; do
      { modprobe -d "$KDIR" -S "$ABI" --show-depends "$m" 2>/dev/null || true; } | awk '$1 == "insmod" {print $2}'
    done | awk '!seen[$0]++' | while read -r m; do
      [ -e "$ird/modules/${m##*/}" ] && continue
      cp "$m" "$ird/modules/"; basename "$m"
    done >"$ird/modules/order.${set%%:*}"
  done
  (cd "$ird" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -1 >"$INITRD.$$"
  mv "$INITRD.$$" "$INITRD"; rm -rf "$ird"
  exec 9>&-
}

prepare_kernel
INITRD=$KDIR/initrd-qr-$(printf '%s' "$INIT_SCRIPT$STAGE2_SCRIPT" | md5sum | cut -c1-8).gz
build_initrd
[ "$PREPARE_ONLY" = 1 ] && { echo "$KDIR"; exit 0; }
if [ "$FS" = 9p ] && ! grep -q '^CONFIG_9P_FS=' "$KDIR/boot/config-$ABI"; then
  die "$ABI has no 9p file system (the cloud flavour lacks it); use -f virtiofs"
fi

# ----------------------------------------------------------- run directory
RUN=$(mktemp -d "$QR_HOME/out/run.XXXXXX")
QPID='' PIDS=()
cleanup() {
  [ -n "$QPID" ] && kill "$QPID" 2>/dev/null && wait "$QPID" 2>/dev/null
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  [ "$KEEP" = 1 ] || rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP

q() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
{
  echo "QR_KERNEL=$(q "$ABI")"
  echo "QR_KDIR=$(q "$KDIR")"
  echo "QR_INTERACTIVE=$INTERACTIVE"
  echo "QR_RW='${RW_DIRS[*]}'"
} >"$RUN/config"
{
  echo "export HOME=/root USER=root LOGNAME=root SHELL=/bin/sh LANG=C.UTF-8"
  echo "export PATH=$(q "$PATH")"
  echo "export TERM=$(q "$([ "$INTERACTIVE" = 1 ] && echo "${TERM:-linux}" || echo dumb)")"
  echo "export QR_GUEST=1 QR_KERNEL=$(q "$ABI")"
  for e in "${ENVS[@]}"; do echo "export ${e%%=*}=$(q "${e#*=}")"; done
  echo "cd $(q "$CWD") 2>/dev/null || cd /"
  printf 'exec'; for a in "$@"; do printf ' %s' "$(q "$a")"; done; echo
} >"$RUN/cmd"

# -------------------------------------------------------------- qemu argv
if [ -e "$KDIR/vmlinux" ]; then KIMG=$KDIR/vmlinux; else KIMG=$KDIR/boot/vmlinuz-$ABI; fi
A=(qemu-system-x86_64 -accel tcg -cpu max -m "$MEM" -smp "$SMP"
   -nodefaults -no-user-config -display none -no-reboot -monitor none
   -kernel "$KIMG" -initrd "$INITRD"
   -append "console=ttyS0 panic=-1 quiet cryptomgr.notests qr.fs=$FS qr.run=$RUN qr.msize=$MSIZE")
VFS_SOCKS=()
share() {  # share TAG DIR ro|rw
  if [ "$FS" = 9p ]; then
    local ro=; [ "$3" = ro ] && ro=,readonly=on
    A+=(-fsdev "local,id=$1,path=$2,security_model=passthrough,multidevs=remap$ro"
        -device "virtio-9p-pci,fsdev=$1,mount_tag=$1")
  else
    local cache=always sock=$RUN/$1.sock
    [ "$3" = rw ] && cache=auto
    if [ "$VIRTIOFSD" = /usr/libexec/virtiofsd ]; then   # rust virtiofsd (Debian 13+)
      "$VIRTIOFSD" --socket-path="$sock" --shared-dir="$2" --cache="$cache" --sandbox=chroot \
        --log-level=error </dev/null >>"$RUN/virtiofsd.log" 2>&1 &
    else  # C virtiofsd from qemu <= 7.2; never sandbox=namespace (makes a netns)
      "$VIRTIOFSD" --socket-path="$sock" -o source="$2" -o cache="$cache" -o sandbox=chroot \
        -o log_level=err </dev/null >>"$RUN/virtiofsd.log" 2>&1 &
    fi
    PIDS+=($!); VFS_SOCKS+=("$sock")
    A+=(-chardev "socket,id=$1,path=$sock" -device "vhost-user-fs-pci,chardev=$1,tag=$1")
  fi
}
if [ "$FS" = virtiofs ]; then
  A+=(-machine pc,memory-backend=mem -object "memory-backend-memfd,id=mem,size=$MEM,share=on")
else
  A+=(-machine pc)
fi
# guest output goes through FIFOs drained by `cat`, so qemu never reopens
# this script's stdout/stderr or makes them non-blocking
fifo() { mkfifo "$RUN/$2.in" "$RUN/$2.out"; A+=(-chardev "pipe,id=$1,path=$RUN/$2"); }
fifo con console; A+=(-serial chardev:con)
A+=(-device virtio-serial-pci)
fifo ctl ctl; A+=(-device virtserialport,chardev=ctl,name=ctl)
if [ "$INTERACTIVE" = 1 ]; then
  A+=(-chardev stdio,id=io,mux=on,signal=off -device virtconsole,chardev=io)
else
  fifo o stdout; A+=(-device virtserialport,chardev=o,name=out)
  fifo e stderr; A+=(-device virtserialport,chardev=e,name=err)
fi
share qrroot / ro
i=0; for d in "${RW_DIRS[@]}"; do share "qrrw$i" "$d" rw; i=$((i+1)); done
for s in "${VFS_SOCKS[@]}"; do   # wait for the virtiofsd sockets
  n=0; until [ -S "$s" ]; do
    n=$((n+1)); [ $n -lt 200 ] || die "virtiofsd did not start: $(cat "$RUN/virtiofsd.log")"; sleep 0.02
  done
done
log "${A[*]}"

# ------------------------------------------------------------------ run
T0=$(date +%s.%N)
if [ "$VERBOSE" = 1 ]; then tee "$RUN/console.log" <"$RUN/console.out" >&2 &
else cat "$RUN/console.out" >"$RUN/console.log" & fi
READERS=($!)
cat "$RUN/ctl.out" >"$RUN/rc" & READERS+=($!)
if [ "$INTERACTIVE" = 1 ]; then
  set +e; timeout --foreground -k 5 "$TIMEOUT" "${A[@]}"; QRC=$?; set -e
else
  # tee -p keeps draining (into /dev/null) when our stdout goes away (| head)
  tee -p /dev/null <"$RUN/stdout.out" & READERS+=($!)
  tee -p /dev/null <"$RUN/stderr.out" >&2 & READERS+=($!)
  PIDS+=("${READERS[@]}")
  timeout -k 5 "$TIMEOUT" "${A[@]}" </dev/null &
  QPID=$!
  set +e; wait "$QPID"; QRC=$?; set -e
  QPID=
fi
PIDS+=("${READERS[@]}")
# the readers see EOF when qemu exits; one still blocked in open() because
# qemu died before opening its FIFO is killed after a grace period
for n in $(seq 40); do
  alive=0; for p in "${READERS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break; sleep 0.05
done
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
PIDS=()
log "qemu exited with $QRC after $(echo "$(date +%s.%N) - $T0" | bc) s"

if [ -s "$RUN/console.log" ]; then  # surface kernel trouble on stderr
  grep -aE 'WARNING:|BUG:|Oops|Kernel panic|Call Trace|qr-init:|qr:|general protection' \
    "$RUN/console.log" | sed 's/^/[guest console] /' >&2 || true
fi
rc=$(tr -dc 0-9 <"$RUN/rc" 2>/dev/null || true)
[ -n "$rc" ] || rc=$(sed -n 's/^qr-exit-status \([0-9]*\).*/\1/p' "$RUN/console.log" 2>/dev/null | tail -1)
[ -n "$rc" ] && exit "$rc"
if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
  echo "run-in-kernel: timed out after $TIMEOUT s" >&2; exit 124
fi
echo "run-in-kernel: the guest died without an exit status (qemu status $QRC); console:" >&2
tail -n 40 "$RUN/console.log" >&2 2>/dev/null || true
exit 125
