"""Cost of one uprobe hit: a Go loop calling a noinline function, unprobed vs probed.

Both runs use the same binary (tests/go/calltarget, `loop M`), which times its own loop
so process start-up is excluded. The probed run attaches bpf_src/calltrace.bpf.c's
`trace_call` at `main.bump`'s entry and drains its ring buffer on a thread meanwhile.
"""

from __future__ import annotations

import struct
import subprocess
import threading
from pathlib import Path

from libbpf_loader import BpfObject, RingBuffer, bpf_stats_enabled
from tests.test_loader_trace import calltarget, go_func_offsets

ROOT = Path(__file__).resolve().parent.parent
OBJ = ROOT / "pyhttp2probe" / "bpf" / "calltrace.bpf.o"
CALLS = 200_000
ROUNDS = 3


def _loop(binary: Path, obj: BpfObject | None) -> tuple[float, int]:
    """Run the Go loop once; returns (loop ns, records received)."""
    proc = subprocess.Popen([binary, "loop", str(CALLS)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    received = 0
    try:
        pid = int(proc.stdout.readline())
        stop = threading.Event()
        thread = None
        if obj is not None:
            entry, _ = go_func_offsets(binary, "main.bump")
            link = obj.program("trace_call").attach_uprobe(binary, entry, pid=pid)

            def count(batch: object) -> None:
                nonlocal received
                received += len(batch)  # type: ignore[arg-type]

            rb = RingBuffer(obj.map("events"), count)

            def drain() -> None:
                while not stop.is_set():
                    rb.poll(50)
                rb.consume()

            thread = threading.Thread(target=drain)
            thread.start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        ns = int(proc.stdout.readline())
        proc.wait(timeout=60)
        if thread is not None and obj is not None:
            stop.set()
            thread.join()
            rb.close()
            link.close()
        return ns, received
    finally:
        proc.kill()
        proc.wait()


def run() -> str:
    """Time unprobed and probed loops side by side; return a Markdown section."""
    binary = calltarget()
    plain, probed, counts = [], [], []
    with BpfObject.open(OBJ) as obj:
        obj.map(".rodata").set_initial_value(struct.pack("<I", 0))
        obj.load()
        prog = obj.program("trace_call")
        with bpf_stats_enabled():
            for _ in range(ROUNDS):
                plain.append(_loop(binary, None)[0])
                before = prog.run_count()
                ns, got = _loop(binary, obj)
                after = prog.run_count()
                probed.append(ns)
                counts.append((got, after[0] - before[0], after[1] - before[1]))
        dropped = int.from_bytes(obj.map(".bss").lookup(0), "little")
    best_plain, best_probed = min(plain), min(probed)
    per_hit_us = (best_probed - best_plain) / CALLS / 1e3
    got, runs, run_ns = counts[probed.index(best_probed)]
    return "\n".join([
        "## Cost of one uprobe hit",
        "",
        f"Go loop calling `//go:noinline func bump(int) int` {CALLS:,} times "
        "(`tests/go/calltarget loop N`, timed inside the Go program), best of "
        f"{ROUNDS} alternating rounds; probed = `trace_call` (calltrace.bpf.c: registers + "
        "ring-buffer record) at `main.bump`'s entry, drained on a Python thread.",
        "",
        "| loop | total ms | ns per call |",
        "|---|---:|---:|",
        f"| unprobed | {best_plain / 1e6:.1f} | {best_plain / CALLS:.1f} |",
        f"| uprobe at entry | {best_probed / 1e6:.1f} | {best_probed / CALLS:.1f} |",
        "",
        f"**Per uprobe hit: {per_hit_us:.2f} µs** (of which the BPF program itself: "
        f"{run_ns / max(runs, 1):.0f} ns per run, kernel `run_time_ns`/`run_cnt`). "
        f"Kernel run count {runs:,}, records received {got:,}, drops {dropped}.",
    ])


if __name__ == "__main__":
    print(run())
