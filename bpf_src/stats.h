/* Loss and health counters of one object, indexed by the STAT_* constants of events.h.
 *
 * A plain array with atomic adds, not per-CPU: the counters move only on anomalies (never
 * on a healthy request), so contention is nil, and user space reads one value per counter
 * with an ordinary lookup (DESIGN.md rule 7: losses are counted, never silent).
 */
#ifndef PYHTTP2PROBE_STATS_H
#define PYHTTP2PROBE_STATS_H

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

#endif /* PYHTTP2PROBE_STATS_H */
