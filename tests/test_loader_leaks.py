"""No leaks: 500 open/load/attach/close cycles leave fds, RSS and BPF programs flat.

Detaching waits for RCU grace periods, nearly all of it sleeping in the kernel: ~35 ms for
one uprobe_multi link (all offsets) but ~0.1 s for EACH perf-event uprobe, serialized by
the kernel's event_mutex. So the 500 cycles use one uprobe_multi link for the entry and
every RET, on THREADS threads (cffi drops the GIL in C calls), and the per-offset
perf-event path gets its own, shorter cycle run.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from libbpf_loader import BpfObject, RingBuffer
from tests.test_loader_errors import assert_no_new_programs, kernel_programs, open_fds
from tests.test_loader_trace import calltarget, go_func_offsets

THREADS = 8
RSS_TOLERANCE = 4 << 20  # bytes: allocator noise, not a per-cycle leak (each cycle: 1 MiB log)


def rss_bytes() -> int:
    """Current resident set size (not the peak: a leak shows as growth)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


@pytest.mark.parametrize(("mode", "cycles", "warmup"),
                         [("uprobe_multi", 500, 48), ("uprobe", 48, 16)])
def test_open_load_attach_close_cycles_leak_nothing(
        bpf_objects: Callable[[str], Path], mode: str, cycles: int, warmup: int) -> None:
    binary = calltarget()
    entry, rets = go_func_offsets(binary, "main.target")
    path = bpf_objects("calltrace")
    fds, progs = open_fds(), kernel_programs()
    pid_bytes = os.getpid().to_bytes(4, "little")
    with BpfObject.open(path) as probe:
        probe.load()
        assert kernel_programs() - progs, "bpftool must see what we load, or this proves nothing"
    assert_no_new_programs(progs)

    def cycle(_: int) -> None:
        with BpfObject.open(path) as obj:
            obj.map(".rodata").set_initial_value(pid_bytes)
            prog = obj.program("trace_call")
            if mode == "uprobe_multi":
                prog.prepare_uprobe_multi()
            obj.load()
            if mode == "uprobe_multi":
                link = prog.attach_uprobe_multi(binary, [entry, *rets], range(len(rets) + 1))
            else:
                link = prog.attach_uprobe(binary, entry, cookie=1)
            with link, RingBuffer(obj.map("events"), lambda batch: None) as rb:
                rb.poll(0)
            if mode == "uprobe":
                prog.attach_uprobe(binary, rets[0], cookie=2)  # left for obj.close()

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(cycle, range(warmup)))
        rss_after_warmup = rss_bytes()
        list(pool.map(cycle, range(cycles - warmup)))
    assert open_fds() == fds
    assert_no_new_programs(progs)
    growth = rss_bytes() - rss_after_warmup
    assert growth < RSS_TOLERANCE, f"RSS grew {growth} bytes over {cycles - warmup} cycles"
