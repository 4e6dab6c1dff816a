/* Per-process config types: the offsets Python writes from a process's attach plan into
 * each object's tgid-keyed config maps (common.h CONFIG_MAPS: a slot table first, a hash
 * map for the rest), so one loaded object serves many binaries.
 *
 * Like events.h, Python reads this very text into cffi's cdef (after events.h), so keep it
 * cdef-friendly: fixed-width __uNN types only, no macros inside structs except plain
 * integer #define constants, no bitfields, no includes. Self-sufficient: it needs nothing
 * from events.h. BPF programs include vmlinux.h (which defines __uNN) before this file.
 */
#ifndef PYHTTP2PROBE_CONFIG_H
#define PYHTTP2PROBE_CONFIG_H

/* Pointer hops a field chain may follow before its last offset. */
#define GO_CHAIN_MAX 4

/* A field reached from a base address: follow `nhops` pointer fields (hop[0..nhops-1]),
 * then add `last`. Embedded-by-value fields are folded into offsets by Python; embedded
 * pointers are hops. `valid` is 0 when the plan lacks the field: the read is skipped. */
struct go_chain {
	__u32 valid;
	__u32 nhops;
	__u32 hop[GO_CHAIN_MAX];
	__u32 last;
	__u32 _pad;
};

/* grpc_client.bpf.c, keyed by tgid. */
struct grpc_client_config {
	__u64 status_error_fn;          /* runtime addr of internal/status.(*Error).Error */
	__u32 itab_fun0;                /* offset of fun[0] in runtime.itab (24 on amd64) */
	__u32 cs_finished;              /* clientStream.finished (bool) */
	__u32 cs_attempt;               /* clientStream.attempt (*csAttempt) */
	__u32 attempt_stream;           /* csAttempt.s / csAttempt.transportStream */
	struct go_chain cs_method;      /* cs -> callHdr -> Method (Go string) */
	struct go_chain cs_target;      /* cs -> cc -> target (Go string) */
	struct go_chain stream_id;      /* stream -> id (uint32) */
	struct go_chain stream_ct;      /* stream -> ct (*http2Client) */
	struct go_chain stream_code;    /* stream -> status -> s -> Code (int32) */
	struct go_chain err_code;       /* *status.Error -> s -> s -> Code (int32) */
	struct go_chain ct_remote_addr; /* http2Client -> remoteAddr (net.Addr iface) */
	__u64 tcpaddr_network_fn;       /* runtime addr of net.(*TCPAddr).Network; 0: no check */
	__u32 tcpaddr_ip;               /* net.TCPAddr.IP (slice) */
	__u32 tcpaddr_port;             /* net.TCPAddr.Port (int) */
	__u32 ct_next_id;               /* http2Client.nextID: ablation probe only */
	__u32 wrap_error_err;           /* fmt.wrapError.err (error iface) */
	__u64 wrap_error_fn;            /* runtime addr of fmt.(*wrapError).Error; 0: not linked */
	/* traces on (trace_ctx.h) */
	__u32 trace;                    /* 1: read the trace context below; 0: none of it */
	__u32 cs_ctx;                   /* clientStream.ctx (context.Context iface) */
	struct go_chain ct_local_addr;  /* http2Client -> localAddr (net.Addr iface) */
	/* Learned by the probes, 0 from Python: itabs are never freed, so an itab seen once
	 * with the right fun[0] needs no second read of it (go_helpers.h). */
	__u64 tcpaddr_itab;             /* the (net.Addr, *net.TCPAddr) itab */
	__u64 status_error_itab;        /* the (error, *status.Error) itab */
	/* cs_finished and cs_attempt in one read of 64 bytes at cs + cs_window (8-aligned),
	 * when Python found both inside it (1) or not (0: two reads) */
	__u32 cs_window;
	__u32 cs_window_on;
	/* the stream's id, method (the call's, a string header) and, when sw_ct_on, ct in one
	 * window at stream + sw_lo (offsets from sw_lo; read up to its last field, within
	 * GO_WINDOW bytes); sw_on 0: chains */
	__u32 sw_on;
	__u32 sw_lo;
	__u32 sw_id;
	__u32 sw_method;
	__u32 sw_ct;
	__u32 sw_ct_on;
	/* the connection cache (conn_cache.h): on when its constructor probe is attached */
	__u32 conn_cache;
	__u32 conn_ret_reg;             /* the constructor's result: 1 RAX (*http2Client), 2 RBX
					 * (the data word of a ClientTransport, >= v1.69) */
	/* random per attach (Python): the keys of per-connection and per-goroutine state mix it
	 * in, so a process that reuses a traced process's pid never meets its entries */
	__u64 gen;
	/* the binary's .rodata in the process, [lit_lo, lit_hi): a method string there is a
	 * literal, sent by address (struct grpc_client_lit_event); 0, 0: always copied */
	__u64 lit_lo;
	__u64 lit_hi;
	/* 1: calls with an attempt end at the CALL of (*csAttempt).finish in finish() (program
	 * grpc_client_end_attempt), so grpc_client_end ends only calls without one */
	__u32 end_at_attempt;
	__u32 attempt_cs;               /* csAttempt.cs (*clientStream) */
	/* attempt_cs and attempt_stream in one read at attempt + aw_lo (up to the later one,
	 * within 64 bytes) (1), or two reads (0) */
	__u32 aw_lo;
	__u32 aw_on;
	/* 1: grpc_client_start runs once per call (a CALL before its first attempt), so it
	 * need not read cs.attempt; 0: at newAttemptLocked's entry, once per attempt */
	__u32 start_first;
	/* 1: the attempt's transport (csAttempt.t's data word, the *http2Client its stream was
	 * made on) is in the aw_lo window too, at aw_ct from aw_lo: the end takes the
	 * connection from there instead of reading it from the stream (a cold line) */
	__u32 aw_ct_on;
	__u32 aw_ct;
	__u32 _pad_aw;
};

/* grpc_server.bpf.c, keyed by tgid. */
struct grpc_server_config {
	struct go_chain stream_id;      /* *ServerStream (or *Stream) -> id (uint32) */
	struct go_chain stream_method;  /* *ServerStream (or *Stream) -> method (Go string) */
	struct go_chain status_code;    /* *status.Status -> s -> Code (int32) */
	struct go_chain t_local_addr;   /* *http2Server -> localAddr (net.Addr iface) */
	struct go_chain ht_host;        /* *serverHandlerTransport -> req -> Host (Go string) */
	__u64 tcpaddr_network_fn;       /* runtime addr of net.(*TCPAddr).Network; 0: no check */
	__u32 itab_fun0;                /* offset of fun[0] in runtime.itab (24 on amd64) */
	__u32 tcpaddr_ip;               /* net.TCPAddr.IP (slice) */
	__u32 tcpaddr_port;             /* net.TCPAddr.Port (int) */
	__u32 eas_stream_id;            /* earlyAbortStream.streamID (uint32) */
	struct go_chain eas_code;       /* *earlyAbortStream -> status -> s -> Code (< v1.79) */
	__u32 eas_hf;                   /* earlyAbortStream.hf ([]hpack.HeaderField, >= v1.79) */
	__u32 hf_stride;                /* sizeof(hpack.HeaderField); 0: no hf layout */
	__u32 hf_name;                  /* HeaderField.Name (string) */
	__u32 hf_value;                 /* HeaderField.Value (string) */
	/* START at (*http2Server).operateHeaders(t, [ctx,] frame *MetaHeadersFrame, ...) */
	__u32 frame_arg;                /* Go argument number of frame: 2 (< v1.60) or 4 */
	__u32 t_framer;                 /* http2Server.framer: in-flight key, shared by loopy */
	__u32 loopy_framer;             /* loopyWriter.framer */
	__u32 fh_type;                  /* FrameHeader.Type (uint8), from the header */
	__u32 fh_stream_id;             /* FrameHeader.StreamID (uint32), from the header */
	__u32 _pad;
	struct go_chain frame_header;   /* *MetaHeadersFrame -> *HeadersFrame -> FrameHeader */
	struct go_chain ht_ctx;         /* *serverHandlerTransport -> req -> ctx (iface) */
	/* traces on (trace_ctx.h) */
	__u32 trace;                    /* 1: read the trace context below; 0: none of it */
	__u32 frame_fields;             /* MetaHeadersFrame.Fields ([]hpack.HeaderField) */
	__u32 t_ctx;                    /* http2Server.ctx data word (< v1.60: the conn context) */
	__u32 _pad2;
	struct go_chain stream_ctx;     /* *ServerStream (or *Stream) -> ctx data word */
	struct go_chain t_remote_addr;  /* *http2Server -> remoteAddr (net.Addr iface) */
	__u64 tcpaddr_itab;             /* learned: as in grpc_client_config */
	/* the stream's id and method (a string header) in one window at s + sw_lo (offsets
	 * from sw_lo; read up to its last field, within GO_WINDOW bytes); sw_on 0: the chains
	 * above */
	__u32 sw_on;
	__u32 sw_lo;
	__u32 sw_id;
	__u32 sw_method;
	/* the connection cache (conn_cache.h): on when its constructor probe is attached at
	 * NewServerTransport's RETs (the *http2Server: the ServerTransport's data word, RBX) */
	__u32 conn_cache;
	__u32 _pad3;
	/* random per attach (Python): the keys of per-connection and per-goroutine state mix it
	 * in, so a process that reuses a traced process's pid never meets its entries */
	__u64 gen;
	/* grpc.statusOK, the *status.Status every OK RPC ends with (package-level, set once at
	 * init, never freed): the variable's address in the process (Python, from .symtab; 0
	 * in a stripped binary) and its value, learned by the end once init has set it (0
	 * from Python). An end given that very pointer is OK without reading it. */
	__u64 status_ok_var;
	__u64 status_ok;
};

/* http2.bpf.c, per (process, flavor): keyed by tgid << 8 | flavor (H2_FLAVOR_* of
 * events.h), since one process may link both HTTP/2 implementations. */
struct http2_config {
	/* server: runHandler(sc, rw, req, h) entry and (*responseWriter).handlerDone(w) entry */
	struct go_chain rw_stream_id;   /* *responseWriter -> rws -> stream -> id */
	__u32 w_rws;                    /* responseWriter.rws */
	__u32 rws_conn;                 /* responseWriterState.conn (*serverConn) */
	__u32 rws_req;                  /* responseWriterState.req (*Request) */
	__u32 rws_status;               /* responseWriterState.status (int) */
	struct go_chain rws_stream_id;  /* *responseWriterState -> stream -> id */
	/* client: (*clientStream).encodeAndWriteHeaders(req) and cleanupWriteRequest(err) */
	__u32 cs_cc;                    /* clientStream.cc (*ClientConn) */
	__u32 cs_id;                    /* clientStream.ID (uint32) */
	__u32 cs_res;                   /* clientStream.res (*Response) */
	/* net/http and net/url (shared by both flavors) */
	__u32 res_status;               /* Response.StatusCode (int) */
	__u32 req_method;               /* Request.Method (string) */
	__u32 req_url;                  /* Request.URL (*url.URL) */
	__u32 req_host;                 /* Request.Host (string) */
	__u32 url_host;                 /* url.URL.Host (string) */
	__u32 url_path;                 /* url.URL.Path (string) */
	__u32 cs_read_closed;           /* clientStream.readClosed (bool); 0: not in the plan */
	__u32 req_ctx;                  /* server request's context (iface): Request.ctx */
	__u32 req_ctx_valid;            /* 0: no context offset, no ServeHTTP join */
	__u32 rws_req_inline;           /* 1: responseWriterState.req is a request value (Go 1.27) */
	/* client request fields: the server's request type's unless they differ (Go 1.27) */
	__u32 creq_method;
	__u32 creq_url;
	__u32 creq_host;
	__u32 rws_sent_header;          /* responseWriterState.sentHeader (bool); 0: unknown */
	/* traces on (trace_ctx.h) */
	__u32 trace;                    /* 1: note contexts; 0: none of it */
	__u32 creq_ctx;                 /* client request's context (iface) */
	__u32 req_header;               /* server request's Header (map[string][]string) */
	__u32 header_map;               /* HDR_MAP_* of http2.bpf.c: how Go lays maps out */
	__u64 gen;                      /* random per attach: as in grpc_client_config */
	/* server end: responseWriterState's stream, conn, status (and req when a pointer) in
	 * one window at rws + rws_lo (offsets from rws_lo; read up to its last field, within
	 * GO_WINDOW bytes); 0: field reads */
	__u32 rws_window_on;
	__u32 rws_lo;
	__u32 rws_w_stream;
	__u32 rws_w_conn;
	__u32 rws_w_status;
	__u32 rws_w_req;
	__u32 stream_id;                /* stream.id (uint32): + *stream, the in-flight key */
	/* client: clientStream's cc and ID in one window at cs + cs_key_lo (offsets from
	 * cs_key_lo; read up to its last field, within GO_WINDOW bytes); 0: two reads */
	__u32 cs_key_win_on;
	__u32 cs_key_lo;
	__u32 cs_w_cc;
	__u32 cs_w_id;
	__u32 _pad_cs;
	/* the binary's .rodata in the process (grpc_client_config's lit_lo, lit_hi): a method
	 * there goes by address; 0, 0: always copied */
	__u64 lit_lo;
	__u64 lit_hi;
};

#endif /* PYHTTP2PROBE_CONFIG_H */
