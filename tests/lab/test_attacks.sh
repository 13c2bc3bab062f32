#!/usr/bin/env bash
# shellcheck disable=SC2016  # single-quoted sh -c scripts get their values as "$1"...
# Attacks on a protected application while the tunnel is up (field notes, section 3), each
# with a positive control: the same probe unprotected, under the same attack, and the leak
# detector must see it. Unprotected controls send from the second client address
# (LAB_CONTROL_IP4/IP6), so one capture holds both and CTRL/PROT tell them apart.
#   1. TunnelVision: hostile more-specific routes on eth0 (0/1, 128/1, a /32 for the target,
#      ::/1, 8000::/1) while a protected UDP sender runs: no leak, its replies keep coming.
#   2. TunnelCrack LocalNet: the target's /24 becomes "local" on eth0: still the tunnel.
#   3. TunnelCrack ServerIP: protected traffic to the VPN endpoint's own address goes inside
#      the tunnel; the only frames to it on eth0 are the WireGuard flow.
#   4. IPv6 with the IPv4-only tunnel: v4-mapped (::ffff:203.0.113.10) works through the
#      tunnel; a real IPv6 destination fails at once (ENETUNREACH, < 50 ms).
#   5. Socket tricks by the protected app, as root under ksrun (no CAP_NET_RAW/NET_ADMIN) and
#      as nobody: SO_BINDTODEVICE eth0, IP_UNICAST_IF / IPV6_UNICAST_IF eth0, IP_PKTINFO /
#      IPV6_PKTINFO ifindex eth0, sendmmsg, TCP Fast Open, raw and packet sockets. Each is
#      refused or goes through the tunnel. io_uring sends and connects likewise, and fail at
#      once with the tunnel down.
#   6. `unshare -Urn` inside the protected app: nothing reaches the physical link and the
#      process stays in its protected cgroup.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/killswitch.sh"

MAX_MS=50
CTRL="src host $LAB_CONTROL_IP4 or src host $LAB_CONTROL_IP6"
PROT="not ($CTRL)"
TRICKS=plain,bindtodevice,unicast_if,pktinfo,unicast_if6,pktinfo6,sendmmsg,tfo,raw,packet

# trick OUTPUT NAME FIELD: one field of attacks.py's line for NAME (2: OK or the errno name,
# 3: replies, 4: ms).
trick() { awk -v n="$2" -v f="$3" '$1 == n { print $f; found = 1 } END { exit !found }' <<<"$1"; }
# trick_port BASE NAME: the source port attacks.py used for NAME (BASE + its index in TRICKS).
trick_port() {
  local i=0 t ts
  IFS=, read -ra ts <<<"$TRICKS"
  for t in "${ts[@]}"; do
    [[ $t == "$2" ]] && { echo $(($1 + i)); return 0; }
    i=$((i + 1))
  done
  return 1
}
sender_done() { ! _lab_alive "$1"; }

lab_up
ks_up
ks_wait_tunnel_state up
lab_add_control_src --ipv6
T_START=$(lab_now)

PY=$LAB_DIR/attacks.py
cat >"$PY" <<'EOF'
import ctypes, errno, os, select, socket, struct, sys, time
# attacks.py DST_IP PORT BASE_PORT SRC_IP IFNAME TRICK,...: one line per trick:
#   <trick> <OK|ERRNO> <replies> <ms>
dst, port, base, src, ifname = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
# IPv6 tricks: destination and source from the environment (the tunnel is IPv4-only).
dst6, src6 = os.environ.get("DST6", "::1"), os.environ.get("SRC6", "::")
tricks = sys.argv[6].split(",")
N = 5
try:
    idx = socket.if_nametoindex(ifname)
except OSError:
    idx = 0
A = (dst, port)

def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) and e.errno else type(e).__name__

def udp4(i, fam=socket.AF_INET, bindaddr=None):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((bindaddr if bindaddr is not None else src, base + i))
    return s

def replies(s, want, t=0.4):
    got, end = 0, time.monotonic() + t
    while got < want:
        left = end - time.monotonic()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            break
        try:
            s.recv(2048)
            got += 1
        except OSError:
            break
    return got

def sendn(s, f):
    for _ in range(N):
        f()

def sockaddr_in(ip, p):
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", p) + socket.inet_aton(ip) + b"\0" * 8

class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def trick(name, i):
    t0 = time.monotonic()
    s = None
    try:
        if name == "plain":
            s = udp4(i); sendn(s, lambda: s.sendto(b"plain", A))
        elif name == "bindtodevice":
            s = udp4(i); s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            sendn(s, lambda: s.sendto(b"btd", A))
        elif name == "unicast_if":
            s = udp4(i); s.setsockopt(socket.IPPROTO_IP, 50, struct.pack("!I", idx))
            sendn(s, lambda: s.sendto(b"uif", A))
        elif name == "unicast_if6":
            s = udp4(i, socket.AF_INET6, src6)
            s.setsockopt(socket.IPPROTO_IPV6, 76, struct.pack("!I", idx))  # IPV6_UNICAST_IF
            sendn(s, lambda: s.sendto(b"uif6", (dst6, port)))
        elif name == "pktinfo6":
            s = udp4(i, socket.AF_INET6, src6)
            anc = [(socket.IPPROTO_IPV6, 50, struct.pack("=16si", socket.inet_pton(socket.AF_INET6, src6), idx))]
            sendn(s, lambda: s.sendmsg([b"pktinfo6"], anc, 0, (dst6, port)))
        elif name == "pktinfo":
            s = udp4(i)
            anc = [(socket.IPPROTO_IP, 8, struct.pack("=i4s4s", idx, socket.inet_aton(src), b"\0" * 4))]
            sendn(s, lambda: s.sendmsg([b"pktinfo"], anc, 0, A))
        elif name == "sendmmsg":
            s = udp4(i)
            libc = ctypes.CDLL(None, use_errno=True)
            name_b = ctypes.create_string_buffer(sockaddr_in(dst, port), 16)
            data = ctypes.create_string_buffer(b"mmsg", 4)
            iov = iovec(ctypes.cast(data, ctypes.c_void_p), 4)
            vec = (mmsghdr * N)()
            for m in vec:
                m.hdr.name = ctypes.cast(name_b, ctypes.c_void_p); m.hdr.namelen = 16
                m.hdr.iov = ctypes.pointer(iov); m.hdr.iovlen = 1
            r = libc.sendmmsg(s.fileno(), vec, N, 0)
            if r < 0:
                e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
        elif name == "tfo":
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((src, base + i))
            s.sendto(b"tfo", socket.MSG_FASTOPEN, A)  # blocking: returns once connected
            s.settimeout(1.0)
            r = 1 if s.recv(100) else 0
            return "%s OK %d %d" % (name, r, (time.monotonic() - t0) * 1000)
        elif name == "raw":
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
            s.bind((src, 0))
            pl = b"raw"
            h = struct.pack("!HHHH", base + i, port, 8 + len(pl), 0) + pl
            sendn(s, lambda: s.sendto(h, (dst, 0)))
            return "%s OK - %d" % (name, (time.monotonic() - t0) * 1000)
        elif name == "packet":
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
            pl = b"packet"
            u = struct.pack("!HHHH", base + i, port, 8 + len(pl), 0) + pl
            sip = socket.inet_aton(src if src != "0.0.0.0" else "198.51.100.2")
            ih = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(u), 0, 0, 64, 17, 0, sip, socket.inet_aton(dst))
            ih = ih[:10] + struct.pack("!H", csum(ih)) + ih[12:]
            sendn(s, lambda: s.sendto(ih + u, (ifname, 0x0800, 0, 0, b"\xff" * 6)))
            return "%s OK - %d" % (name, (time.monotonic() - t0) * 1000)
        elif name == "mapped_udp":
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind((("::ffff:" + src) if src != "0.0.0.0" else "::", base + i))
            sendn(s, lambda: s.sendto(b"mapped", ("::ffff:" + dst, port)))
        elif name in ("mapped_tcp", "v6_tcp"):
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.settimeout(1.0)
            if name == "mapped_tcp":
                s.bind((("::ffff:" + src) if src != "0.0.0.0" else "::", base + i))
                s.connect(("::ffff:" + dst, port))
            else:
                s.bind((src if src != "0.0.0.0" else "::", base + i))
                s.connect((dst, port))
            s.sendall(b"tcp")
            r = 1 if s.recv(100) else 0
            return "%s OK %d %d" % (name, r, (time.monotonic() - t0) * 1000)
        elif name == "loopback":
            r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(("127.0.0.1", base + 100 + i))
            s = udp4(i, bindaddr="127.0.0.1")
            sendn(s, lambda: s.sendto(b"lo", ("127.0.0.1", base + 100 + i)))
            return "%s OK %d %d" % (name, replies(r, N), (time.monotonic() - t0) * 1000)
        else:
            raise SystemExit("unknown trick " + name)
        ms = (time.monotonic() - t0) * 1000
        return "%s OK %d %d" % (name, replies(s, N), ms)
    except Exception as e:
        return "%s %s 0 %d" % (name, ename(e), (time.monotonic() - t0) * 1000)
    finally:
        if s is not None:
            s.close()

for i, t in enumerate(tricks):
    print(trick(t, i), flush=True)
EOF
chmod 644 "$PY"

# ---- 1. TunnelVision --------------------------------------------------------------------------
capture_start tunnelvision
tx=$(server_tx)
ks_spawn_protected tv-sender "$KS_PROBE" udp --dst "$LAB_TARGET4" --duration $((3 * LAB_WAIT_SCALE)) --interval-ms 2 \
  --expect-reply --ready-file "$LAB_DIR/tv.ready"
TV_PID=$LAB_LAST_PID
lab_wait_file "$LAB_DIR/tv.ready"
_lab_wait_until 5 server_replies_since "$tx" 100 ||
  fail "protected traffic does not flow through the tunnel (wgs0 tx $tx -> $(server_tx))"
lab_exec_client sh -c '
  ip route add 0.0.0.0/1 via "$1" dev eth0
  ip route add 128.0.0.0/1 via "$1" dev eth0
  ip route add "$2/32" via "$1" dev eth0
  ip -6 route add ::/1 via "$3" dev eth0
  ip -6 route add 8000::/1 via "$3" dev eth0' sh "$LAB_GW_IP4" "$LAB_NET_IP4" "$LAB_GW_IP6"
tx=$(server_tx)
_lab_wait_until 5 server_replies_since "$tx" 200 ||
  fail "TunnelVision: protected replies stopped after the route injection (wgs0 tx $tx -> $(server_tx))"
pass "TunnelVision: protected replies keep coming through the tunnel after the injection"
out=$(ks_run_client "$KS_PROBE" connect-time --dst "$LAB_TARGET6")
assert_eq "$(json_get "$out" /errno)" ENETUNREACH "TunnelVision: protected IPv6 under ::/1 fails"
assert_le "$(json_get "$out" /ms)" "$MAX_MS" "  ... at once"
out=$(lab_probe_client udp --dst "$LAB_TARGET4" --src "$LAB_CONTROL_IP4" --count 20 --interval-ms 1 --expect-reply)
assert_eq "$(json_get "$out" /replies)" 20 "TunnelVision control: unprotected UDP follows the injected route"
out=$(lab_probe_client udp --dst "$LAB_TARGET6" --src "$LAB_CONTROL_IP6" --count 10 --interval-ms 1 --expect-reply)
assert_eq "$(json_get "$out" /replies)" 10 "TunnelVision control: unprotected IPv6 follows ::/1"
_lab_wait_until 10 sender_done "$TV_PID" || fail "the TunnelVision sender did not finish"
capture_stop
out=$(tail -n 1 "$LAB_DIR/tv-sender.log")
sent=$(json_get "$out" /sent)
assert_ge "$(json_get "$out" /replies)" "$((sent * 99 / 100))" "TunnelVision: the protected sender got its replies ($sent sent)"
assert_ge "$(leak_count "src host $LAB_CONTROL_IP4 and dst host $LAB_NET_IP4")" 20 "TunnelVision control: the detector sees the IPv4 leak"
assert_ge "$(leak_count "src host $LAB_CONTROL_IP6")" 10 "TunnelVision control: the detector sees the IPv6 leak"
assert_no_leak "TunnelVision: no protected frame on eth0" "$PROT"
lab_exec_client sh -c '
  ip route del 0.0.0.0/1; ip route del 128.0.0.0/1; ip route del "$1/32"
  ip -6 route del ::/1; ip -6 route del 8000::/1' sh "$LAB_NET_IP4"

# ---- 2. TunnelCrack LocalNet ------------------------------------------------------------------
lab_exec_client ip addr add 203.0.113.77/24 dev "$LAB_CLIENT_PHYS"
capture_start localnet
out=$(ks_run_client "$KS_PROBE" udp --dst "$LAB_TARGET4" --count 20 --interval-ms 1 --expect-reply)
assert_eq "$(json_get "$out" /replies)" 20 "LocalNet: protected UDP to the \"local\" target works (tunnel)"
out=$(ks_run_client "$KS_PROBE" tcp --dst "$LAB_TARGET4" --count 3)
assert_eq "$(json_get "$out" /ok)" 3 "LocalNet: protected TCP to the \"local\" target works (tunnel)"
out=$(lab_probe_client udp --dst "$LAB_TARGET4" --src "$LAB_CONTROL_IP4" --count 20 --interval-ms 1)
capture_stop
assert_ge "$(leak_count "src host $LAB_CONTROL_IP4 and dst host $LAB_NET_IP4")" 20 "LocalNet control: unprotected goes on-link in the clear"
assert_no_leak "LocalNet: no protected frame on eth0" "$PROT"
assert_ge "$(capture_count "$LAB_WG_FLOW_FILTER")" 23 "LocalNet: the protected traffic is in the WireGuard flow"
lab_exec_client ip addr del 203.0.113.77/24 dev "$LAB_CLIENT_PHYS"

# ---- 3. TunnelCrack ServerIP ------------------------------------------------------------------
SERVER_TARGET=$LAB_GW_IP4:$LAB_ECHO_PORT
capture_start serverip
tx=$(server_tx)
out=$(ks_run_client "$KS_PROBE" udp --dst "$SERVER_TARGET" --count 20 --interval-ms 1 --expect-reply)
assert_eq "$(json_get "$out" /replies)" 20 "ServerIP: protected UDP to the VPN endpoint's address works"
out=$(ks_run_client "$KS_PROBE" tcp --dst "$SERVER_TARGET" --count 3)
assert_eq "$(json_get "$out" /ok)" 3 "ServerIP: protected TCP to the VPN endpoint's address works"
assert_ge "$(($(server_tx) - tx))" 23 "ServerIP: ... and its replies came back through the tunnel"
out=$(lab_probe_client udp --dst "$SERVER_TARGET" --src "$LAB_CONTROL_IP4" --count 20 --interval-ms 1 --expect-reply)
assert_eq "$(json_get "$out" /replies)" 20 "ServerIP control: unprotected UDP to the endpoint works"
capture_stop
assert_ge "$(leak_count "src host $LAB_CONTROL_IP4 and dst host $LAB_GW_IP4")" 20 "ServerIP control: it goes in the clear"
assert_no_leak "ServerIP: no protected frame on eth0" "$PROT"
assert_eq "$(capture_count "dst host $LAB_GW_IP4 and not arp and not ($LAB_WG_FLOW_FILTER) and ($PROT)")" 0 \
  "ServerIP: the only protected-side frames to the endpoint are the WireGuard flow"

# ---- 4. IPv6 with the IPv4-only tunnel, v4-mapped ---------------------------------------------
capture_start ipv6
out=$(ks_run_client python3 "$PY" "$LAB_NET_IP4" "$LAB_ECHO_PORT" 43000 0.0.0.0 eth0 mapped_udp,mapped_tcp)
lab_log "v4-mapped protected: $(tr '\n' ';' <<<"$out")"
assert_eq "$(trick "$out" mapped_udp 2)/$(trick "$out" mapped_udp 3)" OK/5 "protected v4-mapped UDP (::ffff:$LAB_NET_IP4) works"
assert_eq "$(trick "$out" mapped_tcp 2)/$(trick "$out" mapped_tcp 3)" OK/1 "protected v4-mapped TCP works"
out=$(ks_run_client python3 "$PY" "$LAB_NET_IP6" "$LAB_ECHO_PORT" 43010 0.0.0.0 eth0 v6_tcp)
assert_eq "$(trick "$out" v6_tcp 2)" ENETUNREACH "protected TCP to $LAB_NET_IP6 fails"
assert_le "$(trick "$out" v6_tcp 4)" "$MAX_MS" "  ... at once (ms)"
out=$(lab_exec_client python3 "$PY" "$LAB_NET_IP4" "$LAB_ECHO_PORT" 43020 "$LAB_CONTROL_IP4" eth0 mapped_udp,mapped_tcp)
assert_eq "$(trick "$out" mapped_udp 2)/$(trick "$out" mapped_tcp 2)" OK/OK "v4-mapped control: unprotected works"
out=$(lab_exec_client python3 "$PY" "$LAB_NET_IP6" "$LAB_ECHO_PORT" 43030 "$LAB_CONTROL_IP6" eth0 v6_tcp)
assert_eq "$(trick "$out" v6_tcp 2)" OK "IPv6 control: unprotected TCP works"
capture_stop
assert_ge "$(leak_count "src host $LAB_CONTROL_IP4 and dst host $LAB_NET_IP4")" 6 "v4-mapped control: the detector sees it"
assert_ge "$(leak_count "src host $LAB_CONTROL_IP6 and dst host $LAB_NET_IP6")" 1 "IPv6 control: the detector sees it"
assert_no_leak "IPv6/v4-mapped: no protected frame on eth0" "$PROT"

# ---- 5. socket tricks -------------------------------------------------------------------------
capture_start tricks
export DST6=$LAB_NET_IP6 SRC6=::
ROOT_OUT=$(ks_run_client python3 "$PY" "$LAB_NET_IP4" "$LAB_ECHO_PORT" 44000 0.0.0.0 eth0 "$TRICKS")
NOBODY_OUT=$(ks_run_nobody env DST6="$DST6" python3 "$PY" "$LAB_NET_IP4" "$LAB_ECHO_PORT" 44100 0.0.0.0 eth0 "$TRICKS")
CTRL_OUT=$(SRC6=$LAB_CONTROL_IP6 lab_exec_client python3 "$PY" "$LAB_NET_IP4" "$LAB_ECHO_PORT" 44200 "$LAB_CONTROL_IP4" eth0 "$TRICKS")
capture_stop
lab_log "tricks, protected root:   $(tr '\n' ';' <<<"$ROOT_OUT")"
lab_log "tricks, protected nobody: $(tr '\n' ';' <<<"$NOBODY_OUT")"
lab_log "tricks, control:          $(tr '\n' ';' <<<"$CTRL_OUT")"
IFS=, read -ra TRICK_LIST <<<"$TRICKS"
for t in "${TRICK_LIST[@]}"; do
  assert_ge "$(leak_count "($CTRL) and src port $(trick_port 44200 "$t")")" 1 \
    "trick $t control: unprotected, it leaks ($(trick "$CTRL_OUT" "$t" 2))"
  for who in root nobody; do
    if [[ $who == root ]]; then base=44000 res=$ROOT_OUT; else base=44100 res=$NOBODY_OUT; fi
    assert_eq "$(leak_count "src port $(trick_port "$base" "$t")")" 0 \
      "trick $t as protected $who: no leak ($(trick "$res" "$t" 2), $(trick "$res" "$t" 3) replies)"
    # Either refused (an errno), or it worked and then only through the tunnel (replies came
    # back, and none of its frames is on eth0). A raw/packet send that "worked" fails here.
    if [[ $(trick "$res" "$t" 2) == OK ]]; then
      assert_ge "$(trick "$res" "$t" 3)" 1 "trick $t as protected $who: went through the tunnel (replies)"
    fi
  done
done
assert_no_leak "socket tricks: no protected frame on eth0" "$PROT"

# ---- 6. io_uring: sends and connects that never pass through send()/connect() --------------
capture_start uring
for proto in udp tcp; do
  flag=()
  [[ $proto == tcp ]] && flag=(--tcp)
  out=$(ks_run_client "$KS_PROBE" uring --dst "$LAB_TARGET4" --count 5 "${flag[@]}")
  assert_eq "$(json_get "$out" /replies)" 5 "io_uring $proto, protected: answered through the tunnel"
  out=$(lab_probe_client uring --dst "$LAB_TARGET4" --src "$LAB_CONTROL_IP4" --count 5 "${flag[@]}")
  assert_eq "$(json_get "$out" /replies)" 5 "io_uring $proto control: unprotected is answered"
done
tunnel_down
ks_wait_tunnel_state down
for proto in udp tcp; do
  flag=()
  [[ $proto == tcp ]] && flag=(--tcp)
  out=$(ks_run_client "$KS_PROBE" uring --dst "$LAB_TARGET4" --count 5 "${flag[@]}")
  # ks-probe uring stops at the first error.
  assert_eq "$(json_get "$out" /sent)/$(json_get "$out" /errors/ENETUNREACH 0)" 0/1 \
    "io_uring $proto, protected, tunnel down: refused with ENETUNREACH"
done
tunnel_up
ks_wait_tunnel_state up
capture_stop
assert_ge "$(leak_count "($CTRL) and dst port $LAB_ECHO_PORT")" 10 "io_uring control: the detector sees it"
assert_no_leak "io_uring: no protected frame on eth0" "$PROT"

# ---- 7. unshare -Urn inside the protected app -------------------------------------------------
capture_start unshare
out=$(ks_run_client unshare -Urn sh -c '
  ip link set lo up
  awk -F: "\$1 == \"0\" { print \"cgroup\", \$3 }" /proc/self/cgroup
  exec python3 "$1" "$2" "$3" 45000 0.0.0.0 lo loopback,plain,raw,packet' sh "$PY" "$LAB_NET_IP4" "$LAB_ECHO_PORT")
capture_stop
lab_log "unshare -Urn, protected: $(tr '\n' ';' <<<"$out")"
cg=$(awk '$1 == "cgroup" { print $2 }' <<<"$out")
[[ $cg == "/$KS_SLICE/"* ]] || fail "unshare -Urn: the process left its protected cgroup ($cg)"
pass "unshare -Urn: the process stays in its protected cgroup ($cg)"
assert_eq "$(trick "$out" plain 2)" ENETUNREACH "unshare -Urn: the target is unreachable from the new netns"
assert_no_leak "unshare -Urn: nothing on eth0" "$PROT"

lab_log "attacks took $(lab_ms "$T_START" "$(lab_now)") ms after lab_up/ks_up"
