"""gRPC programs shaped unlike grpcwork (tests/go/grpcshapes): TLS, grpc.NewClient, a Unix
socket, IPv6 loopback, retries, gzip with 1 MiB messages, interceptors, keepalive, 50
connections, stream workers with a stream quota, client cancellation halfway through a
stream, streams open for the whole run, calls to peers nothing listens at.

Real BPF against the real program, attached before its first RPC. Client spans must equal
the client truth one to one, server spans the server truth (one line per handler run, so a
retried call has one server span per attempt and one client span in all), with peer labels
that are the listener's real address — and no invented IP or port for a Unix socket.
"""

from __future__ import annotations

import collections
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyhttp2probe.spans import Span
from testkit.client_match import TOL_NS, match
from testkit.gobuild import GoBuild, build
from testkit.traced import (
    CLOCK_SLACK_NS,
    TracedRun,
    match_one_to_one,
    span_wraps_handler,
    traced,
)
from testkit.workload import read_truth, start_workload

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for BPF")

# (pin, build flags): grpc.NewClient (the newclient case) exists from grpc-go v1.63.
# v1.63.2: http2Server embeds a peer.Peer that has no methods yet (local address trap);
# v1.66.2: Stream.ct is a ClientTransport interface, not a *http2Client (1.66-1.68).
BUILDS = {"v1.85.0": ("-tags", "newclient"), "v1.66.2": ("-tags", "newclient"),
          "v1.63.2": ("-tags", "newclient"), "v1.40.0": ()}
ALL_CASES = {"tls", "unix", "ipv6", "retry", "gzip", "interceptors", "keepalive",
             "manyconns", "workers", "cancel", "longlived"}
# Less than the retry policy's smallest backoff (5 ms x 0.8): call edges vs span edges.
SAME_ATTEMPT_NS = 2_000_000
# grpc-go < 1.42 retries only with GRPC_GO_RETRY=on; later versions ignore it.
ENV = {"GRPC_GO_RETRY": "on"}


def _run(pin: str) -> tuple[TracedRun, list[dict[str, Any]], list[dict[str, Any]]]:
    binary = build(GoBuild(src="grpcshapes", mod=f"grpcmods/{pin}", flags=BUILDS[pin]))
    with tempfile.TemporaryDirectory() as tmp:
        ct, st = Path(tmp) / "client.jsonl", Path(tmp) / "server.jsonl"
        with start_workload(binary, ["-truth", ct, "-server-truth", st, "-hold"],
                            env=ENV) as wl:
            run = traced(wl)
        return run, read_truth(ct), read_truth(st)


@pytest.fixture(scope="module", params=sorted(BUILDS))
def shapes(request: pytest.FixtureRequest) -> tuple[str, TracedRun, list[dict[str, Any]],
                                                    list[dict[str, Any]]]:
    return (request.param, *_run(request.param))


def _peers(truth: list[dict[str, Any]]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = collections.defaultdict(set)
    for r in truth:
        out[r["server_port"]].add(r["server_address"])
    return out


def _expected_address(row_address: str, port: int) -> str:
    """A Unix socket has no IP and no port: the span must say nothing rather than invent."""
    return row_address if port else ""


def test_workload_ran_every_case(shapes: Any) -> None:
    pin, run, client, server = shapes
    assert run.summary is not None and run.summary["code_mismatch"] == 0, run.summary
    cases = {r["case"] for r in client}
    want = ALL_CASES | ({"newclient"} if "-tags" in BUILDS[pin] else set())
    assert cases == want
    assert {r["case"] for r in server} == want
    retried = [r for r in server if r["case"] == "retry" and r["attempt"] > 1]
    assert retried, "the server saw no retry attempt"
    assert any(r["failure"] == "cancel" and r["code"] == 1 for r in client)


def test_client_spans_match_truth_one_to_one(shapes: Any) -> None:
    pin, run, client, _ = shapes
    all_spans = [s for s in run.spans if s.kind == "grpc_client"]
    assert not [s for s in all_spans if "unmatched" in s.flags or "bad_read" in s.flags]
    assert run.stats.get("unmatched_end", 0) == 0 and run.stats.get("bad_read", 0) == 0
    assert run.stats.get("ringbuf_full", 0) == 0, run.stats
    res = match(all_spans, client)
    detail = "\n".join([f"lost: {r}" for r in res.lost[:8]] +
                       [f"extra: {s}" for s in res.extra[:8]])
    assert res.exact, f"grpcshapes {pin}: {res.summary()}\n{detail}"
    peers = _peers(client)
    for s in all_spans:
        want = {_expected_address(a, s.server_port) for a in peers[s.server_port]}
        assert s.server_address in want, (s, want)
    unix = [s for s in all_spans if s.server_port == 0]
    assert len(unix) == sum(1 for r in client if r["case"] == "unix")
    assert all(s.server_address == "" for s in unix), unix[:3]


def test_retried_call_is_one_span_covering_every_attempt(shapes: Any) -> None:
    """One client span per retried call: the final attempt's status, start before the first
    attempt reached the server, end after the last attempt's handler returned."""
    _, run, client, server = shapes
    attempts: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in server:
        if r["case"] == "retry":
            attempts[r["client_id"]].append(r)
    rows = [r for r in client if r["case"] == "retry"]
    dead = [r for r in rows if r["failure"] == "unavailable"]
    assert dead and all(not attempts[r["id"]] for r in dead)
    assert all(len(attempts[r["id"]]) == min(r["fail_first"] + 1, 4)
               for r in rows if not r["failure"])
    ports = {r["server_port"] for r in rows}
    spans = [s for s in run.spans if s.kind == "grpc_client" and s.server_port in ports]

    def covers(r: dict[str, Any], s: Span) -> bool:
        if not attempts[r["id"]]:
            # No attempt reached a server. Attempts are >= 4 ms apart (backoff 5 ms, jitter
            # 0.8); a span that began or ended at another attempt would miss that much.
            return (r["client_start_ns"] - TOL_NS <= s.start_ns <= r["client_start_ns"] +
                    SAME_ATTEMPT_NS and r["client_end_ns"] - SAME_ATTEMPT_NS <= s.end_ns <=
                    r["client_end_ns"] + TOL_NS)
        first = min(a["server_start_ns"] for a in attempts[r["id"]])
        last = max(a["server_end_ns"] for a in attempts[r["id"]])
        return (r["client_start_ns"] - TOL_NS <= s.start_ns <= first + CLOCK_SLACK_NS and
                last - CLOCK_SLACK_NS <= s.end_ns <= r["client_end_ns"] + TOL_NS)

    pairs, lost, extra = match_one_to_one(
        rows, spans, truth_key=lambda r: (r["server_port"], r["method"], r["code"]),
        span_key=lambda s: (s.server_port, s.full_method, s.status_code), compatible=covers)
    assert not lost and not extra, [
        (rows[i]["id"], rows[i]["failure"], rows[i]["client_start_ns"], rows[i]["client_end_ns"],
         [(a["server_start_ns"], a["server_end_ns"]) for a in attempts[rows[i]["id"]]])
        for i in lost[:5]] + [(s.start_ns, s.end_ns, s.status_code, s.flags)
                              for s in (spans[j] for j in extra[:5])]
    assert len(pairs) == len(rows) == len(spans)
    assert {r["code"] for r in rows} == {0, 14}


def test_server_spans_match_truth_one_to_one(shapes: Any) -> None:
    pin, run, _, server = shapes
    all_spans = [s for s in run.spans if s.kind == "grpc_server"]
    assert not [s for s in all_spans if "unmatched" in s.flags or "bad_read" in s.flags]
    for k in ("unmatched_end", "bad_read", "ringbuf_full"):
        assert run.stats[f"grpc_server.{k}"] == 0, run.stats


    pairs, lost, extra = match_one_to_one(
        server, all_spans,
        truth_key=lambda t: (t["method"], t["code"], t["server_port"]),
        span_key=lambda s: (s.full_method, s.status_code, s.server_port),
        compatible=span_wraps_handler)
    assert not lost and not extra, (pin, [server[i] for i in lost[:5]],
                                    [all_spans[j] for j in extra[:5]])
    assert len(pairs) == len(server) == len(all_spans)
    peers = _peers(server)
    for s in all_spans:
        want = {_expected_address(a, s.server_port) for a in peers[s.server_port]}
        assert s.server_address in want, (s, want)


def test_metrics_labels_are_well_formed_and_count_truth(shapes: Any) -> None:
    _, run, client, server = shapes
    got: dict[str, collections.Counter[tuple[str, str, str, str]]] = {
        "rpc_client_duration_seconds": collections.Counter(),
        "rpc_server_duration_seconds": collections.Counter()}
    for fam in text_string_to_metric_families(run.extra["metrics"]):
        if fam.name not in got:
            continue
        for sample in fam.samples:
            lab = sample.labels
            assert lab["rpc_system"] == "grpc" and lab["service_name"], lab
            assert lab["server_port"].isdigit() and 0 <= int(lab["rpc_grpc_status_code"]) <= 16
            assert all(v.isprintable() for v in lab.values()), lab
            if sample.name.endswith("_count"):
                full = f"/{lab['rpc_service']}/{lab['rpc_method']}"
                got[fam.name][(full, lab["rpc_grpc_status_code"], lab["server_address"],
                               lab["server_port"])] += int(sample.value)

    def want(rows: list[dict[str, Any]]) -> collections.Counter[tuple[str, str, str, str]]:
        return collections.Counter(
            (r["method"], str(r["code"]), _expected_address(r["server_address"],
                                                            r["server_port"]),
             str(r["server_port"])) for r in rows)

    assert got["rpc_client_duration_seconds"] == want(client)
    assert got["rpc_server_duration_seconds"] == want(server)
