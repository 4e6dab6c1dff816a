"""gRPC server RPCs rejected before any handler runs (tests/go/grpcreject: an InTapHandle
that refuses two methods) are counted, not lost (DESIGN.md rule 7).

grpc-go answers them from the loopy writer (earlyAbortStreamHandler) and never calls
handleStream or writeStatus, so they have no server span: the tracer must count them in
pyhttp2probe_grpc_server_rejected_total by status code, while every accepted call keeps
exactly one server span and 2 uprobe hits. Real BPF against the real program. Pins cover
both layouts of earlyAbortStream: status *Status (< v1.79) and pre-built header fields hf
(>= v1.79); the stripped build reads them from the shipped offsets table, not DWARF.
"""

from __future__ import annotations

import collections
import os
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.gobuild import GoBuild, build
from testkit.traced import TracedRun, traced
from testkit.workload import start_workload

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for BPF")

OK, DENIED, BUSY = 40, 7, 5  # PermissionDenied = 7, ResourceExhausted = 8
# (pin, stripped)
BUILDS = [("v1.40.0", False), ("v1.83.2", False), ("v1.85.0", False), ("v1.85.0", True)]


def _run(pin: str, stripped: bool) -> TracedRun:
    binary = build(GoBuild(src="grpcreject", mod=f"grpcmods/{pin}",
                           ldflags="-s -w" if stripped else ""))
    args = ["-ok", str(OK), "-denied", str(DENIED), "-busy", str(BUSY), "-hold"]
    with start_workload(binary, args) as wl:
        return traced(wl)


@pytest.fixture(scope="module", params=BUILDS, ids=lambda b: f"{b[0]}{'-stripped' * b[1]}")
def run(request: pytest.FixtureRequest) -> TracedRun:
    return _run(*request.param)


def _rejected(metrics: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(metrics):
        if fam.name == "pyhttp2probe_grpc_server_rejected":
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[s.labels["rpc_grpc_status_code"]] = s.value
    return out


def test_rejected_rpcs_are_counted_by_code(run: TracedRun) -> None:
    assert run.summary is not None and run.summary["code_mismatch"] == 0, run.summary
    assert _rejected(run.extra["metrics"]) == {"7": DENIED, "8": BUSY}
    for k in ("bad_read", "ringbuf_full", "no_config"):
        assert run.stats[f"grpc_server.{k}"] == 0, run.stats


def test_accepted_rpcs_keep_one_span_and_two_hits(run: TracedRun) -> None:
    server = [s for s in run.spans if s.kind == "grpc_server"]
    assert not [s for s in server if s.flags], server[:3]
    assert collections.Counter((s.full_method, s.status_code) for s in server) == {
        ("/reject.Svc/Ok", 0): OK}
    counts: dict[str, Any] = run.run_counts
    # every stream starts at operateHeaders; the accepted ones end at writeStatus and the
    # rejected ones at the early abort, which drops their start: nothing stays in flight
    assert counts["grpc_server_operate_headers"] == OK + DENIED + BUSY, counts
    assert counts["grpc_server_write_status"] == OK, counts
    assert counts["grpc_server_early_abort"] == DENIED + BUSY, counts
    assert run.stats["grpc_server.unmatched_end"] == 0, run.stats
    assert run.extra["in_flight"]["grpc_server.grpc_server_inflight"] == 0, run.extra
    assert run.extra["in_flight"]["grpc_server.grpc_server_slots"] == 0, run.extra
    assert run.extra["in_flight"]["grpc_server.hot_grpc_server_slots"] == 0, run.extra


def test_client_spans_carry_the_rejection_codes(run: TracedRun) -> None:
    client = [s for s in run.spans if s.kind == "grpc_client"]
    assert collections.Counter((s.full_method, s.status_code) for s in client) == {
        ("/reject.Svc/Ok", 0): OK, ("/reject.Svc/Denied", 7): DENIED,
        ("/reject.Svc/Busy", 8): BUSY}
