// SPDX-License-Identifier: GPL-2.0
/* ABLATION, bench only (built by testkit/bpfbuild.py, not shipped): the old keying that
 * DESIGN.md says never to use.
 *
 * START at the entry of (*http2Client).NewStream reads t.nextID (RAX = t) before the
 * transport takes its lock, and keys the start time by that stream id ALONE. END at the
 * entry of (*clientStream).finish reads the final stream id and looks the start up by it.
 * Ids repeat across connections and concurrent entries read the same nextID, so starts
 * get overwritten or paired with the wrong call: the bench measures how often.
 * The record is the same as grpc_client.bpf.c's, so Python assembles spans the same way.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "grpc_client_common.h" /* from bpf_src/ */

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} oldkey_inflight SEC(".maps");

SEC("uprobe")
int oldkey_start(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct grpc_client_config *cfg;
	__u32 id = 0;
	__u64 now;

	cfg = CONFIG_OF_TGID(grpc_client_config, tgid);
	if (!cfg)
		return 0;
	if (go_read_u32(GO_ARG1(ctx) + cfg->ct_next_id, &id)) {
		stat_inc(STAT_BAD_READ);
		return 0;
	}
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&oldkey_inflight, &id, &now, BPF_ANY);
	return 0;
}

SEC("uprobe")
int oldkey_end(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32, flags = 0;
	struct grpc_client_config *cfg;
	struct call_stream st = {};
	__u64 cs = GO_ARG1(ctx), *start, t = 0, attempt, stream;
	__u8 finished;

	cfg = CONFIG_OF_TGID(grpc_client_config, tgid);
	if (!cfg)
		return 0;
	if (read_cs_state(cfg, cs, &finished, &attempt) || finished)
		return 0;
	stream = attempt_stream(cfg, attempt, &flags);
	read_stream(cfg, stream, 0, &st, &flags); /* the id only: emit_end reads it again */
	start = st.sid ? bpf_map_lookup_elem(&oldkey_inflight, &st.sid) : NULL;
	if (start) {
		t = *start;
		bpf_map_delete_elem(&oldkey_inflight, &st.sid);
	} else {
		stat_inc(STAT_UNMATCHED_END);
	}
	emit_end(cfg, tgid, cs, stream, 0, GO_ARG2(ctx), GO_ARG3(ctx), t, 0,
		 t ? 0 : SPAN_F_UNMATCHED);
	return 0;
}
