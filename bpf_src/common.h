/* What every probe object shares: its loss counters, the keys of its in-flight state, and
 * the small steps each probe repeats (config lookup, start insert, record reserve).
 *
 * Include after vmlinux.h and bpf_helpers.h; it brings in events.h (records), config.h
 * (per-process config) and go_helpers.h (Go memory readers). Each object gets its own
 * copy of the maps declared here.
 */
#ifndef PYHTTP2PROBE_COMMON_H
#define PYHTTP2PROBE_COMMON_H

#include "events.h"
#include "config.h"
#include "go_helpers.h"

/* Loss and health counters of one object, indexed by the STAT_* constants of events.h.
 * A plain array with atomic adds, not per-CPU: the counters move only on anomalies (never
 * on a healthy request), so contention is nil, and user space reads one value per counter
 * with an ordinary lookup (DESIGN.md rule 7: losses are counted, never silent). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void stat_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		__sync_fetch_and_add(v, n);
}

static __always_inline void stat_inc(__u32 idx)
{
	stat_add(idx, 1);
}

/* Publish a slot: store `v` into *p after every store before it, so a reader that sees `v`
 * sees them too. The claimer holds the slot (a compare-and-swap made it SLOT_BUSY), so no
 * atomic exchange is needed: x86 keeps stores in order and loads in order (TSO), and the
 * x86 JIT emits BPF stores as plain moves; the barrier stops the compiler from moving
 * them. An exchange here cost ~20 ns of every start (bench, ablation). This agent is
 * x86-64 only (Go's amd64 register ABI). */
static __always_inline void publish_u64(__u64 *p, __u64 v)
{
	asm volatile("" ::: "memory");
	*(volatile __u64 *)p = v;
}

/* Key of per-goroutine state: it pairs the entry and the RETs of one synchronous call
 * (DESIGN.md rule 1), never work that crosses goroutines. */
struct g_key {
	__u32 tgid;
	__u32 _pad;
	__u64 g;
};

/* Key of a request in flight across goroutines: a stream id is unique only inside its
 * connection (DESIGN.md rule 1), so (tgid, connection pointer, stream id). */
struct stream_key {
	__u32 tgid;
	__u32 stream_id;
	__u64 conn;
};

/* A slot in a small ARRAY map for a pointer-sized key: Fibonacci hashing of the key's
 * bits, `bits` wide. Array lookups are inlined by the verifier (a few instructions), where an
 * LRU hash update or delete costs ~0.3 us on this VM: filters that only have to remember
 * the recent past (an end just reported) use slots; a collision overwrites, which can
 * only cost the filter its memory of one end, never make a wrong span. */
static __always_inline __u32 slot_of(__u64 key, __u32 bits)
{
	return (__u32)((key * 0x9E3779B97F4A7C15ULL) >> (64 - bits));
}

/* ---- Per-process config, in two tiers ----
 * Why: every hit looks its process's config up first, and a hash lookup costs ~50 ns of a
 * ~500 ns hit here (hashing, then cold buckets); an ARRAY slot is a few inlined instructions.
 * So each object's configs live in a slot table (1 << CONFIG_SLOT_BITS slots, by hash of the
 * key: the tgid, or tgid << 8 | flavor) whose slot holds (key, config), and a process whose
 * slot another live process holds goes in the object's hash map, as before.
 * A probe never sees a torn config: the agent (pyhttp2probe/config_table.py) writes a slot in
 * two steps, the config under key 0 first, then the same bytes with the key, so whoever reads
 * the key reads the config whole; it frees a slot by writing key 0, and reuses a freed slot
 * only after a grace period (a probe of the process that left may still be running). Key 0
 * is never a process's (tgid 0 is the idle task). 1024 slots for the processes one node
 * traces: two that share a slot cost the second one the hash lookup, nothing more. */
#ifndef CONFIG_SLOT_BITS /* tests build tiny tables; the agent reads the size from the map */
#define CONFIG_SLOT_BITS 10
#endif

#define CONFIG_MAPS(name, key_type, cfg_type, n)                       \
	struct {                                                       \
		__uint(type, BPF_MAP_TYPE_HASH);                       \
		__uint(max_entries, n);                                \
		__type(key, key_type);                                 \
		__type(value, cfg_type);                               \
	} name SEC(".maps");                                           \
	struct name##_slot {                                           \
		__u64 key;                                             \
		cfg_type cfg;                                          \
	};                                                             \
	struct {                                                       \
		__uint(type, BPF_MAP_TYPE_ARRAY);                      \
		__uint(max_entries, 1 << CONFIG_SLOT_BITS);            \
		__type(key, __u32);                                    \
		__type(value, struct name##_slot);                     \
	} name##_slots SEC(".maps")

/* The config under `key` (`hkey`: the same key as the hash map holds it), or NULL. */
static __always_inline void *config_find(void *slots, void *hash, __u64 key, const void *hkey)
{
	__u32 idx = slot_of(key, CONFIG_SLOT_BITS);
	__u64 *s = bpf_map_lookup_elem(slots, &idx);

	if (s && *s == key)
		return s + 1; /* the config follows its key */
	return bpf_map_lookup_elem(hash, hkey);
}

/* The calling process's config, or NULL, counted as STAT_NO_CONFIG (a probe hit in a
 * process that was not configured, or no longer is). */
static __always_inline void *config_lookup(void *slots, void *hash, __u64 key, const void *hkey)
{
	void *cfg = config_find(slots, hash, key, hkey);

	if (!cfg)
		stat_inc(STAT_NO_CONFIG);
	return cfg;
}

/* Config keyed by tgid (grpc_client, grpc_server): the maps CONFIG_MAPS(name, ...) made. */
#define CONFIG_OF_TGID(name, tgid)                                                  \
	({                                                                           \
		__u32 __tgid = (tgid);                                               \
		config_lookup(&name##_slots, &name, (__u64)__tgid, &__tgid);         \
	})

/* Process `tgid`'s config in `name`, or NULL, not counted (asked about another process, or
 * on a path whose own probes count it). */
#define CONFIG_FIND(name, tgid)                                                     \
	({                                                                           \
		__u32 __tgid = (tgid);                                               \
		config_find(&name##_slots, &name, (__u64)__tgid, &__tgid);           \
	})

/* Config keyed by tgid << 8 | flavor (http2: one process may link both flavors). */
static __always_inline void *config_of_flavor(void *slots, void *hash, __u32 tgid, __u8 flavor)
{
	__u64 key = ((__u64)tgid << 8) | flavor;

	return config_lookup(slots, hash, key, &key);
}

/* Record a start in an in-flight map. An entry already under `key` is stale (its request
 * never ended and its address was reused): the new start overwrites it, counted as
 * STAT_START_REUSED, so a new connection never inherits an old start. */
static __always_inline void inflight_start(void *map, const void *key, const void *val)
{
	if (bpf_map_update_elem(map, key, val, BPF_NOEXIST)) {
		stat_inc(STAT_START_REUSED);
		bpf_map_update_elem(map, key, val, BPF_ANY);
	}
}

/* A record's method (char[GO_STR_MAX]): from its Go string header when one was read
 * already (hdr: ptr, len; a window read), else through `chain` from `base`. A truncation
 * or a failed read goes into *flags. */
static __always_inline void read_method(__u64 base, const struct go_chain *chain,
					const __u64 *hdr, char *buf, __u16 *len, __u32 *flags)
{
	__u64 addr;
	int trunc = 0, r = -1;

	if (hdr)
		r = go_copy_string(hdr[0], hdr[1], buf, GO_STR_MAX, len, &trunc);
	else if (go_chain_addr(base, chain, &addr) == 0)
		r = go_read_string(addr, buf, GO_STR_MAX, len, &trunc);
	if (r)
		*flags |= SPAN_F_BAD_READ;
	else if (trunc)
		*flags |= SPAN_F_METHOD_TRUNCATED;
}

/* Reserve a zeroed record of `size` bytes (a sizeof, known at compile time) in ring
 * buffer `rb`; counts STAT_RINGBUF_FULL and returns NULL when it is full. Records are
 * 8-byte aligned: saying so lets clang zero them with 8-byte stores. */
static __always_inline void *reserve_zeroed(void *rb, __u64 size)
{
	void *rec = bpf_ringbuf_reserve(rb, size, 0);

	if (!rec) {
		stat_inc(STAT_RINGBUF_FULL);
		return NULL;
	}
	__builtin_memset(__builtin_assume_aligned(rec, 8), 0, size);
	return rec;
}

/* Submit a record without waking the drain, unless the ring is filling up.
 *
 * Waking user space is the costliest step of a probe here: ~12-17 us of the producing
 * program's time per wakeup on this nested VM (irq_work, then the epoll wakeup), against
 * ~0.6 us for a record without one; the default flag (0) wakes whenever the consumer has
 * caught up, which a drain thread keeping up does all the time: one wakeup per record.
 * So records go with BPF_RB_NO_WAKEUP and the drain finds them on its own: it polls with
 * a timeout (100 ms) and consumes every ring when the timeout passes (libbpf_loader's
 * RingBuffer.poll), so a record waits at most about one poll interval.
 * The wakeups kept are for a ring that is filling: while the unconsumed bytes are at least
 * RB_WAKE_DIV-th of the ring, ONE record per RB_WAKE_DIV-th of the ring produced forces
 * one (the first to cross that step of the producer position wins a compare-and-swap on
 * rb_woken_step), so a burst is drained before the ring overflows instead of at the next
 * timeout, and a wakeup the drain slept through (its batch pause) is repeated one step
 * later. Not one per record past the threshold: the drain consumes every 100-200 ms, so at
 * ~10 MB/s of records a 8 MiB ring passes 1/8 in every cycle, and forcing on each record
 * from there on cost ~1 us per record (an HTTP/2 server end measured 3.3 -> 2.3 us without).
 * 1/8: the other 7/8 absorb what arrives while the woken thread gets scheduled
 * (milliseconds on a loaded node). The size is read from the ring, so a resized ring
 * (Agent(ring_bytes=...)) keeps the ratio. Every object submits through here (one ring
 * each, so one rb_woken_step each). */
#define RB_WAKE_DIV 8

static __u64 rb_woken_step; /* producer position / step of the last forced wakeup */
static __u64 rb_step;       /* the ring's size / RB_WAKE_DIV, read once */

/* The flags for the record going into ring `rb` now (reserved, or about to be output): no
 * wakeup, unless the ring is filling (above). One query in the common case: the size is read
 * once, the producer position only past a step. */
static __always_inline __u64 rb_flags(void *rb)
{
	__u64 avail = bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA), step = rb_step, now, was;

	if (!step) {
		step = bpf_ringbuf_query(rb, BPF_RB_RING_SIZE) / RB_WAKE_DIV;
		rb_step = step;
	}
	if (step && avail >= step) {
		now = bpf_ringbuf_query(rb, BPF_RB_PROD_POS) / step;
		was = rb_woken_step;
		if (now != was && __sync_val_compare_and_swap(&rb_woken_step, was, now) == was)
			return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void submit_batched(void *rb, void *rec)
{
	bpf_ringbuf_submit(rec, rb_flags(rb));
}

#endif /* PYHTTP2PROBE_COMMON_H */
