/* C side of libbpf_loader: what cannot (or should not) cross into Python per call:
 * libbpf's varargs log, option structs with bitfield padding, and the ring-buffer drain,
 * which copies records into one batch so Python is entered once per batch, not per record. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/bpf.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define LBL_BATCH_FULL (-10000) /* below any errno: "batch full, more pending" */
#define LBL_PACKED 0x6b636170U  /* "pack": a packed record's first word (bpf_src/stage.h) */

static void _lbl_log(int level, const char *msg);
static int _lbl_sample(void *ctx, void *data, size_t size);

static int lbl_print_level = LIBBPF_INFO;

static int lbl_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char msg[1024];

	if ((int)level > lbl_print_level)
		return 0;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	_lbl_log((int)level, msg);
	return 0;
}

const char *lbl_build_version(void) { return LBL_BUILD_VERSION; }
void lbl_install_print(void) { libbpf_set_print(lbl_print); }
void lbl_set_print_level(int level) { lbl_print_level = level; }

struct bpf_object *lbl_open(const char *path, const char *btf_custom_path, char *log_buf,
			    size_t log_size)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .btf_custom_path = btf_custom_path,
		    .kernel_log_buf = log_buf, .kernel_log_size = log_size);
	return bpf_object__open_file(path, &opts);
}

struct bpf_link *lbl_attach_uprobe(const struct bpf_program *prog, int pid, const char *binary,
				   size_t offset, uint64_t cookie)
{
	LIBBPF_OPTS(bpf_uprobe_opts, opts, .bpf_cookie = cookie, .retprobe = false);
	return bpf_program__attach_uprobe_opts(prog, pid, binary, offset, &opts);
}

/* uprobe_multi links (kernel >= 6.6) are newer than libbpf 1.1, so the shim speaks the
 * bpf() syscall itself. One link holds many offsets and detaches with one RCU sync,
 * where each perf-event uprobe waits for its own grace periods under a global mutex. */
#define LBL_TRACE_UPROBE_MULTI 48 /* enum bpf_attach_type BPF_TRACE_UPROBE_MULTI */

struct lbl_link_create_uprobe_multi { /* union bpf_attr.link_create, uprobe_multi member */
	__u32 prog_fd;
	__u32 target_fd;
	__u32 attach_type;
	__u32 flags;
	__u64 path;
	__u64 offsets;
	__u64 ref_ctr_offsets;
	__u64 cookies;
	__u32 cnt;
	__u32 umulti_flags;
	__u32 pid;
	__u32 pad;
};

int lbl_prepare_uprobe_multi(struct bpf_program *prog)
{
	return bpf_program__set_expected_attach_type(prog, LBL_TRACE_UPROBE_MULTI);
}

int lbl_attach_uprobe_multi(int prog_fd, const char *binary, const uint64_t *offsets,
			    const uint64_t *cookies, uint32_t cnt, uint32_t pid)
{
	struct lbl_link_create_uprobe_multi attr;
	long fd;

	memset(&attr, 0, sizeof(attr));
	attr.prog_fd = prog_fd;
	attr.attach_type = LBL_TRACE_UPROBE_MULTI;
	attr.path = (__u64)(unsigned long)binary;
	attr.offsets = (__u64)(unsigned long)offsets;
	attr.cookies = (__u64)(unsigned long)cookies;
	attr.cnt = cnt;
	attr.pid = pid;
	fd = syscall(__NR_bpf, BPF_LINK_CREATE, &attr, sizeof(attr));
	return fd < 0 ? -errno : (int)fd;
}

int lbl_prog_stats(int prog_fd, uint64_t *run_cnt, uint64_t *run_time_ns)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);
	int err;

	memset(&info, 0, sizeof(info));
	err = bpf_obj_get_info_by_fd(prog_fd, &info, &len);
	if (err)
		return -errno;
	*run_cnt = info.run_cnt;
	*run_time_ns = info.run_time_ns;
	return 0;
}

int lbl_enable_stats(void) { return bpf_enable_stats(BPF_STATS_RUN_TIME); }

int lbl_prog_test_run(int prog_fd, int repeat, const void *data, uint32_t size,
		      uint32_t *retval, uint32_t *duration)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data, .data_size_in = size,
		    .repeat = repeat);
	int err = bpf_prog_test_run_opts(prog_fd, &opts);

	if (err)
		return -errno;
	*retval = opts.retval;
	*duration = opts.duration;
	return 0;
}

/* Run a program once on CPU `cpu` (BPF_F_TEST_RUN_ON_CPU: raw_tp programs; the kernel runs
 * it there by IPI), with `ctx` as its context. */
int lbl_prog_run_on_cpu(int prog_fd, uint32_t cpu, const void *ctx, uint32_t size,
			uint32_t *retval)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = ctx, .ctx_size_in = size,
		    .flags = BPF_F_TEST_RUN_ON_CPU, .cpu = cpu);
	int err = bpf_prog_test_run_opts(prog_fd, &opts);

	if (err)
		return -errno;
	*retval = opts.retval;
	return 0;
}

/* Run a SEC("syscall") program once with `ctx` as its context (BPF_PROG_TEST_RUN: such
 * programs take ctx_in only, no data, no repeat). */
int lbl_prog_run_syscall(int prog_fd, const void *ctx, uint32_t size, uint32_t *retval)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = ctx, .ctx_size_in = size);
	int err = bpf_prog_test_run_opts(prog_fd, &opts);

	if (err)
		return -errno;
	*retval = opts.retval;
	return 0;
}

struct lbl_batch *lbl_batch_new(size_t limit)
{
	struct lbl_batch *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->limit = limit;
	b->uniform = 1;
	return b;
}

void lbl_batch_reset(struct lbl_batch *b)
{
	b->len = 0;
	b->n = 0;
	b->uniform = 1;
	b->first_size = 0;
	b->oom = 0;
}

void lbl_batch_free(struct lbl_batch *b)
{
	if (!b)
		return;
	free(b->buf);
	free(b->offsets);
	free(b->sizes);
	free(b);
}

static int lbl_grow(struct lbl_batch *b, size_t need)
{
	if (need > b->cap) {
		size_t cap = b->cap ? b->cap : 65536;
		char *buf;

		while (cap < need)
			cap *= 2;
		buf = realloc(b->buf, cap);
		if (!buf)
			return -ENOMEM;
		b->buf = buf;
		b->cap = cap;
	}
	if (b->n == b->ncap) {
		size_t ncap = b->ncap ? b->ncap * 2 : 1024;
		uint32_t *o = realloc(b->offsets, ncap * sizeof(*o));
		uint32_t *s;

		if (!o)
			return -ENOMEM;
		b->offsets = o;
		s = realloc(b->sizes, ncap * sizeof(*s));
		if (!s)
			return -ENOMEM;
		b->sizes = s;
		b->ncap = ncap;
	}
	return 0;
}

/* Append one record to the batch; -ENOMEM when it cannot grow. */
static int lbl_batch_put(struct lbl_batch *b, const void *data, size_t size)
{
	size_t off = (b->len + 7) & ~(size_t)7;

	if (lbl_grow(b, off + size)) {
		b->oom = 1;
		return -ENOMEM;
	}
	memcpy(b->buf + off, data, size);
	b->offsets[b->n] = (uint32_t)off;
	b->sizes[b->n] = (uint32_t)size;
	if (b->n == 0)
		b->first_size = (uint32_t)size;
	else if (size != b->first_size)
		b->uniform = 0;
	b->n++;
	b->len = off + size;
	return 0;
}

/* libbpf 1.1 has already moved the consumer past this record: copy it before stopping.
 * A packed record (LBL_PACKED header: producers that send several records per
 * reservation) goes in as the records it holds; one whose header does not fit its size
 * goes in whole, for the reader to count as unknown. */
static int lbl_batch_sample(void *ctx, void *data, size_t size)
{
	struct lbl_batch *b = ctx;
	const struct lbl_packed_head *h = data;
	int err;

	if (size >= sizeof(*h) && h->magic == LBL_PACKED && h->item_size &&
	    h->item_size % 8 == 0 && (size_t)h->count * h->item_size <= size - sizeof(*h)) {
		const char *item = (const char *)(h + 1);

		for (uint32_t i = 0; i < h->count; i++, item += h->item_size) {
			err = lbl_batch_put(b, item, h->item_size);
			if (err)
				return err;
		}
	} else {
		err = lbl_batch_put(b, data, size);
		if (err)
			return err;
	}
	return b->len >= b->limit ? LBL_BATCH_FULL : 0;
}

struct ring_buffer *lbl_ringbuf_new(int map_fd, struct lbl_batch *batch)
{
	return ring_buffer__new(map_fd, lbl_batch_sample, batch, NULL);
}

int lbl_ringbuf_add(struct ring_buffer *rb, int map_fd, struct lbl_batch *batch)
{
	return ring_buffer__add(rb, map_fd, lbl_batch_sample, batch);
}

/* Baseline for benchmarks only: one call into Python per record. */
struct ring_buffer *lbl_ringbuf_new_per_record(int map_fd, void *handle)
{
	return ring_buffer__new(map_fd, _lbl_sample, handle, NULL);
}
