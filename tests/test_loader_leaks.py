"""No leaks: 500 open/load/attach/close cycles leave fds, RSS and BPF programs flat.

A uprobe detach waits for RCU grace periods (~0.1 s in this nested VM) and a load ~40 ms,
nearly all of it sleeping in the kernel, so cycles run on THREADS threads at once (cffi
drops the GIL in C calls): the same 500 cycles, a fraction of the wall time.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from libbpf_loader import BpfObject, RingBuffer
from tests.test_loader_errors import my_bpf_programs, open_fds
from tests.test_loader_trace import calltarget, go_func_offsets

CYCLES = 500
WARMUP = 48
THREADS = 8
RSS_TOLERANCE = 4 << 20  # bytes: allocator noise, not a per-cycle leak (500 cycles × 1 MiB log)


def rss_bytes() -> int:
    """Current resident set size (not the peak: a leak shows as growth)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def test_open_load_attach_close_cycles_leak_nothing(
        bpf_objects: Callable[[str], Path]) -> None:
    binary = calltarget()
    entry, rets = go_func_offsets(binary, "main.target")
    path = bpf_objects("calltrace")
    fds, progs = open_fds(), my_bpf_programs()
    pid_bytes = os.getpid().to_bytes(4, "little")

    def cycle(_: int) -> None:
        with BpfObject.open(path) as obj:
            obj.map(".rodata").set_initial_value(pid_bytes)
            obj.load()
            prog = obj.program("trace_call")
            with prog.attach_uprobe(binary, entry, cookie=1):
                prog.attach_uprobe(binary, rets[0], cookie=2)  # freed by obj.close()
                RingBuffer(obj.map("events"), lambda batch: None).poll(0)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(cycle, range(WARMUP)))
        rss_after_warmup = rss_bytes()
        list(pool.map(cycle, range(CYCLES - WARMUP)))
    assert open_fds() == fds
    assert my_bpf_programs() == progs
    growth = rss_bytes() - rss_after_warmup
    assert growth < RSS_TOLERANCE, f"RSS grew {growth} bytes over {CYCLES - WARMUP} cycles"
