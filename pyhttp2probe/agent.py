"""Agent: one per node. Loads every probe path's BPF object once, drains all their ring
buffers as one, and attaches or detaches processes by writing their configuration and links.

    with Agent(registry=None) as agent:      # BPF objects loaded once, here
        agent.attach(pid)                    # idempotent; raises TargetError (reason in message)
        agent.targets                        # pids attached now
        agent.detach(pid)
        for span in agent.spans(timeout=1.0): ...

Data flow: ring buffers -> Decoder (record type -> the path's span builder) -> Span -> every
SpanSink (the Prometheus collector, JSON lines, the spans() queue, any exporter added). A
background thread drains; another keeps house once a second (kernel loss counters into the
metrics, exited targets detached, shared links given up when an untraced process runs a
shared file). close() is idempotent; leaving the with-block detaches everything.

Cost: a ColumnSink (the collector; JSON lines with traces off) takes a batch as columns, so
Span objects are built only when some sink takes spans (spans(), an exporter, traces on).
The drain lets records gather for `batch_ms` after each delivery: a batch's fixed cost (a
Python call, numpy set-up) is then shared by many records instead of paid per ring-buffer
wakeup.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import structlog
from prometheus_client.registry import CollectorRegistry

from libbpf_loader import BpfError, BpfObject, RingBuffer

from .assets import bpf_dir as default_bpf_dir
from .config_table import ConfigTable
from .decode import Decoder, count_labels
from .goelf import AttachPlan, GoBinaryError, NotGoBinaryError, UnsupportedGoVersionError
from .literals import Literals
from .memory import trimmer
from .metrics import DEFAULT_BUCKETS, RpcMetrics
from .probes import (
    SLOT_SWEEP_CHUNK,
    STAGE_COUNT_AT,
    ConfigEntry,
    PathSetup,
    PathSkipped,
    ProbePath,
    ProcessImage,
    SlotTable,
    all_paths,
)
from .probes import catalogue as make_catalogue
from .probes.planning import literal_range
from .records import DecodeContext, load_layout
from .sinks import ColumnSink, JsonLinesSink, SpanQueue, SpanSink
from .spans import Span
from .targets import (
    FileId,
    ProcessId,
    TargetError,
    exe_path,
    file_id,
    process_id,
    runtime_address_fn,
    service_name_of,
    start_time,
)
from .traces import TraceJoiner
from .uprobes import FileLinks, UprobeLinker, default_style, pids_running

# A delivery this large may have stopped at the batch limit: poll again without a pause.
FULL_BATCH = 4096
# Kernel counters (STAT_* of events.h) exported as pyhttp2probe_unmatched{kind="<path>_<stat>"}
UNMATCHED_STATS = ("unmatched_end", "dup_end", "start_reused", "bad_read", "h2_no_stream")
HOUSEKEEPING_S = 1.0
# glibc keeps heap pages that span churn and attaches free (memory.py): hand them back
# this often (a trim costs well under a millisecond here).
TRIM_S = 10.0


class AgentClosedError(RuntimeError):
    """The agent was closed; make a new one."""


@dataclass
class Target:
    """One traced process and what the agent wrote for it."""

    proc: ProcessId
    fid: FileId
    exe: str
    service_name: str
    plan: AttachPlan
    configs: list[tuple[str, ConfigEntry]]  # (path name, entry)
    paths: dict[str, PathSetup]
    skipped: dict[str, str] = field(default_factory=dict)


class Agent:
    """Traces any number of processes with one set of loaded BPF objects.

    registry: where the one collector (spans' histograms and pyhttp2probe_* self-metrics)
    registers; None: nowhere (`agent.metrics` still works). spans_out: a path, '-' or a text
    file for JSON lines. keep_spans: queue spans for spans() (max_queued_spans bounds the
    queue; 0 = unbounded). sinks: more SpanSinks (exporters). paths: the probe paths to
    load (default: all). ring_bytes: each object's ring-buffer size (a power of 2 pages).
    link_style: "uprobe_multi", "perf_event" or None (uprobe_multi where the kernel has it).
    batch_ms: after a delivery the drain waits this long before polling again, so records
    arrive in batches (spans reach sinks up to that much later; 0: poll at once).
    """

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 spans_out: str | Path | TextIO | None = None, keep_spans: bool = True,
                 max_queued_spans: int = 0, sinks: Iterable[SpanSink] = (),
                 buckets: Sequence[float] = DEFAULT_BUCKETS, max_label_sets: int = 1000,
                 paths: Sequence[ProbePath] | None = None, bpf_dir: Path | None = None,
                 ring_bytes: int | None = None, link_style: str | None = None,
                 poll_ms: int = 100, batch_ms: int = 100, trace_context: bool = False) -> None:
        self.log = structlog.get_logger("pyhttp2probe.agent")
        self.paths = tuple(paths) if paths is not None else all_paths()
        self.catalogue = make_catalogue(self.paths)
        self.layout = load_layout()
        self.metrics = RpcMetrics(buckets=buckets, max_label_sets=max_label_sets,
                                  registry=None)
        self._queue = SpanQueue(max_queued_spans) if keep_spans else None
        # traces on: the probes also read what joins spans (bpf_src/trace_ctx.h), and every
        # span sink gets its spans through the joiner, with W3C ids (pyhttp2probe/traces.py)
        self.trace_context = trace_context
        self.joiner = (TraceJoiner(on_span=self.metrics.observe_exemplar)
                       if trace_context else None)
        self._sinks: list[SpanSink | ColumnSink] = [self.metrics, *sinks]
        if spans_out is not None:
            self._sinks.append(JsonLinesSink(spans_out))
        if self._queue is not None:
            self._sinks.append(self._queue)
        self._sink_plan()
        self.poll_ms = poll_ms
        self.batch_ms = batch_ms
        self.link_style = link_style or default_style()
        self._bpf_dir = bpf_dir or default_bpf_dir()
        self._registry = registry
        self._registered = False
        self._lock = threading.RLock()  # targets, files, maps' per-process entries
        self._drain_lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._objects: dict[str, BpfObject] = {}
        self._config_tables: dict[tuple[str, str], ConfigTable] = {}  # (path, map)
        self._stage_errors: set[int] = set()  # CPUs whose stage could not be flushed (logged)
        self._targets: dict[int, Target] = {}
        self._files: dict[FileId, FileLinks] = {}
        self._plans: dict[FileId, AttachPlan] = {}
        self._names: dict[int, str] = {}  # pid -> service_name, kept past detach for late records
        self._exes: dict[int, str] = {}  # pid -> executable path, likewise (OTLP resources)
        self._no_config_seen = 0
        self._threads: list[threading.Thread] = []
        self._rb: RingBuffer | None = None
        self.events = 0
        self.unmatched = 0
        self.sink_errors = 0
        self.decode_errors = 0  # records of batches the decoder failed on (logged)
        self.error: BaseException | None = None
        self._literals = Literals()  # client methods sent by address
        try:
            self._load(ring_bytes)
            self._linker = UprobeLinker(self._objects, self.link_style)
            self._ctx = DecodeContext(self.layout, self._service_name, self._literals.text)
            self._decoder = Decoder(self.layout, self.paths, self._ctx)
            rings = [self._objects[p.name].map(p.ring_map) for p in self.paths]
            self._rb = RingBuffer(rings[0], self._on_batch)
            for ring in rings[1:]:
                self._rb.add(ring)
            if registry is not None:
                registry.register(self.metrics)
                self._registered = True
            self._start_thread(self._drain_loop, "pyhttp2probe-drain")
            self._start_thread(self._housekeeping_loop, "pyhttp2probe-housekeeping")
        except BaseException:
            self.close()
            raise
        self.log.info("loaded", paths=[p.name for p in self.paths], links=self.link_style)

    # -- loading --------------------------------------------------------------------------
    def _load(self, ring_bytes: int | None) -> None:
        """Open and load each path's object once; a path reusing another's maps comes after
        it (all_paths() orders them so)."""
        for path in self.paths:
            obj_path = self._bpf_dir / path.object
            if not obj_path.exists():
                raise FileNotFoundError(f"{obj_path} is missing: run `python3 setup.py "
                                        "build_bpf` (or reinstall the package)")
            obj = BpfObject.open(obj_path)
            self._objects[path.name] = obj
            for map_name, owner in path.shared_maps.items():
                if owner in self._objects:
                    obj.map(map_name).share(self._objects[owner].map(map_name))
                # else: that path is not loaded (a subset of paths): this object's own copy
            if ring_bytes is not None:
                obj.map(path.ring_map).resize(ring_bytes)
            if self.link_style == "uprobe_multi":
                for name in obj.program_names():
                    if obj.program(name).section == "uprobe":  # not the slot sweepers
                        obj.program(name).prepare_uprobe_multi()
            obj.load()

    def _start_thread(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    # -- targets --------------------------------------------------------------------------
    @property
    def targets(self) -> frozenset[int]:
        """Pids attached now."""
        with self._lock:
            return frozenset(self._targets)

    def target(self, pid: int) -> Target | None:
        with self._lock:
            return self._targets.get(pid)

    def attach(self, pid: int, service_name: str | None = None) -> Target:
        """Trace process `pid`. Idempotent; a pid reused by a new process is re-planned.

        Raises TargetError (its `reason` says why: no_process, not_go, unsupported,
        no_probes, permission, attach) after counting it; nothing is left behind.
        """
        with self._lock:
            self._check_open()
            proc: ProcessId | None = None
            try:
                proc = process_id(pid)
                old = self._targets.get(pid)
                if old is not None:
                    if old.proc == proc and old.fid == file_id(pid):
                        return old
                    # the pid now names another process, or the process exec'd another
                    # file: the old plan and links are void
                    self._linker.close(self._detach_locked([pid], exited=True))
                return self._attach_locked(proc, service_name)
            except Exception as exc:
                err = exc if isinstance(exc, TargetError) else None
                if (err is None or err.reason != "no_process") and proc is not None \
                        and _gone(proc):
                    # It exited meanwhile (its /proc entries or its exe vanished under
                    # the attach): say so, not "attach" or an internal error.
                    err = TargetError(f"pid {pid} exited while being attached: {exc}",
                                      "no_process")
                if err is None:
                    raise
                self.metrics.add_attach_error(err.reason)
                self.log.warning("attach failed", pid=pid, reason=err.reason, error=str(err))
                if err is exc:
                    raise
                raise err from exc

    def _attach_locked(self, proc: ProcessId, service_name: str | None) -> Target:
        pid = proc.pid
        exe = exe_path(pid)
        fid = file_id(pid)
        plan = self._plan(pid, fid, exe)
        addr = runtime_address_fn(pid, fid)
        lit = literal_range(plan, addr)
        image = ProcessImage(pid, plan, addr, self.trace_context, literals=lit)
        setups: dict[str, PathSetup] = {}
        skipped: dict[str, str] = {}
        for path in self.paths:
            try:
                setups[path.name] = path.setup(image, self.layout)
            except PathSkipped as exc:
                skipped[path.name] = str(exc)
        if not setups:
            mods = ", ".join(sorted(plan.modules)) or "none"
            raise TargetError(f"pid {pid} ({exe}) has neither grpc-go nor HTTP/2 code to "
                              f"trace ({'; '.join(skipped.values())}); its modules: {mods}",
                              "no_probes")
        written: list[tuple[str, ConfigEntry]] = []
        try:
            # configs first: a probe firing before its process's config is ignored (counted)
            for name, s in setups.items():
                for c in s.configs:
                    self.config_table(name, c.map).write(c.key, c.value)
                    written.append((name, c))
            self._link(pid, fid, {n: s.points for n, s in setups.items()})
        except (BpfError, OSError) as exc:
            self._delete_configs(written)
            raise TargetError(f"pid {pid} ({exe}): {exc}", "attach") from exc
        except BaseException:
            self._delete_configs(written)
            raise
        if lit is not None:
            try:
                self._literals.add(pid, fid, *lit, plan.rodata[0])
            except OSError as exc:  # the process exited meanwhile: its probes fire no more
                self.log.warning("executable not opened", pid=pid, error=str(exc))
        name = service_name or service_name_of(pid, exe)
        target = Target(proc, fid, exe, name, plan, written, setups, skipped)
        self._targets[pid] = target
        self._names[pid] = name
        self._exes[pid] = exe
        self._count_targets()
        self.log.info("attached", pid=pid, binary=exe, service_name=name,
                      probes={n: s.variant or len(s.points) for n, s in setups.items()},
                      notes=[n for s in setups.values() for n in s.notes], skipped=skipped,
                      shared_links=self._files[fid].shared is not None)
        return target

    def _plan(self, pid: int, fid: FileId, exe: str) -> AttachPlan:
        """The plan of the file the process runs, once per file (goelf also caches on disk
        by build id, so a restarted agent does not re-read binaries)."""
        plan = self._plans.get(fid)
        if plan is not None:
            return plan
        from .goelf import build_plan

        try:
            plan = build_plan(f"/proc/{pid}/exe", self.catalogue)
        except NotGoBinaryError as exc:
            raise TargetError(f"pid {pid} ({exe}) is not a Go program: {exc}", "not_go") from exc
        except UnsupportedGoVersionError as exc:
            raise TargetError(f"pid {pid} ({exe}): {exc}", "unsupported") from exc
        except GoBinaryError as exc:
            raise TargetError(f"pid {pid} ({exe}): {exc}", "unsupported") from exc
        plan.path = exe
        self._plans[fid] = plan
        return plan

    def _link(self, pid: int, fid: FileId, points: dict[str, Any]) -> None:
        """Links for a newly traced process: none when its file's links are shared; shared
        ones when it is the only process running the file; its own otherwise."""
        fl = self._files.get(fid)
        if fl is None:
            fl = FileLinks(fid, points)
        binary = f"/proc/{pid}/exe"
        if fl.shared is None:
            untraced = pids_running(fid) - fl.pids - {pid}
            if not untraced and not fl.pids:
                fl.shared = self._linker.link(binary, fl.points, -1)
            else:
                fl.per_pid[pid] = self._linker.link(binary, fl.points, pid)
        fl.pids.add(pid)
        self._files[fid] = fl

    def detach(self, *pids: int) -> None:
        """Stop tracing these pids (idempotent): their config and links go; their spans
        already in the ring buffer are still delivered. Links of all of them are closed
        together (each close waits for a kernel grace period; together about one)."""
        with self._lock:
            self._linker.close(self._detach_locked(pids, exited=False))

    def detach_all(self) -> None:
        """Stop tracing every process (the agent stays loaded and can attach again)."""
        self.detach(*self.targets)

    def _detach_locked(self, pids: Iterable[int], exited: bool) -> list[Any]:
        """Forget these pids; returns the links to close. Decided per file once: a shared
        file keeps its links while traced processes remain, and goes per-process only if
        a detached process still runs it (it must stop taking traps)."""
        doomed: list[Any] = []
        leaving: dict[FileId, list[Target]] = {}
        for pid in dict.fromkeys(pids):
            t = self._targets.pop(pid, None)
            if t is None:
                continue
            self._delete_configs(t.configs)
            self._literals.retire(pid)
            fl = self._files[t.fid]
            fl.pids.discard(pid)
            doomed += fl.per_pid.pop(pid, [])
            leaving.setdefault(t.fid, []).append(t)
            self.log.info("detached", pid=pid, binary=t.exe)
        self._forget_in_flight({t.proc.pid for ts in leaving.values() for t in ts})
        for fid, gone in leaving.items():
            fl = self._files[fid]
            if not fl.pids:
                doomed += fl.shared or []
                del self._files[fid]
                self._plans.pop(fid, None)
            elif fl.shared is not None and not exited and any(_alive(t.proc) for t in gone):
                doomed += self._unshare(fl)
        self._count_targets()
        return doomed

    def _forget_in_flight(self, pids: set[int]) -> None:
        """Delete the in-flight entries of processes no longer traced (every in-flight key
        starts with the u32 tgid). A process killed mid-call never runs the ends that would
        delete them, and an LRU map keeps them until evicted, taking room from live calls;
        the process's config is gone already, so its probes add no more. Slot tables are
        freed by their object's sweeper (bpf_src/start_slots.h), by compare-and-swap, since
        live processes claim slots meanwhile."""
        if not pids:
            return
        for path in self.paths:
            obj = self._objects.get(path.name)
            if obj is None or obj.closed:
                continue
            for table in path.slot_tables:
                self._sweep_slots(obj, path, table, pids)
            for name in path.in_flight_maps:
                m = obj.map(name)
                try:  # collect first: deleting while walking would restart the walk
                    keys = m.keys()
                    doomed = [k for k in keys if int.from_bytes(k[:4], "little") in pids]
                except (BpfError, OSError) as exc:
                    self.log.warning("in-flight walk failed", map=name, error=str(exc))
                    continue
                for k in doomed:
                    with contextlib.suppress(BpfError, OSError):  # ended meanwhile
                        m.delete(k)

    def _sweep_slots(self, obj: BpfObject, path: ProbePath, table: SlotTable,
                     pids: set[int]) -> None:
        """Free the slots `pids` hold in one of `path`'s slot tables: its sweeper program,
        one run per SLOT_SWEEP_CHUNK slots (bpf_src/start_slots.h)."""
        prog = obj.program(table.sweeper)
        slots = obj.map(table.name).max_entries
        try:
            for pid in pids:
                for first in range(0, slots, SLOT_SWEEP_CHUNK):
                    prog.run_syscall(struct.pack("<II", pid, first))
        except BpfError as exc:
            self.log.warning("slot sweep failed", path=path.name, table=table.name,
                             error=str(exc))

    def _unshare(self, fl: FileLinks) -> list[Any]:
        """Give a file per-process links (for its traced processes still running it);
        returns the shared links to close."""
        for pid in sorted(fl.pids):
            t = self._targets.get(pid)
            if t is None or not _alive(t.proc):
                continue
            try:
                fl.per_pid[pid] = self._linker.link(f"/proc/{pid}/exe", fl.points, pid)
            except (BpfError, OSError) as exc:  # exited meanwhile
                self.log.warning("relink failed", pid=pid, error=str(exc))
        shared, fl.shared = fl.shared or [], None
        return shared

    def config_table(self, path: str, map_name: str) -> ConfigTable:
        """Where path `path` keeps the configs of its map `map_name` (config_table.py): the
        map's slot table `<map_name>_slots` first, when its object has one."""
        table = self._config_tables.get((path, map_name))
        if table is None:
            obj = self._objects[path]
            slots = f"{map_name}_slots"
            table = ConfigTable(obj.map(map_name),
                                obj.map(slots) if slots in obj.map_names() else None)
            self._config_tables[(path, map_name)] = table
        return table

    def _delete_configs(self, configs: Iterable[tuple[str, ConfigEntry]]) -> None:
        for name, c in configs:
            with contextlib.suppress(BpfError, OSError):
                self.config_table(name, c.map).delete(c.key)

    def _count_targets(self) -> None:
        by_name = Counter(t.service_name for t in self._targets.values())
        self.metrics.set_attached(len(self._targets), by_name)

    def executable(self, pid: int) -> str:
        """The executable path of a process traced now or before ("" if never traced);
        kept past detach, like its service name, for its spans still on their way. No
        lock: sinks call it on their own threads."""
        return self._exes.get(pid, "")

    def _service_name(self, pid: int) -> str:
        return self._names.get(pid, "")

    def _check_open(self) -> None:
        if self._closed:
            raise AgentClosedError("agent is closed")

    # -- draining -------------------------------------------------------------------------
    def _sink_plan(self) -> None:
        """Which sinks take columns (ColumnSink) and whether any takes Span objects; with
        traces on, the span sinks are the joiner's. JSON lines (a sink of both kinds that
        `wants_rows`) take columns with rows when traces are off, Spans (ids) when on."""
        def columns(sink: Any) -> bool:
            either = getattr(sink, "wants_rows", False) and isinstance(sink, SpanSink)
            return isinstance(sink, ColumnSink) and not (either and self.joiner is not None)

        self._routes = [(sink, columns(sink)) for sink in self._sinks]
        self._want_rows = any(col and getattr(sink, "wants_rows", False)
                              for sink, col in self._routes)
        if self.joiner is not None:
            self.joiner.sinks = [sink for sink, col in self._routes if not col]
            self._routes = [r for r in self._routes if r[1]]
            if self.joiner.sinks:
                self._routes.append((self.joiner, False))
        self._want_spans = not all(col for _, col in self._routes)

    def _on_batch(self, batch: Any) -> None:
        try:
            decoded = self._decoder.decode_batch(batch, spans=self._want_spans,
                                                 rows=self._want_rows)
        except Exception as exc:  # a decoder bug must not stop the drain: lost, and said
            self.decode_errors += len(batch)
            self.log.error("decode failed", records=len(batch), error=repr(exc))
            return
        self.events += len(batch)
        self.metrics.add_events(len(batch))
        # An end without a start has no duration: counted (kernel STAT_UNMATCHED_END and
        # self.unmatched), never exported as a span or an observation.
        self.unmatched += decoded.unmatched
        timed: list[Span] = []
        if decoded.spans is not None:
            timed = [s for s in decoded.spans if "unmatched" not in s.flags]
        for sink, columns in self._routes:
            try:
                if columns:
                    sink.write_columns(decoded.columns)  # type: ignore[union-attr]
                else:
                    sink.write(timed)  # type: ignore[union-attr]
            except Exception as exc:  # one broken exporter must not stop the others
                self.sink_errors += 1
                self.log.error("sink failed", sink=type(sink).__name__, error=repr(exc))

    def _joiner_flush(self) -> None:
        """Every ring of a drain pass is in: the joiner may root what waited for it."""
        try:
            self.joiner.flush()  # type: ignore[union-attr]
        except Exception as exc:  # like a sink's failure: counted, the drain goes on
            self.sink_errors += 1
            self.log.error("sink failed", sink="TraceJoiner", error=repr(exc))

    def _drain_loop(self) -> None:
        try:
            pause_until = 0.0
            while not self._stop.is_set():
                pause = pause_until - time.monotonic()
                if pause > 0 and self._stop.wait(pause):
                    return  # close() drains what is left
                with self._drain_lock:
                    if self._rb is None or self._rb.closed:
                        return
                    # after a pause, drain at once (records are submitted without a wakeup
                    # until a ring is 1/8 full): a record waits one pause, not pause + poll
                    n = self._rb.poll(0 if pause_until else self.poll_ms,
                                      before_drain=self._flush_stages)
                    if self.joiner is not None:
                        self._joiner_flush()
                    self._literals.drained()
                pause_until = (time.monotonic() + self.batch_ms / 1000
                               if 0 < n < FULL_BATCH else 0.0)
        except BaseException as exc:  # surfaced by `error` and close()
            self.error = exc
            self.log.error("drain failed", error=repr(exc))

    def _flush_stages(self) -> None:
        """Send what the per-CPU record stages hold (bpf_src/stage.h): each CPU whose stage
        has records runs the stage's flusher, so they go into the drain that follows."""
        for path in self.paths:
            obj = self._objects.get(path.name)
            for stage in path.stages if obj is not None else ():
                values = obj.map(stage.name).lookup_percpu(0) or []
                for cpu, raw in enumerate(values):
                    if not int.from_bytes(raw[STAGE_COUNT_AT:STAGE_COUNT_AT + 4], "little"):
                        continue
                    try:
                        obj.program(stage.flusher).run_on_cpu(cpu)
                    except BpfError as exc:  # an offline CPU: its records wait for it
                        if cpu not in self._stage_errors:
                            self._stage_errors.add(cpu)
                            self.log.warning("stage not flushed", cpu=cpu, error=str(exc))

    def drain(self) -> int:
        """Deliver everything pending now (also runs on close); returns records delivered."""
        with self._drain_lock:
            n = 0
            if self._rb is not None and not self._rb.closed:
                self._flush_stages()
                n = self._rb.consume()
            if self.joiner is not None:
                self._joiner_flush()
            self._literals.drained()
        self._update_stats()
        return n

    def spans(self, timeout: float | None = None) -> Iterator[Span]:
        """Spans as they finish; ends when the agent closes (or after `timeout` idle s)."""
        if self._queue is None:
            raise ValueError("this agent was made with keep_spans=False: no span queue")
        return self._queue.spans(timeout)

    def add_sink(self, sink: SpanSink | ColumnSink) -> None:
        """One more consumer of every span from now on (e.g. an exporter); a ColumnSink
        gets each batch as columns instead."""
        with self._drain_lock:
            self._sinks.insert(len(self._sinks) - (self._queue is not None), sink)
            self._sink_plan()

    # -- housekeeping ---------------------------------------------------------------------
    def _housekeeping_loop(self) -> None:
        trim = trimmer()
        next_trim = time.monotonic() + TRIM_S
        while not self._stop.wait(HOUSEKEEPING_S):
            try:
                self._update_stats()
                if self.joiner is not None:
                    self.joiner.tick()  # waits for parents time out without new spans
                self._reap_exited()
                self._check_shared_files()
                if trim is not None and time.monotonic() >= next_trim:
                    next_trim = time.monotonic() + TRIM_S
                    trim()
            except Exception as exc:  # keep going: the next round may succeed
                self.log.error("housekeeping failed", error=repr(exc))

    def _reap_exited(self) -> None:
        """Targets whose process exited are detached (their spans so far stay exported)."""
        with self._lock:
            gone = [pid for pid, t in self._targets.items() if not _alive(t.proc)]
            if gone:
                self.log.info("targets exited", pids=gone)
                self._linker.close(self._detach_locked(gone, exited=True))

    def _check_shared_files(self) -> None:
        """When probes fired in a process without config (an untraced process running a
        shared file), give the files it could be running per-process links."""
        no_config = sum(st.get("no_config", 0) for st in self._stats_by_path().values())
        if no_config == self._no_config_seen:
            return
        self._no_config_seen = no_config
        with self._lock:
            for fl in list(self._files.values()):
                if fl.shared is not None and pids_running(fl.fid) - fl.pids:
                    self.log.info("untraced process runs a shared binary: per-process links",
                                  traced=sorted(fl.pids))
                    self._linker.close(self._unshare(fl))

    # -- kernel-side counters --------------------------------------------------------------
    def _stats_by_path(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        stats = self.layout.prefixed("STAT_")
        stats.pop("max", None)
        for path in self.paths:
            obj = self._objects.get(path.name)
            if obj is None or obj.closed:
                continue
            m = obj.map(path.stats_map)
            out[path.name] = {name: int.from_bytes(m.lookup(idx.to_bytes(4, "little"))
                                                   or b"\0" * 8, "little")
                              for name, idx in stats.items()}
        return out

    def stats(self) -> dict[str, int]:
        """Kernel-side loss/health counters as {"<path>.<stat>": n} (STAT_* of events.h)."""
        return {f"{p}.{k}": v for p, st in self._stats_by_path().items() for k, v in st.items()}

    def _update_stats(self) -> None:
        with self._lock:
            if self._closed and not self._objects:
                return
            by_path = self._stats_by_path()
        drops = sum(st.get("ringbuf_full", 0) for st in by_path.values())
        unmatched = {f"{p}_{k}": st[k] for p, st in by_path.items() for k in UNMATCHED_STATS
                     if k in st}
        self.metrics.set_kernel_counts(drops, unmatched)
        self.metrics.set_server_rejected(
            {int(k): v for k, v in count_labels(self._ctx.counts, "grpc_server_rejected").items()})

    def run_counts(self) -> dict[str, int]:
        """Probe hits: run_cnt of every loaded program the traced processes run (needs
        libbpf_loader.bpf_stats_enabled()); the programs the agent runs itself (stage
        flushers, slot sweepers) are left out. run_stats() has them all."""
        own = {st.flusher for p in self.paths for st in p.stages} | {
            t.sweeper for p in self.paths for t in p.slot_tables}
        return {name: cnt for name, (cnt, _) in self.run_stats().items() if name not in own}

    def run_stats(self) -> dict[str, tuple[int, int]]:
        """(run_cnt, run_time_ns) of every loaded program, by name (summed over objects
        that share one): the kernel's, counted while libbpf_loader.bpf_stats_enabled() is
        held."""
        out: dict[str, tuple[int, int]] = {}
        for obj in self._objects.values():
            for name in obj.program_names():
                cnt, ns = obj.program(name).run_count()
                had = out.get(name, (0, 0))
                out[name] = (had[0] + cnt, had[1] + ns)
        return out

    def in_flight(self) -> dict[str, int]:
        """Entries held by each in-flight map, {"<path>.<map>": n}: once traffic stops,
        only requests still open should be there (a walk: tests, debugging)."""
        out = {}
        for p in self.paths:
            obj = self._objects[p.name]
            for name in p.in_flight_maps:
                keys = obj.map(name).keys()
                out[f"{p.name}.{name}"] = sum(1 for _ in keys)
            for table in p.slot_tables:  # taken slots: a tag word that is not 0 (nor ended)
                tags = (int.from_bytes(v[:8], "little") for _, v in obj.map(table.name).items())
                out[f"{p.name}.{table.name}"] = sum(
                    1 for t in tags if t and not t & table.ended_bit)
        return out

    def links(self) -> int:
        """Kernel links held now (all files, shared and per process)."""
        with self._lock:
            return sum(len(fl.all_links()) for fl in self._files.values())

    # -- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        """Detach everything, deliver what is pending, free. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        try:
            # Links first: once they are gone no probe fires, so the drain after them
            # delivers every record that was written (nothing stays in the ring).
            with self._lock:
                links = [ln for fl in self._files.values() for ln in fl.all_links()]
                self._files.clear()
                self._targets.clear()
            if getattr(self, "_linker", None) is not None:
                self._linker.close(links)
                self._linker.shutdown()
            if self._rb is not None and not self._rb.closed:
                self.drain()
        finally:
            if self._rb is not None:
                self._rb.close()
                self._rb = None
            for obj in reversed(list(self._objects.values())):
                obj.close()
            self._objects.clear()
            self._literals.close()
            if self.joiner is not None:  # what still waits for a parent goes on, as roots
                with contextlib.suppress(Exception):
                    self.joiner.close()
            for sink in self._sinks:
                with contextlib.suppress(Exception):
                    sink.close()
            self.metrics.set_attached(0)
            if self._registered and self._registry is not None:
                with contextlib.suppress(KeyError):
                    self._registry.unregister(self.metrics)
            self.log.info("closed", events=self.events)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _gone(proc: ProcessId) -> bool:
    """Exited or exiting: a zombie still has its /proc/PID/stat, but no executable."""
    if not _alive(proc):
        return True
    try:
        os.stat(f"/proc/{proc.pid}/exe")
    except FileNotFoundError:
        return True
    except OSError:  # e.g. no permission: not a sign of exit
        return False
    return False


def _alive(proc: ProcessId) -> bool:
    """Whether the process (pid and start time) still runs."""
    try:
        return start_time(proc.pid) == proc.start_time
    except TargetError:
        return False
