/* Maps and readers shared by grpc_server.bpf.c and http2.bpf.c (one copy per object).
 *
 * Both paths start a request on one call and finish it on another, possibly on another
 * goroutine, so the in-flight state is keyed by (tgid, connection pointer, stream id) —
 * never by goroutine — and every value is read where it is final.
 */
#ifndef PYHTTP2PROBE_SRV_COMMON_H
#define PYHTTP2PROBE_SRV_COMMON_H

/* In-flight key: a stream id is unique only inside its connection (DESIGN.md rule 1). */
struct stream_key {
	__u32 tgid;
	__u32 stream_id;
	__u64 conn;
};

/* Loss and health counters, indexes STAT_* in events.h. A plain array (atomic adds) so
 * user space reads one value per index; these paths are rare, contention does not matter. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

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

/* Go's stack-growth check sits at every function entry: when the stack must grow,
 * morestack copies it and re-executes the function from its entry, so an entry uprobe can
 * fire twice for one call (seen here: a few per thousand requests). grpc-go also calls
 * writeStatus twice on some error paths (the second is a no-op on the wire). Both repeat
 * on the same goroutine with the same key, so the last key each goroutine started/ended
 * tells a repeat (dropped, counted as STAT_DUP_END) from a real unmatched end. */
struct g_key {
	__u32 tgid;
	__u32 _pad;
	__u64 g;
};

struct g_last {
	struct stream_key start;
	struct stream_key end;
};

/* 64k goroutines in flight across traced processes; an evicted one only loses the
 * repeat filter for its next hit. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct g_key);
	__type(value, struct g_last);
} g_last SEC(".maps");

static __always_inline int same_key(const struct stream_key *a, const struct stream_key *b)
{
	return a->tgid == b->tgid && a->stream_id == b->stream_id && a->conn == b->conn;
}

/* Record `k` as this goroutine's last start (end=0) or end (end=1); returns 1 when it
 * already was, i.e. this hit repeats the previous one. */
static __always_inline int g_repeat(struct pt_regs *ctx, const struct stream_key *k, int end)
{
	struct g_key gk = { .tgid = k->tgid, .g = GO_GOROUTINE(ctx) };
	struct g_last *last = bpf_map_lookup_elem(&g_last, &gk);
	struct g_last init = {};

	if (!last) {
		if (end)
			init.end = *k;
		else
			init.start = *k;
		bpf_map_update_elem(&g_last, &gk, &init, BPF_ANY);
		return 0;
	}
	if (end) {
		if (same_key(&last->end, k))
			return 1;
		last->end = *k;
	} else {
		if (same_key(&last->start, k))
			return 1;
		last->start = *k;
	}
	return 0;
}

#endif /* PYHTTP2PROBE_SRV_COMMON_H */
