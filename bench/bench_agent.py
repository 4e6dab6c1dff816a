"""Agent scale: the cost of attaching one more process of an already-attached binary, and of
detaching them all, for 1, 10 and 50 processes.

`python3 bench/run.py bench_agent`. Two ways processes meet the agent:
- scale-out: each process is attached as it starts, so every process running the binary is
  traced and the file's links are shared (one pid-less link per program): the next
  process costs config writes only;
- already running: N processes run before the first attach, so the agent must give each
  its own links (an untraced process of the file must never take a trap).
Detach: every target at once (`Agent.detach_all`), links closed concurrently.
"""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack
from pathlib import Path

from pyhttp2probe import Agent
from pyhttp2probe.uprobes import default_style
from testkit.gobuild import GO_ROOT, GoBuild, build
from testkit.workload import start_workload

COUNTS = (1, 10, 50)
GOALS = "goal: the 50th attach ≤ 20 ms; detaching 50 processes ≤ 2 s"


def _binary() -> Path:
    pins = sorted(p.name for p in (GO_ROOT / "grpcmods").iterdir() if (p / "go.sum").exists())
    return build(GoBuild(src="grpcwork", mod=f"grpcmods/{pins[-1]}"))


def _start(stack: ExitStack, binary: Path) -> int:
    wl = stack.enter_context(start_workload(binary, ["-servers", "1", "-rpcs", "1", "-hold"]))
    assert wl.pid is not None
    return wl.pid


def _measure(binary: Path, n: int, scale_out: bool) -> dict[str, float]:
    attach_ms: list[float] = []
    with ExitStack() as stack, Agent(keep_spans=False) as agent:
        pids = [] if scale_out else [_start(stack, binary) for _ in range(n)]
        for i in range(n):
            pid = _start(stack, binary) if scale_out else pids[i]
            t0 = time.perf_counter()
            agent.attach(pid)
            attach_ms.append((time.perf_counter() - t0) * 1e3)
        links = agent.links()
        t0 = time.perf_counter()
        agent.detach_all()
        detach_s = time.perf_counter() - t0
        assert not agent.targets and agent.links() == 0
    return {"first_ms": attach_ms[0], "last_ms": attach_ms[-1],
            "median_next_ms": statistics.median(attach_ms[1:]) if n > 1 else float("nan"),
            "links": links, "detach_s": detach_s}


def run() -> str:
    binary = _binary()
    rows = []
    for scale_out in (True, False):
        for n in COUNTS:
            r = _measure(binary, n, scale_out)
            rows.append(
                f"| {'scale-out (shared links)' if scale_out else 'already running (own links)'}"
                f" | {n} | {r['first_ms']:.1f} | {r['median_next_ms']:.1f} | "
                f"{r['last_ms']:.1f} | {r['links']} | {r['detach_s']:.2f} |")
    return "\n".join([
        "## Agent: attach and detach cost by number of processes (`bench_agent`)",
        "",
        f"One grpcwork binary (a gRPC client and server, {binary.name}); links: "
        f"{default_style()}. The first attach of a binary includes planning it (cached on "
        f"disk by build id). {GOALS}.",
        "",
        "| processes met | N | 1st attach ms | median next attach ms | N-th attach ms | "
        "links held | detach all s |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])
