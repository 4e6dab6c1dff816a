"""gRPC client records staged per CPU (bpf_src/stage.h) and sent packed, 8 to a reservation.

What staging must never change: every call still one span, none repeated, none waiting for
more traffic to push it out (the agent flushes each CPU's stage before it drains), and a
stage another program holds sends the record the ordinary way.
"""

from __future__ import annotations

import time
from pathlib import Path

from libbpf_loader import bpf_stats_enabled
from pyhttp2probe import Agent
from testkit.client_match import match
from testkit.gobuild import GoBuild, build
from testkit.workload import read_truth, start_workload

FEW = ["-servers", "1", "-goroutines", "1", "-rpcs", "5", "-nested", "0", "-churn", "0",
       "-client-failures", "0", "-delay-max", "1ms"]
BUSY = (1).to_bytes(8, "little")


def _binary() -> Path:
    return build(GoBuild(src="grpcwork", mod="grpcmods/v1.85.0"))


def _stage_values(agent: Agent) -> list[bytes]:
    values = agent._objects["grpc_client"].map("client_stage").lookup_percpu(0)
    assert values is not None
    return values


def test_a_few_calls_then_silence_reach_the_sink_without_more_traffic(tmp_path: Path) -> None:
    """5 calls, fewer than a stage holds: no stage fills, so only the agent's flush before
    its drain sends them; they arrive on the drain thread's own polls (no drain() here)."""
    truth = tmp_path / "client.jsonl"
    with start_workload(_binary(), [*FEW, "-truth", truth, "-hold"]) as wl, \
            Agent(poll_ms=100) as agent, bpf_stats_enabled():
        agent.attach(wl.pid)
        wl.go()
        wl.wait_done(60)
        done = time.monotonic()
        got = []
        for span in agent.spans(timeout=1.0):
            if span.kind == "grpc_client":
                got.append(span)
            if len(got) == 5:
                break
        waited = time.monotonic() - done
        flushes = agent.run_stats().get("flush_client_stage", (0, 0))[0]
        wl.finish()
    res = match(got, read_truth(truth))
    assert res.exact and len(got) == 5, res.summary()
    assert flushes > 0  # they were staged, and the flush sent them
    assert waited < 1.0


def test_a_claimed_stage_sends_each_record_directly(tmp_path: Path) -> None:
    """Every CPU's stage held (its busy word set from user space, as a program this one
    interrupted would hold it): each end sends its record alone, the flusher sends none,
    and the spans are exactly the calls."""
    truth = tmp_path / "client.jsonl"
    args = ["-servers", "2", "-goroutines", "4", "-rpcs", "20", "-nested", "0",
            "-truth", truth, "-hold"]
    with start_workload(_binary(), args) as wl, Agent() as agent:
        stage = agent._objects["grpc_client"].map("client_stage")
        held = [BUSY + v[8:] for v in _stage_values(agent)]
        stage.update_percpu(0, held)
        agent.attach(wl.pid)
        wl.go()
        wl.wait_done(60)
        agent.drain()
        after = _stage_values(agent)
        stats = agent.stats()
        spans = [s for s in agent.spans(timeout=0.5) if s.kind == "grpc_client"]
        wl.finish()
    assert all(v[:8] == BUSY and v[12:16] == bytes(4) for v in after)  # never staged
    res = match(spans, read_truth(truth))
    assert res.exact, res.summary()
    assert stats["grpc_client.ringbuf_full"] == 0 and stats["grpc_client.unmatched_end"] == 0
