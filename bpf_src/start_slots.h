/* In-flight starts in three tiers: a small ARRAY of slots claimed by compare-and-swap first,
 * a large one when that slot is taken, the object's LRU hash when both are.
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
 * The gRPC client's end releases it by cmpxchg(tag -> tag | SLOT_ENDED) instead
 * (slot_end): the slot is free for any start, and until one takes it the key stays there,
 * so a repeat of the end finds it (slot_ended) with no write of its own elsewhere; its
 * repeat filter (a slot by call, written on every end at a random place: a cold line) is
 * left to calls of the LRU tier. Not the gRPC server's: its repeat (a second writeStatus)
 * must be told for a while after the end, and a warm table's slot is soon taken again;
 * its filter by goroutine stays (grpc_server.bpf.c end_repeats).
 *
 * Why the small table first: every start claims a slot at a new random place, so a large
 * table's working set is all of it (768 KiB, 192 vmalloc'd 4 KiB pages): a cache and TLB
 * miss on most starts. The small one (512 slots, 24 KiB) stays warm and holds the requests
 * in flight on a quiet node; the large one takes the rest. Measured on the HTTP/2 server
 * start (bench/, same-run ablation): 16k slots alone ~580 ns, 512 alone ~360 ns.
 *
 * A live start is in one tier: a start looks at its slot in each tier in order and takes
 * the first that is free or holds a stale entry of its own key (an address reused after a
 * request that never ended: STAT_START_REUSED, as in the LRU tier), so a stale entry never
 * hides a live one in a later tier, and an end looks in the same order.
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
#define SLOT_ENDED (1ULL << 63)  /* a tag's bit: its request ended (never set in a key's tag) */

struct start_slot {
	__u64 tag;
	__u64 key[2];   /* the request's key: word 0 starts with its tgid */
	__u64 val[3];   /* what its start noted (start_ns first) */
};

/* A slot table pair: `hot_##name` (512 slots, 24 KiB: kmalloc'd, warm) first, then `name`
 * (16k slots, 768 KiB), which keeps collisions with the requests in flight on a node
 * (hundreds to a few thousand) at a few percent; those take the LRU tier. */
#ifndef START_SLOT_BITS /* tests/test_slot_tables.py builds with tiny tables */
#define START_SLOT_BITS 14
#endif
#ifndef HOT_SLOT_BITS
#define HOT_SLOT_BITS 9
#endif

/* A table pair `hot_##name` (1 << hot_bits slots) and `name` (1 << bits) of `slot_type`:
 * struct start_slot, or a bigger slot that begins as it does (tag, then the 16-byte key:
 * http2.bpf.c's, whose start sits whole in the slot), which every helper below reads. */
#define SLOT_TABLES(name, slot_type, hot_bits, bits)                                   \
	_Static_assert(__builtin_offsetof(slot_type, key) ==                           \
		       __builtin_offsetof(struct start_slot, key),                     \
		       #slot_type " begins as struct start_slot");                     \
	struct {                                                                       \
		__uint(type, BPF_MAP_TYPE_ARRAY);                                      \
		__uint(max_entries, 1 << (hot_bits));                                  \
		__type(key, __u32);                                                    \
		__type(value, slot_type);                                              \
	} hot_##name SEC(".maps");                                                     \
	struct {                                                                       \
		__uint(type, BPF_MAP_TYPE_ARRAY);                                      \
		__uint(max_entries, 1 << (bits));                                      \
		__type(key, __u32);                                                    \
		__type(value, slot_type);                                              \
	} name SEC(".maps")

#define START_SLOTS(name) SLOT_TABLES(name, struct start_slot, HOT_SLOT_BITS, START_SLOT_BITS)

/* Both tables of a pair, in the order starts and ends look at them. */
#define SLOTS(name) &hot_##name, &name

static __always_inline __u64 slot_tag(const __u64 *key)
{
	__u64 t = ((key[0] * 0x9E3779B97F4A7C15ULL) ^ key[1]) & ~SLOT_ENDED;

	return t > SLOT_BUSY ? t : t + 2;
}

/* Slot `tag` of a table of 1 << bits slots (of any SLOT_TABLES slot type). */
static __always_inline void *slot_at(void *slots, __u64 tag, __u32 bits)
{
	__u32 idx = slot_of(tag, bits);

	return bpf_map_lookup_elem(slots, &idx);
}

static __always_inline int slot_holds(const struct start_slot *s, __u64 tag, const __u64 *key)
{
	return s->tag == tag && s->key[0] == key[0] && s->key[1] == key[1];
}

/* Put a start in slot `s` when it is free (or ended, or its owner is no longer traced) or
 * holds a stale start of this very key: 1 when it is there now, 0 when the slot is
 * another's. */
static __always_inline int slot_claim(struct start_slot *s, __u64 tag, const __u64 *k,
				      const __u64 *v, void *cfg_slots, void *cfg_map)
{
	__u64 cur;
	__u32 owner;

	if (!s)
		return 0;
	cur = s->tag;
	if (cur == tag && s->key[0] == k[0] && s->key[1] == k[1]) {
		s->val[0] = v[0]; /* a stale start of this very key: the new one replaces it */
		s->val[1] = v[1];
		s->val[2] = v[2];
		stat_inc(STAT_START_REUSED);
		return 1;
	}
	if (cur != 0 && !(cur & SLOT_ENDED)) {
		owner = (__u32)s->key[0];
		if (cur == SLOT_BUSY || !cfg_map ||
		    config_find(cfg_slots, cfg_map, owner, &owner))
			return 0; /* held by a live process's request (or no tgid-keyed config) */
	}
	if (__sync_val_compare_and_swap(&s->tag, cur, SLOT_BUSY) != cur)
		return 0;
	s->key[0] = k[0];
	s->key[1] = k[1];
	s->val[0] = v[0];
	s->val[1] = v[1];
	s->val[2] = v[2];
	publish_u64(&s->tag, tag); /* after the key and value */
	return 1;
}

/* Note a start: `key` (16 bytes) -> `val` (24 bytes), in the first tier that takes it
 * (`hot`, `slots`: a START_SLOTS pair, SLOTS(name)). `cfg_slots` and `cfg_map` are the
 * object's config maps keyed by tgid (common.h CONFIG_MAPS): a slot whose owner has no
 * config left is free to take (NULL, for an object whose config has another key: only the
 * sweeper frees such slots). */
static __always_inline void slot_start(void *hot, void *slots, void *lru, void *cfg_slots,
				       void *cfg_map, const void *key, const void *val)
{
	__u64 tag = slot_tag(key);

	if (slot_claim(slot_at(hot, tag, HOT_SLOT_BITS), tag, key, val, cfg_slots, cfg_map) ||
	    slot_claim(slot_at(slots, tag, START_SLOT_BITS), tag, key, val, cfg_slots, cfg_map))
		return;
	inflight_start(lru, key, val);
}

/* Claim slot `s` (any slot type that begins as struct start_slot does) to be filled in
 * place, for a start of `key` (tag: slot_tag(key)): when it is free (or ended), or holds a
 * stale start of this very key (STAT_START_REUSED). 1: it is SLOT_BUSY now, the caller's
 * to fill and publish (publish_u64(tag)); 0: another's. No owner check (slot_claim's): for objects whose
 * config has another key, whose slots only the sweeper frees. */
static __always_inline int slot_take(void *s, __u64 tag, const void *key)
{
	__u64 *word = s, cur;

	if (!s)
		return 0;
	cur = *word;
	if (cur != 0 && !(cur & SLOT_ENDED) && !slot_holds(s, tag, key))
		return 0;
	if (__sync_val_compare_and_swap(word, cur, SLOT_BUSY) != cur)
		return 0;
	if (cur && !(cur & SLOT_ENDED))
		stat_inc(STAT_START_REUSED);
	return 1;
}

/* The slot holding `key` in table `hot` (1 << hot_bits slots), else in `slots` (1 << bits),
 * else NULL. Any slot type that begins as struct start_slot does (tag, then the 16-byte
 * key): http2.bpf.c's, whose values are bigger. */
static __always_inline void *slot_find(void *hot, __u32 hot_bits, void *slots, __u32 bits,
				       const void *key)
{
	__u64 tag = slot_tag(key);
	struct start_slot *s = slot_at(hot, tag, hot_bits);

	if (s && slot_holds(s, tag, key))
		return s;
	s = slot_at(slots, tag, bits);
	return s && slot_holds(s, tag, key) ? s : NULL;
}

/* The slot holding the start of `key` (its value: ->val), in either table of the pair, or
 * NULL: then look for it in the LRU tier, after the repeat filter (above). */
static __always_inline struct start_slot *slot_get(void *hot, void *slots, const void *key)
{
	return slot_find(hot, HOT_SLOT_BITS, slots, START_SLOT_BITS, key);
}

/* Take the start slot_get found: 0 when this end took it, -1 when a racing end of the same
 * request took it first. */
static __always_inline int slot_release(struct start_slot *s, const void *key)
{
	__u64 tag = slot_tag(key);

	return __sync_val_compare_and_swap(&s->tag, tag, 0) == tag ? 0 : -1;
}

/* Take the start slot_get found and leave its key marked ended (the slot is free for any
 * start): 0 when this end took it, -1 when a racing end of the same request took it first. */
static __always_inline int slot_end(struct start_slot *s, const void *key)
{
	__u64 tag = slot_tag(key);

	return __sync_val_compare_and_swap(&s->tag, tag, tag | SLOT_ENDED) == tag ? 0 : -1;
}

/* Whether a slot of the pair still holds `key` marked ended (slot_end): the end of that
 * request already ran, and no start took the slot since. */
static __always_inline int slot_ended(void *hot, void *slots, const void *key)
{
	__u64 tag = slot_tag(key); /* where: the live tag; what: the ended one */
	struct start_slot *s = slot_at(hot, tag, HOT_SLOT_BITS);

	if (s && slot_holds(s, tag | SLOT_ENDED, key))
		return 1;
	s = slot_at(slots, tag, START_SLOT_BITS);
	return s && slot_holds(s, tag | SLOT_ENDED, key);
}

/* Forget the start of `key`, in whichever tier it is: a request that will have no end. */
static __always_inline void slot_drop(void *hot, void *slots, void *lru, const void *key)
{
	struct start_slot *s = slot_get(hot, slots, key);

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
 * agent runs it once per chunk. Returns the slots it freed. A START_SLOTS pair has a
 * sweeper per table. */
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
