/* Maps and readers shared by grpc_server.bpf.c and http2.bpf.c (one copy per object).
 *
 * Both paths start a request on one call and finish it on another, possibly on another
 * goroutine, so the in-flight state is keyed by (tgid, connection pointer, stream id) —
 * never by goroutine — and every value is read where it is final.
 */
#ifndef PYHTTP2PROBE_SRV_COMMON_H
#define PYHTTP2PROBE_SRV_COMMON_H

#include "stats.h"

/* In-flight key: a stream id is unique only inside its connection (DESIGN.md rule 1). */
struct stream_key {
	__u32 tgid;
	__u32 stream_id;
	__u64 conn;
};

/* Copy the Go string header at `addr` into buf[0..max): max must be a power of two known
 * at compile time so the verifier sees the bound. */
#define DEFINE_GO_READ_STR(NAME, MAX)                                                   \
	static __always_inline int NAME(__u64 addr, char *buf, __u16 *len, int *trunc)   \
	{                                                                                 \
		__u64 hdr[2] = {};                                                        \
		__u64 n;                                                                  \
		*len = 0;                                                                 \
		*trunc = 0;                                                               \
		if (!addr || bpf_probe_read_user(hdr, sizeof(hdr), (const void *)addr))   \
			return -1;                                                        \
		n = hdr[1];                                                               \
		if (n > (MAX)) {                                                          \
			n = (MAX);                                                        \
			*trunc = 1;                                                       \
		}                                                                         \
		if (!hdr[0] || !n)                                                        \
			return 0;                                                         \
		n &= (2 * (MAX)) - 1;                                                     \
		if (n == 0 || n > (MAX))                                                  \
			return 0;                                                         \
		if (bpf_probe_read_user(buf, n, (const void *)hdr[0]))                    \
			return -1;                                                        \
		*len = n;                                                                 \
		return 0;                                                                 \
	}

/* Some ends repeat for one request: grpc-go calls writeStatus twice on some error paths
 * (the second is a no-op on the wire), and an entry probe placed at a function's very
 * entry fires again when Go's stack-growth check re-runs it (ours sit past that check).
 * A repeat comes from the same goroutine with the same key, so the last key each
 * goroutine ended tells a repeat (dropped, counted as STAT_DUP_END) from a real
 * unmatched end. Starts need no filter: a start with its key in flight overwrites it.
 * 64k goroutines in flight across traced processes; an evicted one only loses the
 * repeat filter for its next end. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct g_key);
	__type(value, struct stream_key);
} g_last_end SEC(".maps");

/* Record `k` as this goroutine's last end; returns 1 when it already was. */
static __always_inline int end_repeats(struct pt_regs *ctx, const struct stream_key *k)
{
	struct g_key gk = { .tgid = k->tgid, .g = GO_GOROUTINE(ctx) };
	struct stream_key *last = bpf_map_lookup_elem(&g_last_end, &gk);

	if (last && last->tgid == k->tgid && last->stream_id == k->stream_id &&
	    last->conn == k->conn)
		return 1;
	bpf_map_update_elem(&g_last_end, &gk, k, BPF_ANY);
	return 0;
}

#endif /* PYHTTP2PROBE_SRV_COMMON_H */
