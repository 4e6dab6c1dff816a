/* Maps and helpers shared by grpc_server.bpf.c and http2.bpf.c (one copy per object): the
 * end-repeat filter and the ServeHTTP join.
 *
 * Both paths start a request on one call and finish it on another, possibly on another
 * goroutine, so the in-flight state is keyed by struct stream_key (common.h) — never by
 * goroutine — and every value is read where it is final.
 */
#ifndef PYHTTP2PROBE_SRV_COMMON_H
#define PYHTTP2PROBE_SRV_COMMON_H

#include "common.h"
#include "trace_ctx.h"

/* Some ends repeat for one request: grpc-go calls writeStatus twice on some error paths
 * (the second is a no-op on the wire), and an entry probe placed at a function's very
 * entry fires again when Go's stack-growth check re-runs it (ours sit past that check).
 * A repeat comes from the same goroutine with the same key, so the last key each
 * goroutine ended tells a repeat (dropped, counted as STAT_DUP_END) from a real
 * unmatched end. Starts need no filter: a start with its key in flight overwrites it.
 * One ARRAY slot per hash of (tgid, goroutine), not an LRU hash: this runs on every end,
 * and an LRU lookup plus update cost ~0.6 us here. 16k slots for the goroutines ending
 * requests at once; two that share a slot only lose the repeat filter for a moment. */
#define LAST_END_BITS 14

struct last_end {
	__u64 g;                   /* tgid << 32 ^ goroutine: the slot's owner */
	struct stream_key k;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << LAST_END_BITS);
	__type(key, __u32);
	__type(value, struct last_end);
} g_last_end SEC(".maps");

/* Record `k` as this goroutine's last end; returns 1 when it already was. */
static __always_inline int end_repeats(struct pt_regs *ctx, const struct stream_key *k,
				       __u64 gen)
{
	/* gen: the process's attach generation (config.h), so a pid reused by a new process
	 * (its goroutines and connections at the same addresses) is another owner */
	__u64 g = ((__u64)k->tgid << 32) ^ GO_GOROUTINE(ctx) ^ (gen * 0x9E3779B97F4A7C15ULL);
	__u32 idx = slot_of(g, LAST_END_BITS);
	struct last_end *last = bpf_map_lookup_elem(&g_last_end, &idx);

	if (!last)
		return 0;
	if (last->g == g && last->k.tgid == k->tgid && last->k.stream_id == k->stream_id &&
	    last->k.conn == k->conn)
		return 1;
	last->g = g;
	last->k = *k;
	return 0;
}

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
 * A stale entry could match a live context allocated at a recycled address, so each entry
 * also holds the stream context's parent pointer, checked on every hit: a middleware
 * context in the chain never has the connection's context as its parent.
 *
 * Live entries are deleted by handlerDone and copied to a small "ended" map, because a
 * cancelled call's HTTP/2 handler can return (the client reset the stream) before the
 * gRPC handler goroutine writes its status.
 */
#define CTX_WALK_MAX 16            /* contexts stacked by middleware above the stream's */
/* struct ctx_key (tgid, context data pointer) and GO_CTX_PARENT_DATA: trace_ctx.h */

struct ctx_stream {
	struct stream_key stream;  /* the HTTP/2 request: (tgid, *serverConn, stream id) */
	__u64 start_ns;            /* its runHandler time */
	__u64 parent;              /* the context's parent data pointer: checked on a hit */
	__u32 grpc_ended;          /* a gRPC end took this request: a second one is grpc's repeat */
	__u32 _pad;
};

/* In-flight HTTP/2 server requests by their stream context (sized like the in-flight map). */
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

/* The entry of the HTTP/2 stream whose context is `c` or one of its ancestors, or NULL. */
static __always_inline struct ctx_stream *ctx_join(__u32 tgid, __u64 c)
{
	struct ctx_key k = { .tgid = tgid };
	struct ctx_stream *v;
	__u64 parent;

	for (int i = 0; i < CTX_WALK_MAX; i++) {
		if (!c || go_read_u64(c + GO_CTX_PARENT_DATA, &parent))
			return NULL;
		k.ctx = c;
		v = bpf_map_lookup_elem(&h2_ctx_live, &k);
		if (!v || v->parent != parent)
			v = bpf_map_lookup_elem(&h2_ctx_ended, &k);
		if (v && v->parent == parent)
			return v;
		c = parent;
	}
	return NULL;
}

#endif /* PYHTTP2PROBE_SRV_COMMON_H */
