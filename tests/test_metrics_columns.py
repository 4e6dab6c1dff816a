"""The cheap metrics path (issue 12) equals the span path: the same records through
Decoder.decode -> RpcMetrics.observe_spans (Span objects one by one, the reference) and
through Decoder.decode_batch(spans=False) -> RpcMetrics.write_columns (numpy over columns,
Span objects only for one row per label key) give the same /metrics text — label-set cap
and _OTHER folding, status_guessed, unmatched excluded, service_name per pid, the HTTP
network_protocol_version label, every family. Plus one real workload traced by an agent
whose only sink is the collector, its /metrics counts equal to the workload's truth.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import tempfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from libbpf_loader import Batch
from pyhttp2probe import Agent
from pyhttp2probe.decode import Decoder
from pyhttp2probe.metrics import RpcMetrics
from pyhttp2probe.probes import all_paths
from pyhttp2probe.records import Columns, DecodeContext, group_rows, load_layout
from pyhttp2probe.sinks import ColumnSink, JsonLinesSink, SpanSink, json_line
from pyhttp2probe.spans import Span, SpanColumns
from testkit.batches import make_batch
from testkit.gobuild import GO_ROOT, GoBuild, build
from testkit.workload import read_truth, start_workload
from tests.test_agent import _client_counts

LAYOUT = load_layout()
K = LAYOUT.constants
METHODS = [b"/pkg.Svc/Get", b"/pkg.Svc/Put", b"/other.Api/List", b"/x/\xc3\xa9t\xc3\xa9",
           b"odd", b""]
HOSTS = [b"127.0.0.1:8443", b"[::1]:9000", b"svc.local", b""]
TARGETS = [b"dns:///svc.local:443", b"passthrough:///10.1.2.3:81", b"unix:/tmp/s.sock"]


def _flags(rng: random.Random) -> int:
    f = 0
    if rng.random() < 0.1:
        f |= K["SPAN_F_UNMATCHED"]
    if rng.random() < 0.1:
        f |= K["SPAN_F_STATUS_GUESSED"]
    if rng.random() < 0.05:
        f |= K["SPAN_F_BAD_READ"]
    return f


def _times(ev: Any, rng: random.Random) -> None:
    ev.end_ns = 10**12 + rng.randrange(10**9)
    # from a few µs to seconds, and a few exactly on a bucket bound
    dur = rng.choice([rng.randrange(1, 10**6), rng.randrange(10**9, 3 * 10**9), 250_000,
                      10**9, rng.randrange(10**6, 10**8)])
    ev.start_ns = 0 if ev.flags & K["SPAN_F_UNMATCHED"] else ev.end_ns - dur


def _text(ev: Any, field: str, value: bytes, garbage: bool) -> None:
    setattr(ev, field, value)
    setattr(ev, field + "_len", len(value))
    if garbage and value:  # bytes past the length must not matter
        raw = getattr(ev, field)
        raw[len(value)] = b"Z"


def grpc_client(rng: random.Random, pids: list[int]) -> bytes:
    ev = LAYOUT.new("grpc_client_event")
    ev.type, ev.tgid = K["EV_GRPC_CLIENT"], rng.choice(pids)
    ev.transport = rng.choice([0, 0xC000, 0xC100, 0xC200])
    ev.cs, ev.stream_id = rng.randrange(1, 2**40), rng.randrange(1, 1000, 2)
    ev.status_code = rng.choice([0, 0, 0, 2, 4, 14])
    ev.flags = _flags(rng)
    _times(ev, rng)
    _text(ev, "method", rng.choice(METHODS), rng.random() < 0.2)
    _text(ev, "target", rng.choice(TARGETS), rng.random() < 0.2)
    ev.peer_ip[10:16] = [0xFF, 0xFF, 127, 0, 0, rng.choice([1, 2])]
    ev.peer_port = rng.choice([5000, 5001])
    return LAYOUT.to_bytes(ev)


def grpc_server(rng: random.Random, pids: list[int]) -> bytes:
    ev = LAYOUT.new("grpc_server_event")
    ev.type, ev.tgid = K["EV_GRPC_SERVER"], rng.choice(pids)
    ev.transport, ev.stream_id = rng.choice([0xE000, 0xE100]), rng.randrange(1, 1000, 2)
    ev.status_code = rng.choice([0, 0, 5, 13])
    ev.flags = _flags(rng) | (K["SPAN_F_VIA_SERVE_HTTP"] if rng.random() < 0.3 else 0)
    _times(ev, rng)
    _text(ev, "method", rng.choice(METHODS), rng.random() < 0.2)
    _text(ev, "host", rng.choice(HOSTS), rng.random() < 0.2)
    if rng.random() < 0.7:
        ev.local_ip[10:16] = [0xFF, 0xFF, 10, 0, 0, 1]
        ev.local_port = rng.choice([6000, 6001])
    return LAYOUT.to_bytes(ev)


def http2(rng: random.Random, pids: list[int]) -> bytes:
    ev = LAYOUT.new("http2_event")
    ev.type = rng.choice([K["EV_HTTP2_CLIENT"], K["EV_HTTP2_SERVER"]])
    ev.tgid, ev.conn, ev.stream_id = rng.choice(pids), 0xA000, rng.randrange(1, 99, 2)
    ev.status = rng.choice([200, 200, 404, 500, 0])
    ev.flags = _flags(rng) | (K["SPAN_F_ERROR"] if rng.random() < 0.1 else 0)
    ev.flavor = rng.choice([0, 1])
    _times(ev, rng)
    _text(ev, "method", rng.choice([b"GET", b"POST", b"PATCH"]), rng.random() < 0.2)
    _text(ev, "host", rng.choice(HOSTS), rng.random() < 0.2)
    _text(ev, "path", f"/items/{rng.randrange(50)}".encode(), False)
    return LAYOUT.to_bytes(ev)


def rejected(rng: random.Random, pids: list[int]) -> bytes:
    ev = LAYOUT.new("grpc_server_reject_event")
    ev.type, ev.tgid, ev.status_code = K["EV_GRPC_SERVER_REJECTED"], rng.choice(pids), 12
    return LAYOUT.to_bytes(ev)


MAKERS = (grpc_client, grpc_server, http2, rejected)
NAMES = {1: "checkout", 2: "cart", 3: "checkout", 4: "edge"}


def _both_paths(batches: list[list[bytes]], cap: int) -> tuple[str, str, int, int]:
    """The /metrics text through the span path and through the column path."""
    texts, unmatched = [], []
    for columns in (False, True):
        registry = CollectorRegistry()
        metrics = RpcMetrics(max_label_sets=cap, registry=registry)
        ctx = DecodeContext(LAYOUT, lambda pid: NAMES.get(pid, ""))
        dec = Decoder(LAYOUT, all_paths(), ctx)
        n = 0
        for records in batches:
            if columns:
                d = dec.decode_batch(make_batch(records), spans=False)
                assert d.spans is None
                metrics.write_columns(d.columns)
                n += d.unmatched
            else:
                spans = dec.decode(make_batch(records))
                metrics.observe_spans(spans)
                n += sum("unmatched" in s.flags for s in spans)
        texts.append(generate_latest(registry).decode())
        unmatched.append(n)
    return texts[0], texts[1], unmatched[0], unmatched[1]


@pytest.mark.parametrize("cap", [1000, 7, 1])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_column_metrics_equal_span_metrics(seed: int, cap: int) -> None:
    rng = random.Random(seed)
    batches = []
    for _ in range(6):
        makers = rng.choice([MAKERS, (grpc_client,), (http2,), (grpc_server, rejected)])
        batches.append([rng.choice(makers)(rng, [1, 2, 3, 4])
                        for _ in range(rng.choice([1, 3, 40, 400]))])
    spans_text, cols_text, spans_unmatched, cols_unmatched = _both_paths(batches, cap)
    assert cols_text == spans_text
    assert cols_unmatched == spans_unmatched > 0
    assert "rpc_client_duration_seconds_count" in spans_text
    assert 'network_protocol_version="2"' in spans_text
    assert 'service_name="cart"' in spans_text
    if cap < 1000:
        assert 'rpc_method="_OTHER"' in spans_text
        assert "pyhttp2probe_label_sets_folded_total 0.0" not in spans_text
    assert "pyhttp2probe_status_guessed_total 0.0" not in spans_text


def test_a_batch_that_hits_the_cap_folds_the_sets_first_seen_after_it() -> None:
    """The cap admits label sets in the order of their first observation, across the
    batch's groups (client records first: lower EV_* type)."""
    rng = random.Random(9)
    records = [grpc_client(rng, [1]) for _ in range(60)] + [http2(rng, [2]) for _ in range(60)]
    rng.shuffle(records)
    for cap in (1, 3, 5, 12):
        spans_text, cols_text, _, _ = _both_paths([records, records[:30]], cap)
        assert cols_text == spans_text, cap


def test_group_rows_numbers_groups_in_order_of_first_occurrence() -> None:
    words = np.array([[5, 1], [3, 3], [5, 1], [0, 0], [3, 3], [5, 2]], np.uint64)
    first, group = group_rows(words)
    assert first.tolist() == [0, 1, 3, 5]
    assert group.tolist() == [0, 1, 0, 2, 1, 3]


def test_group_rows_is_exact_when_hashes_collide(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyhttp2probe.records as records

    # every key word weighs 0: all rows hash alike, the exact comparison must split them
    monkeypatch.setattr(records, "_MULT", np.zeros(4096, np.uint64))
    words = np.array([[1, 2], [3, 4], [1, 2]], np.uint64)
    first, group = records.group_rows(words)
    assert first.tolist() == [0, 1] and group.tolist() == [0, 1, 0]


@pytest.mark.parametrize("maker", [grpc_client, grpc_server, http2], ids=lambda m: m.__name__)
def test_a_batch_of_only_unmatched_ends_is_counted_not_fatal(maker: Any) -> None:
    """Attached in the middle of long calls, a batch can hold nothing but ends without a
    start: every one counted as unmatched, no columns for them, and no exception (which
    would stop the drain)."""
    rng = random.Random(7)
    dec = Decoder(LAYOUT, all_paths(), DecodeContext(LAYOUT))
    recs = []
    for _ in range(3):
        ((_, arr),) = dec.groups(make_batch([maker(rng, [1])]))
        arr = arr.copy()
        arr["flags"] |= K["SPAN_F_UNMATCHED"]
        arr["start_ns"] = 0
        recs.append(arr.tobytes())
    for rows in (False, True):
        d = dec.decode_batch(make_batch(recs), spans=False, rows=rows)
        assert d.unmatched == 3
        assert sum(len(c) for c in d.columns) == 0


def test_a_label_key_of_no_rows_is_empty() -> None:
    """Columns.key() over zero rows (every row filtered out) is a (0, words) array."""
    dec = Decoder(LAYOUT, all_paths(), DecodeContext(LAYOUT))
    (rt, arr), = dec.groups(make_batch([grpc_client(random.Random(1), [1])]))
    none = Columns(arr, DecodeContext(LAYOUT)).select(np.zeros(1, bool))
    assert rt.label_key is not None and rt.label_key(none).shape[0] == 0


def test_label_keys_ignore_what_labels_do_not_use() -> None:
    """Rows that differ only in identity, times or the HTTP path share one group."""
    rng = random.Random(4)
    recs = []
    for i in range(50):
        ev = LAYOUT.new("http2_event")
        ev.type, ev.tgid, ev.conn, ev.stream_id = K["EV_HTTP2_SERVER"], 1, i, 2 * i + 1
        ev.status, ev.start_ns, ev.end_ns = 200, 1, 2 + rng.randrange(1000)
        _text(ev, "method", b"GET", False)
        _text(ev, "path", f"/p/{i}".encode(), False)
        recs.append(LAYOUT.to_bytes(ev))
    dec = Decoder(LAYOUT, all_paths(), DecodeContext(LAYOUT))
    (cols,) = dec.decode_batch(make_batch(recs), spans=False).columns
    assert len(cols.exemplars) == 1 and len(cols) == 50


def test_the_agent_builds_no_span_when_only_the_collector_listens() -> None:
    """The collector is a ColumnSink; span consumers (JSON lines, the queue) are not."""
    rng = random.Random(5)
    with Agent(registry=None, keep_spans=False) as agent:
        assert isinstance(agent.metrics, ColumnSink)
        assert not agent._want_spans
        built: list[int] = []
        real = agent._decoder.decode_batch

        def spy(batch: Any, spans: bool, **kw: Any) -> Any:
            d = real(batch, spans, **kw)
            built.append(-1 if d.spans is None else len(d.spans))
            return d

        agent._decoder.decode_batch = spy  # type: ignore[method-assign]
        agent._on_batch(make_batch([grpc_client(rng, [1]) for _ in range(20)]))
        assert built == [-1]
        got: list[Span] = []

        class Sink:
            def write(self, spans: Any) -> None:
                got.extend(spans)

            def close(self) -> None:
                pass

        assert isinstance(Sink(), SpanSink) and not isinstance(Sink(), ColumnSink)
        agent.add_sink(Sink())
        agent._on_batch(make_batch([grpc_client(rng, [1]) for _ in range(20)]))
        assert built[-1] == 20 and 0 < len(got) <= 20
        assert all("unmatched" not in s.flags for s in got)


def test_json_lines_take_columns_with_traces_off_and_spans_through_the_joiner_on() -> None:
    for traces in (False, True):
        with Agent(registry=None, keep_spans=False, spans_out=io.StringIO(),
                   trace_context=traces) as agent:
            (json_sink,) = [s for s in agent._sinks if isinstance(s, JsonLinesSink)]
            assert agent._want_rows is not traces and agent._want_spans is traces
            assert (agent.joiner is not None and json_sink in agent.joiner.sinks) is traces
            assert ((json_sink, True) in agent._routes) is not traces


def _old_json(s: Span) -> str:
    """JsonLinesSink's text before issue 12 (asdict), the format users parse; since issue 13
    the trace ids follow the attributes when traces are on, and the joiner's inputs
    (context, client address and port, traceparent) are never written."""
    d = asdict(s)
    d["flags"] = list(s.flags)
    for key in ("context", "client_address", "client_port", "traceparent"):
        del d[key]
    if not s.trace_id:
        for key in ("trace_id", "span_id", "parent_span_id"):
            del d[key]
    d["duration_s"] = s.duration_s
    if not s.attributes:
        del d["attributes"]
    return json.dumps(d, separators=(",", ":")) + "\n"


def test_json_lines_are_the_same_text_as_before() -> None:
    rng = random.Random(6)
    recs = [rng.choice(MAKERS[:3])(rng, [1, 2]) for _ in range(300)]
    ctx = DecodeContext(LAYOUT, lambda pid: NAMES.get(pid, ""))
    spans = Decoder(LAYOUT, all_paths(), ctx).decode(make_batch(recs))
    spans.append(Span("http_server", 1, 2, 3, 4, 5, 200, "s\"v", "GET", "/ü\n", "::1", 80,
                      ("error",), "nämé",
                      attributes={"a": [1, "x"], "network.protocol.version": "2"}))
    spans.append(Span("grpc_server", 1, 2, 3, 4, 5, 0, "a.B", "C", "/a.B/C", "::1", 80,
                      trace_id="ab" * 16, span_id="cd" * 8, parent_span_id="ef" * 8,
                      context=7, client_address="::1", client_port=9, traceparent="00-x"))
    out = io.StringIO()
    JsonLinesSink(out).write(spans)
    assert out.getvalue() == "".join(map(_old_json, spans))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_lines_from_columns_equal_json_line_of_spans(seed: int) -> None:
    """The same random records (every path; calls without a connection, unmatched ends,
    bytes past a text's length, names needing escapes, '%' included) written by
    JsonLinesSink from SpanColumns with rows and from the Span path: the same text."""
    rng = random.Random(seed)
    names = {1: "checkout", 2: 'c%s "ärt" %d', 3: "", 4: "edge\n"}
    ctx = DecodeContext(LAYOUT, lambda pid: names.get(pid, ""))
    dec = Decoder(LAYOUT, all_paths(), ctx)
    by_spans, by_columns = io.StringIO(), io.StringIO()
    for i in range(8):
        makers = (grpc_client,) if i == 0 else rng.choice(
            [MAKERS, (grpc_client,), (http2,), (grpc_server, rejected)])
        batch = make_batch([rng.choice(makers)(rng, [1, 2, 3, 4])
                            for _ in range(rng.choice([1, 3, 40, 400]) if i else 200)])
        d = dec.decode_batch(batch, spans=False, rows=True)
        assert d.spans is None and all(c.rows is not None for c in d.columns if len(c))
        JsonLinesSink(by_columns).write_columns(d.columns)
        JsonLinesSink(by_spans).write([s for s in dec.decode(batch)
                                       if "unmatched" not in s.flags])
    assert by_columns.getvalue() == by_spans.getvalue()
    assert '"connection":0,' in by_spans.getvalue() and "%" in by_spans.getvalue()


def test_json_lines_of_columns_without_rows() -> None:
    """Spans built one by one (a record type without ids) are their own rows; grouped
    columns without rows cannot be written."""
    rng = random.Random(7)
    recs = [grpc_client(rng, [1]) for _ in range(50)]
    spans = [s for s in Decoder(LAYOUT, all_paths(), DecodeContext(LAYOUT)).decode(
        make_batch(recs)) if "unmatched" not in s.flags]
    out = io.StringIO()
    JsonLinesSink(out).write_columns([SpanColumns.from_spans(spans)])
    assert out.getvalue() == "".join(map(json_line, spans))
    (grouped,) = Decoder(LAYOUT, all_paths(), DecodeContext(LAYOUT)).decode_batch(
        make_batch(recs), spans=False).columns
    with pytest.raises(ValueError, match="rows=True"):
        JsonLinesSink(io.StringIO()).write_columns([grouped])


def test_texts_of_columns_cut_at_their_length() -> None:
    ev = LAYOUT.new("grpc_client_event")
    _text(ev, "method", b"/a.B/C", True)
    cols = Columns(np.frombuffer(LAYOUT.to_bytes(ev), LAYOUT.dtype("grpc_client_event")),
                   DecodeContext(LAYOUT))
    assert cols.texts("method", "method_len") == ["/a.B/C"]


def test_metrics_only_agent_counts_every_call_of_a_real_workload() -> None:
    """End to end: the collector alone (no Span object built), client and server traced,
    /metrics counts by (method, code) equal to the workload's own truth."""
    pins = sorted(p.name for p in (GO_ROOT / "grpcmods").iterdir() if (p / "go.sum").exists())
    binary = build(GoBuild(src="grpcwork", mod=f"grpcmods/{pins[-1]}"))
    args = ["-servers", "2", "-goroutines", "8", "-rpcs", "60", "-churn", "1", "-errors", "0.2",
            "-client-failures", "0", "-nested", "0", "-delay-max", "200us"]
    with tempfile.TemporaryDirectory() as tmp:
        ct, st = Path(tmp) / "c.jsonl", Path(tmp) / "s.jsonl"
        registry = CollectorRegistry()
        with start_workload(binary, [*args, "-truth", ct, "-server-truth", st, "-hold"]) as wl, \
                Agent(registry=registry, keep_spans=False) as agent:
            assert not agent._want_spans
            agent.attach(wl.pid)
            wl.go()
            wl.wait_done(120)
            agent.drain()
            text = generate_latest(registry).decode()
            wl.finish()
        client, server = read_truth(ct), read_truth(st)
    assert len(client) > 500
    assert _client_counts(text) == Counter((r["method"], str(r["code"])) for r in client)
    got: Counter[tuple[str, str]] = Counter()
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples if fam.name == "rpc_server_duration_seconds" else ():
            if smp.name.endswith("_count"):
                lab = smp.labels
                got[(f"/{lab['rpc_service']}/{lab['rpc_method']}",
                     lab["rpc_grpc_status_code"])] += int(smp.value)
    assert got == Counter((r["method"], str(r["code"])) for r in server)


def test_span_queue_hands_batches_in_order_and_counts_what_its_bound_drops() -> None:
    from pyhttp2probe.sinks import SpanQueue

    spans = [Span("grpc_client", 1, 2, i, 1, 2, 0) for i in range(10)]
    q = SpanQueue(max_spans=6)
    q.write(spans[:4])
    q.write(spans[4:])  # room for 2 of these 6
    assert q.dropped == 4
    assert [s.stream_id for s in q.spans(timeout=0.01)] == [0, 1, 2, 3, 4, 5]
    q.write(spans[:3])  # taken spans make room again
    q.close()
    assert [s.stream_id for s in q.spans()] == [0, 1, 2]
    assert list(q.spans()) == []  # closed: every iterator ends


def test_json_lines_from_columns_equal_the_span_path_on_real_records() -> None:
    """JSON lines with traces off are written from columns (no Span per record): an agent
    whose span consumer is JSON lines alone traces real gRPC (client failures without a
    connection, errors, streams, nesting, churn), gRPC served by ServeHTTP and net/http and
    x/net HTTP/2 (per-request paths); every batch it decoded, decoded again the Span way
    (Decoder.decode -> json_line of each matched span), is the very text it wrote."""
    pins = sorted(p.name for p in (GO_ROOT / "grpcmods").iterdir() if (p / "go.sum").exists())
    grpc = build(GoBuild(src="grpcwork", mod=f"grpcmods/{pins[-1]}"))
    h2 = build(GoBuild(src="h2work"))
    loads = [(grpc, ["-servers", "2", "-goroutines", "4", "-rpcs", "40", "-churn", "1",
                     "-errors", "0.2", "-client-failures", "0.1"]),
             (grpc, ["-servers", "1", "-goroutines", "4", "-rpcs", "30", "-serve-http"]),
             (h2, ["-servers", "4", "-goroutines", "3", "-rpcs", "15"])]
    out = io.StringIO()
    seen: list[Any] = []
    with contextlib.ExitStack() as stack:
        wls = [stack.enter_context(start_workload(b, [*a, "-hold"])) for b, a in loads]
        agent = stack.enter_context(Agent(registry=None, keep_spans=False, spans_out=out))
        assert agent._want_rows and not agent._want_spans
        real = agent._decoder.decode_batch

        def spy(batch: Any, spans: bool, **kw: Any) -> Any:
            d = real(batch, spans, **kw)
            assert d.spans is None  # no Span object but the groups' exemplars
            seen.append(Batch(batch.buffer, memoryview(bytes(batch.offsets)).cast("I"),
                              memoryview(bytes(batch.sizes)).cast("I"), batch.uniform_size))
            return d

        agent._decoder.decode_batch = spy  # type: ignore[method-assign]
        for wl in wls:
            agent.attach(wl.pid)
        for wl in wls:
            wl.go()
        for wl in wls:
            wl.wait_done(120)
        agent.drain()
        decoder = Decoder(agent.layout, agent.paths, DecodeContext(
            agent.layout, agent._service_name, agent._literals.text))
        spans = [s for b in seen for s in decoder.decode(b) if "unmatched" not in s.flags]
        for wl in wls:
            wl.finish()
    text = out.getvalue()
    assert text == "".join(map(json_line, spans))
    assert len(spans) > 1000 and len(text.splitlines()) == len(spans)
    kinds = Counter(s.kind for s in spans)
    assert set(kinds) == {"grpc_client", "grpc_server", "http_client", "http_server"}, kinds
    assert any(s.kind == "grpc_client" and not s.connection and s.call for s in spans)
    assert any("via_serve_http" in s.flags for s in spans)
    assert len({s.full_method for s in spans if s.kind == "http_server"}) > 3
