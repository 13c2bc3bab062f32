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
	ks_u32 through_tunnel; /* ks_tunnels has {profile_id, ifindex} */
	ks_u32 peer_in_lan;    /* remote address is in the profile's allow_lan */
	ks_u32 is_canary;      /* UDP to loopback KS_CANARY_PORT (ksrun's proof) */
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

#endif /* KILLSWITCH_POLICY_H */
