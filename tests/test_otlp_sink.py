"""OtlpSink on its own (no kernel, no backend): what a Span becomes in OpenTelemetry's model,
and that a slow backend costs counted spans, never the drain thread's time."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pyhttp2probe.otlp import OtlpSink
from pyhttp2probe.spans import Span


def _span(kind: str, code: int, pid: int = 10, **kw: object) -> Span:
    end = time.monotonic_ns()
    grpc = kind.startswith("grpc")
    fields: dict[str, object] = dict(
        service="pkg.Echo" if grpc else "net/http", method="Say" if grpc else "POST",
        full_method="/pkg.Echo/Say" if grpc else "/api/v1/x", server_address="127.0.0.1",
        server_port=50051, service_name=f"svc-{pid}")
    fields.update(kw)
    return Span(kind, pid, 0x1000, 1, end - 250_000, end, code, **fields)  # type: ignore[arg-type]


def _export(spans: list[Span]) -> list[ReadableSpan]:
    mem = InMemorySpanExporter()
    sink = OtlpSink("http://unused/v1/traces", exporter=mem, delay_s=0.05,
                    exe_of=lambda pid: f"/opt/bin/svc-{pid}")
    sink.write(spans)
    sink.close()
    assert sink.exported == len(spans)
    return list(mem.get_finished_spans())


def test_grpc_spans_follow_the_rpc_semantic_conventions() -> None:
    before = time.time_ns()
    client, server = _export([_span("grpc_client", 5), _span("grpc_server", 0, pid=11)])
    assert client.name == server.name == "pkg.Echo/Say"
    assert (client.kind, server.kind) == (SpanKind.CLIENT, SpanKind.SERVER)
    assert client.attributes == {"rpc.system": "grpc", "rpc.service": "pkg.Echo",
                                 "rpc.method": "Say", "rpc.grpc.status_code": 5,
                                 "server.address": "127.0.0.1", "server.port": 50051}
    assert client.status.status_code == StatusCode.ERROR
    assert server.status.status_code == StatusCode.UNSET
    # monotonic kernel times become epoch times; the duration is kept exactly
    assert client.end_time - client.start_time == 250_000
    assert abs(client.end_time - before) < 5e9
    assert client.parent is None and client.context.trace_id != server.context.trace_id
    assert dict(client.resource.attributes) == {
        "service.name": "svc-10", "process.pid": 10, "host.name": client.resource.attributes[
            "host.name"], "process.executable.path": "/opt/bin/svc-10"}
    assert server.resource.attributes["service.name"] == "svc-11"


def test_http_spans_follow_the_http_semantic_conventions() -> None:
    ok, bad, none, s4, s5 = _export([_span("http_client", 200), _span("http_client", 404),
                                     _span("http_client", 0), _span("http_server", 404),
                                     _span("http_server", 503)])
    assert ok.name == "POST" and ok.kind == SpanKind.CLIENT and s5.kind == SpanKind.SERVER
    assert ok.attributes == {"http.request.method": "POST", "url.path": "/api/v1/x",
                             "network.protocol.version": "2",
                             "http.response.status_code": 200,
                             "server.address": "127.0.0.1", "server.port": 50051}
    assert "http.response.status_code" not in none.attributes  # no response
    status = [s.status.status_code for s in (ok, bad, none, s4, s5)]
    assert status == [StatusCode.UNSET, StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET,
                      StatusCode.ERROR]


class _Stuck(SpanExporter):
    """A backend that never answers until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(30)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.release.set()


def test_a_stuck_backend_never_blocks_write_and_every_loss_is_counted() -> None:
    stuck = _Stuck()
    sink = OtlpSink("http://unused/v1/traces", exporter=stuck, max_queue=100, batch=10,
                    delay_s=0.01, flush_s=0.5)
    t0 = time.monotonic()
    for _ in range(100):
        sink.write([_span("grpc_client", 0)] * 10)
    assert time.monotonic() - t0 < 0.5  # 1000 spans queued or dropped, none waited
    t0 = time.monotonic()
    sink.close()
    assert time.monotonic() - t0 < 3.0  # bounded flush: the stuck export is aborted
    d = dict(sink.dropped)
    assert d["queue_full"] >= 890 and sink.exported == 0
    assert d["queue_full"] + d["export_failed"] + d["shutdown"] == 1000
    sink.write([_span("grpc_client", 0)])  # after close: counted, not queued
    assert sink.dropped["shutdown"] == d["shutdown"] + 1
    samples = {(s.name, s.labels.get("reason")): s.value
               for fam in sink.collect() for s in fam.samples}
    assert samples[("pyhttp2probe_otlp_spans_exported_total", None)] == 0
    assert samples[("pyhttp2probe_otlp_spans_dropped_total", "queue_full")] == d["queue_full"]
