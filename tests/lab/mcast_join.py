#!/usr/bin/env python3
"""Joins multicast groups with every API the kernel has, one socket per join, and prints
one JSON object: {"CASE": "ok" | "EPERM" | "<errno name>", ...}. Used by the lab's
multicast scenario (test_multicast.sh), protected and unprotected alike.

    mcast_join.py [--hold SECONDS] [--ready FILE] CASE...

CASE is KIND,GROUP,WHERE[,SOURCE] with WHERE an interface name (by index), a local
address (by address), or empty (none: the kernel picks one by route). KINDs:
    mreqn               IP_ADD_MEMBERSHIP, struct ip_mreqn (index, or address when WHERE is one)
    mreq                IP_ADD_MEMBERSHIP, struct ip_mreq (address or none only)
    source              IP_ADD_SOURCE_MEMBERSHIP, struct ip_mreq_source (address or none)
    group / group6      MCAST_JOIN_GROUP at SOL_IP / SOL_IPV6, struct group_req
    sgroup / sgroup6    MCAST_JOIN_SOURCE_GROUP at SOL_IP / SOL_IPV6, struct group_source_req
    ipv6                IPV6_JOIN_GROUP, struct ipv6_mreq
    anycast             IPV6_JOIN_ANYCAST, struct ipv6_mreq (needs CAP_NET_ADMIN)
    biggroup            IP_ADD_MEMBERSHIP with an ip_mreqn in a 5000-byte buffer (optlen
                        longer than a page)
    bigsndbuf           not a join: SO_SNDBUF with a 5000-byte optlen (must keep working)
The sockets stay open for --hold seconds (the kernel reports a membership while it lasts).
"""
import errno
import json
import socket
import struct
import sys
import time

SOL_IP, SOL_IPV6 = 0, 41
IP_ADD_MEMBERSHIP, IP_ADD_SOURCE_MEMBERSHIP = 35, 39
MCAST_JOIN_GROUP, MCAST_JOIN_SOURCE_GROUP = 42, 46
IPV6_JOIN_GROUP, IPV6_JOIN_ANYCAST = 20, 27


def where(value, family):
    """(ifindex, local address bytes) for WHERE."""
    if not value:
        return 0, b"\0" * (4 if family == socket.AF_INET else 16)
    try:
        return 0, socket.inet_pton(family, value)
    except OSError:
        return socket.if_nametoindex(value), b"\0" * (4 if family == socket.AF_INET else 16)


def storage(family, address):
    """A struct sockaddr_storage (128 bytes) holding ADDRESS."""
    if family == socket.AF_INET:
        raw = struct.pack("=HH4s8x", family, 0, socket.inet_pton(family, address))
    else:
        raw = struct.pack("=HHI16sI", family, 0, 0, socket.inet_pton(family, address), 0)
    return raw.ljust(128, b"\0")


def join(kind, group, place, source):
    v6 = kind in ("group6", "sgroup6", "ipv6", "anycast")
    family = socket.AF_INET6 if v6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    ifindex, local = where(place, family)
    gfamily = socket.AF_INET6 if ":" in group else socket.AF_INET
    if kind == "mreqn":
        sock.setsockopt(SOL_IP, IP_ADD_MEMBERSHIP,
                        struct.pack("=4s4si", socket.inet_aton(group), local, ifindex))
    elif kind == "mreq":
        sock.setsockopt(SOL_IP, IP_ADD_MEMBERSHIP, struct.pack("=4s4s", socket.inet_aton(group), local))
    elif kind == "source":
        sock.setsockopt(SOL_IP, IP_ADD_SOURCE_MEMBERSHIP,
                        struct.pack("=4s4s4s", socket.inet_aton(group), local, socket.inet_aton(source)))
    elif kind in ("group", "group6"):
        sock.setsockopt(SOL_IPV6 if v6 else SOL_IP, MCAST_JOIN_GROUP,
                        struct.pack("=I4x", ifindex) + storage(gfamily, group))
    elif kind in ("sgroup", "sgroup6"):
        sock.setsockopt(SOL_IPV6 if v6 else SOL_IP, MCAST_JOIN_SOURCE_GROUP,
                        struct.pack("=I4x", ifindex) + storage(gfamily, group) + storage(gfamily, source))
    elif kind in ("ipv6", "anycast"):
        sock.setsockopt(SOL_IPV6, IPV6_JOIN_GROUP if kind == "ipv6" else IPV6_JOIN_ANYCAST,
                        struct.pack("=16sI", socket.inet_pton(socket.AF_INET6, group), ifindex))
    elif kind == "biggroup":
        sock.setsockopt(SOL_IP, IP_ADD_MEMBERSHIP,
                        struct.pack("=4s4si", socket.inet_aton(group), local, ifindex).ljust(5000, b"\0"))
    elif kind == "bigsndbuf":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, struct.pack("=i", 65536).ljust(5000, b"\0"))
    else:
        raise SystemExit("unknown kind " + kind)
    return sock


def main():
    args = sys.argv[1:]
    hold, ready = 0.0, None
    while args and args[0].startswith("--"):
        if args[0] == "--hold":
            hold = float(args[1])
        elif args[0] == "--ready":
            ready = args[1]
        args = args[2:]
    results, kept = {}, []
    for case in args:
        fields = case.split(",") + ["", ""]
        kind, group, place, source = fields[0], fields[1], fields[2], fields[3]
        try:
            kept.append(join(kind, group, place, source))
            results[case] = "ok"
        except OSError as e:
            results[case] = errno.errorcode.get(e.errno, str(e.errno))
    print(json.dumps(results), flush=True)
    if ready:
        with open(ready, "w") as f:
            f.write("ready\n")
    time.sleep(hold)


if __name__ == "__main__":
    main()
