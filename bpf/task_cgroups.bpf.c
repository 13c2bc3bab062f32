// SPDX-License-Identifier: GPL-2.0
/*
 * One read that lists every process with its cgroup, for `ksctl list`: a task iterator
 * writes one struct ks_task_cgroup per process (thread group leader). Reading each app's
 * cgroup.procs instead costs three system calls per app and a walk under the kernel's
 * css_set lock (about 14 us per app on the test machine, most of a 10,000-app list).
 *
 * A separate object from the enforcement programs on purpose: it needs kernel BTF and a
 * task iterator (Linux 5.8+), and whether it loads must never decide whether enforcement
 * does. ksd loads it on the first list and falls back to cgroup.procs when it cannot.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "killswitch_abi.h"

/* The kernel's types, only the fields read here; CO-RE relocates them against the
 * running kernel's BTF. */
struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

struct seq_file;
struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
} __attribute__((preserve_access_index));

SEC("iter/task")
int ks_task_cgroups(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct ks_task_cgroup rec = {};

	if (!task)
		return 0; /* the end of the iteration */
	/* One record per process, as cgroup.procs lists them: threads share the leader's
	 * cgroup (cgroup v2 domain cgroups). */
	if (task->pid != task->tgid)
		return 0;
	/* Plain loads, not BPF_CORE_READ: the iterator's task is a BTF pointer, so the
	 * verifier turns each load (and each of this chain's) into an inline load that
	 * cannot fault. BPF_CORE_READ made each a bpf_probe_read_kernel call: seven per
	 * task, a quarter of a 10,000-app list's CPU time. */
	rec.cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	rec.pid = (__u32)task->tgid;
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
