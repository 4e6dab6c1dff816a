"""The trace joiner's rules, on spans as the probes report them (pure logic, a settable clock):
which span becomes whose child, what guards against reused addresses and contexts, how long
a span waits for a parent that may never end, and that nothing is held without bound. The
end-to-end proofs on real programs are tests/test_otlp.py, test_traces.py and
test_traces_cost.py."""

from __future__ import annotations

from collections.abc import Sequence

from pyhttp2probe.spans import Span
from pyhttp2probe.traces import TraceJoiner, parse_traceparent

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 50051)
S = 1_000_000_001  # a second (and a ns) of CLOCK_MONOTONIC


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Collect:
    def __init__(self) -> None:
        self.spans: list[Span] = []

    def write(self, spans: Sequence[Span]) -> None:
        self.spans.extend(spans)

    def close(self) -> None:
        pass


def joiner(**kw: object) -> tuple[TraceJoiner, Collect, Clock]:
    out, clock = Collect(), Clock()
    return TraceJoiner([out], clock=clock, **kw), out, clock  # type: ignore[arg-type]


def client(start: int, end: int, *, pid: int = 1, stream: int = 1, context: int = 0,
           local: tuple[str, int] = CLIENT_ADDR, server: tuple[str, int] = SERVER_ADDR) -> Span:
    return Span("grpc_client", pid, 0xC0, stream, start, end, 0, "svc", "M", "/svc/M",
                server[0], server[1], context=context, client_address=local[0],
                client_port=local[1])


def server(start: int, end: int, *, pid: int = 2, stream: int = 1, context: int = 0,
           remote: tuple[str, int] = CLIENT_ADDR, local: tuple[str, int] = SERVER_ADDR,
           traceparent: str = "") -> Span:
    return Span("grpc_server", pid, 0x5E, stream, start, end, 0, "svc", "M", "/svc/M",
                local[0], local[1], context=context, client_address=remote[0],
                client_port=remote[1], traceparent=traceparent)


def test_a_server_span_waits_for_its_client_and_becomes_its_child() -> None:
    j, out, _ = joiner()
    srv = server(20, 80)
    j.write([srv])
    assert out.spans == [] and j.pending == 1  # its client (loopback) may be traced here
    cli = client(10, 90)
    j.write([cli])
    assert out.spans == []  # a root only when the drain pass is over (flush)
    j.flush()
    assert out.spans == [cli, srv]  # parent first
    assert cli.parent_span_id == "" and len(cli.trace_id) == 32 and len(cli.span_id) == 16
    assert (srv.trace_id, srv.parent_span_id) == (cli.trace_id, cli.span_id)
    assert j.joined["connection"] == 1 and j.pending == 0


def test_reused_addresses_and_stream_id_do_not_join_calls_apart_in_time() -> None:
    j, out, clock = joiner(conn_wait_s=2.0)
    old = client(10, 20)
    j.write([old])
    late = server(20 + S, 30 + S)  # same connection key, 1 s after the old call ended
    j.write([late])
    assert late not in out.spans
    clock.now += 2.1
    j.tick()
    assert late in out.spans and late.parent_span_id == "" and late.trace_id != old.trace_id
    assert j.timed_out == 1


def test_an_abandoned_call_reaching_its_server_late_is_still_its_client_s_child() -> None:
    j, out, _ = joiner()
    cli = client(10, 20)  # gave up (deadline) before the server read its headers
    j.write([cli])
    j.flush()
    srv = server(20 + S // 500, 30 + S // 500)  # 2 ms later
    j.write([srv])
    assert out.spans == [cli, srv]
    assert srv.parent_span_id == cli.span_id and srv.trace_id == cli.trace_id


def test_a_traceparent_from_an_untraced_remote_client_makes_the_server_span_its_child() -> None:
    j, out, _ = joiner()
    srv = server(20, 80, remote=("10.1.2.3", 40000), traceparent=TP)
    j.write([srv])
    assert out.spans == [srv]  # not a local address: no client of ours to wait for
    assert (srv.trace_id, srv.parent_span_id) == parse_traceparent(TP)


def test_a_traced_client_takes_the_trace_its_server_received() -> None:
    j, out, _ = joiner()
    srv = server(20, 80, traceparent=TP)
    j.write([srv])
    cli = client(10, 90)
    j.write([cli])
    j.flush()
    assert out.spans == [cli, srv]
    trace, parent = parse_traceparent(TP)  # type: ignore[misc]
    assert (cli.trace_id, cli.parent_span_id) == (trace, parent)
    assert (srv.trace_id, srv.parent_span_id) == (trace, cli.span_id)


def test_within_a_drain_pass_a_client_span_waits_for_its_server_childs_traceparent() -> None:
    j, out, _ = joiner()
    cli = client(10, 90)
    j.write([cli])  # the client ring's batch of the pass comes first
    srv = server(20, 80, traceparent=TP)
    j.write([srv])  # then the server ring's
    assert out.spans == []
    j.flush()
    assert out.spans == [cli, srv]
    assert (cli.trace_id, cli.parent_span_id) == parse_traceparent(TP)
    assert srv.parent_span_id == cli.span_id


def test_a_call_made_under_a_request_is_a_child_of_that_server_span() -> None:
    j, out, _ = joiner()
    inner = client(30, 40, pid=2, context=0xABC, local=("127.0.0.1", 41000),
                   server=("127.0.0.1", 60000))
    other = client(5, 8, pid=2, context=0xABC, local=("127.0.0.1", 41000),
                   server=("127.0.0.1", 60000), stream=3)  # same context pointer, earlier
    j.write([inner, other])
    assert out.spans == []
    srv = server(20, 80, pid=2, context=0xABC, remote=("10.0.0.9", 1234))
    j.write([srv])
    assert out.spans[:2] == [srv, inner]
    assert (inner.trace_id, inner.parent_span_id) == (srv.trace_id, srv.span_id)
    assert other not in out.spans  # not inside the request: the context was reused later
    j.close()
    assert other in out.spans and other.parent_span_id == "" and j.timed_out == 1


def test_a_call_whose_request_never_ends_goes_on_as_a_root_after_max_wait() -> None:
    j, out, clock = joiner(max_wait_s=5.0)
    cli = client(30, 40, context=0xABC)
    j.write([cli])
    clock.now += 4.9
    j.tick()
    assert out.spans == []
    clock.now += 0.2
    j.tick()
    assert out.spans == [cli] and cli.parent_span_id == "" and j.timed_out == 1


def test_the_other_processes_contexts_never_join() -> None:
    j, out, _ = joiner(max_wait_s=5.0)
    srv = server(20, 80, pid=7, context=0xABC, remote=("10.0.0.9", 1234))
    cli = client(30, 40, pid=8, context=0xABC)
    j.write([srv, cli])
    assert out.spans == [srv] and cli.parent_span_id == ""


def test_invalid_traceparents_are_ignored() -> None:
    assert parse_traceparent(TP) is not None
    for bad in ("", "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",
                TP.upper(), "01" + TP[2:] + "-x", TP[:-1]):
        assert parse_traceparent(bad) is None, bad
    j, out, _ = joiner()
    srv = server(20, 80, remote=("10.1.2.3", 1), traceparent="00-zz")
    j.write([srv])
    assert out.spans == [srv] and srv.parent_span_id == "" and len(srv.trace_id) == 32


def test_after_one_wait_in_vain_a_connection_is_known_untraced() -> None:
    j, out, clock = joiner(conn_wait_s=2.0)
    first = server(20, 30, stream=1)
    j.write([first])
    clock.now += 2.1
    j.tick()
    assert first in out.spans
    second = server(40, 50, stream=3)
    j.write([second])
    assert second in out.spans  # at once
    assert j.timed_out == 1


def test_waiting_spans_are_bounded() -> None:
    j, out, _ = joiner(max_pending=10)
    spans = [client(i, i + 1, context=0x1000 + i) for i in range(25)]
    j.write(spans)
    assert j.pending == 10
    assert out.spans == spans[:15]  # the oldest went on, as roots
    j.close()
    assert j.pending == 0 and sorted(out.spans, key=lambda s: s.start_ns) == spans


def test_span_ids_are_unique() -> None:
    j, out, _ = joiner()
    j.write([server(i, i + 1, remote=("10.0.0.1", i), stream=i) for i in range(2000)])
    assert len({s.span_id for s in out.spans}) == len({s.trace_id for s in out.spans}) == 2000
