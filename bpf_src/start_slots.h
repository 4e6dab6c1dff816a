/* In-flight starts in two tiers: an ARRAY of slots claimed by compare-and-swap first, the
 * object's LRU hash when the slot is taken.
 *
 * Why: a start insert and an end delete in an LRU hash cost ~0.4 us together on this VM
 * under load (bench_bpf_primitives), the largest item of a start; an array slot is a few
 * instructions and one atomic. Nothing else changes: the key is the request's (16 bytes:
 * struct inflight_key or struct stream_key, tgid first), the value what the start noted.
 *
 * A slot's tag word says who holds it: 0 free, SLOT_BUSY while its claimer writes it, else
 * the tag of the key stored in it (never 0 or SLOT_BUSY). The claimer wins the free slot
 * by cmpxchg(0 -> SLOT_BUSY), writes key and value, then publishes the tag (x86 keeps
 * stores in order, and an end reads the tag before the key). An end that finds its own
 * key releases the slot by cmpxchg(tag -> 0): of two ends racing for one request (a
 * repeated finish) exactly one wins, like the delete that decides it in the LRU tier.
 *
 * A live start is in one tier: a start looks at its slot first and overwrites a stale
 * entry of its own key there (an address reused after a request that never ended:
 * STAT_START_REUSED, as in the LRU tier), so a stale slot never hides a live LRU entry.
 * The LRU tier may still hold a stale entry of a key whose live start took its slot (a
 * request that never ended, before): so an end that misses the slot asks its object's
 * repeat filter first (an end repeated after the one that took the start) and only then
 * the LRU tier (grpc_client.bpf.c, grpc_server.bpf.c), and a real end finds its start in
 * the slot before any stale entry.
 * A slot held by a request that never ends stays taken while its process lives (those
 * keys hash to the LRU tier: slower, still exact); a process that is no longer traced
 * (its config gone) gives its slots back to the next start that hashes there, and the
 * agent sweeps them all once it detaches it (START_SLOTS_SWEEPER, below).
 */
#ifndef PYHTTP2PROBE_START_SLOTS_H
#define PYHTTP2PROBE_START_SLOTS_H

#include "common.h"

#define SLOT_BUSY 1ULL

struct start_slot {
	__u64 tag;
	__u64 key[2];   /* the request's key: word 0 starts with its tgid */
	__u64 val[3];   /* what its start noted (start_ns first) */
};

/* A slot table: 16k slots (768 KiB) keep collisions with the requests in flight on a
 * node (hundreds to a few thousand) at a few percent; those take the LRU tier. */
#ifndef START_SLOT_BITS /* tests/test_slot_tables.py builds with tiny tables */
#define START_SLOT_BITS 14
#endif
#define START_SLOTS(name)                                   \
	struct {                                            \
		__uint(type, BPF_MAP_TYPE_ARRAY);           \
		__uint(max_entries, 1 << START_SLOT_BITS);  \
		__type(key, __u32);                         \
		__type(value, struct start_slot);           \
	} name SEC(".maps")

static __always_inline __u64 slot_tag(const __u64 *key)
{
	__u64 t = (key[0] * 0x9E3779B97F4A7C15ULL) ^ key[1];

	return t > SLOT_BUSY ? t : t + 2;
}

static __always_inline struct start_slot *slot_at(void *slots, __u64 tag)
{
	__u32 idx = slot_of(tag, START_SLOT_BITS);

	return bpf_map_lookup_elem(slots, &idx);
}

static __always_inline int slot_holds(const struct start_slot *s, __u64 tag, const __u64 *key)
{
	return s->tag == tag && s->key[0] == key[0] && s->key[1] == key[1];
}

/* Note a start: `key` (16 bytes) -> `val` (24 bytes). `cfg_slots` and `cfg_map` are the
 * object's config maps keyed by tgid (common.h CONFIG_MAPS): a slot whose owner has no
 * config left is free to take (NULL, for an object whose config has another key: only the
 * sweeper frees such slots). */
static __always_inline void slot_start(void *slots, void *lru, void *cfg_slots, void *cfg_map,
				       const void *key, const void *val)
{
	const __u64 *k = key, *v = val;
	__u64 tag = slot_tag(k), cur;
	struct start_slot *s = slot_at(slots, tag);
	__u32 owner;

	if (!s)
		goto lru;
	cur = s->tag;
	if (cur == tag && s->key[0] == k[0] && s->key[1] == k[1]) {
		s->val[0] = v[0]; /* a stale start of this very key: the new one replaces it */
		s->val[1] = v[1];
		s->val[2] = v[2];
		stat_inc(STAT_START_REUSED);
		return;
	}
	if (cur != 0) {
		owner = (__u32)s->key[0];
		if (cur == SLOT_BUSY || !cfg_map ||
		    config_find(cfg_slots, cfg_map, owner, &owner))
			goto lru; /* held by a live process's request (or no tgid-keyed config) */
	}
	if (__sync_val_compare_and_swap(&s->tag, cur, SLOT_BUSY) != cur)
		goto lru;
	s->key[0] = k[0];
	s->key[1] = k[1];
	s->val[0] = v[0];
	s->val[1] = v[1];
	s->val[2] = v[2];
	publish_u64(&s->tag, tag); /* after the key and value */
	return;
lru:
	inflight_start(lru, key, val);
}

/* The slot holding the start of `key` (its value: ->val), or NULL: then look for it in the
 * LRU tier, after the repeat filter (above). */
static __always_inline struct start_slot *slot_get(void *slots, const void *key)
{
	__u64 tag = slot_tag(key);
	struct start_slot *s = slot_at(slots, tag);

	return s && slot_holds(s, tag, key) ? s : NULL;
}

/* Take the start slot_get found: 0 when this end took it, -1 when a racing end of the same
 * request took it first. */
static __always_inline int slot_release(struct start_slot *s, const void *key)
{
	__u64 tag = slot_tag(key);

	return __sync_val_compare_and_swap(&s->tag, tag, 0) == tag ? 0 : -1;
}

/* Forget the start of `key`, in whichever tier it is: a request that will have no end. */
static __always_inline void slot_drop(void *slots, void *lru, const void *key)
{
	struct start_slot *s = slot_get(slots, key);

	if (s)
		slot_release(s, key);
	else
		bpf_map_delete_elem(lru, key);
}

/* ---- Giving back the slots of a process no longer traced ----
 * The agent runs the object's sweeper (a SEC("syscall") program, by BPF_PROG_TEST_RUN) for
 * the tgid once the process is detached: a process killed mid-request never runs the ends
 * that would free its slots. It frees each slot that process holds by compare-and-swap, so
 * it never frees a slot a live process took meanwhile. One run sweeps SLOT_SWEEP_CHUNK
 * slots from `first` (a plain bounded loop, not bpf_loop, which needs kernel 5.17); the
 * agent runs it once per chunk. Returns the slots it freed. */
#define SLOT_SWEEP_CHUNK 1024

struct slot_sweep {
	__u32 tgid;
	__u32 first;  /* a multiple of SLOT_SWEEP_CHUNK */
};

static __always_inline int slot_free_if_of(struct start_slot *s, __u32 tgid)
{
	__u64 cur;

	if (!s)
		return 0;
	cur = s->tag;
	return cur > SLOT_BUSY && (__u32)s->key[0] == tgid &&
	       __sync_val_compare_and_swap(&s->tag, cur, 0) == cur;
}

#define START_SLOTS_SWEEPER(prog, slots_map)                                  \
	SEC("syscall")                                                        \
	int prog(struct slot_sweep *sw)                                       \
	{                                                                     \
		__u32 tgid = sw->tgid, first = sw->first, idx;                \
		int freed = 0;                                                \
									      \
		for (__u32 i = 0; i < SLOT_SWEEP_CHUNK; i++) {                \
			idx = first + i;                                      \
			freed += slot_free_if_of(bpf_map_lookup_elem(&slots_map, &idx), \
						 tgid);                       \
		}                                                             \
		return freed;                                                 \
	}

#endif /* PYHTTP2PROBE_START_SLOTS_H */
