"""A gRPC client's method that is a string literal of the binary (what generated clients
pass) goes by address in a small record (struct grpc_client_lit_event), and the agent reads
its text from the executable (pyhttp2probe/literals.py); a method built at run time is
copied into the full record as before. Real BPF, real grpc-go: tests/go/grpcmethods calls
methods made with Sprintf and two named by constants, in a plain and in a PIE build. HTTP/2
methods that are literals (hpack's static table, client constants) go by address too."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pyhttp2probe import Agent
from pyhttp2probe.literals import RETIRE_S
from testkit.gobuild import GoBuild, build
from testkit.traced import traced
from testkit.workload import read_truth, start_workload
from tests.test_http2_accuracy import STACK_FLAVOR, check_h2work

BUILT = 6  # -methods: /made.upI.Service/MethodI, each once, copied
LITERAL = 5  # -literals: /made.up.Literal/First and /Second, 5 calls each, by address
UNIMPLEMENTED = 12


def _record_types(agent: Agent) -> Counter[str]:
    """Count the record types of every batch the agent decodes, by their EV_* name."""
    names = {v: k for k, v in agent.layout.constants.items() if k.startswith("EV_")}
    seen: Counter[str] = Counter()
    real = agent._decoder.decode_batch

    def spy(batch: Any, spans: bool, **kw: Any) -> Any:
        for rt, arr in agent._decoder.groups(batch):
            seen[names[agent.layout.constants[rt.type_const]]] += len(arr)
        return real(batch, spans, **kw)

    agent._decoder.decode_batch = spy  # type: ignore[method-assign]
    return seen


def _client_methods(agent: Agent) -> Counter[tuple[str, int]]:
    return Counter((s.full_method, s.status_code) for s in agent.spans(timeout=0.5)
                   if s.kind == "grpc_client")


@pytest.mark.parametrize("flags", [(), ("-buildmode=pie",)], ids=["exec", "pie"])
def test_constant_methods_go_by_address_and_built_ones_are_copied(
        flags: tuple[str, ...]) -> None:
    binary = build(GoBuild(src="grpcmethods", flags=flags))
    with start_workload(binary, ["-methods", BUILT, "-literals", LITERAL, "-hold"]) as wl, \
            Agent(registry=None) as agent:
        types = _record_types(agent)
        agent.attach(wl.pid)
        wl.go()
        wl.wait_done(60)
        agent.drain()
        got = _client_methods(agent)
        wl.finish()
    want = Counter({(f"/made.up{i}.Service/Method{i}", UNIMPLEMENTED): 1 for i in range(BUILT)})
    want[("/made.up.Literal/First", UNIMPLEMENTED)] = LITERAL
    want[("/made.up.Literal/Second", UNIMPLEMENTED)] = LITERAL
    assert got == want
    assert types["EV_GRPC_CLIENT_LIT"] == 2 * LITERAL
    assert types["EV_GRPC_CLIENT"] == BUILT
    assert not agent._ctx.counts.get(("literal_unread", str(wl.pid)))


def test_a_detached_process_literals_are_read_until_its_records_are_drained() -> None:
    """Records still in the ring when their process is detached get their methods; the
    executable is let go once two drain passes and RETIRE_S have gone by."""
    binary = build(GoBuild(src="grpcmethods"))
    with start_workload(binary, ["-methods", 0, "-literals", LITERAL, "-hold"]) as wl, \
            Agent(registry=None) as agent:
        types = _record_types(agent)
        agent.attach(wl.pid)
        with agent._drain_lock:  # nothing is consumed until after the detach
            wl.go()
            wl.wait_done(60)
            agent.detach(wl.pid)
        agent.drain()
        got = _client_methods(agent)
        assert got == {("/made.up.Literal/First", UNIMPLEMENTED): LITERAL,
                       ("/made.up.Literal/Second", UNIMPLEMENTED): LITERAL}
        assert types["EV_GRPC_CLIENT_LIT"] == 2 * LITERAL
        time.sleep(RETIRE_S)
        agent.drain()
        agent.drain()
        assert agent._literals._images == {} and agent._literals._fds == {}
        wl.finish()


def test_http2_methods_from_hpacks_static_table_and_client_constants_go_by_address(
        tmp_path: Path) -> None:
    """HTTP/2 too: a server's GET and POST come from hpack's static table (literals of the
    binary), a client's method from its constants: sent by address (http2_event
    .method_addr), read back from the executable; PUT and DELETE reach the server as
    decoded strings and are copied. Every request still one to one with its truth."""
    binary = build(GoBuild(src="h2work"))
    ct, st = tmp_path / "client.jsonl", tmp_path / "server.jsonl"
    args = ["-servers", "4", "-conns-per-server", "2", "-goroutines", "4", "-rpcs", "12",
            "-truth", str(ct), "-server-truth", str(st), "-hold"]
    by_addr: Counter[tuple[str, bool]] = Counter()
    with start_workload(binary, args) as wl:
        def spy_on(agent: Agent) -> None:
            real = agent._decoder.decode_batch
            names = {v: k for k, v in agent.layout.constants.items() if k.startswith("EV_")}

            def spy(batch: Any, spans: bool, **kw: Any) -> Any:
                for rt, arr in agent._decoder.groups(batch):
                    name = names[agent.layout.constants[rt.type_const]]
                    if name in ("EV_HTTP2_CLIENT", "EV_HTTP2_SERVER"):
                        for a in arr["method_addr"].tolist():
                            by_addr[(name, a != 0)] += 1
                return real(batch, spans, **kw)

            agent._decoder.decode_batch = spy  # type: ignore[method-assign]

        run = traced(wl, on_agent=spy_on)
    check_h2work(run, read_truth(ct), read_truth(st), STACK_FLAVOR)
    server = read_truth(st)
    client = [t for t in read_truth(ct) if t["proto"] == "HTTP/2.0"]
    assert by_addr[("EV_HTTP2_CLIENT", True)] == len(client)
    assert by_addr[("EV_HTTP2_SERVER", True)] == sum(
        t["method"] in ("GET", "POST") for t in server if t["proto"] == "HTTP/2.0")
    assert by_addr[("EV_HTTP2_SERVER", False)] > 0
