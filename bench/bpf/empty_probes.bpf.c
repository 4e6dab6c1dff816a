// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The trap floor: every program name of the shipped probe paths (grpc_client, grpc_server,
 * http2), each returning at once, so bench/bench_cost.py can attach them at exactly the
 * points the real paths use and measure what the uprobe traps cost by themselves.
 *
 * The maps the agent writes or reads for a path are declared with the real names and value
 * types (config maps and their slot tables, the `events` ring, the `stats` counters), so the real paths' setup()
 * runs unchanged; nothing reads them. bench_cost checks that every program of the real
 * objects has its empty twin here.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

CONFIG_MAPS(grpc_client_config, __u32, struct grpc_client_config, 1024);

CONFIG_MAPS(grpc_server_config, __u32, struct grpc_server_config, 1024);

CONFIG_MAPS(http2_config, __u64, struct http2_config, 2048);

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
	EMPTY(http2_client_start_##SUFFIX)     \
	EMPTY(http2_client_end_##SUFFIX)

H2_EMPTY(bundled)
H2_EMPTY(xnet)
