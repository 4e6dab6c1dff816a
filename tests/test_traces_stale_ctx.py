"""A call a gRPC handler makes is joined to the request that handler serves, not stopped
early by a connection context noted at an address Go has since given to the handler's own
context.

The trace walk (bpf_src/trace_ctx.h request_ctx_of) climbs the call's context chain and
stops below the first context whose parent is a noted connection context. Those notes
outlive their connections (nothing deletes them at close), and Go recycles addresses: a
pair of contexts a handler makes one after the other can land where a closed connection's
context and its parent were, so an old note then matches key and parent one level below
the request context. Each note is checked against the two ancestors noted with it; the
parent alone would pass that pair. tests/go/ctxstale -nested prints the handler context's
address and its parent's on chosen requests and waits, while this test leaves behind, in
the agent's own map, exactly such a note keyed by the handler context: one whose parent is
right and grandparent wrong (the recycled pair), one with both wrong. Every nested call
must still hang under the server span of the request that made it, the outer calls stay
roots, and the walk must have dropped both planted notes as stale.
"""

from __future__ import annotations

import struct

from pyhttp2probe import Agent
from testkit.gobuild import GoBuild, build
from testkit.traced import SERVEHTTP_MOD
from testkit.workload import start_workload

CALLS = 10
# request number -> the planted note's (parent right, grandparent right)
STALE = {3: (True, False), 7: (False, False)}
WRONG = 0xBAD0000  # an ancestor no context of the chain has
NOTE_CONN = 0xDEAD0000


def _ctx_key(tgid: int, ctx: int) -> bytes:
    return struct.pack("<IIQ", tgid, 0, ctx)  # struct ctx_key


def _conn_ctx(parent: int, grand: int) -> bytes:
    return struct.pack("<QQQ", parent, grand, NOTE_CONN)  # struct conn_ctx


def test_a_handlers_call_is_not_stopped_by_an_old_note_at_a_recycled_address() -> None:
    binary = build(GoBuild(src="ctxstale", mod=SERVEHTTP_MOD))
    stale = ",".join(str(n) for n in STALE)
    planted: dict[int, bytes] = {}
    with start_workload(binary, ["-nested", "-calls", str(CALLS), "-stale", stale,
                                 "-hold"]) as wl:
        assert wl.pid is not None
        with Agent(trace_context=True) as agent:
            agent.attach(wl.pid)
            notes = agent._objects["grpc_client"].map("srv_conn_ctx")
            # the records below are packed by hand: the map must still have their sizes
            assert (notes.key_size, notes.value_size) == (len(_ctx_key(0, 0)),
                                                          len(_conn_ctx(0, 0)))
            wl.go()
            for _ in STALE:
                _, n, handler_ctx, parent = wl.expect("NEST ").split()
                right_parent, right_grand = STALE[int(n)]
                assert not right_grand  # a right grandparent would be a live note
                key = _ctx_key(wl.pid, int(handler_ctx, 16))
                notes.update(key, _conn_ctx(int(parent, 16) if right_parent else WRONG,
                                            WRONG))
                planted[int(n)] = key
                wl.send_line()
            wl.wait_done()
            agent.drain()
            stats = agent.stats()
            left = {n: notes.lookup(k) for n, k in planted.items()}
        spans = list(agent.spans(timeout=0.1))
        wl.finish()

    by_id = {s.span_id: s for s in spans}
    clients = [s for s in spans if s.kind == "grpc_client"]
    servers = [s for s in spans if s.kind == "grpc_server"]
    assert len(clients) == len(servers) == 2 * CALLS, (stats, len(clients), len(servers))
    outer = [c for c in clients if not c.parent_span_id]
    inner = [c for c in clients if c.parent_span_id]
    assert len(outer) == len(inner) == CALLS, [c.parent_span_id for c in clients]
    outer_ids = {c.span_id for c in outer}
    handlers = set()
    for c in inner:  # each nested call under the server span of the request that made it
        parent = by_id[c.parent_span_id]
        assert parent.kind == "grpc_server" and parent.parent_span_id in outer_ids, parent
        assert parent.start_ns <= c.start_ns and c.end_ns <= parent.end_ns, (parent, c)
        assert parent.trace_id == c.trace_id == by_id[parent.parent_span_id].trace_id
        handlers.add(parent.span_id)
    assert len(handlers) == CALLS  # one nested call per request, none shared
    for s in servers:  # every server span under its own client span
        assert by_id[s.parent_span_id].kind == "grpc_client", s
    assert stats["grpc_client.unmatched_end"] == stats["grpc_server.unmatched_end"] == 0
    # the walk met each planted note, found its ancestors wrong and dropped it
    assert left == {n: None for n in STALE}, left
