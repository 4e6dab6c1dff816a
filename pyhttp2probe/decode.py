"""Ring-buffer records -> spans: one decoder for every probe path's record types.

Records are laid out by the structs of bpf_src/events.h (read through cffi, DESIGN rule 5).
A drained batch is split by record type (its first __u32) with numpy, each group is decoded
column-wise in one pass, and the path's RecordType.to_spans turns the columns into spans.
Per-record numpy access costs ~25 µs a record; columns cost a few µs in all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from libbpf_loader import HeaderLayout

from .probes import ProbePath, RecordType
from .records import Columns, DecodeContext
from .spans import Span


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
                self._types[layout.constants[rt.type_const]] = (rt, layout.dtype(rt.struct))

    def decode(self, batch: Any) -> list[Span]:
        """Spans of one libbpf_loader Batch (records in ring-buffer order within a type)."""
        n = len(batch)
        if n == 0:
            return []
        buf = np.frombuffer(batch.buffer, np.uint8)
        offsets = np.frombuffer(batch.offsets, np.uint32).astype(np.int64)
        sizes = np.frombuffer(batch.sizes, np.uint32)
        types = np.frombuffer(batch.buffer, "<u4", count=len(batch.buffer) // 4)[offsets // 4]
        first = int(types[0])
        if batch.uniform_size is not None and (types == first).all():
            return self._one_type(first, batch, buf, offsets, sizes)
        spans: list[Span] = []
        for t in np.unique(types).tolist():
            sel = types == t
            spans += self._group(int(t), buf, offsets[sel], sizes[sel])
        return spans

    def _one_type(self, t: int, batch: Any, buf: np.ndarray, offsets: np.ndarray,
                  sizes: np.ndarray) -> list[Span]:
        known = self._types.get(t)
        if known is not None and known[1].itemsize <= batch.uniform_size:
            rt, dt = known
            return rt.to_spans(Columns(batch.as_array(dt), self.ctx), self.ctx)
        return self._group(t, buf, offsets, sizes)

    def _group(self, t: int, buf: np.ndarray, offsets: np.ndarray,
               sizes: np.ndarray) -> list[Span]:
        known = self._types.get(t)
        if known is None:
            self.unknown += len(offsets)
            return []
        rt, dt = known
        whole = sizes >= dt.itemsize
        if not whole.all():
            self.unknown += int((~whole).sum())
            offsets = offsets[whole]
        if len(offsets) == 0:
            return []
        rows = buf[offsets[:, None] + np.arange(dt.itemsize)]
        arr = rows.view(dt).ravel()
        return rt.to_spans(Columns(arr, self.ctx), self.ctx)


def count_labels(counts: Mapping[tuple[str, str], int], name: str) -> dict[str, int]:
    """The counts of one counted record kind, by label ({"4": 12, …})."""
    return {label: n for (kind, label), n in counts.items() if kind == name}
