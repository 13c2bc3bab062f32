/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The one decision function of Killswitch, shared by every BPF entry point and compiled
 * into the host unit tests too. It takes plain facts that the thin entry points gather
 * (map lookups, packet fields) and returns a reason; nothing here touches the kernel.
 *
 * Fail-closed order of questions, for packets and for connect/sendmsg alike:
 *   loopback?                        -> allowed (never leaves the host)
 *   socket of another netns?         -> blocked (our ifindexes mean nothing there)
 *   socket without a valid profile?  -> blocked
 *   through one of its tunnels?      -> allowed          (packets only)
 *   may it be source-routed?         -> blocked          (packets only: the LAN address
 *                                                         could be a first hop onwards)
 *   to an allow_lan CIDR?            -> allowed
 *   otherwise                        -> blocked
 */
#ifndef KILLSWITCH_POLICY_H
#define KILLSWITCH_POLICY_H

#include "killswitch_abi.h"

/* Facts about one packet, seen by cgroup_skb egress or ingress. */
struct ks_packet_facts {
	ks_u32 ifindex;	       /* output device (egress) or input device (ingress) */
	ks_u32 profile_id;     /* from the socket's storage; KS_PROFILE_NONE if absent */
	ks_u32 profile_valid;  /* ks_profiles[profile_id] has KS_PROFILE_VALID */
	ks_u32 foreign_netns;  /* socket was created in another network namespace */
	ks_u32 through_tunnel; /* ks_tunnel_sets[profile_id] has ifindex */
	ks_u32 peer_in_lan;    /* remote address is in the profile's allow_lan */
	ks_u32 is_canary;      /* UDP to loopback KS_CANARY_PORT (ksrun's proof) */
	ks_u32 may_route_on;   /* IPv4 options, or an IPv6 hop-by-hop, destination-options or
				* routing header: the packet may be source-routed (LSRR/SSRR,
				* a type 4 routing header), so its destination is only the
				* first hop and says nothing of where it goes */
};

static inline int ks_reason_allows(enum ks_reason reason)
{
	return reason == KS_REASON_ALLOW_TUNNEL || reason == KS_REASON_ALLOW_LOOPBACK ||
	       reason == KS_REASON_ALLOW_LAN;
}

static inline enum ks_reason ks_judge_packet(const struct ks_packet_facts *f)
{
	if (f->ifindex == KS_LOOPBACK_IFINDEX)
		return f->is_canary ? KS_REASON_BLOCK_CANARY : KS_REASON_ALLOW_LOOPBACK;
	if (f->foreign_netns)
		return KS_REASON_BLOCK_WRONG_NETNS;
	if (f->profile_id == KS_PROFILE_NONE || !f->profile_valid)
		return KS_REASON_BLOCK_NO_PROFILE;
	if (f->through_tunnel)
		return KS_REASON_ALLOW_TUNNEL;
	/* Off the tunnel only a LAN destination passes; a source route would make that
	 * destination a first hop towards anywhere (a datagram to the allowed LAN router
	 * that the router forwards to the internet, from the physical address). */
	if (f->may_route_on)
		return KS_REASON_BLOCK_SOURCE_ROUTE;
	if (f->peer_in_lan)
		return KS_REASON_ALLOW_LAN;
	return KS_REASON_BLOCK_NOT_TUNNEL;
}

/* Facts about one connect() or unconnected sendmsg(). */
struct ks_connect_facts {
	ks_u32 profile_id;
	ks_u32 profile_valid;
	ks_u32 foreign_netns;
	ks_u32 dst_is_loopback; /* 127/8, ::1, unspecified, or v4-mapped of those */
	ks_u32 dst_in_lan;	/* destination in the profile's allow_lan */
	ks_u32 is_canary;	/* connect() to loopback KS_CANARY_PORT */
	ks_u32 tunnel_ifindex;	/* profile's bind target for the destination's family */
};

struct ks_connect_verdict {
	enum ks_reason reason;
	/* The tunnel this destination's traffic is to use when allowed, 0 for loopback and
	 * LAN destinations (which route normally). Unused when blocked. Informational: the
	 * profile's routing table steers the traffic, egress checks where it went. */
	ks_u32 bind_ifindex;
};

static inline struct ks_connect_verdict ks_judge_connect(const struct ks_connect_facts *f)
{
	struct ks_connect_verdict v = {KS_REASON_BLOCK_NO_TUNNEL, 0};

	if (f->dst_is_loopback) {
		v.reason = f->is_canary ? KS_REASON_BLOCK_CANARY : KS_REASON_ALLOW_LOOPBACK;
		return v;
	}
	if (f->foreign_netns) {
		v.reason = KS_REASON_BLOCK_WRONG_NETNS;
		return v;
	}
	if (f->profile_id == KS_PROFILE_NONE || !f->profile_valid) {
		v.reason = KS_REASON_BLOCK_NO_PROFILE;
		return v;
	}
	if (f->dst_in_lan) {
		v.reason = KS_REASON_ALLOW_LAN;
		return v;
	}
	if (f->tunnel_ifindex == 0) {
		v.reason = KS_REASON_BLOCK_NO_TUNNEL;
		return v;
	}
	v.reason = KS_REASON_ALLOW_TUNNEL;
	v.bind_ifindex = f->tunnel_ifindex;
	return v;
}

/*
 * Multicast group joins. A join makes the KERNEL send membership reports (IGMP, MLD) out of
 * the interface the group is joined on, for as long as the membership lasts, with no
 * socket attached: no socket hook and no egress program ever sees them. So the join itself
 * is judged, by cgroup/setsockopt: a protected socket may join only on one of its
 * profile's tunnels (or loopback), named by index. A join that names no interface is
 * refused: the kernel would pick the interface by the main routing table (an unmarked
 * lookup, which our policy rules never see), i.e. the physical link. One that names it by
 * a local address only (ip_mreq, ip_mreq_source, ip_mreqn with index 0) is refused too:
 * the kernel picks the device that holds that address, which the program cannot look up.
 * allow_lan does not extend to joins: a
 * membership report goes to the whole segment and announces the app to everyone on it,
 * while allow_lan names unicast destinations the user chose.
 */

/* setsockopt levels and options that join a group (or, IPV6_JOIN_ANYCAST, make the kernel
 * join the anycast address's solicited-node group); the values of <linux/in.h>/<in6.h>. */
#define KS_SOL_IP 0
#define KS_SOL_IPV6 41
#define KS_IP_ADD_MEMBERSHIP 35
#define KS_IP_ADD_SOURCE_MEMBERSHIP 39
#define KS_MCAST_JOIN_GROUP 42
#define KS_MCAST_JOIN_SOURCE_GROUP 46
#define KS_IPV6_ADD_MEMBERSHIP 20 /* == IPV6_JOIN_GROUP */
#define KS_IPV6_JOIN_ANYCAST 27
#define KS_AF_INET 2
#define KS_AF_INET6 10

/* The join options' largest request (struct group_source_req, 64-bit layout). A longer
 * optlen is cut to this (the kernel reads no further), so that the kernel always uses the
 * copy the program judged, never user memory read again (see ks_setsockopt). */
#define KS_JOIN_OPTLEN_MAX 264
/* Bytes of the request the program copies and parses: enough for the interface and the
 * group of every layout (group_req's IPv6 group ends at byte 32). */
#define KS_JOIN_PARSE_BYTES 32

/* What a setsockopt asks, read from its first `have` bytes (have <= KS_JOIN_PARSE_BYTES;
 * optlen is what the caller passed). */
struct ks_join {
	ks_u32 ifindex;	      /* the interface asked for by index; 0: none */
	ks_u32 named_by_addr; /* the interface was named by a local address instead */
	ks_u8 group[16];      /* IPv6, or IPv4-mapped */
	ks_u8 family;	      /* 4 or 6 */
};

static inline ks_u32 ks_load_u32(const ks_u8 *p)
{
	ks_u32 v;

	__builtin_memcpy(&v, p, 4);
	return v;
}

static inline void ks_group_v4(struct ks_join *j, const ks_u8 *addr)
{
	__builtin_memset(j->group, 0, 10);
	j->group[10] = 0xff;
	j->group[11] = 0xff;
	__builtin_memcpy(j->group + 12, addr, 4);
	j->family = 4;
}

/* Returns 1 when the option joins a group and is long enough for the kernel to act on it
 * (shorter ones fail in the kernel with EINVAL and need no judgement), filling *j. */
static inline int ks_parse_join(int level, int optname, int optlen,
				const ks_u8 buf[KS_JOIN_PARSE_BYTES], int have, struct ks_join *j)
{
	__builtin_memset(j, 0, sizeof(*j));
	if (optlen > have && have < KS_JOIN_PARSE_BYTES)
		optlen = have; /* never read what was not copied */
	if (level == KS_SOL_IP && optname == KS_IP_ADD_MEMBERSHIP) {
		if (optlen < 8)
			return 0;
		ks_group_v4(j, buf);
		if (optlen >= 12) /* struct ip_mreqn: group, address, index */
			j->ifindex = ks_load_u32(buf + 8);
		/* struct ip_mreq (8 bytes): group, address */
		j->named_by_addr = j->ifindex == 0 && ks_load_u32(buf + 4) != 0;
		return 1;
	}
	if (level == KS_SOL_IP && optname == KS_IP_ADD_SOURCE_MEMBERSHIP) {
		if (optlen < 12) /* struct ip_mreq_source: group, interface address, source */
			return 0;
		ks_group_v4(j, buf);
		j->named_by_addr = ks_load_u32(buf + 4) != 0;
		return 1;
	}
	if ((level == KS_SOL_IP || level == KS_SOL_IPV6) &&
	    (optname == KS_MCAST_JOIN_GROUP || optname == KS_MCAST_JOIN_SOURCE_GROUP)) {
		/* struct group_req / group_source_req: __u32 interface, then the group as a
		 * sockaddr_storage at offset 8 (at 4 for 32-bit callers, whose group the event
		 * may then show wrongly; the interface, which decides, is at 0 in both). */
		if (optlen < 8)
			return 0;
		j->ifindex = ks_load_u32(buf);
		if (optlen >= 16 && buf[8] == KS_AF_INET && buf[9] == 0) {
			ks_group_v4(j, buf + 12);
		} else if (optlen >= 32 && buf[8] == KS_AF_INET6 && buf[9] == 0) {
			__builtin_memcpy(j->group, buf + 16, 16);
			j->family = 6;
		} else {
			j->family = level == KS_SOL_IP ? 4 : 6;
		}
		return 1;
	}
	if (level == KS_SOL_IPV6 &&
	    (optname == KS_IPV6_ADD_MEMBERSHIP || optname == KS_IPV6_JOIN_ANYCAST)) {
		if (optlen < 20) /* struct ipv6_mreq: group, int index */
			return 0;
		__builtin_memcpy(j->group, buf, 16);
		j->ifindex = ks_load_u32(buf + 16);
		j->family = 6;
		return 1;
	}
	return 0;
}

/* Facts about one join of a protected socket. */
struct ks_join_facts {
	ks_u32 profile_id;
	ks_u32 profile_valid;
	ks_u32 foreign_netns;
	ks_u32 ifindex;	       /* the interface asked for by index; 0: none */
	ks_u32 through_tunnel; /* ks_tunnel_sets[profile_id] has ifindex */
};

static inline enum ks_reason ks_judge_join(const struct ks_join_facts *f)
{
	if (f->ifindex == KS_LOOPBACK_IFINDEX)
		return KS_REASON_ALLOW_LOOPBACK;
	if (f->foreign_netns)
		return KS_REASON_BLOCK_WRONG_NETNS;
	if (f->profile_id == KS_PROFILE_NONE || !f->profile_valid)
		return KS_REASON_BLOCK_NO_PROFILE;
	if (f->ifindex == 0)
		return KS_REASON_BLOCK_JOIN_UNNAMED;
	if (f->through_tunnel)
		return KS_REASON_ALLOW_TUNNEL;
	return KS_REASON_BLOCK_NOT_TUNNEL;
}

/*
 * Local services that resolve names on a caller's behalf send the query from their own
 * sockets, outside the caller's cgroup and so outside the kill switch: systemd-resolved's
 * varlink socket (glibc's nss-resolve) and nscd. cgroup/connect_unix refuses a protected
 * app's connect() to them; glibc then falls back to the next NSS module ("dns" reads
 * /etc/resolv.conf and sends to port 53, which the inet hooks redirect into the tunnel).
 *
 * Matched on the path the app passes, before the kernel resolves it:
 *   - anything under /run/systemd/resolve/ or /run/nscd/ (also spelled /var/run/...);
 *   - any path whose last component is io.systemd.Resolve (relative paths, doubled
 *     slashes, other mount points of the same socket).
 * A path through a symlink the app made itself, or through "..", is not recognised: this
 * stops the accidental leak of every program using getaddrinfo(), not a hostile program
 * (docs/threat-model.md). Abstract and unnamed sockets never match.
 */
#define KS_UNIX_PATH_MAX 108 /* sizeof(sockaddr_un.sun_path) */

/* Buffers are KS_UNIX_PATH_BUF bytes and every index is masked: clang then cannot turn
 * the loops into pointer arithmetic on the stack buffer that the BPF verifier refuses,
 * and the verifier sees each read within bounds. */
#define KS_UNIX_PATH_BUF 128
#define KS_AT(path, i) ((path)[(i) & (KS_UNIX_PATH_BUF - 1)])

/* The helpers below compare without early exits (differences are OR-ed together): every
 * branch on a path byte would double the states the BPF verifier has to explore. */

/* Length up to the first NUL, at most len. By arithmetic alone, no branch on a byte: a loop
 * that stopped at the NUL gave the verifier one path per possible length, each verifying
 * the rest of the program again with that length as a constant (116 ms of ksd's start-up
 * for connect_unix). Here the length is one value the verifier knows to be 0..108. */
static inline ks_u32 ks_path_length(const char path[KS_UNIX_PATH_BUF], ks_u32 len)
{
	ks_u32 n = 0, ended = 0;

	for (ks_u32 i = 0; i < KS_UNIX_PATH_MAX; i++) {
		/* Bit 31 of byte - 1 is set for a NUL only; of len - 1 - i once i >= len (both
		 * are small, so the subtraction wraps only then). */
		ks_u32 byte = (ks_u32)(ks_u8)KS_AT(path, i);
		ended |= ((byte - 1) | (len - 1 - i)) >> 31;
		n += 1 - ended;
	}
	/* Opaque to the compiler: it knows n <= 108 and would drop the masks (KS_AT) on the
	 * indexes derived from it, which the verifier needs to see every read in bounds. */
	__asm__ __volatile__("" : "+r"(n));
	return n;
}

static inline int ks_path_has_prefix(const char *path, ks_u32 n, const char *prefix,
				     ks_u32 prefix_len)
{
	ks_u32 diff = 0;

	if (n < prefix_len || prefix_len > KS_UNIX_PATH_MAX)
		return 0;
	for (ks_u32 i = 0; i < KS_UNIX_PATH_MAX; i++) {
		if (i >= prefix_len)
			break;
		diff |= (ks_u32)(ks_u8)(KS_AT(path, i) ^ prefix[i]);
	}
	return diff == 0;
}

#define KS_PREFIX(path, n, literal) ks_path_has_prefix(path, n, literal, sizeof(literal) - 1)

/* Is the last component of path[0..n) exactly `name` (name_len bytes)? */
static inline int ks_path_last_component_is(const char path[KS_UNIX_PATH_BUF], ks_u32 n,
					    const char *name, ks_u32 name_len)
{
	ks_u32 start, diff = 0;

	if (n < name_len || n > KS_UNIX_PATH_MAX)
		return 0;
	start = n - name_len;
	if (start > 0 && KS_AT(path, start - 1) != '/')
		return 0;
	for (ks_u32 i = 0; i < KS_UNIX_PATH_MAX; i++) {
		ks_u32 at = start + i;

		if (i >= name_len || at >= KS_UNIX_PATH_MAX)
			break;
		/* Opaque, so that the mask stays (the compiler knows at < 108 here; the
		 * verifier, holding that bound on another register, does not). */
		__asm__ __volatile__("" : "+r"(at));
		diff |= (ks_u32)(ks_u8)(KS_AT(path, at) ^ name[i]);
	}
	return diff == 0;
}

/* path: the sun_path bytes the app passed (len of them, NUL-terminated or not), zero-filled
 * to KS_UNIX_PATH_BUF bytes. */
static inline int ks_unix_path_refused(const char path[KS_UNIX_PATH_BUF], ks_u32 len)
{
	ks_u32 n;

	if (len == 0 || path[0] == 0)
		return 0;
	if (len > KS_UNIX_PATH_MAX)
		len = KS_UNIX_PATH_MAX;
	n = ks_path_length(path, len);
	return ks_path_last_component_is(path, n, "io.systemd.Resolve",
					 sizeof("io.systemd.Resolve") - 1) ||
	       KS_PREFIX(path, n, "/run/systemd/resolve/") ||
	       KS_PREFIX(path, n, "/var/run/systemd/resolve/") ||
	       KS_PREFIX(path, n, "/run/nscd/") || KS_PREFIX(path, n, "/var/run/nscd/");
}

#endif /* KILLSWITCH_POLICY_H */
