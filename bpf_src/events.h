/* Ring-buffer record types shared by every probe and by Python.
 *
 * This header is the one declaration of each record layout (DESIGN.md rule 5); the
 * per-process config structs are in config.h. Python reads this very text into cffi's
 * cdef (pyhttp2probe/events.py, followed by config.h), so keep it cdef-friendly:
 * fixed-width __uNN types only, no macros inside structs except plain integer #define
 * constants (Python substitutes them), no bitfields, no includes.
 * BPF programs include vmlinux.h (which defines __uNN) before this file.
 */
#ifndef PYHTTP2PROBE_EVENTS_H
#define PYHTTP2PROBE_EVENTS_H

/* Record types: the first __u32 of every ring-buffer record. */
#define EV_GRPC_CLIENT 1
#define EV_GRPC_SERVER 2
#define EV_HTTP2_CLIENT 3
#define EV_HTTP2_SERVER 4
#define EV_GRPC_SERVER_REJECTED 5
#define EV_PROC_EXEC 6         /* discovery.bpf.c: a process exec'd (struct proc_life_event) */
#define EV_PROC_EXIT 7         /* discovery.bpf.c: a whole process exited (struct proc_life_event) */
/* traces on: the same records followed by what spans join by (struct *_trace_event below) */
#define EV_GRPC_CLIENT_TRACED 8
#define EV_GRPC_SERVER_TRACED 9
#define EV_HTTP2_CLIENT_TRACED 10
#define EV_HTTP2_SERVER_TRACED 11
/* gRPC client, the common case: the method is a string literal in the binary's read-only
 * data (generated clients pass a constant), sent by address (struct grpc_client_lit_event) */
#define EV_GRPC_CLIENT_LIT 12

/* Bounded copies of Go strings: gRPC method and dial target; HTTP/2 request fields.
 * Powers of two: the string reader masks lengths with them for the verifier. */
#define GO_STR_MAX 128
#define H2_METHOD_MAX 16
#define H2_HOST_MAX 64
#define H2_PATH_MAX 128
/* A W3C traceparent of version 00 is exactly 55 characters; one more keeps records 8-aligned. */
#define TRACEPARENT_LEN 56

/* The `flags` of every record: one set of bits for all span kinds. Python names a bit by
 * its name after SPAN_F_, lowercased (pyhttp2probe/spans.py flag_names). */
#define SPAN_F_UNMATCHED 1           /* end without a start: start_ns is 0 */
#define SPAN_F_BAD_READ 2            /* some user-memory read failed; fields may be 0 */
#define SPAN_F_NO_STREAM 4           /* gRPC client: failed before any transport stream */
#define SPAN_F_STATUS_GUESSED 8      /* gRPC client: error neither a status nor in the stream */
#define SPAN_F_METHOD_TRUNCATED 16
#define SPAN_F_TARGET_TRUNCATED 32
#define SPAN_F_HOST_TRUNCATED 64
#define SPAN_F_PATH_TRUNCATED 128
#define SPAN_F_VIA_SERVE_HTTP 256    /* gRPC served by (*grpc.Server).ServeHTTP */
#define SPAN_F_ERROR 512             /* HTTP/2: the request ended with an error */
#define SPAN_F_NO_RESPONSE 1024      /* client: none received; server: none sent (panic) */
#define SPAN_F_PANIC 2048            /* HTTP/2 server: the handler panicked (stream reset) */

/* Indexes of the loss/health counters of each object (map "stats", common.h). */
#define STAT_RINGBUF_FULL 0   /* ring buffer reservation failed: record lost */
#define STAT_UNMATCHED_END 1  /* end without an in-flight start (evicted or attached late) */
#define STAT_DUP_END 2        /* a concurrent duplicate end lost the race: dropped */
#define STAT_BAD_READ 3       /* a user-memory read failed */
#define STAT_START_REUSED 4   /* a start found a stale entry for the same key: overwritten */
#define STAT_NO_CONFIG 5      /* probe hit in a process without config */
#define STAT_STATUS_GUESSED 6 /* status code guessed as Unknown */
/* http2.bpf.c: HTTP/2 client requests that ended before they had a stream id (canceled or
 * failed while waiting for a connection slot): no span, counted. */
#define STAT_H2_NO_STREAM 7
#define STAT_MAX 8

/* Which HTTP/2 implementation a record came from (http2_event.flavor; also the attach
 * cookie and the low byte of http2_config's key).
 * net/http's own HTTP/2: h2_bundle.go (net/http.(*http2...)) up to Go 1.26,
 * net/http/internal/http2 from Go 1.27; a binary links one of the two. */
#define H2_FLAVOR_BUNDLED 0
#define H2_FLAVOR_XNET 1            /* golang.org/x/net/http2 */

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

/* The same call as struct grpc_client_event when it had a stream and its method is a Go
 * string literal: method_addr (in the traced process) and method_len name the method, and
 * Python reads its bytes from the binary's read-only data (config.h lit_lo..lit_hi) once
 * per method. 80 bytes, not 400: a record's bytes cost the probe time (the ring's cache
 * lines), and the copy of the method is a user-memory read saved. The address is an
 * interned id of the method: equal for every call of it, so it is also the label key. */
struct grpc_client_lit_event {
	__u32 type;                     /* EV_GRPC_CLIENT_LIT */
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
	__u8 peer_ip[16];
	__u64 method_addr;
};

/* One finished server RPC. Identity: (tgid, transport, stream_id). Through ServeHTTP it is
 * the HTTP/2 request's: (tgid, *serverConn, HTTP/2 stream id); when that join fails
 * (SPAN_F_UNMATCHED) it is (tgid, *serverHandlerTransport, 0). */
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
struct grpc_server_reject_event {
	__u32 type;
	__u32 tgid;
	__u64 loopy;                    /* the connection's *loopyWriter */
	__u64 ts_ns;
	__u32 stream_id;
	__u32 status_code;
	__u32 flags;                    /* SPAN_F_BAD_READ: code unread, reported as 2 */
	__u32 _pad;
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
	__u64 method_addr;              /* a method that is a literal of the binary (GET, POST
					 * from hpack's static table; a client's constant): its
					 * address, method[] left empty (grpc_client_lit_event) */
	char method[H2_METHOD_MAX];
	char host[H2_HOST_MAX];
	char path[H2_PATH_MAX];
};

/* ---- traces on (the config's `trace`): the same records, and what spans join by ----
 * (bpf_src/trace_ctx.h, pyhttp2probe/traces.py). Each is the plain record followed by the
 * join fields, under a type of its own, so with traces off a record is as small as ever:
 * the bytes a probe writes cost it time (56 more bytes on the gRPC server's end measured
 * +0.3-0.5 us per hit on this machine). */
struct grpc_client_trace_event {
	struct grpc_client_event ev;    /* ev.type: EV_GRPC_CLIENT_TRACED */
	__u64 ctx_node;                 /* the server request context it was made under, 0: none */
	__u8 local_ip[16];              /* the connection's local (client) address */
	__u16 local_port;
	__u16 _pad[3];
};

struct grpc_server_trace_event {
	struct grpc_server_event ev;    /* ev.type: EV_GRPC_SERVER_TRACED */
	__u64 ctx_node;                 /* the request's own context */
	__u8 remote_ip[16];             /* the client's address */
	__u16 remote_port;
	__u16 _pad[3];
	char traceparent[TRACEPARENT_LEN]; /* the incoming W3C header, as sent; "" if none */
};

struct http2_trace_event {
	struct http2_event ev;          /* ev.type: EV_HTTP2_CLIENT_TRACED or _SERVER_TRACED */
	__u64 ctx_node;                 /* server: the request's own context; client: the server
					 * request context it was made under (0: none) */
	char traceparent[TRACEPARENT_LEN]; /* server: the incoming W3C header; "" if none */
};

/* Process discovery (discovery.bpf.c): one record per exec and per whole-process exit, on
 * every process of the node, so it stays small (32 B) and carries no strings: the agent
 * reads /proc/PID/exe itself for the processes it cares about.
 * Identity of a process is (tgid, start_boottime_ns): pids are reused. start_boottime_ns
 * is task->start_boottime (ns since boot, suspend included), the value /proc/PID/stat
 * field 22 (starttime) shows in clock ticks: starttime = start_boottime_ns /
 * (1e9 / sysconf(_SC_CLK_TCK)), truncated (fs/proc/array.c nsec_to_clock_t; USER_HZ 100
 * gives 10 ms ticks). Pids are the initial pid namespace's. */
struct proc_life_event {
	__u32 type;                     /* EV_PROC_EXEC or EV_PROC_EXIT */
	__u32 tgid;
	__u32 ppid;                     /* exec: the parent's tgid (real_parent); exit: 0 */
	__u32 _pad;
	__u64 ts_ns;                    /* bpf_ktime_get_boot_ns() at the event */
	__u64 start_boottime_ns;        /* the process's start, as above */
};

#endif /* PYHTTP2PROBE_EVENTS_H */
