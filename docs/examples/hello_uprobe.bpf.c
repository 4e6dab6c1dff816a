// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* hello_uprobe: report every hit of its uprobes in one process, through a ring buffer. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "hello_uprobe.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u32 target_tgid = 0;  /* .rodata: set from Python before load */
__u64 dropped = 0;                     /* .bss: records lost to a full ring buffer */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

SEC("uprobe")
int hello(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct hello_event *e;

	if (tgid != target_tgid)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&dropped, 1);
		return 0;
	}
	e->pid = tgid;
	e->cookie = bpf_get_attach_cookie(ctx);
	e->ktime_ns = bpf_ktime_get_ns();
	e->rax = ctx->ax;
	e->goroutine = ctx->r14;
	bpf_ringbuf_submit(e, 0);
	return 0;
}
