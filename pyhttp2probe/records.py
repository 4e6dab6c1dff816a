"""Reading ring-buffer records: the layouts they were written with, a group of same-type
records as columns, and the context span builders need (service names, flag names,
memoised text, counters). Probe paths build spans from these; decode.py routes batches.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from libbpf_loader import HeaderLayout

from .assets import bpf_asset

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
                 service_name: Callable[[int], str] = lambda pid: "",
                 literal: Callable[[int, int, int], str | None] = lambda pid, a, n: None
                 ) -> None:
        self.layout = layout
        self.service_name = service_name
        self.literal = literal  # (pid, address, length) -> a Go string literal's text
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


# Odd 64-bit multipliers, one per key word: a row's hash is the wrapping sum of word * mult.
_MULT = (np.arange(1, 4097, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)


def group_rows(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with equal keys (Columns.key) as groups numbered in the order they first occur:
    returns (first row of each group, group of each row).

    One 64-bit hash per row (vectorised), numpy.unique on the hashes, then every row is
    compared with its group's first row; should two keys share a hash, the exact (slower)
    numpy.unique over the whole keys decides instead."""
    n, w = words.shape
    if n == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    h = np.einsum("ij,j->i", words, _MULT[:w]) if w <= len(_MULT) else None
    if h is not None:
        _, first, inv = np.unique(h, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
    if h is None or not (words == words[first[inv]]).all():
        keys = np.ascontiguousarray(words).view(f"V{8 * w}").reshape(-1)
        _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inv]


@functools.lru_cache(maxsize=256)
def _key_mask(dtype: np.dtype, spans: tuple[tuple[int, int], ...]) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """The words of a `dtype` record that hold any of these (offset, size) byte spans, and
    per such word the mask of those bytes."""
    raw = np.zeros(-(-dtype.itemsize // 8) * 8, np.uint8)
    for off, size in spans:
        raw[off:off + size] = 0xFF
    mask = raw.view(np.uint64)
    used = np.flatnonzero(mask)
    return used, mask[used]


def _record_words(arr: np.ndarray) -> np.ndarray:
    """The records as (rows, words) uint64 (a view when they are contiguous, 8-byte sized)."""
    n, size = len(arr), arr.dtype.itemsize
    if size % 8 == 0 and arr.flags.c_contiguous:
        return arr.view(np.uint64).reshape(n, size // 8)
    raw = np.zeros((n, -(-size // 8) * 8), np.uint8)
    raw[:, :size] = np.ascontiguousarray(arr).view(np.uint8).reshape(n, size)
    return raw.view(np.uint64)


class Columns:
    """A group of same-type records, field by field as Python lists."""

    def __init__(self, arr: np.ndarray, ctx: DecodeContext) -> None:
        self.arr = arr
        self.ctx = ctx

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, name: str) -> list[Any]:
        return self.arr[name].tolist()

    def select(self, rows: np.ndarray) -> Columns:
        """These rows only (an index or boolean array), in that order."""
        return Columns(self.arr[rows], self.ctx)

    def nonzero(self, name: str) -> np.ndarray:
        """1 where the field is non-zero, else 0 (as uint8): a key part for "is it set"."""
        return (self.arr[name] != 0).astype(np.uint8)

    def key(self, *parts: str | tuple[str, str] | np.ndarray) -> np.ndarray:
        """Each row's raw bytes of some fields, and of per-row arrays (e.g. nonzero()), as a
        (rows, words) uint64 array for group_rows(). A part is a field name, a (text field,
        length field) pair, or an array.

        A text goes in with its length, and only up to the longest length in this batch:
        texts() reads no byte past a row's length, so equal keys mean equal texts."""
        n = len(self.arr)
        dt = self.arr.dtype
        spans: list[tuple[int, int]] = []
        extra = []
        for p in parts:
            if isinstance(p, str):
                ft, off = dt.fields[p][:2]
                spans.append((off, ft.itemsize))
            elif isinstance(p, tuple):
                text, length = p
                ft, off = dt.fields[text][:2]
                lt, loff = dt.fields[length][:2]
                longest = int(self.arr[length].max()) if n else 0
                spans += [(off, min(longest, ft.itemsize)), (loff, lt.itemsize)]
            else:
                a = np.ascontiguousarray(p)
                row_bytes = a.itemsize * int(np.prod(a.shape[1:], dtype=np.int64))
                extra.append(a.view(np.uint8).reshape(n, row_bytes))
        used, mask = _key_mask(dt, tuple(spans))
        width = sum(e.shape[1] for e in extra)
        out = np.empty((n, len(used) + (width + 7) // 8), np.uint64)
        np.bitwise_and(_record_words(self.arr)[:, used], mask, out=out[:, :len(used)])
        if extra:
            out[:, len(used):] = 0
            raw = out[:, len(used):].view(np.uint8)
            at = 0
            for e in extra:
                raw[:, at:at + e.shape[1]] = e
                at += e.shape[1]
        return out

    def texts(self, name: str, len_name: str) -> list[str]:
        """A char[] field cut at its length field, trailing NULs dropped, decoded as UTF-8
        (memoised). No byte past a row's length is read (Columns.key relies on it)."""
        memo = self.ctx.texts
        out = []
        for raw, n in zip(self.arr[name].tolist(), self.arr[len_name].tolist(), strict=True):
            raw = raw[:n]  # tolist() dropped the field's trailing NULs: raw[:n] may end
            if raw[-1:] == b"\0":  # on a NUL only where the row's text itself does
                raw = raw.rstrip(b"\0")
            s = memo.get(raw)
            if s is None:
                s = raw.decode("utf-8", "replace")
                if len(memo) < _MEMO_MAX:
                    memo[raw] = s
            out.append(s)
        return out

    def literals(self, addr_name: str, len_name: str) -> list[str]:
        """Go string literals sent by address (pyhttp2probe/literals.py), like texts(); one
        that cannot be read any more is "" (counted as ("literal_unread", pid))."""
        memo: dict[tuple[int, int, int], str] = {}  # a batch has few distinct methods
        out = []
        for key in zip(self.arr["tgid"].tolist(), self.arr[addr_name].tolist(),
                       self.arr[len_name].tolist(), strict=True):
            s = memo.get(key)
            if s is None:
                got = self.ctx.literal(*key)
                if got is None:
                    self.ctx.count("literal_unread", str(key[0]))
                    got = ""
                s = memo[key] = got.rstrip("\0") if got.endswith("\0") else got
            out.append(s)
        return out

    def methods(self, text_name: str, len_name: str, addr_name: str) -> list[str]:
        """A text field that a row may send by address instead (addr_name not 0: a literal
        of the binary, as literals() reads; else the text, as texts())."""
        out = self.texts(text_name, len_name)
        rows = np.flatnonzero(self.arr[addr_name])
        if len(rows):
            for i, s in zip(rows.tolist(), self.select(rows).literals(addr_name, len_name),
                            strict=True):
                out[i] = s
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
