"""gRPC server spans against the workload's server-side ground truth, on several grpc-go
versions, with many streams per connection and connection churn.

Every server truth line (written by the handler: method, code, listener port, handler
start/end) must match exactly one span with the same (method, code, port) whose interval
contains the handler's — spans start at handleStream and end at writeStatus, which wrap
the handler. Zero lost, duplicated or misattributed; two probe hits per RPC.
"""

from __future__ import annotations

import itertools
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from tests.gobuild import GO_ROOT, GoBuild, build
from tests.serverside_harness import match_one_to_one, span_wraps_handler, traced
from tests.truth import read_truth, start_workload

VERSIONS = sorted(p.name for p in (GO_ROOT / "grpcmods").iterdir()
                  if (p / "go.sum").exists())
# Calls the client abandons (cancel, deadline) can end on the server before any handler
# ran: real server RPCs without a server truth line, and only with these codes.
NO_HANDLER_CODES = {1, 4}


# Stripped builds (no DWARF, no .symtab): offsets from the shipped table, symbols from
# pclntab; the oldest and newest pins.
CASES = [(v, "") for v in VERSIONS] + [(v, "-s -w") for v in (VERSIONS[0], VERSIONS[-1])]


@pytest.mark.parametrize(("version", "ldflags"), CASES,
                         ids=[v + ("-stripped" if f else "") for v, f in CASES])
def test_grpc_server_spans_match_server_truth_one_to_one(version: str, ldflags: str) -> None:
    binary = build(GoBuild(src="grpcwork", mod=f"grpcmods/{version}", ldflags=ldflags))
    with tempfile.TemporaryDirectory() as tmp:
        ct, st = Path(tmp) / "client.jsonl", Path(tmp) / "server.jsonl"
        args = ["-servers", "3", "-conns-per-server", "2", "-goroutines", "8", "-rpcs", "25",
                "-churn", "4", "-truth", ct, "-server-truth", st, "-hold"]
        with start_workload(binary, args) as wl:
            run = traced(wl)
        client, server = read_truth(ct), read_truth(st)

    spans = run.of_kind("grpc_server")
    assert len(run.of_kind("grpc_server", include_unmatched=True)) == len(spans), run.stats
    assert run.stats["grpc_server.unmatched_end"] == 0
    assert run.stats["grpc_server.ringbuf_full"] == 0
    assert run.stats["grpc_server.bad_read"] == 0
    # identity: no two spans share (pid, transport, stream id) at overlapping times
    by_key: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    for s in spans:
        by_key.setdefault((s.pid, s.transport, s.stream_id), []).append((s.start_ns, s.end_ns))
    for ivs in by_key.values():
        ivs.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(ivs))

    pairs, lost, extra = match_one_to_one(
        server, spans,
        truth_key=lambda t: (t["method"], t["code"], t["server_port"]),
        span_key=lambda s: (s.full_method, s.status_code, s.server_port),
        compatible=span_wraps_handler)
    assert not lost, [server[i] for i in lost[:5]]
    extras = [spans[j] for j in extra]
    assert all(s.status_code in NO_HANDLER_CODES for s in extras), extras[:5]
    abandoned = sum(1 for c in client if c["failure"] in ("cancel", "deadline"))
    assert len(extras) <= abandoned
    assert all(s.server_address == "127.0.0.1" and s.service and s.method for s in spans)

    # 2 hits per RPC: one start, one end (a repeated writeStatus is grpc's own double call)
    n = len(spans)
    starts = run.run_counts["grpc_server_handle_stream"]
    ends = run.run_counts["grpc_server_write_status"]
    assert starts == n
    assert ends == n + run.stats["grpc_server.dup_end"]
    assert (starts + ends) / n <= 2.05
    assert len(pairs) == len(server) and n > 1000
    kinds = Counter(t["kind"] for t in server)
    assert set(kinds) == {"unary", "server_stream", "client_stream", "bidi"}
