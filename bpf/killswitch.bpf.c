// SPDX-License-Identifier: GPL-2.0
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "killswitch_abi.h"
SEC("cgroup_skb/egress") int ks_egress(struct __sk_buff *skb) { return 1; }
char LICENSE[] SEC("license") = "GPL";
