// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* grpc_server: one span per RPC handled by a grpc-go server: 2 uprobe hits per RPC on grpc's
 * own transport, 1 more on top of the HTTP/2 request's 2 through (*grpc.Server).ServeHTTP.
 *
 * Probe points (decided from grpc-go v1.40 .. v1.85 sources):
 *   START  entry of transport.(*http2Server).operateHeaders(t, frame, ...) (< v1.60) or
 *          (t, ctx, frame, ...): t=RAX, frame=RBX or RDI. The reader goroutine calls it once
 *          per new stream, with the HEADERS frame that opens it: its stream id is final
 *          there (the client chose it), and so is t. Only grpc's own transport comes here,
 *          so ServeHTTP calls do not pay for it. The span thus covers header decoding and
 *          dispatch too (the handler goroutine starts inside).
 *   END    entry of the transport's writeStatus(s, st *status.Status), one program per
 *          transport: (*http2Server).writeStatus (WriteStatus before v1.69) and
 *          (*serverHandlerTransport).writeStatus for ServeHTTP. Receiver=RAX, s=RBX,
 *          st=RCX. Every handled RPC ends there, with the exact code: st.s.Code (a nil st
 *          or nil st.s is OK, like (*Status).Code). grpc-go calls it twice on some error
 *          paths (processUnaryRPC after a failed send); the first one is the one on the
 *          wire, the repeat is dropped (srv_common.h). The method (s.method) and the local
 *          listener address (http2Server.localAddr, or the ServeHTTP request's Host) are
 *          read here too, so the start stores only its timestamp.
 *   ServeHTTP has no start of its own: its end finds the HTTP/2 request it runs in by the
 *          request's context chain (srv_common.h, ctx_join) and takes that request's start
 *          and identity (tgid, *serverConn, HTTP/2 stream id). The HTTP/2 object owns those
 *          maps; this object shares them (libbpf map reuse).
 * Identity: (tgid, transport pointer, stream id). In flight, grpc's transport is keyed by
 * its framer, a pointer it shares 1:1 with its loopy writer, so an early abort (below,
 * which knows only the loopy writer) can drop the start that no writeStatus will end.
 * State: one entry per in-flight RPC (a slot, or the LRU map when that slot is held:
 * start_slots.h), taken by its end. A connection's close needs no
 * sweep: a start overwrites a stale entry left by a stream that never ended
 * (STAT_START_REUSED), so a new connection at a reused address never inherits an old start.
 * Probes sit past the stack-growth check (Python places them), so each fires once per
 * call.
 * REJECTED  entry of (*loopyWriter).earlyAbortStreamHandler(l, eas): l=RAX, eas=RBX.
 *          grpc-go refuses some RPCs in operateHeaders before any handler runs
 *          (InTapHandle error, non-gRPC content-type, malformed headers): handleStream
 *          and writeStatus never see them. It queues an earlyAbortStream that the loopy
 *          goroutine writes out here, on that error path only (a healthy RPC never comes
 *          here, so it stays at 2 hits). One small record each: (tgid, stream id, code);
 *          the code is eas.status.s.Code before v1.79, the "grpc-status" header field's
 *          value in eas.hf from v1.79. Python counts them; no span (no method known).
 *          Not seen: a v1.79+ abort whose headers exceed the peer's header-list limit
 *          (grpc-go then queues a RST_STREAM instead of the earlyAbortStream).
 *          Streams refused with a bare RST_STREAM (over MaxConcurrentStreams, oversized
 *          headers, a draining server) leave their start behind: no span, and the entry
 *          waits for LRU eviction or a reused key (rare: peers respect those limits).
 * CONN     each RET of transport.NewServerTransport (once per connection): the listener's
 *          address and the framer of the new connection go into the cache (conn_cache.h)
 *          the start and the end read.
 * Not the start: handleStream (ServeHTTP runs it too: 4 hits there) and the handle closure
 * (inlined/varies by version). Not the end: closeStream/deleteStream (no status there).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "srv_common.h"
#include "start_slots.h"
#include "conn_cache.h"
#include "stage.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

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

/* Per-process offsets, keyed by tgid (see grpc_client_common.h for the sizing). */
CONFIG_MAPS(grpc_server_config, __u32, struct grpc_server_config, 1024);

/* In-flight RPCs: start time by (tgid, transport, stream id). 64k covers 64k concurrent
 * RPCs (grpc-go's default MaxConcurrentStreams is unbounded, but a node rarely holds more);
 * LRU eviction of a never-ended RPC shows up as an unmatched end, never as a wrong span. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct stream_key);
	__type(value, __u64);
} grpc_server_inflight SEC(".maps");

/* Their first tier (start_slots.h): the LRU above takes an RPC only when its slot is held. */
START_SLOTS(grpc_server_slots);
START_SLOTS_SWEEPER(grpc_server_sweep, grpc_server_slots);
START_SLOTS_SWEEPER(hot_grpc_server_sweep, hot_grpc_server_slots);

/* One record per finished RPC; ~300 B each, 8 MiB holds ~27k: half a second at peak. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} events SEC(".maps");

/* Records of traces-off ends wait in a per-CPU stage and go out 8 to a reservation
 * (stage.h); the agent runs the flusher. */
STAGE_MAP(server_stage, struct grpc_server_event);
STAGE_FLUSHER(flush_server_stage, server_stage, server_stage_value, events);

/* operateHeaders(t, frame, ...) (< v1.60) or (t, ctx, frame, ...): the frame's register. */
static __always_inline __u64 frame_arg(struct pt_regs *ctx, const struct grpc_server_config *cfg)
{
	/* Both loads first: a select between ctx fields compiles to ctx pointer arithmetic,
	 * which the verifier refuses. */
	__u64 arg2 = GO_ARG2(ctx), arg4 = GO_ARG4(ctx);

	barrier_var(arg4);
	return cfg->frame_arg == 4 ? arg4 : arg2;
}

/* Header fields of a HEADERS frame searched for "traceparent": the pseudo-headers, the
 * gRPC ones and the metadata come first; 32 covers requests with ~20 metadata entries. */
#define TP_FIELDS_MAX 32

/* Copy the value of the frame's "traceparent" field into tp (TRACEPARENT_LEN - 1 chars of
 * version 00; other lengths are left out). One read per field to compare, two more for
 * the one that matches. */
static __always_inline void read_traceparent(const struct grpc_server_config *cfg, __u64 frame,
					     char *tp)
{
	static const char want[] = "traceparent";
	__u64 sl[2] = {}, str[2] = {}, elem;
	char name[sizeof(want) - 1];

	if (!cfg->hf_stride ||
	    bpf_probe_read_user(sl, sizeof(sl), (const void *)(frame + cfg->frame_fields)))
		return;
	for (int i = 0; i < TP_FIELDS_MAX; i++) {
		int same = 1;

		if (i >= sl[1])
			break;
		elem = sl[0] + (__u64)i * cfg->hf_stride;
		if (bpf_probe_read_user(str, sizeof(str), (const void *)(elem + cfg->hf_name)))
			return;
		if (str[1] != sizeof(name) || !str[0])
			continue;
		if (bpf_probe_read_user(name, sizeof(name), (const void *)str[0]))
			return;
		for (int j = 0; j < sizeof(name); j++)
			if (name[j] != want[j])
				same = 0;
		if (!same)
			continue;
		if (bpf_probe_read_user(str, sizeof(str), (const void *)(elem + cfg->hf_value)) ||
		    str[1] != TRACEPARENT_LEN - 1 || !str[0] ||
		    bpf_probe_read_user(tp, TRACEPARENT_LEN - 1, (const void *)str[0]))
			tp[0] = 0;
		return;
	}
}

/* What grpc_server reads of a connection (conn_cache.h): the listener's address (the
 * transport's localAddr, when it is TCP) and the framer (the in-flight key). */
CONN_CACHE(conn_local);

static __always_inline void conn_src_of(const struct grpc_server_config *cfg,
					struct conn_src *src)
{
	CONN_SRC_OF(src, cfg, t_local_addr, (int)cfg->t_framer);
}

static __always_inline int conn_of(const struct grpc_server_config *cfg, __u32 tgid, __u64 t,
				   struct conn_facts *f)
{
	struct conn_src src;

	conn_src_of(cfg, &src);
	return conn_facts_of(&conn_local, cfg->conn_cache, tgid, t, &src, f);
}

/* The framer of transport t: from its facts when conn_of got them (r >= 0), else read. */
static __always_inline int framer_of(const struct grpc_server_config *cfg, __u64 t,
				     const struct conn_facts *f, int r, __u64 *framer)
{
	if (r >= 0) {
		*framer = f->aux;
		return 0;
	}
	return go_read_u64(t + cfg->t_framer, framer);
}

/* FrameHeader's Type and StreamID: one read of its first 16 bytes, where both have always
 * been (x/net's FrameHeader{valid, Type, Flags, Length, StreamID}), else one read each. */
static __always_inline int read_frame_header(const struct grpc_server_config *cfg, __u64 fh,
					     __u8 *type, __u32 *sid)
{
	__u32 w[4] = {};

	if (cfg->fh_type < 16 && cfg->fh_stream_id <= 12 && !(cfg->fh_stream_id & 3)) {
		if (bpf_probe_read_user(w, sizeof(w), (const void *)fh))
			return -1;
		*type = (__u8)(w[(cfg->fh_type >> 2) & 3] >> ((cfg->fh_type & 3) * 8));
		*sid = w[(cfg->fh_stream_id >> 2) & 3];
		return 0;
	}
	return go_read_u8(fh + cfg->fh_type, type) || go_read_u32(fh + cfg->fh_stream_id, sid);
}

SEC("uprobe")
int grpc_server_operate_headers(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct grpc_server_config *cfg = CONFIG_OF_TGID(grpc_server_config, tgid);
	__u64 now = bpf_ktime_get_ns();
	struct stream_key key = {};
	struct tp_val tp = {};
	__u64 fh, frame, t = GO_ARG1(ctx), arg3 = GO_ARG3(ctx), conn_ctx = 0;
	struct conn_facts f;
	__u8 type = 0;
	int r = -3;

	if (!cfg)
		return 0;
	key.tgid = tgid;
	frame = frame_arg(ctx, cfg);
	if (cfg->conn_cache) /* without the cache, a start reads just the framer */
		r = conn_of(cfg, tgid, t, &f);
	if (framer_of(cfg, t, &f, r, &key.conn) ||
	    go_chain_addr(frame, &cfg->frame_header, &fh) ||
	    read_frame_header(cfg, fh, &type, &key.stream_id) || type != 0x1 /* HEADERS */) {
		stat_inc(STAT_BAD_READ);
		return 0;
	}
	if (cfg->trace) {
		/* The context the request's own is made from: operateHeaders' ctx argument
		 * (its data word in RCX) from v1.60, http2Server.ctx before. */
		if (cfg->frame_arg == 4)
			conn_ctx = arg3;
		else if (cfg->t_ctx) /* 0: no per-connection context (Python says why) */
			go_read_u64(t + cfg->t_ctx, &conn_ctx);
		conn_ctx_note(tgid, conn_ctx, t);
		read_traceparent(cfg, frame, tp.tp);
		tp_remember(&key, &tp);
	}
	{
		__u64 val[3] = { now, 0, 0 };

		slot_start(SLOTS(grpc_server_slots), &grpc_server_inflight,
			   &grpc_server_config_slots, &grpc_server_config, &key, val);
	}
	return 0;
}

/* Traces on: the join fields (trace_ctx.h) of a record: the request's context, the client's
 * address (joins this span to a traced client's), the incoming traceparent of `started`
 * (the in-flight key; conn 0: none to take). */
static __always_inline void trace_end(const struct grpc_server_config *cfg, __u64 t,
				      struct grpc_server_trace_event *tev, __u64 node,
				      const struct stream_key *started)
{
	__u64 addr;

	tev->ev.type = EV_GRPC_SERVER_TRACED;
	tev->ctx_node = node;
	if (started->conn)
		tp_take(started, tev->traceparent);
	if (!(tev->ev.flags & SPAN_F_VIA_SERVE_HTTP) &&
	    go_chain_addr(t, &cfg->t_remote_addr, &addr) == 0 &&
	    go_read_tcp_addr(addr, cfg->itab_fun0, cfg->tcpaddr_network_fn,
			     (__u64 *)&cfg->tcpaddr_itab, cfg->tcpaddr_ip,
			     cfg->tcpaddr_port, tev->remote_ip, &tev->remote_port) < 0)
		tev->ev.flags |= SPAN_F_BAD_READ;
}

/* The code of the *status.Status an end writes: grpc.statusOK (learned: config.h) is OK
 * with no read; else st.s.Code, a nil *Status or nil inner proto being OK, like
 * (*Status).Code. Returns go_chain_u32's result. */
static __always_inline int read_status(struct grpc_server_config *cfg, __u64 st, __u32 *code)
{
	__u64 ok = cfg->status_ok;
	int r;

	if (st && st == ok) {
		*code = 0;
		return 0;
	}
	r = go_chain_u32(st, &cfg->status_code, code);
	if (!ok && cfg->status_ok_var && go_read_u64(cfg->status_ok_var, &ok) == 0 && ok)
		cfg->status_ok = ok;
	return r;
}

static __always_inline int finish(struct pt_regs *ctx, int via_serve_http)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct grpc_server_config *cfg = CONFIG_OF_TGID(grpc_server_config, tgid);
	__u64 t = GO_ARG1(ctx), s = GO_ARG2(ctx), st = GO_ARG3(ctx), addr, start_ns = 0, node = 0;
	__u64 *start;
	struct start_slot *slot;
	struct ctx_stream req = {};
	int joined = 0;
	struct stream_key key = {}, started = {};
	struct grpc_server_trace_event *tev = NULL;
	struct server_stage_value *sg = NULL;
	struct grpc_server_event *ev;
	struct conn_facts f;
	__u32 staged = 0;
	struct go_window win;
	__u64 method[2] = {};
	__u32 code = 0;
	int trunc = 0, r, conn_r = -3, in_window = 0;

	if (!cfg)
		return 0;
	key.tgid = tgid;
	if (via_serve_http) {
		/* Its start is the HTTP/2 request's (srv_common.h: the join). A repeat is told
		 * by the entry itself: a goroutine's last key is no proof here, since a reused
		 * goroutine can end a new stream with the same (recycled conn, id). */
		if (go_chain_u64(t, &cfg->ht_ctx, &addr) == 0) {
			joined = ctx_join(tgid, addr, &req);
			if (cfg->trace)
				node = request_ctx_of(tgid, addr);
		}
		if (joined < 0) {
			stat_inc(STAT_DUP_END); /* grpc's own second writeStatus */
			return 0;
		}
		if (joined) {
			key = req.stream;
			start_ns = req.start_ns;
		} else {
			key.conn = t; /* not joined: (ht, 0), unmatched; a repeat is a 2nd one */
		}
	} else {
		conn_r = conn_of(cfg, tgid, t, &f);
		if (cfg->sw_on &&
		    go_window_read(s + cfg->sw_lo, &win,
				   go_max_u32(cfg->sw_id + 4, cfg->sw_method + 16)) == 0) {
			in_window = 1;
			key.stream_id = go_window_u32(&win, cfg->sw_id);
			method[0] = go_window_u64(&win, cfg->sw_method);
			method[1] = go_window_u64(&win, cfg->sw_method + 8);
		} else if (go_chain_u32(s, &cfg->stream_id, &key.stream_id)) {
			stat_inc(STAT_BAD_READ);
			return 0;
		}
		if (framer_of(cfg, t, &f, conn_r, &key.conn)) {
			stat_inc(STAT_BAD_READ);
			return 0;
		}
		/* Its slot, else the repeat filter, else the LRU tier (start_slots.h). */
		slot = slot_get(SLOTS(grpc_server_slots), &key);
		if (slot) {
			start = slot->val;
		} else if (end_repeats(ctx, &key, cfg->gen)) {
			stat_inc(STAT_DUP_END); /* a repeat of the end just reported: not a new RPC */
			return 0;
		} else {
			start = bpf_map_lookup_elem(&grpc_server_inflight, &key);
		}
		if (start) {
			start_ns = *start;
			if (cfg->trace) {
				started = key; /* its traceparent, if any: taken below */
				if (go_chain_u64(s, &cfg->stream_ctx, &addr) == 0)
					node = request_ctx_of(tgid, addr);
			}
			if (slot) {
				slot_release(slot, &key);
				end_repeats(ctx, &key, cfg->gen);
			} else {
				bpf_map_delete_elem(&grpc_server_inflight, &key);
			}
		}
		key.conn = t; /* reported: the transport (the framer is its 1:1 in-flight key) */
	}
	if (cfg->trace) {
		tev = reserve_zeroed(&events, sizeof(*tev));
		ev = tev ? &tev->ev : NULL;
	} else {
		sg = stage_claim(&server_stage);
		if (sg) {
			staged = stage_next(sg->head.count);
			ev = &sg->rec[staged];
			__builtin_memset(ev, 0, sizeof(*ev));
		} else {
			ev = reserve_zeroed(&events, sizeof(*ev)); /* claimed: sent alone */
		}
	}
	if (!ev)
		return 0;
	ev->type = EV_GRPC_SERVER;
	ev->tgid = tgid;
	ev->transport = key.conn;
	ev->stream_id = key.stream_id;
	ev->end_ns = bpf_ktime_get_ns();
	ev->start_ns = start_ns;
	if (!start_ns) {
		ev->flags |= SPAN_F_UNMATCHED;
		stat_inc(STAT_UNMATCHED_END);
	}
	r = read_status(cfg, st, &code);
	if (r < 0)
		ev->flags |= SPAN_F_BAD_READ;
	ev->status_code = r ? 0 : code;
	read_method(s, &cfg->stream_method, in_window ? method : NULL, ev->method, &ev->method_len,
		    &ev->flags);
	if (via_serve_http) {
		ev->flags |= SPAN_F_VIA_SERVE_HTTP;
		if (go_chain_addr(t, &cfg->ht_host, &addr) == 0 &&
		    go_read_string(addr, ev->host, sizeof(ev->host), &ev->host_len, &trunc) == 0) {
			if (trunc)
				ev->flags |= SPAN_F_HOST_TRUNCATED;
		}
	} else {
		if (conn_r == -1)
			ev->flags |= SPAN_F_BAD_READ; /* the TCPAddr unreadable */
		if (conn_r >= 0) {
			__builtin_memcpy(ev->local_ip, f.ip, sizeof(f.ip));
			ev->local_port = f.port;
		}
	}
	if (tev)
		trace_end(cfg, t, tev, node, &started);
	if (ev->flags & SPAN_F_BAD_READ)
		stat_inc(STAT_BAD_READ);
	if (!sg) {
		submit_batched(&events, ev);
		return 0;
	}
	STAGE_COMMIT(sg, staged, &events);
	return 0;
}

/* At each RET of transport.NewServerTransport (conn net.Conn, ...) (ServerTransport, error):
 * the new connection's listener address goes into the cache (conn_cache.h) before any RPC
 * can run on it; the *http2Server is the interface's data word (RBX). Once per connection;
 * a failed construction returns nil. */
SEC("uprobe")
int grpc_server_conn(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct grpc_server_config *cfg = CONFIG_FIND(grpc_server_config, tgid);
	struct conn_src src;
	__u64 t = GO_ARG2(ctx);

	if (!cfg || !t)
		return 0;
	conn_src_of(cfg, &src);
	conn_facts_note(&conn_local, tgid, t, &src);
	return 0;
}

SEC("uprobe")
int grpc_server_write_status(struct pt_regs *ctx)
{
	return finish(ctx, 0);
}

SEC("uprobe")
int grpc_server_write_status_ht(struct pt_regs *ctx)
{
	return finish(ctx, 1);
}

/* Header fields of an earlyAbortStream.hf searched for "grpc-status" (grpc-go puts it 3rd). */
#define EAS_HF_MAX 8

/* The code of a v1.79+ earlyAbortStream: the decimal value of its "grpc-status" field.
 * Returns 0 and sets *code, 1 when no such field is among the first EAS_HF_MAX, -1 on a
 * failed read or a value that is not 1-2 digits. */
static __always_inline int eas_hf_code(const struct grpc_server_config *cfg, __u64 eas,
				       __u32 *code)
{
	static const char want[] = "grpc-status";
	__u64 sl[2] = {}, str[2] = {}, elem;
	char name[sizeof(want) - 1], val[2];

	if (bpf_probe_read_user(sl, sizeof(sl), (const void *)(eas + cfg->eas_hf)))
		return -1;
	for (int i = 0; i < EAS_HF_MAX; i++) {
		int same = 1;

		if (i >= sl[1])
			break;
		elem = sl[0] + (__u64)i * cfg->hf_stride;
		if (bpf_probe_read_user(str, sizeof(str), (const void *)(elem + cfg->hf_name)))
			return -1;
		if (str[1] != sizeof(name) || !str[0])
			continue;
		if (bpf_probe_read_user(name, sizeof(name), (const void *)str[0]))
			return -1;
		for (int j = 0; j < sizeof(name); j++)
			if (name[j] != want[j])
				same = 0;
		if (!same)
			continue;
		if (bpf_probe_read_user(str, sizeof(str), (const void *)(elem + cfg->hf_value)))
			return -1;
		if (!str[0] || str[1] < 1 || str[1] > 2 ||
		    bpf_probe_read_user(val, str[1] == 1 ? 1 : 2, (const void *)str[0]))
			return -1;
		if (val[0] < '0' || val[0] > '9')
			return -1;
		*code = val[0] - '0';
		if (str[1] == 2) {
			if (val[1] < '0' || val[1] > '9')
				return -1;
			*code = *code * 10 + (val[1] - '0');
		}
		return 0;
	}
	return 1;
}

SEC("uprobe")
int grpc_server_early_abort(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct grpc_server_config *cfg = CONFIG_OF_TGID(grpc_server_config, tgid);
	__u64 eas = GO_ARG2(ctx);
	struct grpc_server_reject_event *ev;
	__u32 code = 2; /* codes.Unknown until read */
	int r = -1;

	if (!cfg)
		return 0;
	ev = reserve_zeroed(&events, sizeof(*ev));
	if (!ev)
		return 0;
	ev->type = EV_GRPC_SERVER_REJECTED;
	ev->tgid = tgid;
	ev->loopy = GO_ARG1(ctx);
	ev->ts_ns = bpf_ktime_get_ns();
	if (go_read_u32(eas + cfg->eas_stream_id, &ev->stream_id)) {
		ev->flags |= SPAN_F_BAD_READ;
	} else {
		/* operateHeaders started it; no writeStatus will end it: drop the start. */
		struct stream_key key = { .tgid = tgid, .stream_id = ev->stream_id };

		if (go_read_u64(ev->loopy + cfg->loopy_framer, &key.conn) == 0) {
			slot_drop(SLOTS(grpc_server_slots), &grpc_server_inflight, &key);
			if (cfg->trace)
				bpf_map_delete_elem(&srv_traceparent, &key);
		}
	}
	if (cfg->eas_code.valid) {
		r = go_chain_u32(eas, &cfg->eas_code, &code);
		if (r > 0) { /* nil status: OK, like (*Status).Code (grpc-go never sends it) */
			code = 0;
			r = 0;
		}
	} else if (cfg->hf_stride) {
		r = eas_hf_code(cfg, eas, &code);
	}
	if (r) {
		code = 2;
		ev->flags |= SPAN_F_BAD_READ;
	}
	ev->status_code = code;
	if (ev->flags & SPAN_F_BAD_READ)
		stat_inc(STAT_BAD_READ);
	submit_batched(&events, ev);
	return 0;
}
