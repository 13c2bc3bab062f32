// SPDX-License-Identifier: GPL-2.0
/*
 * One read that lists every process with its cgroup, for `ksctl list`: a task iterator
 * writes one struct ks_task_cgroup per process (thread group leader). Reading each app's
 * cgroup.procs instead costs three system calls per app and a walk under the kernel's
 * css_set lock (about 14 us per app on the test machine, most of a 10,000-app list).
 *
 * A second iterator finds the processes that run a given executable, for ksrun's
 * single-instance check: reading every /proc/PID/exe instead costs a system call per
 * process (0.45 ms of a launch here with ~150 processes, tens of ms with 10,000 apps).
 *
 * A separate object from the enforcement programs on purpose: it needs kernel BTF and a
 * task iterator (Linux 5.8+), and whether it loads must never decide whether enforcement
 * does. ksd loads it at start for launches and again on the first list (each user its own
 * copy), and falls back to cgroup.procs and /proc when it cannot.
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

struct inode {
	unsigned long i_ino;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct mm_struct {
	struct file *exe_file;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	struct css_set *cgroups;
	struct mm_struct *mm;
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

/* The inode number of the executable ks_task_copies looks for: set by ksd before each walk
 * (this object's .bss, mapped into ksd; the list's copy of the object never runs it). */
__u64 copies_of_inode;

/* One ks_task_cgroup per process whose executable has the inode number copies_of_inode.
 * Only a pre-filter: the number alone does not name a file (another file system may use it
 * too), so ksd checks each process it reports by its /proc/PID/exe as before. */
SEC("iter/task")
int ks_task_copies(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct ks_task_cgroup rec = {};
	struct mm_struct *mm;
	struct file *exe;

	if (!task || task->pid != task->tgid)
		return 0;
	/* Kernel threads and exiting processes have no mm, a process may have dropped its
	 * executable; plain loads again (a load through a null BTF pointer reads 0). */
	mm = task->mm;
	if (!mm)
		return 0;
	exe = mm->exe_file;
	if (!exe || exe->f_inode->i_ino != copies_of_inode)
		return 0;
	rec.cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	rec.pid = (__u32)task->tgid;
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
