"""Program.attach: programs whose section names their target (tp_btf) attach by it."""

from __future__ import annotations

import errno
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from libbpf_loader import AttachError, Batch, BpfObject, RingBuffer

EXEC_TRACER = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} execs SEC(".maps");

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p)
{
	__u32 *tgid = bpf_ringbuf_reserve(&execs, sizeof(*tgid), 0);

	if (!tgid)
		return 0;
	*tgid = BPF_CORE_READ(p, tgid);
	bpf_ringbuf_submit(tgid, 0);
	return 0;
}

SEC("uprobe")
int no_target(void *ctx)
{
	return 0;
}
"""


def test_tp_btf_program_sees_the_exec_of_a_child(
        compile_bpf: Callable[[str, str], Path]) -> None:
    obj_path = compile_bpf(EXEC_TRACER, "exectrace")
    with BpfObject.open(obj_path) as obj:
        obj.load()
        link = obj.program("on_exec").attach()
        seen: list[int] = []

        def on_batch(batch: Batch) -> None:
            seen.extend(struct.unpack("<I", bytes(r))[0] for r in batch)

        rb = RingBuffer(obj.map("execs"), on_batch)
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        deadline = time.monotonic() + 2
        while child.pid not in seen and time.monotonic() < deadline:
            rb.poll(100)
        assert child.pid in seen
        link.close()
        assert link.closed
        seen.clear()
        subprocess.run(["/bin/true"], check=True)
        rb.poll(100)
        assert seen == [], "a closed link still delivered execs"


def test_attach_refuses_unloaded_and_targetless_programs(
        compile_bpf: Callable[[str, str], Path]) -> None:
    with BpfObject.open(compile_bpf(EXEC_TRACER, "exectrace")) as obj:
        with pytest.raises(AttachError) as exc:
            obj.program("on_exec").attach()
        assert exc.value.errno == errno.EBADF
        assert "'on_exec'" in str(exc.value) and "not loaded" in str(exc.value)
        obj.load()
        with pytest.raises(AttachError) as exc:
            obj.program("no_target").attach()
        assert exc.value.errno == errno.EOPNOTSUPP
        assert "'no_target'" in str(exc.value) and "attach_uprobe" in str(exc.value)
