/* Readers of Go runtime values from uprobes (amd64, Go register ABI): registers, checked
 * user-memory reads, field chains, interfaces, strings, TCP addresses. Nothing here knows
 * maps or records; common.h builds on these.
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

/* Several fields of one Go object in one read: a read costs ~0.1 us here whatever its size
 * up to a few cache lines, so the fields an end needs of one object are taken from a window
 * of GO_WINDOW bytes at (object + lo), each by its offset from lo (Python checks that every
 * field lies inside; the masks only show the verifier the bounds). */
#define GO_WINDOW 128

struct go_window {
	__u64 w[GO_WINDOW / 8];
};

/* Read a window up to `end`, the end of its last field (from lo): only the bytes, and so the
 * cache lines, its fields are on. Against reading all GO_WINDOW bytes (A/B in one run): the
 * HTTP/2 client start ~725 -> ~670 ns (its key is 12 bytes), gRPC ends ~6-12 ns. */
static __always_inline int go_window_read(__u64 addr, struct go_window *win, __u32 end)
{
	/* end rounded up to 8, in [8, GO_WINDOW] (Python keeps every field inside): a mask
	 * the verifier follows, where clang drops a clamp's bounds on the way to the call */
	__u32 len = ((end - 1) & (GO_WINDOW - 8)) + 8;

	barrier_var(len);
	return addr && bpf_probe_read_user(win->w, len, (const void *)addr) == 0 ? 0 : -1;
}

/* v, at most `max` (a constant), bounded where the verifier sees it: a plain comparison
 * may reach a helper's argument as arithmetic that drops the bound. */
static __always_inline __u64 go_clamp(__u64 v, const __u64 max)
{
	asm volatile("if %[v] <= %[m] goto +1; %[v] = %[m]" : [v] "+r"(v) : [m] "i"(max));
	return v;
}

static __always_inline __u32 go_max_u32(__u32 a, __u32 b)
{
	return a > b ? a : b;
}

static __always_inline __u64 go_window_u64(const struct go_window *win, __u32 off)
{
	return win->w[(off >> 3) & (GO_WINDOW / 8 - 1)];
}

static __always_inline __u32 go_window_u32(const struct go_window *win, __u32 off)
{
	return (__u32)(win->w[(off >> 3) & (GO_WINDOW / 8 - 1)] >> ((off & 4) * 8));
}

/* Copy a Go string whose header (ptr, len) was read already into buf[0..max): as
 * go_read_string below. */
static __always_inline int go_copy_string(__u64 ptr, __u64 n, char *buf, __u32 max,
					  __u16 *len, int *trunc)
{
	*len = 0;
	*trunc = 0;
	if (n > max) {
		n = max;
		*trunc = 1;
	}
	if (!ptr || !n)
		return 0;
	n &= 2 * max - 1; /* keeps n unchanged, and its bound visible to the verifier */
	if (n == 0 || n > max)
		return 0;
	if (bpf_probe_read_user(buf, n, (const void *)ptr))
		return -1;
	*len = n;
	return 0;
}

/* Copy the Go string header at `addr` (ptr, len) into buf[0..max). `max` must be a power
 * of two known at compile time (pass the sizeof of the destination array) so the verifier
 * sees the bound. Sets *len to the copied length and *trunc when the string was longer. */
static __always_inline int go_read_string(__u64 addr, char *buf, __u32 max, __u16 *len,
					  int *trunc)
{
	__u64 hdr[2] = {};

	*len = 0;
	*trunc = 0;
	if (!addr || bpf_probe_read_user(hdr, sizeof(hdr), (const void *)addr))
		return -1;
	return go_copy_string(hdr[0], hdr[1], buf, max, len, trunc);
}

/* The TCP address behind the net.Addr interface value stored at `iface`: ip (16 bytes,
 * IPv6 or IPv4-mapped IPv6) and port. net.Addr's methods are Network, String, so the
 * itab's fun[0] (at itab_fun0) tells a *net.TCPAddr apart when network_fn, the runtime
 * address of net.(*TCPAddr).Network, is known (0: unchecked); that works for stripped
 * binaries too. *known_tab is an itab found to be that one before (0: none yet): itabs
 * are never freed, so a match spares the fun[0] read, and a new one found right is kept.
 * ip_off/port_off: net.TCPAddr.IP (slice) and .Port (int).
 * Returns 0 when read (ip stays zero if its bytes were unreadable), 1 when there is no
 * TCP address (a nil or unreadable interface, a unix socket), -1 when the TCPAddr's
 * fields could not be read. */
static __always_inline int go_read_tcp_addr(__u64 iface, __u32 itab_fun0, __u64 network_fn,
					    __u64 *known_tab, __u32 ip_off, __u32 port_off,
					    __u8 *ip, __u16 *port)
{
	__u64 tab, data, fn, slice[4] = {}, p = 0;
	__u32 v4 = 0;

	if (go_read_iface(iface, &tab, &data) || !tab || !data)
		return 1;
	if (network_fn && tab != *known_tab) {
		if (go_read_u64(tab + itab_fun0, &fn) || fn != network_fn)
			return 1;
		*known_tab = tab;
	}
	if (port_off == ip_off + 24) { /* TCPAddr{IP, Port, ..}: slice header and port in one read */
		if (bpf_probe_read_user(slice, sizeof(slice), (const void *)(data + ip_off)))
			return -1;
		p = slice[3];
	} else if (bpf_probe_read_user(slice, 2 * sizeof(__u64), (const void *)(data + ip_off)) ||
		   go_read_u64(data + port_off, &p)) {
		return -1;
	}
	*port = (__u16)p;
	if (slice[1] == 16) {
		bpf_probe_read_user(ip, 16, (const void *)slice[0]); /* zeroed if it fails */
	} else if (slice[1] == 4 && !bpf_probe_read_user(&v4, 4, (const void *)slice[0])) {
		ip[10] = 0xff;
		ip[11] = 0xff;
		__builtin_memcpy(&ip[12], &v4, 4);
	}
	return 0;
}

#endif /* PYHTTP2PROBE_GO_HELPERS_H */
