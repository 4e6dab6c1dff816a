"""Ring-buffer records -> spans: one decoder for every probe path's record types.

Records are laid out by the structs of bpf_src/events.h (read through cffi, DESIGN rule 5).
A drained batch is split by record type (its first __u32) with numpy, each group is decoded
column-wise in one pass, and the path's RecordType.to_spans turns the columns into spans.
Per-record numpy access costs ~25 µs a record; columns cost a few µs in all.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from libbpf_loader import HeaderLayout

from .assets import bpf_asset
from .probes import ProbePath, RecordType
from .spans import Span

HEADERS = ("events.h", "config.h")
FLAG_PREFIX = "SPAN_F_"
_MEMO_MAX = 4096  # distinct strings/addresses remembered; a program has few


def load_layout() -> HeaderLayout:
    """The record and config layouts the shipped BPF objects were built with."""
    return HeaderLayout([bpf_asset(h) for h in HEADERS])


def _ip_text(raw: bytes) -> str:
    if not any(raw):
        return ""
    addr = ipaddress.IPv6Address(raw)
    return str(addr.ipv4_mapped or addr)


class DecodeContext:
    """What span builders need beyond the records: the traced program's service name, the
    flag names, memoised text, and counters for records that are only counted."""

    def __init__(self, layout: HeaderLayout,
                 service_name: Callable[[int], str] = lambda pid: "") -> None:
        self.layout = layout
        self.service_name = service_name
        self._flags = sorted(layout.prefixed(FLAG_PREFIX).items(), key=lambda kv: kv[1])
        self._flag_memo: dict[int, tuple[str, ...]] = {0: ()}
        self.texts: dict[bytes, str] = {}
        self.ips: dict[bytes, str] = {}
        self.counts: Counter[tuple[str, str]] = Counter()

    def constant(self, name: str) -> int:
        return self.layout.constants[name]

    def flag_names(self, flags: int) -> tuple[str, ...]:
        """Names of the set SPAN_F_* bits (memoised: few distinct combinations occur)."""
        names = self._flag_memo.get(flags)
        if names is None:
            names = tuple(n for n, bit in self._flags if flags & bit)
            if len(self._flag_memo) < _MEMO_MAX:
                self._flag_memo[flags] = names
        return names

    def count(self, name: str, label: str, n: int = 1) -> None:
        """A record that is counted, not spanned (e.g. a rejected RPC by status code)."""
        self.counts[(name, label)] += n


class Columns:
    """A group of same-type records, field by field as Python lists."""

    def __init__(self, arr: np.ndarray, ctx: DecodeContext) -> None:
        self.arr = arr
        self.ctx = ctx

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, name: str) -> list[Any]:
        return self.arr[name].tolist()

    def texts(self, name: str, len_name: str) -> list[str]:
        """A char[] field cut at its length field, decoded as UTF-8 (memoised)."""
        memo = self.ctx.texts
        out = []
        for raw, n in zip(self.arr[name].tolist(), self.arr[len_name].tolist(), strict=True):
            raw = raw[:n]
            s = memo.get(raw)
            if s is None:
                s = raw.decode("utf-8", "replace")
                if len(memo) < _MEMO_MAX:
                    memo[raw] = s
            out.append(s)
        return out

    def ips(self, name: str) -> list[str]:
        """A __u8[16] IPv6 (or IPv4-mapped) field as text; "" when all zero (memoised)."""
        col = np.ascontiguousarray(self.arr[name]).view("V16").ravel().tolist()
        memo = self.ctx.ips
        out = []
        for raw in col:
            raw = bytes(raw)
            s = memo.get(raw)
            if s is None:
                s = _ip_text(raw)
                if len(memo) < _MEMO_MAX:
                    memo[raw] = s
            out.append(s)
        return out


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
