/* Records staged per CPU and sent to the ring buffer packed, several per reservation.
 *
 * Why: a ring-buffer reservation and its submit cost ~120-190 ns of a ~600-800 ns call end
 * here (the ring's lock and producer position are shared by every CPU, and each record
 * writes fresh ring lines). Measured on the CPU-bound unary workload with records staged 8
 * at a time: gRPC client end 799 -> 655 ns (ablation, same run), server end ~470 -> ~410 ns.
 * The record stays as it is: an end writes it into this CPU's stage, and when the stage is
 * full one bpf_ringbuf_output sends them all behind a packed header (struct
 * rb_packed_head) that libbpf_loader unpacks into separate records, so Python sees exactly
 * what an unstaged end would have sent.
 *
 * Exclusive use: a stage is claimed by an atomic exchange of its busy word. Programs on one
 * CPU can interleave (a preempted probe, the flush below in an IPI), so one that finds the
 * stage claimed sends its record the ordinary way: staging never drops nor delays one.
 *
 * Bounded delay: a stage that is not full waits for the agent, which runs the object's
 * flush program (STAGE_FLUSHER, a SEC("raw_tp") program test-run on each CPU whose stage
 * holds records, BPF_F_TEST_RUN_ON_CPU) right before it drains the rings, every poll
 * (100 ms): a staged record reaches Python in the same drain as one sent directly would.
 * A full ring loses the whole pack, counted record by record (STAT_RINGBUF_FULL).
 */
#ifndef PYHTTP2PROBE_STAGE_H
#define PYHTTP2PROBE_STAGE_H

#include "common.h"

/* The first word of a packed ring record; libbpf_loader (RingBuffer) splits it into `count`
 * records of `item_size` bytes each (a multiple of 8), which follow the header. */
#define RB_PACKED 0x6b636170U /* "pack": no record type is this large */

struct rb_packed_head {
	__u32 magic;
	__u32 count;
	__u32 item_size;
	__u32 _pad;
};

/* 8 records per pack: one reservation instead of 8, in ~0.7 KiB of per-CPU memory for the
 * 80-byte client records; more would save little more and wait longer in a slow trickle. */
#define STAGE_N 8

/* A per-CPU stage of records of type `rec_type` in map `name`. */
#define STAGE_MAP(name, rec_type)                                           \
	struct name##_value {                                           \
		__u64 busy;                                             \
		struct rb_packed_head head;  /* head.count: staged */   \
		rec_type rec[STAGE_N];        /* follows head: sent with it */ \
	};                                                              \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                \
		__uint(max_entries, 1);                                 \
		__type(key, __u32);                                     \
		__type(value, struct name##_value);                     \
	} name SEC(".maps")

/* This CPU's stage of `map`, claimed; NULL when another program on this CPU holds it. */
static __always_inline void *stage_claim(void *map)
{
	__u32 zero = 0;
	__u64 *busy = bpf_map_lookup_elem(map, &zero);

	if (!busy || __sync_lock_test_and_set(busy, 1))
		return NULL;
	return busy;
}

static __always_inline void stage_release(__u64 *busy)
{
	publish_u64(busy, 0); /* after every write to the stage (common.h) */
}

/* Send what stage `sg` holds as one packed record into `rb`, and empty it. */
#define STAGE_SEND(sg, rb)                                                              \
	do {                                                                            \
		__u32 __n = (sg)->head.count;                                           \
		if (__n > STAGE_N)                                                      \
			__n = STAGE_N;                                                  \
		if (__n) {                                                              \
			(sg)->head.magic = RB_PACKED;                                   \
			(sg)->head.item_size = sizeof((sg)->rec[0]);                    \
			if (bpf_ringbuf_output(rb, &(sg)->head,                         \
					       sizeof((sg)->head) + __n * sizeof((sg)->rec[0]), \
					       rb_flags(rb)))                           \
				stat_add(STAT_RINGBUF_FULL, __n);                       \
		}                                                                       \
		(sg)->head.count = 0;                                                   \
	} while (0)

/* The record slot the next end writes into: the first free one (a full stage is sent at
 * once, so there always is one; the bound is for the verifier). */
static __always_inline __u32 stage_next(__u32 count)
{
	return count < STAGE_N ? count : STAGE_N - 1;
}

/* Record `n` of stage `sg` is written: count it, send the stage into `rb` when it is full,
 * give the stage back. */
#define STAGE_COMMIT(sg, n, rb)                            \
	do {                                               \
		(sg)->head.count = (n) + 1;                \
		if ((n) + 1 >= STAGE_N)                    \
			STAGE_SEND(sg, rb);                \
		stage_release(&(sg)->busy);                \
	} while (0)

/* The flush program of stage `map` (type `value`) into ring `rb`: the agent test-runs it
 * on a CPU to send what waits there. Returns the records sent (0 when the stage was
 * claimed by a program this run interrupted: the next poll sends them). */
#define STAGE_FLUSHER(prog, map, value, rb)                                    \
	SEC("raw_tp")                                                          \
	int prog(void *ctx)                                                    \
	{                                                                      \
		struct value *sg = stage_claim(&map);                          \
		__u32 n;                                                       \
									       \
		if (!sg)                                                       \
			return 0;                                              \
		n = sg->head.count;                                            \
		STAGE_SEND(sg, &rb);                                           \
		stage_release(&sg->busy);                                      \
		return n;                                                      \
	}

#endif /* PYHTTP2PROBE_STAGE_H */
