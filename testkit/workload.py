"""Run a Go workload (tests/go/grpcwork, grpcdemo, h2work) and read its ground truth.

The workloads share one handshake on stdin/stdout:
  -wait-start  the child prints ``READY <pid>`` and waits for a line on stdin before it
               starts any RPC (so the tracer can attach first);
  -hold        after the last RPC (connections closed, truth files flushed) it prints
               ``DONE`` and waits for a line or EOF on stdin before exiting (so the tracer
               can drain).
It prints a ``SUMMARY {json}`` line on stderr at the end.

Usage::

    with start_workload(binary, ["-servers", "3", "-truth", str(p)]) as wl:
        attach(wl.pid)
        wl.go()
        wl.wait_done(60)
        ... drain the tracer ...
        wl.finish()
    rows = read_truth(p)

Every wait is bounded; on any error (or leaving the ``with`` block early) the child is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Workload", "WorkloadError", "read_truth", "run_workload", "start_workload"]


class WorkloadError(RuntimeError):
    """The workload misbehaved: exited early or non-zero, or a wait timed out."""


class Workload:
    """A running workload child started with -wait-start (and usually -hold)."""

    def __init__(self, proc: subprocess.Popen, argv: list[str]):
        self.proc = proc
        self.argv = argv
        self.pid: int | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self.summary: dict[str, Any] | None = None
        self._started = False
        self._t_out = threading.Thread(target=self._pump_stdout, daemon=True)
        self._t_err = threading.Thread(target=self._pump_stderr, daemon=True)
        self._t_out.start()
        self._t_err.start()

    # -- readers -------------------------------------------------------------------------
    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)
            if line.startswith("SUMMARY "):
                with contextlib.suppress(ValueError):
                    self.summary = json.loads(line[len("SUMMARY "):])

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def _expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkloadError(f"{self.argv[0]}: no {prefix!r} within {timeout}s\n"
                                    f"stderr:\n{self.stderr}")
            try:
                line = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=5)
                self._t_err.join(timeout=2)
                raise WorkloadError(f"{self.argv[0]} exited ({self.proc.returncode}) before "
                                    f"{prefix!r}\nstderr:\n{self.stderr}")
            if line.startswith(prefix):
                return line

    def _read_ready(self, timeout: float) -> None:
        line = self._expect("READY", timeout)
        self.pid = int(line.split()[1])

    # -- control -------------------------------------------------------------------------
    def _send(self, data: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise WorkloadError(f"{self.argv[0]} closed stdin\nstderr:\n{self.stderr}") from exc

    def go(self) -> None:
        """Let the workload start its RPCs."""
        if not self._started:
            self._started = True
            self._send("go\n")

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        """The next stdout line that starts with `prefix` (a workload's own mid-run
        handshake), skipping others."""
        return self._expect(prefix, timeout)

    def send_line(self, line: str = "go") -> None:
        """One line on the workload's stdin (answers a mid-run handshake)."""
        self._send(line + "\n")

    def wait_done(self, timeout: float = 120.0) -> None:
        """Wait for DONE (needs -hold): every RPC finished, truth files written."""
        self._expect("DONE", timeout)

    def finish(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """Release the workload (close stdin), wait for its exit; raise on non-zero exit.

        Returns the parsed SUMMARY line, if any.
        """
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise WorkloadError(f"{self.argv[0]} did not exit within {timeout}s\n"
                                f"stderr:\n{self.stderr}") from exc
        self._close_pipes()
        if rc != 0:
            raise WorkloadError(f"{self.argv[0]} exited with {rc}\nstderr:\n{self.stderr}")
        return self.summary

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self.proc.poll() is not None:
            self._close_pipes()

    def _close_pipes(self) -> None:
        """The child is gone: let the readers reach EOF, then close our pipe ends now
        (not whenever the garbage collector gets to them, e.g. in another test's fd check)."""
        self._t_out.join(timeout=5)
        self._t_err.join(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()

    def __enter__(self) -> Workload:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self.proc.poll() is None:
            if exc_type is None:
                # Left the block without finish(): release it politely, then force.
                try:
                    self.finish(timeout=10)
                    return
                except WorkloadError:
                    pass
            self.kill()


def start_workload(binary: str | os.PathLike, args: Sequence[str] = (),
                   ready_timeout: float = 30.0, env: dict[str, str] | None = None) -> Workload:
    """Start `binary` with `args` (-wait-start is added if missing) and wait for READY."""
    argv = [str(binary), *map(str, args)]
    if "-wait-start" not in argv and "--wait-start" not in argv:
        argv.append("-wait-start")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1,
                            env={**os.environ, **(env or {})})
    wl = Workload(proc, argv)
    try:
        wl._read_ready(ready_timeout)
    except BaseException:
        wl.kill()
        raise
    return wl


def run_workload(binary: str | os.PathLike, args: Sequence[str] = (),
                 timeout: float = 300.0) -> dict[str, Any] | None:
    """Run a workload to completion without a tracer; return its SUMMARY."""
    with start_workload(binary, [*args, "-hold"]) as wl:
        wl.go()
        wl.wait_done(timeout)
        return wl.finish()


def read_truth(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Ground truth: one dict per JSON line."""
    rows = []
    with Path(path).open() as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"{path}:{n}: bad JSON line: {exc}") from exc
    return rows
