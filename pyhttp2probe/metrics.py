"""Prometheus export of RPC spans and of the agent's own health, as one custom Collector.

State is updated by the drain thread and read at scrape time: collect() copies it under a
lock and builds the metric families outside it, so a scrape never stalls the drain.

The agent hands the collector each batch as columns (write_columns: a SpanColumns per
record group) and it aggregates a whole batch with numpy: bucket of every row
(searchsorted), counts per (label set, bucket) and duration sums per label set (bincount),
then one update per label set of the batch. observe_spans() takes Span objects one by one
and is the reference the column path must equal (tests/test_metrics_columns.py).

Exemplars (OpenMetrics): observe_exemplar(span) keeps, per series and bucket, the most
recent span that has a trace id (the trace joiner calls it; counts are not touched), and
collect() puts it on that bucket as {trace_id, span_id} with the span's duration and end
time. It lives in the series' _Hist, so it goes when the series expires: at most one per
bucket per series. The classic text format does not carry exemplars.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, CollectorRegistry
from prometheus_client.samples import Exemplar

from .spans import Span, SpanColumns, clock_offset_ns

# Loopback gRPC takes tens of µs; peers start at 5 ms and see nothing below.
DEFAULT_BUCKETS: tuple[float, ...] = (
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3,
    250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0,
)
RPC_LABELS = ("rpc_system", "rpc_service", "rpc_method", "rpc_grpc_status_code",
              "server_address", "server_port", "service_name")
HTTP_LABELS = ("http_request_method", "http_response_status_code", "server_address",
               "server_port", "network_protocol_version", "service_name")
# span.kind -> (histogram name, help, label names); rpc_client stays the default family.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "grpc_client": ("rpc_client_duration_seconds",
                    "Duration of gRPC client calls, traced by uprobes", RPC_LABELS),
    "grpc_server": ("rpc_server_duration_seconds",
                    "Duration of gRPC server calls, traced by uprobes", RPC_LABELS),
    "http_client": ("http_client_request_duration_seconds",
                    "Duration of HTTP/2 client requests, traced by uprobes", HTTP_LABELS),
    "http_server": ("http_server_request_duration_seconds",
                    "Duration of HTTP/2 server requests, traced by uprobes", HTTP_LABELS),
}
OTHER = "_OTHER"


@dataclass
class _Hist:
    counts: list[int]
    total_ns: int = 0  # exact; exported in seconds
    updated: float = 0.0  # time.monotonic() of the last observation
    # per bucket: (end_ns, trace_id, span_id, duration_ns) of its most recent exemplar
    # span, or None; the list is made at the series' first exemplar
    exemplars: list[tuple[int, str, str, int] | None] | None = None


@dataclass
class _State:
    hists: dict[tuple[str, ...], _Hist] = field(default_factory=dict)
    events: int = 0
    ringbuf_drops: int = 0
    unmatched: dict[str, int] = field(default_factory=dict)
    attached: int = 0
    by_service: dict[str, int] = field(default_factory=dict)
    # every reason exported from the start (at 0), so dashboards see the series before
    # the first error (targets.TargetError.reason)
    attach_errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("no_process", "not_go", "unsupported", "no_probes", "permission", "attach"), 0))
    status_guessed: int = 0
    folded: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class RpcMetrics:
    """Collector of the span histograms (FAMILIES, by span kind) and `pyhttp2probe_*`; a
    SpanSink of the agent (write() observes a batch of spans).

    Distinct label sets are capped (`max_label_sets`): method names come from the traced
    program's callers, so an excess set is folded into rpc_service/rpc_method="_OTHER".

    A ColumnSink: the agent gives it columns (write_columns), never Span objects; write()
    and observe_spans() take spans (other producers, tests) and give the same series.
    """

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS, max_label_sets: int = 1000,
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        self.buckets = tuple(sorted(float(b) for b in buckets))
        self._bounds = np.array(self.buckets, dtype=np.float64)
        self.max_label_sets = max_label_sets
        # Unix epoch ns minus CLOCK_MONOTONIC ns (the spans' clock), measured once, as the
        # OTLP exporter does: exemplar timestamps of one series never go backwards
        self._epoch_offset_ns = clock_offset_ns()
        self._lock = threading.Lock()
        self._state = _State()
        if registry is not None:
            registry.register(self)

    # -- updates (drain thread) -------------------------------------------------------
    def write(self, spans: Sequence[Span]) -> None:
        self.observe_spans(spans)

    def close(self) -> None:
        """Nothing to release: the series stay readable after the agent stops."""

    def write_columns(self, columns: Sequence[SpanColumns]) -> None:
        """Add a batch of finished spans given as columns (the agent's path): the same
        series as observe_spans() of the same spans in the same order."""
        for cols in columns:
            if len(cols):
                self._observe_columns(cols)

    def observe_spans(self, spans: Iterable[Span]) -> None:
        """Add finished spans to the histograms one by one (unmatched ones are not timed)."""
        prepared = []
        for s in spans:
            if "unmatched" in s.flags:
                continue
            prepared.append((span_labels(s), s.end_ns - s.start_ns if s.start_ns else 0,
                             "status_guessed" in s.flags))
        now = time.monotonic()
        with self._lock:
            st = self._state
            for labels, dur, guessed in prepared:
                h = self._hist(labels, 1)
                h.counts[bisect.bisect_left(self.buckets, dur / 1e9)] += 1
                h.total_ns += dur
                h.updated = now
                st.status_guessed += guessed

    def observe_exemplar(self, span: Span) -> None:
        """Make `span` the exemplar of the bucket it falls in, in the series its label set
        is counted in (its own, or _OTHER when the cap folded it), unless that bucket's
        exemplar ended later. Counts are not touched: the span was (or will be) observed
        through write_columns. Ignored: no trace id, no start (unmatched), or no such
        series (never observed, or expired)."""
        if not span.trace_id or not span.start_ns:
            return
        labels = span_labels(span)
        dur = span.end_ns - span.start_ns
        b = bisect.bisect_left(self.buckets, dur / 1e9)
        with self._lock:
            h = self._state.hists.get(self._series(labels))
            if h is None:
                return
            ex = h.exemplars
            if ex is None:
                ex = h.exemplars = [None] * (len(self.buckets) + 1)
            old = ex[b]
            if old is None or old[0] <= span.end_ns:
                ex[b] = (span.end_ns, span.trace_id, span.span_id, dur)

    def _series(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        """The label set an observation of `labels` is counted in now: its own when that
        is a series or there is room under the cap for it, else its _OTHER set. Caller
        holds the lock."""
        hists = self._state.hists
        if labels in hists or len(hists) < self.max_label_sets:
            return labels
        return _fold(labels)

    def _hist(self, labels: tuple[str, ...], n: int) -> _Hist:
        """The histogram of a label set, made if there is room under the cap, else the
        _OTHER one (`n` observations counted as folded). Caller holds the lock."""
        st = self._state
        key = self._series(labels)
        if key is not labels:  # _fold made it
            st.folded += n
        h = st.hists.get(key)
        if h is None:
            h = st.hists[key] = _Hist([0] * (len(self.buckets) + 1))
        return h

    def _observe_columns(self, cols: SpanColumns) -> None:
        """One batch, vectorised. Label sets are taken in the order they first occur, so
        the cap admits and folds exactly the sets observe_spans() would: a set is admitted
        at its first observation if there is room then, and room only shrinks."""
        ids: dict[tuple[str, ...], int] = {}
        lut = np.fromiter((ids.setdefault(span_labels(e), len(ids)) for e in cols.exemplars),
                          dtype=np.intp, count=len(cols.exemplars))
        idx = lut[cols.group]
        nb = len(self.buckets) + 1
        dur = cols.duration_ns
        bucket = np.searchsorted(self._bounds, dur / 1e9, side="left")
        counts = np.bincount(idx * nb + bucket, minlength=len(ids) * nb).reshape(len(ids), nb)
        if int(np.abs(dur).sum()) < 2**53:  # float64 sums of integers are exact below it
            sums = np.bincount(idx, weights=dur, minlength=len(ids)).astype(np.int64)
        else:
            sums = np.zeros(len(ids), np.int64)
            np.add.at(sums, idx, dur)
        totals = counts.sum(axis=1).tolist()
        counts_l, sums_l = counts.tolist(), sums.tolist()
        guessed = int(np.count_nonzero(cols.status_guessed))
        now = time.monotonic()
        with self._lock:
            for i, labels in enumerate(ids):
                h = self._hist(labels, totals[i])
                h.counts = [a + b for a, b in zip(h.counts, counts_l[i], strict=True)]
                h.total_ns += sums_l[i]
                h.updated = now
            self._state.status_guessed += guessed

    def add_events(self, n: int) -> None:
        with self._lock:
            self._state.events += n

    def set_kernel_counts(self, ringbuf_drops: int, unmatched: Mapping[str, int]) -> None:
        """Cumulative kernel-side counters of every object, read together."""
        with self._lock:
            st = self._state
            st.ringbuf_drops = max(st.ringbuf_drops, ringbuf_drops)
            for kind, total in unmatched.items():
                st.unmatched[kind] = max(st.unmatched.get(kind, 0), total)

    def set_ringbuf_drops(self, total: int) -> None:
        """Kernel-side cumulative count of failed reservations."""
        with self._lock:
            self._state.ringbuf_drops = max(self._state.ringbuf_drops, total)

    def set_unmatched(self, kind: str, total: int) -> None:
        with self._lock:
            self._state.unmatched[kind] = max(self._state.unmatched.get(kind, 0), total)

    def set_server_rejected(self, by_code: dict[int, int]) -> None:
        """Cumulative gRPC server RPCs rejected before any handler ran, by status code."""
        with self._lock:
            for code, n in by_code.items():
                k = str(code)
                self._state.rejected[k] = max(self._state.rejected.get(k, 0), n)

    def set_attached(self, n: int, by_service: Mapping[str, int] | None = None) -> None:
        """Processes traced now, in all and by service_name."""
        with self._lock:
            self._state.attached = n
            self._state.by_service = dict(by_service or {})

    def expire(self, ttl_s: float) -> int:
        """Drop every series with no observation for `ttl_s` (an exited process's, a
        restarted one's old listener port, a method no longer called): memory follows the
        traffic, not its history. Counters never go backwards while they exist; one that
        comes back starts from 0, which Prometheus reads as a reset. Returns how many
        label sets went."""
        cutoff = time.monotonic() - ttl_s
        with self._lock:
            hists = self._state.hists
            gone = [k for k, h in hists.items() if h.updated < cutoff]
            for k in gone:
                del hists[k]
        return len(gone)

    def add_attach_error(self, reason: str = "other") -> None:
        with self._lock:
            errs = self._state.attach_errors
            errs[reason] = errs.get(reason, 0) + 1

    # -- scrape -------------------------------------------------------------------------
    def _snapshot(self) -> _State:
        with self._lock:
            st = self._state
            return _State(
                hists={k: _Hist(list(v.counts), v.total_ns, 0.0,
                                list(v.exemplars) if v.exemplars else None)
                       for k, v in st.hists.items()},
                events=st.events, ringbuf_drops=st.ringbuf_drops,
                unmatched=dict(st.unmatched), attached=st.attached,
                by_service=dict(st.by_service),
                attach_errors=dict(st.attach_errors), status_guessed=st.status_guessed,
                folded=st.folded, rejected=dict(st.rejected))

    def collect(self) -> Iterator[Metric]:
        st = self._snapshot()
        bounds = [*(_fmt(b) for b in self.buckets), "+Inf"]
        for kind, (name, doc, names) in FAMILIES.items():
            hist = HistogramMetricFamily(name, doc, labels=names, unit="seconds")
            for labels, h in st.hists.items():
                if labels[0] != kind:
                    continue
                acc, cum = 0, []
                exemplars = h.exemplars or [None] * len(bounds)
                for bound, c, ex in zip(bounds, h.counts, exemplars, strict=True):
                    acc += c
                    cum.append((bound, acc, self._exemplar(ex)) if ex else (bound, acc))
                hist.add_metric(list(labels[1:]), cum, h.total_ns / 1e9)
            yield hist
        yield _counter("pyhttp2probe_events", "Records decoded from the ring buffer", st.events)
        yield _counter("pyhttp2probe_ringbuf_drops",
                       "Records lost because the ring buffer was full", st.ringbuf_drops)
        un = CounterMetricFamily("pyhttp2probe_unmatched", "Ends without a start, and other "
                                 "pairing failures", labels=["kind"])
        for kind, n in sorted(st.unmatched.items()):
            un.add_metric([kind], n)
        yield un
        rej = CounterMetricFamily(
            "pyhttp2probe_grpc_server_rejected", "gRPC server RPCs rejected before any "
            "handler ran (InTapHandle, content-type, headers): no span",
            labels=["rpc_grpc_status_code"])
        for code, n in sorted(st.rejected.items(), key=lambda kv: int(kv[0])):
            rej.add_metric([code], n)
        yield rej
        yield GaugeMetricFamily("pyhttp2probe_attached_processes", "Processes traced now",
                                value=st.attached)
        inst = GaugeMetricFamily("pyhttp2probe_instrumented_processes",
                                 "Processes traced now, by service_name",
                                 labels=["service_name"])
        for name, n in sorted(st.by_service.items()):
            inst.add_metric([name], n)
        yield inst
        errs = CounterMetricFamily("pyhttp2probe_attach_errors", "Failed attaches, by reason",
                                   labels=["reason"])
        for reason, n in sorted(st.attach_errors.items()):
            errs.add_metric([reason], n)
        yield errs
        yield _counter("pyhttp2probe_status_guessed",
                       "Calls whose status code was guessed as Unknown", st.status_guessed)
        yield _counter("pyhttp2probe_label_sets_folded",
                       "Observations folded into _OTHER by the label-set cap", st.folded)

    def _exemplar(self, ex: tuple[int, str, str, int]) -> Exemplar:
        end_ns, trace_id, span_id, dur = ex
        return Exemplar({"trace_id": trace_id, "span_id": span_id}, dur / 1e9,
                        (end_ns + self._epoch_offset_ns) / 1e9)


def span_labels(s: Span) -> tuple[str, ...]:
    """The histogram key of a span: its kind (the family), then the family's label values."""
    kind = s.kind if s.kind in FAMILIES else "grpc_client"
    if kind.startswith("http_"):
        return (kind, s.method, str(s.status_code), s.server_address, str(s.server_port),
                s.attributes.get("network.protocol.version", ""), s.service_name)
    return (kind, "grpc", s.service, s.method, str(s.status_code), s.server_address,
            str(s.server_port), s.service_name)


def _fold(labels: tuple[str, ...]) -> tuple[str, ...]:
    """The _OTHER label set of an observation (labels[0] is the span kind)."""
    if labels[0].startswith("http_"):  # method is the untrusted one; status is bounded
        return (labels[0], OTHER, *labels[2:])
    return (labels[0], labels[1], OTHER, OTHER, *labels[4:])


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _fmt(b: float) -> str:
    return repr(b) if b != int(b) else f"{b:.1f}"
