/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Killswitch C ABI: the one description of every BPF map key and value, shared by the
 * kernel side (bpf/killswitch.bpf.c) and the user side (ksd, ksrun, ksctl, tests).
 * Fixed-width types only; every layout is checked with static asserts below, so a change
 * that would make pinned maps of an older ksd unreadable fails to compile instead.
 *
 * How a protected socket is judged
 * --------------------------------
 * 1. cgroup/sock_create classifies the socket once: it walks the creating task's cgroup
 *    ancestors (deepest first) through ks_cgroups until one is known, and stores the
 *    profile id in the socket's local storage (ks_sk_profile). A socket in the protected
 *    tree whose cgroup chain is unknown gets KS_PROFILE_NONE: it may only use loopback.
 * 2. Steering: sock_create marks the socket (KS_MARK_BASE | profile id); ksd's policy
 *    rules route marked sockets by the profile's own table (default dev <tunnel>,
 *    allow_lan throws, unreachable fallback), so routes on the physical interface cannot
 *    pull them away and a re-created tunnel is used at once. With no usable tunnel of the
 *    destination's family, connect and sendmsg fail at once with ENETUNREACH.
 * 3. cgroup_skb/egress is the authority: a packet leaves only through loopback, through
 *    an interface that ks_tunnel_sets lists for the socket's profile, or towards one of the
 *    profile's allow_lan CIDRs (ks_lan). Everything else is dropped and counted.
 * 4. cgroup_skb/ingress applies the same rule to what arrives.
 *
 * Examples (profile 1 = "default", tunnels = ["wg0"], wg0 is ifindex 7, up, IPv4 only):
 *    ks_tunnel_sets[1] = {.ifindex = {7}}
 *    ks_profiles[1]    = {.flags = KS_PROFILE_VALID, .bind_ifindex_v4 = 7, .bind_ifindex_v6 = 0}
 *    UDP to 203.0.113.10 leaving via eth0 (ifindex 2)  -> dropped  (not a tunnel)
 *    UDP to 203.0.113.10 leaving via wg0               -> allowed
 *    connect() to 2001:db8::1                          -> ENETUNREACH (no IPv6 tunnel)
 *    wg0 deleted: ksd removes 7 from the set and the bind targets -> every connect fails
 *    fast; if ksd is dead, the stale 7 only admits an interface that no longer exists.
 */
#ifndef KILLSWITCH_ABI_H
#define KILLSWITCH_ABI_H

#ifdef __cplusplus
#include <cstdint>
typedef std::uint8_t ks_u8;
typedef std::uint16_t ks_u16;
typedef std::uint32_t ks_u32;
typedef std::uint64_t ks_u64;
#else
typedef __u8 ks_u8;
typedef __u16 ks_u16;
typedef __u32 ks_u32;
typedef __u64 ks_u64;
#endif

/* Bumped whenever a map layout changes; ksd refuses to adopt pins of another version. */
#define KS_ABI_VERSION 2 /* 2: ks_tunnel_sets, app slots in the mark, no ks_totals */

#define KS_MAX_PROFILES 64   /* profile ids 1..63; 0 is KS_PROFILE_NONE */
#define KS_MAX_CGROUPS 65536 /* known cgroups (tree root, profile slices, apps) */
#define KS_MAX_TUNNELS_PER_PROFILE 8
#define KS_MAX_LAN_ENTRIES 4096
#define KS_MAX_DNS 4
#define KS_PROFILE_NAME_MAX 32
#define KS_MAX_CGROUP_DEPTH 32 /* ancestor walk bound in sock_create */

#define KS_PROFILE_NONE 0

/* ks_profiles[].flags */
#define KS_PROFILE_VALID (1u << 0)

/* Families a tunnel can carry (it has an address of that family); ksd's plan uses them to
 * choose bind targets. */
#define KS_FAMILY_V4 (1u << 0)
#define KS_FAMILY_V6 (1u << 1)

/* ks_config[0].flags */
#define KS_CONFIG_READY (1u << 0)

/* Loopback is ifindex 1 in every network namespace. */
#define KS_LOOPBACK_IFINDEX 1

/*
 * Canary used by ksrun to prove, without privileges, that the programs judge its own
 * sockets: a connected UDP send to 127.0.0.1 or ::1 on this port is dropped by egress
 * (EPERM), and a TCP connect() to it is refused by the connect hooks with
 * KS_CANARY_ERRNO. Without enforcement the send succeeds and the connect gets
 * ECONNREFUSED.
 */
#define KS_CANARY_PORT 9    /* discard; nothing legitimate sends there over loopback */
#define KS_CANARY_ERRNO 131 /* ENOTRECOVERABLE: a value no real connect() returns */

/*
 * Mark of protected sockets, set by sock_create:
 *    bits 16-31  KS_MARK_BASE ("KS"): ours
 *    bits  6-15  the app's counter slot (ks_cgroup_value.app_slot; 0: none)
 *    bits  0-5   the profile id (KS_PROFILE_NONE included)
 * ksd's policy rules match tag and profile (KS_MARK_RULE_MASK) and send the lookup to the
 * profile's table, see core/include/killswitch/routing.hpp.
 * The mark also classifies the socket's packets on the per-packet path (a load from the
 * socket instead of a socket-storage lookup, and the app's counters by slot in an array
 * instead of by cgroup id in a hash; docs/benchmarks.md), so sock_create gives a socket
 * created in another network namespace KS_PROFILE_NONE's mark: its packets take the
 * socket-storage path, which knows it is foreign.
 */
#define KS_MARK_BASE 0x4b530000u /* "KS" */
#define KS_MARK_TAG_MASK 0xffff0000u
#define KS_MARK_SLOT_SHIFT 6
#define KS_MARK_SLOT_MASK 0x0000ffc0u
#define KS_MARK_PROFILE_MASK 0x0000003fu
#define KS_MARK_RULE_MASK (KS_MARK_TAG_MASK | KS_MARK_PROFILE_MASK)
#define KS_MAX_APP_SLOTS 1024 /* per-CPU counters of the first 1023 apps; slot 0: none */

/* Global settings written by ksd: single-entry array map ks_config. */
struct ks_config {
	ks_u64 netns_cookie; /* network namespace whose ifindexes the maps hold */
	ks_u32 flags;	     /* KS_CONFIG_* */
	ks_u32 abi_version;  /* KS_ABI_VERSION of the ksd that wrote it */
};

/* Per profile: array map ks_profiles, index = profile id. */
struct ks_profile {
	ks_u32 flags;			/* KS_PROFILE_* */
	ks_u32 bind_ifindex_v4;		/* preferred up tunnel carrying IPv4, 0 = none */
	ks_u32 bind_ifindex_v6;		/* preferred up tunnel carrying IPv6, 0 = none */
	ks_u32 dns_count;		/* resolvers (issue 3 uses them); 0 = none configured */
	ks_u8 dns[KS_MAX_DNS][16];	/* IPv6 or IPv4-mapped IPv6, network order */
	char name[KS_PROFILE_NAME_MAX]; /* so a restarted ksd keeps ids stable */
};

/* ks_cgroups: cgroup id -> profile, and for apps their counter slot. */
struct ks_cgroup_value {
	ks_u32 profile_id;
	ks_u32 app_slot; /* index into ks_app_counters, 0: none (tree root, slices, or more
			  * apps than slots: counted in ks_counters by cgroup id) */
};

/* ks_tunnel_sets: array map, index = profile id -> the ifindexes of the profile's tunnels
 * that are up and usable (0 = empty slot; ifindex 0 never exists). An array, not a hash
 * keyed by (profile, ifindex): egress looks it up for every packet, and on the test machine
 * the hash lookup cost ~100 ns per packet, the array lookup a few (docs/benchmarks.md).
 * ksd lists tunnels only for valid profiles, so a hit also vouches for the profile. */
struct ks_tunnel_set {
	ks_u32 ifindex[KS_MAX_TUNNELS_PER_PROFILE];
};

/* ks_lan: LPM trie over (profile, address). IPv4 is stored IPv4-mapped. */
struct ks_lan_key {
	ks_u32 prefixlen;  /* 32 (profile bits) + prefix length over the 128-bit address */
	ks_u32 profile_id; /* network byte order, so it is the leading 32 bits of the key */
	ks_u8 addr[16];
};

/* Per-socket classification, in socket local storage (cloned to accepted children). */
struct ks_sk_state {
	ks_u32 profile_id;
	ks_u32 reserved;     /* KS_SK_* flags */
	ks_u8 dns_asked[16]; /* DNS server the app addressed (IPv6 or IPv4-mapped) ... */
	ks_u8 dns_used[16];  /* ... and the profile resolver it went to instead */
};

/* ks_sk_state.reserved bits */
#define KS_SK_FOREIGN_NETNS (1u << 0)  /* created in another network namespace than ksd's */
#define KS_SK_DNS_REDIRECTED (1u << 1) /* dns_asked/dns_used are valid */

#define KS_DNS_PORT 53

/* Counters, summed over CPUs by ksd. An app's are in two places: its packets in the per-CPU
 * array ks_app_counters at its slot (when it has one), the rest (connects and sends refused
 * by the socket hooks, dropped events, and the packets of apps without a slot) in the
 * per-CPU hash ks_counters keyed by cgroup id. The totals are the sum over profiles. */
struct ks_counters {
	ks_u64 allowed_packets;
	ks_u64 allowed_bytes;
	ks_u64 blocked_packets;
	ks_u64 blocked_bytes;
	ks_u64 blocked_connects; /* refused by the socket hooks: connect, sendmsg, multicast
				  * joins (setsockopt), unix connects */
	ks_u64 events_dropped;	 /* blocked attempts without an event (rate limit, ring full) */
};

/*
 * ks_fast_slots: what egress's pass path needs for one app slot on one CPU, in one cache
 * line, so that the common packet (an app's socket through its profile's tunnel) touches
 * one place in memory. On machines that flush the TLB at every system call (page-table
 * isolation without PCID) each further place costs a page walk, ~35 ns measured here
 * (docs/benchmarks.md). An array (BPF_F_MMAPABLE: ksd writes the tunnel words in place,
 * never over the counters), index KS_FAST_ROW(cpu, slot), KS_MAX_APP_SLOTS rows per possible
 * CPU, then KS_MAX_PROFILES rows that only ksd writes: the counts of slots given to
 * another app since (KS_FAST_RETIRED_ROW).
 *
 * ksd writes profile_id when it gives the slot to an app, and tunnel_ifindex and families
 * whenever that profile's tunnel set changes (the same ifindexes as ks_tunnel_sets, which stays the
 * authority of every other path). Egress passes a packet here only when its mark's profile
 * is profile_id and its interface is in tunnel_ifindex (ingress: the receiving socket's
 * mark); anything else takes the full path.
 * connect and sendmsg read the same row (the page egress then finds in the TLB). The
 * counters are the packets passed here, by this CPU (the only writer of its rows).
 */
struct ks_fast_slot {
	ks_u32 profile_id; /* the slot's app's profile; KS_PROFILE_NONE: never passes */
	ks_u32 tunnel_ifindex[KS_MAX_TUNNELS_PER_PROFILE]; /* 0: empty */
	ks_u32 families; /* KS_FAMILY_* carried by those tunnels: connect and sendmsg pass a
			  * destination of such a family here (not DNS, not loopback) */
	ks_u64 allowed_packets;
	ks_u64 allowed_bytes;
	ks_u64 reserved2;
};
#define KS_FAST_ROW(cpu, slot) ((cpu)*KS_MAX_APP_SLOTS + (slot))
#define KS_FAST_RETIRED_ROW(ncpus, profile_id) ((ncpus)*KS_MAX_APP_SLOTS + (profile_id))
#define KS_FAST_ROWS(ncpus) ((ncpus)*KS_MAX_APP_SLOTS + KS_MAX_PROFILES)

/* Per-profile counters: per-CPU array ks_profile_counters, index = profile id (0: sockets
 * without a profile). They outlive the apps, whose ks_counters entries ksd removes. */

/*
 * Events: one struct ks_event per blocked attempt, through the ring buffer ks_events, at
 * most KS_EVENTS_PER_WINDOW per app (cgroup) per KS_EVENT_WINDOW_NS (ks_event_budget), so
 * a flood cannot hurt the system. Counters stay exact whatever is dropped; the number of
 * attempts without an event is counted in events_dropped.
 *
 * Two budgets per app, each KS_EVENTS_PER_WINDOW: network attempts (the inet hooks,
 * egress, ingress) and unix-socket attempts (connect_unix). glibc asks nscd for user and
 * group names too, so ordinary programs (ls -l, id, bash without $SHELL) make refused
 * connect_unix attempts; those must never use up the budget of a real network attempt.
 */
#define KS_EVENTS_PER_WINDOW 20
#define KS_EVENT_WINDOW_NS 1000000000ull
#define KS_EVENTS_RING_BYTES (256 * 1024)

enum ks_event_hook {
	KS_EV_CONNECT4 = 1,
	KS_EV_CONNECT6 = 2,
	KS_EV_SENDMSG4 = 3,
	KS_EV_SENDMSG6 = 4,
	KS_EV_CONNECT_UNIX = 5,
	KS_EV_EGRESS = 6,
	KS_EV_INGRESS = 7,
	KS_EV_MCAST_JOIN = 8, /* cgroup/setsockopt: a multicast (or IPv6 anycast) join */
};

struct ks_event {
	ks_u64 time_ns;	   /* bpf_ktime_get_boot_ns(): CLOCK_BOOTTIME */
	ks_u64 cgroup_id;  /* the app: the task's cgroup, or the socket's on egress/ingress */
	ks_u32 pid;	   /* thread group id; 0 on egress/ingress (may run in softirq) */
	ks_u32 profile_id; /* KS_PROFILE_NONE when unclassified */
	ks_u32 ifindex;	   /* egress/ingress: the interface; mcast_join: the one asked
			    * for (0: none); 0 otherwise */
	ks_u32 bytes;	   /* egress/ingress: packet length; 0 otherwise */
	ks_u8 addr[16];	   /* remote address (destination; source on ingress; the group
			    * of a join), IPv4-mapped */
	ks_u16 port;	   /* remote port, host order; 0 when none */
	ks_u8 hook;	   /* enum ks_event_hook */
	ks_u8 reason;	   /* enum ks_reason */
	ks_u8 protocol;	   /* IPPROTO_*; 0 when unknown (unix sockets) */
	ks_u8 family;	   /* 4, 6, or 0 for unix sockets */
	ks_u16 reserved;
	char comm[16]; /* task name; empty when pid is 0 */
};

/* ks_event_budget: per cgroup, the current window of the rate limit. (sent_local was a
 * reserved zero before; the layout is unchanged, so pinned maps stay valid.) */
struct ks_event_budget {
	ks_u64 window_start_ns;
	ks_u32 sent;	   /* network events in this window */
	ks_u32 sent_local; /* connect_unix events in this window */
};

/* Why a verdict was reached; in counters and events. */
enum ks_reason {
	KS_REASON_ALLOW_TUNNEL = 0,
	KS_REASON_ALLOW_LOOPBACK = 1,
	KS_REASON_ALLOW_LAN = 2,
	KS_REASON_BLOCK_NOT_TUNNEL = 3,	 /* would leave through a non-tunnel interface */
	KS_REASON_BLOCK_NO_TUNNEL = 4,	 /* no tunnel of the profile is up for this family */
	KS_REASON_BLOCK_NO_PROFILE = 5,	 /* socket not classified, or profile removed */
	KS_REASON_BLOCK_WRONG_NETNS = 6, /* socket lives in another network namespace */
	KS_REASON_BLOCK_CANARY = 7,	 /* the ksrun canary, refused on purpose */
	KS_REASON_BLOCK_DNS = 8,	 /* DNS with no usable resolver in the profile */
	KS_REASON_BLOCK_LOCAL_RESOLVER =
	    9,				   /* unix socket of a resolving service (resolved, nscd) */
	KS_REASON_BLOCK_JOIN_UNNAMED = 10, /* a multicast join that names no interface by index:
					    * the kernel would pick one by the main table */
	KS_REASON_BLOCK_SOURCE_ROUTE = 11, /* off the tunnel with IPv4 options or IPv6
					    * extension headers that can route it onwards */
};

/* One record of the task iterators in task_cgroups.bpf.c (read by ksd for `ksctl list` and
 * ksrun's single-instance check): a process and the cgroup v2 cgroup it is in. Not pinned,
 * not part of the enforcement ABI. */
struct ks_task_cgroup {
	ks_u64 cgroup_id; /* kernfs id: the cgroup directory's inode number */
	ks_u32 pid;	  /* thread group id, in the initial pid namespace */
	ks_u32 reserved;
};

#ifdef __cplusplus
static_assert(sizeof(struct ks_config) == 16, "ks_config layout");
static_assert(KS_MAX_PROFILES - 1 <= KS_MARK_PROFILE_MASK, "profile ids fit the mark");
static_assert((KS_MAX_APP_SLOTS - 1) << KS_MARK_SLOT_SHIFT <= KS_MARK_SLOT_MASK,
	      "app slots fit the mark");
static_assert(sizeof(struct ks_profile) == 16 + 16 * KS_MAX_DNS + KS_PROFILE_NAME_MAX,
	      "ks_profile layout");
static_assert(sizeof(struct ks_cgroup_value) == 8, "ks_cgroup_value layout");
static_assert(sizeof(struct ks_tunnel_set) == 32, "ks_tunnel_set layout");
static_assert(sizeof(struct ks_lan_key) == 24, "ks_lan_key layout");
static_assert(sizeof(struct ks_sk_state) == 40, "ks_sk_state layout");
static_assert(sizeof(struct ks_counters) == 48, "ks_counters layout");
static_assert(sizeof(struct ks_fast_slot) == 64, "ks_fast_slot: one cache line");
static_assert(sizeof(struct ks_event) == 72, "ks_event layout");
static_assert(sizeof(struct ks_event_budget) == 16, "ks_event_budget layout");
static_assert(sizeof(struct ks_task_cgroup) == 16, "ks_task_cgroup layout");
#else
_Static_assert(sizeof(struct ks_config) == 16, "ks_config layout");
_Static_assert(sizeof(struct ks_profile) == 16 + 16 * KS_MAX_DNS + KS_PROFILE_NAME_MAX,
	       "ks_profile layout");
_Static_assert(sizeof(struct ks_tunnel_set) == 32, "ks_tunnel_set layout");
_Static_assert(sizeof(struct ks_lan_key) == 24, "ks_lan_key layout");
_Static_assert(sizeof(struct ks_counters) == 48, "ks_counters layout");
_Static_assert(sizeof(struct ks_fast_slot) == 64, "ks_fast_slot: one cache line");
_Static_assert(sizeof(struct ks_event) == 72, "ks_event layout");
_Static_assert(sizeof(struct ks_event_budget) == 16, "ks_event_budget layout");
_Static_assert(sizeof(struct ks_task_cgroup) == 16, "ks_task_cgroup layout");
#endif

#endif /* KILLSWITCH_ABI_H */
