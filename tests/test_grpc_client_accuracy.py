"""gRPC client tracing against real Go programs: spans equal the workload's ground truth.

Real BPF, real grpc-go (every pin under tests/go/grpcmods), no mocks. Each test starts the
grpcwork workload with -wait-start, attaches it to an Agent before any RPC, lets it run,
and compares the agent's client spans with the truth the workload wrote itself.
"""

from __future__ import annotations

import collections
import os
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyhttp2probe import Agent
from pyhttp2probe.agent import Target
from pyhttp2probe.spans import Span
from testkit.client_match import match
from testkit.gobuild import GoBuild, build
from testkit.workload import read_truth, start_workload

MODS = Path(__file__).resolve().parent / "go" / "grpcmods"
PINS = sorted(p.name for p in MODS.iterdir() if (p / "go.mod").exists()) if MODS.exists() else []
NEWEST = PINS[-1] if PINS else "none"

# Moderate size: 3 servers, 8 goroutines per connection, churn, every kind, server errors,
# client-side failures (incl. no server listening and deadline already past), nested calls.
MIXED = ["-servers", "3", "-goroutines", "8", "-rpcs", "40", "-churn", "2",
         "-errors", "0.2", "-client-failures", "0.05", "-nested", "0.1"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for BPF")


def _binary(pin: str, ldflags: str = "") -> Path:
    return build(GoBuild(src="grpcwork", mod=f"grpcmods/{pin}", ldflags=ldflags))


def _client_spans(agent: Agent) -> list[Span]:
    return [s for s in agent.spans(timeout=0.2) if s.kind == "grpc_client"]


@dataclass
class ClientRun:
    """What the agent held when the workload was done (read before it closed)."""

    stats: dict[str, int]
    target: Target | None
    unmatched: int
    metrics: Any


def run_traced(binary: Path, args: list[str], tmp_path: Path, stats: bool = False,
               **agent_kw: Any) -> tuple[list[Span], list[dict[str, Any]], dict[str, int],
                                         ClientRun]:
    """Run the workload under an Agent; returns (client spans, truth, run counts, run)."""
    from libbpf_loader import bpf_stats_enabled

    truth_path = tmp_path / f"truth-{time.monotonic_ns()}.jsonl"
    runs: dict[str, int] = {}
    with bpf_stats_enabled(), start_workload(binary, [*args, "-truth", str(truth_path),
                                                      "-hold"]) as wl:
        assert wl.pid is not None
        with Agent(**agent_kw) as agent:
            agent.attach(wl.pid)
            wl.go()
            wl.wait_done(180)
            agent.drain()
            if stats:
                runs = agent.run_counts()
            run = ClientRun(agent.stats(), agent.target(wl.pid), 0, agent.metrics)
        run.unmatched = agent.unmatched
        wl.finish()
    return _client_spans(agent), read_truth(truth_path), runs, run


def _assert_exact(spans: list[Span], truth: list[dict[str, Any]], what: str) -> None:
    res = match(spans, truth)
    detail = "\n".join([f"lost: {r}" for r in res.lost[:5]]
                       + [f"extra: {s}" for s in res.extra[:5]])
    assert res.exact, f"{what}: {res.summary()}\n{detail}"


@pytest.mark.parametrize("pin", PINS)
def test_client_spans_match_ground_truth_one_to_one(pin: str, tmp_path: Path) -> None:
    spans, truth, _, run = run_traced(_binary(pin), MIXED, tmp_path)
    kinds = collections.Counter(r["kind"] for r in truth)
    assert set(kinds) >= {"unary", "server_stream", "client_stream", "bidi"}, kinds
    assert any(r["nested"] for r in truth) and any(r["churn"] for r in truth)
    assert {r["failure"] for r in truth} >= {"unavailable", "deadline_past"}
    _assert_exact(spans, truth, f"grpc {pin}")
    st = run.stats
    assert st["grpc_client.ringbuf_full"] == 0 and st["grpc_client.bad_read"] == 0, st
    assert run.unmatched == 0
    # every version's end took the connection from its one read of the attempt (csAttempt.t
    # or .transport), not from a read of its own: the spans above prove it is the right one
    cfg = _client_config(run.target)
    assert (cfg["aw_on"], cfg["aw_ct_on"]) == (1, 1), pin


def _client_config(target: Target | None) -> Any:
    """The grpc_client_config the agent wrote for the target, decoded."""
    import numpy as np

    from pyhttp2probe.records import load_layout

    assert target is not None
    (entry,) = [e for _, e in target.configs if e.map == "grpc_client_config"]
    return np.frombuffer(entry.value, dtype=load_layout().dtype("grpc_client_config"))[0]


def test_pre_stream_failures_are_spans_with_unavailable_and_deadline(tmp_path: Path) -> None:
    args = ["-servers", "2", "-goroutines", "4", "-rpcs", "30", "-client-failures", "0.5",
            "-mix", "unary=3,server_stream=1,bidi=1"]
    spans, truth, _, _ = run_traced(_binary(NEWEST), args, tmp_path)
    _assert_exact(spans, truth, "pre-stream failures")
    no_stream = [s for s in spans if "no_stream" in s.flags]
    codes = collections.Counter(s.status_code for s in no_stream)
    assert codes[14] > 0 and codes[4] > 0, codes
    failures = collections.Counter((r["failure"], r["code"]) for r in truth if r["failure"])
    assert failures[("unavailable", 14)] > 0 and failures[("deadline_past", 4)] > 0, failures
    assert all(s.stream_id == 0 and s.connection == 0 for s in no_stream)
    assert all(s.server_port > 0 for s in no_stream), "peer parsed from the dial target"


@pytest.mark.parametrize("kind", ["unary", "server_stream", "client_stream", "bidi"])
def test_probe_hits_per_rpc(kind: str, tmp_path: Path) -> None:
    """Kernel run counts of the client programs per RPC, healthy calls only: 2 for every
    kind (start and end)."""
    args = ["-servers", "2", "-goroutines", "4", "-rpcs", "50", "-mix", f"{kind}=1",
            "-errors", "0", "-client-failures", "0", "-nested", "0"]
    spans, truth, runs, _ = run_traced(_binary(NEWEST), args, tmp_path, stats=True)
    _assert_exact(spans, truth, f"{kind} only")
    # The connection cache's probe (the transport constructor's RETs) runs once per
    # transport made (the calls ran on some of them), never per call.
    conns = {s.connection for s in spans if s.connection}
    assert len(conns) <= runs["grpc_client_conn"] <= 0.05 * len(truth), (runs, len(conns))
    client = {k: v for k, v in runs.items()
              if k.startswith("grpc_client_") and k != "grpc_client_conn"}
    per_rpc = sum(client.values()) / len(truth)
    print(f"\nprobe hits per {kind} RPC (grpc {NEWEST}): {per_rpc:.2f} {client}, "
          f"per connection: {runs['grpc_client_conn']}")
    # Streaming too: the context watcher's second finish() returns before the probed CALL.
    assert per_rpc == pytest.approx(2.0), client
    assert runs["grpc_client_end"] == 0, "no call ended before its first attempt"


SHOULD_RETRY_PIN = "v1.72.2"  # grpc-go v1.50..v1.77: stream-less failures end at shouldRetry


@pytest.mark.parametrize("pin", [NEWEST, SHOULD_RETRY_PIN])
@pytest.mark.parametrize("kind", ["unary", "bidi"])
def test_probe_hits_per_failing_rpc(kind: str, pin: str, tmp_path: Path) -> None:
    """Calls ending in a server error, or failing on the client (no server, deadline already
    past, cancelled, deadline): 2 client hits each too from grpc-go v1.78 (newClientStream's
    cleanup ends the calls that never got a stream, and no probe runs for the others).
    Before, shouldRetry's RETs end those, and every call ending in an error with a stream
    passes them too: one more (ignored) hit each, exactly."""
    args = ["-servers", "2", "-goroutines", "4", "-rpcs", "50", "-mix", f"{kind}=1",
            "-errors", "0.4", "-client-failures", "0.3", "-nested", "0"]
    spans, truth, runs, _ = run_traced(_binary(pin), args, tmp_path, stats=True)
    _assert_exact(spans, truth, f"failing {kind}")
    failures = collections.Counter(r["failure"] for r in truth if r["failure"])
    assert {"unavailable", "deadline_past"} <= set(failures), failures
    assert sum(1 for r in truth if r["code"] != 0) > 0.4 * len(truth)
    client = {k: v for k, v in runs.items()
              if k.startswith("grpc_client_") and k != "grpc_client_conn"}
    print(f"\nprobe hits per failing {kind} RPC (grpc {pin}): "
          f"{sum(client.values()) / len(truth):.2f} {client} {dict(failures)}")
    stream_less = failures["unavailable"] + failures["deadline_past"]
    if pin == SHOULD_RETRY_PIN:
        # the calls that got a stream: their spans carry its id (matched one to one with the
        # truth above); a cancel or deadline may strike before or after the stream exists
        with_stream = sum(1 for s in spans if s.status_code != 0 and s.stream_id)
        server_errors = sum(1 for r in truth if r["code"] != 0 and not r["failure"])
        assert server_errors <= with_stream <= sum(
            1 for r in truth if r["code"] != 0
            and r["failure"] not in ("unavailable", "deadline_past")), (with_stream, failures)
        assert sum(client.values()) == 2 * len(truth) + with_stream, client
        assert client["grpc_client_fail_cleanup"] == 0, client
        return
    assert sum(client.values()) == 2 * len(truth), client
    assert client["grpc_client_fail"] == client["grpc_client_end"] == 0, client
    assert client["grpc_client_fail_cleanup"] >= stream_less, client


def test_without_call_sites_calls_end_at_finish_entry(tmp_path: Path) -> None:
    """A binary whose call sites are not found (a future grpc-go that inlines them) falls
    back to finish()'s entry and shouldRetry's RETs: spans as exact, a streaming call's
    context watcher one more (ignored) hit, the fallback said in the target's notes."""
    import dataclasses

    from pyhttp2probe.probes import all_paths

    paths = tuple(dataclasses.replace(p, calls=()) if p.name == "grpc_client" else p
                  for p in all_paths())
    spans, truth, runs, run = run_traced(_binary(NEWEST), MIXED, tmp_path, stats=True,
                                         paths=paths)
    _assert_exact(spans, truth, "finish() entry")
    assert run.unmatched == 0
    assert runs["grpc_client_end_attempt"] == runs["grpc_client_fail_cleanup"] == 0, runs
    # every streaming call that got a stream ends twice at finish()'s entry
    streamed = sum(1 for r in truth if r["kind"] != "unary" and r["failure"] not in (
        "unavailable", "deadline_past"))
    assert runs["grpc_client_end"] >= len(truth) - runs["grpc_client_fail"] + streamed, runs
    assert run.target is not None
    assert any("finish()'s entry" in n for n in run.target.paths["grpc_client"].notes)


TABLE = Path(__file__).resolve().parent.parent / "pyhttp2probe" / "data" / "offsets_table.json"


@pytest.mark.skipif(not TABLE.exists(), reason="offsets table not generated yet "
                    "(ci/gen_offsets_table.py): stripped binaries have no DWARF")
def test_stripped_binary_is_traced_the_same(tmp_path: Path) -> None:
    binary = _binary(NEWEST, ldflags="-s -w")
    spans, truth, _, run = run_traced(binary, MIXED, tmp_path)
    _assert_exact(spans, truth, "stripped")
    assert run.target is not None and "grpc_client" in run.target.paths
    assert run.target.plan.offsets_source == "table"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_endpoint_histogram_counts_per_method_and_code(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        spans, truth, _, run = run_traced(_binary(NEWEST), MIXED, tmp_path,
                                             registry=registry)
        # close() unregisters the collector; re-register it to scrape the final state.
        registry.register(run.metrics)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        server.shutdown()
        thread.join(timeout=5)
    got: collections.Counter[tuple[str, str]] = collections.Counter()
    buckets = set()
    for fam in text_string_to_metric_families(body.decode()):
        if fam.name != "rpc_client_duration_seconds":
            continue
        for sample in fam.samples:
            lab = sample.labels
            if sample.name.endswith("_count"):
                assert lab["rpc_system"] == "grpc" and lab["service_name"]
                full = f"/{lab['rpc_service']}/{lab['rpc_method']}"
                got[(full, lab["rpc_grpc_status_code"])] += int(sample.value)
            elif sample.name.endswith("_bucket"):
                buckets.add(float(lab["le"]))
    want = collections.Counter((r["method"], str(r["code"])) for r in truth)
    assert got == want
    assert min(buckets) <= 50e-6 and 10.0 in buckets
    assert len(spans) == len(truth)
