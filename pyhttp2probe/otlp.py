"""OTLP trace export: every span to an OpenTelemetry backend over OTLP/HTTP (protobuf).

    sink = OtlpSink("http://collector:4318/v1/traces", exe_of=lambda pid: "/usr/bin/api")
    registry.register(sink)            # pyhttp2probe_otlp_spans_{exported,dropped}_total
    agent.add_sink(sink)

The wire format is the OpenTelemetry SDK's own (`OTLPSpanExporter`: protobuf encoding,
retry with exponential backoff on connection errors and retryable statuses, bounded by the
export timeout), never hand-built protobuf. The agent's spans are finished already, so they
are handed to the exporter as SDK `ReadableSpan`s; the SDK's encoder groups one request's
spans by resource, so one exporter serves every traced process, each under its own
resource (service.name, process.pid, host.name, process.executable.path).

The drain thread only appends to a bounded queue (write() returns at once); a worker thread
converts and exports batches. Nothing is silent: a span that finds the queue full, a batch
the backend did not take after the exporter's retries, and what is still queued when close()
gives up are counted in pyhttp2probe_otlp_spans_dropped_total{reason}. A slow or absent
backend therefore costs spans, never the agent's progress.

Timing: the kernel stamps spans with CLOCK_MONOTONIC; OTLP wants Unix epoch ns. The offset
between the two is measured once, when the sink is made (a later wall-clock step would skew
later spans by that step; the monotonic order of spans is kept exactly).

Spans come with their trace and parent from the agent's joiner (pyhttp2probe/traces.py);
a span without ids (a sink used outside an agent with traces on) is a root of its own.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import structlog
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from prometheus_client.core import CounterMetricFamily, Metric

from . import __version__
from .spans import Span, clock_offset_ns

DROP_REASONS = ("queue_full", "export_failed", "shutdown")
DEFAULT_QUEUE = 8192  # spans; ~8 k * a few hundred bytes: a few MB at most
DEFAULT_BATCH = 512  # spans per export request (the SDK BatchSpanProcessor's default)
DEFAULT_DELAY_S = 1.0  # longest a span waits for its batch to fill
DEFAULT_TIMEOUT_S = 5.0  # one export, retries included (the SDK's default is 10 s)
DEFAULT_FLUSH_S = 5.0  # close() exports what is queued for at most this long
MAX_BACKOFF_S = 5.0  # pause between failed exports, doubling from 0.25 s
_RESOURCES_MAX = 4096  # resources cached, one per traced process

_KIND = {"grpc_client": SpanKind.CLIENT, "http_client": SpanKind.CLIENT,
         "grpc_server": SpanKind.SERVER, "http_server": SpanKind.SERVER}
_SCOPE = InstrumentationScope("pyhttp2probe", __version__)
_TIMEOUT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")


def span_name(s: Span) -> str:
    """OpenTelemetry semantic conventions: RPC spans are "{rpc.service}/{rpc.method}";
    HTTP spans "{http.request.method}" (the conventions name "{method} {target}" only with a
    low-cardinality target such as a route, and forbid the raw path as one)."""
    if s.kind.startswith("grpc"):
        return f"{s.service}/{s.method}" if s.service else s.method or s.full_method
    return s.method or "HTTP"


def span_attributes(s: Span) -> dict[str, Any]:
    """The semantic-convention attributes of one span (ints stay ints)."""
    if s.kind.startswith("grpc"):
        attrs: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": s.service,
                                 "rpc.method": s.method, "rpc.grpc.status_code": s.status_code}
    else:
        attrs = {"http.request.method": s.method, "url.path": s.full_method,
                 "network.protocol.version": "2"}
        if s.status_code:  # 0: no response
            attrs["http.response.status_code"] = s.status_code
    if s.server_address:
        attrs["server.address"] = s.server_address
    if s.server_port:
        attrs["server.port"] = s.server_port
    return attrs


def span_status(s: Span) -> Status:
    """ERROR for a gRPC code other than OK; for HTTP a 5xx, and on the client side also a
    4xx (the conventions' rule for clients) or no response at all; else UNSET."""
    if s.kind.startswith("grpc"):
        failed = s.status_code != 0
    elif s.kind == "http_client":
        failed = s.status_code == 0 or s.status_code >= 400
    else:
        failed = s.status_code >= 500
    if failed or "error" in s.flags or "panic" in s.flags:
        return Status(StatusCode.ERROR)
    return Status(StatusCode.UNSET)


class OtlpSink:
    """A SpanSink exporting over OTLP; also a Prometheus collector of its own counters.

    endpoint: the full traces URL (".../v1/traces"). exe_of(pid): the traced process's
    executable path for its resource ("" if unknown). exporter: any SDK SpanExporter
    (tests); default OTLPSpanExporter(endpoint, timeout). close() exports what is queued for
    at most flush_s, then counts the rest dropped; it is idempotent.
    """

    def __init__(self, endpoint: str, *, exe_of: Callable[[int], str] = lambda pid: "",
                 exporter: SpanExporter | None = None, max_queue: int = DEFAULT_QUEUE,
                 batch: int = DEFAULT_BATCH, delay_s: float = DEFAULT_DELAY_S,
                 timeout_s: float | None = None, flush_s: float = DEFAULT_FLUSH_S,
                 environ: Mapping[str, str] = os.environ) -> None:
        self.log = structlog.get_logger("pyhttp2probe.otlp")
        self.endpoint = endpoint
        if exporter is None:
            if timeout_s is None and not any(environ.get(v) for v in _TIMEOUT_VARS):
                timeout_s = DEFAULT_TIMEOUT_S  # else the exporter reads OTEL_*_TIMEOUT
            exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout_s)
        self._exporter = exporter
        self._exe_of = exe_of
        self._max = max_queue
        self._batch = batch
        self._delay = delay_s
        self._flush_s = flush_s
        self._offset = clock_offset_ns()
        self._host = socket.gethostname()
        self._ids = RandomIdGenerator()
        self._resources: dict[tuple[int, str, str], Resource] = {}
        self._queue: collections.deque[Span] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._deadline = 0.0  # monotonic time close() stops exporting
        self.exported = 0
        self.dropped: collections.Counter[str] = collections.Counter(dict.fromkeys(
            DROP_REASONS, 0))
        self._failing = False
        self._inflight = 0  # spans of the export running now
        self._abandoned = False  # close() gave up on that export and counted it
        self._worker = threading.Thread(target=self._run, name="pyhttp2probe-otlp",
                                        daemon=True)
        self._worker.start()

    # -- SpanSink (drain thread: queue and return) -----------------------------------------
    def write(self, spans: Sequence[Span]) -> None:
        if not spans:
            return
        with self._cond:
            if self._closing:
                self.dropped["shutdown"] += len(spans)
                return
            room = self._max - len(self._queue)
            if room < len(spans):
                self.dropped["queue_full"] += len(spans) - max(room, 0)
                spans = spans[:max(room, 0)]
            self._queue.extend(spans)
            if len(self._queue) >= self._batch:
                self._cond.notify()

    def close(self) -> None:
        """Export what is queued for at most flush_s, then count the rest as dropped."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._deadline = time.monotonic() + self._flush_s
            self._cond.notify()
        self._worker.join(self._flush_s)
        with contextlib.suppress(Exception):
            self._exporter.shutdown()  # aborts the retries of an export still running
        self._worker.join(1.0)
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
            if self._worker.is_alive():  # stuck in a request: its spans are not waited for
                left += self._inflight
                self._abandoned = True
            self.dropped["shutdown"] += left
        self.log.info("otlp export closed", exported=self.exported,
                      dropped=dict(self.dropped))

    # -- worker ---------------------------------------------------------------------------
    def _take(self) -> list[Span] | None:
        """The next batch: full, or whatever waited delay_s; None once closing and empty
        (or past the flush deadline)."""
        with self._cond:
            if not self._closing and len(self._queue) < self._batch:
                self._cond.wait_for(lambda: self._closing or len(self._queue) >= self._batch,
                                    timeout=self._delay)
            if self._closing and (not self._queue or time.monotonic() >= self._deadline):
                return None
            n = min(self._batch, len(self._queue))
            self._inflight = n
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        backoff = 0.0
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            try:
                ok = self._exporter.export(self._convert(batch)) == SpanExportResult.SUCCESS
            except Exception as exc:  # an exporter bug must not stop the export thread
                self.log.error("otlp export raised", error=repr(exc))
                ok = False
            with self._cond:
                self._inflight = 0
                if self._abandoned:
                    return  # counted by close() already
                if ok:
                    self.exported += len(batch)
                else:
                    self.dropped["export_failed"] += len(batch)
            if ok:
                if self._failing:
                    self.log.info("otlp export recovered", endpoint=self.endpoint)
                self._failing, backoff = False, 0.0
                continue
            if not self._failing:
                self.log.warning("otlp export failing: spans are dropped (counted) until "
                                 "the backend takes them", endpoint=self.endpoint)
            self._failing = True
            # the exporter retried with backoff already; pause between batches too, so a
            # backend refusing at once is not hammered (the queue bounds what waits)
            backoff = min(MAX_BACKOFF_S, backoff * 2 or 0.25)
            with self._cond:
                self._cond.wait_for(lambda: self._closing, timeout=backoff)

    def _resource(self, s: Span) -> Resource:
        exe = self._exe_of(s.pid)
        key = (s.pid, s.service_name, exe)  # a reused pid runs another program: new key
        res = self._resources.get(key)
        if res is None:
            if len(self._resources) >= _RESOURCES_MAX:
                self._resources.clear()
            attrs: dict[str, Any] = {"service.name": s.service_name or "unknown_service",
                                     "process.pid": s.pid, "host.name": self._host}
            if exe:
                attrs["process.executable.path"] = exe
            res = self._resources[key] = Resource(attrs)
        return res

    def _convert(self, batch: Sequence[Span]) -> list[ReadableSpan]:
        out = []
        off = self._offset
        new_trace, new_span = self._ids.generate_trace_id, self._ids.generate_span_id
        sampled = TraceFlags(TraceFlags.SAMPLED)
        for s in batch:
            parent = None
            if s.trace_id:  # joined (pyhttp2probe/traces.py): its ids and parent
                trace = int(s.trace_id, 16)
                ctx = SpanContext(trace, int(s.span_id, 16), is_remote=False,
                                  trace_flags=sampled)
                if s.parent_span_id:
                    parent = SpanContext(trace, int(s.parent_span_id, 16), is_remote=True,
                                         trace_flags=sampled)
            else:
                ctx = SpanContext(new_trace(), new_span(), is_remote=False, trace_flags=sampled)
            out.append(ReadableSpan(
                name=span_name(s), context=ctx, parent=parent, resource=self._resource(s),
                attributes=span_attributes(s), kind=_KIND.get(s.kind, SpanKind.INTERNAL),
                status=span_status(s), start_time=(s.start_ns or s.end_ns) + off,
                end_time=s.end_ns + off, instrumentation_scope=_SCOPE))
        return out

    # -- Prometheus collector -------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        with self._cond:
            exported, dropped = self.exported, dict(self.dropped)
        yield CounterMetricFamily("pyhttp2probe_otlp_spans_exported",
                                  "Spans the OTLP backend accepted", value=exported)
        d = CounterMetricFamily("pyhttp2probe_otlp_spans_dropped",
                                "Spans not exported over OTLP, by reason (queue_full: the "
                                "bounded queue was full; export_failed: the backend did not "
                                "take them after retries; shutdown: still queued at exit)",
                                labels=["reason"])
        for reason, n in sorted(dropped.items()):
            d.add_metric([reason], n)
        yield d


def quiet_sdk_logging() -> None:
    """The SDK exporter logs every retry through stdlib logging; the sink logs the
    transitions (failing, recovered) itself and counts every loss."""
    logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
