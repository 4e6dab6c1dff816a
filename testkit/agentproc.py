"""The agent as its users run it: `python3 -m pyhttp2probe run …` in a child process,
serving on a free loopback port, stopped with SIGTERM."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from testkit.prom import free_port, http_get, wait_http
from testkit.workload import read_truth, start_workload


class AgentProcess:
    """`with AgentProcess(["--exe", "grpcwork-*"]) as agent: agent.metrics()`.

    Waits for /readyz before returning; stop() sends SIGTERM and records how long the
    agent took to exit and its exit code."""

    def __init__(self, args: list[str], ready_timeout: float = 60.0) -> None:
        self.port = free_port()
        self.argv = [sys.executable, "-m", "pyhttp2probe", "run", *args,
                     "--listen", f"127.0.0.1:{self.port}"]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.returncode: int | None = None
        self.stop_seconds: float | None = None
        self.stderr = ""
        try:
            wait_http(f"{self.url}/readyz", timeout=ready_timeout)
        except BaseException:
            self.stop()
            raise AssertionError(f"agent not ready: {self.stderr}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics_text(self) -> str:
        return http_get(f"{self.url}/metrics")

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels`."""
        total = 0.0
        for fam in text_string_to_metric_families(self.metrics_text()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of every sample named `name`."""
        return [(s.labels, s.value) for fam in text_string_to_metric_families(self.metrics_text())
                for s in fam.samples if s.name == name]

    def counts(self, metric: str, **labels: str) -> collections.Counter[tuple[str, str]]:
        """(rpc_method, rpc_grpc_status_code) -> count of a histogram's _count samples
        (those whose labels include `labels`)."""
        got: collections.Counter[tuple[str, str]] = collections.Counter()
        for fam in text_string_to_metric_families(self.metrics_text()):
            for s in fam.samples:
                if s.name == f"{metric}_count" and all(
                        s.labels.get(k) == v for k, v in labels.items()):
                    got[(s.labels["rpc_method"], s.labels["rpc_grpc_status_code"])] += int(
                        s.value)
        return got

    def wait_value(self, name: str, want: float, timeout: float = 10.0, **labels: str) -> float:
        deadline = time.monotonic() + timeout
        while (got := self.value(name, **labels)) != want and time.monotonic() < deadline:
            time.sleep(0.1)
        return got

    # -- the agent process as the kernel sees it ------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    def bpf_ids(self) -> dict[str, set[int]]:
        """Ids of the BPF programs, links and maps the agent holds ("prog", "link", "map"),
        from the kernel's /proc/PID/fdinfo."""
        out: dict[str, set[int]] = {"prog": set(), "link": set(), "map": set()}
        base = f"/proc/{self.pid}/fdinfo"
        for fd in os.listdir(base):
            try:
                with open(f"{base}/{fd}") as f:
                    text = f.read()
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(":")
                if key in ("prog_id", "link_id", "map_id"):
                    out[key[:-3]].add(int(value))
        return out

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kb(self) -> int:
        """VmRSS of the agent, in KiB."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def kill(self) -> int:
        """SIGKILL (no cleanup of its own runs), wait; returns the exit code (-9)."""
        if self.returncode is None:
            self.proc.kill()
            _, self.stderr = self.proc.communicate(timeout=30)
            self.returncode = self.proc.returncode
        return self.returncode

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait; returns the exit code (the time taken is in stop_seconds)."""
        if self.returncode is None:
            t0 = time.monotonic()
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                _, self.stderr = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, self.stderr = self.proc.communicate()
            self.stop_seconds = time.monotonic() - t0
            self.returncode = self.proc.returncode
        return self.returncode

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def truth_by_method(rows: list[dict[str, Any]]) -> collections.Counter[tuple[str, str]]:
    """(rpc_method, rpc_grpc_status_code) -> calls, from a workload's truth rows."""
    return collections.Counter((r["method"].rsplit("/", 1)[1], str(r["code"])) for r in rows)


def run_found_workload(agent: Any, binary: Path, args: list[str], tmp: Path,
                       ) -> tuple[collections.Counter[tuple[str, str]],
                                  collections.Counter[tuple[str, str]]]:
    """Start grpcwork `binary` (with `args`) after the agent, which must find it by itself
    before its first call; run it to its exit (detached again). Returns its client and
    server truth by method and code. `agent` is anything with wait_value (an
    AgentProcess, or the agent in a container)."""
    ct, st = tmp / "client.jsonl", tmp / "server.jsonl"
    with start_workload(binary, [*args, "-truth", ct, "-server-truth", st, "-hold"]) as wl:
        assert agent.wait_value("pyhttp2probe_attached_processes", 1) == 1, "not found"
        wl.go()
        wl.wait_done(120)
        wl.finish()
    assert agent.wait_value("pyhttp2probe_attached_processes", 0) == 0, "not detached"
    return truth_by_method(read_truth(ct)), truth_by_method(read_truth(st))
