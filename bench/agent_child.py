"""An Agent in a process of its own, for bench_agent_cpu: its CPU is all the agent's.

Run by file path with PYTHONPATH naming the pyhttp2probe tree under test (this tree, or the
code before issue 12), so only the public Agent API is used here:

    python3 bench/agent_child.py --mode metrics|json|iter [--json-out FILE] [--prog-stats] PID...

It attaches every PID, prints ``READY``, then answers each stdin line ``mark`` with
``MARK {json}``: records decoded so far, the process's CPU seconds (all threads: drain,
housekeeping, the iterator's consumer), the drain thread's alone and the part of it spent
in the batch callback (decode and sinks), and batch sizes seen.
Before answering it drains what is pending (and, with --mode iter, waits until the
consumer has taken every queued span). EOF on stdin closes the agent and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _thread_cpu(thread: threading.Thread | None) -> float:
    if thread is None or thread.ident is None:
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except OSError:  # the thread ended
        return 0.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("metrics", "json", "iter"), default="metrics")
    parser.add_argument("--json-out", default="/dev/null")
    parser.add_argument("--batch-ms", type=int, default=None, help="Agent(batch_ms=...)")
    parser.add_argument("--prog-stats", action="store_true",
                        help="MARK also carries each program's kernel (run_cnt, run_time_ns); "
                             "the caller holds BPF_ENABLE_STATS on")
    parser.add_argument("pids", nargs="+", type=int)
    args = parser.parse_args()

    import structlog
    from prometheus_client import CollectorRegistry

    from pyhttp2probe import Agent

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    registry = CollectorRegistry()
    extra = {} if args.batch_ms is None else {"batch_ms": args.batch_ms}
    agent = Agent(registry=registry, keep_spans=args.mode == "iter",
                  spans_out=args.json_out if args.mode == "json" else None, **extra)
    sizes: list[int] = []
    on_batch = agent._on_batch  # the drain callback, wrapped only to count batch sizes

    cb_cpu = [0.0]
    dump = os.environ.get("PYHTTP2PROBE_BENCH_DUMP")  # large batches, pickled: profiling
    dumped: list[Any] = []

    def counted(batch: Any) -> None:
        sizes.append(len(batch))
        if dump is not None and len(batch) > 500 and len(dumped) < 5:
            dumped.append((batch.buffer, bytes(batch.offsets), bytes(batch.sizes),
                           batch.uniform_size))
            if len(dumped) == 5:
                Path(dump).write_bytes(pickle.dumps(dumped))
        t0 = time.thread_time()
        on_batch(batch)
        cb_cpu[0] += time.thread_time() - t0

    agent._rb._callback = counted  # type: ignore[union-attr]
    consumed = [0]

    def consume() -> None:
        for _ in agent.spans():
            consumed[0] += 1

    consumer = None
    if args.mode == "iter":
        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
    for pid in args.pids:
        agent.attach(pid)
    drain = next((t for t in threading.enumerate() if t.name == "pyhttp2probe-drain"), None)
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() != "mark":
            continue
        agent.drain()
        if consumer is not None:
            last, stable = -1, 0
            while stable < 3:
                time.sleep(0.1)
                stable = stable + 1 if consumed[0] == last else 0
                last = consumed[0]
        out = {"events": agent.events, "cpu_s": time.process_time(),
               "drain_cpu_s": _thread_cpu(drain), "callback_cpu_s": cb_cpu[0],
               "consumed": consumed[0],
               "batches": len(sizes), "records_in_batches": sum(sizes)}
        if args.prog_stats:  # a look inside: the code before issue 12 has no public call
            out["progs"] = {name: list(obj.program(name).run_count())
                            for obj in agent._objects.values() for name in obj.program_names()}
        print("MARK " + json.dumps(out), flush=True)
    agent.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
