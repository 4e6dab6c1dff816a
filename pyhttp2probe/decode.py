"""Ring-buffer records -> spans: one decoder for every probe path's record types.

Records are laid out by the structs of bpf_src/events.h (read through cffi, DESIGN rule 5).
A drained batch is split by record type (its first __u32) with numpy, each group is decoded
column-wise in one pass, and the path's RecordType.to_spans turns the columns into spans.
Per-record numpy access costs ~25 µs a record; columns cost a few µs in all.

When no sink wants Span objects (decode_batch(spans=False): the Prometheus collector alone)
a group becomes SpanColumns instead: its rows are grouped by the path's label_key (a
vectorised hash of the label fields' raw bytes), to_spans runs on one row per group, and
durations and flags stay numpy columns. With rows=True (JSON lines), the columns also
carry each row's identity, times and flags (the path's RecordType.ids), enough to write
every span's line from its group's exemplar.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from libbpf_loader import HeaderLayout

from .probes import ProbePath, RecordType
from .records import FLAG_PREFIX, Columns, DecodeContext, group_rows
from .spans import Span, SpanColumns, SpanRows


@dataclass
class Decoded:
    """One batch decoded: Span objects if they were asked for (unmatched ones included, for
    the caller to count and drop), and the matched spans as columns for aggregating sinks."""

    spans: list[Span] | None
    columns: list[SpanColumns]
    unmatched: int


class Decoder:
    """Splits batches by record type and hands each group to its path's span builder.

    Records of a type no loaded path declares, or shorter than their struct, are counted
    in `unknown` (never silently skipped).
    """

    def __init__(self, layout: HeaderLayout, paths: Iterable[ProbePath],
                 ctx: DecodeContext) -> None:
        self.ctx = ctx
        self.unknown = 0
        self._types: dict[int, tuple[RecordType, np.dtype]] = {}
        for path in paths:
            for rt in path.records:
                dt = layout.dtype(rt.struct)
                if rt.label_key is not None:
                    missing = {"start_ns", "end_ns", "flags"} - set(dt.names or ())
                    if missing:
                        raise ValueError(f"probe path {path.name}: {rt.struct} has a label_key "
                                         f"but no {', '.join(sorted(missing))}")
                self._types[layout.constants[rt.type_const]] = (rt, dt)
        self._unmatched = ctx.constant(FLAG_PREFIX + "UNMATCHED")
        self._guessed = ctx.constant(FLAG_PREFIX + "STATUS_GUESSED")

    def decode(self, batch: Any) -> list[Span]:
        """Spans of one libbpf_loader Batch (records in ring-buffer order within a type)."""
        spans: list[Span] = []
        for rt, arr in self.groups(batch):
            spans += rt.to_spans(Columns(arr, self.ctx), self.ctx)
        return spans

    def decode_batch(self, batch: Any, spans: bool, rows: bool = False) -> Decoded:
        """Columns of one batch for aggregating sinks, and Span objects only if `spans`
        (or for record types without a label_key, which have no other way). With `rows`,
        the columns also carry every row's own fields (SpanColumns.rows, for JSON lines);
        a record type without `ids` then comes as Span objects (SpanColumns.exact)."""
        out = Decoded([] if spans else None, [], 0)
        for rt, arr in self.groups(batch):
            cols = Columns(arr, self.ctx)
            one_by_one = rt.label_key is None or (rows and rt.ids is None)
            built = rt.to_spans(cols, self.ctx) if spans or one_by_one else None
            if built is not None and out.spans is not None:
                out.spans += built
            if one_by_one:
                timed = [s for s in built or () if "unmatched" not in s.flags]
                out.unmatched += len(built or ()) - len(timed)
                out.columns.append(SpanColumns.from_spans(timed))
                continue
            flags = arr["flags"]
            matched = (flags & self._unmatched) == 0
            if not matched.all():
                out.unmatched += int(len(arr) - np.count_nonzero(matched))
                if not matched.any():
                    continue  # a batch of unmatched ends only (attached mid-call)
                cols, flags = cols.select(matched), flags[matched]
            out.columns.append(self._columns(rt, cols, flags, rows))
        return out

    def _columns(self, rt: RecordType, cols: Columns, flags: np.ndarray,
                 rows: bool) -> SpanColumns:
        """Matched records as SpanColumns: one exemplar span per distinct label key (and,
        with `rows`, each row's own fields)."""
        assert rt.label_key is not None
        first, group = group_rows(rt.label_key(cols))
        exemplars = rt.to_spans(cols.select(first), self.ctx) if len(first) else []
        start, end = cols.arr["start_ns"], cols.arr["end_ns"]
        start64 = start.astype(np.int64)
        dur = np.where(start64 != 0, end.astype(np.int64) - start64, 0)
        out = SpanColumns(exemplars, group, dur, (flags & self._guessed) != 0)
        if rows:
            assert rt.ids is not None
            out.rows = SpanRows(rt.ids(cols), start, end, flags, self.ctx.flag_names)
        return out

    def groups(self, batch: Any) -> list[tuple[RecordType, np.ndarray]]:
        """The batch's records by type, as structured arrays (types in ascending order;
        records in ring-buffer order within a type)."""
        n = len(batch)
        if n == 0:
            return []
        offsets = np.frombuffer(batch.offsets, np.uint32).astype(np.int64)
        types = np.frombuffer(batch.buffer, "<u4", count=len(batch.buffer) // 4)[offsets // 4]
        first = int(types[0])
        if batch.uniform_size is not None and (types == first).all():
            known = self._types.get(first)
            if known is not None and known[1].itemsize <= batch.uniform_size:
                return [(known[0], batch.as_array(known[1]))]
        sizes = np.frombuffer(batch.sizes, np.uint32)
        words = _words(batch.buffer)
        out = []
        for t in np.unique(types).tolist():
            sel = types == t
            group = self._group(int(t), words, offsets[sel], sizes[sel])
            if group is not None:
                out.append(group)
        return out

    def _group(self, t: int, words: np.ndarray, offsets: np.ndarray,
               sizes: np.ndarray) -> tuple[RecordType, np.ndarray] | None:
        known = self._types.get(t)
        if known is None:
            self.unknown += len(offsets)
            return None
        rt, dt = known
        whole = sizes >= dt.itemsize
        if not whole.all():
            self.unknown += int((~whole).sum())
            offsets = offsets[whole]
        if len(offsets) == 0:
            return None
        # Records start 8-byte aligned: over a view of the buffer as overlapping rows of
        # whole words (row i = words i, i+1, ...), the gather takes one index per record.
        nw = -(-dt.itemsize // 8)
        starts = offsets // 8
        if int(starts.max()) + nw > len(words):  # a last record ending in a partial word
            words = np.concatenate([words, np.zeros(nw, np.uint64)])
        windows = as_strided(words, (len(words) - nw + 1, nw), (8, 8), writeable=False)
        rows = windows[starts]
        if nw * 8 != dt.itemsize:
            rows = np.ascontiguousarray(rows.view(np.uint8)[:, :dt.itemsize])
        return rt, rows.view(dt).ravel()


def _words(buffer: bytes) -> np.ndarray:
    """The batch buffer as uint64 words, zero-padded to a whole last word."""
    tail = -len(buffer) % 8
    if tail:
        buffer = buffer + bytes(tail)
    return np.frombuffer(buffer, np.uint64)


def count_labels(counts: Mapping[tuple[str, str], int], name: str) -> dict[str, int]:
    """The counts of one counted record kind, by label ({"4": 12, …})."""
    return {label: n for (kind, label), n in counts.items() if kind == name}
