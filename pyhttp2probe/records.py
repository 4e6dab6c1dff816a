"""Reading ring-buffer records: the layouts they were written with, a group of same-type
records as columns, and the context span builders need (service names, flag names,
memoised text, counters). Probe paths build spans from these; decode.py routes batches.
"""

from __future__ import annotations

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
