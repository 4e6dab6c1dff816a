"""The gRPC-server and generic HTTP/2 probe objects of one process, loaded side by side with
the gRPC client object: build configs from the plan, load, attach, decode, count.

The tracer owns one ring-buffer manager; this class hands it its ring maps and splits each
batch by record type (the first __u32 of every record), so client records keep their
fast path and these become spans of kinds grpc_server, http_client and http_server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..events import Layout
from ..spans import Span
from . import AttachPoint, grpc_server, http2
from .grpc_client import ProbePlanError

# Maps of http2.bpf.o that grpc_server.bpf.o reads (the ServeHTTP join, srv_common.h).
SHARED_MAPS = ("h2_ctx_live", "h2_ctx_ended")
# Maps holding one entry per open request, by object (the ended map is history, not state).
IN_FLIGHT_MAPS = {"grpc_server": ("grpc_server_inflight",),
                  "http2": ("http2_server_inflight", "http2_client_inflight", "h2_ctx_live")}


@dataclass
class LoadedObject:
    """One loaded BPF object with its attached points (closed with the family)."""

    name: str
    obj: Any
    points: list[AttachPoint]


@dataclass
class ServerSideProbes:
    """gRPC server + HTTP/2 probes for process `pid` (built from its attach plan)."""

    pid: int
    plan: Any
    layout: Layout
    runtime_addr: Callable[[int], int]
    exe: str
    bpf_dir: Path
    service_name: str = ""
    loaded: list[LoadedObject] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    # RPCs the gRPC server rejected before any handler ran, by status code (cumulative)
    rejected: dict[int, int] = field(default_factory=dict)

    def start(self) -> ServerSideProbes:
        """Load and attach what the binary has; on failure, release what was acquired.

        HTTP/2 first: the gRPC object shares its request-context maps, through which a gRPC
        call served by ServeHTTP finds the HTTP/2 request it runs in (srv_common.h).
        """
        from libbpf_loader import BpfObject

        try:
            h2_obj = None
            try:
                hp = http2.build(self.plan, self.layout, self.exe)
            except ProbePlanError as exc:
                self.skipped["http2"] = str(exc)
                hp = http2.Http2Probes()
            self.notes += hp.notes
            if hp.flavors:
                h2_obj = BpfObject.open(self.bpf_dir / http2.OBJECT).load()
                self.loaded.append(LoadedObject("http2", h2_obj, hp.points))
                for fp in hp.flavors:
                    h2_obj.map(http2.CONFIG_MAP).update(
                        fp.config_key(self.pid).to_bytes(8, "little"), fp.config)
                self._attach(h2_obj, hp.points)
            else:
                self.skipped["http2"] = "no HTTP/2 client or server functions linked"
            sp = None
            if grpc_server.present(self.plan):
                try:
                    sp = grpc_server.build(self.plan, self.layout, self.runtime_addr, self.exe)
                except ProbePlanError as exc:  # the other probes still go on
                    self.skipped["grpc_server"] = str(exc)
            else:
                self.skipped["grpc_server"] = f"{grpc_server.FN_HANDLE_STREAM} not linked"
            if sp is not None:
                self.notes += sp.notes
                obj = BpfObject.open(self.bpf_dir / grpc_server.OBJECT)
                self.loaded.append(LoadedObject("grpc_server", obj, sp.points))
                if h2_obj is not None:
                    for name in SHARED_MAPS:
                        obj.map(name).share(h2_obj.map(name))
                obj.load()
                obj.map(grpc_server.CONFIG_MAP).update(self.pid.to_bytes(4, "little"),
                                                       sp.config)
                self._attach(obj, sp.points)
        except BaseException:
            self.close()
            raise
        return self

    def _attach(self, obj: Any, points: Iterable[AttachPoint]) -> None:
        target = f"/proc/{self.pid}/exe"
        for p in points:
            obj.program(p.program).attach_uprobe(target, p.file_offset, pid=self.pid)

    @property
    def points(self) -> list[AttachPoint]:
        return [p for lo in self.loaded for p in lo.points]

    def ring_maps(self) -> list[Any]:
        return [lo.obj.map("events") for lo in self.loaded]

    def split(self, records: Iterable[Any]) -> tuple[list[Any], list[Span]]:
        """(records of other types, spans decoded from this family's records)."""
        c = self.layout.constants
        srv, h2 = c["EV_GRPC_SERVER"], (c["EV_HTTP2_CLIENT"], c["EV_HTTP2_SERVER"])
        rej = c["EV_GRPC_SERVER_REJECTED"]
        rest: list[Any] = []
        srv_recs: list[Any] = []
        h2_recs: list[Any] = []
        rej_recs: list[Any] = []
        for rec in records:
            t = int.from_bytes(rec[:4], "little")
            if t == srv:
                srv_recs.append(rec)
            elif t in h2:
                h2_recs.append(rec)
            elif t == rej:
                rej_recs.append(rec)
            else:
                rest.append(rec)
        for _tgid, code, _flags in grpc_server.decode_rejected(self.layout, rej_recs):
            self.rejected[code] = self.rejected.get(code, 0) + 1
        spans = [grpc_server.span_from_event(e, c, self.service_name)
                 for e in grpc_server.decode(self.layout, srv_recs)]
        spans += [http2.span_from_event(e, c, self.service_name)
                  for e in http2.decode(self.layout, h2_recs)]
        return rest, spans

    def stats(self) -> dict[str, int]:
        """Kernel-side counters by object: {"http2.unmatched_end": n}."""
        out: dict[str, int] = {}
        for lo in self.loaded:
            m = lo.obj.map("stats")
            for name, idx in self.layout.constants.items():
                if name.startswith("STAT_") and name != "STAT_MAX":
                    raw = m.lookup(idx.to_bytes(4, "little")) or b"\0" * 8
                    out[f"{lo.name}.{name[5:].lower()}"] = int.from_bytes(raw, "little")
        return out

    def in_flight(self) -> dict[str, int]:
        """Entries held by each in-flight map, {"grpc_server.grpc_server_inflight": n}: once
        traffic stops, only requests still open should be there (a walk: tests, debugging)."""
        out: dict[str, int] = {}
        for lo in self.loaded:
            for name in IN_FLIGHT_MAPS[lo.name]:
                keys = lo.obj.map(name).keys()
                out[f"{lo.name}.{name}"] = sum(1 for _ in keys)
        return out

    def run_counts(self) -> dict[str, int]:
        """run_cnt per program (needs libbpf_loader.bpf_stats_enabled())."""
        return {p.program: lo.obj.program(p.program).run_count()[0]
                for lo in self.loaded for p in lo.points}

    def close(self) -> None:
        """Detach and free every object; idempotent."""
        while self.loaded:
            self.loaded.pop().obj.close()
