"""A gRPC client's method that is a string literal of the binary (what generated clients
pass) goes by address in a small record (struct grpc_client_lit_event), and the agent reads
its text from the executable (pyhttp2probe/literals.py); a method built at run time is
copied into the full record as before. Real BPF, real grpc-go: tests/go/grpcmethods calls
methods made with Sprintf and two named by constants, in a plain and in a PIE build."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from pyhttp2probe import Agent
from pyhttp2probe.literals import RETIRE_S
from testkit.gobuild import GoBuild, build
from testkit.workload import start_workload

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
