"""gRPC records staged per CPU (bpf_src/stage.h) and sent packed, 8 to a reservation: the
client's and the server's, traces off.

What staging must never change: every call still one span, none repeated, none waiting for
more traffic to push it out (the agent flushes each CPU's stage before it drains), and a
stage another program holds sends the record the ordinary way.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from libbpf_loader import bpf_stats_enabled
from pyhttp2probe import Agent
from pyhttp2probe.spans import Span
from testkit.client_match import match
from testkit.gobuild import GoBuild, build
from testkit.workload import read_truth, start_workload

FEW = ["-servers", "1", "-goroutines", "1", "-rpcs", "5", "-nested", "0", "-churn", "0",
       "-client-failures", "0", "-delay-max", "1ms"]
BUSY = (1).to_bytes(8, "little")


def _binary() -> Path:
    return build(GoBuild(src="grpcwork", mod="grpcmods/v1.85.0"))


STAGES = {"grpc_client": "client_stage", "grpc_server": "server_stage"}


def _stage_values(agent: Agent, path: str) -> list[bytes]:
    values = agent._objects[path].map(STAGES[path]).lookup_percpu(0)
    assert values is not None
    return values


def _calls(rows: list[dict[str, Any]]) -> Counter[tuple[str, int]]:
    return Counter((r["method"], r["code"]) for r in rows)


def _spans(spans: list[Span]) -> Counter[tuple[str, int]]:
    return Counter((s.full_method, s.status_code) for s in spans)


def test_a_few_calls_then_silence_reach_the_sink_without_more_traffic(tmp_path: Path) -> None:
    """5 calls, fewer than a stage holds: no stage fills, so only the agent's flush before
    its drain sends them; they arrive on the drain thread's own polls (no drain() here)."""
    ct, st = tmp_path / "client.jsonl", tmp_path / "server.jsonl"
    with start_workload(_binary(), [*FEW, "-truth", ct, "-server-truth", st, "-hold"]) as wl, \
            Agent(poll_ms=100) as agent, bpf_stats_enabled():
        agent.attach(wl.pid)
        wl.go()
        wl.wait_done(60)
        done = time.monotonic()
        got: dict[str, list[Span]] = {"grpc_client": [], "grpc_server": []}
        for span in agent.spans(timeout=1.0):
            got[span.kind].append(span)
            if sum(map(len, got.values())) == 10:
                break
        waited = time.monotonic() - done
        runs = agent.run_stats()
        wl.finish()
    res = match(got["grpc_client"], read_truth(ct))
    assert res.exact and len(got["grpc_client"]) == 5, res.summary()
    assert _spans(got["grpc_server"]) == _calls(read_truth(st)) and len(got["grpc_server"]) == 5
    # they were staged, and the flushes sent them
    assert runs["flush_client_stage"][0] > 0 and runs["flush_server_stage"][0] > 0
    assert waited < 1.0


def test_a_claimed_stage_sends_each_record_directly(tmp_path: Path) -> None:
    """Every CPU's stages held (their busy word set from user space, as a program this one
    interrupted would hold them): each end sends its record alone, the flushers send none,
    and the spans are exactly the calls."""
    ct, st = tmp_path / "client.jsonl", tmp_path / "server.jsonl"
    args = ["-servers", "2", "-goroutines", "4", "-rpcs", "20", "-nested", "0",
            "-truth", ct, "-server-truth", st, "-hold"]
    with start_workload(_binary(), args) as wl, Agent() as agent:
        for path, name in STAGES.items():
            held = [BUSY + v[8:] for v in _stage_values(agent, path)]
            agent._objects[path].map(name).update_percpu(0, held)
        agent.attach(wl.pid)
        wl.go()
        wl.wait_done(60)
        agent.drain()
        after = [v for path in STAGES for v in _stage_values(agent, path)]
        stats = agent.stats()
        spans = list(agent.spans(timeout=0.5))
        wl.finish()
    assert all(v[:8] == BUSY and v[12:16] == bytes(4) for v in after)  # never staged
    res = match([s for s in spans if s.kind == "grpc_client"], read_truth(ct))
    assert res.exact, res.summary()
    assert _spans([s for s in spans if s.kind == "grpc_server"]) == _calls(read_truth(st))
    for side in STAGES:
        assert stats[f"{side}.ringbuf_full"] == 0 and stats[f"{side}.unmatched_end"] == 0
