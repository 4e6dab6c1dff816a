// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* http2: one span per HTTP/2 request, client and server, for net/http's own HTTP/2
 * (h2_bundle.go, symbols net/http.(*http2...), up to Go 1.26; net/http/internal/http2 from
 * Go 1.27, where x/net/http2 delegates to it) and golang.org/x/net/http2: 2 hits each.
 * The flavors share this code; each has its own programs (suffix _bundled / _xnet; Go 1.27's
 * internal package uses _bundled, a binary links one of the two) so the flavor is a
 * constant, and the config is keyed by tgid << 8 | flavor since one process may link both.
 * Go 1.27's request types differ from net/http.Request: the config carries per-side
 * request offsets and whether responseWriterState.req is a value.
 *
 * SERVER (same functions in both flavors since x/net v0.10 and Go 1.21 .. 1.26):
 *   START  entry of (*serverConn).runHandler(sc, rw, req, handler): sc=RAX, rw=RBX.
 *          Once per request, on the handler goroutine; rw.rws.stream.id is final (set by
 *          newStream on the serve goroutine before the handler goroutine started).
 *   END    entry of (*responseWriter).handlerDone(w): w=RAX. Called once, after the
 *          handler returned (not on handler panic: that stream is reset, no span). rws
 *          holds everything final: conn (sc), stream.id, status (0 = nothing written
 *          yet: handlerDone's flush writes 200), req (Method, URL.Path, Host).
 *          Read before handlerDone returns rws to its sync.Pool — reading it at the
 *          runHandler RET instead would race with the pool's next user.
 *   PANIC  a handler that panics skips handlerDone: its request ends where runHandler's
 *          recover asks for the stream reset (its call of writeFrameFromHandler, a
 *          call-site probe: see http2_server_panic), on that error path only.
 *   JOIN   runHandler also records the stream's context for gRPC's ServeHTTP end
 *          (srv_common.h), and handlerDone moves it to the ended map.
 *   HTTP/1.1 never reaches these functions: it produces no HTTP/2 span by construction.
 *   TLS and h2c both sit below serverConn, so both are covered the same way.
 * CLIENT:
 *   START  entry of (*clientStream).encodeAndWriteHeaders(cs, req): cs=RAX, req=RBX.
 *          writeRequest assigned cs.ID under cc.mu (addStreamLocked) on this same
 *          goroutine just before: final here. The request's method/host/path are copied
 *          here since RoundTrip's caller may reuse the Request once a response arrives.
 *   END    entry of (*clientStream).cleanupWriteRequest(cs, err): cs=RAX, err=RBX+RCX.
 *          doRequest calls it exactly once per stream, after END_STREAM from the peer or
 *          an abort/cancel/error; cs.res (response headers, StatusCode) is set by then if
 *          they arrived. Error = err != nil unless the response completed (res set and
 *          cs.readClosed): err may be a late context cancel that Go itself forgives.
 *          Rejected: forgetStreamID (id only, no stream), endStream (reader goroutine,
 *          misses aborts), handleResponse (a third hit).
 *          Requests that end before a stream id exists (cs.ID == 0 at cleanup) have no
 *          span; they are counted (STAT_H2_NO_STREAM).
 * Every probe sits just past the function's stack-growth check (Python places it), so it
 * fires once per call. Measured (tests, bench): run_cnt of each start == its end == the
 * number of requests, i.e. exactly 2 hits per request on each side.
 * Identity: (tgid, conn pointer (*serverConn / *ClientConn), stream id), read at the start,
 * where it is final, and reported from there. In-flight entries are keyed by an object of
 * the request's own that its ends reach without reading the stream: the server's by its
 * *stream (handlerDone reads it with the status, the panic's call has it as an argument),
 * the client's by its *clientStream (an argument of both). A read fewer per end (same-run
 * A/B: the server end ~60-80 ns). Entries are deleted by their end; a start overwrites a
 * stale entry (same reasoning as grpc_server.bpf.c).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "srv_common.h"
#include "start_slots.h"
#include "stage.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Per-(process, flavor) offsets: 1024 processes x 2 flavors. */
CONFIG_MAPS(http2_config, __u64, struct http2_config, 2048);

/* Server in-flight, keyed by (tgid, 0, the stream's address) (h2_server_key): start time,
 * the stream's context (its h2_ctx_live key, see srv_common.h), the responseWriter and the
 * stream id, read here where it is final so that no end reads the stream. 64k concurrent
 * requests per node (default MaxConcurrentStreams is 250 per connection); eviction shows as
 * an unmatched end. */
struct h2_server_start {
	__u64 start_ns;
	__u64 ctx;
	__u64 rw;      /* the *responseWriter: read by the panic end, which gets no rw */
	__u32 stream_id;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct stream_key);
	__type(value, struct h2_server_start);
} http2_server_inflight SEC(".maps");

/* Their first tier (start_slots.h's protocol, with the start in the slot, 56 B): the LRU
 * above takes a request only when its slot is held. Two tables as START_SLOTS's: 512 slots
 * (28 KiB, stays warm), then 16k. The config is keyed by tgid and flavor, so a detached
 * process's slots are freed by the sweepers alone. */
struct h2s_slot {
	__u64 tag;                 /* start_slots.h: 0 free, SLOT_BUSY, else slot_tag(key) */
	struct stream_key key;     /* tgid first: START_SLOTS_SWEEPER frees these too */
	struct h2_server_start st;
};

SLOT_TABLES(http2_server_slots, struct h2s_slot, HOT_SLOT_BITS, START_SLOT_BITS);

START_SLOTS_SWEEPER(http2_sweep, http2_server_slots);
START_SLOTS_SWEEPER(hot_http2_sweep, hot_http2_server_slots);

/* Client in-flight, keyed by (tgid, 0, *clientStream) (h2_client_key): start time, the
 * stream's identity and the request fields copied at start (~250 B each). */
struct h2_client_start {
	__u64 start_ns;
	__u64 conn;      /* its identity, (*ClientConn, stream id): read here, not at its end */
	__u32 stream_id;
	__u32 _pad;
	__u64 ctx_node;  /* traces on: the server request context it was made under */
	__u16 method_len;
	__u16 host_len;
	__u16 path_len;
	__u16 flags;   /* SPAN_F_* of the start: truncations, bad read (all below 1 << 16) */
	__u64 method_addr; /* a literal method's address (http2_event.method_addr), else 0 */
	char method[H2_METHOD_MAX];
	char text[H2_HOST_MAX + H2_PATH_MAX]; /* the host, its path right after it (read_request) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, struct stream_key);
	__type(value, struct h2_client_start);
} http2_client_inflight SEC(".maps");

/* Their first tier (start_slots.h's protocol, with the whole start in the slot): a start
 * claims its slot, fills it in place and publishes its tag; its end copies the request's
 * fields into the record and gives the slot back by compare-and-swap. The LRU map above
 * takes a request only when its slot is held: an LRU update and a lookup + delete cost
 * ~0.4 us of every client request here. Two tables, as start_slots.h's: 128 slots x 280 B
 * (35 KiB, stays warm: a start in the 1 MiB table alone paid ~50 ns more of cache and TLB
 * misses, same-run ablation), then 4k slots, where the client requests in flight on a node
 * (a few hundred) collide a few percent of the time. */
#ifndef H2C_SLOT_BITS /* tests/test_slot_tables.py builds with tiny tables */
#define H2C_SLOT_BITS 12
#endif
#ifndef H2C_HOT_BITS
#define H2C_HOT_BITS 7
#endif

struct h2c_slot {
	__u64 tag;                 /* start_slots.h: 0 free, SLOT_BUSY, else slot_tag(key) */
	struct stream_key key;     /* tgid first: START_SLOTS_SWEEPER frees these too */
	struct h2_client_start st;
};

SLOT_TABLES(http2_client_slots, struct h2c_slot, H2C_HOT_BITS, H2C_SLOT_BITS);

START_SLOTS_SWEEPER(hot_http2_client_sweep, hot_http2_client_slots);
START_SLOTS_SWEEPER(http2_client_sweep, http2_client_slots);

/* The slot holding the start of `key`, in the small table or the large one, else NULL. */
static __always_inline struct h2c_slot *h2c_find(const struct stream_key *key)
{
	return slot_find(&hot_http2_client_slots, H2C_HOT_BITS, &http2_client_slots,
			 H2C_SLOT_BITS, key);
}

/* Scratch for building a client start (too big for the 512 B BPF stack with the rest). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct h2_client_start);
} http2_scratch SEC(".maps");

/* One record per finished request, ~250 B; 8 MiB holds ~32k: half a second at peak. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} events SEC(".maps");

/* Records of traces-off ends wait in a per-CPU stage and go out 8 to a reservation
 * (stage.h); the agent runs the flusher. */
STAGE_MAP(h2_stage, struct http2_event);
STAGE_FLUSHER(flush_h2_stage, h2_stage, h2_stage_value, events);

/* Where a request type keeps Method, URL and Host (net/http.Request on both sides up to
 * Go 1.26; Go 1.27's internal package has a server and a client request type). */
struct req_offsets {
	__u32 method;
	__u32 url;
	__u32 host;
};

static __always_inline struct req_offsets server_req(const struct http2_config *cfg)
{
	return (struct req_offsets){ cfg->req_method, cfg->req_url, cfg->req_host };
}

static __always_inline struct req_offsets client_req(const struct http2_config *cfg)
{
	return (struct req_offsets){ cfg->creq_method, cfg->creq_url, cfg->creq_host };
}

/* Copy the request's Method (or, a literal of the binary, note its address), the host
 * (URL.Host, else Host) and URL.Path. `path` NULL (the client start): the path goes right
 * after the host's bytes (host[0 .. H2_HOST_MAX + H2_PATH_MAX)), and when the two are
 * adjacent in memory, as url.Parse leaves them (substrings of one URL), both come in one
 * read: the client start ~80 ns less (same-run A/B). Not on the server: :authority and
 * :path are separate strings there. */
static __always_inline int read_request(const struct http2_config *cfg, struct req_offsets o,
					__u64 req, __u64 *method_addr, char *method,
					__u16 *method_len, char *host, __u16 *host_len, char *path,
					__u16 *path_len, __u32 *flags)
{
	__u64 url = 0, w[4] = {};
	int trunc = 0, bad = 0, both = 0;
	__u32 n;

	if (!req)
		return -1;
	/* Method (a string header) and URL (a pointer) are adjacent in every Request layout
	 * (net/http's, Go 1.27's ServerRequest/ClientRequest), as URL's Host and Path are: one
	 * read each pair (a read costs ~0.1 us here), else one read per field. */
	if (o.url == o.method + 16 &&
	    bpf_probe_read_user(w, 3 * sizeof(__u64), (const void *)(req + o.method)) == 0) {
		url = w[2];
		if (w[1] && w[1] <= 0xffff && w[0] >= cfg->lit_lo && w[0] + w[1] <= cfg->lit_hi) {
			*method_addr = w[0]; /* read from the file by Python */
			*method_len = w[1];
		} else {
			bad |= go_copy_string(w[0], w[1], method, H2_METHOD_MAX, method_len,
					      &trunc) != 0;
		}
	} else {
		bad |= go_read_string(req + o.method, method, H2_METHOD_MAX, method_len, &trunc) != 0;
		bad |= go_read_u64(req + o.url, &url) != 0;
	}
	if (trunc)
		*flags |= SPAN_F_METHOD_TRUNCATED;
	if (url && cfg->url_path == cfg->url_host + 16 &&
	    bpf_probe_read_user(w, sizeof(w), (const void *)(url + cfg->url_host)) == 0) {
		if (!path && w[0] && w[1] && w[1] <= H2_HOST_MAX && w[3] && w[3] <= H2_PATH_MAX &&
		    w[2] == w[0] + w[1]) {
			n = w[1] + w[3];
			barrier_var(n);
			if (n <= H2_HOST_MAX + H2_PATH_MAX &&
			    bpf_probe_read_user(host, n, (const void *)w[0]) == 0) {
				*host_len = w[1];
				*path_len = w[3];
				both = 1;
			}
		}
		if (!both)
			bad |= go_copy_string(w[0], w[1], host, H2_HOST_MAX, host_len, &trunc) != 0;
	} else {
		w[2] = w[3] = 0;
		if (url && (go_read_string(url + cfg->url_host, host, H2_HOST_MAX, host_len,
					   &trunc) ||
			    bpf_probe_read_user(&w[2], 2 * sizeof(__u64),
						(const void *)(url + cfg->url_path))))
			bad = 1;
	}
	if (*host_len == 0 && go_read_string(req + o.host, host, H2_HOST_MAX, host_len, &trunc))
		bad = 1;
	if (trunc)
		*flags |= SPAN_F_HOST_TRUNCATED;
	if (!path) /* right after the host's bytes */
		path = host + go_clamp(*host_len, H2_HOST_MAX);
	if (url && !both && go_copy_string(w[2], w[3], path, H2_PATH_MAX, path_len, &trunc))
		bad = 1;
	if (trunc)
		*flags |= SPAN_F_PATH_TRUNCATED;
	if (bad)
		*flags |= SPAN_F_BAD_READ;
	return bad ? -1 : 0;
}

/* ---- traces on: the incoming traceparent, from the request's Header map ----------------
 *
 * net/http hands the handler its headers as a Go map (map[string][]string, keys canonical:
 * "Traceparent"); there is no hash function here, so the map's storage is scanned: a request
 * has few headers, and a map of up to 8 entries is one bucket (Go <= 1.23) or one group
 * (Go >= 1.24, swiss tables). Each bucket or group is copied once, its slots checked in BPF
 * memory, and only an 11-byte key is read and compared. Layouts (runtime.hmap/bmap and
 * internal/runtime/maps.Map/table/group, for a string key and a []string value) are the
 * runtime's own and fixed per scheme; Python picks the scheme by Go version.
 */
#define HDR_MAP_NONE 0
#define HDR_MAP_HMAP 1             /* Go <= 1.23: hmap{count, flags, B, .., buckets@16} */
#define HDR_MAP_SWISS 2            /* Go >= 1.24: Map{used, seed, dirPtr@16, dirLen@24} */
#define HMAP_B 9
#define HMAP_BUCKETS 16
#define HMAP_MAX_BUCKETS 8         /* B <= 3: up to 52 headers */
#define BMAP_KEYS 8                /* bmap: tophash[8], keys[8]string, elems[8][]string */
#define BMAP_ELEMS (8 + 8 * 16)
#define BMAP_SIZE (8 + 8 * 16 + 8 * 24 + 8)
#define SWISS_DIR 16
#define SWISS_DIRLEN 24
#define SWISS_MAX_TABLES 1         /* one table up to 1024 slots: more is > 896 headers */
#define SWISS_MAX_GROUPS 8         /* capacity 64: up to 56 headers */
#define TABLE_GROUPS 16            /* table.groups.data; lengthMask at +24 */
#define GROUP_SIZE (8 + 8 * 40)    /* ctrl word, slots[8]{key string, elem []string} */
#define HDR_SCRATCH BMAP_SIZE

struct hdr_scratch {
	__u8 b[2 * HDR_SCRATCH]; /* twice: the verifier bounds a split copy's parts apart */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hdr_scratch);
} h2_hdr_scratch SEC(".maps");

/* Whether the key (p, n) is "Traceparent"; when it is, copy its first value into tp. */
static __always_inline int tp_slot(__u64 kp, __u64 kn, __u64 vp, __u64 vn, char *tp)
{
	static const char want[] = "Traceparent";
	char name[sizeof(want) - 1];
	__u64 str[2] = {};

	if (kn != sizeof(name) || !kp || bpf_probe_read_user(name, sizeof(name), (const void *)kp))
		return 0;
	for (int j = 0; j < sizeof(name); j++)
		if (name[j] != want[j])
			return 0;
	if (vn && vp && bpf_probe_read_user(str, sizeof(str), (const void *)vp) == 0 &&
	    str[1] == TRACEPARENT_LEN - 1 && str[0] &&
	    bpf_probe_read_user(tp, TRACEPARENT_LEN - 1, (const void *)str[0]))
		tp[0] = 0;
	return 1;
}

/* Scan one copied bucket (hmap) or group (swiss) for the key: 1 when found. */
static __always_inline int tp_scan(const __u8 *b, int swiss, char *tp)
{
	for (int i = 0; i < 8; i++) {
		const __u64 *k, *v;

		if (swiss) {
			if (b[i] & 0x80) /* ctrl byte: empty or deleted */
				continue;
			k = (const __u64 *)(b + 8 + 40 * i);
			v = k + 2;
		} else {
			if (b[i] < 5) /* tophash: empty or evacuated */
				continue;
			k = (const __u64 *)(b + BMAP_KEYS + 16 * i);
			v = (const __u64 *)(b + BMAP_ELEMS + 24 * i);
		}
		if (tp_slot(k[0], k[1], v[0], v[1], tp))
			return 1;
	}
	return 0;
}

/* Copy a bucket or group. A read fails on a page the program never touched (fresh heap
 * memory Go did not need to zero), which the tail of a map's last group can lie in: the
 * copy is split at the page boundary, and a tail that cannot be read is left zeroed (the
 * helper zeroes on failure), i.e. empty slots — an entry's write would have touched it. */
#define PAGE_SZ 4096

static __always_inline int tp_copy(__u8 *b, __u64 addr, __u32 size)
{
	__u32 head = PAGE_SZ - (addr & (PAGE_SZ - 1)), tail;

	if (!addr || size > HDR_SCRATCH)
		return 0;
	if (head >= size)
		return bpf_probe_read_user(b, size, (const void *)addr) == 0;
	tail = size - head;
	if (head > HDR_SCRATCH || tail > HDR_SCRATCH ||
	    bpf_probe_read_user(b, head, (const void *)addr))
		return 0;
	bpf_probe_read_user(b + head, tail, (const void *)(addr + head));
	return 1;
}

/* The request's "Traceparent" header value into tp (left empty when absent). */
static __always_inline void read_h2_traceparent(const struct http2_config *cfg, __u64 req,
						char *tp)
{
	__u64 m = 0, hdr[4] = {}, tab[4] = {}, t = 0;
	__u32 zero = 0, nb;
	struct hdr_scratch *sc = bpf_map_lookup_elem(&h2_hdr_scratch, &zero);

	if (!sc || !cfg->header_map || go_read_u64(req + cfg->req_header, &m) || !m ||
	    bpf_probe_read_user(hdr, sizeof(hdr), (const void *)m))
		return;
	if (cfg->header_map == HDR_MAP_HMAP) {
		nb = (hdr[1] >> 8) & 0xff; /* hmap.B, the byte at HMAP_B */
		if (nb > 3)
			return; /* > 52 headers: not scanned */
		/* buckets, then (a map caught growing: evacuation is incremental) the old ones;
		 * a moved entry's old slot is marked evacuated, so each key is seen once */
		for (int i = 0; i < HMAP_MAX_BUCKETS + HMAP_MAX_BUCKETS / 2; i++) {
			__u64 b = i < (1 << nb) ? hdr[2] + (__u64)i * BMAP_SIZE :
				  hdr[3] && nb && i - HMAP_MAX_BUCKETS < (1 << (nb - 1)) &&
				  i >= HMAP_MAX_BUCKETS ?
				  hdr[3] + (__u64)(i - HMAP_MAX_BUCKETS) * BMAP_SIZE : 0;

			/* a full bucket chains overflow buckets (BMAP_SIZE - 8): two followed */
			for (int o = 0; o < 3 && b; o++) {
				if (!tp_copy(sc->b, b, BMAP_SIZE))
					break;
				if (tp_scan(sc->b, 0, tp))
					return;
				b = *(__u64 *)(sc->b + BMAP_SIZE - 8);
			}
		}
		return;
	}
	if (hdr[3] == 0) { /* dirLen 0: a small map, dirPtr is its one group */
		if (tp_copy(sc->b, hdr[2], GROUP_SIZE))
			tp_scan(sc->b, 1, tp);
		return;
	}
	for (int d = 0; d < SWISS_MAX_TABLES; d++) {
		if (d >= hdr[3] || go_read_u64(hdr[2] + 8 * d, &t) || !t ||
		    bpf_probe_read_user(tab, sizeof(tab), (const void *)t))
			return;
		for (int g = 0; g < SWISS_MAX_GROUPS; g++) {
			if (g > tab[3] /* lengthMask */)
				break;
			if (tp_copy(sc->b, tab[2] + (__u64)g * GROUP_SIZE, GROUP_SIZE) &&
			    tp_scan(sc->b, 1, tp))
				return;
		}
	}
}

/* ---- server ---------------------------------------------------------------------- */

/* A server request's in-flight key: its stream's address (that of the stream's id field,
 * where Python's chains lead), which its start, its end (responseWriterState.stream, read
 * with the status) and a panic's reset (an argument) all have: no end reads the stream. The
 * identity a record reports, (conn, stream id), comes from the start. */
static __always_inline struct stream_key h2_server_key(__u32 tgid, __u64 stream_id_addr)
{
	return (struct stream_key){ .tgid = tgid, .conn = stream_id_addr };
}

/* Note a start: in its slot of the first table that takes it, filled in place while
 * SLOT_BUSY, else in the LRU tier. */
static __always_inline void h2s_start(const struct stream_key *key,
				      const struct h2_server_start *st)
{
	__u64 tag = slot_tag((const __u64 *)key);
	struct h2s_slot *slot = slot_at(&hot_http2_server_slots, tag, HOT_SLOT_BITS);

	if (!slot_take(slot, tag, key)) {
		slot = slot_at(&http2_server_slots, tag, START_SLOT_BITS);
		if (!slot_take(slot, tag, key)) {
			inflight_start(&http2_server_inflight, key, st);
			return;
		}
	}
	slot->key = *key;
	slot->st = *st;
	publish_u64(&slot->tag, tag); /* after the key and start */
}

static __always_inline int http2_server_run_handler(struct pt_regs *ctx, __u8 flavor)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct h2_server_start st = { .start_ns = bpf_ktime_get_ns(), .rw = GO_ARG2(ctx) };
	struct ctx_key ck = { .tgid = tgid };
	struct ctx_stream cs = {};
	struct stream_key id = {}, key;
	struct http2_config *cfg;
	__u64 tab, sid_addr;

	cfg = config_of_flavor(&http2_config_slots, &http2_config, tgid, flavor);
	if (!cfg)
		return 0;
	if (go_chain_addr(GO_ARG2(ctx), &cfg->rw_stream_id, &sid_addr) ||
	    go_read_u32(sid_addr, &st.stream_id)) {
		stat_inc(STAT_BAD_READ);
		return 0;
	}
	key = h2_server_key(tgid, sid_addr);
	id.tgid = tgid;
	id.conn = GO_ARG1(ctx);
	id.stream_id = st.stream_id;
	/* The stream's context, for a gRPC call served by ServeHTTP inside this request. */
	if (cfg->req_ctx_valid && go_read_iface(GO_ARG3(ctx) + cfg->req_ctx, &tab, &st.ctx) == 0 &&
	    st.ctx && ctx_lineage_note(st.ctx, &cs) == 0) {
		ck.ctx = st.ctx;
		cs.stream = id;
		cs.start_ns = st.start_ns;
		ctx_note(&ck, &cs, st.start_ns);
		if (cfg->trace) { /* its parent is the connection's: trace_ctx.h */
			struct tp_val tp = {};

			conn_ctx_note(tgid, cs.parent, id.conn);
			read_h2_traceparent(cfg, GO_ARG3(ctx), tp.tp);
			tp_remember(&id, &tp);
		}
	} else {
		st.ctx = 0;
	}
	h2s_start(&key, &st);
	return 0;
}

/* Take the start of `key` out of flight: 1 and *out; 0 when there is none; -1 when a racing
 * end of the same request took it. Each end runs once per request (entry probes past the
 * stack check, a panic's at its one call site; the tests count run_cnt == requests), so no
 * repeat filter is asked (srv_common.h end_repeats). */
static __always_inline int take_start(const struct stream_key *key, struct h2_server_start *out)
{
	struct h2s_slot *slot = slot_find(&hot_http2_server_slots, HOT_SLOT_BITS,
					   &http2_server_slots, START_SLOT_BITS, key);
	struct h2_server_start *start;

	if (slot) {
		*out = slot->st;
		return slot_release((struct start_slot *)slot, key) ? -1 : 1;
	}
	start = bpf_map_lookup_elem(&http2_server_inflight, key);
	if (!start)
		return 0;
	*out = *start;
	return bpf_map_delete_elem(&http2_server_inflight, key) ? -1 : 1;
}

/* An end's identity (tgid, conn, stream id) from its start (found > 0: its context entry
 * retired), else read from the stream: -1 when unreadable. */
static __always_inline int end_identity(__u32 tgid, int found, __u64 conn, __u64 sid_addr,
					const struct h2_server_start *start,
					struct stream_key *id)
{
	id->tgid = tgid;
	id->conn = conn;
	if (!found)
		return go_read_u32(sid_addr, &id->stream_id) ? -1 : 0;
	id->stream_id = start->stream_id;
	ctx_retire(tgid, start->ctx, id);
	return 0;
}

/* Where a record is being written: slot n of this CPU's stage (sg), or the ring (sg NULL). */
struct h2_out {
	struct h2_stage_value *sg;
	__u32 n;
	__u32 _pad;
};

/* Reserve a record: the plain one of type `type` (in this CPU's stage when it is free),
 * or with traces on the traced one of type `traced_type` (*tev set: the join fields follow
 * the record, events.h). It goes with send_h2, or back with drop_h2. */
static __always_inline struct http2_event *reserve_h2(const struct http2_config *cfg,
						      __u32 type, __u32 traced_type,
						      struct http2_trace_event **tev,
						      struct h2_out *out)
{
	struct h2_stage_value *sg;
	struct http2_event *ev;

	*tev = NULL;
	out->sg = NULL;
	out->n = 0;
	if (cfg->trace) {
		*tev = reserve_zeroed(&events, sizeof(struct http2_trace_event));
		ev = *tev ? &(*tev)->ev : NULL;
		type = traced_type;
	} else if ((sg = stage_claim(&h2_stage))) {
		out->n = stage_next(sg->head.count);
		ev = &sg->rec[out->n];
		__builtin_memset(ev, 0, sizeof(*ev));
		out->sg = sg;
	} else {
		ev = reserve_zeroed(&events, sizeof(struct http2_event)); /* claimed: alone */
	}
	if (ev)
		ev->type = type;
	return ev;
}

static __always_inline void send_h2(struct http2_event *ev, struct h2_out *out)
{
	struct h2_stage_value *sg = out->sg;

	if (!sg) {
		submit_batched(&events, ev);
		return;
	}
	STAGE_COMMIT(sg, out->n, &events);
}

static __always_inline void drop_h2(struct http2_event *ev, struct h2_out *out)
{
	if (out->sg)
		stage_release(&out->sg->busy);
	else
		bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
}

/* A reserved server record for `key`, ending now; an unknown start is flagged unmatched.
 * With traces on (*tev set) it carries the request's context and incoming traceparent. */
static __always_inline struct http2_event *server_event(const struct http2_config *cfg,
							const struct stream_key *key,
							__u8 flavor,
							const struct h2_server_start *start,
							struct http2_trace_event **tev,
							struct h2_out *out)
{
	struct http2_event *ev = reserve_h2(cfg, EV_HTTP2_SERVER, EV_HTTP2_SERVER_TRACED, tev,
					    out);
	__u64 start_ns = start->start_ns;

	if (!ev)
		return NULL;
	if (*tev) {
		(*tev)->ctx_node = start->ctx; /* the stream's own context: the request context */
		tp_take(key, (*tev)->traceparent);
	}
	ev->tgid = key->tgid;
	ev->flavor = flavor;
	ev->conn = key->conn;
	ev->stream_id = key->stream_id;
	ev->end_ns = bpf_ktime_get_ns();
	ev->start_ns = start_ns;
	if (!start_ns) {
		ev->flags |= SPAN_F_UNMATCHED;
		stat_inc(STAT_UNMATCHED_END);
	}
	return ev;
}

/* The request's method, host and path from its responseWriterState (a pointer to the
 * request, or the request itself in Go 1.27); `req`: the pointer when read already. */
static __always_inline void read_rws_request(const struct http2_config *cfg, __u64 rws,
					     __u64 req, struct http2_event *ev)
{
	if (cfg->rws_req_inline)
		req = rws + cfg->rws_req;
	else if (!req)
		go_read_u64(rws + cfg->rws_req, &req);
	read_request(cfg, server_req(cfg), req, &ev->method_addr, ev->method, &ev->method_len,
		     ev->host, &ev->host_len, ev->path, &ev->path_len, &ev->flags);
}

/* What handlerDone reads of its responseWriterState: the connection, the address of its
 * stream's id (the in-flight key), the status written and the request pointer (0 when
 * inline or not read). One window of the state when the layout allows, else a read per
 * field. */
static __always_inline int read_rws(const struct http2_config *cfg, __u64 rws, __u64 *conn,
				    __u64 *sid_addr, __u64 *status, __u64 *req)
{
	struct go_window win;

	if (cfg->rws_window_on &&
	    go_window_read(rws + cfg->rws_lo, &win,
			   go_max_u32(go_max_u32(cfg->rws_w_conn, cfg->rws_w_stream),
				      go_max_u32(cfg->rws_w_status,
						 cfg->rws_req_inline ? 0 : cfg->rws_w_req)) + 8) == 0) {
		*conn = go_window_u64(&win, cfg->rws_w_conn);
		*sid_addr = go_window_u64(&win, cfg->rws_w_stream);
		*status = go_window_u64(&win, cfg->rws_w_status);
		*req = cfg->rws_req_inline ? 0 : go_window_u64(&win, cfg->rws_w_req);
		if (!*sid_addr)
			return -1;
		*sid_addr += cfg->stream_id;
		return 0;
	}
	if (go_read_u64(rws + cfg->rws_conn, conn) ||
	    go_chain_addr(rws, &cfg->rws_stream_id, sid_addr))
		return -1;
	if (go_read_u64(rws + cfg->rws_status, status))
		*status = (__u64)-1; /* unread: flagged by the caller */
	return 0;
}

static __always_inline int http2_server_handler_done(struct pt_regs *ctx, __u8 flavor)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct h2_server_start start = {};
	__u64 rws = 0, conn = 0, sid_addr = 0, status = 0, req = 0;
	struct stream_key key, id;
	struct http2_config *cfg;
	struct http2_event *ev;
	struct http2_trace_event *tev;
	struct h2_out out;
	int found;

	cfg = config_of_flavor(&http2_config_slots, &http2_config, tgid, flavor);
	if (!cfg)
		return 0;
	if (go_read_u64(GO_ARG1(ctx) + cfg->w_rws, &rws) ||
	    read_rws(cfg, rws, &conn, &sid_addr, &status, &req)) {
		stat_inc(STAT_BAD_READ);
		return 0;
	}
	key = h2_server_key(tgid, sid_addr);
	found = take_start(&key, &start);
	if (found < 0) {
		stat_inc(STAT_DUP_END); /* a racing end took it */
		return 0;
	}
	if (end_identity(tgid, found, conn, sid_addr, &start, &id)) {
		stat_inc(STAT_BAD_READ);
		return 0;
	}
	ev = server_event(cfg, &id, flavor, &start, &tev, &out);
	if (!ev)
		return 0;
	if (status == (__u64)-1) {
		ev->flags |= SPAN_F_BAD_READ;
		status = 0;
	}
	/* Nothing written yet: handlerDone's flush sends 200, like net/http. */
	ev->status = status ? (__u32)status : 200;
	read_rws_request(cfg, rws, req, ev);
	if (ev->flags & SPAN_F_BAD_READ)
		stat_inc(STAT_BAD_READ);
	send_h2(ev, &out);
	return 0;
}

/* A handler panicked: runHandler's deferred recover has the stream reset (handlerPanicRST)
 * instead of calling handlerDone. The request ends at that one call,
 * sc.writeFrameFromHandler(FrameWriteRequest{write, stream, done}): sc in RAX, the
 * request's writer pair in RBX, RCX, its *stream in RDI (a call-site probe: it runs on that
 * path only, on the handler goroutine), flagged. Only the rw recorded at start leads to the
 * request's fields; it is read only when its rws still names this stream — the writer is
 * not pooled on this path, but no longer referenced either. */
static __always_inline int http2_server_panic(struct pt_regs *ctx, __u8 flavor)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct h2_server_start start = {};
	__u64 rws = 0, status = 0, sid_addr, named = 0;
	struct stream_key key, id;
	struct http2_config *cfg;
	struct http2_event *ev;
	struct http2_trace_event *tev;
	struct h2_out out;
	__u8 sent = 0;
	int found;

	cfg = config_of_flavor(&http2_config_slots, &http2_config, tgid, flavor);
	if (!cfg || !GO_ARG4(ctx))
		return 0;
	sid_addr = GO_ARG4(ctx) + cfg->stream_id;
	key = h2_server_key(tgid, sid_addr);
	found = take_start(&key, &start);
	if (found < 0) {
		stat_inc(STAT_DUP_END); /* a racing end took it */
		return 0;
	}
	if (end_identity(tgid, found, GO_ARG1(ctx), sid_addr, &start, &id)) {
		stat_inc(STAT_BAD_READ);
		return 0;
	}
	ev = server_event(cfg, &id, flavor, &start, &tev, &out);
	if (!ev)
		return 0;
	ev->flags |= SPAN_F_ERROR | SPAN_F_PANIC;
	if (start.rw && go_read_u64(start.rw + cfg->w_rws, &rws) == 0 &&
	    go_chain_addr(rws, &cfg->rws_stream_id, &named) == 0 && named == sid_addr) {
		if (cfg->rws_sent_header && go_read_u8(rws + cfg->rws_sent_header, &sent) == 0 &&
		    sent && go_read_u64(rws + cfg->rws_status, &status) == 0)
			ev->status = (__u32)status; /* sent before the panic: the client saw it */
		read_rws_request(cfg, rws, 0, ev);
	}
	if (!ev->status)
		ev->flags |= SPAN_F_NO_RESPONSE;
	send_h2(ev, &out);
	return 0;
}

/* ---- client ---------------------------------------------------------------------- */

/* A client stream's identity: its ClientConn and stream id (one window read when the
 * layout allows). -1 when unreadable. */
static __always_inline int read_cs_key(const struct http2_config *cfg, __u64 cs,
				       struct stream_key *key)
{
	struct go_window win;

	if (cfg->cs_key_win_on) {
		if (go_window_read(cs + cfg->cs_key_lo, &win,
				   go_max_u32(cfg->cs_w_cc + 8, cfg->cs_w_id + 4)))
			return -1;
		key->conn = go_window_u64(&win, cfg->cs_w_cc);
		key->stream_id = go_window_u32(&win, cfg->cs_w_id);
		return 0;
	}
	return go_read_u64(cs + cfg->cs_cc, &key->conn) ||
	       go_read_u32(cs + cfg->cs_id, &key->stream_id) ? -1 : 0;
}

/* A client request's in-flight key: its *clientStream, a fresh object per request that its
 * start and end both get in a register, so the end reads nothing to find its start (the
 * identity it reports comes from the start). */
static __always_inline struct stream_key h2_client_key(__u32 tgid, __u64 cs)
{
	return (struct stream_key){ .tgid = tgid, .conn = cs };
}

static __always_inline int http2_client_write_headers(struct pt_regs *ctx, __u8 flavor)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32, zero = 0, flags = 0;
	__u64 cs = GO_ARG1(ctx), tag;
	struct h2_client_start *st = NULL;
	struct h2c_slot *slot;
	struct stream_key key = h2_client_key(tgid, cs), id = {};
	struct http2_config *cfg;

	cfg = config_of_flavor(&http2_config_slots, &http2_config, tgid, flavor);
	if (!cfg)
		return 0;
	if (read_cs_key(cfg, cs, &id)) {
		stat_inc(STAT_BAD_READ);
		return 0;
	}
	/* Its slot in the first table that takes it (slot_take), filled in place while
	 * SLOT_BUSY; else the scratch, for the LRU tier. */
	tag = slot_tag((const __u64 *)&key);
	slot = slot_at(&hot_http2_client_slots, tag, H2C_HOT_BITS);
	if (!slot_take(slot, tag, &key)) {
		slot = slot_at(&http2_client_slots, tag, H2C_SLOT_BITS);
		if (!slot_take(slot, tag, &key))
			slot = NULL;
	}
	if (slot)
		st = &slot->st;
	else
		st = bpf_map_lookup_elem(&http2_scratch, &zero);
	if (!st) /* no scratch: cannot happen (a per-CPU array of one) */
		return 0;
	__builtin_memset(st, 0, sizeof(*st));
	st->start_ns = bpf_ktime_get_ns();
	st->conn = id.conn;
	st->stream_id = id.stream_id;
	read_request(cfg, client_req(cfg), GO_ARG2(ctx), &st->method_addr, st->method,
		     &st->method_len, st->text, &st->host_len, NULL, &st->path_len, &flags);
	st->flags = flags;
	if (flags & SPAN_F_BAD_READ)
		stat_inc(STAT_BAD_READ);
	if (cfg->trace) {
		__u64 c = 0;

		go_read_u64(GO_ARG2(ctx) + cfg->creq_ctx + 8, &c); /* the iface's data word */
		st->ctx_node = request_ctx_of(tgid, c);
	}
	if (slot) {
		slot->key = key;
		publish_u64(&slot->tag, tag); /* after the key and start */
		return 0;
	}
	inflight_start(&http2_client_inflight, &key, st);
	return 0;
}

/* Copy a text of `len` bytes from a start to a record, in 32-byte chunks up to its length:
 * past it both are zero (the start cleared its slot, reserve_h2 the record), so the record
 * is as if the whole field had been copied. The start's slot is a cold line or two by its
 * end: the whole 208 bytes cost ~0.1 us here (same-run ablation), a host and path ~1 line. */
#define TEXT_CHUNK 32
#define COPY_TEXT(dst, src, len)                                                     \
	do {                                                                         \
		for (int i_ = 0; i_ < (int)sizeof(dst) / TEXT_CHUNK; i_++) {         \
			if (i_ * TEXT_CHUNK >= (len))                                \
				break;                                               \
			__builtin_memcpy(&(dst)[i_ * TEXT_CHUNK], &(src)[i_ * TEXT_CHUNK], \
					 TEXT_CHUNK);                                \
		}                                                                    \
	} while (0)

/* Copy a host of `len` bytes from a start's text, 8 at a time, its last word cut at its
 * length: the path follows it there, and the record's host stays zero past it. */
static __always_inline void copy_host(char *dst, const char *src, __u32 len)
{
	for (int i = 0; i < H2_HOST_MAX / 8; i++) {
		__u64 w;

		if (i * 8 >= len)
			break;
		w = *(const __u64 *)(src + i * 8);
		if (len - i * 8 < 8)
			w &= (1ULL << ((len - i * 8) * 8)) - 1;
		*(__u64 *)(dst + i * 8) = w;
	}
}

static __always_inline int http2_client_cleanup(struct pt_regs *ctx, __u8 flavor)
{
	const char *text;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 cs = GO_ARG1(ctx), res = 0, status = 0, tag;
	__u8 done = 0;
	struct h2_client_start *st = NULL;
	struct h2c_slot *slot;
	struct stream_key key = h2_client_key(tgid, cs), id = {};
	struct http2_config *cfg;
	struct http2_event *ev;
	struct http2_trace_event *tev;
	struct h2_out out;

	cfg = config_of_flavor(&http2_config_slots, &http2_config, tgid, flavor);
	if (!cfg)
		return 0;
	/* its slot, else the LRU tier (no repeat filter: this end runs once, take_start) */
	tag = slot_tag((const __u64 *)&key);
	slot = h2c_find(&key);
	if (slot)
		st = &slot->st; /* stays put until this end gives the slot back */
	else
		st = bpf_map_lookup_elem(&http2_client_inflight, &key);
	if (st) {
		id.conn = st->conn;
		id.stream_id = st->stream_id;
	} else {
		/* No start: a request that ended before its stream existed (no id yet: no span,
		 * counted), else an unmatched end, reported under the stream's identity. */
		if (read_cs_key(cfg, cs, &id)) {
			stat_inc(STAT_BAD_READ);
			return 0;
		}
		if (id.stream_id == 0) {
			stat_inc(STAT_H2_NO_STREAM);
			return 0;
		}
	}
	ev = reserve_h2(cfg, EV_HTTP2_CLIENT, EV_HTTP2_CLIENT_TRACED, &tev, &out);
	if (!ev) {
		if (slot)
			__sync_val_compare_and_swap(&slot->tag, tag, 0);
		else
			bpf_map_delete_elem(&http2_client_inflight, &key);
		return 0;
	}
	ev->tgid = tgid;
	ev->flavor = flavor;
	ev->conn = id.conn;
	ev->stream_id = id.stream_id;
	ev->end_ns = bpf_ktime_get_ns();
	if (st) {
		ev->start_ns = st->start_ns;
		if (tev)
			tev->ctx_node = st->ctx_node;
		ev->flags |= st->flags;
		ev->method_len = st->method_len;
		ev->method_addr = st->method_addr;
		ev->host_len = st->host_len;
		ev->path_len = st->path_len;
		if (!st->method_addr)
			__builtin_memcpy(ev->method, st->method, sizeof(ev->method));
		copy_host(ev->host, st->text, st->host_len);
		text = st->text + go_clamp(st->host_len, H2_HOST_MAX);
		COPY_TEXT(ev->path, text, st->path_len);
		if (!slot) {
			bpf_map_delete_elem(&http2_client_inflight, &key);
		} else if (__sync_val_compare_and_swap(&slot->tag, tag, 0) != tag) {
			drop_h2(ev, &out); /* a racing end took it */
			stat_inc(STAT_DUP_END);
			return 0;
		}
	} else {
		ev->flags |= SPAN_F_UNMATCHED;
		stat_inc(STAT_UNMATCHED_END);
	}
	if (go_read_u64(cs + cfg->cs_res, &res))
		ev->flags |= SPAN_F_BAD_READ;
	if (GO_ARG2(ctx)) {
		/* err is not final at entry: a context canceled after the response's END_STREAM
		 * races with it in writeRequest's select, and cleanupWriteRequest itself forgives
		 * it. A complete response (headers, and END_STREAM read) is no error. */
		if (!(res && cfg->cs_read_closed && go_read_u8(cs + cfg->cs_read_closed, &done) == 0 &&
		      done))
			ev->flags |= SPAN_F_ERROR;
	}
	if (res && go_read_u64(res + cfg->res_status, &status) == 0)
		ev->status = (__u32)status;
	else
		ev->flags |= SPAN_F_NO_RESPONSE;
	send_h2(ev, &out);
	return 0;
}

/* ---- programs: one per function and flavor ----------------------------------------- */

#define H2_PROGRAMS(SUFFIX, FLAVOR)                                                      \
	SEC("uprobe") int http2_server_start_##SUFFIX(struct pt_regs *ctx)                \
	{ return http2_server_run_handler(ctx, FLAVOR); }                                 \
	SEC("uprobe") int http2_server_end_##SUFFIX(struct pt_regs *ctx)                  \
	{ return http2_server_handler_done(ctx, FLAVOR); }                                \
	SEC("uprobe") int http2_server_panic_##SUFFIX(struct pt_regs *ctx)                \
	{ return http2_server_panic(ctx, FLAVOR); }                                       \
	SEC("uprobe") int http2_client_start_##SUFFIX(struct pt_regs *ctx)                \
	{ return http2_client_write_headers(ctx, FLAVOR); }                               \
	SEC("uprobe") int http2_client_end_##SUFFIX(struct pt_regs *ctx)                  \
	{ return http2_client_cleanup(ctx, FLAVOR); }

H2_PROGRAMS(bundled, H2_FLAVOR_BUNDLED)
H2_PROGRAMS(xnet, H2_FLAVOR_XNET)
