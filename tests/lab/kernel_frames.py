#!/usr/bin/env python3
"""Socket tricks for tests/lab/test_kernel_frames.sh (stdlib only).

Each command makes the kernel emit (or try to emit) a frame on behalf of a socket, or
injects the packet that makes it answer. Run protected with ksrun, unprotected with
nsenter, or (inject, syn, sink) in the ISP namespace.

  tw DST PORT                      TCP connect, echo, active close: prints "IP PORT" of the
                                   connection the kernel now holds in TIME_WAIT
  hold DST PORT DIR IDLE CNT       long-lived TCP connection, keepalive IDLE s / 1 s / CNT
                                   probes; DIR/ready (its local IP:PORT) once connected;
                                   DIR/data: send a line
                                   (retransmitted while there is no way out); DIR/abort:
                                   close with SO_LINGER 0 (an RST); prints a JSON summary
  listen IP PORT FILE              TCP listener that never accepts (SYN-ACKs, request
                                   sockets); FILE once listening
  inject IF DSTMAC KIND SRC SPORT DST DPORT COUNT
                                   COUNT frames out of IF (AF_PACKET, root): KIND ack (a TCP
                                   segment, no payload), udp (a datagram), echo (ICMP echo
                                   request, SPORT is its id)
  syn SRC SPORT DST DPORT          a TCP SYN through the routing of this namespace (raw IP)
  try GOFILE DST TRICK,... [DST TRICK,...]...
                                   creates GOFILE.ready and waits for GOFILE ("-": none),
                                   then one attempt per trick
                                   (see trick()); prints "DST trick=ok|ERRNO ..." per DST
  rthdr FINAL FIRST PORT [DIR]     UDP to FINAL with an IPv6 routing header (type 4, SRH)
                                   whose first segment is FIRST; with DIR: connect() once,
                                   then one datagram per DIR/goN file (N = 1, 2, ...) until
                                   DIR/stop; prints the result of each send
  lsrr FINAL FIRST PORT GOFILE     waits for GOFILE, then UDP to FINAL with an IPv4 loose
                                   source route through FIRST (IP_OPTIONS; some kernels,
                                   6.18.44 among them, demand CAP_NET_RAW)
  sink IP PORT                     UDP receiver: prints "from SRC PAYLOAD" per datagram
"""
import errno
import json
import os
import socket
import struct
import sys
import time

IP_OPTIONS = 4
IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3
IP_UNICAST_IF = 50
IPV6_UNICAST_IF = 76
IPV6_HOPOPTS = 54
IPV6_DSTOPTS = 59
UDP_SEGMENT = 103
IPPROTO_MPTCP = 262


def ename(e):
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__


def wait_file(path, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(path):
            return True
        time.sleep(0.02)
    return False


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def cmd_tw(dst, port):
    s = socket.create_connection((dst, int(port)), timeout=3)
    s.sendall(b"tw\n")
    s.recv(16)
    local = s.getsockname()
    s.shutdown(socket.SHUT_WR)  # we close first: the TIME_WAIT is ours
    while s.recv(16):
        pass
    s.close()
    print(local[0], local[1])


def cmd_hold(dst, port, d, idle, cnt):
    out = {}
    s = socket.create_connection((dst, int(port)), timeout=3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, int(idle))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, int(cnt))
    s.sendall(b"hello\n")
    s.recv(16)
    out["local"] = "%s:%d" % s.getsockname()[:2]
    with open(os.path.join(d, "ready"), "w") as f:
        f.write(out["local"] + "\n")
    if wait_file(os.path.join(d, "data"), 60):
        try:
            s.send(b"data while there is no way out\n")
            out["data"] = "sent"
        except OSError as e:
            out["data"] = ename(e)
    wait_file(os.path.join(d, "abort"), 60)
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    out["so_error"] = errno.errorcode.get(err, "0")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    print(json.dumps(out, sort_keys=True), flush=True)


def cmd_listen(ip, port, ready):
    s = socket.socket(family(ip), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, int(port)))
    s.listen(16)
    open(ready, "w").close()
    time.sleep(120)


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ipv4_packet(proto, src, dst, payload):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:] + payload


def l4(kind, src, sport, dst, dport):
    if kind in ("ack", "syn"):
        flags = 0x10 if kind == "ack" else 0x02
        seg = struct.pack("!HHIIBBHHH", sport, dport, 0x12345678, 0x9ABCDEF0 if kind == "ack" else 0,
                          5 << 4, flags, 65535, 0, 0)
        pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
        return 6, seg[:16] + struct.pack("!H", csum(pseudo + seg)) + seg[18:]
    if kind == "udp":
        data = b"late reply"
        dgram = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
        pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(dgram))
        return 17, dgram[:6] + struct.pack("!H", csum(pseudo + dgram) or 0xFFFF) + dgram[8:]
    if kind == "echo":
        msg = struct.pack("!BBHHH", 8, 0, 0, sport, 1) + b"probe"
        return 1, msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]
    raise SystemExit("unknown kind " + kind)


def cmd_inject(ifname, dmac, kind, src, sport, dst, dport, count):
    proto, payload = l4(kind, src, int(sport), dst, int(dport))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    smac = s.getsockname()[4]
    frame = bytes.fromhex(dmac.replace(":", "")) + smac + b"\x08\x00" + ipv4_packet(proto, src, dst, payload)
    for i in range(int(count)):
        if i:
            time.sleep(0.6)  # TIME_WAIT answers are rate-limited (tcp_invalid_ratelimit, 500 ms)
        s.send(frame)


def cmd_syn(src, sport, dst, dport):
    proto, seg = l4("syn", src, int(sport), dst, int(dport))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(ipv4_packet(proto, src, dst, seg), (dst, 0))


def eth0():
    return socket.if_nametoindex("eth0")


def trick(name, dst):
    fam = family(dst)
    if name in ("udp", "udp_ucif"):  # IP(V6)_UNICAST_IF: route as if on-link of eth0
        s = socket.socket(fam, socket.SOCK_DGRAM)
        if name == "udp_ucif":
            level, opt = (socket.IPPROTO_IP, IP_UNICAST_IF) if fam == socket.AF_INET else (socket.IPPROTO_IPV6, IPV6_UNICAST_IF)
            s.setsockopt(level, opt, struct.pack("!I", eth0()))
        s.sendto(b"x", (dst, 7000))
    elif name == "udp_ll":  # an IPv6 link-local destination with eth0 as its scope
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b"x", (dst, 7000, 0, eth0()))
    elif name in ("tcp", "tcp_ll"):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(0.3)
        s.connect((dst, 7000, 0, eth0()) if name == "tcp_ll" else (dst, 7000))
    elif name == "ping":  # unprivileged ICMP echo (ping_group_range)
        proto = socket.IPPROTO_ICMP if fam == socket.AF_INET else socket.IPPROTO_ICMPV6
        s = socket.socket(fam, socket.SOCK_DGRAM, proto)
        s.sendto(struct.pack("!BBHHH", 8 if fam == socket.AF_INET else 128, 0, 0, 0, 1) + b"ping", (dst, 0))
    elif name == "gso":  # UDP GSO: one send, four datagrams on the wire
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 500)
        s.sendto(b"g" * 2000, (dst, 7000))
    elif name == "pmtu_probe":  # IP_PMTUDISC_PROBE: DF set, path MTU ignored
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        s.sendto(b"p" * 1200, (dst, 7000))
    elif name == "mptcp":
        s = socket.socket(fam, socket.SOCK_STREAM, IPPROTO_MPTCP)
        s.settimeout(1)
        s.connect((dst, 7000))
        s.sendall(b"mptcp\n")
        s.recv(16)
    elif name == "lsrr":  # setsockopt only: does the kernel let us set a source route?
        opt = bytes([1, 0x83, 7, 4]) + socket.inet_aton("198.51.100.1")
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).setsockopt(socket.IPPROTO_IP, IP_OPTIONS, opt)
    elif name in ("hopopts", "dstopts"):  # IPv6 options headers (a PadN option)
        opt = IPV6_HOPOPTS if name == "hopopts" else IPV6_DSTOPTS
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).setsockopt(
            socket.IPPROTO_IPV6, opt, bytes([59, 0, 1, 4, 0, 0, 0, 0]))
    else:
        raise SystemExit("unknown trick " + name)


def cmd_try(gofile, *pairs):
    if gofile != "-":
        open(gofile + ".ready", "w").close()
        wait_file(gofile, 60)
    for dst, tricks in zip(pairs[::2], pairs[1::2]):
        out = [dst]
        for name in tricks.split(","):
            try:
                trick(name, dst)
                out.append(name + "=ok")
            except OSError as e:
                out.append(name + "=" + ename(e))
        print(" ".join(out), flush=True)


def srh(final, first):
    # Segment routing header (type 4): segments[0] is the final destination, the kernel
    # sends the packet to segments[segments_left] = FIRST.
    segs = socket.inet_pton(socket.AF_INET6, final) + socket.inet_pton(socket.AF_INET6, first)
    return bytes([17, 4, 4, 1, 1, 0, 0, 0]) + segs


def cmd_rthdr(final, first, port, d=None):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RTHDR, srh(final, first))
        if d is None:
            s.sendto(b"routed around the tunnel", (final, int(port)))
            print("sent", flush=True)
            return
        s.connect((final, int(port)))
        open(os.path.join(d, "ready"), "w").close()
    except OSError as e:
        print(ename(e), flush=True)
        return
    n = 1
    while not os.path.exists(os.path.join(d, "stop")):
        if os.path.exists(os.path.join(d, "go%d" % n)):
            try:
                s.send(b"routed around the tunnel, %d" % n)
                print("send%d sent" % n, flush=True)
            except OSError as e:
                print("send%d %s" % (n, ename(e)), flush=True)
            n += 1
        time.sleep(0.02)


def cmd_lsrr(final, first, port, gofile):
    wait_file(gofile, 30)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IP, IP_OPTIONS, bytes([1, 0x83, 7, 4]) + socket.inet_aton(first))
        s.sendto(b"routed around the tunnel", (final, int(port)))
        print("sent", flush=True)
    except OSError as e:
        print(ename(e), flush=True)
    time.sleep(60)  # stays in its cgroup until the lab ends


def cmd_sink(ip, port):
    s = socket.socket(family(ip), socket.SOCK_DGRAM)
    s.bind((ip, int(port)))
    while True:
        data, peer = s.recvfrom(2048)
        print("from", peer[0], data.decode(errors="replace"), flush=True)


COMMANDS = {"tw": cmd_tw, "hold": cmd_hold, "listen": cmd_listen, "inject": cmd_inject,
            "syn": cmd_syn, "try": cmd_try, "rthdr": cmd_rthdr, "lsrr": cmd_lsrr, "sink": cmd_sink}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
