/* Record and config types shared by every probe and by Python.
 *
 * This header is the one declaration of each layout (DESIGN.md rule 5). Python reads this
 * very text into cffi's cdef (pyhttp2probe/events.py), so keep it cdef-friendly:
 * fixed-width __uNN types only, no macros inside structs except plain integer
 * #define constants (Python substitutes them), no bitfields, no includes.
 * BPF programs include vmlinux.h (which defines __uNN) before this file.
 */
#ifndef PYHTTP2PROBE_EVENTS_H
#define PYHTTP2PROBE_EVENTS_H

/* Record types: the first __u32 of every ring-buffer record. */
#define EV_GRPC_CLIENT 1

/* Bounded copies of Go strings (method, dial target). */
#define GO_STR_MAX 128
/* Pointer hops a field chain may follow before its last offset. */
#define GO_CHAIN_MAX 4

/* grpc_client_event.flags */
#define GRPC_FLAG_NO_STREAM 1        /* failed before any transport stream existed */
#define GRPC_FLAG_STATUS_GUESSED 2   /* error was neither a status error nor in the stream */
#define GRPC_FLAG_METHOD_TRUNCATED 4
#define GRPC_FLAG_UNMATCHED 8        /* end without a start: start_ns is 0 */
#define GRPC_FLAG_TARGET_TRUNCATED 16
#define GRPC_FLAG_BAD_READ 32        /* some user-memory read failed; fields may be 0 */

/* Indexes of the per-CPU loss/health counters (map "stats"). */
#define STAT_RINGBUF_FULL 0   /* ring buffer reservation failed: record lost */
#define STAT_UNMATCHED_END 1  /* end without an in-flight start (evicted or attached late) */
#define STAT_DUP_END 2        /* a concurrent duplicate end lost the race: dropped */
#define STAT_BAD_READ 3       /* a user-memory read failed */
#define STAT_START_REUSED 4   /* a start found a stale entry for the same key: overwritten */
#define STAT_NO_CONFIG 5      /* probe hit in a process without config */
#define STAT_STATUS_GUESSED 6 /* status code guessed as Unknown */
#define STAT_MAX 8

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

/* Per-process config for grpc_client.bpf.c, keyed by tgid: offsets from the attach plan. */
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
	__u32 _pad;
};

/* One finished gRPC client call. Identity reported to users: (tgid, transport, stream_id);
 * calls that never got a stream have transport 0 and are told apart by cs. */
struct grpc_client_event {
	__u32 type;
	__u32 tgid;
	__u64 transport;
	__u64 cs;
	__u64 start_ns;
	__u64 end_ns;
	__u32 stream_id;
	__u32 status_code;
	__u32 flags;
	__u16 peer_port;
	__u16 method_len;
	__u8 peer_ip[16];               /* IPv6 or IPv4-mapped IPv6 */
	__u16 target_len;
	__u16 _pad[3];
	char method[GO_STR_MAX];
	char target[GO_STR_MAX];
};

/* ==== Section: gRPC server and generic HTTP/2 (grpc_server.bpf.c, http2.bpf.c) ==== */

#define EV_GRPC_SERVER 2
#define EV_HTTP2_CLIENT 3
#define EV_HTTP2_SERVER 4

/* Bounded copies for HTTP/2 request fields. */
#define H2_METHOD_MAX 16
#define H2_HOST_MAX 64
#define H2_PATH_MAX 128

/* grpc_server_event.flags and http2_event.flags */
#define SRV_FLAG_UNMATCHED 1        /* end without a start: start_ns is 0 */
#define SRV_FLAG_BAD_READ 2         /* some user-memory read failed; fields may be 0 */
#define SRV_FLAG_METHOD_TRUNCATED 4
#define SRV_FLAG_HOST_TRUNCATED 8
#define SRV_FLAG_PATH_TRUNCATED 16
#define SRV_FLAG_VIA_SERVE_HTTP 32  /* gRPC served by (*grpc.Server).ServeHTTP */
#define SRV_FLAG_ERROR 64           /* HTTP/2 client: the request ended with an error */
#define SRV_FLAG_NO_RESPONSE 128    /* client: none received; server: none sent (panic) */
#define SRV_FLAG_PANIC 256          /* HTTP/2 server: the handler panicked (stream reset) */

/* http2.bpf.c: HTTP/2 client requests that ended before they had a stream id (canceled or
 * failed while waiting for a connection slot): no span, counted (index of map "stats"). */
#define STAT_H2_NO_STREAM 7

/* Which HTTP/2 implementation a probe belongs to (attach cookie, config key low byte). */
/* net/http's own HTTP/2: h2_bundle.go (net/http.(*http2...)) up to Go 1.26,
 * net/http/internal/http2 from Go 1.27; a binary links one of the two. */
#define H2_FLAVOR_BUNDLED 0
#define H2_FLAVOR_XNET 1            /* golang.org/x/net/http2 */

/* Per-process config for grpc_server.bpf.c, keyed by tgid. */
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
};

/* One finished server RPC. Identity: (tgid, transport, stream_id). Through ServeHTTP it is
 * the HTTP/2 request's: (tgid, *serverConn, HTTP/2 stream id); when that join fails
 * (SRV_FLAG_UNMATCHED) it is (tgid, *serverHandlerTransport, 0). */
struct grpc_server_event {
	__u32 type;
	__u32 tgid;
	__u64 transport;
	__u64 start_ns;
	__u64 end_ns;
	__u32 stream_id;
	__u32 status_code;
	__u32 flags;
	__u16 local_port;
	__u16 method_len;
	__u8 local_ip[16];              /* IPv6 or IPv4-mapped IPv6; zero when unknown */
	__u16 host_len;                 /* ServeHTTP: the request's Host (listener address) */
	__u16 _pad[3];
	char method[GO_STR_MAX];
	char host[H2_HOST_MAX];
};

/* A gRPC server RPC rejected before any handler ran (InTapHandle error, bad content-type,
 * malformed headers): grpc-go answers it from the loopy writer goroutine through
 * (*loopyWriter).earlyAbortStreamHandler. No method is known there: counted, not spanned. */
#define EV_GRPC_SERVER_REJECTED 5
/* Header fields of an earlyAbortStream.hf searched for "grpc-status" (grpc-go puts it 3rd). */
#define EAS_HF_MAX 8

struct grpc_server_reject_event {
	__u32 type;
	__u32 tgid;
	__u64 loopy;                    /* the connection's *loopyWriter */
	__u64 ts_ns;
	__u32 stream_id;
	__u32 status_code;
	__u32 flags;                    /* SRV_FLAG_BAD_READ: code unread, reported as 2 */
	__u32 _pad;
};

/* Per-(process, flavor) config for http2.bpf.c, keyed by tgid << 8 | flavor. */
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
};

/* One finished HTTP/2 request (client or server, by type). Identity: (tgid, conn,
 * stream_id), conn being the *ClientConn or *serverConn. */
struct http2_event {
	__u32 type;
	__u32 tgid;
	__u64 conn;
	__u64 start_ns;
	__u64 end_ns;
	__u32 stream_id;
	__u32 status;                   /* HTTP status code; 0 when none was received */
	__u32 flags;
	__u8 flavor;                    /* H2_FLAVOR_* */
	__u8 _pad0;
	__u16 method_len;
	__u16 host_len;
	__u16 path_len;
	__u32 _pad1;
	char method[H2_METHOD_MAX];
	char host[H2_HOST_MAX];
	char path[H2_PATH_MAX];
};

/* ==== End of section: gRPC server and generic HTTP/2 ==== */

#endif /* PYHTTP2PROBE_EVENTS_H */
