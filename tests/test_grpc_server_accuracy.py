"""gRPC server spans against the workload's server-side ground truth, on several grpc-go
versions, with many streams per connection and connection churn — served by grpc's own
transport and by (*grpc.Server).ServeHTTP under net/http's HTTP/2 server (h2c), the latter
behind middleware that wraps the ResponseWriter, stacks contexts and copies the request.

Every server truth line (written by the handler: method, code, listener port, handler
start/end) must match exactly one span with the same (method, code, port) whose interval
contains the handler's. Zero lost, duplicated or misattributed; two probe hits per RPC on
grpc's transport, three through ServeHTTP (the HTTP/2 request's two, plus the gRPC end).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest

from pyhttp2probe.spans import Span
from testkit.client_match import match
from testkit.gobuild import GO_ROOT, GoBuild, build
from testkit.traced import (
    TracedRun,
    assert_grpc_server_exact,
    traced,
)
from testkit.workload import read_truth, start_workload

VERSIONS = sorted(p.name for p in (GO_ROOT / "grpcmods").iterdir()
                  if (p / "go.sum").exists())


# Stripped builds (no DWARF, no .symtab): offsets from the shipped table, symbols from
# pclntab; the oldest and newest pins. ServeHTTP on every pin, its middleware mixed in.
# Go 1.27 (net/http's HTTP/2 moved to net/http/internal/http2) under ServeHTTP, stripped too.
GO127 = "go1.27.4"
# x/net's h2c.NewHandler in front of ServeHTTP (x/net's own http2.Server) on the oldest and
# newest pins.
XH2C = "xnet-h2c"
CASES = ([(v, "", "", "", "") for v in VERSIONS]
         + [(v, "-s -w", "", "", "") for v in (VERSIONS[0], VERSIONS[-1])]
         + [(v, "", "mixed", "", "") for v in VERSIONS]
         + [(VERSIONS[-1], "-s -w", "mixed", "", ""), (VERSIONS[0], "", "wrap", "", ""),
            (VERSIONS[0], "", "mixed", "", XH2C), (VERSIONS[-1], "", "mixed", "", XH2C),
            (VERSIONS[-1], "", "mixed", GO127, ""), (VERSIONS[-1], "-s -w", "mixed", GO127, ""),
            (VERSIONS[-1], "", "mixed", GO127, XH2C)])


def _case_id(version: str, ldflags: str, middleware: str, toolchain: str, h2srv: str) -> str:
    return (version + ("-stripped" if ldflags else "")
            + (f"-servehttp-{middleware}" if middleware else "")
            + (f"-{h2srv}" if h2srv else "") + (f"-{toolchain}" if toolchain else ""))


@pytest.mark.parametrize(("version", "ldflags", "middleware", "toolchain", "h2srv"), CASES,
                         ids=[_case_id(*c) for c in CASES])
def test_grpc_server_spans_match_server_truth_one_to_one(version: str, ldflags: str,
                                                         middleware: str, toolchain: str,
                                                         h2srv: str) -> None:
    env = (("GOTOOLCHAIN", toolchain),) if toolchain else ()
    binary = build(GoBuild(src="grpcwork", mod=f"grpcmods/{version}", ldflags=ldflags, env=env))
    serve_http = ["-serve-http", "-middleware", middleware] if middleware else []
    serve_http += ["-h2-server", h2srv] if h2srv else []
    with tempfile.TemporaryDirectory() as tmp:
        ct, st = Path(tmp) / "client.jsonl", Path(tmp) / "server.jsonl"
        args = ["-servers", "3", "-conns-per-server", "2", "-goroutines", "8", "-rpcs", "25",
                "-churn", "4", "-truth", ct, "-server-truth", st, "-hold", *serve_http]
        with start_workload(binary, args) as wl:
            run = traced(wl)
        client, server = read_truth(ct), read_truth(st)
    assert run.summary is not None and run.summary["serve_http"] == bool(middleware)
    if toolchain:  # the client side of the same calls, on a Go release of its own
        res = match(run.of_kind("grpc_client", include_unmatched=True), client)
        assert res.exact, res.summary()

    spans = assert_grpc_server_exact(run, server, client)
    assert all(s.server_address == "127.0.0.1" and s.service and s.method for s in spans)

    n = len(spans)
    assert n > 1000
    kinds = Counter(t["kind"] for t in server)
    assert set(kinds) == {"unary", "server_stream", "client_stream", "bidi"}
    if middleware:
        assert run.summary["h2_server"] == (h2srv or "nethttp")
        _check_servehttp(run, spans)
        # the HTTP/2 server that carried the calls: x/net's own under its h2c handler
        # (built with Go 1.27, x/net's HTTP/2 delegates to net/http's own)
        flavor = "xnet" if h2srv == XH2C and toolchain != GO127 else "bundled"
        assert run.run_counts[f"http2_server_start_{flavor}"] == n
        return
    # 2 hits per RPC: one start, one end (a repeated writeStatus is grpc's own double call)
    assert not [s for s in spans if "via_serve_http" in s.flags]
    starts = run.run_counts["grpc_server_operate_headers"]
    ends = run.run_counts["grpc_server_write_status"]
    assert starts == n
    assert ends == n + run.stats["grpc_server.dup_end"]
    assert (starts + ends) / n <= 2.05
    assert run.extra["in_flight"]["grpc_server.grpc_server_inflight"] == 0
    assert run.extra["in_flight"]["grpc_server.grpc_server_slots"] == 0
    assert run.extra["in_flight"]["grpc_server.hot_grpc_server_slots"] == 0


def _check_servehttp(run: TracedRun, spans: list[Span]) -> None:
    """Each ServeHTTP span is joined to the HTTP/2 request it ran in: it carries that
    request's identity (conn, stream id) and start, and the request's own :path (read by
    the other probe, from the other side) names the same method. 3 hits per RPC."""
    assert all("via_serve_http" in s.flags for s in spans)
    assert run.run_counts["grpc_server_operate_headers"] == 0
    # a (conn, stream id) recurs once churn frees a connection: its start tells them apart
    h2 = {(s.connection, s.stream_id, s.start_ns): s for s in run.of_kind("http_server")}
    for s in spans:
        req = h2.get((s.connection, s.stream_id, s.start_ns))
        assert req is not None, s
        assert req.full_method == s.full_method and req.status_code == 200, (s, req)
    assert len(h2) == len(spans)  # the workload sends nothing but gRPC to these servers
    rc, n = run.run_counts, len(spans)
    h2_hits = sum(v for k, v in rc.items() if k.startswith("http2_server_"))
    ends = rc["grpc_server_write_status_ht"]
    assert ends == n + run.stats["grpc_server.dup_end"]
    assert (h2_hits + ends) / n <= 3.05, rc
    assert rc["grpc_server_write_status"] == 0
    left = run.extra["in_flight"]
    assert left["http2.http2_server_inflight"] == left["http2.h2_ctx_live"] == 0, left
    assert left["http2.http2_server_slots"] == left["http2.hot_http2_server_slots"] == 0, left
