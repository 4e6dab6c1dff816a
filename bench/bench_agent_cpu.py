"""Agent CPU per span (issue 12): the agent's own CPU, measured in a process of its own
(bench/agent_child.py) while grpcwork makes CPU-bound unary calls with its client and server
both traced (2 spans per RPC).

`python3 bench/run.py bench_agent_cpu`. Modes: metrics only (what `pyhttp2probe run`
does without --spans-out), metrics + JSON lines (to a file), metrics + the spans() iterator
(a consumer thread counting spans: its CPU is included). "before" is the code of
BEFORE_REF (the commit before issue 12's Python work), extracted with `git archive` and
built beside this tree, run on the same workload in the same run, alternating with "after"
(this tree). CPU per span = (the child's CPU during the load - its idle CPU over the same
time, measured just before) / records decoded.
Scale: metrics only, at about 1k and 10k RPC/s (server delays and few goroutines) and at the
workload's maximum, and with 1, 10 and 50 traced processes sharing about 4k RPC/s.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from testkit.gobuild import GO_ROOT, GoBuild, build
from testkit.workload import start_workload

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "bench" / "agent_child.py"
BEFORE_REF = os.environ.get("PYHTTP2PROBE_BENCH_BEFORE",
                            "9e586b22138f6e0cc98f224bf0ac13e657094e26")
IDLE_S = 1.5
REPEATS = 2
# CPU-bound unary calls: no server delay, no failures (every record is a span)
MAX_ARGS = ["-servers", "2", "-goroutines", "16", "-mix", "unary=1", "-errors", "0",
            "-client-failures", "0", "-nested", "0", "-delay-max", "0s"]


def _binary() -> Path:
    pins = sorted(p.name for p in (GO_ROOT / "grpcmods").iterdir() if (p / "go.sum").exists())
    return build(GoBuild(src="grpcwork", mod=f"grpcmods/{pins[-1]}"))


def _before_tree(tmp: Path) -> Path:
    """BEFORE_REF's tree with its own cffi extension and BPF objects built."""
    out = tmp / "before"
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE_REF],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    for step in ("build_ext", "build_bpf"):
        args = [sys.executable, "setup.py", "-q", step] + (["--inplace"] if step == "build_ext"
                                                            else [])
        subprocess.run(args, cwd=out, check=True, capture_output=True)
    return out


class Child:
    """bench/agent_child.py running the code of `tree`."""

    def __init__(self, tree: Path, mode: str, pids: list[int], json_out: Path,
                 batch_ms: int | None = None, prog_stats: bool = False) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        opts = [] if batch_ms is None else ["--batch-ms", str(batch_ms)]
        opts += ["--prog-stats"] if prog_stats else []
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), "--mode", mode, "--json-out", str(json_out), *opts,
             *map(str, pids)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=env, cwd=tree)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.close()
            raise RuntimeError(f"agent child did not start: {line!r}")

    def mark(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("mark\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("agent child exited")
            if line.startswith("MARK "):
                out = json.loads(line[5:])
                out["t"] = time.monotonic()
                return out

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def measure(tree: Path, mode: str, binary: Path, wl_args: list[str], procs: int,
            tmp: Path, batch_ms: int | None = None) -> dict[str, float]:
    """One run: `procs` workload processes traced by one agent child in `mode`."""
    with ExitStack() as stack:
        wls = [stack.enter_context(start_workload(binary, [*wl_args, "-hold"]))
               for _ in range(procs)]
        pids = [wl.pid for wl in wls if wl.pid is not None]
        child = Child(tree, mode, pids, tmp / f"spans-{time.monotonic_ns()}.jsonl", batch_ms)
        stack.callback(child.close)
        m0 = child.mark()
        time.sleep(IDLE_S)
        m1 = child.mark()
        for wl in wls:
            wl.go()
        for wl in wls:
            wl.wait_done(900)
        m2 = child.mark()
        summaries = [wl.finish() or {} for wl in wls]
    idle_rate = (m1["cpu_s"] - m0["cpu_s"]) / (m1["t"] - m0["t"])
    load_s = m2["t"] - m1["t"]
    spans = m2["events"] - m1["events"]
    cpu = (m2["cpu_s"] - m1["cpu_s"]) - idle_rate * load_s
    drain = m2["drain_cpu_s"] - m1["drain_cpu_s"]
    callback = m2["callback_cpu_s"] - m1["callback_cpu_s"]
    elapsed = max(float(s.get("elapsed_s", 0.0)) for s in summaries) or load_s
    rpcs = sum(int(s.get("total", 0)) for s in summaries)
    batches = m2["batches"] - m1["batches"]
    return {"spans": spans, "us_per_span": 1e6 * cpu / max(spans, 1),
            "drain_us_per_span": 1e6 * drain / max(spans, 1),
            "callback_us_per_span": 1e6 * callback / max(spans, 1),
            "spans_per_s": spans / elapsed, "rpc_per_s": rpcs / elapsed,
            "cpu_frac": cpu / load_s, "batch": (m2["records_in_batches"]
                                                - m1["records_in_batches"]) / max(batches, 1)}


def _fmt_runs(runs: list[dict[str, float]]) -> tuple[str, str, str]:
    us = statistics.median(r["us_per_span"] for r in runs)
    return (f"{us:.2f}", ", ".join(f"{r['us_per_span']:.2f}" for r in runs),
            f"{statistics.median(r['spans_per_s'] for r in runs):,.0f}")


# (label, processes, workload flags of each): metrics only, after
SCALE = [
    ("~1k RPC/s, 1 process", 1, ["-servers", "1", "-goroutines", "4", "-delay-max", "8ms",
                                 "-rpcs", "1200"]),
    ("~10k RPC/s, 1 process", 1, ["-servers", "2", "-goroutines", "16", "-delay-max", "5ms",
                                  "-rpcs", "1500"]),
    ("max RPC/s, 1 process", 1, ["-servers", "2", "-goroutines", "16", "-delay-max", "0s",
                                 "-rpcs", "2000"]),
    ("~4k RPC/s, 1 process", 1, ["-servers", "1", "-goroutines", "16", "-delay-max", "8ms",
                                 "-rpcs", "1000"]),
    ("~4k RPC/s, 10 processes", 10, ["-servers", "1", "-goroutines", "2", "-delay-max",
                                     "10ms", "-rpcs", "1000"]),
    ("~4k RPC/s, 50 processes", 50, ["-servers", "1", "-goroutines", "1", "-delay-max",
                                     "25ms", "-rpcs", "300"]),
]
UNARY = ["-mix", "unary=1", "-errors", "0", "-client-failures", "0", "-nested", "0"]


def run() -> str:
    binary = _binary()
    max_args = [*MAX_ARGS, "-rpcs", os.environ.get("PYHTTP2PROBE_BENCH_RPCS", "2000")]
    modes = ("metrics", "json", "iter")
    with tempfile.TemporaryDirectory(prefix="bench-agent-cpu-") as d:
        tmp = Path(d)
        before = _before_tree(tmp)
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(REPEATS):
            for mode in modes:
                for name, tree in (("before", before), ("after", ROOT)):
                    results.setdefault((mode, name), []).append(
                        measure(tree, mode, binary, max_args, 1, tmp))
        scale = [(label, procs, measure(ROOT, "metrics", binary, [*UNARY, *args], procs, tmp))
                 for label, procs, args in SCALE]
        shutil.rmtree(before, ignore_errors=True)
    rows = []
    for mode in modes:
        for name in ("before", "after"):
            runs = results[(mode, name)]
            med, each, rate = _fmt_runs(runs)
            cb = statistics.median(r["callback_us_per_span"] for r in runs)
            batch = statistics.median(r["batch"] for r in runs)
            rows.append(f"| {MODE_NAMES[mode]} | {name} | **{med}** | {each} | {cb:.2f} | "
                        f"{rate} | {batch:,.0f} |")
    scale_rows = [
        f"| {label} | {procs} | {r['rpc_per_s']:,.0f} | {r['spans_per_s']:,.0f} | "
        f"{100 * r['cpu_frac']:.1f} % | {r['us_per_span']:.2f} | {r['batch']:,.0f} |"
        for label, procs, r in scale]
    return "\n".join([
        "## Agent CPU per span (`bench_agent_cpu`, issue 12)",
        "",
        " ".join(__doc__.split("\n\n", 1)[1].split()),
        f"Goal: ≤ 1 µs per span with metrics only, ≤ 4 µs with spans streamed, at ≥ 20k "
        f"spans/s. Before: `{BEFORE_REF[:10]}`.",
        "",
        "| mode | code | µs CPU per span (median) | runs | of it in the batch callback "
        "| spans/s | records per batch |",
        "|---|---|---:|---|---:|---:|---:|",
        *rows,
        "",
        "Scale (after, metrics only): the agent's CPU (share of one core, idle subtracted) "
        "and per span, by rate and by number of traced processes.",
        "",
        "| load | processes | RPC/s | spans/s | agent CPU | µs per span | records per batch |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *scale_rows,
    ])


MODE_NAMES = {"metrics": "metrics only", "json": "metrics + JSON lines",
              "iter": "metrics + spans() iterator"}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(run())
