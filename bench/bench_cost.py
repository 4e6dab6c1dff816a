"""Cost of our BPF programs against the bare trap (issue 12): `python3 bench/run.py bench_cost`.

All figures come from one invocation, side by side, on one CPU-bound unary workload
(tests/go/grpcwork: client and server in one process, no server delay, no errors):
  * throughput without the agent, with EMPTY programs at the very points our paths attach
    to (bench/bpf/empty_probes.bpf.c: the trap floor), and with ours; rounds alternate;
  * each program's kernel run_time_ns / run_cnt (BPF_ENABLE_STATS, a run of its own so the
    stats' clock reads do not weigh on the throughput rounds);
  * hits per RPC on each side, by call kind and status;
  * delivery delay from an RPC's end (the record's end_ns, CLOCK_MONOTONIC like the
    kernel's bpf_ktime_get_ns) to its span reaching a sink, with Agent(poll_ms=100).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.bench_agent_cpu import BEFORE_REF, Child, _before_tree
from libbpf_loader import BpfObject, bpf_stats_enabled
from pyhttp2probe import Agent
from pyhttp2probe.probes import ProbePath, all_paths
from pyhttp2probe.spans import Span
from testkit.bpfbuild import ROOT, build_object
from testkit.gobuild import GoBuild, build
from testkit.workload import run_workload, start_workload

PIN = "v1.85.0"
EMPTY_SRC = ROOT / "bench" / "bpf" / "empty_probes.bpf.c"
ROUNDS = 15  # the shared VM's run-to-run spread is ~10 %: a median of 15 holds still
STAT_RUNS = 5  # runs per variant for the BPF time per hit (median)
CPU_ARGS = ["-servers", "2", "-goroutines", "16", "-rpcs", "1000", "-mix", "unary=1",
            "-errors", "0", "-client-failures", "0", "-nested", "0", "-delay-max", "0s"]
# Hits by kind and status: one workload each (a handful of goroutines, no churn).
_SHAPE = ["-servers", "2", "-goroutines", "4", "-rpcs", "100", "-nested", "0", "-churn", "0",
          "-delay-max", "0s"]
SHAPES: dict[str, list[str]] = {
    "unary OK": ["-mix", "unary=1", "-errors", "0", "-client-failures", "0"],
    "unary, server error": ["-mix", "unary=1", "-errors", "1", "-client-failures", "0"],
    "unary, client-side failure": ["-mix", "unary=1", "-errors", "0",
                                   "-client-failures", "1"],
    "server_stream": ["-mix", "server_stream=1", "-errors", "0", "-client-failures", "0"],
    "client_stream": ["-mix", "client_stream=1", "-errors", "0", "-client-failures", "0"],
    "bidi": ["-mix", "bidi=1", "-errors", "0", "-client-failures", "0"],
}
# Delivery delay: a steady trickle (latency-bound), so records wait for the poll, not a
# full ring.
DELAY_ARGS = ["-servers", "2", "-goroutines", "2", "-rpcs", "1500", "-mix", "unary=1",
              "-errors", "0", "-client-failures", "0", "-nested", "0", "-delay-max", "2ms"]


def _binary() -> Path:
    mods = ROOT / "tests" / "go" / "grpcmods"
    pin = PIN if (mods / PIN).exists() else sorted(p.name for p in mods.iterdir())[-1]
    return build(GoBuild(src="grpcwork", mod=f"grpcmods/{pin}"))


def empty_paths() -> tuple[ProbePath, ...]:
    """Our paths with their object swapped for the empty one: same setup(), so the same
    attach points and config writes; no records, nothing in flight."""
    obj = str(build_object(EMPTY_SRC))
    return tuple(ProbePath(name=f"empty_{p.name}", object=obj, functions=p.functions,
                           fields=p.fields, setup=p.setup, records=(), anchors=p.anchors,
                           variables=p.variables, calls=p.calls)
                 for p in all_paths())


def _check_twins() -> None:
    """Every program of the shipped objects has an empty twin (else the floor misses points)."""
    from pyhttp2probe.assets import bpf_dir

    with BpfObject.open(build_object(EMPTY_SRC)) as empty:
        have = set(empty.program_names())
    for p in all_paths():
        with BpfObject.open(bpf_dir() / p.object) as real:
            probes = {n for n in real.program_names() if real.program(n).section == "uprobe"}
            missing = probes - have  # not the slot sweepers: no attach point
        if missing:
            raise RuntimeError(f"{EMPTY_SRC.name} lacks empty programs {sorted(missing)}")


def _agent(variant: str, **kw: Any) -> Agent:
    paths = empty_paths() if variant == "empty" else all_paths()
    return Agent(paths=paths, keep_spans=False, **kw)


def _prog_stats(agent: Agent) -> dict[str, tuple[int, int]]:
    """(run_cnt, run_time_ns) of every program of the agent's objects that ran."""
    return {name: (cnt, ns) for name, (cnt, ns) in agent.run_stats().items() if cnt}


def _traced_run(binary: Path, args: Sequence[str], variant: str,
                stats: bool = False, **agent_kw: Any) -> dict[str, Any]:
    with start_workload(binary, [*args, "-hold"]) as wl:
        assert wl.pid is not None
        with _agent(variant, **agent_kw) as agent:
            if stats:
                with bpf_stats_enabled():
                    agent.attach(wl.pid)
                    wl.go()
                    wl.wait_done(600)
                    progs = _prog_stats(agent)
            else:
                agent.attach(wl.pid)
                wl.go()
                wl.wait_done(600)
                progs = {}
            agent.drain()
        summary = wl.finish() or {}
    return {"summary": summary, "progs": progs}


def _throughput(binary: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"none": [], "empty": [], "ours": []}
    for _ in range(ROUNDS):
        out["none"].append(float((run_workload(binary, CPU_ARGS, 600) or {}).get("rps", 0)))
        for variant in ("empty", "ours"):
            r = _traced_run(binary, CPU_ARGS, variant)
            out[variant].append(float(r["summary"].get("rps", 0)))
    return out


def _median_progs(runs: list[dict[str, tuple[int, int]]]) -> dict[str, tuple[int, int]]:
    """Per program, the (run_cnt, run_time_ns) of the run with the median ns per run."""
    out = {}
    for name in {n for r in runs for n in r}:
        have = sorted((r[name] for r in runs if name in r), key=lambda c: c[1] / c[0])
        out[name] = have[len(have) // 2]
    return out


CLIENT_PREFIX = "grpc_client"
SERVER_PREFIX = "grpc_server"


# Once per connection, never per call (the connection cache's constructor probes).
PER_CONNECTION = ("grpc_client_conn", "grpc_server_conn")


def _side_hits(progs: dict[str, tuple[int, int]], prefix: str) -> int:
    return sum(c for name, (c, _) in progs.items()
               if name.startswith(prefix) and name not in PER_CONNECTION)


class _DelaySink:
    """Records, per span, now - end_ns when the span reaches the sink (ms)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def write(self, spans: Sequence[Span]) -> None:
        now = time.monotonic_ns()
        self.delays.extend((now - s.end_ns) / 1e6 for s in spans)

    def close(self) -> None:
        pass


def _delivery(binary: Path) -> dict[str, float]:
    sink = _DelaySink()
    with start_workload(binary, [*DELAY_ARGS, "-hold"]) as wl:
        assert wl.pid is not None
        with Agent(keep_spans=False, sinks=[sink], poll_ms=100) as agent:
            agent.attach(wl.pid)
            wl.go()
            wl.wait_done(600)
            time.sleep(0.5)  # the last records arrive by poll, not by close()'s drain
            n_before_close = len(sink.delays)
        wl.finish()
    d = sorted(sink.delays[:n_before_close])
    if not d:
        return {"n": 0}
    return {"n": len(d), "p50": d[len(d) // 2], "p99": d[min(len(d) - 1, int(len(d) * 0.99))],
            "max": d[-1]}


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in Path("/proc/loadavg").read_text().split()[:3]
                      for x in [float(x)])


BA_ROUNDS = 5  # alternating before/after throughput rounds


def _child_run(tree: Path, binary: Path, stats: bool,
               args: Sequence[str] = tuple(CPU_ARGS)) -> dict[str, Any]:
    """A workload (the CPU one unless `args`) traced by an agent of `tree` in its own
    process (metrics only)."""
    with tempfile.TemporaryDirectory() as tmp, \
            start_workload(binary, [*args, "-hold"]) as wl:
        assert wl.pid is not None
        child = Child(tree, "metrics", [wl.pid], Path(tmp) / "spans.jsonl", prog_stats=stats)
        try:
            child.mark()
            wl.go()
            wl.wait_done(600)
            m = child.mark()
        finally:
            child.close()
        summary = wl.finish() or {}
    progs = {k: (int(v[0]), int(v[1])) for k, v in m.get("progs", {}).items() if v[0]}
    return {"rps": float(summary.get("rps", 0)), "progs": progs,
            "total": int(summary.get("total", 0))}


# Shapes whose client hits issue 12 names (failed calls: 4; streaming: 3), before and after.
BA_SHAPES = ("unary OK", "unary, server error", "server_stream")


def _before_after(binary: Path) -> dict[str, Any]:
    """Throughput and BPF time per hit with the code before issue 12 (BEFORE_REF, as in
    bench_agent_cpu) and with this tree, each agent in a process of its own, alternating."""
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": _before_tree(Path(tmp)), "after": ROOT}
        rps: dict[str, list[float]] = {k: [] for k in trees}
        for _ in range(BA_ROUNDS):
            for k, tree in trees.items():
                rps[k].append(_child_run(tree, binary, False)["rps"])
        with bpf_stats_enabled():
            progs = {k: _median_progs([_child_run(tree, binary, True)["progs"]
                                       for _ in range(STAT_RUNS)])
                     for k, tree in trees.items()}
            hits = {(shape, k): _child_run(tree, binary, True, [*_SHAPE, *SHAPES[shape]])
                    for shape in BA_SHAPES for k, tree in trees.items()}
    return {"rps": rps, "progs": progs, "hits": hits}


def _before_after_lines(ba: dict[str, Any], none_rps: float) -> list[str]:
    rps = {k: statistics.median(v) for k, v in ba["rps"].items()}
    lines = [
        "",
        f"Before and after issue 12 (the code of `{BEFORE_REF[:10]}`, bench_agent_cpu's "
        f"BEFORE_REF, built beside this tree): the same workload, each agent in a process of "
        f"its own (bench/agent_child.py, metrics only), {BA_ROUNDS} alternating rounds for "
        f"RPC/s and {STAT_RUNS} runs each for BPF time per hit (median); the ratio is to the "
        f"no-agent median above.",
        "",
        "| figure | before | after |",
        "|---|---:|---:|",
        f"| RPC/s (median; runs before: {', '.join(f'{x:,.0f}' for x in ba['rps']['before'])};"
        f" after: {', '.join(f'{x:,.0f}' for x in ba['rps']['after'])}) | "
        f"{rps['before']:,.0f} | {rps['after']:,.0f} |",
        f"| ratio to no agent | {rps['before'] / none_rps:.3f} | "
        f"{rps['after'] / none_rps:.3f} |",
    ]
    before, after = ba["progs"]["before"], ba["progs"]["after"]
    for name in sorted(set(before) | set(after)):
        cells = []
        for progs in (before, after):
            cnt, ns = progs.get(name, (0, 0))
            cells.append(f"{ns / cnt:,.0f} ({cnt:,} runs)" if cnt else "—")
        lines.append(f"| `{name}` ns per run | {cells[0]} | {cells[1]} |")
    for shape in BA_SHAPES:
        cells = []
        for k in ("before", "after"):
            r = ba["hits"][(shape, k)]
            cells.append(f"{_side_hits(r['progs'], CLIENT_PREFIX) / max(1, r['total']):.2f}")
        lines.append(f"| client hits per RPC, {shape} | {cells[0]} | {cells[1]} |")
    return lines


def run() -> str:
    _check_twins()
    binary = _binary()
    load_before = _load()
    tput = _throughput(binary)
    ns = {v: _median_progs([_traced_run(binary, CPU_ARGS, v, stats=True)["progs"]
                            for _ in range(STAT_RUNS)]) for v in ("empty", "ours")}
    shapes = {name: _traced_run(binary, [*_SHAPE, *args], "ours", stats=True)
              for name, args in SHAPES.items()}
    delivery = _delivery(binary)
    ba = _before_after(binary)
    load_after = _load()

    med = {k: statistics.median(v) for k, v in tput.items()}
    floor = med["empty"] / med["none"] if med["none"] else 0.0
    ours = med["ours"] / med["none"] if med["none"] else 0.0
    lines = [
        "## Cost of our programs against the trap floor (issue 12)",
        "",
        f"Workload: `tests/go/grpcwork` on grpc-go {PIN}, client and server in one process, "
        f"CPU-bound unary calls (`{' '.join(CPU_ARGS)}`); every path of the agent on. "
        f"*Empty* = programs that return at once, attached at the same points as ours "
        f"(`bench/bpf/empty_probes.bpf.c`): the cost of the traps alone. {ROUNDS} alternating "
        f"rounds (none, empty, ours), median. Load average before / after: {load_before} "
        f"and {load_after} (2 shared cores).",
        "",
        "| variant | RPC/s (median) | runs | ratio to none |",
        "|---|---:|---|---:|",
    ]
    for v, label in (("none", "no agent"), ("empty", "empty programs (trap floor)"),
                     ("ours", "ours")):
        r = med[v] / med["none"] if med["none"] else 0.0
        lines.append(f"| {label} | {med[v]:,.0f} | "
                     f"{', '.join(f'{x:,.0f}' for x in tput[v])} | {r:.3f} |")
    # Each round runs empty and ours back to back: their ratio within a round is less
    # exposed to the machine's drift than the ratio of the two medians.
    paired = [o / e for e, o in zip(tput["empty"], tput["ours"], strict=True) if e]
    paired_med = statistics.median(paired) if paired else 0.0
    lines += [
        "",
        f"Ours / floor: **{ours / floor if floor else 0:.3f}** (goal ≥ 0.9); within each round "
        f"(ours / empty, run back to back): {', '.join(f'{x:.3f}' for x in paired)}, median "
        f"**{paired_med:.3f}**.",
        "",
        f"BPF time per hit (kernel run_time_ns / run_cnt, BPF_ENABLE_STATS on, {STAT_RUNS} runs "
        "each of the same workload, the median run of each program; goal ≤ 500 ns on the "
        "common path):",
        "",
        "| program | runs | ns per run, ours | ns per run, empty |",
        "|---|---:|---:|---:|",
    ]
    empty_p, ours_p = ns["empty"], ns["ours"]
    for name in sorted(set(ours_p) | set(empty_p)):
        oc, ot = ours_p.get(name, (0, 0))
        ec, et = empty_p.get(name, (0, 0))
        lines.append(f"| `{name}` | {oc:,} | {ot / oc if oc else 0:,.0f} | "
                     f"{et / ec if ec else 0:,.0f} |")
    flushers = sorted({st.flusher for p in all_paths() for st in p.stages} & set(ours_p))
    if flushers:
        lines += ["", f"{', '.join(f'`{f}`' for f in flushers)}: the agent's own runs (once "
                  "per poll, on a CPU whose record stage holds records: bpf_src/stage.h), not "
                  "traps in the traced program; their runs column is per poll, not per RPC."]
    lines += _before_after_lines(ba, med["none"])
    lines += [
        "",
        "Hits per RPC (kernel run_cnt of each side's programs / RPCs), by kind and status; "
        f"{' and '.join(f'`{p}`' for p in PER_CONNECTION)} run once per connection (the "
        "connection cache), not per RPC: in the programs column, not in the ratios:",
        "",
        "| calls | RPCs (client / server handled) | client hits per RPC | server hits per "
        "handled RPC | client programs |",
        "|---|---:|---:|---:|---|",
    ]
    for name, r in shapes.items():
        total = int(r["summary"].get("total", 0))
        handled = int(r["summary"].get("server_handled", 0))
        progs = r["progs"]
        client = {k: c for k, (c, _) in progs.items() if k.startswith(CLIENT_PREFIX)}
        lines.append(
            f"| {name} | {total:,} / {handled:,} | "
            f"{_side_hits(progs, CLIENT_PREFIX) / max(1, total):.2f} | "
            f"{_side_hits(progs, SERVER_PREFIX) / max(1, handled) if handled else 0:.2f} | "
            f"{client} |")
    if delivery.get("n"):
        lines += [
            "",
            f"Delivery delay, RPC end to its span in a sink (Agent(poll_ms=100), "
            f"`{' '.join(DELAY_ARGS)}`, {delivery['n']:,} spans): p50 "
            f"{delivery['p50']:.1f} ms, p99 {delivery['p99']:.1f} ms, max "
            f"{delivery['max']:.1f} ms (goal: p99 ≤ 250 ms).",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
