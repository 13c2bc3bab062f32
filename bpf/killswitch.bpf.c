// SPDX-License-Identifier: GPL-2.0
/*
 * Killswitch enforcement programs, attached (as pinned bpf_links, so they survive the
 * daemon) to the protected cgroup tree and inherited by every cgroup below it.
 *
 * Thin entry points gather facts and ask the shared decision function in policy.h.
 * Map layouts and the rule semantics are documented in killswitch_abi.h.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "killswitch_abi.h"
#include "policy.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define ENETUNREACH 101
#define EPERM 1

/* Verdicts of cgroup programs. */
#define KS_DROP 0
#define KS_PASS 1

/* ---- maps (pinned by name under ksd's pin directory, reused across restarts) ---- */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KS_MAX_PROFILES);
	__type(key, __u32);
	__type(value, struct ks_profile);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_profiles SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KS_MAX_CGROUPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct ks_cgroup_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KS_MAX_PROFILES);
	__type(key, __u32);
	__type(value, struct ks_tunnel_set);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_tunnel_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, KS_MAX_LAN_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ks_lan_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_lan SEC(".maps");

/* BPF_F_CLONE: accepted TCP children inherit their listener's classification. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct ks_sk_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_sk_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, KS_MAX_CGROUPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct ks_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KS_MAX_APP_SLOTS);
	__type(key, __u32);
	__type(value, struct ks_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_app_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KS_MAX_PROFILES);
	__type(key, __u32);
	__type(value, struct ks_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_profile_counters SEC(".maps");

/* max_entries: KS_FAST_ROWS(possible CPUs), set by ksd before loading. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KS_FAST_ROWS(1));
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ks_fast_slot);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_fast_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, KS_EVENTS_RING_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_events SEC(".maps");

/* LRU: an app that has gone quiet gives its slot back; a flood of new apps at worst
 * restarts someone's window early. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct ks_event_budget);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_event_budget SEC(".maps");

/* ---- small helpers ---- */

static __always_inline const struct ks_profile *profile_of(__u32 profile_id)
{
	const struct ks_profile *p = bpf_map_lookup_elem(&ks_profiles, &profile_id);

	if (!p || !(p->flags & KS_PROFILE_VALID))
		return 0;
	return p;
}

static __always_inline __u64 config_netns_cookie(void)
{
	__u32 zero = 0;
	const struct ks_config *c = bpf_map_lookup_elem(&ks_config, &zero);

	return c ? c->netns_cookie : 0;
}

static __always_inline int lan_contains(__u32 profile_id, const __u8 addr[16])
{
	struct ks_lan_key key = {
	    .prefixlen = 32 + 128,
	    .profile_id = bpf_htonl(profile_id),
	};

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&ks_lan, &key) != 0;
}

static __always_inline void v4_mapped(__u8 out[16], __u32 addr_be)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr_be, 4);
}

static __always_inline int is_v4_loopback(__u32 addr_be)
{
	__u32 host = bpf_ntohl(addr_be);

	return (host >> 24) == 127 || host == 0;
}

/* Per-CPU values: plain increments are exact. */
static __always_inline void add_to(struct ks_counters *c, int allowed, __u64 bytes, int is_packet)
{
	if (!c)
		return;
	if (!is_packet) {
		c->blocked_connects++;
	} else if (allowed) {
		c->allowed_packets++;
		c->allowed_bytes += bytes;
	} else {
		c->blocked_packets++;
		c->blocked_bytes += bytes;
	}
}

/* The app's counters in the hash keyed by cgroup id, made on first use. */
static __always_inline struct ks_counters *counters_by_cgroup(__u64 cgroup_id)
{
	struct ks_counters *c = bpf_map_lookup_elem(&ks_counters, &cgroup_id);

	if (!c) {
		struct ks_counters fresh = {};

		bpf_map_update_elem(&ks_counters, &cgroup_id, &fresh, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&ks_counters, &cgroup_id);
	}
	return c;
}

/* Counts into the app's counters `app` and its profile's. No separate totals: user space
 * sums the profiles (one lookup less per packet). */
static __always_inline void count_in(struct ks_counters *app, __u32 profile_id,
				     enum ks_reason reason, __u64 bytes, int is_packet)
{
	int allowed = ks_reason_allows(reason);

	if (reason == KS_REASON_BLOCK_CANARY)
		return; /* ksrun's proof, not an attempt to leak */
	add_to(app, allowed, bytes, is_packet);
	add_to(bpf_map_lookup_elem(&ks_profile_counters, &profile_id), allowed, bytes, is_packet);
}

static __always_inline void count(__u64 cgroup_id, __u32 profile_id, enum ks_reason reason,
				  __u64 bytes, int is_packet)
{
	if (reason == KS_REASON_BLOCK_CANARY)
		return; /* (before the hash entry would be made) */
	count_in(counters_by_cgroup(cgroup_id), profile_id, reason, bytes, is_packet);
}

/* ---- events: one per blocked attempt, rate-limited per app ---- */

/* A fixed window per cgroup, with one count per kind of attempt (network or unix socket,
 * see killswitch_abi.h). Updates race between CPUs; the limit is then off by at most the
 * number of CPUs, which is all a flood guard needs. */
static __always_inline int event_budget_left(__u64 cgroup_id, __u64 now, int local)
{
	struct ks_event_budget *b = bpf_map_lookup_elem(&ks_event_budget, &cgroup_id);
	__u32 *sent;

	if (!b) {
		struct ks_event_budget fresh = {.window_start_ns = now};

		if (local)
			fresh.sent_local = 1;
		else
			fresh.sent = 1;
		bpf_map_update_elem(&ks_event_budget, &cgroup_id, &fresh, BPF_ANY);
		return 1;
	}
	if (now - b->window_start_ns >= KS_EVENT_WINDOW_NS) {
		b->window_start_ns = now;
		b->sent = 0;
		b->sent_local = 0;
	}
	sent = local ? &b->sent_local : &b->sent;
	if (*sent >= KS_EVENTS_PER_WINDOW)
		return 0;
	(*sent)++;
	return 1;
}

static __always_inline void count_dropped_event(__u64 cgroup_id, __u32 profile_id)
{
	struct ks_counters *c;

	c = counters_by_cgroup(cgroup_id); /* made here if the app counts packets by slot */
	if (c)
		c->events_dropped++;
	c = bpf_map_lookup_elem(&ks_profile_counters, &profile_id);
	if (c)
		c->events_dropped++;
}

static __always_inline void report(struct ks_event *ev)
{
	if (ev->reason == KS_REASON_BLOCK_CANARY)
		return;
	ev->time_ns = bpf_ktime_get_boot_ns();
	if (!event_budget_left(ev->cgroup_id, ev->time_ns, ev->hook == KS_EV_CONNECT_UNIX) ||
	    bpf_ringbuf_output(&ks_events, ev, sizeof(*ev), 0) != 0)
		count_dropped_event(ev->cgroup_id, ev->profile_id);
}

/* ---- cgroup/sock_create: classify the socket once, mark it for its profile's table ---- */

/* What sock_create learns from the task's cgroup. */
struct ks_class {
	__u32 profile_id;
	__u32 app_slot;
};

static __always_inline struct ks_class class_of(const struct ks_cgroup_value *v)
{
	struct ks_class c = {.profile_id = v->profile_id,
			     .app_slot = v->app_slot < KS_MAX_APP_SLOTS ? v->app_slot : 0};

	return c;
}

/* The classification of the current task's cgroup, else of its deepest known ancestor;
 * NULL outside the protected tree (ksd always maps the tree root). */
static __always_inline const struct ks_cgroup_value *current_task_entry(void)
{
	/* The common case first: the task sits in its app's own cgroup. (The walk below
	 * starts at the deepest possible level, a helper call for each level that does not
	 * exist: tens of them per socket.) */
	__u64 own = bpf_get_current_cgroup_id();
	const struct ks_cgroup_value *v = bpf_map_lookup_elem(&ks_cgroups, &own);

	if (v)
		return v;
	/* Deepest known ancestor wins: an app cgroup, else its profile slice, else the
	 * tree root (which ksd maps to the default profile, or to nothing). */
	for (int level = KS_MAX_CGROUP_DEPTH - 1; level >= 0; level--) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);

		if (!id)
			continue;
		v = bpf_map_lookup_elem(&ks_cgroups, &id);
		if (v)
			return v;
	}
	return 0;
}

static __always_inline struct ks_class classify_current_task(void)
{
	const struct ks_cgroup_value *v = current_task_entry();

	if (v)
		return class_of(v);
	return (struct ks_class){.profile_id = KS_PROFILE_NONE};
}

SEC("cgroup/sock_create")
int ks_sock_create(struct bpf_sock *sk)
{
	struct ks_sk_state *state;
	struct ks_class class;

	if (sk->family != AF_INET && sk->family != AF_INET6)
		return KS_PASS;

	class = classify_current_task();
	/* The mark is the classification. Socket storage, an allocation that cost ~2 µs of
	 * the ~2.5 µs this program took per socket (docs/benchmarks.md), is made here only for
	 * a socket of another network namespace, to say so should a privileged process
	 * rewrite its mark; DNS makes it later for the sockets that need it (redirect_dns). A
	 * socket whose mark is rewritten to one not ours has no profile: blocked. */
	if (bpf_get_netns_cookie(sk) != config_netns_cookie()) {
		state = bpf_sk_storage_get(&ks_sk_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!state)
			return KS_DROP; /* cannot mark it foreign: refuse the socket */
		state->profile_id = class.profile_id;
		state->reserved = KS_SK_FOREIGN_NETNS;
		/* See KS_MARK_BASE: the mark must not vouch for it. */
		class.profile_id = KS_PROFILE_NONE;
		class.app_slot = 0;
	}

	/* Steer by policy routing, not by binding: the mark selects the profile's table
	 * (default dev <tunnel>, unreachable fallback). Routing is looked up per packet,
	 * so a re-created tunnel is used at once, loopback still resolves locally, and no
	 * capability is needed to follow the tunnel (re-binding a bound socket needs
	 * CAP_NET_RAW, which protected apps do not have). */
	sk->mark = KS_MARK_BASE | class.app_slot << KS_MARK_SLOT_SHIFT | class.profile_id;
	return KS_PASS;
}

/* ---- cgroup/connect4/6 and sendmsg4/6: fail fast ---- */

struct ks_dst {
	__u8 addr[16]; /* IPv6 or IPv4-mapped */
	int is_v4;
	int is_loopback;
	__u16 port; /* host order */
};

/* ---- DNS: a protected app's queries go only to its profile's resolvers ---- */

static __always_inline int same_addr(const __u8 a[16], const __u8 b[16])
{
	__u32 x[4], y[4];

	__builtin_memcpy(x, a, 16);
	__builtin_memcpy(y, b, 16);
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline int is_mapped(const __u8 a[16])
{
	__u32 x[4];

	__builtin_memcpy(x, a, 16);
	return x[0] == 0 && x[1] == 0 && x[2] == bpf_htonl(0xffff);
}

/*
 * Port 53 to anything but one of the profile's resolvers (the local stub 127.0.0.53, a LAN
 * or ISP resolver, a hard-coded public one) is rewritten to the profile's first resolver
 * the socket can reach: an IPv4 one for IPv4 sockets and IPv4(-mapped) destinations, an
 * IPv6 one for IPv6 destinations (the kernel refuses a rewrite of an IPv6 destination to
 * an IPv4-mapped one, so without an IPv6 resolver IPv6 DNS is refused and resolvers fall
 * back to IPv4 at once). The socket remembers both addresses,
 * so recvmsg and getpeername show the app the address it asked. Returns 0 when the
 * destination may proceed (rewritten or not), -1 when there is no usable resolver.
 */
static __always_inline int redirect_dns(struct bpf_sock_addr *ctx, struct ks_dst *dst,
					struct ks_sk_state *state, const struct ks_profile *p,
					const int family)
{
	/* family is the hook's (a constant after inlining): the verifier refuses a write to
	 * user_ip6 in a v4 hook even on a path that cannot run, so the v4 and v6 rewrites
	 * must not both be compiled into one program. */
	int chosen = -1;

	if (dst->port != KS_DNS_PORT)
		return 0;
	for (int i = 0; i < KS_MAX_DNS; i++) {
		if (i >= (int)p->dns_count)
			break;
		if (same_addr(p->dns[i], dst->addr))
			return 0; /* already one of ours */
	}
	for (int i = 0; i < KS_MAX_DNS; i++) {
		int mapped;

		if (i >= (int)p->dns_count || chosen >= 0)
			break;
		mapped = is_mapped(p->dns[i]);
		if (family == AF_INET || dst->is_v4 ? mapped : !mapped)
			chosen = i;
	}
	if (chosen < 0 || chosen >= KS_MAX_DNS)
		return -1;

	__builtin_memcpy(state->dns_asked, dst->addr, 16);
	__builtin_memcpy(state->dns_used, p->dns[chosen], 16);
	state->reserved |= KS_SK_DNS_REDIRECTED;
	__builtin_memcpy(dst->addr, p->dns[chosen], 16);
	dst->is_v4 = is_mapped(dst->addr);
	dst->is_loopback = 0;
	if (family == AF_INET) {
		__u32 v4;

		__builtin_memcpy(&v4, dst->addr + 12, 4);
		ctx->user_ip4 = v4;
	} else {
		__u32 w[4];

		__builtin_memcpy(w, dst->addr, 16);
		ctx->user_ip6[0] = w[0];
		ctx->user_ip6[1] = w[1];
		ctx->user_ip6[2] = w[2];
		ctx->user_ip6[3] = w[3];
	}
	return 0;
}

/* The profile and app slot a socket's mark names, if it is one of ours and names a real
 * profile. Reading the mark costs a load from the socket, already in cache on this path;
 * the socket-storage lookup it replaces measured ~60 ns per packet here (docs/benchmarks.md). */
static __always_inline int class_from_mark(__u32 mark, struct ks_class *class)
{
	__u32 id = mark & KS_MARK_PROFILE_MASK;

	if ((mark & KS_MARK_TAG_MASK) != KS_MARK_BASE || id == KS_PROFILE_NONE ||
	    id >= KS_MAX_PROFILES)
		return 0;
	class->profile_id = id;
	class->app_slot = (mark & KS_MARK_SLOT_MASK) >> KS_MARK_SLOT_SHIFT;
	return 1;
}

/* A socket's profile (and app slot): from its mark when `use_mark` and the mark is ours,
 * else from its storage (returned, or 0), which also knows whether it was created in
 * another network namespace. A mark that is not ours: foreign netns, unclassified, or
 * rewritten by someone with CAP_NET_ADMIN; the storage has the whole story. */
static __always_inline struct ks_sk_state *
classify_socket(struct bpf_sock *sk, int use_mark, struct ks_class *class, __u32 *foreign_netns)
{
	struct ks_sk_state *state = 0;

	class->profile_id = KS_PROFILE_NONE;
	class->app_slot = 0;
	if (sk && use_mark && class_from_mark(sk->mark, class))
		return 0;
	if (sk)
		state = bpf_sk_storage_get(&ks_sk_state, sk, 0, 0);
	if (state) {
		class->profile_id = state->profile_id;
		*foreign_netns = state->reserved & KS_SK_FOREIGN_NETNS;
	}
	return state;
}

enum ks_sock_addr_hook { KS_HOOK_CONNECT, KS_HOOK_SENDMSG };

/* Refuses the calling task's operation with -err, counted and reported. `ev` carries
 * what the hook knows (hook, profile, destination); the task's part is filled in here. */
/* Counts a refused attempt of the current task and reports it as an event. */
static __always_inline void record_refusal(struct ks_event *ev, enum ks_reason reason)
{
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->reason = reason;
	count(ev->cgroup_id, ev->profile_id, reason, 0, 0);
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	report(ev);
}

static __always_inline int refuse(struct ks_event *ev, enum ks_reason reason, int err)
{
	record_refusal(ev, reason);
	bpf_set_retval(-err);
	return KS_DROP;
}

/* Refuses a connect or send to `asked` (the destination as the app gave it). The event is
 * built only here: allowed operations, the common case, pay nothing for it. */
static __always_inline int refuse_addr(struct bpf_sock_addr *ctx, const struct ks_dst *asked,
				       enum ks_sock_addr_hook hook, const int family,
				       __u32 profile_id, enum ks_reason reason, int err)
{
	struct ks_event ev = {};

	ev.profile_id = profile_id;
	ev.hook = hook == KS_HOOK_CONNECT ? (family == AF_INET ? KS_EV_CONNECT4 : KS_EV_CONNECT6)
					  : (family == AF_INET ? KS_EV_SENDMSG4 : KS_EV_SENDMSG6);
	ev.protocol = ctx->protocol;
	ev.family = asked->is_v4 ? 4 : 6;
	ev.port = asked->port;
	__builtin_memcpy(ev.addr, asked->addr, 16);
	return refuse(&ev, reason, err);
}

/* connect() and unconnected sendmsg(): refuse at once what egress would drop, so
 * applications get ENETUNREACH instead of a stalled connection. */
static __always_inline int judge_sock_addr(struct bpf_sock_addr *ctx, struct ks_dst *dst,
					   enum ks_sock_addr_hook hook, const int family)
{
	const struct ks_dst asked = *dst; /* redirect_dns may rewrite dst */
	struct ks_connect_facts facts = {};
	struct ks_connect_verdict verdict;
	const struct ks_profile *p = 0;
	struct ks_sk_state *state = 0;
	struct bpf_sock *sk = ctx->sk;
	struct ks_class class;

	state = classify_socket(sk, 1, &class, &facts.foreign_netns);
	facts.profile_id = class.profile_id;
	if (facts.profile_id != KS_PROFILE_NONE)
		p = profile_of(facts.profile_id);
	facts.profile_valid = p != 0;
	/* DNS keeps the server the app asked in the socket's storage, made at its first query
	 * (sock_create makes none for sockets of this namespace). */
	if (p && !facts.foreign_netns && dst->port == KS_DNS_PORT && sk && !state) {
		state = bpf_sk_storage_get(&ks_sk_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (state)
			state->profile_id = facts.profile_id;
		else
			return refuse_addr(ctx, &asked, hook, family, facts.profile_id,
					   KS_REASON_BLOCK_DNS, ENETUNREACH);
	}
	if (p && state && !facts.foreign_netns && redirect_dns(ctx, dst, state, p, family))
		return refuse_addr(ctx, &asked, hook, family, facts.profile_id, KS_REASON_BLOCK_DNS,
				   ENETUNREACH);
	facts.dst_is_loopback = dst->is_loopback;
	/* The connect canary is TCP only: ksrun's UDP canary must get through connect to
	 * reach the egress program. */
	facts.is_canary = hook == KS_HOOK_CONNECT && ctx->type == SOCK_STREAM && dst->is_loopback &&
			  dst->port == KS_CANARY_PORT;
	if (p) {
		facts.tunnel_ifindex = dst->is_v4 ? p->bind_ifindex_v4 : p->bind_ifindex_v6;
		/* allow_lan changes the outcome only when there is no tunnel to go through
		 * (with one, the destination is allowed either way, and routing and egress
		 * decide where it goes): skip the trie lookup, the dearest step of a send. */
		if (!dst->is_loopback && !facts.tunnel_ifindex)
			facts.dst_in_lan = lan_contains(facts.profile_id, dst->addr);
	}

	verdict = ks_judge_connect(&facts);
	if (ks_reason_allows(verdict.reason))
		return KS_PASS;
	return refuse_addr(ctx, &asked, hook, family, facts.profile_id, verdict.reason,
			   verdict.reason == KS_REASON_BLOCK_CANARY ? KS_CANARY_ERRNO
								    : ENETUNREACH);
}

static __always_inline void dst_from_v4(struct ks_dst *dst, __u32 addr_be, __u32 port_be)
{
	v4_mapped(dst->addr, addr_be);
	dst->is_v4 = 1;
	dst->is_loopback = is_v4_loopback(addr_be);
	dst->port = bpf_ntohs((__u16)port_be);
}

static __always_inline void dst_from_v6(struct ks_dst *dst, struct bpf_sock_addr *ctx)
{
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2],
	      w3 = ctx->user_ip6[3];

	__builtin_memcpy(dst->addr, &w0, 4);
	__builtin_memcpy(dst->addr + 4, &w1, 4);
	__builtin_memcpy(dst->addr + 8, &w2, 4);
	__builtin_memcpy(dst->addr + 12, &w3, 4);
	dst->port = bpf_ntohs((__u16)ctx->user_port);
	/* A v4-mapped destination on a dual-stack socket is IPv4 on the wire. */
	dst->is_v4 = w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff);
	if (dst->is_v4)
		dst->is_loopback = is_v4_loopback(w3);
	else
		dst->is_loopback = w0 == 0 && w1 == 0 && w2 == 0 && (w3 == 0 || w3 == bpf_htonl(1));
}

/* The app slot's row of the fast path on this CPU for a mark of ours (killswitch_abi.h), or
 * NULL: not our mark, no slot, no profile, or the row is another profile's. */
static __always_inline struct ks_fast_slot *fast_row(__u32 mark)
{
	__u32 profile_id = mark & KS_MARK_PROFILE_MASK;
	__u32 slot = (mark & KS_MARK_SLOT_MASK) >> KS_MARK_SLOT_SHIFT;
	__u32 row = KS_FAST_ROW(bpf_get_smp_processor_id(), slot);
	struct ks_fast_slot *fast;

	if ((mark & KS_MARK_TAG_MASK) != KS_MARK_BASE || slot == 0 || profile_id == KS_PROFILE_NONE)
		return 0;
	fast = bpf_map_lookup_elem(&ks_fast_slots, &row);
	if (!fast || fast->profile_id != profile_id)
		return 0;
	return fast;
}

/* connect() or sendmsg() to a destination that is neither loopback nor DNS, of a family one
 * of the profile's tunnels carries: allowed (ks_judge_connect says so too: a tunnel wins
 * before allow_lan is asked), known from the fast row alone. Everything else is judged
 * in full. */
static __always_inline int sock_addr_fast_pass(struct bpf_sock_addr *ctx, __u32 port_be,
					       __u32 family)
{
	struct bpf_sock *sk = ctx->sk;
	struct ks_fast_slot *fast;

	if (!sk || (__u16)port_be == bpf_htons(KS_DNS_PORT))
		return 0;
	fast = fast_row(sk->mark);
	return fast && (fast->families & family);
}

/* The wire family of an IPv6 hook's destination and whether it is loopback (dst_from_v6
 * without building the address). */
static __always_inline __u32 v6_family(struct bpf_sock_addr *ctx, int *is_loopback)
{
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2],
	      w3 = ctx->user_ip6[3];

	if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff)) {
		*is_loopback = is_v4_loopback(w3);
		return KS_FAMILY_V4;
	}
	*is_loopback = w0 == 0 && w1 == 0 && w2 == 0 && (w3 == 0 || w3 == bpf_htonl(1));
	return KS_FAMILY_V6;
}

static __always_inline int fast_pass4(struct bpf_sock_addr *ctx)
{
	return !is_v4_loopback(ctx->user_ip4) &&
	       sock_addr_fast_pass(ctx, ctx->user_port, KS_FAMILY_V4);
}

static __always_inline int fast_pass6(struct bpf_sock_addr *ctx)
{
	int is_loopback;
	__u32 family = v6_family(ctx, &is_loopback);

	return !is_loopback && sock_addr_fast_pass(ctx, ctx->user_port, family);
}

SEC("cgroup/connect4")
int ks_connect4(struct bpf_sock_addr *ctx)
{
	struct ks_dst dst = {};

	if (ctx->user_family != AF_INET)
		return KS_PASS; /* AF_UNSPEC: disconnect */
	if (fast_pass4(ctx))
		return KS_PASS;
	dst_from_v4(&dst, ctx->user_ip4, ctx->user_port);
	return judge_sock_addr(ctx, &dst, KS_HOOK_CONNECT, AF_INET);
}

SEC("cgroup/connect6")
int ks_connect6(struct bpf_sock_addr *ctx)
{
	struct ks_dst dst = {};

	if (ctx->user_family != AF_INET6)
		return KS_PASS;
	if (fast_pass6(ctx))
		return KS_PASS;
	dst_from_v6(&dst, ctx);
	return judge_sock_addr(ctx, &dst, KS_HOOK_CONNECT, AF_INET6);
}

SEC("cgroup/sendmsg4")
int ks_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct ks_dst dst = {};

	if (fast_pass4(ctx))
		return KS_PASS;
	dst_from_v4(&dst, ctx->user_ip4, ctx->user_port);
	return judge_sock_addr(ctx, &dst, KS_HOOK_SENDMSG, AF_INET);
}

SEC("cgroup/sendmsg6")
int ks_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct ks_dst dst = {};

	if (fast_pass6(ctx))
		return KS_PASS;
	dst_from_v6(&dst, ctx);
	return judge_sock_addr(ctx, &dst, KS_HOOK_SENDMSG, AF_INET6);
}

/* ---- recvmsg4/6, getpeername4/6: answers carry the address the app asked ---- */

static __always_inline void restore_dns_peer4(struct bpf_sock_addr *ctx)
{
	struct ks_sk_state *state;
	__u32 used, asked;

	if (!ctx->sk || ctx->user_port != bpf_htons(KS_DNS_PORT))
		return;
	state = bpf_sk_storage_get(&ks_sk_state, ctx->sk, 0, 0);
	if (!state || !(state->reserved & KS_SK_DNS_REDIRECTED))
		return;
	__builtin_memcpy(&used, state->dns_used + 12, 4);
	__builtin_memcpy(&asked, state->dns_asked + 12, 4);
	if (ctx->user_ip4 == used && is_mapped(state->dns_asked))
		ctx->user_ip4 = asked;
}

static __always_inline void restore_dns_peer6(struct bpf_sock_addr *ctx)
{
	struct ks_sk_state *state;
	__u32 used[4], asked[4];

	if (!ctx->sk || ctx->user_port != bpf_htons(KS_DNS_PORT))
		return;
	state = bpf_sk_storage_get(&ks_sk_state, ctx->sk, 0, 0);
	if (!state || !(state->reserved & KS_SK_DNS_REDIRECTED))
		return;
	__builtin_memcpy(used, state->dns_used, 16);
	__builtin_memcpy(asked, state->dns_asked, 16);
	if (ctx->user_ip6[0] == used[0] && ctx->user_ip6[1] == used[1] &&
	    ctx->user_ip6[2] == used[2] && ctx->user_ip6[3] == used[3]) {
		ctx->user_ip6[0] = asked[0];
		ctx->user_ip6[1] = asked[1];
		ctx->user_ip6[2] = asked[2];
		ctx->user_ip6[3] = asked[3];
	}
}

SEC("cgroup/recvmsg4")
int ks_recvmsg4(struct bpf_sock_addr *ctx)
{
	restore_dns_peer4(ctx);
	return KS_PASS;
}

SEC("cgroup/recvmsg6")
int ks_recvmsg6(struct bpf_sock_addr *ctx)
{
	restore_dns_peer6(ctx);
	return KS_PASS;
}

SEC("cgroup/getpeername4")
int ks_getpeername4(struct bpf_sock_addr *ctx)
{
	restore_dns_peer4(ctx);
	return KS_PASS;
}

SEC("cgroup/getpeername6")
int ks_getpeername6(struct bpf_sock_addr *ctx)
{
	restore_dns_peer6(ctx);
	return KS_PASS;
}

/* ---- cgroup/connect_unix: no name lookups through resolving services ---- */

/* The kernel's context behind struct bpf_sock_addr; CO-RE relocates these fields against
 * the running kernel's BTF. uaddrlen exists since Linux 6.7, with the unix hooks. */
struct bpf_sock_addr_kern {
	void *uaddr;
	__u32 uaddrlen;
} __attribute__((preserve_access_index));

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

/*
 * Linux 6.7+. libbpf 1.1 does not know this section name, so ksd sets the program type
 * and attach type itself, and loads the program only where the kernel has the hook.
 * The path is read from the kernel's copy of the address: user space cannot change it
 * any more once the hook runs.
 */
SEC("cgroup/connect_unix")
int ks_connect_unix(struct bpf_sock_addr *ctx)
{
	struct bpf_sock_addr_kern *kctx = bpf_cast_to_kern_ctx(ctx);
	const __u32 family_len = 2; /* offsetof(struct sockaddr_un, sun_path) */
	char path[KS_UNIX_PATH_BUF] = {};
	__u32 len = kctx->uaddrlen;
	struct ks_event ev = {.hook = KS_EV_CONNECT_UNIX};

	if (len <= family_len)
		return KS_PASS; /* unnamed */
	len -= family_len;
	if (len > KS_UNIX_PATH_MAX)
		len = KS_UNIX_PATH_MAX;
	/* Cannot read it: cannot tell, so refuse. */
	if (bpf_probe_read_kernel(path, KS_UNIX_PATH_MAX, (char *)kctx->uaddr + family_len) != 0 ||
	    ks_unix_path_refused(path, len)) {
		ev.profile_id = classify_current_task().profile_id;
		return refuse(&ev, KS_REASON_BLOCK_LOCAL_RESOLVER, EPERM);
	}
	return KS_PASS;
}

/* ---- Before Linux 6.7: the same refusal, from the security hook of unix connects ---- */

/* The kernel's unix socket and its bound address, as far as read here; CO-RE relocates
 * the offsets against the running kernel's BTF (struct unix_address lost a field in 5.17). */
struct sockaddr_un___ks {
	unsigned short sun_family;
	char sun_path[KS_UNIX_PATH_MAX];
} __attribute__((preserve_access_index));

struct unix_address___ks {
	int len; /* bytes of name used: sun_family, then the path (with its NUL if any) */
	struct sockaddr_un___ks name[];
} __attribute__((preserve_access_index));

struct unix_sock___ks {
	struct unix_address___ks *addr; /* NULL while unbound */
} __attribute__((preserve_access_index));

/*
 * Kernels without cgroup/connect_unix (Debian 12's 6.1, Ubuntu's 5.15 and 6.5) call
 * security_unix_stream_connect(sock, other, newsk) for every stream and seqpacket unix
 * connect; BPF_MODIFY_RETURN may replace the return value of any security_* function
 * (Linux 5.7+, no BPF LSM needed). This program is global, not per cgroup, so it looks
 * first at what is cheap and rare, the listening socket's name, and only for a resolving
 * service's socket asks whether the caller is protected. Judged here is the name the
 * service bound, not the path the caller passed: symlinks, "..", relative paths and other
 * mounts of the socket are all caught (stronger than the 6.7+ hook above). Resolvers
 * serve on stream sockets; datagram unix sends are not looked at (docs/kernels.md).
 */
/* Is `other` a resolving service's socket? Unreadable counts as yes: cannot tell, so the
 * caller decides as if it were (and only protected callers are refused). */
static __always_inline int is_resolver_socket(const struct unix_sock___ks *other)
{
	struct unix_address___ks *addr = 0;
	char path[KS_UNIX_PATH_BUF] = {};
	int len = 0;

	if (bpf_probe_read_kernel(&addr, sizeof(addr), &other->addr) != 0)
		return 1;
	if (!addr)
		return 0; /* unbound */
	if (bpf_probe_read_kernel(&len, sizeof(len), &addr->len) != 0 ||
	    bpf_probe_read_kernel(path, KS_UNIX_PATH_MAX, addr->name[0].sun_path) != 0)
		return 1;
	if (len <= (int)sizeof(unsigned short))
		return 0; /* unnamed */
	return ks_unix_path_refused(path, (__u32)len - sizeof(unsigned short));
}

SEC("fmod_ret/security_unix_stream_connect")
int ks_resolver_guard(__u64 *ctx)
{
	const struct unix_sock___ks *other = (const void *)ctx[1];
	const int earlier_verdict = (int)ctx[3]; /* of an LSM or another such program */
	const struct ks_cgroup_value *entry;
	struct ks_event ev = {.hook = KS_EV_CONNECT_UNIX};

	if (earlier_verdict != 0 || !is_resolver_socket(other))
		return earlier_verdict;
	entry = current_task_entry();
	if (!entry)
		return 0; /* not protected: the system's own lookups go on */
	ev.profile_id = entry->profile_id;
	record_refusal(&ev, KS_REASON_BLOCK_LOCAL_RESOLVER);
	return -EPERM;
}

/* Early exit: the pass path's tunnel is nearly always the first (a profile has one or two). */
static __always_inline int tunnel_in(const __u32 ifindexes[KS_MAX_TUNNELS_PER_PROFILE],
				     __u32 ifindex)
{
	if (ifindex == 0)
		return 0;
	for (int i = 0; i < KS_MAX_TUNNELS_PER_PROFILE; i++)
		if (ifindexes[i] == ifindex)
			return 1;
	return 0;
}

static __always_inline int tunnel_set_has(const struct ks_tunnel_set *set, __u32 ifindex)
{
	return tunnel_in(set->ifindex, ifindex);
}

/* ---- cgroup/setsockopt: no multicast group membership outside the tunnel ---- */

/* Copies the first bytes of the request into buf; returns how many (the kernel's buffer
 * holds at least 16 and at most a page; only optlen of them are the caller's). */
static __always_inline int copy_request(struct bpf_sockopt *ctx, __u8 buf[KS_JOIN_PARSE_BYTES])
{
	__u8 *optval = ctx->optval, *end = ctx->optval_end;
	int have;

	if (optval + KS_JOIN_PARSE_BYTES <= end) {
		__builtin_memcpy(buf, optval, KS_JOIN_PARSE_BYTES);
		have = KS_JOIN_PARSE_BYTES;
	} else if (optval + 20 <= end) {
		__builtin_memcpy(buf, optval, 20);
		have = 20;
	} else if (optval + 16 <= end) {
		__builtin_memcpy(buf, optval, 16);
		have = 16;
	} else if (optval + 8 <= end) {
		__builtin_memcpy(buf, optval, 8);
		have = 8;
	} else {
		return 0;
	}
	return ctx->optlen < have ? ctx->optlen : have;
}

/*
 * Every setsockopt of the protected tree passes here; only joins are judged (policy.h).
 * The kernel acts on the copy this program sees, not on user memory read again, so what
 * was judged is what is joined: a request longer than a page is the one case where the
 * kernel would read user memory anew (optlen 0 below), so a join that long is cut to the
 * longest join request (the kernel reads no further) and judged.
 */
SEC("cgroup/setsockopt")
int ks_setsockopt(struct bpf_sockopt *ctx)
{
	__u8 buf[KS_JOIN_PARSE_BYTES] = {};
	struct ks_join_facts facts = {};
	struct ks_class class;
	struct ks_join join;
	enum ks_reason reason;
	int have = copy_request(ctx, buf);

	if (!ks_parse_join(ctx->level, ctx->optname, ctx->optlen, buf, have, &join)) {
		/* Not ours to judge. Longer than a page: the program saw only the first page,
		 * and optlen 0 tells the kernel to use the caller's whole buffer. */
		if (ctx->optlen > (int)((__u8 *)ctx->optval_end - (__u8 *)ctx->optval))
			ctx->optlen = 0;
		return KS_PASS;
	}
	if (ctx->optlen > KS_JOIN_OPTLEN_MAX)
		ctx->optlen = KS_JOIN_OPTLEN_MAX;

	classify_socket(ctx->sk, 1, &class, &facts.foreign_netns);
	facts.profile_id = class.profile_id;
	facts.ifindex = join.ifindex;
	if (facts.profile_id != KS_PROFILE_NONE && !facts.foreign_netns) {
		const struct ks_tunnel_set *set =
		    bpf_map_lookup_elem(&ks_tunnel_sets, &facts.profile_id);

		facts.through_tunnel = set && tunnel_set_has(set, join.ifindex);
		facts.profile_valid = facts.through_tunnel || profile_of(facts.profile_id) != 0;
	}
	reason = ks_judge_join(&facts);
	if (ks_reason_allows(reason))
		return KS_PASS;
	{
		struct ks_event ev = {
		    .profile_id = facts.profile_id,
		    .ifindex = join.ifindex,
		    .hook = KS_EV_MCAST_JOIN,
		    .protocol = ctx->sk ? ctx->sk->protocol : 0,
		    .family = join.family,
		};

		__builtin_memcpy(ev.addr, join.group, 16);
		return refuse(&ev, reason, EPERM);
	}
}

/* ---- cgroup_skb/egress (the authority) and ingress ---- */

struct ks_pkt {
	__u8 peer[16]; /* remote address: destination on egress, source on ingress */
	int is_canary;
	int may_route_on; /* see ks_packet_facts */
	__u16 peer_port;  /* host order; 0 when not TCP/UDP */
	__u8 protocol;
	__u8 family;
};

/* The remote port of a TCP or UDP packet whose transport header starts at `offset`. */
static __always_inline __u16 peer_port(struct __sk_buff *skb, __u32 offset, __u8 protocol,
				       int egress)
{
	__u16 ports[2];

	if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
		return 0;
	if (bpf_skb_load_bytes(skb, offset, ports, sizeof(ports)))
		return 0;
	return bpf_ntohs(egress ? ports[1] : ports[0]);
}

/* Reads only what the judgement needs: the peer address for allow_lan and whether the
 * packet may be source-routed past it, and on loopback whether this is ksrun's UDP canary.
 * Returns 0 when the packet is not IP. */
static __always_inline int parse_packet(struct __sk_buff *skb, int egress, struct ks_pkt *pkt)
{
	__u16 port = 0;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 0;
		v4_mapped(pkt->peer, egress ? ip.daddr : ip.saddr);
		pkt->protocol = ip.protocol;
		pkt->family = 4;
		pkt->may_route_on = ip.ihl > 5; /* any option: LSRR/SSRR among them */
		pkt->peer_port = peer_port(skb, ip.ihl * 4, ip.protocol, egress);
		if (egress && skb->ifindex == KS_LOOPBACK_IFINDEX && ip.protocol == IPPROTO_UDP &&
		    ip.daddr == bpf_htonl(0x7f000001) &&
		    !bpf_skb_load_bytes(skb, ip.ihl * 4 + 2, &port, sizeof(port)))
			pkt->is_canary = bpf_ntohs(port) == KS_CANARY_PORT;
		return 1;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 0;
		__builtin_memcpy(pkt->peer, egress ? &ip6.daddr : &ip6.saddr, 16);
		pkt->protocol = ip6.nexthdr; /* extension headers: reported as they come */
		pkt->family = 6;
		/* Hop-by-hop and destination options come before a routing header, so the
		 * first header tells whether one can follow (RFC 8200, 4.1). */
		pkt->may_route_on = ip6.nexthdr == 0 || ip6.nexthdr == 43 || ip6.nexthdr == 60;
		pkt->peer_port = peer_port(skb, sizeof(ip6), ip6.nexthdr, egress);
		if (egress && skb->ifindex == KS_LOOPBACK_IFINDEX && ip6.nexthdr == IPPROTO_UDP &&
		    ip6.daddr.in6_u.u6_addr32[0] == 0 && ip6.daddr.in6_u.u6_addr32[1] == 0 &&
		    ip6.daddr.in6_u.u6_addr32[2] == 0 &&
		    ip6.daddr.in6_u.u6_addr32[3] == bpf_htonl(1) &&
		    !bpf_skb_load_bytes(skb, sizeof(ip6) + 2, &port, sizeof(port)))
			pkt->is_canary = bpf_ntohs(port) == KS_CANARY_PORT;
		return 1;
	}
	return 0;
}

static __always_inline int judge_skb(struct __sk_buff *skb, int egress)
{
	struct ks_packet_facts facts = {.ifindex = skb->ifindex};
	struct ks_pkt pkt = {};
	struct bpf_sock *sk = skb->sk;
	struct ks_class class = {};
	enum ks_reason reason;
	__u64 cgroup_id = 0;
	int parsed = 0;

	if (sk)
		sk = bpf_sk_fullsock(sk);
	classify_socket(sk, 1, &class, &facts.foreign_netns);
	facts.profile_id = class.profile_id;

	/* Every load here is a likely cache miss on the per-packet path (docs/benchmarks.md):
	 * the common case, a packet of a marked socket through its profile's tunnel, costs one
	 * array lookup, and the packet's bytes are read only where the verdict needs them (the
	 * canary on loopback, allow_lan off the tunnel). */
	if (facts.ifindex == KS_LOOPBACK_IFINDEX) {
		parsed = 1;
		parse_packet(skb, egress, &pkt);
		facts.is_canary = pkt.is_canary;
	} else if (facts.profile_id != KS_PROFILE_NONE && !facts.foreign_netns) {
		const struct ks_tunnel_set *set =
		    bpf_map_lookup_elem(&ks_tunnel_sets, &facts.profile_id);

		facts.through_tunnel = set && tunnel_set_has(set, skb->ifindex);
		/* ksd lists tunnels only for valid profiles (ks_tunnel_set). */
		facts.profile_valid = facts.through_tunnel || profile_of(facts.profile_id) != 0;
		if (!facts.through_tunnel && facts.profile_valid) {
			parsed = 1;
			if (parse_packet(skb, egress, &pkt)) {
				facts.may_route_on = pkt.may_route_on;
				facts.peer_in_lan = lan_contains(facts.profile_id, pkt.peer);
			}
		}
	}

	reason = ks_judge_packet(&facts);
	if (class.app_slot) {
		/* An array element, not a hash lookup by a cgroup id that takes two more
		 * pointer chases to find: per packet, this is most of the difference. */
		count_in(bpf_map_lookup_elem(&ks_app_counters, &class.app_slot), facts.profile_id,
			 reason, skb->len, 1);
	} else {
		cgroup_id = bpf_skb_cgroup_id(skb);
		count(cgroup_id, facts.profile_id, reason, skb->len, 1);
	}
	if (ks_reason_allows(reason))
		return KS_PASS;
	if (!cgroup_id)
		cgroup_id = bpf_skb_cgroup_id(skb); /* for the event */
	if (!parsed)
		parse_packet(skb, egress, &pkt); /* for the event */
	{
		struct ks_event ev = {
		    .cgroup_id = cgroup_id,
		    .profile_id = facts.profile_id,
		    .ifindex = skb->ifindex,
		    .bytes = skb->len,
		    .port = pkt.peer_port,
		    .hook = egress ? KS_EV_EGRESS : KS_EV_INGRESS,
		    .reason = reason,
		    .protocol = pkt.protocol,
		    .family = pkt.family,
		};

		__builtin_memcpy(ev.addr, pkt.peer, 16);
		report(&ev);
	}
	return KS_DROP;
}

/* Everything egress does for a packet the fast path below does not pass: a subprogram, so
 * that the fast path's code stays small and its stack frame empty. */
static __noinline int judge_egress(struct __sk_buff *skb)
{
	return judge_skb(skb, 1);
}

/*
 * The pass path of nearly every protected packet: a socket of ours with an app slot, through
 * one of its profile's tunnels. It reads the packet's mark (not the socket's: on this path
 * the kernel copied the socket's mark into the packet, and only CAP_NET_ADMIN or CAP_NET_RAW
 * can make them differ, the privilege that could rewrite the socket's mark anyway) and one
 * cache line, the app slot's row for this CPU in ks_fast_slots (killswitch_abi.h), where
 * it counts the packet. Everything else, blocked packets and their events included, takes
 * judge_egress, which decides from ks_tunnel_sets as before: a row that lags behind a
 * change of the tunnels can only send a packet there, never pass one the full path would
 * drop.
 */
SEC("cgroup_skb/egress")
int ks_egress(struct __sk_buff *skb)
{
	struct ks_fast_slot *fast = fast_row(skb->mark);

	if (fast && tunnel_in(fast->tunnel_ifindex, skb->ifindex)) {
		fast->allowed_packets++;
		fast->allowed_bytes += skb->len;
		return KS_PASS;
	}
	return judge_egress(skb);
}

static __noinline int judge_ingress(struct __sk_buff *skb)
{
	return judge_skb(skb, 0);
}

/* The same pass path for what arrives through a tunnel, by the receiving socket's mark (an
 * arriving packet's own mark is not the socket's). */
SEC("cgroup_skb/ingress")
int ks_ingress(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	struct ks_fast_slot *fast = 0;

	if (sk)
		sk = bpf_sk_fullsock(sk);
	if (sk)
		fast = fast_row(sk->mark);
	if (fast && tunnel_in(fast->tunnel_ifindex, skb->ifindex)) {
		fast->allowed_packets++;
		fast->allowed_bytes += skb->len;
		return KS_PASS;
	}
	return judge_ingress(skb);
}

char LICENSE[] SEC("license") = "GPL";
