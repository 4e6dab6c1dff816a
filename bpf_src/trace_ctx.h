/* Trace context, read only: which server request a client call was made under, and which
 * request context a server span stands for. Python joins the two (pyhttp2probe/traces.py):
 * a client span whose ctx_node equals a server span's, in the same process and inside that
 * span's time, is its child. Nothing is written into the traced program.
 *
 * Every server request runs under a context made for it alone — grpc-go's
 * context.WithCancel/WithTimeout in operateHeaders, net/http's per-stream WithCancel in
 * newStream — whose parent is a context of the whole connection (grpc-go: operateHeaders'
 * ctx argument from v1.60, http2Server.ctx before; net/http: serverConn.baseCtx). A handler
 * that passes its ctx on (as grpc-go and net/http users do) makes calls whose context chain
 * runs through that request context. So the server start notes the connection's context,
 * and a walk up any context chain stops at the first context whose parent is a noted one:
 * that is the request context (the "node"). Both sides find the same node by the same rule.
 * Every context type of package context keeps its parent interface at offset 0 (the data
 * word at +8), like srv_common.h's ServeHTTP join.
 *
 * Cost: nothing unless the process's config says trace (the agent exports traces); then a
 * server start notes its connection (a read and a lookup; an insert once per connection)
 * and each walk reads one word and looks up one key per level. Measured (BENCHMARKS.md,
 * bench_traces): +1.6 us on the gRPC client start, whose walk climbs the whole chain of a
 * call made outside any request, +0.8/+1.3 us on the gRPC server start/end.
 * Include after common.h; the map is one kernel map shared by every object (the grpc_client
 * object owns it, pyhttp2probe/probes).
 */
#ifndef PYHTTP2PROBE_TRACE_CTX_H
#define PYHTTP2PROBE_TRACE_CTX_H

#define TRACE_CTX_WALK_MAX 16      /* contexts between a call and its request context */
#define GO_CTX_PARENT_DATA 8       /* data word of the parent iface at offset 0 */

struct ctx_key {
	__u32 tgid;
	__u32 _pad;
	__u64 ctx;
};

/* Connection contexts of traced servers, each with its parent and grandparent pointers.
 * One entry per connection; 16k connections of traced servers per node at once. Nothing
 * deletes an entry when its connection closes (that needs no extra probe): it ages out of
 * the LRU. Go meanwhile reuses its address, and a walk through the new object must not stop
 * there, so every hit is checked against the two ancestors noted with it (the words at +8
 * of the context and of its parent). One is not enough: Go hands freed slots of a size
 * class out again in order, so a pair of contexts a handler makes one after the other
 * lands at the addresses of a closed connection's pair (measured under connection churn);
 * a third, the connection's root (context.Background() for grpc-go), does not follow. A
 * stale entry that fails the check is dropped. */
struct conn_ctx {
	__u64 parent;              /* the connection context's parent (data word) */
	__u64 grand;               /* that one's parent (0: none readable) */
	__u64 conn;                /* the transport (for debugging with bpftool) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ctx_key);
	__type(value, struct conn_ctx);
} srv_conn_ctx SEC(".maps");

/* Note `conn_ctx` (a data pointer) as a connection context of process `tgid`: one lookup
 * per request, an insert once per connection (or when the address was reused). */
static __always_inline void conn_ctx_note(__u32 tgid, __u64 conn_ctx, __u64 conn)
{
	struct ctx_key k = { .tgid = tgid, .ctx = conn_ctx };
	struct conn_ctx v = { .conn = conn }, *old;

	if (!conn_ctx || go_read_u64(conn_ctx + GO_CTX_PARENT_DATA, &v.parent))
		return;
	if (v.parent)
		go_read_u64(v.parent + GO_CTX_PARENT_DATA, &v.grand);
	old = bpf_map_lookup_elem(&srv_conn_ctx, &k);
	if (!old || old->parent != v.parent || old->grand != v.grand)
		bpf_map_update_elem(&srv_conn_ctx, &k, &v, BPF_ANY);
}

/* The request context `c` is or descends from: the first context in its chain whose parent
 * is a noted connection context (checked, see above); 0 when there is none within
 * TRACE_CTX_WALK_MAX. */
static __always_inline __u64 request_ctx_of(__u32 tgid, __u64 c)
{
	struct ctx_key k = { .tgid = tgid };
	struct conn_ctx *noted;
	__u64 parent, up1, up2;

	for (int i = 0; i < TRACE_CTX_WALK_MAX; i++) {
		if (!c || go_read_u64(c + GO_CTX_PARENT_DATA, &parent) || !parent)
			return 0;
		k.ctx = parent;
		noted = bpf_map_lookup_elem(&srv_conn_ctx, &k);
		if (noted) {
			up2 = 0;
			if (go_read_u64(parent + GO_CTX_PARENT_DATA, &up1) == 0 &&
			    up1 == noted->parent) {
				if (up1) /* unreadable: 0, as noted then */
					go_read_u64(up1 + GO_CTX_PARENT_DATA, &up2);
				if (up2 == noted->grand)
					return c;
			}
			bpf_map_delete_elem(&srv_conn_ctx, &k); /* its address was reused */
		}
		c = parent;
	}
	return 0;
}

#endif /* PYHTTP2PROBE_TRACE_CTX_H */
