"""Probe paths: each protocol side the agent traces is ONE declaration (a `ProbePath`).

A path says which BPF object it runs, which functions and struct fields it needs from a Go
binary (the goelf catalogue is the union of every path's), how it configures itself for one
process from that binary's attach plan, which record types it emits and how each becomes a
span, and which maps it shares with another path's object. The Agent loads each path's
object once and does the rest (processes, links, drain, sinks); adding a path touches this
package only (README: "How to add a probe path").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..goelf.catalog import Catalogue

if TYPE_CHECKING:
    import numpy as np

    from libbpf_loader import HeaderLayout

    from ..goelf import AttachPlan
    from ..records import Columns, DecodeContext
    from ..spans import Span, SpanIds


class PathSkipped(Exception):
    """This path has nothing to trace in this binary (or lacks what it needs); the message
    says why. Other paths go on."""


@dataclass(frozen=True)
class AttachPoint:
    """One uprobe: which program of the object goes at which file offset of the binary."""

    program: str
    symbol: str
    file_offset: int


@dataclass(frozen=True)
class ConfigEntry:
    """One value the path writes into one of its object's maps for a traced process;
    deleted again when the process is detached."""

    map: str
    key: bytes
    value: bytes


@dataclass
class PathSetup:
    """What a path needs for one process: map entries, attach points, notes for the log."""

    configs: list[ConfigEntry]
    points: list[AttachPoint]
    notes: list[str] = field(default_factory=list)
    variant: str = ""  # the layout chosen ("ClientStream{Stream}"), for the log


@dataclass(frozen=True)
class ProcessImage:
    """What a path sees of one process: its pid, the plan of the file it runs, and where
    that file is mapped (file offset -> address in the process, for PIE and code pointers)."""

    pid: int
    plan: AttachPlan
    runtime_addr: Callable[[int], int]
    trace: bool = False  # traces on: the path also reads what joins spans into traces
    # This attach's generation (the configs' `gen`, bpf_src/config.h): random, so a process
    # that reuses a traced process's pid never meets that one's per-connection entries
    gen: int = field(default_factory=lambda: int.from_bytes(os.urandom(8), "little") | 1)
    # [lo, hi) of the binary's .rodata in the process (planning.literal_range), or None: the
    # probes send a method there by address, the agent reads it back (literals.py)
    literals: tuple[int, int] | None = None


@dataclass(frozen=True)
class RecordType:
    """One ring-buffer record type: its EV_* constant, its struct, and what it becomes.

    `to_spans(columns, ctx)` turns a batch of records of this type (decoded column-wise)
    into spans; a record type that is only counted (e.g. rejected RPCs) returns [] and
    counts through ctx.

    `label_key(columns)` (optional; Columns.key of some fields) lets aggregating sinks skip
    Span objects: rows with equal keys must make spans equal in every field a metric label
    comes from (spans.SpanColumns lists them), so to_spans runs on one row per distinct key
    only. Its struct must then have start_ns, end_ns and flags. Without it, every record
    becomes a Span even when only the metrics want it.

    `ids(columns)` (optional, with a label_key) gives the span fields that differ within a
    label group (spans.SpanIds: connection, stream_id, call, and full_method where it is
    not a label), so JSON lines are written from an exemplar per group and these columns,
    without a Span per record; with start_ns, end_ns and flags they must make the same
    spans as to_spans (tests/test_metrics_columns.py checks the shipped paths). Without it,
    JSON lines of this type are written from Span objects.
    """

    type_const: str
    struct: str
    to_spans: Callable[[Columns, DecodeContext], list[Span]]
    label_key: Callable[[Columns], np.ndarray] | None = None
    ids: Callable[[Columns], SpanIds] | None = None


# Slots one run of a path's slot sweeper frees (SLOT_SWEEP_CHUNK, bpf_src/start_slots.h)
SLOT_SWEEP_CHUNK = 1024
# The tag bit of a start slot whose request ended (SLOT_ENDED, bpf_src/start_slots.h)
SLOT_ENDED = 1 << 63


@dataclass(frozen=True)
class SlotTable:
    """A slot table of in-flight state (bpf_src/start_slots.h): an ARRAY map whose value
    starts with a tag word (0: free) and a key starting with the u32 tgid. `sweeper` is the
    SEC("syscall") program that frees a detached process's slots. `ended_bit`: a table
    whose entries stay after their request ended (bpf_src/srv_common.h h2_ctx_slots) marks
    that with this tag bit; such a slot counts as in flight only until it is set."""

    name: str
    sweeper: str
    ended_bit: int = 0


@dataclass(frozen=True)
class Stage:
    """A per-CPU record stage (bpf_src/stage.h STAGE_MAP): a PERCPU_ARRAY whose one value
    starts with the busy word and the packed header (its record count at byte 12), and the
    raw_tp program (STAGE_FLUSHER) the agent runs on each CPU whose stage holds records,
    right before each drain."""

    name: str
    flusher: str


STAGE_COUNT_AT = 12  # bpf_src/stage.h: u64 busy, then rb_packed_head {magic, count, ...}


@dataclass(frozen=True)
class ProbePath:
    """The declaration of one probe path (see the module docstring)."""

    name: str
    object: str  # BPF object file name, shipped in pyhttp2probe/bpf/
    functions: tuple[str, ...]  # Go symbols the plan must locate (absent ones are fine)
    fields: tuple[str, ...]  # "pkg/path.Type.field" offsets the plan must resolve
    setup: Callable[[ProcessImage, HeaderLayout], PathSetup]  # raises PathSkipped
    records: tuple[RecordType, ...] = ()
    # Types with no methods of their own: present in a binary when one of these functions is
    anchors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # map name -> the path whose object owns it (this object reuses that kernel map)
    shared_maps: Mapping[str, str] = field(default_factory=dict)
    # maps holding one entry per open request: empty once traffic stops
    in_flight_maps: tuple[str, ...] = ()
    # slot tables of in-flight state (bpf_src/start_slots.h), each with the program that
    # frees a detached process's slots
    slot_tables: tuple[SlotTable, ...] = ()
    stages: tuple[Stage, ...] = ()
    ring_map: str = "events"
    stats_map: str = "stats"
    # package-level Go variables whose addresses the setup uses (from .symtab; absent in a
    # stripped binary, so optional)
    variables: tuple[str, ...] = ()
    # (caller, callee): the caller's direct calls of the callee, for call-site probes (both
    # must be in `functions`; AttachPlan.calls, planning.call_points)
    calls: tuple[tuple[str, str], ...] = ()


def all_paths() -> tuple[ProbePath, ...]:
    """Every probe path, owners of shared maps before the paths that reuse them."""
    from . import grpc_client, grpc_server, http2

    return (grpc_client.PATH, http2.PATH, grpc_server.PATH)


def catalogue(paths: tuple[ProbePath, ...] | None = None) -> Catalogue:
    """The union of the paths' functions, fields and anchors, in declaration order."""
    paths = all_paths() if paths is None else paths
    anchors: dict[str, tuple[str, ...]] = {}
    for p in paths:
        for ty, fns in p.anchors.items():
            anchors[ty] = tuple(dict.fromkeys((*anchors.get(ty, ()), *fns)))
    return Catalogue(
        functions=tuple(dict.fromkeys(f for p in paths for f in p.functions)),
        fields=tuple(dict.fromkeys(f for p in paths for f in p.fields)),
        anchors=MappingProxyType(anchors),
        variables=tuple(dict.fromkeys(v for p in paths for v in p.variables)),
        calls=tuple(dict.fromkeys(c for p in paths for c in p.calls)))


__all__ = ["SLOT_ENDED", "AttachPoint", "Catalogue", "ConfigEntry", "PathSetup", "PathSkipped",
           "ProbePath", "ProcessImage", "RecordType", "SlotTable", "Stage", "all_paths",
           "catalogue"]
