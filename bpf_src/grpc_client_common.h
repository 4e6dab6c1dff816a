/* Maps and the end-of-call record builder shared by grpc_client.bpf.c and its ablation
 * (bench/bpf/grpc_client_oldkey.bpf.c).
 *
 * Both objects read the FINAL identity of a call at the entry of
 * (*clientStream).finish(err); they differ only in how the start time is found.
 */
#ifndef PYHTTP2PROBE_GRPC_CLIENT_COMMON_H
#define PYHTTP2PROBE_GRPC_CLIENT_COMMON_H

#include "common.h"
#include "trace_ctx.h"
#include "conn_cache.h"

/* Per-process offsets, keyed by tgid: one loaded object serves many processes. 1024 traced
 * processes per agent is far beyond a node's Go gRPC programs; a lookup costs ~50 ns next
 * to a ~9.5 µs uprobe trap here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct grpc_client_config);
} grpc_client_config SEC(".maps");

/* One record per finished call. Peak here is ~64k RPC/s x 336 B = ~21 MB/s; Python drains
 * every 100 ms (~2 MB), and 16 MiB leaves ~0.75 s of headroom for GC or GIL stalls. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} events SEC(".maps");

/* The server's address of each connection (conn_cache.h). */
CONN_CACHE(conn_peer);

/* The server's address: the transport's remoteAddr, when it is TCP. */
static __always_inline void peer_src(const struct grpc_client_config *cfg, struct conn_src *src)
{
	CONN_SRC_OF(src, cfg, ct_remote_addr, -1);
}

static __always_inline void read_peer(const struct grpc_client_config *cfg, __u64 ct,
				      struct grpc_client_event *ev)
{
	struct conn_src src;
	struct conn_facts f;
	int r;

	peer_src(cfg, &src);
	r = conn_facts_of(&conn_peer, cfg->conn_cache, ev->tgid, ct, &src, &f);
	if (r == -1)
		ev->flags |= SPAN_F_BAD_READ;
	if (r < 0)
		return;
	__builtin_memcpy(ev->peer_ip, f.ip, sizeof(f.ip));
	ev->peer_port = f.port;
}

/* The status code of the error handed to finish(err): nil -> OK; *status.Error (told
 * apart by its itab's fun[0] == (*Error).Error, which works for stripped binaries) -> its
 * code; any other error (io.EOF) -> the stream's received status; else Unknown, flagged. */
static __always_inline __u32 read_code(const struct grpc_client_config *cfg, __u64 errtab,
				       __u64 errdata, __u64 stream, struct grpc_client_event *ev)
{
	__u64 fn = 0;
	__u32 code = 0;
	int r;

	if (!errtab)
		return 0;
	if (errtab != cfg->status_error_itab && /* learned: config.h */
	    go_read_u64(errtab + cfg->itab_fun0, &fn) == 0 && fn == cfg->status_error_fn && fn)
		((struct grpc_client_config *)cfg)->status_error_itab = errtab;
	if (errtab == cfg->status_error_itab) {
		r = go_chain_u32(errdata, &cfg->err_code, &code);
		if (r < 0)
			ev->flags |= SPAN_F_BAD_READ;
		return r ? 0 : code; /* nil inner status means OK, like (*Status).Code */
	}
	if (stream) {
		r = go_chain_u32(stream, &cfg->stream_code, &code);
		if (r == 0)
			return code;
		if (r < 0)
			ev->flags |= SPAN_F_BAD_READ;
	}
	ev->flags |= SPAN_F_STATUS_GUESSED;
	stat_inc(STAT_STATUS_GUESSED);
	return 2; /* codes.Unknown */
}

/* cs.finished and cs.attempt: one read of the 64-byte window holding both when the layout
 * allows (each read is ~0.1 us here: the largest cost of an end), else two.
 * Returns -1 when unreadable. */
static __always_inline int read_cs_state(const struct grpc_client_config *cfg, __u64 cs,
					 __u8 *finished, __u64 *attempt)
{
	__u64 win[8] = {};
	__u32 at = cfg->cs_attempt - cfg->cs_window, fin = cfg->cs_finished - cfg->cs_window;

	*finished = 0;
	*attempt = 0;
	if (cfg->cs_window_on &&
	    bpf_probe_read_user(win, sizeof(win), (const void *)(cs + cfg->cs_window)) == 0) {
		*attempt = win[(at >> 3) & 7];
		*finished = (__u8)(win[(fin >> 3) & 7] >> ((fin & 7) * 8));
		return 0;
	}
	if (go_read_u8(cs + cfg->cs_finished, finished) ||
	    go_read_u64(cs + cfg->cs_attempt, attempt))
		return -1;
	return 0;
}

/* Fill everything but start_ns/flags-from-pairing from the finish(err) entry registers.
 * Returns the stream pointer (0 when the call never got one). */
static __always_inline __u64 fill_end(const struct grpc_client_config *cfg, __u64 cs,
				      __u64 attempt, __u64 errtab, __u64 errdata,
				      struct grpc_client_event *ev)
{
	__u64 stream = 0, ct = 0, addr, method[2] = {};
	struct go_window win;
	__u32 sid = 0;
	int trunc = 0, in_window = 0;

	ev->type = EV_GRPC_CLIENT;
	ev->cs = cs;
	ev->end_ns = bpf_ktime_get_ns();

	if (attempt && go_read_u64(attempt + cfg->attempt_stream, &stream))
		ev->flags |= SPAN_F_BAD_READ;
	if (stream && cfg->sw_on && go_window_read(stream + cfg->sw_lo, &win) == 0) {
		in_window = 1; /* the stream's method is the call's (newStream copies callHdr's) */
		sid = go_window_u32(&win, cfg->sw_id);
		method[0] = go_window_u64(&win, cfg->sw_method);
		method[1] = go_window_u64(&win, cfg->sw_method + 8);
		if (cfg->sw_ct_on)
			ct = go_window_u64(&win, cfg->sw_ct);
		else if (go_chain_u64(stream, &cfg->stream_ct, &ct) < 0)
			ev->flags |= SPAN_F_BAD_READ;
	} else if (stream) {
		if (go_chain_u32(stream, &cfg->stream_id, &sid) < 0 ||
		    go_chain_u64(stream, &cfg->stream_ct, &ct) < 0)
			ev->flags |= SPAN_F_BAD_READ;
	}
	ev->stream_id = sid;
	ev->transport = ct;
	if (!stream || !ct)
		ev->flags |= SPAN_F_NO_STREAM;

	read_method(cs, &cfg->cs_method, in_window ? method : NULL, ev->method, &ev->method_len,
		    &ev->flags);

	if (ct) {
		read_peer(cfg, ct, ev);
	} else if (go_chain_addr(cs, &cfg->cs_target, &addr) == 0 &&
		   go_read_string(addr, ev->target, sizeof(ev->target), &ev->target_len,
				  &trunc) == 0) {
		if (trunc)
			ev->flags |= SPAN_F_TARGET_TRUNCATED;
	}

	ev->status_code = read_code(cfg, errtab, errdata, stream, ev);
	if (ev->flags & SPAN_F_BAD_READ)
		stat_inc(STAT_BAD_READ);
	return stream;
}

/* Reserve a record: the plain one, or with traces on the traced one (*tev set, its type
 * EV_GRPC_CLIENT_TRACED once fill_end has run: see trace_end). */
static __always_inline struct grpc_client_event *
reserve_client(const struct grpc_client_config *cfg, struct grpc_client_trace_event **tev)
{
	*tev = NULL;
	if (!cfg->trace)
		return reserve_zeroed(&events, sizeof(struct grpc_client_event));
	*tev = reserve_zeroed(&events, sizeof(struct grpc_client_trace_event));
	return *tev ? &(*tev)->ev : NULL;
}

/* Traces on: the join fields of a filled record (trace_ctx.h): the call's request context
 * and the connection's local address. */
static __always_inline void trace_end(const struct grpc_client_config *cfg,
				      struct grpc_client_trace_event *tev, __u64 node)
{
	__u64 addr;

	tev->ev.type = EV_GRPC_CLIENT_TRACED;
	tev->ctx_node = node;
	if (tev->ev.transport &&
	    go_chain_addr(tev->ev.transport, &cfg->ct_local_addr, &addr) == 0 &&
	    go_read_tcp_addr(addr, cfg->itab_fun0, cfg->tcpaddr_network_fn,
			     (__u64 *)&cfg->tcpaddr_itab, cfg->tcpaddr_ip,
			     cfg->tcpaddr_port, tev->local_ip, &tev->local_port) < 0)
		tev->ev.flags |= SPAN_F_BAD_READ;
}

#endif /* PYHTTP2PROBE_GRPC_CLIENT_COMMON_H */
