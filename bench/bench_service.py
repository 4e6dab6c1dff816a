"""The node service: time from exec to the first traced RPC, and the agent's own CPU while
other processes come and go.

`python3 bench/run.py bench_service`. The agent runs as users run it (`pyhttp2probe run`
in its own process, selecting by --exe); the programs are started after it, so every
figure includes discovery (kernel exec event → selection → plan → attach).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from testkit.agentproc import AgentProcess
from testkit.gobuild import GoBuild, build

STARTS = 15  # programs started one after another, each traced from its exec
CHURN_S = 20.0  # seconds of process churn per CPU measurement
CHURN_ALIVE = 100  # short-lived processes kept coming and going at once


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _exec_to_first_span(tmp: Path) -> list[float]:
    """ms from just before each exec to the start of its first traced RPC (the program
    calls at 2,000 RPC/s from its start, so the first calls come a few ms after exec)."""
    binary = tmp / f"bench-{os.getpid()}-grpcdemo"
    shutil.copy2(build(GoBuild(src="grpcdemo")), binary)
    spans = tmp / "spans.jsonl"
    exec_ns: dict[int, int] = {}
    with AgentProcess(["--exe", binary.name, "--spans-out", str(spans),
                       "--log-level", "warning"]):
        for _ in range(STARTS):
            t0 = time.monotonic_ns()  # CLOCK_MONOTONIC, the clock of the spans' start_ns
            proc = subprocess.Popen([str(binary), "-duration", "1s", "-qps", "2000"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            exec_ns[proc.pid] = t0
            assert proc.wait(timeout=60) == 0
        time.sleep(1.0)
    first: dict[int, int] = {}
    for line in spans.read_text().splitlines():
        s = json.loads(line)
        if s["kind"] == "grpc_client" and s["pid"] in exec_ns:
            first[s["pid"]] = min(first.get(s["pid"], s["start_ns"]), s["start_ns"])
    assert set(first) == set(exec_ns), "a program's calls were never traced"
    return [(first[pid] - t0) / 1e6 for pid, t0 in exec_ns.items()]


def _churn(seconds: float) -> int:
    """Keep CHURN_ALIVE short-lived processes coming and going; returns how many ran."""
    procs: list[subprocess.Popen[bytes]] = []
    started = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        procs = [p for p in procs if p.poll() is None]
        while len(procs) < CHURN_ALIVE:
            procs.append(subprocess.Popen(["sleep", "0.5"]))
            started += 1
        time.sleep(0.02)
    for p in procs:
        p.wait()
    return started


def _idle_cpu(args: list[str]) -> tuple[float, float, int]:
    """Agent CPU % with nothing happening, then with churn (and processes run)."""
    with AgentProcess([*args, "--log-level", "warning"]) as agent:
        time.sleep(2.0)
        c0, t0 = _cpu_s(agent.proc.pid), time.monotonic()
        time.sleep(CHURN_S)
        quiet = 100 * (_cpu_s(agent.proc.pid) - c0) / (time.monotonic() - t0)
        c0, t0 = _cpu_s(agent.proc.pid), time.monotonic()
        n = _churn(CHURN_S)
        busy = 100 * (_cpu_s(agent.proc.pid) - c0) / (time.monotonic() - t0)
    return quiet, busy, n


def run() -> str:
    with tempfile.TemporaryDirectory() as tmpdir:
        lat = _exec_to_first_span(Path(tmpdir))
    rows_cpu = []
    for label, args in (("--exe (matches none of them)", ["--exe", "no-such-program"]),
                        ("--all (judges every one)", ["--all"])):
        quiet, busy, n = _idle_cpu(args)
        rows_cpu.append(f"| {label} | {quiet:.2f} % | {busy:.2f} % | {n} "
                        f"({n / CHURN_S:.0f}/s) |")
    lat.sort()
    return "\n".join([
        "## Node service: exec → first traced RPC, idle CPU under process churn "
        "(`bench_service`)",
        "",
        f"{STARTS} runs of a gRPC program (grpcdemo, 2,000 RPC/s from its first "
        "millisecond) started after the agent (`run --exe`): time from just before its exec "
        "to the start of its first traced call (includes Go start-up and the first dial, a "
        "few ms). Goal: ≤ 1 s.",
        "",
        "| median | worst | best |",
        "|---|---|---|",
        f"| {statistics.median(lat):.1f} ms | {lat[-1]:.1f} ms | {lat[0]:.1f} ms |",
        "",
        f"Agent CPU (utime+stime of its process, % of one core) over {CHURN_S:.0f} s quiet, "
        f"then over {CHURN_S:.0f} s while {CHURN_ALIVE} short-lived processes (`sleep 0.5`) "
        "keep coming and going, none of them traced.",
        "",
        "| selection | quiet | churn | processes started |",
        "|---|---|---|---|",
        *rows_cpu,
    ])
