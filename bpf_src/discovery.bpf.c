// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* discovery: every exec and every whole-process exit on the node, as it happens, so the
 * agent never polls /proc for new processes (peers do, every few seconds, and miss the
 * short-lived ones).
 *
 * Hook points: BTF tracepoints (tp_btf), not kprobes (kernels built without
 * CONFIG_KPROBES have none) nor classic tracepoints (they need tracefs, absent or hidden
 * on locked-down nodes); a tp_btf program attaches by BTF id alone.
 *   EXEC  sched_process_exec(p, old_pid, bprm): fires once per successful exec, after the
 *         new image is in place and, for an exec from a non-leader thread, after de_thread
 *         gave the execing thread the leader's pid and start time. So (tgid, start) is the
 *         process's identity as /proc shows it.
 *   EXIT  sched_process_exit(p[, group_dead]): fires in do_exit for EVERY thread. A record
 *         is sent only for the thread-group leader (pid == tgid): once per process. Not the
 *         group_dead argument: it exists only from Linux 6.16 and a tp_btf program reading
 *         it fails to load on older kernels. Not signal->live == 0 either: threads of an
 *         exit_group reach the tracepoint after their decrement in any order, so several
 *         could read 0. Caveats of pid == tgid, both rare: a leader that leaves by
 *         pthread_exit while its threads run is reported at that moment; a non-leader
 *         thread that execs kills the old leader first, so that pid reports exit, then exec
 *         (the agent treats it as a new process: it is a new image).
 * Kernel threads are skipped on exit (they never exec'd, the agent has no use for them).
 * Cost: both run for every process on the node: a few CO-RE reads, one 32-byte record, no
 * strings, no map lookups besides the ring buffer (and the stats counter on loss).
 * Measured here (nested VM): ~0.6 us per run, but waking the drain thread adds ~12-17 us.
 * An exec always wakes it (BPF_RB_FORCE_WAKEUP: the default wakes only when the buffer
 * was empty, and a pending exit would then delay the exec by a whole poll timeout): a
 * short-lived process must be attached at once. An exit does not (common.h submit_batched:
 * only when the ring is 1/8 full, an exit storm): it only leads to cleanup, so it rides
 * along with the next exec or the drain's periodic consume (poll timeout, 100 ms). Order is
 * kept: one FIFO buffer.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PF_KTHREAD 0x00200000 /* include/linux/sched.h: task->flags of a kernel thread */

/* Exec/exit records: 32 B + 8 B header = 40 B each; 256 KiB holds ~6,500. The drain
 * thread wakes on every exec (it wants them at once), so the buffer only has to absorb
 * a burst (a build or a crash loop spawning thousands of processes) while user space is
 * descheduled; losses are counted (STAT_RINGBUF_FULL) and the agent's slow /proc rescan
 * repairs them. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

static __always_inline int emit(__u32 type, __u32 tgid, __u32 ppid, __u64 start, int wake)
{
	struct proc_life_event *ev = reserve_zeroed(&events, sizeof(*ev));

	if (!ev)
		return 0;
	ev->type = type;
	ev->tgid = tgid;
	ev->ppid = ppid;
	ev->ts_ns = bpf_ktime_get_boot_ns();
	ev->start_boottime_ns = start;
	if (wake)
		bpf_ringbuf_submit(ev, BPF_RB_FORCE_WAKEUP);
	else
		submit_batched(&events, ev);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(proc_exec, struct task_struct *p)
{
	return emit(EV_PROC_EXEC, BPF_CORE_READ(p, tgid), BPF_CORE_READ(p, real_parent, tgid),
		    BPF_CORE_READ(p, start_boottime), 1);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(proc_exit, struct task_struct *p)
{
	__u32 tgid = BPF_CORE_READ(p, tgid);

	if (BPF_CORE_READ(p, pid) != tgid || (BPF_CORE_READ(p, flags) & PF_KTHREAD))
		return 0;
	return emit(EV_PROC_EXIT, tgid, 0, BPF_CORE_READ(p, start_boottime), 0);
}
