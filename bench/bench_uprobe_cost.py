"""Cost of one uprobe hit: a Go loop calling a noinline function, unprobed vs probed.

Both runs use the same binary (tests/go/calltarget, `loop M`), which times its own loop
so process start-up is excluded. The probed run attaches tests/bpf/calltrace.bpf.c's
`trace_call` at `main.bump`'s entry and drains its ring buffer on a thread meanwhile.
"""

from __future__ import annotations

import struct
import subprocess
import threading
from pathlib import Path

from libbpf_loader import BpfObject, RingBuffer, bpf_stats_enabled
from testkit.bpfbuild import build_object
from tests.test_loader_trace import calltarget, go_func_offsets

ROOT = Path(__file__).resolve().parent.parent
OBJ_SRC = ROOT / "tests" / "bpf" / "calltrace.bpf.c"  # built by testkit/bpfbuild.py
CALLS = 200_000
ROUNDS = 3


def _loop(binary: Path, obj: BpfObject | None, multi: bool = False) -> tuple[float, int]:
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
            prog = obj.program("trace_call")
            link = (prog.attach_uprobe_multi(binary, [entry], pid=pid) if multi
                    else prog.attach_uprobe(binary, entry, pid=pid))

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


def _open(multi: bool) -> BpfObject:
    obj = BpfObject.open(build_object(OBJ_SRC))
    obj.map(".rodata").set_initial_value(struct.pack("<I", 0))
    if multi:
        obj.program("trace_call").prepare_uprobe_multi()
    return obj.load()


def run() -> str:
    """Time unprobed and probed loops side by side; return a Markdown section."""
    binary = calltarget()
    times: dict[str, list[int]] = {"plain": [], "uprobe": [], "uprobe_multi": []}
    counts: dict[str, list[tuple[int, int, int]]] = {"uprobe": [], "uprobe_multi": []}
    dropped = 0
    with _open(False) as single, _open(True) as multi, bpf_stats_enabled():
        for _ in range(ROUNDS):
            times["plain"].append(_loop(binary, None)[0])
            for name, obj in (("uprobe", single), ("uprobe_multi", multi)):
                prog = obj.program("trace_call")
                before = prog.run_count()
                ns, got = _loop(binary, obj, multi=name == "uprobe_multi")
                after = prog.run_count()
                times[name].append(ns)
                counts[name].append((got, after[0] - before[0], after[1] - before[1]))
        for obj in (single, multi):
            dropped += int.from_bytes(obj.map(".bss").lookup(0), "little")
    best = {name: min(v) for name, v in times.items()}
    lines = [
        "## Cost of one uprobe hit",
        "",
        f"Go loop calling `//go:noinline func bump(int) int` {CALLS:,} times "
        "(`tests/go/calltarget loop N`, timed inside the Go program), best of "
        f"{ROUNDS} alternating rounds; probed = `trace_call` (calltrace.bpf.c: registers + "
        "ring-buffer record) at `main.bump`'s entry, drained on a Python thread; attached "
        "either as a perf-event uprobe (`attach_uprobe`) or as a one-offset uprobe_multi "
        "link (`attach_uprobe_multi`).",
        "",
        "| loop | total ms | ns per call | µs per hit (− unprobed) | BPF prog ns/run "
        "| kernel runs | records |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| unprobed | {best['plain'] / 1e6:.1f} | {best['plain'] / CALLS:.1f} | | | | |",
    ]
    for name in ("uprobe", "uprobe_multi"):
        got, runs, run_ns = counts[name][times[name].index(best[name])]
        per_hit = (best[name] - best["plain"]) / CALLS / 1e3
        lines.append(f"| {name} at entry | {best[name] / 1e6:.1f} | {best[name] / CALLS:.1f} "
                     f"| **{per_hit:.2f}** | {run_ns / max(runs, 1):.0f} | {runs:,} "
                     f"| {got:,} |")
    lines += ["", f"Drops (reserve failures): {dropped}. BPF program time is the kernel's "
                  "`run_time_ns / run_cnt` (BPF_ENABLE_STATS on during the run): the rest of "
                  "a hit is the trap and uprobe dispatch."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
