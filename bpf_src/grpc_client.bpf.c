// SPDX-License-Identifier: GPL-2.0
/* gRPC client calls of grpc-go (v1.40 .. v1.85): two uprobe hits per call, unary or
 * streaming, whatever its status (before v1.78 one more for a call ending in an error
 * before its attempt is committed: FAIL below).
 *
 * START: once per call, before its first attempt, where newClientStreamWithParams calls
 *   withRetry (v1.49+: withRetry's loop makes the first attempt, and again a retry's when
 *   the first op failed) or newAttemptLocked (before v1.49; retries are made in
 *   retryLocked): RAX = cs either way, no read needed to tell a retry. inflight[(tgid, cs)]
 *   = now, overwritten unconditionally (a slot of inflight_slots, or the LRU map when that
 *   slot is held: start_slots.h). Binaries where those CALLs are not found: the entry of
 *   newAttemptLocked, which runs once per attempt and starts the call only while
 *   cs.attempt is still nil.
 * END: the CALL of (*csAttempt).finish(err) inside (*clientStream).finish (RAX = the
 *   call's last attempt, err = RBX itab + RCX data: a call-site probe sees the callee's
 *   arguments). finish() reaches it once per call, after setting cs.finished under cs.mu,
 *   so a streaming call's second finish() (its context watcher's, after the first one
 *   cancelled the context) returns before it and costs no trap: 2 hits per streaming call,
 *   where a probe at finish()'s entry took 3. A call finished before it had an attempt (its
 *   context already done) ends at the CALLs of finish() in the functions that make its
 *   first attempt (withRetry from v1.47, newClientStream(WithParams) before), which end
 *   only such calls. Identity, method, peer and status are read HERE, where final:
 *   attempt -> (cs, stream) -> (id, transport). The span's identity is (tgid, transport,
 *   stream). Binaries where those CALLs are not found (or csAttempt.cs has no offset)
 *   keep the probe at finish()'s entry, which skips a call whose cs.finished is set.
 *
 * Why the start-to-end pairing is keyed by (tgid, clientStream pointer): the clientStream
 * is a per-call heap object that exists before any transport stream (so calls failing
 * before a stream exists still get a span) and stays live until finish. Go may reuse the
 * address of a dead one, but a new call's first newAttemptLocked always sees attempt ==
 * nil and overwrites the slot, so stale state is never inherited. No state is keyed by a
 * lock-protected field read at entry (http2Client.nextID is never read here). The entry
 * is deleted when the call finishes; because the key is the per-call object and not
 * (transport, stream id), a closed connection whose address a new one reuses leaves
 * nothing behind to collide with, and connection close needs no hook of its own.
 *
 * FAIL (calls whose stream creation fails, e.g. no server: Unavailable; they return from
 *   newClientStream without reaching finish() from v1.50). The end is on the goroutine that
 *   started the call, with no receiver in registers, so the start also notes goroutine ->
 *   cs (R14 pairs the entry and the returns of one synchronous call path only, as
 *   DESIGN.md allows); the record is emitted only when that cs is in flight and its
 *   attempt has no stream. Where:
 *   - v1.78+: the CALL of endOfClientStream in newClientStream's deferred cleanup, which
 *     runs only when newClientStream fails, with the call's final error: no other call
 *     takes a trap there, so every call costs 2 hits whatever its status. A call finished
 *     before its first attempt (its context already done) ends here too.
 *   - v1.50..v1.77: the RETs of (*csAttempt).shouldRetry returning a non-nil error (it
 *     returns (false, nil) when a retry policy retries after backoff: not an end). A call
 *     that fails with a stream before its attempt is committed (a unary call's error
 *     status) passes there too: one ignored hit, on error paths only; no point runs only
 *     for the stream-less failures in those versions (retryLocked -> shouldRetry is shared;
 *     newClientStreamWithParams' error return is one RET among its others).
 *   When a retry policy gives up, the error ("max retries exhausted: ... %w", a
 *   *fmt.wrapError) is unwrapped, by its itab's fun[0] == fmt.(*wrapError).Error, to the
 *   status it wraps.
 *
 * CONN (once per connection): the RETs of the transport's constructor note the server's
 *   address of the new connection (conn_cache.h), so an end does not read it again.
 *
 * All offsets come from the per-process config (Python, from the attach plan).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "grpc_client_common.h"
#include "start_slots.h"

char LICENSE[] SEC("license") = "GPL";

struct inflight_key {
	__u32 tgid;
	__u32 _pad;
	__u64 cs;
};

struct inflight_val {
	__u64 start_ns;
	__u64 ctx_node;  /* traces on: the server request context of the call (trace_ctx.h) */
	__u64 _pad;      /* a start slot's value is 3 words (start_slots.h) */
};

/* Calls between start and finish. 65,536 is far more than the concurrently open calls of
 * any sane process set (the bench peaks at ~300); LRU so that leaked calls (a streaming
 * call never finished by its owner) are evicted instead of filling the map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct inflight_key);
	__type(value, struct inflight_val);
} inflight SEC(".maps");

/* Their first tier (start_slots.h): the LRU above takes a call only when its slot is held. */
START_SLOTS(inflight_slots);
START_SLOTS_SWEEPER(grpc_client_sweep, inflight_slots);
START_SLOTS_SWEEPER(hot_grpc_client_sweep, hot_inflight_slots);

/* goroutine -> the clientStream it last started, the last tier (after the tables of g_slots
 * below): read only by the FAIL probe. Sized like inflight; stale entries are harmless
 * (checked). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct g_key);
	__type(value, __u64);
} g_cs SEC(".maps");

/* goroutine -> the clientStream it last started: read only by the FAIL probe, which runs on
 * the starting goroutine (R14 pairs one synchronous call path: DESIGN.md rule 1). Written
 * on every start, so its first tiers are ARRAYs of slots (an LRU update costs ~0.2 us of a
 * ~0.8 us start here): a small table (512 slots, 16 KiB: kmalloc'd, stays warm), then a
 * large one (16k, 512 KiB: vmalloc'd, a cache and TLB miss at each new random place: the
 * start ~70 ns more with it alone, a same-run A/B), as start_slots.h's; the LRU map g_cs
 * takes a goroutine whose slots others hold. A goroutine's note is in the first tier whose
 * slot is free or its own, so a reader that looks in the same order finds its newest.
 * Every write of a slot claims it by compare-and-swap (tag -> SLOT_BUSY), writes, then
 * publishes a tag whose low 16 bits count the slot's writes: a reader that saw one tag
 * never mistakes a rewrite for what it saw (no ABA). A slot is never freed by the call's
 * end (that cost ~30-80 ns of every end: one more cold line): a start takes over a slot
 * another goroutine holds once that goroutine's call is no longer in flight (its start in
 * neither tier: no FAIL can come for it), or once its process is no longer traced; only a
 * goroutine whose slot holds a call in flight goes to the LRU map. Go recycles goroutines,
 * so the slots in use stay about the goroutines that start calls at once. */
struct g_slot {
	__u64 tag;  /* 0 free, SLOT_BUSY being written, else (key hash, high 48) | seq (16) */
	__u64 g;
	__u64 cs;
	__u32 tgid;
	__u32 _pad;
};

#ifndef G_SLOT_BITS /* 16k goroutines starting calls at once; more take the LRU map */
#define G_SLOT_BITS 14
#endif
#ifndef G_HOT_BITS
#define G_HOT_BITS 9
#endif
#define G_SEQ_MASK 0xffffULL

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << G_HOT_BITS);
	__type(key, __u32);
	__type(value, struct g_slot);
} hot_g_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << G_SLOT_BITS);
	__type(key, __u32);
	__type(value, struct g_slot);
} g_slots SEC(".maps");

static __always_inline __u64 g_hash(const struct g_key *gk)
{
	__u64 h = ((gk->g * 0x9E3779B97F4A7C15ULL) ^ gk->tgid) & ~G_SEQ_MASK;

	return h ? h : G_SEQ_MASK + 1;
}

/* Slot h of the small table (hot) or the large one. */
static __always_inline struct g_slot *g_slot_of(__u64 h, int hot)
{
	__u32 idx = slot_of(h, hot ? G_HOT_BITS : G_SLOT_BITS);

	return bpf_map_lookup_elem(hot ? (void *)&hot_g_slots : (void *)&g_slots, &idx);
}

static __always_inline int g_slot_is(const struct g_slot *s, __u64 tag, __u64 h,
				     const struct g_key *gk)
{
	return tag > SLOT_BUSY && (tag & ~G_SEQ_MASK) == h && s->g == gk->g &&
	       s->tgid == gk->tgid;
}

/* Whether call `cs` of process `tgid` is in flight: its start in either tier. */
static __always_inline int call_in_flight(__u32 tgid, __u64 cs)
{
	struct inflight_key k = { .tgid = tgid, .cs = cs };

	return slot_get(SLOTS(inflight_slots), &k) || bpf_map_lookup_elem(&inflight, &k);
}

/* Note in slot s (hash h) that goroutine gk started call cs: 1 when it is there now, 0 when
 * the slot is another's. */
static __always_inline int g_slot_note(struct g_slot *s, __u64 h, const struct g_key *gk,
				       __u64 cs)
{
	__u64 cur;
	__u32 owner;

	if (!s)
		return 0;
	cur = s->tag;
	if (cur == SLOT_BUSY)
		return 0;
	/* Another goroutine's: taken over unless its call is in flight in a traced process.
	 * Read between the tag and the compare-and-swap below: a rewrite meanwhile changes
	 * the tag, and the swap fails. */
	if (cur && !g_slot_is(s, cur, h, gk)) {
		owner = s->tgid;
		if (CONFIG_FIND(grpc_client_config, owner) && call_in_flight(owner, s->cs))
			return 0;
	}
	if (__sync_val_compare_and_swap(&s->tag, cur, SLOT_BUSY) != cur)
		return 0;
	s->g = gk->g;
	s->tgid = gk->tgid;
	s->cs = cs;
	publish_u64(&s->tag, h | ((cur + 1) & G_SEQ_MASK));
	return 1;
}

/* At a start: goroutine gk started call cs. */
static __always_inline void g_note(const struct g_key *gk, __u64 cs)
{
	__u64 h = g_hash(gk);

	if (g_slot_note(g_slot_of(h, 1), h, gk, cs) || g_slot_note(g_slot_of(h, 0), h, gk, cs))
		return;
	bpf_map_update_elem(&g_cs, gk, &cs, BPF_ANY);
}

/* The call slot s (hash h) holds for goroutine gk, or 0. */
static __always_inline __u64 g_slot_call(const struct g_slot *s, __u64 h, const struct g_key *gk)
{
	__u64 tag, cs;

	if (!s)
		return 0;
	tag = s->tag;
	cs = s->cs;
	return g_slot_is(s, tag, h, gk) && s->tag == tag ? cs : 0;
}

/* At a FAIL: the call goroutine gk started last, or 0 (the tiers in g_note's order). */
static __always_inline __u64 g_call(const struct g_key *gk)
{
	__u64 h = g_hash(gk), cs, *csp;

	cs = g_slot_call(g_slot_of(h, 1), h, gk);
	if (!cs)
		cs = g_slot_call(g_slot_of(h, 0), h, gk);
	if (cs)
		return cs;
	csp = bpf_map_lookup_elem(&g_cs, gk);
	return csp ? *csp : 0;
}

/* Calls of the LRU tier whose end was just emitted (a call whose start was in a slot is
 * marked ended there: start_slots.h slot_end). A second finish() can enter after the first
 * one's probe deleted the in-flight entry but before Go sets cs.finished under cs.mu;
 * finding the call here tells that duplicate from a truly missing start. The window is one
 * finish() call (microseconds), so 1,024 slots (by hash of the clientStream) are ample
 * even at 100k calls/s (~10 ms before a slot is likely rewritten): a slot another call
 * took since only turns such a duplicate into a counted unmatched end. An ARRAY, not an
 * LRU hash: it is written on every end, where an LRU update costs ~0.3 us here and a slot
 * a few instructions (common.h slot_of); and 16 KiB, kmalloc'd and warm, where 8,192
 * slots (128 KiB, vmalloc'd) cost the end ~30 ns more of cache and TLB misses (A/B). */
#ifndef RECENT_BITS
#define RECENT_BITS 10
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << RECENT_BITS);
	__type(key, __u32);
	__type(value, struct inflight_key);
} recently_ended SEC(".maps");

static __always_inline struct inflight_key *recent_slot(const struct inflight_key *k)
{
	__u32 idx = slot_of(k->cs, RECENT_BITS);

	return bpf_map_lookup_elem(&recently_ended, &idx);
}

/* Remember `k` as just ended (before its in-flight entry goes: see the end). */
static __always_inline void recent_mark(const struct inflight_key *k)
{
	struct inflight_key *slot = recent_slot(k);

	if (slot)
		*slot = *k;
}

static __always_inline int recent_has(const struct inflight_key *k)
{
	struct inflight_key *slot = recent_slot(k);

	return slot && slot->cs == k->cs && slot->tgid == k->tgid;
}

/* A new call at a reused address: its own missing start must not pass as a duplicate. */
static __always_inline void recent_forget(const struct inflight_key *k)
{
	struct inflight_key *slot = recent_slot(k);

	if (slot && slot->cs == k->cs && slot->tgid == k->tgid)
		slot->cs = 0;
}

/* The start of call `key`: in its slot, else (unless the call just ended, in its slot or
 * the LRU tier: DUP_END) in the LRU tier, else NULL (start_slots.h says why in that
 * order). */
#define DUP_END ((struct inflight_val *)1)

static __always_inline struct inflight_val *find_start(const struct inflight_key *key,
							struct start_slot **slot)
{
	*slot = slot_get(SLOTS(inflight_slots), key);
	if (*slot)
		return (struct inflight_val *)(*slot)->val;
	if (slot_ended(SLOTS(inflight_slots), key) || recent_has(key))
		return DUP_END;
	return bpf_map_lookup_elem(&inflight, key);
}

/* Take what find_start found, and mark the call ended (in its slot, else in the repeat
 * filter first: a racer that misses the in-flight entry already finds it there): 0, or -1
 * when a racing end of the call took it first. */
static __always_inline int take_start(const struct inflight_key *key, struct start_slot *slot)
{
	if (slot)
		return slot_end(slot, key);
	recent_mark(key);
	return bpf_map_delete_elem(&inflight, key) ? -1 : 0;
}

SEC("uprobe")
int grpc_client_start(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct grpc_client_config *cfg;
	struct inflight_key key = {};
	struct inflight_val val = {};
	struct g_key gk = {};
	__u64 cs = GO_ARG1(ctx), attempt;

	cfg = CONFIG_OF_TGID(grpc_client_config, tgid);
	if (!cfg)
		return 0;
	if (!cfg->start_first) {
		if (go_read_u64(cs + cfg->cs_attempt, &attempt)) {
			stat_inc(STAT_BAD_READ);
			return 0;
		}
		if (attempt)
			return 0; /* a retry of a call already started */
	}
	key.tgid = tgid;
	key.cs = cs;
	val.start_ns = bpf_ktime_get_ns();
	if (cfg->trace) {
		__u64 c = 0;

		go_read_u64(cs + cfg->cs_ctx + 8, &c); /* the iface's data word */
		val.ctx_node = request_ctx_of(tgid, c);
	}
	slot_start(SLOTS(inflight_slots), &inflight, &grpc_client_config_slots,
		   &grpc_client_config, &key, &val);
	recent_forget(&key);
	gk.tgid = tgid;
	gk.g = GO_GOROUTINE(ctx);
	g_note(&gk, cs);
	return 0;
}

/* Take the start `v` that find_start found for call `key` (in `slot`, or the LRU tier):
 * 0 with *start and *node, or 1 when a racing end of the call took it first (counted). */
static __always_inline int take_found(const struct inflight_key *key, struct inflight_val *v,
				      struct start_slot *slot, __u64 *start, __u64 *node)
{
	*start = v->start_ns;
	*node = v->ctx_node;
	/* Two ends racing for one call: one take wins (take_start marks it ended). */
	if (take_start(key, slot)) {
		stat_inc(STAT_DUP_END);
		return 1;
	}
	return 0;
}

/* Take the start of call `key` for its end: 1 when this end must not be emitted (the call's
 * end was already emitted), else 0 with *start and *node (0, 0: no start seen, counted). */
static __always_inline int take_call(const struct inflight_key *key, __u64 *start, __u64 *node)
{
	struct start_slot *slot;
	struct inflight_val *v = find_start(key, &slot);

	if (v == DUP_END) {
		stat_inc(STAT_DUP_END); /* the race below, one step later: already emitted */
		return 1;
	}
	if (!v) {
		stat_inc(STAT_UNMATCHED_END);
		return 0;
	}
	return take_found(key, v, slot, start, node);
}

/* Entry of (*clientStream).finish(err) (RAX = cs, err = RBX itab + RCX data), or, with
 * end_at_attempt, its CALLs from the functions that call it while cs.attempt may be nil. */
SEC("uprobe")
int grpc_client_end(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct grpc_client_config *cfg;
	struct inflight_key key = {};
	__u64 cs = GO_ARG1(ctx), start = 0, node = 0, attempt, stream;
	__u32 flags = 0;
	__u8 finished;

	cfg = CONFIG_OF_TGID(grpc_client_config, tgid);
	if (!cfg)
		return 0;
	if (read_cs_state(cfg, cs, &finished, &attempt)) {
		stat_inc(STAT_BAD_READ);
		return 0;
	}
	if (finished || (attempt && cfg->end_at_attempt))
		return 0; /* a later duplicate; or grpc_client_end_attempt ends this call */
	key.tgid = tgid;
	key.cs = cs;
	if (take_call(&key, &start, &node))
		return 0;
	stream = attempt_stream(cfg, attempt, &flags);
	emit_end(cfg, tgid, cs, stream, 0, GO_ARG2(ctx), GO_ARG3(ctx), start, node,
		 flags | (start ? 0 : SPAN_F_UNMATCHED));
	return 0;
}

/* At the CALL of (*csAttempt).finish(err) inside (*clientStream).finish (RAX = the call's
 * last attempt, err = RBX itab + RCX data: the callee's registers). finish() makes it once
 * per call that has an attempt, after setting cs.finished under cs.mu: a streaming call's
 * second finish() (its context watcher) returns before it and takes no trap. The attempt
 * holds the call, its stream and (csAttempt.t) the transport that stream was made on: one
 * read, where the entry of finish() needed two, and the stream's read needs no line of its
 * own for the transport (~120 ns of ~800 here, a same-run A/B). */
SEC("uprobe")
int grpc_client_end_attempt(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct grpc_client_config *cfg;
	struct inflight_key key = {};
	__u64 attempt = GO_ARG1(ctx), cs = 0, stream = 0, ct = 0, start = 0, node = 0;
	struct go_window win;
	__u32 c, s, t;

	cfg = CONFIG_OF_TGID(grpc_client_config, tgid);
	if (!cfg)
		return 0;
	c = cfg->attempt_cs - cfg->aw_lo;
	s = cfg->attempt_stream - cfg->aw_lo;
	t = cfg->aw_ct_on ? cfg->aw_ct : 0;
	if (cfg->aw_on &&
	    go_window_read(attempt + cfg->aw_lo, &win, go_max_u32(go_max_u32(c, s), t) + 8) == 0) {
		cs = go_window_u64(&win, c);
		stream = go_window_u64(&win, s);
		if (cfg->aw_ct_on)
			ct = go_window_u64(&win, t);
	} else if (go_read_u64(attempt + cfg->attempt_cs, &cs) ||
		   go_read_u64(attempt + cfg->attempt_stream, &stream)) {
		stat_inc(STAT_BAD_READ);
		return 0;
	}
	if (!cs)
		return 0;
	key.tgid = tgid;
	key.cs = cs;
	if (take_call(&key, &start, &node))
		return 0;
	emit_end(cfg, tgid, cs, stream, ct, GO_ARG2(ctx), GO_ARG3(ctx), start, node,
		 start ? 0 : SPAN_F_UNMATCHED);
	return 0;
}

/* The end of a call that failed without a stream, on the goroutine that started it
 * (gk), with its error (errtab, errdata): emitted when that call is still in flight and its
 * attempt has no stream (a call with one is ended by finish()). `unfinished`: only while
 * cs.finished is unset (shouldRetry: a finished call's error is that of a later stream op). */
static __always_inline void fail_call(const struct g_key *gk, __u64 errtab, __u64 errdata,
				      int unfinished)
{
	struct grpc_client_config *cfg;
	struct inflight_key key = {};
	struct start_slot *slot;
	struct inflight_val *v;
	__u64 cs, attempt = 0, stream = 0, start, node, fn = 0, wrapped[2];
	__u8 finished = 1;

	/* Not counted as STAT_NO_CONFIG: this process's start and end probes count it. */
	cfg = CONFIG_FIND(grpc_client_config, gk->tgid);
	if (!cfg)
		return;
	cs = g_call(gk);
	if (!cs)
		return;
	key.tgid = gk->tgid;
	key.cs = cs;
	v = find_start(&key, &slot);
	if (!v || v == DUP_END)
		return; /* that call already ended: this error is another one's */
	if (read_cs_state(cfg, cs, &finished, &attempt) || (finished && unfinished) ||
	    (attempt && go_read_u64(attempt + cfg->attempt_stream, &stream)))
		return;
	if (stream)
		return; /* has a stream: finish() ends it */
	if (take_found(&key, v, slot, &start, &node))
		return;
	/* "max retries exhausted: ...: %w": a *fmt.wrapError around the error shouldRetry was
	 * given, whose code is the call's (what status.Code unwraps to). One level: grpc-go
	 * wraps once. */
	if (cfg->wrap_error_fn && go_read_u64(errtab + cfg->itab_fun0, &fn) == 0 &&
	    fn == cfg->wrap_error_fn &&
	    bpf_probe_read_user(wrapped, sizeof(wrapped),
				(const void *)(errdata + cfg->wrap_error_err)) == 0 && wrapped[0]) {
		errtab = wrapped[0];
		errdata = wrapped[1];
	}
	emit_end(cfg, gk->tgid, cs, 0, 0, errtab, errdata, start, node, 0); /* no stream */
}

/* A FAIL point's registers: err in RBX:RCX. At shouldRetry's RETs RAX is its bool: (true,
 * nil) is a transparent retry, (false, nil) a retry after backoff (the retry policy
 * matched); only a non-nil error ends the call, and it is the call's status. */
static __always_inline int fail_at(struct pt_regs *ctx, int should_retry)
{
	struct g_key gk = {};

	if ((should_retry && (GO_ARG1(ctx) & 0xff)) || !GO_ARG2(ctx))
		return 0; /* another attempt follows */
	gk.tgid = bpf_get_current_pid_tgid() >> 32;
	gk.g = GO_GOROUTINE(ctx);
	fail_call(&gk, GO_ARG2(ctx), GO_ARG3(ctx), should_retry);
	return 0;
}

/* At each RET of (*csAttempt).shouldRetry(err) (bool, error): RAX = retry, RBX:RCX = err. */
SEC("uprobe")
int grpc_client_fail(struct pt_regs *ctx)
{
	return fail_at(ctx, 1);
}

/* v1.78+: at the CALL of endOfClientStream(cc, err, opts...) in newClientStream's deferred
 * cleanup (RAX = cc, RBX:RCX = err), which runs only when newClientStream fails: the
 * call's final error, after every retry. A call that finished before its first attempt
 * (finish() set cs.finished) ends here too. */
SEC("uprobe")
int grpc_client_fail_cleanup(struct pt_regs *ctx)
{
	return fail_at(ctx, 0);
}

/* At each RET of the transport's constructor (newHTTP2Client, or NewHTTP2Client from
 * v1.69): the new connection's server address goes into the cache (conn_cache.h) before
 * any call can run on it. Once per connection; a failed construction returns nil. */
SEC("uprobe")
int grpc_client_conn(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct grpc_client_config *cfg = CONFIG_FIND(grpc_client_config, tgid);
	__u64 rax = GO_ARG1(ctx), rbx = GO_ARG2(ctx), ct;
	struct conn_src src;

	if (!cfg)
		return 0;
	barrier_var(rbx); /* both loads first: see grpc_server.bpf.c frame_arg */
	ct = cfg->conn_ret_reg == 2 ? rbx : rax;
	if (!ct)
		return 0;
	peer_src(cfg, &src);
	conn_facts_note(&conn_peer, tgid, ct, &src);
	return 0;
}
