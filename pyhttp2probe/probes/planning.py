"""Helpers every probe path uses to turn an attach plan into BPF config: field offsets with
their Go types, pointer chains, probe offsets of functions. One place, shared by all paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..goelf import AttachPlan
from ..goelf.catalog import call_key
from ..targets import TargetError
from . import AttachPoint, PathSkipped, ProcessImage

ITAB_FUN0_AMD64 = 24  # runtime.itab{inter, _type, hash uint32, _ [4]byte, fun [1]uintptr}
_TRANSPORT = "google.golang.org/grpc/internal/transport"
# Where a gRPC call served by (*grpc.Server).ServeHTTP ends (renamed in v1.69). The gRPC
# server path probes it; the HTTP/2 path records request contexts only when it is linked.
SERVE_HTTP_ENDS = (_TRANSPORT + ".(*serverHandlerTransport).writeStatus",
                   _TRANSPORT + ".(*serverHandlerTransport).WriteStatus")


class PlanFields:
    """Field offsets of a plan by "pkg.Type.field", with the field's Go type."""

    def __init__(self, plan: AttachPlan) -> None:
        self.plan = plan

    def has(self, key: str) -> bool:
        return self.plan.fields.get(key) is not None

    def __getitem__(self, key: str) -> int:
        off = self.plan.fields.get(key)
        if off is None:
            raise PathSkipped(f"{self.plan.path}: no offset for field {key} in the attach plan "
                              f"(offsets from {self.plan.offsets_source})")
        return int(off)

    def go_type(self, key: str) -> str:
        name = self.plan.field_types.get(key)
        if name is None:
            raise PathSkipped(f"{self.plan.path}: the plan gives no Go type for {key}")
        return name

    def is_pointer(self, key: str) -> bool:
        """Whether the field holds a pointer (an embedded *T rather than T)."""
        return self.go_type(key).startswith("*")


def set_chain(cfg: Any, name: str, hops: list[int], last: int) -> None:
    """Fill the struct go_chain `name` of a config: follow `hops` pointers, then add `last`."""
    c = getattr(cfg, name)
    c.valid = 1
    c.nhops = len(hops)
    for i, h in enumerate(hops):
        c.hop[i] = h
    c.last = last


def probe_offset(plan: AttachPlan, symbol: str) -> int | None:
    """File offset for an entry probe of `symbol` (past Go's stack check, where it fires
    once per call; goelf computes it with the plan), or None when it is not linked."""
    fo = plan.functions.get(symbol)
    return None if fo is None else fo.body


def entry_point(plan: AttachPlan, program: str, symbol: str) -> AttachPoint:
    """An entry probe the path cannot do without: PathSkipped naming the symbol if absent."""
    off = probe_offset(plan, symbol)
    if off is None:
        raise PathSkipped(f"{plan.path}: function {symbol} not found in the binary")
    return AttachPoint(program, symbol, off)


# Bytes of one Go object a probe reads at once to take several fields (bpf_src/go_helpers.h
# GO_WINDOW); some reads are smaller (grpc_client_common.h read_cs_state: 64).
GO_WINDOW = 128


def read_window(fields: list[tuple[int, int]], size: int = GO_WINDOW) -> int | None:
    """Where one read of `size` bytes holding every (offset, width) field starts (8-aligned,
    each field aligned to its width up to 8, as the BPF side takes it), or None: no such read."""
    if any(off % min(width, 8) for off, width in fields):
        return None
    lo = min(off for off, _ in fields) & ~7
    return lo if max(off + width for off, width in fields) - lo <= size else None


def return_points(plan: AttachPlan, program: str, symbol: str) -> list[AttachPoint]:
    """Probes at every RET of `symbol`: [] when it is not linked or has no RET found."""
    fo = plan.functions.get(symbol)
    return [] if fo is None else [AttachPoint(program, symbol, int(r)) for r in fo.returns]


def call_points(plan: AttachPlan, program: str, caller: str,
                callee: str) -> list[AttachPoint]:
    """Probes at every direct CALL of `callee` inside `caller` (the callee's arguments are in
    their ABI registers there, as at its entry): [] when either is absent or never calls."""
    return [AttachPoint(program, caller, int(off))
            for off in plan.calls.get(call_key(caller, callee), ())]


def first_present(plan: AttachPlan, program: str,
                  symbols: tuple[str, ...]) -> AttachPoint | None:
    """An entry probe at the first of `symbols` the binary has (renames across versions)."""
    for sym in symbols:
        off = probe_offset(plan, sym)
        if off is not None:
            return AttachPoint(program, sym, off)
    return None


def module_version(plan: AttachPlan, module: str) -> tuple[int, ...] | None:
    """(major, minor, patch) of a linked module, None when the build info lacks it."""
    m = re.match(r"v(\d+)\.(\d+)\.(\d+)", plan.modules.get(module) or "")
    return tuple(int(x) for x in m.groups()) if m else None


def tcpaddr_network_fn(plan: AttachPlan, runtime_addr: Any, notes: list[str]) -> int:
    """Runtime address of net.(*TCPAddr).Network: tells a *net.TCPAddr inside a net.Addr
    interface by its itab's fun[0]; 0 (no type check, with a note) when it is not linked."""
    fo = plan.functions.get("net.(*TCPAddr).Network")
    if fo is None:
        notes.append("net.(*TCPAddr).Network absent: addresses read without type check")
        return 0
    return int(runtime_addr(fo.entry))


def literal_range(plan: AttachPlan, runtime_addr: Callable[[int], int]
                  ) -> tuple[int, int] | None:
    """[lo, hi) of the binary's .rodata in the process: where Go's string literals are (the
    probes send a method there by address; pyhttp2probe/literals.py reads it back).
    None when the binary has none, or it is not mapped in one piece."""
    off, size = plan.rodata
    if not size:
        return None
    try:
        lo, last = runtime_addr(off), runtime_addr(off + size - 1)
    except TargetError:
        return None
    return (lo, last + 1) if last - lo == size - 1 else None


def variable_address(proc: ProcessImage, name: str) -> int:
    """Address in the process of a package-level Go variable the plan found (.symtab), or 0
    (a stripped binary). Every segment moves by the same load bias (0 unless PIE), which a
    function's file offset and vaddr give."""
    vaddr = proc.plan.variables.get(name)
    fo = next(iter(proc.plan.functions.values()), None)
    if vaddr is None or fo is None or not fo.vaddr:
        return 0
    return vaddr + proc.runtime_addr(fo.entry) - fo.vaddr
