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
 * server start notes its connection (a lookup, an insert once per connection) and each walk
 * reads one word and looks up one key per level, ~0.2 us a level, a few levels in practice.
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

/* Connection contexts of traced servers. One entry per connection; 16k connections of
 * traced servers per node at once. LRU: a closed connection's entry ages out; a stale one
 * can only make a walk stop at a context of a dead connection's address, which no live
 * request context descends from (the node found would then match no server span). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ctx_key);
	__type(value, __u64);
} srv_conn_ctx SEC(".maps");

/* Note `conn_ctx` (a data pointer) as a connection context of process `tgid`. */
static __always_inline void conn_ctx_note(__u32 tgid, __u64 conn_ctx, __u64 conn)
{
	struct ctx_key k = { .tgid = tgid, .ctx = conn_ctx };

	if (conn_ctx && !bpf_map_lookup_elem(&srv_conn_ctx, &k))
		bpf_map_update_elem(&srv_conn_ctx, &k, &conn, BPF_ANY);
}

/* The request context `c` is or descends from: the first context in its chain whose parent
 * is a noted connection context; 0 when there is none within TRACE_CTX_WALK_MAX. */
static __always_inline __u64 request_ctx_of(__u32 tgid, __u64 c)
{
	struct ctx_key k = { .tgid = tgid };
	__u64 parent;

	for (int i = 0; i < TRACE_CTX_WALK_MAX; i++) {
		if (!c || go_read_u64(c + GO_CTX_PARENT_DATA, &parent) || !parent)
			return 0;
		k.ctx = parent;
		if (bpf_map_lookup_elem(&srv_conn_ctx, &k))
			return c;
		c = parent;
	}
	return 0;
}

#endif /* PYHTTP2PROBE_TRACE_CTX_H */
