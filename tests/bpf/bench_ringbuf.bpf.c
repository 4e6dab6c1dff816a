// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Bench-only producer: BPF_PROG_TEST_RUN with repeat=N runs this socket filter N times,
 * each run emitting RECORDS_PER_RUN call_event records, to drive the ring buffer hard. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "calltrace.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define RECORDS_PER_RUN 16

__u64 dropped = 0;                 /* .bss: reservation failures */
__u64 seq SEC(".data.seq") = 0;    /* own map, so the two counters never share a layout */

/* 64 MiB: ~500k records, so one fill-then-drain round measures the drain, not the ends. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024 * 1024);
} events SEC(".maps");

SEC("socket")
int produce(struct __sk_buff *skb)
{
	for (int i = 0; i < RECORDS_PER_RUN; i++) {
		struct call_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

		if (!e) {
			__sync_fetch_and_add(&dropped, 1);
			return 0;
		}
		e->pid = 1;
		e->tid = i;
		e->ktime_ns = __sync_fetch_and_add(&seq, 1);
		e->cookie = i;
		e->ip = 0;
		e->rax = i;
		e->rbx = 2 * i;
		e->rcx = 0;
		e->rdi = 0;
		e->rsi = 0;
		e->r8 = 0;
		e->r9 = 0;
		e->r10 = 0;
		e->r11 = 0;
		e->r14 = 0;
		e->rsp = 0;
		bpf_ringbuf_submit(e, 0);
	}
	return 0;
}

/* A packed record (libbpf_loader unpacks: bpf_src/stage.h's format), then a plain one, then
 * one whose header claims more items than it holds (delivered whole). */
#define PACKED_MAGIC 0x6b636170U
#define PACKED_N 4

struct packed {
	__u32 magic;
	__u32 count;
	__u32 item_size;
	__u32 _pad;
	struct call_event rec[PACKED_N];
};

struct packed pack = {};

SEC("socket")
int produce_packed(struct __sk_buff *skb)
{
	struct call_event *e;

	pack.magic = PACKED_MAGIC;
	pack.count = PACKED_N;
	pack.item_size = sizeof(struct call_event);
	for (int i = 0; i < PACKED_N; i++) {
		pack.rec[i].tid = i;
		pack.rec[i].ktime_ns = __sync_fetch_and_add(&seq, 1);
	}
	bpf_ringbuf_output(&events, &pack, sizeof(pack), 0);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->tid = 100;
	e->ktime_ns = __sync_fetch_and_add(&seq, 1);
	bpf_ringbuf_submit(e, 0);
	pack.count = PACKED_N + 1; /* more than follow: not unpacked */
	bpf_ringbuf_output(&events, &pack, sizeof(pack), 0);
	return 0;
}
