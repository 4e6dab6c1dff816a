"""What traces cost (issue 13): `python3 bench/run.py --splice bench_traces`.

All figures come from one invocation, the variants alternating, so ratios hold on this
shared machine. Every workload runs from a private copy of its binary (the agent shares
links among the processes of one file: another session's run of the cached binary would
add its hits to ours).

a. Probe hits per RPC and BPF ns per hit, traces off vs on: an in-process Agent
   (trace_context=False / True), kernel bpf_stats on, on one grpcwork workload (every call
   kind, nested calls from handlers and interceptors), rounds alternating.
b. The agent's CPU per span, as users run it (`pyhttp2probe run --pid`, a process of its
   own): metrics only vs traces on exporting over OTLP to a live Jaeger; the exporter's
   share (joiner, conversion, encoding, HTTP) = traces on minus metrics only. CPU =
   utime+stime of the agent process during the load, less its idle rate measured just
   before, over the spans it decoded; for traces on the load ends when every span was
   exported (none may be dropped).
c. Backend down: the agent (`run --otlp-endpoint`) exports to a port where nothing
   listens while grpcdemo makes a steady load, then Jaeger comes up on that port. Sampled
   from the agent's /metrics: spans made (the span histograms' counts), exported, dropped
   by reason, the backlog (made - exported - dropped: the OTLP queue, the batch in flight
   and the joiner's waiting spans), RSS; Jaeger's own count at the end.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from libbpf_loader import bpf_stats_enabled
from pyhttp2probe import Agent
from pyhttp2probe.otlp import DEFAULT_BATCH, DEFAULT_QUEUE
from testkit.agentproc import AgentProcess
from testkit.gobuild import GoBuild, build
from testkit.jaeger import Jaeger, jaeger_binary
from testkit.prom import free_port
from testkit.workload import start_workload

ROOT = Path(__file__).resolve().parent.parent
PIN = "v1.85.0"
ROUNDS_HITS = 4  # each variant (a)
ROUNDS_CPU = 3  # each variant (b)
IDLE_S = 2.0
# (a) CPU-bound, every kind, nested calls, a few server errors
HITS_ARGS = ["-servers", "2", "-goroutines", "8", "-rpcs", "300", "-errors", "0.05",
             "-client-failures", "0", "-nested", "0.2", "-delay-max", "0s"]
# (b) a rate the exporter sustains: unary calls with server delays, nested calls
CPU_ARGS = ["-servers", "2", "-goroutines", "8", "-rpcs", "1200", "-mix", "unary=1",
            "-errors", "0.05", "-client-failures", "0", "-nested", "0.1", "-delay-max",
            "6ms"]
# (c) steady load: grpcdemo at QPS calls/s (client and server: 2 spans each)
QPS = 500
DOWN_S = 30.0
UP_S = 25.0
SAMPLE_S = 0.25
STEADY_BACKLOG = 2 * DEFAULT_BATCH  # "steady": the backlog back under two batches

EXPORTED = "pyhttp2probe_otlp_spans_exported_total"
DROPPED = "pyhttp2probe_otlp_spans_dropped_total"


def _private(tmp: Path, name: str, src: str, **kw: str) -> Path:
    out = tmp / name
    shutil.copy2(build(GoBuild(src=src, **kw)), out)
    return out


def _load() -> str:
    return " / ".join(f"{float(x):.1f}" for x in Path("/proc/loadavg").read_text().split()[:3])


# -- a. hits and BPF ns per hit ------------------------------------------------------------
def _hits_round(binary: Path, trace: bool) -> dict[str, Any]:
    with start_workload(binary, [*HITS_ARGS, "-hold"]) as wl:
        assert wl.pid is not None
        with Agent(trace_context=trace, keep_spans=False) as agent, bpf_stats_enabled():
            agent.attach(wl.pid)
            wl.go()
            wl.wait_done(600)
            agent.drain()
            progs = {}
            for obj in agent._objects.values():  # bench-only look inside: time per run
                for name in obj.program_names():
                    cnt, ns = obj.program(name).run_count()
                    if cnt:
                        progs[name] = (cnt, ns)
            stats = agent.stats()
        summary = wl.finish() or {}
    assert stats["grpc_client.no_config"] == stats["grpc_server.no_config"] == 0, stats
    return {"progs": progs, "total": int(summary["total"]),
            "handled": int(summary["server_handled"]), "rps": float(summary["rps"])}


def _hits(binary: Path) -> dict[bool, list[dict[str, Any]]]:
    out: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for _ in range(ROUNDS_HITS):
        for trace in (False, True):
            out[trace].append(_hits_round(binary, trace))
    return out


def _hits_section(res: dict[bool, list[dict[str, Any]]]) -> list[str]:
    names = sorted({n for rs in res.values() for r in rs for n in r["progs"]})
    rows = []
    for name in names:
        side = "handled" if name.startswith("grpc_server") else "total"
        per: dict[bool, float] = {}
        ns: dict[bool, float] = {}
        for trace in (False, True):
            runs = res[trace]
            per[trace] = statistics.median(r["progs"].get(name, (0, 0))[0] / r[side]
                                           for r in runs)
            ns[trace] = statistics.median(r["progs"][name][1] / r["progs"][name][0]
                                          for r in runs if name in r["progs"])
        rows.append(f"| `{name}` | {per[False]:.3f} | {per[True]:.3f} | {ns[False]:,.0f} | "
                    f"{ns[True]:,.0f} | {ns[True] / ns[False]:.2f} |")

    def side_hits(r: dict[str, Any], prefix: str, n: str) -> float:
        return sum(c for k, (c, _) in r["progs"].items() if k.startswith(prefix)) / r[n]

    tot = {t: (statistics.median(side_hits(r, "grpc_client", "total") for r in res[t]),
               statistics.median(side_hits(r, "grpc_server", "handled") for r in res[t]))
           for t in (False, True)}
    same = all(r["progs"].keys() == res[False][0]["progs"].keys() for rs in res.values()
               for r in rs)
    rps = {t: statistics.median(r["rps"] for r in res[t]) for t in (False, True)}
    r0 = res[False][0]
    return [
        f"**a. Probe hits per RPC and BPF time per hit** ({ROUNDS_HITS} rounds each, "
        f"alternating off/on; medians). Workload: grpcwork (grpc-go {PIN}, client and server "
        f"in one process) `{' '.join(HITS_ARGS)}`: {r0['total']:,} client RPCs of every kind "
        f"(nested ones included), {r0['handled']:,} handled by the servers, per round. "
        f"Hits per RPC = the program's kernel run_cnt / client RPCs (client programs) or "
        f"/ server RPCs (server programs); ns per hit = run_time_ns / run_cnt.",
        "",
        "| program | hits per RPC, off | hits per RPC, on | ns per hit, off | ns per hit, on "
        "| ns on / off |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"All hits per RPC: client {tot[False][0]:.3f} off, {tot[True][0]:.3f} on; server "
        f"{tot[False][1]:.3f} off, {tot[True][1]:.3f} on (client: start and end of every call; "
        f"server: above 2 where grpc calls writeStatus twice, off and on alike). The "
        f"same programs ran in every round: {'yes' if same else 'NO'}. Throughput of this "
        f"CPU-bound workload with bpf_stats on: {rps[False]:,.0f} RPC/s off, "
        f"{rps[True]:,.0f} on (ratio {rps[True] / rps[False]:.3f}). Exact per-RPC counts, off "
        f"and on, are asserted by `tests/test_traces_cost.py`.",
    ]


# -- b. agent CPU per span -------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scrape(agent: AgentProcess) -> dict[str, float]:
    """Spans made (span histogram counts), decoded records, OTLP counters, RSS."""
    out = {"made": 0.0, "events": 0.0, "exported": 0.0, "rss": 0.0}
    for fam in text_string_to_metric_families(agent.metrics_text()):
        for s in fam.samples:
            if s.name.endswith("_duration_seconds_count") and s.name.startswith(
                    ("rpc_", "http_")):
                out["made"] += s.value
            elif s.name == "pyhttp2probe_events_total":
                out["events"] = s.value
            elif s.name == EXPORTED:
                out["exported"] = s.value
            elif s.name == DROPPED:
                out[f"dropped_{s.labels['reason']}"] = s.value
            elif s.name == "process_resident_memory_bytes":
                out["rss"] = s.value
    out["dropped"] = sum(v for k, v in out.items() if k.startswith("dropped_"))
    out["backlog"] = out["made"] - out["exported"] - out["dropped"]
    return out


def _until(cond: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def _cpu_round(binary: Path, otlp: str | None) -> dict[str, float]:
    with ExitStack() as stack:
        wl = stack.enter_context(start_workload(binary, [*CPU_ARGS, "-hold"]))
        extra = ["--otlp-endpoint", otlp] if otlp else []
        agent = stack.enter_context(AgentProcess(["--pid", str(wl.pid), *extra]))
        assert agent.wait_value("pyhttp2probe_attached_processes", 1) == 1
        c0, t0 = _cpu_s(agent.pid), time.monotonic()
        time.sleep(IDLE_S)
        c1, t1 = _cpu_s(agent.pid), time.monotonic()
        s1 = _scrape(agent)
        wl.go()
        wl.wait_done(600)
        summary = wl.finish() or {}
        want = 2 * int(summary["total"])  # every client call and every server call
        # a scrape costs the agent ~2 ms of CPU: look twice a second, not more
        done = _until(lambda: _scrape(agent)["made"] - s1["made"] >= want, 30, step=0.5)
        if otlp:
            done = done and _until(lambda: _scrape(agent)["backlog"] <= 0, 60, step=0.5)
        c2, t2 = _cpu_s(agent.pid), time.monotonic()
        s2 = _scrape(agent)
        assert done, (want, s2)
    idle = (c1 - c0) / (t1 - t0)
    spans = s2["events"] - s1["events"]
    cpu = (c2 - c1) - idle * (t2 - t1)
    return {"us": 1e6 * cpu / spans, "spans": spans, "idle": idle,
            "rate": spans / float(summary["elapsed_s"]), "dropped": s2["dropped"],
            "exported": s2["exported"] - s1["exported"], "rss": s2["rss"],
            "made": s2["made"] - s1["made"]}


def _cpu(binary: Path) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {"metrics": [], "otlp": []}
    with Jaeger() as jaeger:
        for _ in range(ROUNDS_CPU):
            out["metrics"].append(_cpu_round(binary, None))
            out["otlp"].append(_cpu_round(binary, jaeger.otlp_url))
    return out


PARTS_PAIRS = 10_000


def _exporter_parts() -> dict[str, float]:
    """µs of one thread's CPU per span for each step of the traces path, in process, on
    PARTS_PAIRS client/server pairs shaped like one process calling itself (the server
    span ends first, inside its client span, on the same connection and stream)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from pyhttp2probe.otlp import OtlpSink
    from pyhttp2probe.spans import Span
    from pyhttp2probe.traces import TraceJoiner

    class _Null(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    spans = []
    for k in range(PARTS_PAIRS):
        t = 10**12 + k * 10_000
        common = {"pid": 4242, "connection": 0x10000 + k // 1000 * 8, "stream_id": 2 * k + 1,
                  "status_code": 0, "service": "pyhttp2probe.test.Work", "method": "Unary",
                  "full_method": "/pyhttp2probe.test.Work/Unary",
                  "server_address": "127.0.0.1", "server_port": 50051,
                  "service_name": "grpcwork", "client_address": "127.0.0.1",
                  "client_port": 40000 + k // 1000}
        spans.append(Span(kind="grpc_server", start_ns=t + 100, end_ns=t + 400, **common))
        spans.append(Span(kind="grpc_client", start_ns=t, end_ns=t + 500, **common))
    n = len(spans)
    out = {}
    joiner = TraceJoiner()
    t0 = time.thread_time()
    for i in range(0, n, 1000):  # the drain's batches
        joiner.write(spans[i:i + 1000])
    joiner.close()
    out["join"] = (time.thread_time() - t0) / n * 1e6
    assert joiner.joined["connection"] == PARTS_PAIRS, joiner.joined
    sink = OtlpSink("http://127.0.0.1:9/v1/traces", exporter=_Null())
    batches = [spans[i:i + DEFAULT_BATCH] for i in range(0, n, DEFAULT_BATCH)]
    t0 = time.thread_time()
    converted = [sink._convert(b) for b in batches]  # bench-only: the worker's step
    out["convert"] = (time.thread_time() - t0) / n * 1e6
    t0 = time.thread_time()
    wire = [encode_spans(c).SerializeToString() for c in converted]
    out["encode"] = (time.thread_time() - t0) / n * 1e6
    out["bytes"] = sum(map(len, wire)) / n
    sink.close()
    return out


def _cpu_section(res: dict[str, list[dict[str, float]]],
                 parts: dict[str, float]) -> list[str]:
    med = {k: statistics.median(r["us"] for r in rs) for k, rs in res.items()}
    rows = []
    for key, label in (("metrics", "metrics only (`run --pid`)"),
                       ("otlp", "traces on, OTLP to Jaeger (`run --pid --otlp-endpoint`)")):
        rs = res[key]
        each = ", ".join(f"{r['us']:.2f}" for r in rs)
        rows.append(
            f"| {label} | **{med[key]:.2f}** | {each} | "
            f"{statistics.median(r['rate'] for r in rs):,.0f} | "
            f"{statistics.median(r['idle'] for r in rs) * 100:.1f} % | "
            f"{sum(int(r['exported']) for r in rs):,} / {sum(int(r['made']) for r in rs):,} | "
            f"{sum(int(r['dropped']) for r in rs):,} | "
            f"{statistics.median(r['rss'] for r in rs) / 2**20:.0f} MiB |")
    share = med["otlp"] - med["metrics"]
    return [
        f"**b. The agent's CPU per span** ({ROUNDS_CPU} rounds each, alternating; the agent "
        f"as users run it, a process of its own). Workload: grpcwork `{' '.join(CPU_ARGS)}` "
        f"(client and server traced: two spans per RPC; handler calls joined under their "
        f"request). CPU per span = (the agent's utime+stime during the load, less its idle "
        f"rate measured over {IDLE_S:.0f} s just before) / records decoded; with traces on "
        f"the load ends when the last span was exported. Jaeger (all-in-one v1.76, in-memory) "
        f"runs on the same 2 cores throughout.",
        "",
        "| agent | µs CPU per span (median) | runs | spans/s | idle CPU | exported / made "
        "| dropped | RSS at end |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"The exporter's share (trace joining, conversion to SDK spans, protobuf encoding, "
        f"HTTP): **{share:.2f} µs per span** ({med['otlp'] / med['metrics']:.1f}× the "
        f"metrics-only cost). Where it goes, measured in process in the same run on "
        f"{2 * PARTS_PAIRS:,} spans shaped like these (a process calling itself; one thread's "
        f"CPU): joining {parts['join']:.1f} µs per span, conversion to SDK spans "
        f"{parts['convert']:.1f} µs, the SDK's protobuf encoding {parts['encode']:.1f} µs "
        f"({parts['bytes']:.0f} bytes per span); the rest is HTTP, the export thread's "
        f"wake-ups and the GIL between the drain and the export threads.",
    ]


# -- c. backend down, then up --------------------------------------------------------------
@dataclass
class Outage:
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    t_up: float = 0.0  # since load start: Jaeger's OTLP port accepts connections
    final: dict[str, float] = field(default_factory=dict)
    jaeger_spans: int = 0
    demo_total: int = 0
    closed_log: str = ""


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _outage(tmp: Path) -> Outage:
    demo = _private(tmp, f"bench-traces-{os.getpid()}-demo", "grpcdemo")
    port = free_port()  # nothing listens there yet
    res = Outage()
    stop = threading.Event()
    duration = DOWN_S + UP_S
    with ExitStack() as stack:
        wl = stack.enter_context(start_workload(
            demo, ["-qps", str(QPS), "-duration", f"{duration}s", "-errors", "0.05",
                   "-wait-start", "-hold"]))
        agent = stack.enter_context(AgentProcess(
            ["--pid", str(wl.pid), "--otlp-endpoint", f"http://127.0.0.1:{port}"]))
        assert agent.wait_value("pyhttp2probe_attached_processes", 1) == 1
        wl.go()
        t0 = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                res.samples.append((time.monotonic() - t0, _scrape(agent)))
                stop.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stack.callback(sampler.join)
        stack.callback(stop.set)
        time.sleep(max(0.0, t0 + DOWN_S - time.monotonic()))

        def watch_port() -> None:
            while not stop.is_set() and not _accepts(port):
                time.sleep(0.01)
            res.t_up = time.monotonic() - t0

        watcher = threading.Thread(target=watch_port, daemon=True)
        watcher.start()
        jaeger = stack.enter_context(Jaeger(port))
        wl.wait_done(duration + 120)
        res.demo_total = int((wl.finish() or {})["total"])
        watcher.join(5)
        # the load is over: every span made is exported or counted dropped
        assert _until(lambda: _scrape(agent)["made"] >= 2 * res.demo_total, 30)
        assert _until(lambda: _scrape(agent)["backlog"] <= 0, 60), _scrape(agent)
        time.sleep(1.0)
        stop.set()
        sampler.join()
        res.final = _scrape(agent)
        agent.stop()
        res.closed_log = next((ln for ln in agent.stderr.splitlines()
                               if "otlp export closed" in ln), "")

        def jaeger_has_all() -> bool:
            res.jaeger_spans = len(jaeger.spans(demo.name))
            return res.jaeger_spans >= res.final["exported"]

        _until(jaeger_has_all, 30, step=1.0)
        time.sleep(2.0)
        jaeger_has_all()  # nothing more arrives
    return res


def _outage_section(o: Outage) -> list[str]:
    s = o.samples
    down = [v for t, v in s if t < o.t_up]
    up = [v for t, v in s if t >= o.t_up]
    at_up = down[-1] if down else s[0][1]
    first = next((t for t, v in s if t >= o.t_up and v["exported"] > 0), float("nan"))
    # steady: from this sample on, the backlog stays under two batches
    steady = float("nan")
    for i, (t, _) in enumerate(s):
        if t >= o.t_up and all(w["backlog"] <= STEADY_BACKLOG for _, w in s[i:]):
            steady = t
            break
    max_backlog = max(v["backlog"] for _, v in s)
    rss_down = [v["rss"] for v in down]
    rss_up = [v["rss"] for v in up]
    f = o.final
    rows = []
    next_t = 0.0
    for t, v in s:
        if t + 1e-9 < next_t and not (down and v is at_up):
            continue
        next_t = t + 5.0
        phase = "down" if t < o.t_up else "up"
        rows.append(
            f"| {t:5.1f} | {phase} | {int(v['made']):,} | {int(v['exported']):,} | "
            f"{int(v.get('dropped_queue_full', 0)):,} | {int(v.get('dropped_export_failed', 0)):,} "
            f"| {int(v['backlog']):,} | {v['rss'] / 2**20:.1f} MiB |")
    after = {r: int(f.get(f"dropped_{r}", 0) - at_up.get(f"dropped_{r}", 0))
             for r in ("queue_full", "export_failed")}
    exact = f["made"] == f["exported"] + f["dropped"] and o.jaeger_spans == f["exported"]
    return [
        f"**c. Backend down, then up.** The agent (`run --pid --otlp-endpoint "
        f"http://127.0.0.1:PORT`) traces grpcdemo (client and server in one process, "
        f"{QPS} calls/s steady, so ~{2 * QPS:,} spans/s); nothing listens on PORT for the first "
        f"{DOWN_S:.0f} s, then Jaeger starts on it; the load runs {DOWN_S + UP_S:.0f} s in all. "
        f"Sampled from /metrics every {SAMPLE_S} s (a row per ~5 s here, and the last sample "
        f"before the port accepted connections). *made*: the span histograms' counts; "
        f"*backlog*: made − exported − dropped (the OTLP queue, at most {DEFAULT_QUEUE:,} "
        f"spans, plus the batch in flight, at most {DEFAULT_BATCH}, plus spans the joiner "
        f"holds for a parent).",
        "",
        "| s | backend | made | exported | dropped queue_full | dropped export_failed "
        "| backlog | agent RSS |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"- Backlog: at most **{int(max_backlog):,}** spans (bound {DEFAULT_QUEUE:,} + "
        f"{DEFAULT_BATCH}); agent RSS {min(rss_down) / 2**20:.1f}–{max(rss_down) / 2**20:.1f} MiB "
        f"while down, {min(rss_up) / 2**20:.1f}–{max(rss_up) / 2**20:.1f} MiB after.",
        f"- The port accepted connections {o.t_up:.2f} s after the load started; first span "
        f"delivered **{first - o.t_up:.2f} s** later (sampling step {SAMPLE_S} s); backlog "
        f"under {STEADY_BACKLOG:,} spans for good (steady delivery) **{steady - o.t_up:.2f} s** "
        f"after it.",
        f"- Counted exactly: at the end (load over, backlog 0) spans made "
        f"{int(f['made']):,} (= 2 × {o.demo_total:,} calls grpcdemo made: "
        f"{'yes' if f['made'] == 2 * o.demo_total else 'NO'}) = exported "
        f"{int(f['exported']):,} + dropped {int(f['dropped']):,} (queue_full "
        f"{int(f.get('dropped_queue_full', 0)):,}, export_failed "
        f"{int(f.get('dropped_export_failed', 0)):,}, shutdown "
        f"{int(f.get('dropped_shutdown', 0)):,}); Jaeger holds {o.jaeger_spans:,} spans of "
        f"it: {'exact' if exact else 'NOT EXACT'}.",
        f"- When the port opened, {int(at_up['made']):,} spans had been made: "
        f"{int(at_up.get('dropped_queue_full', 0)):,} refused by the full queue, "
        f"{int(at_up.get('dropped_export_failed', 0)):,} in batches whose export failed "
        f"(each retried for 5 s), {int(at_up['backlog']):,} held. After it: "
        f"{after['queue_full']:,} more refused by the queue (still full until the first "
        f"export went through) and {after['export_failed']:,} more in failed batches; every "
        f"other span was delivered.",
    ]


def run() -> str:
    from bench.run import machine

    jaeger_binary()  # built (or found) before anything is measured
    started = dt.datetime.now(dt.UTC)
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="bench-traces-") as d:
        tmp = Path(d)
        work = _private(tmp, f"bench-traces-{os.getpid()}-work", "grpcwork",
                        mod=f"grpcmods/{PIN}")
        hits = _hits(work)
        cpu = _cpu(work)
        parts = _exporter_parts()
        outage = _outage(tmp)
    load_after = _load()
    return "\n".join([
        "## What traces cost (`bench_traces`, issue 13)",
        "",
        f"Command: `python3 bench/run.py --splice bench_traces`. Run: {started:%Y-%m-%d %H:%M} "
        f"UTC on {machine()}; load average before / after: {load_before} and {load_after}. "
        f"Variants alternate within the run; read the ratios.",
        "",
        *_hits_section(hits),
        "",
        *_cpu_section(cpu, parts),
        "",
        *_outage_section(outage),
    ])


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT))
    print(run())
