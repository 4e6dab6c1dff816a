/* Declarations of the C shim, fed verbatim to cffi's cdef (no preprocessor lines here).
 * Kept apart from libbpf's own headers so cdef sees only what Python calls. */

/* Growable batch of ring-buffer records, filled in C so Python is called once per batch. */
struct lbl_batch {
	char *buf;          /* records, each at an 8-byte aligned offset */
	size_t len;         /* bytes used in buf */
	size_t cap;         /* bytes allocated in buf */
	size_t limit;       /* stop draining once len reaches this */
	uint32_t *offsets;  /* offset of record i in buf */
	uint32_t *sizes;    /* size of record i */
	size_t n;           /* records in the batch */
	size_t ncap;        /* slots allocated in offsets/sizes */
	uint32_t first_size;/* size of record 0 */
	int uniform;        /* 1 while every record has first_size */
	int oom;            /* set when a copy failed for lack of memory */
};

/* The header of a packed ring record: `count` records of `item_size` bytes (a multiple of
 * 8) follow it; the batch gets them as separate records. */
struct lbl_packed_head {
	uint32_t magic;     /* LBL_PACKED */
	uint32_t count;
	uint32_t item_size;
	uint32_t _pad;
};

const char *lbl_build_version(void);
void lbl_install_print(void);
void lbl_set_print_level(int level);
struct bpf_object *lbl_open(const char *path, const char *btf_custom_path, char *log_buf,
			    size_t log_size);
struct bpf_link *lbl_attach_uprobe(const struct bpf_program *prog, int pid, const char *binary,
				   size_t offset, uint64_t cookie);
int lbl_prepare_uprobe_multi(struct bpf_program *prog);
int lbl_attach_uprobe_multi(int prog_fd, const char *binary, const uint64_t *offsets,
			    const uint64_t *cookies, uint32_t cnt, uint32_t pid);
int lbl_prog_stats(int prog_fd, uint64_t *run_cnt, uint64_t *run_time_ns);
int lbl_enable_stats(void);
int lbl_prog_test_run(int prog_fd, int repeat, const void *data, uint32_t size,
		      uint32_t *retval, uint32_t *duration);
int lbl_prog_run_on_cpu(int prog_fd, uint32_t cpu, const void *ctx, uint32_t size,
			uint32_t *retval);
int lbl_prog_run_syscall(int prog_fd, const void *ctx, uint32_t size, uint32_t *retval);
struct lbl_batch *lbl_batch_new(size_t limit);
void lbl_batch_reset(struct lbl_batch *batch);
void lbl_batch_free(struct lbl_batch *batch);
struct ring_buffer *lbl_ringbuf_new(int map_fd, struct lbl_batch *batch);
int lbl_ringbuf_add(struct ring_buffer *rb, int map_fd, struct lbl_batch *batch);
struct ring_buffer *lbl_ringbuf_new_per_record(int map_fd, void *handle);
