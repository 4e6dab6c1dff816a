"""Process discovery from the kernel: every exec and whole-process exit on the node, at once.

Peers poll /proc every few seconds and miss short-lived processes, supervisor children and
fresh replicas; here the discovery BPF object (bpf_src/discovery.bpf.c) reports each exec
and exit from BTF tracepoints, and a thread of this module hands them to callbacks.
`scan_proc()` covers what the kernel cannot replay: the processes already running at start,
and a slow safety-net rescan for records lost to a full ring buffer (counted in `drops`).

Pids are those of the initial pid namespace: the agent must run in the host's (hostPID).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import structlog

from libbpf_loader import Batch, BpfError, BpfObject, Link, RingBuffer

from .assets import bpf_dir as default_bpf_dir
from .records import load_layout

OBJECT = "discovery.bpf.o"
PROGRAMS = ("proc_exec", "proc_exit")
RING_MAP = "events"
STATS_MAP = "stats"

ExecCallback = Callable[[int, int], object]
ExitCallback = Callable[[int], object]


def clock_ticks_ns() -> int:
    """Nanoseconds per clock tick of /proc/PID/stat times (USER_HZ: 10 ms on Linux)."""
    return 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def scan_proc() -> list[int]:
    """Every process (thread-group id) in /proc now, ascending: the start-up scan and the
    slow rescan that repairs records lost to a full ring buffer."""
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())


def proc_start_ticks(pid: int) -> int | None:
    """/proc/PID/stat field 22 (start time, clock ticks since boot), or None when the
    process is gone. With the pid it identifies a process across pid reuse, and equals the
    start_time_ticks Discovery reports for its exec."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: count fields after the last ')'.
    return int(stat[stat.rindex(b")") + 2:].split()[19])


class Discovery:
    """Calls `on_exec(pid, start_time_ticks)` for every exec on the node and `on_exit(pid)`
    for every whole-process exit (once per process, whatever its thread count), from its own
    drain thread, within milliseconds of the event.

    `start_time_ticks` is the process's start in clock ticks since boot, equal to
    /proc/PID/stat field 22 (see proc_start_ticks): (pid, start_time_ticks) tells a reused
    pid apart. An exec replaces the image but keeps the pid and start time, so a process can
    report several execs (e.g. `sh -c 'exec prog'`); its exit is reported once. Exits of
    processes that started before Discovery are reported too (no exec was seen for them).

    Callbacks run on the drain thread and hold up every later record: keep them short
    (queue the pid and return; do the /proc reading and attaching elsewhere). An exception
    from a callback is logged and counted (`callback_errors`), never stops the drain.
    close() (or the context manager) detaches the programs, stops the thread and frees the
    object; it is idempotent, and from a callback it takes effect when the callback returns.
    """

    def __init__(self, on_exec: ExecCallback, on_exit: ExitCallback, *,
                 bpf_dir: Path | None = None, poll_ms: int = 100) -> None:
        self.log = structlog.get_logger("pyhttp2probe.discovery")
        self._on_exec = on_exec
        self._on_exit = on_exit
        self.poll_ms = poll_ms  # bounds exit delivery and close(); an exec wakes the poll
        layout = load_layout()
        self._dtype = layout.dtype("proc_life_event")
        self._ev_exec = layout.constants["EV_PROC_EXEC"]
        self._ev_exit = layout.constants["EV_PROC_EXIT"]
        self._stat_full = layout.constants["STAT_RINGBUF_FULL"].to_bytes(4, "little")
        self._tick_ns = clock_ticks_ns()
        self.counts: dict[str, int] = {"exec": 0, "exit": 0}
        self.callback_errors = 0
        self.last_lag_s = 0.0  # kernel event → its callback, for the latest record
        self.max_lag_s = 0.0
        self.error: BaseException | None = None  # what stopped the drain, if anything
        self._drops_at_close = 0
        self._stop = threading.Event()
        self._free_lock = threading.Lock()
        self._obj: BpfObject | None = None
        self._rb: RingBuffer | None = None
        self._links: list[Link] = []
        self._thread: threading.Thread | None = None
        path = (bpf_dir or default_bpf_dir()) / OBJECT
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `python3 setup.py build_bpf` "
                                    "(or reinstall the package)")
        try:
            self._obj = BpfObject.open(path)
            self._obj.load()
            self._links = [self._obj.program(name).attach() for name in PROGRAMS]
            self._rb = RingBuffer(self._obj.map(RING_MAP), self._on_batch)
            self._thread = threading.Thread(target=self._drain_loop,
                                            name="pyhttp2probe-discovery", daemon=True)
            self._thread.start()
        except BaseException:
            self.close()
            raise
        self.log.info("process discovery started", programs=list(PROGRAMS))

    # -- drain ------------------------------------------------------------------------------
    def _drain_loop(self) -> None:
        try:
            rb = self._rb
            assert rb is not None
            while not self._stop.is_set():
                # exits are sent without a wakeup (discovery.bpf.c): take them on timeout
                if rb.poll(self.poll_ms) == 0 and not self._stop.is_set():
                    rb.consume()
        except BaseException as exc:  # surfaced by `error`; close() still frees
            if not self._stop.is_set():
                self.error = exc
                self.log.error("discovery drain failed", error=repr(exc))
        finally:
            if self._stop.is_set():  # close() was called, maybe from a callback
                self._free()

    def _on_batch(self, batch: Batch) -> None:
        arr = batch.as_array(self._dtype)
        tick = self._tick_ns
        for typ, pid, ts, start in zip(arr["type"].tolist(), arr["tgid"].tolist(),
                                       arr["ts_ns"].tolist(),
                                       arr["start_boottime_ns"].tolist(), strict=True):
            if self._stop.is_set():  # closed by an earlier callback: deliver no more
                return
            lag = (time.clock_gettime_ns(time.CLOCK_BOOTTIME) - ts) / 1e9
            self.last_lag_s = lag
            self.max_lag_s = max(self.max_lag_s, lag)
            try:
                if typ == self._ev_exec:
                    self.counts["exec"] += 1
                    self._on_exec(pid, start // tick)
                elif typ == self._ev_exit:
                    self.counts["exit"] += 1
                    self._on_exit(pid)
            except Exception as exc:
                self.callback_errors += 1
                self.log.error("discovery callback failed", pid=pid, error=repr(exc))

    # -- self-metrics -----------------------------------------------------------------------
    @property
    def drops(self) -> int:
        """Records lost to a full ring buffer (kernel counter); the last value after close."""
        obj = self._obj
        if obj is None or obj.closed:
            return self._drops_at_close
        try:
            return self._read_drops(obj)
        except BpfError:  # closed meanwhile
            return self._drops_at_close

    def _read_drops(self, obj: BpfObject) -> int:
        raw = obj.map(STATS_MAP).lookup(self._stat_full)
        return int.from_bytes(raw or b"\0" * 8, "little")

    # -- lifetime ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Detach, stop the drain thread, free the object. Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is threading.current_thread():
            return  # called from a callback: the drain loop frees on its way out
        if thread is not None:
            thread.join()
        self._free()

    def _free(self) -> None:
        with self._free_lock:
            obj, self._obj = self._obj, None
            if obj is None:
                return
            try:
                self._drops_at_close = self._read_drops(obj)
            except BpfError:  # never loaded: nothing was counted
                self._drops_at_close = 0
            obj.close()  # ring buffer, then links, then programs and maps
            self._rb = None
            self._links = []
        self.log.info("process discovery stopped", **self.counts, drops=self._drops_at_close)

    def __enter__(self) -> Discovery:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "running"
        return f"<Discovery {state} exec={self.counts['exec']} exit={self.counts['exit']}>"
