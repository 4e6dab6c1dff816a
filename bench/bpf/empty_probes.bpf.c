// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The trap floor: every program name of the shipped probe paths (grpc_client, grpc_server,
 * http2), each returning at once, so bench/bench_cost.py can attach them at exactly the
 * points the real paths use and measure what the uprobe traps cost by themselves.
 *
 * The maps the agent writes or reads for a path are declared with the real names and value
 * types (config maps, the `events` ring, the `stats` counters), so the real paths' setup()
 * runs unchanged; nothing reads them. bench_cost checks that every program of the real
 * objects has its empty twin here.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct grpc_client_config);
} grpc_client_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct grpc_server_config);
} grpc_server_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__type(key, __u64);
	__type(value, struct http2_config);
} http2_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

#define EMPTY(NAME) SEC("uprobe") int NAME(struct pt_regs *ctx) { return 0; }

EMPTY(grpc_client_start)
EMPTY(grpc_client_end)
EMPTY(grpc_client_end_attempt)
EMPTY(grpc_client_fail)
EMPTY(grpc_client_fail_cleanup)
EMPTY(grpc_client_conn)
EMPTY(grpc_server_operate_headers)
EMPTY(grpc_server_write_status)
EMPTY(grpc_server_write_status_ht)
EMPTY(grpc_server_early_abort)
EMPTY(grpc_server_conn)

#define H2_EMPTY(SUFFIX)                   \
	EMPTY(http2_server_start_##SUFFIX)     \
	EMPTY(http2_server_end_##SUFFIX)       \
	EMPTY(http2_server_panic_##SUFFIX)     \
	EMPTY(http2_server_panic_ptr_##SUFFIX) \
	EMPTY(http2_client_start_##SUFFIX)     \
	EMPTY(http2_client_end_##SUFFIX)

H2_EMPTY(bundled)
H2_EMPTY(xnet)
