"""The gRPC paths' array tables stay exact when they are far too small.

In-flight starts (bpf_src/start_slots.h: a small table, then a large one), goroutine notes
(grpc_client.bpf.c g_slots: the same two) and the connection cache (conn_cache.h) are ARRAY
slot tables sized for a node, and so are the HTTP/2 requests (server starts, client starts
with their fields: http2.bpf.c) and their contexts that gRPC-over-ServeHTTP ends join (srv_common.h
h2_ctx_slots); a slot another request holds sends a request to the next tier, and a slot
another connection took is a miss read again. Built here with 4 slots each (2 in the
starts' small tables), against a workload that keeps hundreds of calls in flight on many
connections, nearly every request takes those other ways: every client and server span
must still match its ground truth one to one, with nothing unmatched, duplicated or left
in flight.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pyhttp2probe.probes import ProbePath, all_paths
from testkit.bpfbuild import BPF_SRC, build_object
from testkit.client_match import match
from testkit.gobuild import GoBuild, build
from testkit.traced import assert_grpc_server_exact, traced
from testkit.workload import read_truth, start_workload
from tests.test_grpc_server_accuracy import _check_servehttp
from tests.test_http2_accuracy import STACK_FLAVOR, check_h2work

TINY = ("HOT_SLOT_BITS=1", "START_SLOT_BITS=2", "G_HOT_BITS=1", "G_SLOT_BITS=2",
        "CONN_CACHE_BITS=2", "CTX_SLOT_BITS=2", "H2C_HOT_BITS=1", "H2C_SLOT_BITS=2")


def _tiny_paths(names: tuple[str, ...] = ("grpc_client", "grpc_server", "http2"),
                ) -> tuple[ProbePath, ...]:
    out = []
    for p in all_paths():
        if p.name in names:
            src = BPF_SRC / p.object.removesuffix(".o").replace(".bpf", ".bpf.c")
            p = dataclasses.replace(p, object=str(build_object(src, TINY)))
        out.append(p)
    return tuple(out)


def test_spans_exact_with_four_slot_tables(tmp_path: Path) -> None:
    binary = build(GoBuild(src="grpcwork", mod="grpcmods/v1.85.0"))
    ct, st = tmp_path / "client.jsonl", tmp_path / "server.jsonl"
    args = ["-servers", "3", "-conns-per-server", "2", "-goroutines", "16", "-rpcs", "25",
            "-churn", "4", "-errors", "0.2", "-client-failures", "0.05", "-nested", "0.1",
            "-truth", str(ct), "-server-truth", str(st), "-hold"]
    with start_workload(binary, args) as wl:
        run = traced(wl, paths=_tiny_paths())
    client, server = read_truth(ct), read_truth(st)
    assert len(client) > 1000 and {r["failure"] for r in client} >= {"unavailable"}

    res = match(run.of_kind("grpc_client", include_unmatched=True), client)
    assert res.exact, res.summary()

    assert_grpc_server_exact(run, server, client)

    for side in ("grpc_client", "grpc_server"):
        assert run.stats[f"{side}.unmatched_end"] == 0, run.stats
        assert run.stats[f"{side}.bad_read"] == 0, run.stats
    left = run.extra["in_flight"]
    assert not [k for k in ("grpc_client.inflight", "grpc_client.inflight_slots",
                            "grpc_server.grpc_server_inflight", "grpc_server.grpc_server_slots")
                if left[k]], left


def test_servehttp_spans_exact_with_four_slot_tables(tmp_path: Path) -> None:
    """gRPC served by ServeHTTP, middleware mixed in, client cancels and deadlines among
    the calls (their gRPC end may come after the HTTP/2 request ended): with 4 slots for
    the HTTP/2 starts and 4 for the request contexts, every gRPC span is joined to its
    HTTP/2 request exactly as with full tables, and nothing is left in flight."""
    binary = build(GoBuild(src="grpcwork", mod="grpcmods/v1.85.0"))
    ct, st = tmp_path / "client.jsonl", tmp_path / "server.jsonl"
    args = ["-servers", "3", "-conns-per-server", "2", "-goroutines", "16", "-rpcs", "25",
            "-churn", "4", "-errors", "0.2", "-client-failures", "0.05",
            "-serve-http", "-middleware", "mixed",
            "-truth", str(ct), "-server-truth", str(st), "-hold"]
    with start_workload(binary, args) as wl:
        run = traced(wl, paths=_tiny_paths(("grpc_server", "http2")))
    client, server = read_truth(ct), read_truth(st)
    assert {r["failure"] for r in client} >= {"cancel", "deadline"}
    spans = assert_grpc_server_exact(run, server, client)
    _check_servehttp(run, spans)
    assert run.stats["grpc_server.unmatched_end"] == 0, run.stats
    assert run.extra["in_flight"]["http2.h2_ctx_slots"] == 0, run.extra["in_flight"]


def test_http2_spans_exact_with_four_slot_tables(tmp_path: Path) -> None:
    """net/http and x/net HTTP/2 clients and servers (TLS and h2c) with 4 slots for the
    server starts and 4 for the client starts: every request one to one with its span."""
    binary = build(GoBuild(src="h2work"))
    ct, st = tmp_path / "client.jsonl", tmp_path / "server.jsonl"
    args = ["-servers", "8", "-conns-per-server", "2", "-goroutines", "6", "-rpcs", "12",
            "-churn", "4", "-truth", str(ct), "-server-truth", str(st), "-hold"]
    with start_workload(binary, args) as wl:
        run = traced(wl, paths=_tiny_paths(("grpc_server", "http2")))
    check_h2work(run, read_truth(ct), read_truth(st), STACK_FLAVOR)
    left = run.extra["in_flight"]
    assert not [k for k in ("http2.hot_http2_client_slots", "http2.http2_client_slots",
                            "http2.http2_client_inflight", "http2.hot_http2_server_slots",
                            "http2.http2_server_slots", "http2.http2_server_inflight")
                if left[k]], left
