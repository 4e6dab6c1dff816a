"""Span sinks: where finished spans go. The agent's drain hands every batch of spans to each
sink in turn; an exporter is one more sink and never touches the drain.

A sink is anything with `write(spans)` and `close()` (the SpanSink protocol), or, for a
sink that only aggregates, `write_columns(columns)` and `close()` (the ColumnSink protocol:
the agent then gives it the batch as SpanColumns and builds no Span object for it; the
Prometheus collector is one). A ColumnSink with `wants_rows = True` gets columns that
carry every row's own fields too (SpanColumns.rows); JSON lines are one, and a SpanSink as
well: with traces on the agent gives them Span objects instead (the joiner's ids). Sinks
run on the drain thread: they must be quick and must not block (queue and return).
"""

from __future__ import annotations

import json
import operator
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, TextIO, runtime_checkable

import numpy as np

from .spans import Span, SpanColumns


@runtime_checkable
class SpanSink(Protocol):
    """Receives each batch of finished spans (never unmatched ones) on the drain thread."""

    def write(self, spans: Sequence[Span]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ColumnSink(Protocol):
    """Receives each batch of finished spans (never unmatched ones) as columns, one
    SpanColumns per record group, on the drain thread. A sink with write_columns gets
    only these, never write(spans)."""

    def write_columns(self, columns: Sequence[SpanColumns]) -> None: ...

    def close(self) -> None: ...


_STR = json.encoder.encode_basestring_ascii  # what json.dumps uses (ensure_ascii)
_LINE = ('{"kind":%s,"pid":%d,"connection":%d,"stream_id":%d,"start_ns":%d,"end_ns":%d,'
         '"status_code":%d,"service":%s,"method":%s,"full_method":%s,"server_address":%s,'
         '"server_port":%d,"flags":[%s],"service_name":%s,"call":%d%s%s,"duration_s":%s}\n')


def json_line(s: Span) -> str:
    """`json.dumps(s.to_json(), separators=(",", ":"))` and a newline, the same text
    (tests/test_metrics_columns.py) for about a third of the cost: one format string."""
    attrs = ""
    if s.attributes:
        attrs = ',"attributes":' + json.dumps(s.attributes, separators=(",", ":"))
    ids = ""
    if s.trace_id:
        ids = (f',"trace_id":"{s.trace_id}","span_id":"{s.span_id}",'
               f'"parent_span_id":"{s.parent_span_id}"')
    return _LINE % (_STR(s.kind), s.pid, s.connection, s.stream_id, s.start_ns, s.end_ns,
                    s.status_code, _STR(s.service), _STR(s.method), _STR(s.full_method),
                    _STR(s.server_address), s.server_port, ",".join(map(_STR, s.flags)),
                    _STR(s.service_name), s.call, attrs, ids, float.__repr__(s.duration_s))


def _group_format(e: Span, path_per_row: bool) -> str:
    """json_line() of a span like `e` (its group's exemplar), its per-row fields left as
    placeholders, in this order: connection, stream_id, start_ns, end_ns, full_method
    (JSON text; only if `path_per_row`), flags (JSON texts, comma-joined), call,
    duration_s. Trace ids are never there: SpanColumns come with traces off."""
    def q(text: str) -> str:  # constant text inside a %-format
        return text.replace("%", "%%")

    attrs = ""
    if e.attributes:
        attrs = q(',"attributes":' + json.dumps(e.attributes, separators=(",", ":")))
    full = "%s" if path_per_row else q(_STR(e.full_method))
    return (f'{{"kind":{q(_STR(e.kind))},"pid":{e.pid:d},"connection":%d,"stream_id":%d,'
            f'"start_ns":%d,"end_ns":%d,"status_code":{e.status_code:d},'
            f'"service":{q(_STR(e.service))},"method":{q(_STR(e.method))},'
            f'"full_method":{full},"server_address":{q(_STR(e.server_address))},'
            f'"server_port":{e.server_port:d},"flags":[%s],'
            f'"service_name":{q(_STR(e.service_name))},"call":%d{attrs},"duration_s":%r}}\n')


def column_lines(cols: SpanColumns) -> str:
    """json_line() of every row of `cols`, in row order, without a Span per row: each
    group's constant text is rendered once (_group_format), each row adds its numbers
    (and its HTTP path). Needs cols.rows, or cols.exact (its exemplars are the rows)."""
    rows = cols.rows
    if rows is None:
        if not cols.exact:
            raise ValueError("SpanColumns without rows: decode with rows=True")
        return "".join(map(json_line, cols.exemplars))
    ids = rows.ids
    path = ids.full_method
    fmts = np.array([_group_format(e, path is not None) for e in cols.exemplars],
                    dtype=object)[cols.group]
    bits, which = np.unique(rows.flags, return_inverse=True)
    flags = np.array([",".join(map(_STR, rows.flag_names(b))) for b in bits.tolist()],
                     dtype=object)[which.reshape(-1)]
    dur = (cols.duration_ns / 1e9).tolist()  # what Span.duration_s computes, row by row
    per_row = [ids.connection.tolist(), ids.stream_id.tolist(), rows.start_ns.tolist(),
               rows.end_ns.tolist(), flags.tolist(), ids.call.tolist(), dur]
    if path is not None:
        per_row.insert(4, list(map(_STR, path)))
    return "".join(map(operator.mod, fmts.tolist(), zip(*per_row, strict=True)))


class JsonLinesSink:
    """Write spans as JSON lines; '-' means stdout. close() is idempotent.

    Both a SpanSink and a ColumnSink that wants rows (`wants_rows`): with traces off the
    agent gives it each batch as SpanColumns with rows, and it writes the same lines
    without a Span object per span; with traces on, Span objects (they carry the ids).
    """

    wants_rows = True

    def __init__(self, target: str | Path | TextIO) -> None:
        self._own = False
        if isinstance(target, str | Path):
            if str(target) == "-":
                self._f: TextIO = sys.stdout
            else:
                self._f = open(target, "a", encoding="utf-8")  # noqa: SIM115 - owned
                self._own = True
        else:
            self._f = target
        self._lock = threading.Lock()
        self._closed = False

    def write(self, spans: Sequence[Span]) -> None:
        self._write("".join(map(json_line, spans)))

    def write_columns(self, columns: Sequence[SpanColumns]) -> None:
        self._write("".join(column_lines(c) for c in columns if len(c)))

    def _write(self, lines: str) -> None:
        if not lines:
            return
        with self._lock:
            if self._closed:
                return
            self._f.write(lines)
            self._f.flush()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._own:
                self._f.close()


_END = object()


class SpanQueue:
    """The library iterator: spans queued for `spans()`, which ends when the sink closes.

    `max_spans` bounds the spans queued (0: unbounded); when full, the oldest are not kept:
    new spans are counted in `dropped` instead, so a consumer that stops iterating costs
    bounded memory and the loss is visible. A batch is queued as one list (one lock round
    per batch, not per span); each iterator takes whole batches.
    """

    def __init__(self, max_spans: int = 0) -> None:
        self._q: queue.Queue[object] = queue.Queue()
        self._max = max_spans
        self._lock = threading.Lock()
        self._queued = 0  # spans in _q
        self.dropped = 0

    def write(self, spans: Sequence[Span]) -> None:
        if not spans:
            return
        batch = list(spans)
        with self._lock:
            if self._max:
                room = max(0, self._max - self._queued)
                if room < len(batch):
                    self.dropped += len(batch) - room
                    batch = batch[:room]
                if not batch:
                    return
            self._queued += len(batch)
        self._q.put_nowait(batch)

    def close(self) -> None:
        self._q.put(_END)

    def spans(self, timeout: float | None = None) -> Iterator[Span]:
        """Spans as they finish; ends when the sink closes, or after `timeout` idle s."""
        while True:
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                return
            if item is _END:
                self._q.put(_END)  # let other iterators end too
                return
            batch: list[Span] = item  # type: ignore[assignment]
            with self._lock:
                self._queued -= len(batch)
            yield from batch
