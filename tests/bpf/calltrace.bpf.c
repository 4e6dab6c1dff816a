// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* calltrace: a generic uprobe that reports every hit with its registers.
 * Used by the loader's tests and demo; knows nothing about what it is attached to. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "calltrace.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set through .rodata before load: only report this process (0 = every process). */
const volatile __u32 target_tgid = 0;

/* Reservation failures: losses are counted, never silent. */
__u64 dropped = 0;

/* 4 MiB holds ~32k 120-byte records (+8 byte header each): several ms of bursts at
 * the ~10 µs/hit uprobe cost measured here, far longer than a 100 ms poll tick needs. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} events SEC(".maps");

SEC("uprobe")
int trace_call(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct call_event *e;

	if (target_tgid && tgid != target_tgid)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&dropped, 1);
		return 0;
	}
	e->pid = tgid;
	e->tid = (__u32)id;
	e->ktime_ns = bpf_ktime_get_ns();
	e->cookie = bpf_get_attach_cookie(ctx);
	e->ip = ctx->ip;
	e->rax = ctx->ax;
	e->rbx = ctx->bx;
	e->rcx = ctx->cx;
	e->rdi = ctx->di;
	e->rsi = ctx->si;
	e->r8 = ctx->r8;
	e->r9 = ctx->r9;
	e->r10 = ctx->r10;
	e->r11 = ctx->r11;
	e->r14 = ctx->r14;
	e->rsp = ctx->sp;
	bpf_ringbuf_submit(e, 0);
	return 0;
}
