// SPDX-License-Identifier: GPL-2.0
/* The cost of each step our probes are made of, one program per step, each doing its step
 * REPS times per hit so the kernel's run_time_ns / run_cnt shows the step above the
 * program's fixed cost (p_empty). Attached one at a time at a Go function's entry by
 * bench/bench_bpf_primitives.py; nothing here is shipped. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define REPS 8

struct key16 {
	__u32 tgid;
	__u32 pad;
	__u64 ptr;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct key16);
	__type(value, __u64);
} lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct key16);
	__type(value, __u64);
} plain SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct key16);
} slots SEC(".maps");

__u64 sink;

/* Start-slot tables (bpf_src/start_slots.h): 48-byte slots, each hit at a new random place,
 * as request starts land: the large table's working set is all of it. */
struct slot48 {
	__u64 w[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct slot48);
} slots_16k SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, struct slot48);
} slots_512 SEC(".maps");

__u64 slot_seq;

static __always_inline int random_slots(void *map, __u32 bits)
{
	__u64 seq = slot_seq, acc = 0;
	struct slot48 *s;

	for (int i = 0; i < REPS; i++) {
		__u32 idx = (__u32)(((seq + i) * 0x9E3779B97F4A7C15ULL) >> (64 - bits));

		s = bpf_map_lookup_elem(map, &idx);
		if (s) {
			acc += __sync_val_compare_and_swap(&s->w[0], s->w[0], seq);
			s->w[1] = acc;
		}
	}
	slot_seq = seq + REPS;
	sink = acc;
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} events SEC(".maps");


SEC("uprobe")
int p_empty(struct pt_regs *ctx)
{
	return 0;
}

SEC("uprobe")
int p_read8(struct pt_regs *ctx)
{
	__u64 v, acc = 0;

	for (int i = 0; i < REPS; i++) {
		bpf_probe_read_user(&v, sizeof(v), (void *)(PT_REGS_SP(ctx) + 8 * i));
		acc += v;
	}
	sink = acc;
	return 0;
}

SEC("uprobe")
int p_read64(struct pt_regs *ctx)
{
	__u64 v[8], acc = 0;

	for (int i = 0; i < REPS; i++) {
		bpf_probe_read_user(v, sizeof(v), (void *)(PT_REGS_SP(ctx) + 8 * i));
		acc += v[i & 7];
	}
	sink = acc;
	return 0;
}

SEC("uprobe")
int p_ktime(struct pt_regs *ctx)
{
	__u64 acc = 0;

	for (int i = 0; i < REPS; i++)
		acc += bpf_ktime_get_ns();
	sink = acc;
	return 0;
}

SEC("uprobe")
int p_pid_tgid(struct pt_regs *ctx)
{
	__u64 acc = 0;

	for (int i = 0; i < REPS; i++)
		acc += bpf_get_current_pid_tgid();
	sink = acc;
	return 0;
}

SEC("uprobe")
int p_hash_lookup(struct pt_regs *ctx)
{
	__u32 k = bpf_get_current_pid_tgid() >> 32;
	__u64 acc = 0, *v;

	for (int i = 0; i < REPS; i++) {
		v = bpf_map_lookup_elem(&hash, &k);
		if (v)
			acc += *v;
		k += 1;
	}
	sink = acc;
	return 0;
}

/* One update and one delete of the same key per rep (a start and an end). */
static __always_inline int upd_del(void *map, struct pt_regs *ctx)
{
	struct key16 k = { .tgid = bpf_get_current_pid_tgid() >> 32 };
	__u64 v = 1;

	for (int i = 0; i < REPS; i++) {
		k.ptr = PT_REGS_SP(ctx) + 64 * i;
		bpf_map_update_elem(map, &k, &v, BPF_ANY);
		bpf_map_delete_elem(map, &k);
	}
	return 0;
}

SEC("uprobe")
int p_lru_upd_del(struct pt_regs *ctx)
{
	return upd_del(&lru, ctx);
}

SEC("uprobe")
int p_hash_upd_del(struct pt_regs *ctx)
{
	return upd_del(&plain, ctx);
}

SEC("uprobe")
int p_array_slot(struct pt_regs *ctx)
{
	struct key16 *s;
	__u64 acc = 0;

	for (int i = 0; i < REPS; i++) {
		__u32 idx = (__u32)(((PT_REGS_SP(ctx) + i) * 0x9E3779B97F4A7C15ULL) >> 51);

		s = bpf_map_lookup_elem(&slots, &idx);
		if (s) {
			s->ptr = acc;
			acc += s->tgid;
		}
	}
	sink = acc;
	return 0;
}

SEC("uprobe")
int p_ringbuf(struct pt_regs *ctx)
{
	for (int i = 0; i < REPS; i++) {
		__u64 *rec = bpf_ringbuf_reserve(&events, 336, 0);

		if (!rec)
			return 0;
		__builtin_memset(rec, 0, 336);
		bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
	}
	return 0;
}

SEC("uprobe")
int p_ringbuf_query(struct pt_regs *ctx)
{
	__u64 acc = 0;

	for (int i = 0; i < REPS; i++)
		acc += bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	sink = acc;
	return 0;
}

SEC("uprobe")
int p_slot_16k(struct pt_regs *ctx)
{
	return random_slots(&slots_16k, 14);
}

SEC("uprobe")
int p_slot_512(struct pt_regs *ctx)
{
	return random_slots(&slots_512, 9);
}
