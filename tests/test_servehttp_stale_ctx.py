"""A gRPC call served by ServeHTTP is joined to its own HTTP/2 request, not to the entry a
request long over left at an address that a context of this call now occupies.

The join (bpf_src/srv_common.h ctx_join) walks the call's context chain and takes the first
noted HTTP/2 stream context it meets. Entries outlive their requests (for late and repeated
gRPC ends), and Go recycles addresses: under connection churn a closed connection's context
and one of its stream contexts were seen recycled as a middleware's value context and the
cancel context made from it, so an old entry matched key and parent one level below the
call's own stream context (calls were seen dropped as repeats, twice in some 600 runs of
1,400 calls). That state cannot be made to order by allocation, so tests/go/ctxstale prints
the addresses of the chain on chosen requests and waits while this test leaves behind, in
the agent's own map, exactly what such an old request leaves: an entry keyed by the
middleware's cancel context whose parent is the value context's address and whose
grandparent is a connection's context. One entry is marked as already taken by a gRPC end
(the old code dropped the call as a repeat), one not (the old code gave the call the old
request's start and identity). Every call must still get one span, joined to its own
HTTP/2 request, and both planted entries must be left as they were.
"""

from __future__ import annotations

import struct

from libbpf_loader import bpf_stats_enabled
from pyhttp2probe import Agent
from testkit.gobuild import GoBuild, build
from testkit.traced import SERVEHTTP_MOD
from testkit.workload import start_workload

CALLS = 10
# request number -> whether the planted entry says a gRPC end already took it
STALE = {3: True, 7: False}
OLD_CONN = 0xDEAD0000  # the planted request's identity: no span may carry it
OLD_START_NS = 12345
GRPC_ENDED_AT = 40  # struct ctx_stream.grpc_ended


def _ctx_key(tgid: int, ctx: int) -> bytes:
    return struct.pack("<IIQ", tgid, 0, ctx)  # struct ctx_key


def _ctx_stream(tgid: int, stream_id: int, parent: int, grand: int, grpc_ended: bool) -> bytes:
    # struct ctx_stream: stream_key{tgid, stream_id, conn}, start_ns, parent, grand,
    # grpc_ended, _pad
    return struct.pack("<IIQQQQII", tgid, stream_id, OLD_CONN, OLD_START_NS, parent, grand,
                       int(grpc_ended), 0)


def test_a_servehttp_call_is_not_joined_to_an_old_entry_at_a_recycled_address() -> None:
    binary = build(GoBuild(src="ctxstale", mod=SERVEHTTP_MOD))
    stale = ",".join(str(n) for n in STALE)
    planted: dict[int, bytes] = {}
    with start_workload(binary, ["-calls", str(CALLS), "-stale", stale, "-hold"]) as wl:
        assert wl.pid is not None
        with Agent() as agent, bpf_stats_enabled():
            agent.attach(wl.pid)
            ended = agent._objects["http2"].map("h2_ctx_ended")
            # the records below are packed by hand: the map must still have their sizes
            assert (ended.key_size, ended.value_size) == (len(_ctx_key(0, 0)),
                                                          len(_ctx_stream(0, 0, 0, 0, False)))
            wl.go()
            for _ in STALE:
                _, n, cancel_ctx, value_ctx, conn_ctx = wl.expect("CTX ").split()
                key = _ctx_key(wl.pid, int(cancel_ctx, 16))
                ended.update(key, _ctx_stream(wl.pid, int(n), int(value_ctx, 16),
                                              int(conn_ctx, 16), STALE[int(n)]))
                planted[int(n)] = key
                wl.send_line()
            wl.wait_done()
            agent.drain()
            stats, counts = agent.stats(), agent.run_counts()
            left = {n: ended.lookup(k) for n, k in planted.items()}
        spans = list(agent.spans(timeout=0.1))
        wl.finish()

    grpc = [s for s in spans if s.kind == "grpc_server"]
    h2 = {(s.connection, s.stream_id, s.start_ns): s for s in spans if s.kind == "http_server"}
    assert len(h2) == CALLS and counts["grpc_server_write_status_ht"] == CALLS, counts
    assert len(grpc) == CALLS, (stats, grpc)
    for s in grpc:  # each one joined to its own HTTP/2 request
        assert "unmatched" not in s.flags and s.connection != OLD_CONN, s
        assert (s.connection, s.stream_id, s.start_ns) in h2, s
    assert len({(s.connection, s.stream_id) for s in grpc}) == CALLS
    assert stats["grpc_server.dup_end"] == 0 and stats["grpc_server.unmatched_end"] == 0, stats
    # the planted entries were passed over, not taken (a take marks grpc_ended)
    for n, raw in left.items():
        assert raw is not None, n
        assert struct.unpack_from("<I", raw, GRPC_ENDED_AT)[0] == int(STALE[n]), n
