/* What a request reads of its connection (its TCP address, and one more word the path
 * names: the server's framer), read once per connection instead of once per request.
 *
 * Why: the peer (client) or listener (server) address of a request is its connection's,
 * and reading it from Go memory takes four dependent reads (the transport's net.Addr
 * interface, the itab, the TCPAddr, the IP bytes): ~0.3 us of every end here. The cache
 * keeps it by (tgid, transport pointer).
 *
 * Why an entry is never stale: a transport's address (and framer) is fixed for its life, and a transport
 * pointer can only name a new transport after the old one was freed. Every transport made
 * after the attach passes the probe at its constructor's RETs (conn_addr_note), which
 * writes its entry before the constructor returns it, so before any request can run on it:
 * an entry left by a freed transport at the same address is overwritten first. A transport
 * made before the attach gets its entry at its first end, read from the live object (an
 * end holds the transport it reads). So an entry always describes the live transport under
 * its key (and a probe holds its transport alive while it reads or writes). The constructor
 * probe runs once per connection, never per request; without it (Python found no
 * constructor RET) the cache is off and every end reads the address.
 */
#ifndef PYHTTP2PROBE_CONN_CACHE_H
#define PYHTTP2PROBE_CONN_CACHE_H

#include "common.h"

/* One connection's facts in a slot (by hash of tgid and transport pointer). A slot is
 * written with plain stores by whichever probe fills it, so two writers can interleave: the
 * tag binds the key to the contents (key ^ a hash of them), and a reader takes only a slot
 * whose tag matches what it copied out, so a torn or foreign slot is a miss (then read from
 * Go memory and written again), never a wrong fact. */
struct conn_facts {
	__u64 tag;
	__u8 ip[16];
	__u16 port;
	__u16 none;  /* 1: the connection has no TCP address (a unix socket, a custom net.Conn) */
	__u32 _pad;
	__u64 aux;   /* the word at conn + aux_off (conn_src), 0 when the path names none */
};

/* 4096 slots (160 KiB) per object: the connections a node's traced processes hold at once
 * are far fewer, and a slot two connections share costs only re-reads. An ARRAY, not a
 * hash: a lookup is a few instructions here, where a hash lookup costs ~0.2 us per end. */
#ifndef CONN_CACHE_BITS /* tests/test_slot_tables.py builds with tiny tables */
#define CONN_CACHE_BITS 12
#endif
#define CONN_CACHE(name)                                   \
	struct {                                           \
		__uint(type, BPF_MAP_TYPE_ARRAY);          \
		__uint(max_entries, 1 << CONN_CACHE_BITS); \
		__type(key, __u32);                        \
		__type(value, struct conn_facts);          \
	} name SEC(".maps")

/* The process's attach generation goes in: a new process under a reused pid, its Go heap
 * at the same addresses, never meets its predecessor's slots (they go stale, unreachable). */
static __always_inline __u64 conn_key_of(__u32 tgid, __u64 conn, __u64 gen)
{
	return (conn * 0x9E3779B97F4A7C15ULL) ^ tgid ^ (gen * 0xC2B2AE3D27D4EB4FULL);
}

/* The tag of a slot holding `f` for key `key` (f's tag word not included). */
static __always_inline __u64 conn_tag(__u64 key, const struct conn_facts *f)
{
	const __u64 *w = (const __u64 *)f->ip;
	__u64 h = w[0] * 0xC2B2AE3D27D4EB4FULL;

	h ^= (w[1] ^ ((__u64)f->port << 16 | f->none)) * 0x165667B19E3779F9ULL;
	h ^= f->aux * 0x27D4EB2F165667C5ULL;
	h ^= h >> 29;
	return key ^ (h * 0x9E3779B97F4A7C15ULL) ^ 1; /* ^1: an all-zero slot never matches */
}

static __always_inline struct conn_facts *conn_slot(void *cache, __u64 key)
{
	__u32 idx = slot_of(key, CONN_CACHE_BITS);

	return bpf_map_lookup_elem(cache, &idx);
}

/* Write `f` (its tag set here) into its slot. */
static __always_inline void conn_slot_put(void *cache, __u64 key, struct conn_facts *f)
{
	struct conn_facts *s = conn_slot(cache, key);

	f->tag = conn_tag(key, f);
	if (s)
		*s = *f;
}

/* Where a connection's facts are: the net.Addr field `field` of the transport and how to
 * read a *net.TCPAddr (go_read_tcp_addr's arguments, from the process's config), and the
 * word at aux_off when has_aux. */
struct conn_src {
	const struct go_chain *field;
	__u64 network_fn;
	__u64 *known_tab;
	__u32 itab_fun0;
	__u32 ip_off;
	__u32 port_off;
	__u32 aux_off;
	__u32 has_aux;
	__u64 gen;      /* the process's attach generation (config.h) */
};

/* A conn_src for the net.Addr field `addr_field` of a config that has the usual TCPAddr
 * fields (itab_fun0, tcpaddr_network_fn, tcpaddr_itab, tcpaddr_ip, tcpaddr_port, gen); `aux` is
 * the offset of the word kept beside the address, or -1 for none. */
#define CONN_SRC_OF(src, cfg, addr_field, aux)                                \
	do {                                                                  \
		(src)->field = &(cfg)->addr_field;                            \
		(src)->network_fn = (cfg)->tcpaddr_network_fn;                \
		(src)->known_tab = (__u64 *)&(cfg)->tcpaddr_itab;             \
		(src)->itab_fun0 = (cfg)->itab_fun0;                          \
		(src)->ip_off = (cfg)->tcpaddr_ip;                            \
		(src)->port_off = (cfg)->tcpaddr_port;                        \
		(src)->has_aux = (aux) >= 0;                                  \
		(src)->aux_off = (aux) >= 0 ? (__u32)(aux) : 0;               \
		(src)->gen = (cfg)->gen;                                      \
	} while (0)

/* Read them from Go memory into *f: go_read_tcp_addr's result (0 read, 1 no TCP address,
 * -1 the TCPAddr unreadable), or -2 when a transport field was unreadable (not flagged). */
static __always_inline int conn_facts_read(const struct conn_src *src, __u64 conn,
					   struct conn_facts *f)
{
	__u64 addr;
	int r;

	if (src->has_aux && go_read_u64(conn + src->aux_off, &f->aux))
		return -2;
	r = go_chain_addr(conn, src->field, &addr);
	if (r)
		return r < 0 ? -2 : 1;
	return go_read_tcp_addr(addr, src->itab_fun0, src->network_fn, src->known_tab,
				src->ip_off, src->port_off, f->ip, &f->port);
}

/* At a transport's construction: (re)write its slot; an unreadable one is left unwritten
 * (and a slot still holding this key is spoiled, so the next request reads it). */
static __always_inline void conn_facts_note(void *cache, __u32 tgid, __u64 conn,
					    const struct conn_src *src)
{
	__u64 key = conn_key_of(tgid, conn, src->gen);
	struct conn_facts f = {};
	struct conn_facts *s;
	int r = conn_facts_read(src, conn, &f);

	if (r < 0) {
		s = conn_slot(cache, key);
		if (s)
			s->tag = 0;
		return;
	}
	f.none = r;
	conn_slot_put(cache, key, &f);
}

/* At a request: the facts of transport `conn` into *f, from the cache when `use` (the
 * constructor probe is attached), else read (and kept, when readable). Returns as
 * conn_facts_read (*f is whole only when >= 0). */
static __always_inline int conn_facts_of(void *cache, int use, __u32 tgid, __u64 conn,
					 const struct conn_src *src, struct conn_facts *f)
{
	__u64 key = conn_key_of(tgid, conn, src->gen);
	struct conn_facts *s;
	int r;

	__builtin_memset(f, 0, sizeof(*f));
	if (!use)
		return conn_facts_read(src, conn, f);
	s = conn_slot(cache, key);
	if (s) {
		*f = *s; /* a copy: the tag is checked against what was copied */
		if (f->tag == conn_tag(key, f))
			return f->none;
		__builtin_memset(f, 0, sizeof(*f));
	}
	r = conn_facts_read(src, conn, f);
	if (r < 0)
		return r;
	f->none = r;
	conn_slot_put(cache, key, f);
	return r;
}

#endif /* PYHTTP2PROBE_CONN_CACHE_H */
