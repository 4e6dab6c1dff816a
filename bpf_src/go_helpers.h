/* Small readers of Go runtime values from uprobes (amd64, Go register ABI).
 *
 * Every user-memory read is checked; a failed read returns -1 so callers can count it.
 * Loops have constant bounds the verifier can see. Include after vmlinux.h and
 * bpf_helpers.h.
 */
#ifndef PYHTTP2PROBE_GO_HELPERS_H
#define PYHTTP2PROBE_GO_HELPERS_H

#include "config.h" /* struct go_chain, GO_CHAIN_MAX */

/* Go's register ABI on amd64: integer args in RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11;
 * an interface or string argument takes two consecutive registers. */
#define GO_ARG1(ctx) ((__u64)(ctx)->ax)
#define GO_ARG2(ctx) ((__u64)(ctx)->bx)
#define GO_ARG3(ctx) ((__u64)(ctx)->cx)
#define GO_ARG4(ctx) ((__u64)(ctx)->di)
/* The current goroutine (g) lives in R14: it pairs the entry and RETs of one call only. */
#define GO_GOROUTINE(ctx) ((__u64)(ctx)->r14)

/* Key of per-goroutine state: it pairs the entry and the RETs of one synchronous call
 * (DESIGN.md rule 1), never work that crosses goroutines. */
struct g_key {
	__u32 tgid;
	__u32 _pad;
	__u64 g;
};

static __always_inline int go_read_u64(__u64 addr, __u64 *out)
{
	*out = 0;
	if (!addr)
		return -1;
	return bpf_probe_read_user(out, sizeof(*out), (const void *)addr) ? -1 : 0;
}

static __always_inline int go_read_u32(__u64 addr, __u32 *out)
{
	*out = 0;
	if (!addr)
		return -1;
	return bpf_probe_read_user(out, sizeof(*out), (const void *)addr) ? -1 : 0;
}

static __always_inline int go_read_u8(__u64 addr, __u8 *out)
{
	*out = 0;
	if (!addr)
		return -1;
	return bpf_probe_read_user(out, sizeof(*out), (const void *)addr) ? -1 : 0;
}

/* Resolve a field chain from base to the address of its final field.
 * Returns 0 and sets *out, 1 when a pointer on the way is nil (a normal "absent"),
 * -1 on a failed read or an invalid chain. */
static __always_inline int go_chain_addr(__u64 base, const struct go_chain *c, __u64 *out)
{
	__u64 p = base;
	__u32 n = c->nhops;

	*out = 0;
	if (!c->valid || n > GO_CHAIN_MAX)
		return -1;
	if (!p)
		return 1;
	for (int i = 0; i < GO_CHAIN_MAX; i++) {
		if (i >= n)
			break;
		if (go_read_u64(p + c->hop[i], &p))
			return -1;
		if (!p)
			return 1;
	}
	*out = p + c->last;
	return 0;
}

/* Read the pointer-sized value at the end of a chain (0 if absent). */
static __always_inline int go_chain_u64(__u64 base, const struct go_chain *c, __u64 *out)
{
	__u64 addr;
	int r = go_chain_addr(base, c, &addr);

	*out = 0;
	if (r)
		return r;
	return go_read_u64(addr, out);
}

static __always_inline int go_chain_u32(__u64 base, const struct go_chain *c, __u32 *out)
{
	__u64 addr;
	int r = go_chain_addr(base, c, &addr);

	*out = 0;
	if (r)
		return r;
	return go_read_u32(addr, out);
}

/* An interface value in memory: (tab or type word, data pointer). */
static __always_inline int go_read_iface(__u64 addr, __u64 *tab, __u64 *data)
{
	__u64 v[2] = {};

	*tab = 0;
	*data = 0;
	if (!addr || bpf_probe_read_user(v, sizeof(v), (const void *)addr))
		return -1;
	*tab = v[0];
	*data = v[1];
	return 0;
}

/* Copy the Go string header at `addr` (ptr, len) into buf[0..GO_STR_MAX).
 * Sets *len to the copied length and *truncated when the string was longer. */
static __always_inline int go_read_string(__u64 addr, char *buf, __u16 *len, int *truncated)
{
	__u64 hdr[2] = {};
	__u64 n;

	*len = 0;
	*truncated = 0;
	if (!addr || bpf_probe_read_user(hdr, sizeof(hdr), (const void *)addr))
		return -1;
	n = hdr[1];
	if (n > GO_STR_MAX) {
		n = GO_STR_MAX;
		*truncated = 1;
	}
	if (!hdr[0] || !n)
		return 0;
	if (bpf_probe_read_user(buf, n, (const void *)hdr[0]))
		return -1;
	*len = n;
	return 0;
}

#endif /* PYHTTP2PROBE_GO_HELPERS_H */
