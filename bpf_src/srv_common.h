/* Maps and helpers shared by grpc_server.bpf.c and http2.bpf.c (one copy per object): the
 * server traceparents and the ServeHTTP join.
 *
 * Both paths start a request on one call and finish it on another, possibly on another
 * goroutine, so the in-flight state is keyed by struct stream_key (common.h) — never by
 * goroutine — and every value is read where it is final.
 */
#ifndef PYHTTP2PROBE_SRV_COMMON_H
#define PYHTTP2PROBE_SRV_COMMON_H

#include "common.h"
#include "trace_ctx.h"
#include "start_slots.h"

/* Incoming W3C traceparents of server requests in flight (traces on), by the request's
 * in-flight key (struct stream_key, common.h). Kept apart from the in-flight starts so those
 * stay small on the common path; written only for a request that carried one. LRU: the end
 * deletes its entry; one a request left behind (never ended) ages out, and a new request
 * under the same key that carries none deletes it at its start. Each server object has its own. */
struct tp_val {
	char tp[TRACEPARENT_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct stream_key);
	__type(value, struct tp_val);
} srv_traceparent SEC(".maps");

/* At a server start: remember the request's traceparent (tp[0] == 0: none). */
static __always_inline void tp_remember(const struct stream_key *key, const struct tp_val *v)
{
	if (v->tp[0])
		bpf_map_update_elem(&srv_traceparent, key, v, BPF_ANY);
	else
		bpf_map_delete_elem(&srv_traceparent, key);
}

/* At a server end: move the request's traceparent, if any, into out. */
static __always_inline void tp_take(const struct stream_key *key, char *out)
{
	struct tp_val *v = bpf_map_lookup_elem(&srv_traceparent, key);

	if (!v)
		return;
	__builtin_memcpy(out, v->tp, TRACEPARENT_LEN);
	bpf_map_delete_elem(&srv_traceparent, key);
}

/* ---- gRPC served by (*grpc.Server).ServeHTTP: joining its end to its HTTP/2 stream ----
 *
 * ServeHTTP runs grpc inside an HTTP/2 request: http2.bpf.c already has that request's
 * start (runHandler), so the gRPC span needs only its end (serverHandlerTransport's
 * writeStatus) and a join, for 3 hits in all. The join key is the HTTP/2 stream's own
 * context: runHandler's request carries it (Request.ctx, a *cancelCtx made per stream),
 * and whatever the middleware does — wrap the ResponseWriter, r.WithContext, copy the
 * request, hand the call to another goroutine (grpc does) — the request grpc holds has a
 * context whose parent chain reaches it. Every context type of package context keeps its
 * parent interface at offset 0, so a walk reads the data word at +8.
 *
 * A stale entry (of a request long over) could match a live context allocated at its
 * recycled address, so each entry also holds the stream context's parent and grandparent
 * pointers (the connection's context and the one it was made from), and a hit is one whose
 * key, parent and grandparent are all in the chain at consecutive places. The parent alone
 * is not enough under connection churn: a closed connection's context can be freed and its
 * address taken by a middleware's value context, and one of that connection's stream
 * contexts (its entry ended, still held) recycled as the middleware's cancel context made
 * from it; key and parent then match one level below the call's own stream context, and
 * the call is dropped as a repeat (entry taken) or given the old request (entry not taken).
 * Calls were seen dropped so, twice in some 600 runs of 1,400 ServeHTTP calls with
 * middleware (tests/test_servehttp_stale_ctx.py leaves that state behind on purpose).
 * There the grandparent is the call's own stream context (an 80-byte cancel context),
 * which cannot sit where the connection's context came from (a 48-byte value context in
 * net/http's, x/net's and Go 1.27's servers). The walk reads one word more in all, not per
 * level: a level's grandparent is the next level's parent.
 *
 * An entry outlives its request's handlerDone for a while, because a cancelled call's
 * HTTP/2 handler can return (the client reset the stream) before the gRPC handler
 * goroutine writes its status: in its slot (h2_ctx_slots, below) it is marked ended in
 * place; in the LRU tier it moves from h2_ctx_live to a small "ended" map.
 */
#define CTX_WALK_MAX 16            /* contexts stacked by middleware above the stream's */
/* struct ctx_key (tgid, context data pointer) and GO_CTX_PARENT_DATA: trace_ctx.h */

struct ctx_stream {
	struct stream_key stream;  /* the HTTP/2 request: (tgid, *serverConn, stream id) */
	__u64 start_ns;            /* its runHandler time */
	__u64 parent;              /* the context's parent data pointer: checked on a hit */
	__u64 grand;               /* and the parent's parent (0: unreadable): checked too */
	__u32 grpc_ended;          /* a gRPC end took this request: a second one is grpc's repeat */
	__u32 _pad;
};

/* In-flight HTTP/2 server requests by their stream context (sized like the in-flight map):
 * the second tier, for a request whose slot another live request holds. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ctx_key);
	__type(value, struct ctx_stream);
} h2_ctx_live SEC(".maps");

/* Ended ones, for a gRPC status written after the HTTP/2 handler returned (client cancel):
 * 16k recent requests, seconds of history at the highest rates a node sees. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ctx_key);
	__type(value, struct ctx_stream);
} h2_ctx_ended SEC(".maps");

/* The first tier of h2_ctx_live and h2_ctx_ended in one ARRAY of slots (start_slots.h says
 * why: an LRU update and delete cost ~0.3 us each here, and a request made three: ~1.2 us of
 * every HTTP/2 request in a binary linking ServeHTTP). A slot holds one request's entry
 * from its start; its end marks it ended in place (no move), and the entry stays there for a
 * late gRPC end (or grpc's repeated writeStatus) until a new start that hashes to the slot
 * takes it. One that takes it within CTX_KEEP_NS of that end first copies the entry to the
 * LRU "ended" map, so a busy table never cuts the time a late end has below what the LRU
 * maps alone gave (at 50k requests/s about one start in seven does; at ordinary rates
 * none). A start whose slot holds a live request's entry goes to the LRU maps as before.
 *
 * The tag word says everything a reader needs: 0 free, SLOT_BUSY while a start writes the
 * entry, else the entry's id (the key's hash, high 48 bits | a 12-bit count of the slot's
 * writes) and its state bits (CTX_VALID, and HTTP_ENDED / GRPC_ENDED, each set once by
 * compare-and-swap). A reader copies the entry between two reads of the tag and keeps it
 * only if the id did not change (a start that took the slot meanwhile changes it), so it
 * never mixes two requests; the gRPC end claims the request by setting GRPC_ENDED, so of
 * grpc's two writeStatus calls exactly one gets it (the other: a repeat), and a start never
 * takes a slot whose request the HTTP/2 end has not finished. */
#ifndef CTX_SLOT_BITS /* tests/test_slot_tables.py builds with tiny tables */
#define CTX_SLOT_BITS 15
#endif
#ifndef CTX_KEEP_NS
#define CTX_KEEP_NS 100000000ULL
#endif  /* 100 ms: a late gRPC end comes within milliseconds */
#define CTX_HTTP_ENDED 1ULL
#define CTX_GRPC_ENDED 2ULL
#define CTX_VALID 8ULL
#define CTX_STATE 0xfULL
#define CTX_SEQ_SHIFT 4
#define CTX_SEQ_MASK 0xfff0ULL
#define CTX_ID_MASK (~CTX_STATE)
#define CTX_TRIES 3              /* state changes a CAS may lose to: HTTP end, gRPC end */

struct ctx_slot {
	__u64 tag;
	struct ctx_key key;        /* tgid first: the start slots' sweeper frees these too */
	struct ctx_stream cs;      /* cs.grpc_ended unused: the tag's GRPC_ENDED */
	__u64 ended_ns;            /* when its HTTP/2 end ran (set before HTTP_ENDED) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << CTX_SLOT_BITS);
	__type(key, __u32);
	__type(value, struct ctx_slot);
} h2_ctx_slots SEC(".maps");

START_SLOTS_SWEEPER(h2_ctx_sweep, h2_ctx_slots);

static __always_inline __u64 ctx_hash(const struct ctx_key *k)
{
	__u64 h = ((k->ctx * 0x9E3779B97F4A7C15ULL) ^ k->tgid) & ~0xffffULL;

	return h ? h : 0x10000ULL;
}

static __always_inline struct ctx_slot *ctx_slot_of(__u64 h)
{
	__u32 idx = slot_of(h, CTX_SLOT_BITS);

	return bpf_map_lookup_elem(&h2_ctx_slots, &idx);
}

/* Whether tag `t` (read from s) is a valid entry of key k (hash h). */
static __always_inline int ctx_slot_is(const struct ctx_slot *s, __u64 t, __u64 h,
				       const struct ctx_key *k)
{
	return (t & CTX_VALID) && (t & ~(CTX_SEQ_MASK | CTX_STATE)) == h &&
	       s->key.ctx == k->ctx && s->key.tgid == k->tgid;
}

/* Before a start takes slot s (tag cur) from a request that ended less than CTX_KEEP_NS
 * ago: copy that entry to the LRU "ended" map. 0: go on; -1: the slot changed meanwhile. */
static __always_inline int ctx_keep(struct ctx_slot *s, __u64 cur, struct ctx_key *old,
				    struct ctx_stream *was)
{
	__builtin_memcpy(old, &s->key, sizeof(*old));
	__builtin_memcpy(was, &s->cs, sizeof(*was));
	if (s->tag != cur)
		return -1;
	was->grpc_ended = (cur & CTX_GRPC_ENDED) ? 1 : 0;
	bpf_map_update_elem(&h2_ctx_ended, old, was, BPF_ANY);
	return 0;
}

/* The stream context `ctx`'s parent and grandparent into cs (the grandparent 0 when
 * unreadable, as ctx_join reads it): -1 when its parent is unreadable (no entry then). */
static __always_inline int ctx_lineage_note(__u64 ctx, struct ctx_stream *cs)
{
	if (go_read_u64(ctx + GO_CTX_PARENT_DATA, &cs->parent))
		return -1;
	if (!cs->parent || go_read_u64(cs->parent + GO_CTX_PARENT_DATA, &cs->grand))
		cs->grand = 0;
	return 0;
}

/* At an HTTP/2 start (at `now`): request `cs` runs under context key `ck`. */
static __always_inline void ctx_note(const struct ctx_key *ck, const struct ctx_stream *cs,
				     __u64 now)
{
	__u64 h = ctx_hash(ck), cur, seq;
	struct ctx_slot *s = ctx_slot_of(h);
	struct ctx_stream was;
	struct ctx_key old;
	int kept = 0;

	if (!s)
		goto lru;
	cur = s->tag;
	/* free, an ended request's, or a stale one of this very key (a reused context) */
	if (cur == SLOT_BUSY ||
	    (cur && !(cur & CTX_HTTP_ENDED) && !ctx_slot_is(s, cur, h, ck)))
		goto lru;
	/* Kept: another context's entry that ended less than CTX_KEEP_NS ago (signed: that end
	 * may have stamped its time after this start took `now`). Not an entry of this very
	 * context: Go reuses a context's address only once nothing holds it, so no gRPC end
	 * can come for that request any more. */
	if ((cur & CTX_HTTP_ENDED) && !ctx_slot_is(s, cur, h, ck) &&
	    (__s64)(now - s->ended_ns) < (__s64)CTX_KEEP_NS) {
		if (ctx_keep(s, cur, &old, &was))
			goto lru;
		kept = 1;
	}
	if (__sync_val_compare_and_swap(&s->tag, cur, SLOT_BUSY) != cur) {
		/* a gRPC end claimed it between the copy and here: so must the copy say */
		if (kept && !was.grpc_ended && (s->tag & CTX_ID_MASK) == (cur & CTX_ID_MASK) &&
		    (s->tag & CTX_GRPC_ENDED)) {
			struct ctx_stream *c = bpf_map_lookup_elem(&h2_ctx_ended, &old);

			if (c)
				c->grpc_ended = 1;
		}
		goto lru;
	}
	s->key = *ck;
	s->cs = *cs;
	seq = ((cur >> CTX_SEQ_SHIFT) + 1) << CTX_SEQ_SHIFT;
	publish_u64(&s->tag, h | (seq & CTX_SEQ_MASK) | CTX_VALID);
	return;
lru:
	bpf_map_update_elem(&h2_ctx_live, ck, cs, BPF_ANY);
}

/* At an HTTP/2 end: the request `key` that ran under context `c` is over (its entry stays
 * for a late gRPC end: marked in its slot, or moved to the LRU "ended" map). */
static __always_inline void ctx_retire(__u32 tgid, __u64 c, const struct stream_key *key)
{
	struct ctx_key ck = { .tgid = tgid, .ctx = c };
	__u64 h = ctx_hash(&ck), t;
	struct ctx_slot *s;
	struct ctx_stream *cs;

	if (!c)
		return;
	s = ctx_slot_of(h);
	if (s) {
		for (int i = 0; i < CTX_TRIES; i++) {
			t = s->tag;
			if (!ctx_slot_is(s, t, h, &ck) || s->cs.stream.conn != key->conn ||
			    s->cs.stream.stream_id != key->stream_id || s->tag != t)
				break; /* not in its slot: the LRU tier */
			if (t & CTX_HTTP_ENDED)
				return;
			s->ended_ns = bpf_ktime_get_ns(); /* ours while live: no start takes it */
			if (__sync_val_compare_and_swap(&s->tag, t, t | CTX_HTTP_ENDED) == t)
				return;
		}
	}
	cs = bpf_map_lookup_elem(&h2_ctx_live, &ck);
	if (!cs || cs->stream.conn != key->conn || cs->stream.stream_id != key->stream_id)
		return;
	bpf_map_update_elem(&h2_ctx_ended, &ck, cs, BPF_ANY);
	bpf_map_delete_elem(&h2_ctx_live, &ck);
}

/* Whether entry `cs` is that of a context whose parent and grandparent are these. */
static __always_inline int ctx_lineage_is(const struct ctx_stream *cs, __u64 parent,
					  __u64 grand)
{
	return cs->parent == parent && cs->grand == grand;
}

/* The gRPC end's claim on context key k whose parent and grandparent are these, in its
 * slot: 1 claimed (*out: the request), -1 a gRPC end claimed it already (a repeat), 0 not
 * there. */
static __always_inline int ctx_slot_claim(const struct ctx_key *k, __u64 parent, __u64 grand,
					  struct ctx_stream *out)
{
	__u64 h = ctx_hash(k), t;
	struct ctx_slot *s = ctx_slot_of(h);

	if (!s)
		return 0;
	for (int i = 0; i < CTX_TRIES; i++) {
		t = s->tag;
		if (!ctx_slot_is(s, t, h, k))
			return 0;
		__builtin_memcpy(out, &s->cs, sizeof(*out));
		if ((s->tag & CTX_ID_MASK) != (t & CTX_ID_MASK))
			return 0; /* taken by another start meanwhile: not this request any more */
		if (!ctx_lineage_is(out, parent, grand))
			return 0;
		if (t & CTX_GRPC_ENDED)
			return -1;
		if (__sync_val_compare_and_swap(&s->tag, t, t | CTX_GRPC_ENDED) == t)
			return 1;
	}
	return 0;
}

/* The gRPC end's join: the HTTP/2 request whose context is `c` or one of its ancestors,
 * claimed for this end. 1: *out is that request; -1: a gRPC end took it already (a repeat
 * of grpc's writeStatus); 0: none found. */
static __always_inline int ctx_join(__u32 tgid, __u64 c, struct ctx_stream *out)
{
	struct ctx_key k = { .tgid = tgid };
	struct ctx_stream *v;
	__u64 parent, grand;
	int r;

	if (!c || go_read_u64(c + GO_CTX_PARENT_DATA, &parent))
		return 0;
	for (int i = 0; i < CTX_WALK_MAX; i++) {
		if (!c)
			return 0;
		/* one read a level, as before: this level's grandparent is the next one's parent */
		if (!parent || go_read_u64(parent + GO_CTX_PARENT_DATA, &grand))
			grand = 0; /* as ctx_lineage_note leaves it */
		k.ctx = c;
		r = ctx_slot_claim(&k, parent, grand, out);
		if (r)
			return r;
		v = bpf_map_lookup_elem(&h2_ctx_live, &k);
		if (!v || !ctx_lineage_is(v, parent, grand))
			v = bpf_map_lookup_elem(&h2_ctx_ended, &k);
		if (v && ctx_lineage_is(v, parent, grand)) {
			if (v->grpc_ended)
				return -1;
			v->grpc_ended = 1;
			*out = *v;
			return 1;
		}
		c = parent;
		parent = grand;
	}
	return 0;
}

#endif /* PYHTTP2PROBE_SRV_COMMON_H */
