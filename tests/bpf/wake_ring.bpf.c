// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Test producer for the product's submit_batched (bpf_src/common.h): one run of the
 * SEC("syscall") program writes one 120-byte record (128 bytes in the ring with its
 * header) through it, so a test can count the wakeups a backlog forces. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);  /* the test resizes it */
} events SEC(".maps");

struct wake_rec {
	__u64 seq;
	__u8 pad[112];
};

static __u64 seq;

SEC("syscall")
int produce_one(void *ctx)
{
	struct wake_rec *r = reserve_zeroed(&events, sizeof(*r));

	if (!r)
		return 1;
	r->seq = __sync_fetch_and_add(&seq, 1);
	submit_batched(&events, r);
	return 0;
}
