"""Shared pieces of the gRPC-server and HTTP/2 tests: run a workload under an Agent with
BPF run counts on, and match spans to ground truth one to one.

Matching is a bipartite matching (Kuhn's augmenting paths) between truth lines and spans
that agree on a key and whose times are compatible, so a span can serve one truth line at
most: lost, duplicated or misattributed spans all show up as unmatched on one side.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from libbpf_loader import bpf_stats_enabled
from pyhttp2probe import Agent
from pyhttp2probe.spans import Span
from testkit.workload import Workload

CACHE = Path(os.environ.get("TESTKIT_TOOL_CACHE",
                            Path.home() / ".cache" / "pyhttp2probe" / "tools"))
GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.93.0"
# grpcservehttp (gRPC via ServeHTTP, plain HTTP/2 on h2c and TLS) builds against these pins.
SERVEHTTP_MOD = "grpcmods/v1.85.0"


def read_ports(path: Path, timeout_s: float = 5.0) -> tuple[int, int, int]:
    """(grpc port, h2c port, TLS port) that grpcservehttp wrote before READY."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            g, h, t = (int(x) for x in path.read_text().split())
            return g, h, t
        time.sleep(0.05)
    raise AssertionError(f"no ports in {path}")


@dataclass
class TracedRun:
    """What one traced workload run produced."""

    spans: list[Span]
    run_counts: dict[str, int]
    stats: dict[str, int]
    summary: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str, include_unmatched: bool = False) -> list[Span]:
        return [s for s in self.spans if s.kind == kind
                and (include_unmatched or "unmatched" not in s.flags)]


def traced(wl: Workload, during: Callable[[], Any] | None = None,
           settle_s: float = 0.3, on_agent: Callable[[Agent], None] | None = None,
           **agent_kw: Any) -> TracedRun:
    """Attach to a started workload (-wait-start -hold), run it, collect every span.

    `during` runs instead of the workload's own go/DONE when the load comes from outside
    (h2load, ghz); its return value lands in TracedRun.extra["during"]. `agent_kw` go to
    the Agent (paths=..., say).
    """
    assert wl.pid is not None
    extra: dict[str, Any] = {}
    with Agent(**agent_kw) as agent, bpf_stats_enabled():
        if on_agent is not None:  # a test's look inside (e.g. a spy on the decoder)
            on_agent(agent)
        agent.attach(wl.pid)
        if during is None:
            wl.go()
            wl.wait_done()
        else:
            extra["during"] = during()
        time.sleep(settle_s)
        agent.drain()
        extra["run_stats"] = agent.run_stats()
        counts = agent.run_counts()  # probe hits (run_stats: the agent's own runs too)
        stats = agent.stats()
        extra["in_flight"] = agent.in_flight()
        registry = CollectorRegistry()
        registry.register(agent.metrics)
        extra["metrics"] = generate_latest(registry).decode()
    spans = list(agent.spans(timeout=0.1))
    summary = wl.finish()
    return TracedRun(spans, counts, stats, summary, extra)


# The workloads map Go's clock to CLOCK_MONOTONIC through one raw clock_gettime syscall
# bracketed by time.Now(); on this nested VM that anchor is off by a few µs (seen: 1.9 µs).
CLOCK_SLACK_NS = 50_000


def span_wraps_handler(t: dict[str, Any], s: Span) -> bool:
    """A gRPC server span (operateHeaders, or the HTTP/2 request's start through ServeHTTP →
    writeStatus) contains its handler's interval...

    ...except when a stream op failed inside the handler (truth `op_failed`): grpc then
    writes the status from inside that RecvMsg/SendMsg, so the span rightly ends within
    the handler, however late the handler itself returns.
    """
    if s.start_ns > t["server_start_ns"] + CLOCK_SLACK_NS:
        return False
    if t.get("op_failed"):
        return t["server_start_ns"] <= s.end_ns <= t["server_end_ns"] + CLOCK_SLACK_NS
    return t["server_end_ns"] <= s.end_ns + CLOCK_SLACK_NS


# Calls the client abandons (cancel, deadline) can end on the server before any handler
# ran: real server RPCs without a server truth line, and only with these codes.
NO_HANDLER_CODES = {1, 4}


def assert_grpc_server_exact(run: TracedRun, server: Sequence[dict[str, Any]],
                             client: Sequence[dict[str, Any]]) -> list[Span]:
    """The run's gRPC server spans against the workload's server truth (and, for calls the
    client abandoned, its client truth): one to one, identities never overlapping, nothing
    unmatched or unreadable. Returns the spans."""
    spans = run.of_kind("grpc_server")
    assert len(run.of_kind("grpc_server", include_unmatched=True)) == len(spans), run.stats
    assert run.stats["grpc_server.unmatched_end"] == 0
    assert run.stats["grpc_server.ringbuf_full"] == 0
    assert run.stats["grpc_server.bad_read"] == 0
    # identity: no two spans share (pid, transport, stream id) at overlapping times
    by_key: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    for s in spans:
        by_key.setdefault((s.pid, s.connection, s.stream_id), []).append((s.start_ns, s.end_ns))
    for ivs in by_key.values():
        ivs.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(ivs))
    pairs, lost, extra = match_one_to_one(
        server, spans,
        truth_key=lambda t: (t["method"], t["code"], t["server_port"]),
        span_key=lambda s: (s.full_method, s.status_code, s.server_port),
        compatible=span_wraps_handler)
    extras = [spans[j] for j in extra]
    assert not lost, (_lost_report([server[i] for i in lost], spans, extras)
                      + f"\nstats {run.stats}\nin flight {run.extra.get('in_flight')}")
    assert all(s.status_code in NO_HANDLER_CODES for s in extras), extras[:5]
    abandoned = sum(1 for c in client if c["failure"] in ("cancel", "deadline"))
    assert len(extras) <= abandoned
    assert len(pairs) == len(server)
    return spans


def _lost_report(lost: Sequence[dict[str, Any]], spans: Sequence[Span],
                 extras: Sequence[Span]) -> str:
    """What a failed one-to-one match needs to be diagnosed from a single run (a rare loss
    may not come back): each lost truth line, the spans of its (method, code, port) within
    10 ms of its handler with their times relative to it (matched or not), and every span
    left over."""
    def rel(t: dict[str, Any], s: Span) -> str:
        return (f"start {s.start_ns - t['server_start_ns']:+,} ns end "
                f"{s.end_ns - t['server_end_ns']:+,} ns conn {s.connection:#x} "
                f"stream {s.stream_id} flags {s.flags}")

    lines = [f"{len(lost)} truth line(s) without a span, {len(extras)} span(s) left over"]
    for t in lost[:5]:
        lines.append(f"lost: {t}")
        near = [s for s in spans
                if (s.full_method, s.status_code, s.server_port)
                == (t["method"], t["code"], t["server_port"])
                and abs(s.start_ns - t["server_start_ns"]) < 10_000_000]
        lines += [f"  same key nearby: {rel(t, s)}" for s in near[:10]]
    lines += [f"left over: {s}" for s in extras[:10]]
    return "\n".join(lines)


def match_one_to_one(truth: Sequence[dict[str, Any]], spans: Sequence[Span],
                     truth_key: Callable[[dict[str, Any]], Hashable],
                     span_key: Callable[[Span], Hashable],
                     compatible: Callable[[dict[str, Any], Span], bool],
                     ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Maximum matching truth[i] <-> spans[j] with equal keys and compatible times.

    Returns (pairs, unmatched truth indexes, unmatched span indexes).
    """
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    by_key: dict[Hashable, list[int]] = defaultdict(list)
    for j, s in enumerate(spans):
        by_key[span_key(s)].append(j)
    cands = [[j for j in by_key.get(truth_key(t), ()) if compatible(t, spans[j])]
             for t in truth]
    owner: dict[int, int] = {}  # span index -> truth index

    def assign(i: int, seen: set[int]) -> bool:
        for j in cands[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or assign(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in sorted(range(len(truth)), key=lambda i: len(cands[i])):
        assign(i, set())
    pairs = sorted((ti, j) for j, ti in owner.items())
    got_t = {ti for ti, _ in pairs}
    got_s = {j for _, j in pairs}
    return (pairs, [i for i in range(len(truth)) if i not in got_t],
            [j for j in range(len(spans)) if j not in got_s])


def ghz_binary() -> Path:
    """Build ghz (a Go gRPC load tool) from the Go module proxy into the cache, once."""
    out = CACHE / "ghz"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(CACHE), "CGO_ENABLED": "0", "GOFLAGS": ""}
    subprocess.run(["go", "install", GHZ_MODULE], check=True, env=env, cwd=str(CACHE),
                   capture_output=True, timeout=900)
    return out
