"""Tracer: attach the gRPC client probes to one running Go process and turn calls into spans.

Lifetime: `with Tracer(pid=...) as t:` plans the binary, loads the BPF object, writes the
process's config into the tgid-keyed map, attaches pid-filtered uprobes and drains the ring
buffer on a background thread; leaving the block detaches everything. close() is idempotent.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import structlog
from prometheus_client.registry import REGISTRY, CollectorRegistry

from .assets import bpf_dir
from .events import EventDecoder, Layout
from .metrics import DEFAULT_BUCKETS, RpcMetrics
from .probes import grpc_client
from .probes.serverside import ServerSideProbes
from .sinks import JsonLinesSink
from .spans import Span, span_from_event

BPF_DIR = bpf_dir()
OBJECTS = {"ours": "grpc_client.bpf.o", "oldkey": "grpc_client_oldkey.bpf.o"}
_STOP = object()


class TracerError(Exception):
    """The tracer cannot attach; the message says what to fix."""


def _plan_binary(path: str) -> Any:
    """The attach plan from goelf (cached there by build id)."""
    from . import goelf

    planner = getattr(goelf, "build_plan", None)
    if planner is None:
        raise TracerError("goelf has no plan() yet: the binary inspection module is missing")
    return planner(path)


def runtime_address_fn(pid: int, exe_path: str) -> Callable[[int], int]:
    """file offset of the executable -> address in the process, from /proc/PID/maps.

    Works for PIE and non-PIE alike: no load bias arithmetic on ELF vaddrs is needed.
    """
    real = os.path.realpath(f"/proc/{pid}/exe")
    maps: list[tuple[int, int, int]] = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6:
            continue
        path = parts[5].removesuffix(" (deleted)")
        if path not in (real, exe_path):
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        maps.append((lo, hi - lo, int(parts[2], 16)))

    def addr(file_offset: int) -> int:
        for lo, size, off in maps:
            if off <= file_offset < off + size:
                return lo + file_offset - off
        raise TracerError(f"pid {pid}: file offset {file_offset:#x} of {exe_path} is not mapped")

    return addr


class _Rings:
    """Several ring buffers (one per BPF object) drained as one: epoll on their fds."""

    def __init__(self, rbs: list[Any]) -> None:
        self.rbs = rbs
        self._ep = select.epoll()
        for rb in rbs:
            self._ep.register(rb.fileno(), select.EPOLLIN)

    @property
    def closed(self) -> bool:
        return all(rb.closed for rb in self.rbs)

    def poll(self, timeout_ms: int) -> int:
        if len(self.rbs) == 1:
            return self.rbs[0].poll(timeout_ms)
        self._ep.poll(timeout_ms / 1000)
        return self.consume()

    def consume(self) -> int:
        return sum(rb.consume() for rb in self.rbs if not rb.closed)

    def close(self) -> None:
        for rb in self.rbs:
            rb.close()
        self._ep.close()


class Tracer:
    """Trace grpc-go client calls of process `pid`: spans(), Prometheus metrics, JSON lines.

    registry: where the collector registers (None: don't register; `tracer.metrics` still
    works). spans_out: a path, '-' or a text file for JSON lines. keep_spans: queue spans
    for spans() (turn off when nobody iterates, or the queue grows without bound).
    variant: "ours" or "oldkey" (the bench's ablation). server_side: also load the gRPC
    server and HTTP/2 probes (off: client probes alone, e.g. to measure their cost).
    """

    def __init__(self, pid: int, registry: CollectorRegistry | None = REGISTRY,
                 spans_out: str | Path | TextIO | None = None, keep_spans: bool = True,
                 variant: str = "ours", poll_ms: int = 100, plan: Any = None,
                 service_name: str | None = None,
                 buckets: tuple[float, ...] = DEFAULT_BUCKETS, max_label_sets: int = 1000,
                 bpf_dir: Path | None = None, server_side: bool = True) -> None:
        if variant not in OBJECTS:
            raise ValueError(f"variant must be one of {sorted(OBJECTS)}")
        self.pid = pid
        self.variant = variant
        self.poll_ms = poll_ms
        self.keep_spans = keep_spans
        self._plan = plan
        self._bpf_dir = bpf_dir or BPF_DIR
        self.server_side = server_side
        self._registry = registry
        self.metrics = RpcMetrics(buckets=buckets, max_label_sets=max_label_sets,
                                  registry=None)
        self._sink = JsonLinesSink(spans_out) if spans_out is not None else None
        self.layout = Layout()
        self.decoder = EventDecoder(self.layout)
        self.service_name = service_name or ""
        self.log = structlog.get_logger("pyhttp2probe.tracer").bind(pid=pid)
        self._obj: Any = None
        self._rb: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._started = False
        self.probes: grpc_client.ClientProbes | None = None
        self.serverside: ServerSideProbes | None = None  # gRPC server + HTTP/2 (issue 5)
        self.exe = ""
        self.events = 0
        self.unmatched = 0
        self.error: BaseException | None = None

    # -- setup ----------------------------------------------------------------------------
    def start(self) -> Tracer:
        """Plan, load, configure, attach, start draining. Releases everything on failure."""
        if self._started:
            return self
        self._started = True
        pid = self.pid
        if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
            raise TracerError(f"no process with pid {pid}")
        try:
            self.exe = os.readlink(f"/proc/{pid}/exe")
        except OSError as exc:
            raise TracerError(f"pid {pid}: cannot read /proc/{pid}/exe: {exc}") from exc
        self.service_name = self.service_name or Path(self.exe).name.removesuffix(" (deleted)")
        self.log = self.log.bind(binary=self.exe)
        plan = self._plan if self._plan is not None else self._plan_or_raise()
        modules = getattr(plan, "modules", None)
        runtime_addr = runtime_address_fn(pid, self.exe)
        has_client = grpc_client.FN_START in getattr(plan, "functions", {})
        if has_client:
            try:
                self.probes = grpc_client.build(plan, self.layout, runtime_addr,
                                                self.variant, binary=f"/proc/{pid}/exe")
            except grpc_client.ProbePlanError as exc:
                raise TracerError(f"{self.exe} (pid {pid}): {exc}") from exc
        from libbpf_loader import BpfObject, RingBuffer

        try:
            if self.probes is not None:
                obj_path = self._bpf_dir / OBJECTS[self.variant]
                if not obj_path.exists():
                    raise TracerError(f"{obj_path} is missing: run `python3 setup.py build_bpf`")
                self._obj = BpfObject.open(obj_path).load()
                self._obj.map("grpc_client_config").update(pid.to_bytes(4, "little"),
                                                           self.probes.config)
                target = f"/proc/{pid}/exe"
                for p in self.probes.points:
                    self._obj.program(p.program).attach_uprobe(target, p.file_offset, pid=pid)
            if self.variant == "ours" and self.server_side:
                self.serverside = ServerSideProbes(
                    pid, plan, self.layout, runtime_addr, self.exe, self._bpf_dir,
                    self.service_name).start()
            rings = ([self._obj.map("events")] if self._obj is not None else []) + (
                self.serverside.ring_maps() if self.serverside is not None else [])
            if not rings:
                names = ", ".join(sorted(modules or ())) or "none"
                raise TracerError(f"{self.exe} (pid {pid}) has neither grpc-go nor HTTP/2 "
                                  f"code to trace; its modules: {names}")
            # One RingBuffer per object: libbpf_loader ties a manager to one object.
            self._rb = _Rings([RingBuffer(m, self._on_batch) for m in rings])
        except BaseException:
            self.metrics.add_attach_error()
            if self.serverside is not None:
                self.serverside.close()
                self.serverside = None
            if self._obj is not None:
                self._obj.close()
                self._obj = None
            raise
        self.metrics.set_attached(1)
        if self._registry is not None:
            self._registry.register(self.metrics)
        self._thread = threading.Thread(target=self._run, name=f"pyhttp2probe-drain-{pid}",
                                        daemon=True)
        self._thread.start()
        ss = self.serverside
        self.log.info("attached", probes=[p.symbol for p in self.attach_points],
                      layout=self.probes.layout_name if self.probes else None,
                      notes=(self.probes.notes if self.probes else [])
                      + (ss.notes if ss else []), skipped=ss.skipped if ss else {})
        return self

    def _plan_or_raise(self) -> Any:
        from .goelf import errors as gerr

        try:
            return _plan_binary(f"/proc/{self.pid}/exe")
        except gerr.NotGoBinaryError as exc:
            raise TracerError(f"{self.exe} (pid {self.pid}) is not a Go program: {exc}") from exc
        except gerr.GoBinaryError as exc:
            raise TracerError(f"{self.exe} (pid {self.pid}): {exc}") from exc

    # -- draining -------------------------------------------------------------------------
    @property
    def attach_points(self) -> list[Any]:
        """Every attached uprobe (client, gRPC server, HTTP/2)."""
        return (list(self.probes.points) if self.probes else []) + (
            self.serverside.points if self.serverside else [])

    def _on_batch(self, batch: Any) -> None:
        extra: list[Span] = []
        if self.serverside is not None and self.serverside.loaded:
            rest, extra = self.serverside.split(batch)
            evs = self.decoder.decode_records(rest)
        else:
            evs = self.decoder.decode_batch(batch)
        spans = [span_from_event(e, self.layout.constants, self.service_name) for e in evs]
        spans += extra
        # An end without a start has no duration: counted (kernel STAT_UNMATCHED_END and
        # self.unmatched), never exported as a span or an observation.
        timed = [s for s in spans if "unmatched" not in s.flags]
        self.unmatched += len(spans) - len(timed)
        spans = timed
        self.events += len(extra)
        self.metrics.add_events(len(extra))
        self.events += len(evs)
        self.metrics.add_events(len(evs))
        self.metrics.observe_spans(spans)
        if self.serverside is not None and self.serverside.rejected:
            self.metrics.set_server_rejected(self.serverside.rejected)
        if self._sink is not None:
            self._sink.write(spans)
        if self.keep_spans:
            for s in spans:
                self._queue.put(s)

    def _run(self) -> None:
        last_stats = 0.0
        try:
            while not self._stop.is_set():
                self._rb.poll(self.poll_ms)
                now = time.monotonic()
                if now - last_stats > 1.0:
                    self._update_stats()
                    last_stats = now
        except BaseException as exc:  # surfaced by close() and spans()
            self.error = exc
            self.log.error("drain failed", error=repr(exc))
        finally:
            self._queue.put(_STOP)

    def drain(self) -> int:
        """Deliver everything pending now (also runs on close); returns records delivered."""
        with self._lock:
            if self._rb is None:
                return 0
            n = self._rb.consume()
        self._update_stats()
        return n

    def stats(self) -> dict[str, int]:
        """Kernel-side loss/health counters by name (STAT_* of events.h, lowercased); the
        gRPC server and HTTP/2 objects' counters are prefixed "grpc_server." / "http2."."""
        out = self.serverside.stats() if self.serverside is not None else {}
        if self._obj is None:
            return out
        m = self._obj.map("stats")
        for name, idx in self.layout.constants.items():
            if name.startswith("STAT_") and name != "STAT_MAX":
                raw = m.lookup(idx.to_bytes(4, "little"))
                out[name[5:].lower()] = int.from_bytes(raw or b"\0" * 8, "little")
        return out

    def _update_stats(self) -> None:
        st = self.stats()
        if not st:
            return
        self.metrics.set_ringbuf_drops(st.get("ringbuf_full", 0) + st.get(
            "grpc_server.ringbuf_full", 0) + st.get("http2.ringbuf_full", 0))
        self.metrics.set_unmatched("end", st.get("unmatched_end", 0))
        self.metrics.set_unmatched("duplicate_end", st.get("dup_end", 0))
        self.metrics.set_unmatched("start_reused", st.get("start_reused", 0))
        self.metrics.set_unmatched("bad_read", st.get("bad_read", 0))
        for obj in ("grpc_server", "http2"):
            if f"{obj}.unmatched_end" in st:
                self.metrics.set_unmatched(f"{obj}_end", st[f"{obj}.unmatched_end"])
                self.metrics.set_unmatched(f"{obj}_start_reused", st[f"{obj}.start_reused"])
                self.metrics.set_unmatched(f"{obj}_bad_read", st[f"{obj}.bad_read"])
        if "http2.h2_no_stream" in st:  # HTTP/2 client requests that never got a stream id
            self.metrics.set_unmatched("http2_client_no_stream", st["http2.h2_no_stream"])

    def program_run_counts(self) -> dict[str, int]:
        """run_cnt of each attached program (needs libbpf_loader.bpf_stats_enabled())."""
        out = self.serverside.run_counts() if self.serverside is not None else {}
        if self._obj is None or self.probes is None:
            return out
        out.update({p.program: self._obj.program(p.program).run_count()[0]
                    for p in self.probes.points})
        return out

    def spans(self, timeout: float | None = None) -> Iterator[Span]:
        """Spans as they finish; ends when the tracer closes (or after `timeout` idle s)."""
        while True:
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                return
            if item is _STOP:
                self._queue.put(_STOP)  # let other iterators end too
                return
            yield item

    # -- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop draining, deliver what is pending, detach, free. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if self._rb is not None and not self._rb.closed:
                self._rb.consume()
                self._update_stats()
        finally:
            if self._rb is not None:
                self._rb.close()
                self._rb = None
            if self._obj is not None:
                self._obj.close()
                self._obj = None
            if self.serverside is not None:
                self.serverside.close()
            if self._sink is not None:
                self._sink.close()
            self.metrics.set_attached(0)
            if self._registry is not None and self._started:
                with contextlib.suppress(KeyError):
                    self._registry.unregister(self.metrics)
            self._queue.put(_STOP)
            self.log.info("detached", events=self.events)

    def __enter__(self) -> Tracer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
