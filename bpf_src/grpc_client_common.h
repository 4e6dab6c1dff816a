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
#include "stage.h"

/* Per-process offsets, keyed by tgid: one loaded object serves many processes. 1024 traced
 * processes per agent is far beyond a node's Go gRPC programs; a lookup costs ~50 ns next
 * to a ~9.5 µs uprobe trap here. */
CONFIG_MAPS(grpc_client_config, __u32, struct grpc_client_config, 1024);

/* One record per finished call. Peak here is ~64k RPC/s x 336 B = ~21 MB/s; Python drains
 * every 100 ms (~2 MB), and 16 MiB leaves ~0.75 s of headroom for GC or GIL stalls. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} events SEC(".maps");

/* The common record (a call with a stream and a literal method, traces off) waits in a
 * per-CPU stage and goes out 8 to a reservation (stage.h); the agent runs the flusher. */
STAGE_MAP(client_stage, struct grpc_client_lit_event);
STAGE_FLUSHER(flush_client_stage, client_stage, client_stage_value, events);

/* The server's address of each connection (conn_cache.h). */
CONN_CACHE(conn_peer);

/* The server's address: the transport's remoteAddr, when it is TCP. */
static __always_inline void peer_src(const struct grpc_client_config *cfg, struct conn_src *src)
{
	CONN_SRC_OF(src, cfg, ct_remote_addr, -1);
}

/* The server's address of connection ct into ip/port (a failed read into *flags). */
static __always_inline void read_peer(const struct grpc_client_config *cfg, __u32 tgid,
				      __u64 ct, __u8 *ip, __u16 *port, __u32 *flags)
{
	struct conn_src src;
	struct conn_facts f;
	int r;

	peer_src(cfg, &src);
	r = conn_facts_of(&conn_peer, cfg->conn_cache, tgid, ct, &src, &f);
	if (r == -1)
		*flags |= SPAN_F_BAD_READ;
	if (r < 0)
		return;
	__builtin_memcpy(ip, f.ip, sizeof(f.ip));
	*port = f.port;
}

/* The status code of the error handed to finish(err): nil -> OK; *status.Error (told
 * apart by its itab's fun[0] == (*Error).Error, which works for stripped binaries) -> its
 * code; any other error (io.EOF) -> the stream's received status; else Unknown, flagged. */
static __always_inline __u32 read_code(const struct grpc_client_config *cfg, __u64 errtab,
				       __u64 errdata, __u64 stream, __u32 *flags)
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
			*flags |= SPAN_F_BAD_READ;
		return r ? 0 : code; /* nil inner status means OK, like (*Status).Code */
	}
	if (stream) {
		r = go_chain_u32(stream, &cfg->stream_code, &code);
		if (r == 0)
			return code;
		if (r < 0)
			*flags |= SPAN_F_BAD_READ;
	}
	*flags |= SPAN_F_STATUS_GUESSED;
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

/* What an end reads of its call's stream before it writes a record. */
struct call_stream {
	__u64 stream;     /* the attempt's transport stream; 0: the call never got one */
	__u64 ct;         /* its *http2Client (known before the read: the attempt's) */
	__u64 method[2];  /* the method's string header, when read in the stream's window */
	__u32 sid;
	__u32 in_window;  /* method[] was read */
};

/* The transport stream of `attempt` (0 when it has none, or attempt is 0); a failed read
 * goes into *flags. */
static __always_inline __u64 attempt_stream(const struct grpc_client_config *cfg,
					    __u64 attempt, __u32 *flags)
{
	__u64 stream = 0;

	if (attempt && go_read_u64(attempt + cfg->attempt_stream, &stream))
		*flags |= SPAN_F_BAD_READ;
	return stream;
}

/* The stream's id and transport, and (in one window) the call's method header (newStream
 * copies callHdr's). `ct`: the stream's transport when the caller has it already (the
 * attempt's: one cold line fewer), else 0: read here. Failed reads go into *flags. */
static __always_inline void read_stream(const struct grpc_client_config *cfg, __u64 stream,
					__u64 ct, struct call_stream *cs, __u32 *flags)
{
	struct go_window win;
	__u32 ct_end = cfg->sw_ct_on && !ct ? cfg->sw_ct + 8 : 0;

	cs->stream = stream;
	cs->ct = stream ? ct : 0; /* a call with no stream has no connection to report */
	if (cs->stream && cfg->sw_on &&
	    go_window_read(cs->stream + cfg->sw_lo, &win,
			   go_max_u32(go_max_u32(cfg->sw_id + 4, cfg->sw_method + 16),
				      ct_end)) == 0) {
		cs->in_window = 1;
		cs->sid = go_window_u32(&win, cfg->sw_id);
		cs->method[0] = go_window_u64(&win, cfg->sw_method);
		cs->method[1] = go_window_u64(&win, cfg->sw_method + 8);
		if (!cs->ct && ct_end)
			cs->ct = go_window_u64(&win, cfg->sw_ct);
		else if (!cs->ct && go_chain_u64(cs->stream, &cfg->stream_ct, &cs->ct) < 0)
			*flags |= SPAN_F_BAD_READ;
	} else if (cs->stream) {
		if (go_chain_u32(cs->stream, &cfg->stream_id, &cs->sid) < 0 ||
		    (!cs->ct && go_chain_u64(cs->stream, &cfg->stream_ct, &cs->ct) < 0))
			*flags |= SPAN_F_BAD_READ;
	}
	if (!cs->stream || !cs->ct)
		*flags |= SPAN_F_NO_STREAM;
}

/* A method that can go by address: read in the stream's window, wholly inside the binary's
 * .rodata (so a literal: its bytes never change and Python reads them from the file). */
static __always_inline int method_is_literal(const struct grpc_client_config *cfg,
					     const struct call_stream *cs)
{
	return cs->in_window && cs->method[1] && cs->method[1] <= 0xffff &&
	       cs->method[0] >= cfg->lit_lo && cs->method[0] + cs->method[1] <= cfg->lit_hi;
}

/* Write and submit the record of a finished call: a grpc_client_lit_event when the call has
 * a stream and a literal method and traces are off (the common case), else the full
 * grpc_client_event (copied method; the dial target when no connection), traced or not.
 * `stream`: the call's last attempt's transport stream, 0 when it never got one; `ct` its
 * transport when known (the attempt's), else 0. `flags` come from the pairing
 * (SPAN_F_UNMATCHED) and the stream's read. */
static __always_inline void emit_end(const struct grpc_client_config *cfg, __u32 tgid,
				     __u64 cs, __u64 stream, __u64 ct, __u64 errtab,
				     __u64 errdata, __u64 start, __u64 node, __u32 flags)
{
	struct grpc_client_trace_event *tev = NULL;
	struct grpc_client_lit_event *lev;
	struct grpc_client_event *ev;
	struct call_stream st = {};
	__u64 end = bpf_ktime_get_ns(), addr;
	__u32 code;
	int trunc = 0;

	read_stream(cfg, stream, ct, &st, &flags);
	code = read_code(cfg, errtab, errdata, st.stream, &flags);
	if (!cfg->trace && st.ct && method_is_literal(cfg, &st)) {
		struct client_stage_value *sg = stage_claim(&client_stage);
		__u32 n = 0;

		if (sg) {
			n = stage_next(sg->head.count);
			lev = &sg->rec[n];
		} else {
			lev = reserve_zeroed(&events, sizeof(*lev)); /* claimed: sent alone */
			if (!lev)
				return;
		}
		lev->type = EV_GRPC_CLIENT_LIT;
		lev->tgid = tgid;
		lev->transport = st.ct;
		lev->cs = cs;
		lev->start_ns = start;
		lev->end_ns = end;
		lev->stream_id = st.sid;
		lev->status_code = code;
		lev->method_addr = st.method[0];
		lev->method_len = st.method[1];
		__builtin_memset(lev->peer_ip, 0, sizeof(lev->peer_ip));
		lev->peer_port = 0;
		read_peer(cfg, tgid, st.ct, lev->peer_ip, &lev->peer_port, &flags);
		lev->flags = flags;
		if (flags & SPAN_F_BAD_READ)
			stat_inc(STAT_BAD_READ);
		if (!sg) {
			submit_batched(&events, lev);
			return;
		}
		STAGE_COMMIT(sg, n, &events);
		return;
	}
	if (cfg->trace) {
		tev = reserve_zeroed(&events, sizeof(*tev));
		ev = tev ? &tev->ev : NULL;
	} else {
		ev = reserve_zeroed(&events, sizeof(*ev));
	}
	if (!ev)
		return;
	ev->type = EV_GRPC_CLIENT;
	ev->tgid = tgid;
	ev->transport = st.ct;
	ev->cs = cs;
	ev->start_ns = start;
	ev->end_ns = end;
	ev->stream_id = st.sid;
	ev->status_code = code;
	read_method(cs, &cfg->cs_method, st.in_window ? st.method : NULL, ev->method,
		    &ev->method_len, &flags);
	if (st.ct) {
		read_peer(cfg, tgid, st.ct, ev->peer_ip, &ev->peer_port, &flags);
	} else if (go_chain_addr(cs, &cfg->cs_target, &addr) == 0 &&
		   go_read_string(addr, ev->target, sizeof(ev->target), &ev->target_len,
				  &trunc) == 0) {
		if (trunc)
			flags |= SPAN_F_TARGET_TRUNCATED;
	}
	ev->flags = flags;
	if (tev)
		trace_end(cfg, tev, node);
	if (ev->flags & SPAN_F_BAD_READ)
		stat_inc(STAT_BAD_READ);
	submit_batched(&events, ev);
}

#endif /* PYHTTP2PROBE_GRPC_CLIENT_COMMON_H */
