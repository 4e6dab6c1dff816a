/* One record per uprobe hit. Shared by hello_uprobe.bpf.c and Python (HeaderLayout reads
 * this file: fixed-width __uNN types only, no includes, no bitfields). */
#ifndef HELLO_UPROBE_H
#define HELLO_UPROBE_H

struct hello_event {
	__u32 pid;        /* tgid of the traced process */
	__u32 cookie;     /* the attach point's cookie: 0 at the entry, i at the i-th RET */
	__u64 ktime_ns;   /* bpf_ktime_get_ns() */
	__u64 rax;        /* Go's register ABI: first int argument at entry, first result at RET */
	__u64 goroutine;  /* r14: the current goroutine, to pair an entry with its return */
};

#endif
