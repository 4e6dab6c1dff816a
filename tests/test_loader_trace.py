"""End to end: trace a Go function's entry and every RET, and get every call's registers."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from libbpf_loader import Batch, BpfObject, RingBuffer, bpf_stats_enabled, ffi_from_header
from libbpf_loader import struct_dtype as _struct_dtype
from pyhttp2probe.goelf import function_offsets
from testkit.gobuild import GoBuild, build

ROOT = Path(__file__).resolve().parent.parent
CALLTRACE_H = ROOT / "tests" / "bpf" / "calltrace.h"
WORDS = ["", "a", "ab", "abc", "abcd", "abcde"]
N_CALLS = 300


def go_func_offsets(binary: Path, symbol: str) -> tuple[int, list[int]]:
    """File offsets of `symbol`'s entry and of each RET in its body (from goelf)."""
    found = function_offsets(binary, symbol)
    return found.entry, list(found.returns)


def calltarget() -> Path:
    return build(GoBuild(src="calltarget"))


def expected_return(a: int, b: int, c: int, s: str) -> int:
    if a < 0:
        return -1
    if b == 0:
        return a * 2
    if len(s) > 3:
        return a + b + c + len(s)
    return a - b


@pytest.mark.parametrize("mode", ["uprobe", "uprobe_multi"])
def test_every_call_arrives_with_its_registers(bpf_objects: Callable[[str], Path],
                                               mode: str) -> None:
    binary = calltarget()
    entry, rets = go_func_offsets(binary, "main.target")
    assert len(rets) >= 3, "target() should compile to several RETs"
    ffi = ffi_from_header(CALLTRACE_H)
    dtype = _struct_dtype(ffi, "struct call_event")
    proc = subprocess.Popen([binary, "calls", str(N_CALLS)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        arrays: list[np.ndarray] = []
        raw_first: list[bytes] = []

        def on_batch(batch: Batch) -> None:
            assert batch.uniform_size == ffi.sizeof("struct call_event")
            raw_first.append(bytes(batch[0]))
            arrays.append(batch.as_array(dtype))

        with BpfObject.open(bpf_objects("calltrace")) as obj:
            obj.map(".rodata").set_initial_value(struct.pack("<I", pid))
            prog = obj.program("trace_call")
            if mode == "uprobe_multi":
                prog.prepare_uprobe_multi()
            obj.load()
            if mode == "uprobe_multi":
                prog.attach_uprobe_multi(binary, [entry, *rets], range(len(rets) + 1), pid=pid)
            else:
                prog.attach_uprobe(binary, entry, pid=pid, cookie=0)
                for i, off in enumerate(rets):
                    prog.attach_uprobe(binary, off, pid=pid, cookie=i + 1)
            rb = RingBuffer(obj.map("events"), on_batch)
            with bpf_stats_enabled():
                proc.stdin.write("go\n")
                proc.stdin.flush()
                assert proc.stdout.readline().strip() == "done"
                assert proc.wait(timeout=30) == 0
                while rb.consume():
                    pass
                hits, _ = prog.run_count()
            dropped = obj.map(".bss").lookup(0)
    finally:
        proc.kill()
        proc.wait()

    ev = np.concatenate(arrays)
    assert int.from_bytes(dropped, "little") == 0
    assert len(ev) == 2 * N_CALLS, "every entry and every return, none missing"
    assert hits == 2 * N_CALLS
    assert raw_first[0] == ev[:1].tobytes()
    assert (ev["pid"] == pid).all()
    entries, exits = ev[0::2], ev[1::2]
    assert (entries["cookie"] == 0).all() and (exits["cookie"] != 0).all()
    for i, (e, x) in enumerate(zip(entries, exits, strict=True)):
        s = WORDS[i % len(WORDS)]
        assert (int(e["rax"]), int(e["rbx"]), int(e["rcx"]), int(e["rsi"])) == (
            i, i % 3, 7, len(s))
        assert x["rax"].astype(np.int64) == expected_return(i, i % 3, 7, s)
        assert e["r14"] != 0 and e["r14"] == x["r14"], "one goroutine per call"
        # not tid: Go may preempt the goroutine and resume it on another thread
        assert e["ktime_ns"] <= x["ktime_ns"]
    assert len(set(exits["cookie"].tolist())) >= 3, "several return paths were taken"
