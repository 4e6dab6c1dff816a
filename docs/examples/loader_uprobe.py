"""libbpf_loader end to end: open, load, attach uprobes, drain the ring buffer.

Traces main.target of the tiny Go program tests/go/calltarget: its entry and every RET
(return points are plain uprobes at RET offsets, never uretprobes). Run it from the
repository root, as root: `PYTHONPATH=. python3 docs/examples/loader_uprobe.py [CALLS]`.
"""

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

from libbpf_loader import Batch, BpfObject, HeaderLayout, RingBuffer
from pyhttp2probe.goelf import function_offsets
from testkit.bpfbuild import build_object
from testkit.gobuild import GoBuild, build

HERE = Path(__file__).resolve().parent
calls = int(sys.argv[1]) if len(sys.argv) > 1 else 1000

obj_path = build_object(HERE / "hello_uprobe.bpf.c")  # clang, the project's flags; cached
binary = build(GoBuild(src="calltarget"))  # go build of tests/go/calltarget; cached
where = function_offsets(binary, "main.target")  # file offsets of its entry and each RET
dtype = HeaderLayout([HERE / "hello_uprobe.h"]).dtype("hello_event")  # the C record

# calltarget prints its pid, then waits for a line before making `calls` calls.
target = subprocess.Popen([binary, "calls", str(calls)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
pid = int(target.stdout.readline())
print(f"target: pid {pid}, main.target at {where.entry:#x} with {len(where.returns)} RETs")

batches: list[np.ndarray] = []


def on_batch(batch: Batch) -> None:
    """Called once per drained batch, not per record: decode it in one go."""
    batches.append(batch.as_array(dtype))


with BpfObject.open(obj_path) as obj:  # parsed, not in the kernel yet
    obj.map(".rodata").set_initial_value(struct.pack("<I", pid))  # target_tgid
    obj.load()  # programs verified, maps created
    prog = obj.program("hello")
    prog.attach_uprobe(binary, where.entry, pid=pid, cookie=0)
    for i, ret in enumerate(where.returns, start=1):
        prog.attach_uprobe(binary, ret, pid=pid, cookie=i)
    rb = RingBuffer(obj.map("events"), on_batch)
    target.stdin.write("go\n")
    target.stdin.flush()
    while target.poll() is None:  # what an agent's drain thread does
        rb.poll(timeout_ms=100)
    while rb.consume():  # whatever is left
        pass
    dropped = int.from_bytes(obj.map(".bss").lookup(0), "little")
# Leaving the block closed the ring buffer, the links and the object, in that order.

assert target.stdout.read().strip() == "done" and target.returncode == 0
events = np.concatenate(batches)
entries, returns = events[events["cookie"] == 0], events[events["cookie"] != 0]
print(f"records: {len(events)} in {len(batches)} batches, dropped {dropped}")
print(f"entries: {len(entries)}, sum of first arguments {int(entries['rax'].sum())}")
print(f"returns: {len(returns)}, sum of results "
      f"{int(returns['rax'].astype(np.int64).sum())}, "
      f"{len(set(returns['cookie'].tolist()))} distinct RETs taken")
