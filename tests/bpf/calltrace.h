/* calltrace: one record per uprobe hit, with the registers of Go's amd64 register ABI.
 * Shared by the BPF side and Python: the part between the cdef markers is read by cffi's
 * cdef, so it uses only __u32/__u64 (Python typedefs them) and no preprocessor lines. */
#ifndef __CALLTRACE_H
#define __CALLTRACE_H

/* cdef-begin */
struct call_event {
	__u32 pid;        /* tgid */
	__u32 tid;        /* kernel thread id */
	__u64 ktime_ns;   /* bpf_ktime_get_ns() */
	__u64 cookie;     /* bpf cookie of the attach point: tags entry vs each RET */
	__u64 ip;
	__u64 rax;        /* Go ABI: int args 1..9 in rax, rbx, rcx, rdi, rsi, r8, r9, r10, r11 */
	__u64 rbx;
	__u64 rcx;
	__u64 rdi;
	__u64 rsi;
	__u64 r8;
	__u64 r9;
	__u64 r10;
	__u64 r11;
	__u64 r14;        /* Go ABI: current goroutine (g) pointer */
	__u64 rsp;
};
/* cdef-end */

#endif /* __CALLTRACE_H */
