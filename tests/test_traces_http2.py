"""Traces through HTTP/2 servers: a call made by an HTTP/2 handler with its request's context
is a child of that request's server span (the context join, bpf_src/trace_ctx.h), for
net/http's own HTTP/2 and x/net's, whether the call is gRPC or HTTP/2; the gRPC leaf's server
spans are children of those calls (both ends traced in one process); a request that came with
a W3C traceparent header is that trace's child, whatever the size of its header map. One
process (tests/go/h2nest), its ground truth written by itself."""

from __future__ import annotations

import collections
import tempfile
import time
from pathlib import Path

import pytest

from pyhttp2probe import Agent
from pyhttp2probe.spans import Span
from pyhttp2probe.traces import parse_traceparent
from testkit.gobuild import GoBuild, build
from testkit.workload import read_truth, start_workload

FRONT = {"nethttp": "net/http", "xnet": "x/net/http2"}  # truth's front -> span.service


def _run(binary: Path, args: list[str]) -> tuple[list[Span], list[dict]]:
    """Every span of one run of `binary` traced with traces on, and its ground truth."""
    with tempfile.TemporaryDirectory() as tmp:
        truth_path = Path(tmp) / "truth.jsonl"
        with Agent(trace_context=True) as agent:
            with start_workload(binary, [*args, "-truth", str(truth_path), "-hold"]) as wl:
                agent.attach(wl.proc.pid)
                wl.go()
                wl.wait_done(120)
                wl.finish()
            time.sleep(0.3)
            agent.drain()
            agent.close()
            spans = list(agent.spans(timeout=0.1))
            assert agent.joiner is not None and agent.joiner.pending == 0
        return spans, read_truth(truth_path)


def test_calls_of_http2_handlers_are_children_of_their_request_spans() -> None:
    spans, truth = _run(build(GoBuild(src="h2nest")), ["-requests", "240", "-concurrency", "8"])
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans) and all(len(s.trace_id) == 32 for s in spans)
    children: dict[str, list[Span]] = collections.defaultdict(list)
    for s in spans:
        if s.parent_span_id:
            children[s.parent_span_id].append(s)
    fronts = [s for s in spans if s.kind == "http_server" and s.full_method == "/front"]
    assert len(fronts) == len(truth)

    def shape(service: str, status: int, tp: str, kids: list[tuple[str, int]]) -> tuple:
        parsed = parse_traceparent(tp)
        return (service, status, parsed, tuple(sorted(kids)))

    got = collections.Counter()
    for f in fronts:  # its client (HTTP/2) is not joined: a root, or under its traceparent
        kids = []
        for c in children[f.span_id]:
            assert c.trace_id == f.trace_id and f.start_ns <= c.start_ns <= f.end_ns
            if c.kind == "grpc_client":
                assert c.full_method == "/nest.Leaf/Get"
                kids.append(("grpc", c.status_code))
            else:
                assert c.kind == "http_client" and c.full_method == "/leaf", c
                kids.append(("http", c.status_code))
        got[shape(f.service, f.status_code,
                  f"00-{f.trace_id}-{f.parent_span_id}-01" if f.parent_span_id else "",
                  kids)] += 1
    want = collections.Counter(
        shape(FRONT[t["front"]], t["status"], t["traceparent"],
              [(k["kind"], k["status"]) for k in t["children"] or []])
        for t in truth)
    assert got == want
    assert {k[0] for k in want} == set(FRONT.values())
    assert any(len(k[3]) >= 3 for k in want)
    assert sum(1 for t in truth if t["traceparent"]) >= len(truth) // 5
    assert max(t["headers"] for t in truth if t["traceparent"]) > 16  # several groups/buckets

    # every leaf call was made by a front handler: it has a front parent; the gRPC leaf's
    # server spans are children of those calls, the HTTP/2 leaf's are not joined (roots)
    front_ids = {f.span_id for f in fronts}
    calls = [s for s in spans if s.kind in ("grpc_client", "http_client")
             and s.full_method != "/front"]
    assert calls and all(c.parent_span_id in front_ids for c in calls)
    assert len(calls) == sum(len(t["children"] or []) for t in truth)
    for s in spans:
        if s.kind == "grpc_server":
            parent = by_id[s.parent_span_id]
            assert parent.kind == "grpc_client" and parent.trace_id == s.trace_id
            assert (parent.stream_id, parent.status_code) == (s.stream_id, s.status_code)
        if s.kind == "http_server" and s.full_method == "/leaf":
            assert s.parent_span_id == ""


@pytest.mark.parametrize("toolchain", ["go1.22.12", None], ids=["go1.22-buckets", "swiss"])
def test_an_incoming_traceparent_is_read_from_header_maps_of_every_size(
        toolchain: str | None) -> None:
    """Go <= 1.23 keeps a map in buckets, later Go in swiss tables: with 1 to 44 header
    fields, every request that carried a traceparent is that trace's child, the others
    roots."""
    env = (("GOTOOLCHAIN", toolchain),) if toolchain else ()
    spans, truth = _run(build(GoBuild(src="h2tp", env=env)), ["-requests", "240"])
    spans = [s for s in spans if s.kind == "http_server"]
    assert len(spans) == len(truth) == 240
    got = collections.Counter((s.trace_id, s.parent_span_id) if s.parent_span_id else None
                              for s in spans)
    want = collections.Counter(parse_traceparent(t["traceparent"]) for t in truth)
    assert got == want
    sizes = {t["headers"] for t in truth if t["traceparent"]}
    assert min(sizes) <= 4 and max(sizes) >= 40 and len(sizes) >= 30
