"""Traces cost no probe hit, and every span is given its place in its trace (issue 13).

Real BPF, real grpc-go (grpcwork: client and server in one process, nested calls from
server handlers and from client interceptors), no mocks.

* Hits: the same seeded workload runs with traces off and on (Agent(trace_context=True)),
  kernel bpf_stats on; each program's run count is the same in both, and is what the
  accuracy tests assert with traces off: client start == client end == client RPCs (all got
  a stream), client fail == calls ending non-OK (its one ignored hit on the error path),
  server start == server end == server RPCs (less grpc's own repeated writeStatus, counted
  as dup_end), nothing else runs.
* Joins: each span is mapped to the truth the program wrote as a *chain* — the span, its
  parent, its parent's parent — against the truth row's chain (server row -> the client row
  of its client_id; a handler-made client row -> the server row of its parent_id), each
  link agreeing on (method, code, port) and times, one to one (testkit.traced's
  match_one_to_one: a maximum matching, so concurrent look-alike calls cannot make it pick
  wrongly and flake, while any wrong, missing or extra parent leaves something unmatched).
  So: every server span is a child of its own client span (same process: connection
  addresses + stream id); every client call a handler made is a child of the server span of
  the request that handler served; every other client call is a root; ids are W3C-shaped.
* grpc-go v1.40 has no per-connection server context: handler calls are not joined (they
  are roots), server spans still are children of their client spans.
"""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from libbpf_loader import bpf_stats_enabled
from pyhttp2probe import Agent
from pyhttp2probe.spans import Span
from testkit.client_match import TOL_NS
from testkit.gobuild import GoBuild, build
from testkit.traced import match_one_to_one, span_wraps_handler
from testkit.workload import read_truth, start_workload

NEWEST = "v1.85.0"
NO_PER_CONN_CTX = "v1.40.0"  # pyhttp2probe/probes/grpc_server.py PER_CONN_CTX_SINCE
# Unary calls (exactly two hits a side when healthy), a third of them making a nested call
# (from the handler or the client interceptor, in turn), 10 % server errors.
UNARY = ["-servers", "2", "-goroutines", "4", "-rpcs", "60", "-mix", "unary=1",
         "-errors", "0.1", "-client-failures", "0", "-nested", "0.3", "-delay-max", "2ms"]
# Every kind, several connections per server, server errors, nested calls; client-side
# failures (calls abandoned while their HEADERS are in flight reach the server after the
# client span ended: the join's slack) and churn in tests of their own below.
MIXED = ["-servers", "2", "-conns-per-server", "2", "-goroutines", "4", "-rpcs", "40",
         "-errors", "0.1", "-client-failures", "0", "-nested", "0.3", "-delay-max", "2ms"]
HEX32 = re.compile(r"[0-9a-f]{32}\Z")
HEX16 = re.compile(r"[0-9a-f]{16}\Z")


@dataclass
class Run:
    spans: list[Span]
    counts: dict[str, int]
    stats: dict[str, int]
    client: list[dict[str, Any]]
    server: list[dict[str, Any]]
    joined: dict[str, int]
    timed_out: int  # spans the joiner sent on as roots after waiting for a parent


def _private(pin: str, tmp: Path, ldflags: str = "") -> Path:
    """A copy of the workload binary of our own: the agent shares links among processes of
    one file, so another session running the cached binary meanwhile would add its hits
    (counted as no_config) to our run counts."""
    out = tmp / f"grpcwork-{pin}{'-stripped' if ldflags else ''}"
    if not out.exists():
        shutil.copy2(build(GoBuild(src="grpcwork", mod=f"grpcmods/{pin}", ldflags=ldflags)),
                     out)
    return out


def _run(pin: str, args: list[str], tmp: Path, trace: bool, ldflags: str = "") -> Run:
    binary = _private(pin, tmp, ldflags)
    ct, st = tmp / f"c-{trace}.jsonl", tmp / f"s-{trace}.jsonl"
    with bpf_stats_enabled(), start_workload(binary, [*args, "-truth", str(ct),
                                                      "-server-truth", str(st), "-hold"]) as wl:
        assert wl.pid is not None
        with Agent(trace_context=trace) as agent:
            agent.attach(wl.pid)
            wl.go()
            wl.wait_done(120)
            time.sleep(0.2)
            agent.drain()
            counts = agent.run_counts()
            stats = agent.stats()
        wl.finish()
    j = agent.joiner
    return Run(list(agent.spans(timeout=0.1)), counts, stats, read_truth(ct), read_truth(st),
               dict(j.joined) if j else {}, j.timed_out if j else 0)


def _assert_hits(run: Run, fail_probe: bool) -> None:
    """The run counts the accuracy tests assert (tests/test_grpc_client_accuracy.py,
    test_grpc_server_accuracy.py), on a unary workload where every call got a stream."""
    rc, n_c, n_s = run.counts, len(run.client), len(run.server)
    errors = sum(1 for r in run.client if r["code"] != 0)
    assert n_c > 400 and n_s == n_c and errors > 0
    # every call had an attempt: each ends at finish()'s CALL of the attempt's finish
    assert rc["grpc_client_start"] == rc["grpc_client_end_attempt"] == n_c, rc
    assert rc.get("grpc_client_end", 0) == 0, rc
    # shouldRetry's RETs (v1.50..v1.77 only) pass every error status; newClientStream's
    # cleanup (v1.78+) runs for no call that got a stream
    assert rc.get("grpc_client_fail", 0) == (errors if fail_probe else 0), rc
    assert rc.get("grpc_client_fail_cleanup", 0) == 0, rc
    assert rc["grpc_server_operate_headers"] == n_s, rc
    assert rc["grpc_server_write_status"] == n_s + run.stats["grpc_server.dup_end"], rc
    others = {k: v for k, v in rc.items() if v and not k.startswith(
        ("grpc_client_start", "grpc_client_end", "grpc_client_fail", "grpc_server_operate_",
         "grpc_server_write_status", "grpc_client_conn", "grpc_server_conn"))}
    assert not others, others
    # the connection cache's constructor probes: once per connection, not per call
    assert 0 < rc["grpc_client_conn"] + rc["grpc_server_conn"] <= 0.05 * n_c, rc
    assert run.stats["grpc_client.no_config"] == run.stats["grpc_server.no_config"] == 0


def _client_fits(t: dict[str, Any], s: Span) -> bool:
    return (t["client_start_ns"] - TOL_NS <= s.start_ns
            and s.end_ns <= t["client_end_ns"] + TOL_NS)


def _assert_joined(run: Run, handler_joined: bool) -> None:
    spans = run.spans
    assert spans and all(HEX32.match(s.trace_id) and HEX16.match(s.span_id) for s in spans)
    assert len({s.span_id for s in spans}) == len(spans), "span ids are unique"
    by_id = {s.span_id: s for s in spans}
    assert all(s.parent_span_id == "" or s.parent_span_id in by_id for s in spans)
    roots = [s for s in spans if not s.parent_span_id]
    assert len({s.trace_id for s in roots}) == len(roots), "a trace per root"
    for s in spans:
        if s.parent_span_id:
            p = by_id[s.parent_span_id]
            assert s.trace_id == p.trace_id, (s, p)
            if s.kind == "grpc_server":  # joined by the connection's two ends + stream id
                assert p.kind == "grpc_client" and p.stream_id == s.stream_id, (s, p)
                assert (p.client_address, p.client_port, p.server_address, p.server_port) == \
                    (s.client_address, s.client_port, s.server_address, s.server_port), (s, p)
            else:  # a handler's call: its context descends from that request's
                assert p.kind == "grpc_server" and p.context == s.context != 0, (s, p)

    # truth chains: ("c"|"s", row) from the row up to its root
    clients = {r["id"]: r for r in run.client}
    server_of = {r["client_id"]: r for r in run.server}
    assert len(server_of) == len(run.server) and -1 not in server_of

    def truth_chain(kind: str, row: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        chain = [(kind, row)]
        while True:
            kind, row = chain[-1]
            if kind == "s":
                chain.append(("c", clients[row["client_id"]]))
            elif row["nested_via"] == "handler" and handler_joined:
                chain.append(("s", server_of[row["parent_id"]]))
            else:
                return chain

    def span_chain(s: Span) -> list[Span]:
        chain = [s]
        while chain[-1].parent_span_id:
            chain.append(by_id[chain[-1].parent_span_id])
        return chain

    truths = [truth_chain("c", r) for r in run.client] + [truth_chain("s", r)
                                                          for r in run.server]
    chains = [span_chain(s) for s in spans]

    def tkey(chain: list[tuple[str, dict[str, Any]]]) -> Hashable:
        return tuple((k, r["method"], r["code"], r["server_port"]) for k, r in chain)

    def skey(chain: list[Span]) -> Hashable:
        return tuple(("s" if s.kind == "grpc_server" else "c", s.full_method, s.status_code,
                      s.server_port) for s in chain)

    def fits(tc: list[tuple[str, dict[str, Any]]], sc: list[Span]) -> bool:
        return all(span_wraps_handler(r, s) if k == "s" else _client_fits(r, s)
                   for (k, r), s in zip(tc, sc, strict=True))

    pairs, lost, extra = match_one_to_one(truths, chains, tkey, skey, fits)
    assert not lost, [truths[i] for i in lost[:3]]
    assert not extra, [chains[j] for j in extra[:3]]
    assert len(pairs) == len(spans) == len(truths)
    # what the matching shows, counted: every server span has a client parent; handler
    # calls have a server parent (v1.41+) or are roots; other client calls are roots
    handler = sum(1 for r in run.client if r["nested_via"] == "handler")
    servers = [s for s in spans if s.kind == "grpc_server"]
    with_server_parent = [s for s in spans if s.kind == "grpc_client" and s.parent_span_id]
    assert all(s.parent_span_id for s in servers)
    assert handler > 10
    assert len(with_server_parent) == (handler if handler_joined else 0)
    assert run.joined["connection"] == len(servers)
    assert run.joined["context"] == len(with_server_parent)
    assert run.timed_out == 0, "no span waited in vain for a parent"


def _counts_less_dup(run: Run) -> dict[str, int]:
    """Probe hits, less grpc's own repeated writeStatus calls (dup_end)."""
    dup = run.stats["grpc_server.dup_end"]
    return {k: v - (dup if k == "grpc_server_write_status" else 0)
            for k, v in run.counts.items()}


def test_probe_hits_per_rpc_unchanged_by_tracing(tmp_path: Path) -> None:
    off = _run(NEWEST, UNARY, tmp_path, trace=False)
    on = _run(NEWEST, UNARY, tmp_path, trace=True)
    assert _calls(on) == _calls(off)  # the same seeded workload
    for run in (off, on):
        _assert_hits(run, fail_probe=False)  # v1.78+: no probe on shouldRetry
    assert _counts_less_dup(on) == _counts_less_dup(off)
    assert not any(s.trace_id or s.span_id or s.context for s in off.spans)
    _assert_joined(on, handler_joined=True)


def test_every_span_is_a_child_of_its_caller(tmp_path: Path) -> None:
    run = _run(NEWEST, MIXED, tmp_path, trace=True)
    assert {r["kind"] for r in run.client} == {"unary", "server_stream", "client_stream",
                                                "bidi"}
    assert run.stats["grpc_client.ringbuf_full"] == run.stats["grpc_server.ringbuf_full"] == 0
    assert run.counts["grpc_client_start"] == len(run.client)
    assert run.counts["grpc_server_operate_headers"] == len(run.server)
    _assert_joined(run, handler_joined=True)


def test_grpc_140_server_spans_joined_handler_calls_not(tmp_path: Path) -> None:
    off = _run(NO_PER_CONN_CTX, UNARY, tmp_path, trace=False)
    on = _run(NO_PER_CONN_CTX, UNARY, tmp_path, trace=True)
    for run in (off, on):
        _assert_hits(run, fail_probe=False)  # no probe on shouldRetry before grpc-go v1.50
    assert _counts_less_dup(on) == _counts_less_dup(off)
    _assert_joined(on, handler_joined=False)


def test_stripped_binaries_are_joined_from_the_offsets_table(tmp_path: Path) -> None:
    """No DWARF: the trace fields' offsets come from the shipped table (both server context
    layouts: v1.58's http2Server.ctx, v1.85's operateHeaders argument)."""
    for pin in ("v1.58.3", NEWEST):
        run = _run(pin, UNARY, tmp_path, trace=True, ldflags="-s -w")
        _assert_joined(run, handler_joined=True)


def test_handler_calls_joined_under_connection_churn(tmp_path: Path) -> None:
    """Closed connections' contexts stay noted (nothing deletes them) while Go reuses their
    memory: a walk must not stop at one (trace_ctx.h checks each hit's parent pointer).
    Before that check every run of this lost 5-12 joins."""
    args = [*MIXED, "-churn", "8"]
    args[args.index("-rpcs") + 1] = "80"
    run = _run(NEWEST, args, tmp_path, trace=True)
    assert any(r["churn"] for r in run.client)
    _assert_joined(run, handler_joined=True)


def _calls(run: Run) -> tuple[int, int, Counter[str]]:
    """Calls, those ending non-OK, calls by nesting (which call gets which error code, or
    nests, goes by a counter shared by the goroutines: by their order)."""
    return (len(run.client), sum(1 for r in run.client if r["code"]),
            Counter(r["nested_via"] for r in run.client))


def test_abandoned_calls_reaching_their_server_late_are_joined(tmp_path: Path) -> None:
    """Calls the client gives up on (deadlines, cancels) while their HEADERS are in flight
    can reach the server's handler after the client span ended: still their client's
    children. (Their server rows may not know their client: matched by the join alone.)"""
    args = list(MIXED)
    args[args.index("-client-failures") + 1] = "0.5"
    run = _run(NEWEST, args, tmp_path, trace=True)
    assert sum(1 for r in run.client if r["code"]) > 20
    by_id = {s.span_id: s for s in run.spans}
    servers = [s for s in run.spans if s.kind == "grpc_server"]
    # (a call cancelled before its handler ran has a server span, grpc-go's status, and no
    # server truth line: the spans are at least the lines)
    assert len(servers) >= len(run.server) > 100
    for s in servers:
        parent = by_id.get(s.parent_span_id)
        assert parent is not None and parent.kind == "grpc_client", s
        assert (parent.pid, parent.stream_id, parent.trace_id) == (s.pid, s.stream_id,
                                                                    s.trace_id)
        assert parent.start_ns <= s.start_ns
    assert run.joined["connection"] == len(servers)
    assert run.timed_out == 0, "no span waited in vain for a parent"
