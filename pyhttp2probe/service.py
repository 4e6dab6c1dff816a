"""The node service behind `pyhttp2probe run`: one Agent, processes found and followed as
they start, exec and exit, /metrics, /healthz and /readyz served all along.

Events come from the kernel (exec and exit, through the discovery object), plus one /proc
scan at start and a slow rescan as a safety net. One loop thread owns every decision
(attach, detach, re-plan), so events are handled in order and a slow attach never blocks
the discovery drain. A failure with one process is logged and counted; the others go on.
"""

from __future__ import annotations

import errno
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from . import __version__
from .agent import Agent
from .goelf.plan import looks_like_go
from .memory import limit_arenas
from .selection import PortWatch, Selection, selection_from
from .targets import FileId, TargetError, exe_path, file_id

_TICK_S = 0.2  # how often the loop looks at timers when no event comes
_TTL_SWEEP_S = 5.0
# Attach refusals that belong to the file, not the process: not tried again for that file.
_FILE_REASONS = ("not_go", "unsupported", "no_probes")


@dataclass
class Counts:
    """What the service saw, for its self-metrics (read under the GIL, written by the loop)."""

    discovery: Counter[str] = field(default_factory=Counter)  # exec, exit, scan
    # reason -> processes; every reason exported from the start, at 0
    skipped: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(
        ("no_process", "not_go", "unsupported", "no_probes", "permission", "attach",
         "internal"), 0)))


class ServiceCollector:
    """pyhttp2probe_build_info, discovery events and skipped processes by reason."""

    def __init__(self, counts: Counts, ready: Any, discovery: Any) -> None:
        self.counts = counts
        self.ready = ready
        self.discovery = discovery

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("pyhttp2probe_build_info", "The agent's version",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        ev = CounterMetricFamily("pyhttp2probe_discovery_events",
                                 "Processes the agent learned of, by how", labels=["kind"])
        for kind, n in sorted(self.counts.discovery.items()):
            ev.add_metric([kind], n)
        yield ev
        sk = CounterMetricFamily("pyhttp2probe_skipped_processes",
                                 "Selected processes not traced, by reason", labels=["reason"])
        for reason, n in sorted(self.counts.skipped.items()):
            sk.add_metric([reason], n)
        yield sk
        yield CounterMetricFamily("pyhttp2probe_discovery_drops", "Exec/exit events lost to "
                                  "a full discovery ring buffer (the rescan catches up)",
                                  value=self.discovery().drops if self.discovery() else 0)
        yield GaugeMetricFamily("pyhttp2probe_ready", "1 when BPF is loaded and discovery runs",
                                value=1 if self.ready()[0] else 0)


class Service:
    """Follows the selected processes of the node with one Agent (see module doc)."""

    def __init__(self, settings: Any, registry: CollectorRegistry | None = None,
                 otlp_endpoint: str | None = None) -> None:
        self.settings = settings
        self.otlp_endpoint = otlp_endpoint  # the traces URL (config.otlp_traces_endpoint)
        self.log = structlog.get_logger("pyhttp2probe.service")
        self.selection: Selection = selection_from(
            settings.pid, settings.exe, settings.port, settings.all, settings.exclude_exe)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.counts = Counts()
        self._events: queue.Queue[tuple[str, int, int]] = queue.Queue()
        self._stop = threading.Event()
        self._ports = PortWatch()
        self._refused: dict[FileId, str] = {}  # files not worth another try, with why
        self._seen: set[int] = set()  # pids judged already (not chosen): judged again on exec
        self.agent: Agent | None = None
        self._scanned = False
        self.discovery: Any = None
        self.server: Any = None

    # -- lifecycle ------------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        """BPF loaded, discovery running, the processes running at start judged (a node may
        have no target: still ready)."""
        if self._stop.is_set():
            return False, "stopping"
        if self.agent is None or self.discovery is None:
            return False, "loading BPF"
        if not self._scanned:
            return False, "judging the processes running at start"
        return True, "ready"

    def start(self) -> Service:
        from .discovery import Discovery, scan_proc
        from .httpserver import MetricsServer

        s = self.settings
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(ServiceCollector(self.counts, self.ready,
                                                lambda: self.discovery))
        self.server = MetricsServer(self.registry, s.listen_host, s.listen_port, self.ready)
        self.agent = Agent(registry=self.registry, spans_out=s.spans_out, keep_spans=False,
                           max_label_sets=s.max_label_sets, ring_bytes=s.ring_size,
                           link_style=None if s.link_style == "auto" else s.link_style,
                           trace_context=self.otlp_endpoint is not None)
        if self.otlp_endpoint is not None:
            from .otlp import OtlpSink, quiet_sdk_logging

            quiet_sdk_logging()
            sink = OtlpSink(self.otlp_endpoint, exe_of=self.agent.executable)
            self.registry.register(sink)
            self.agent.add_sink(sink)  # closed, so flushed, by agent.close()
            self.log.info("otlp export", endpoint=self.otlp_endpoint)
        self.discovery = Discovery(on_exec=self._on_exec, on_exit=self._on_exit)
        # What runs already is judged before the service says it is ready, so a process
        # selected at start is traced from then on; exec/exit events during the scan wait
        # in the queue and are handled next, in order.
        for pid in scan_proc():
            self._handle("scan", pid)
        self._scanned = True
        self.log.info("serving", url=f"http://{s.listen_host}:{self.server.port}/metrics",
                      selection=_describe(self.selection))
        return self

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Detach everything, flush, free; the HTTP listener goes last."""
        self._stop.set()
        if self.discovery is not None:
            self.discovery.close()
        if self.agent is not None:
            self.agent.close()
        if self.server is not None:
            self.server.close()

    # -- events (discovery thread: queue and return) --------------------------------------
    def _on_exec(self, pid: int, start_ticks: int = 0) -> None:
        self._events.put(("exec", pid, start_ticks))

    def _on_exit(self, pid: int) -> None:
        self._events.put(("exit", pid, 0))

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> int:
        """Until stop() (signals), --duration, or a drain failure; returns the exit code."""
        s = self.settings
        deadline = time.monotonic() + s.duration if s.duration else None
        next_rescan = time.monotonic() + s.rescan_interval
        next_sweep = time.monotonic() + _TTL_SWEEP_S
        while not self._stop.is_set():
            try:
                kind, pid, _ = self._events.get(timeout=_TICK_S)
                self._handle(kind, pid)
            except queue.Empty:
                pass
            now = time.monotonic()
            for pid in self._ports.ready(now):
                self._consider(pid, "port")
            if now >= next_rescan:
                next_rescan = now + s.rescan_interval
                self._rescan()
            if now >= next_sweep:
                next_sweep = now + _TTL_SWEEP_S
                self._sweep_series()
            if deadline is not None and now >= deadline:
                break
            assert self.agent is not None
            failed = self.agent.error or self.discovery.error
            if failed is not None:
                self.log.error("drain failed", error=repr(failed))
                return 1
        return 0

    def _handle(self, kind: str, pid: int) -> None:
        self.counts.discovery[kind] += 1
        assert self.agent is not None
        if kind == "exit":
            self._seen.discard(pid)
            self._ports.forget(pid)
            if pid in self.agent.targets:
                self.agent.detach(pid)
            return
        if kind == "exec":
            self._seen.discard(pid)  # a new image: judged afresh, planned afresh
            if pid in self.agent.targets:
                self.agent.detach(pid)  # its old image's plan and links are void now
        self._consider(pid, kind)

    def _rescan(self) -> None:
        """Safety net: processes an event was missed for (e.g. a full discovery ring)."""
        assert self.agent is not None
        from .discovery import scan_proc

        traced = self.agent.targets
        for pid in scan_proc():
            if pid not in traced and pid not in self._seen:
                self.counts.discovery["rescan"] += 1
                self._consider(pid, "rescan")

    def _consider(self, pid: int, why: str) -> None:
        """Attach `pid` if the selection chooses it; every outcome is logged and counted."""
        assert self.agent is not None
        if pid == os.getpid():
            return
        try:
            exe = exe_path(pid)
            fid = file_id(pid)
        except TargetError as exc:
            # never silent when the agent lacks a privilege; but a process caught while it
            # exits refuses /proc/PID/exe too (its mm is gone): that one has just vanished
            if exc.reason == "permission" and not _exiting(pid):
                self._skip(pid, "?", "permission", quiet=pid in self._seen)
                self._seen.add(pid)
            return  # otherwise gone already, or a kernel thread
        reason = self.selection.choose(pid, exe)
        if reason is None:
            if self.selection.wants_ports and why in ("exec", "scan"):
                self._ports.watch(pid, time.monotonic())  # its listener may open soon
            self._seen.add(pid)
            return
        self._ports.forget(pid)
        refused = self._refused.get(fid)
        if refused is None and reason == "all" and not looks_like_go(f"/proc/{pid}/exe"):
            # --all judges every process of the node: what is not Go is no error
            refused = self._refused[fid] = "not_go"
        if refused is not None:
            self._skip(pid, exe, refused, quiet=True)
            self._seen.add(pid)
            return
        try:
            self.agent.attach(pid)
        except TargetError as exc:
            if exc.reason in _FILE_REASONS:
                self._refused[fid] = exc.reason
            self._skip(pid, exe, exc.reason, quiet=reason == "all" and exc.reason == "not_go")
        except Exception as exc:  # one process must never stop the others
            self.log.error("attach failed", pid=pid, binary=exe, error=repr(exc))
            self._skip(pid, exe, "internal", quiet=True)
        self._seen.add(pid)

    def _skip(self, pid: int, exe: str, reason: str, quiet: bool) -> None:
        self.counts.skipped[reason] += 1
        (self.log.debug if quiet else self.log.info)("not traced", pid=pid, binary=exe,
                                                     reason=reason)

    def _sweep_series(self) -> None:
        """Series not updated for --series-ttl leave /metrics (metrics.expire says why)."""
        assert self.agent is not None
        dropped = self.agent.metrics.expire(self.settings.series_ttl)
        if dropped:
            self.log.info("series expired", label_sets=dropped)


def _exiting(pid: int) -> bool:
    """Gone, a zombie, or dead (/proc/PID/stat state Z or X): nothing left to trace."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:][:1] in ("Z", "X")


def _describe(sel: Selection) -> dict[str, Any]:
    return {k: v for k, v in (("pid", sorted(sel.pids)), ("exe", list(sel.exe)),
                              ("port", sorted(sel.ports)), ("all", sel.everything),
                              ("exclude_exe", list(sel.exclude_exe))) if v}


def serve(settings: Any, otlp_endpoint: str | None = None) -> int:
    """Run the service until SIGTERM/SIGINT (exit 0 after detaching and flushing);
    otlp_endpoint: export spans there too (an OTLP/HTTP traces URL)."""
    limit_arenas()  # before any thread starts (memory.py says why)
    service = Service(settings, otlp_endpoint=otlp_endpoint)
    old = {s: signal.signal(s, lambda signum, _f: service.stop())
           for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            service.start()
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EACCES):
                raise
            print("pyhttp2probe: error: the kernel refused a BPF operation although the "
                  f"capabilities are held ({exc}): a seccomp profile or an LSM blocks bpf() "
                  "or perf_event_open()? (docs/container.md)", file=sys.stderr)
            return 2
        return service.run()
    finally:
        service.close()
        for s, h in old.items():
            signal.signal(s, h)
