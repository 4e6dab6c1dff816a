"""Faults and bad inputs, against the node service as users run it (`pyhttp2probe run` in
a child process, real BPF, real Go programs, no mocks). Each test proves three things:
the traced programs are unharmed, the agent still runs (or, killed, leaves nothing in the
kernel), and nothing is lost silently — every loss and every refusal is a counted metric.

Every workload runs from a private copy named `faults-<pid>-…`, so `--exe` selects only
this file's processes (other tests may run on the machine at the same time).
"""

from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testkit.agentproc import AgentProcess
from testkit.gobuild import GO_ROOT, GoBuild, build
from testkit.prom import http_get
from testkit.workload import read_truth, start_workload

TAG = f"faults-{os.getpid()}"
PINS = sorted(p.name for p in (GO_ROOT / "grpcmods").iterdir() if (p / "go.sum").exists())
OLDEST, NEWEST = PINS[0], PINS[-1]
# Every call has a server handler and a truth line on both sides (no client-side
# abandons, no nesting), so client and server counts both equal truth exactly.
EXACT = ["-servers", "2", "-goroutines", "4", "-rpcs", "20", "-churn", "1", "-errors", "0.25",
         "-client-failures", "0", "-nested", "0"]
CLIENT, SERVER = "rpc_client_duration_seconds", "rpc_server_duration_seconds"


def _grpcwork(pin: str = NEWEST) -> Path:
    return build(GoBuild(src="grpcwork", mod=f"grpcmods/{pin}"))


def _copy(binary: Path, tmp: Path, name: str) -> Path:
    """`binary` under a private name (its service_name), selected by `--exe {TAG}-*`."""
    out = tmp / f"{TAG}-{name}"
    shutil.copy2(binary, out)
    return out


def _agent(*args: str) -> AgentProcess:
    return AgentProcess(["--exe", f"{TAG}-*", *args])


def _wait(cond: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.1)
    return got


def _by_method(rows: list[dict[str, Any]]) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((r["method"].rsplit("/", 1)[1], str(r["code"])) for r in rows)


def _traced(agent: AgentProcess, service: str) -> float:
    return agent.value("pyhttp2probe_instrumented_processes", service_name=service)


def _run_exact(agent: AgentProcess, binary: Path, tmp: Path, tag: str,
               env: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> None:
    """Run grpcwork (EXACT) from `binary` to completion under the agent: found at its exec,
    its client and server counts (its service_name's series) equal its own truth."""
    service = (env or {}).get("OTEL_SERVICE_NAME", binary.name)
    ct, st = tmp / f"{tag}-client.jsonl", tmp / f"{tag}-server.jsonl"
    with start_workload(binary, [*EXACT, *extra, "-truth", ct, "-server-truth", st, "-hold"],
                        env=env) as wl:
        _wait(lambda: _traced(agent, service) == 1, what=f"{service} traced")
        wl.go()
        wl.wait_done(120)
        wl.finish()
    _assert_counts(agent, service, read_truth(ct), read_truth(st))


def _assert_counts(agent: AgentProcess, service: str, client: list[dict[str, Any]],
                   server: list[dict[str, Any]]) -> None:
    want_c, want_s = _by_method(client), _by_method(server)
    assert sum(want_c.values()) > 100 and len(want_c) > 1
    for metric, want in ((CLIENT, want_c), (SERVER, want_s)):
        got = _wait_counts(agent, metric, want, service_name=service)
        assert got == want, f"{service} {metric}"


def _wait_counts(agent: AgentProcess, metric: str, want: Any, timeout: float = 10.0,
                 **labels: str) -> collections.Counter[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while (got := agent.counts(metric, **labels)) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


# -- the kernel's view of the agent's BPF state ----------------------------------------------
def _bpftool(*args: str) -> Any:
    out = subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    return json.loads(out) if out.strip() else []


def _in_flight_of(agent: AgentProcess, pid: int) -> dict[str, int]:
    """Entries keyed by `pid` in the agent's in-flight maps (every in-flight key starts
    with the u32 tgid), read through bpftool: {map name: entries}."""
    from pyhttp2probe.probes import all_paths

    names = {m[:15] for p in all_paths() for m in p.in_flight_maps}  # BPF_OBJ_NAME_LEN
    ids = agent.bpf_ids()["map"]
    out = {}
    for m in _bpftool("map", "show"):
        if m["id"] in ids and m.get("name") in names:
            rows = _bpftool("map", "dump", "id", str(m["id"]))
            keys = [bytes(int(b, 16) for b in r["key"]) for r in rows if "key" in r]
            out[m["name"]] = sum(1 for k in keys if int.from_bytes(k[:4], "little") == pid)
    return out


# -- 1. a target killed with hundreds of RPCs in flight ---------------------------------------
def test_target_killed_with_hundreds_of_rpcs_in_flight_is_detached_and_forgotten(
        tmp_path: Path) -> None:
    killed, later = _copy(_grpcwork(), tmp_path, "killed"), _copy(_grpcwork(), tmp_path, "later")
    with _agent() as agent:
        # 4 servers x 64 goroutines, each call held 0-50 ms by its server: ~256 client
        # calls and as many server calls in flight at any moment.
        with start_workload(killed, ["-servers", "4", "-goroutines", "64", "-rpcs", "100000",
                                     "-delay-max", "50ms", "-client-failures", "0",
                                     "-nested", "0"]) as wl:
            _wait(lambda: _traced(agent, killed.name) == 1, what="killed traced")
            wl.go()
            _wait(lambda: sum(agent.counts(CLIENT, service_name=killed.name).values()) > 1000,
                  timeout=60, what="calls flowing")
            pid = wl.pid
            assert pid is not None
            in_flight = sum(_in_flight_of(agent, pid).values())
            wl.proc.kill()
            wl.proc.wait(timeout=10)
        assert in_flight > 200  # measured while it ran: hundreds in flight
        assert agent.wait_value("pyhttp2probe_attached_processes", 0) == 0
        assert _traced(agent, killed.name) == 0
        assert http_get(f"{agent.url}/healthz")  # 200, or urllib raises
        # The agent forgets the dead process's calls: nothing of it stays in the maps.
        assert _wait(lambda: sum(_in_flight_of(agent, pid).values()) == 0, timeout=5,
                     what=f"in-flight entries of pid {pid} cleared")
        # ... and the next process is traced one to one with its truth.
        _run_exact(agent, later, tmp_path, "later")
        assert agent.stop() == 0, agent.stderr


# -- 2. binaries replaced or deleted on disk while traced -------------------------------------
def _start_exact(binary: Path, tmp: Path, tag: str, env: dict[str, str] | None = None) -> Any:
    ct, st = tmp / f"{tag}-client.jsonl", tmp / f"{tag}-server.jsonl"
    wl = start_workload(binary, [*EXACT, "-seed", str(len(tag)), "-truth", ct,
                                 "-server-truth", st, "-hold"], env=env)
    return wl, ct, st


def test_binary_replaced_on_disk_new_process_planned_afresh_old_one_keeps_its_plan(
        tmp_path: Path) -> None:
    path = tmp_path / f"{TAG}-replaced"
    shutil.copy2(_grpcwork(OLDEST), path)
    with _agent() as agent:
        old, old_ct, old_st = _start_exact(path, tmp_path, "old",
                                           env={"OTEL_SERVICE_NAME": "replaced-old"})
        with old:
            _wait(lambda: _traced(agent, "replaced-old") == 1, what="old traced")
            # A deploy: the new build is written beside the path and renamed over it.
            fresh = tmp_path / f"{TAG}-replaced.tmp"
            shutil.copy2(_grpcwork(NEWEST), fresh)
            os.rename(fresh, path)
            new, new_ct, new_st = _start_exact(path, tmp_path, "new",
                                               env={"OTEL_SERVICE_NAME": "replaced-new"})
            with new:
                _wait(lambda: _traced(agent, "replaced-new") == 1, what="new traced")
                assert os.readlink(f"/proc/{old.pid}/exe").endswith(" (deleted)")
                for wl in (old, new):  # both run at once, each under its own plan
                    wl.go()
                for wl in (old, new):
                    wl.wait_done(120)
                    wl.finish()
        _assert_counts(agent, "replaced-old", read_truth(old_ct), read_truth(old_st))
        _assert_counts(agent, "replaced-new", read_truth(new_ct), read_truth(new_st))
        assert agent.value("pyhttp2probe_attach_errors_total") == 0
        assert agent.stop() == 0, agent.stderr


def test_binary_deleted_from_disk_while_traced_is_still_traced_exactly(tmp_path: Path) -> None:
    path = _copy(_grpcwork(), tmp_path, "deleted")
    with _agent() as agent:
        wl, ct, st = _start_exact(path, tmp_path, "deleted")
        with wl:
            _wait(lambda: _traced(agent, path.name) == 1, what="traced")
            path.unlink()
            wl.go()
            wl.wait_done(120)
            wl.finish()
        _assert_counts(agent, path.name, read_truth(ct), read_truth(st))
        assert agent.stop() == 0, agent.stderr


# -- 3. a target that re-execs another binary -------------------------------------------------
class _Lines:
    """A child driven by stdin lines whose stdout lines answer (tests/go/h2exec)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, prefix: str, timeout: float = 30.0) -> list[str]:
        """The next stdout line, which must start with `prefix`, split."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.proc.args}: no {prefix!r} in {timeout}s") from None
        assert line is not None and line.startswith(prefix), (line, self.proc.args)
        return line.split()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 30.0) -> int:
        self.send("quit")
        rc = self.proc.wait(timeout=timeout)
        _, err = self.proc.communicate()
        assert rc == 0, err
        return rc

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def _h2_counts(agent: AgentProcess, service: str) -> tuple[float, float]:
    """(HTTP/2 client requests, HTTP/2 server requests) counted for `service`."""
    return (agent.value("http_client_request_duration_seconds_count", service_name=service),
            agent.value("http_server_request_duration_seconds_count", service_name=service))


def test_process_that_execs_another_binary_is_replanned_for_its_new_image(
        tmp_path: Path) -> None:
    h2 = build(GoBuild(src="h2exec"))
    first, second = _copy(h2, tmp_path, "exec-first"), _copy(h2, tmp_path, "exec-second")
    with _agent() as agent, _Lines([str(first)]) as proc:
        pid = int(proc.expect("READY")[1])
        want = {first.name: 0, second.name: 0}
        # first -> second -> first again: each exec keeps the pid and start time and
        # changes the image; the agent follows the image, never the pid.
        for image, n in ((first, 40), (second, 70), (first, 30)):
            if n != 40:
                proc.send(f"exec {image}")
                assert int(proc.expect("READY")[1]) == pid
            _wait(lambda img=image: _traced(agent, img.name) == 1
                  and agent.value("pyhttp2probe_attached_processes") == 1,
                  what=f"{image.name} traced")
            other = second if image == first else first
            assert _traced(agent, other.name) == 0  # the old image's plan was dropped
            proc.send(f"load {n}")
            assert proc.expect("LOADED") == ["LOADED", str(n), "0"]
            want[image.name] += n
            for name, w in want.items():  # only the image running now gets the new ones
                _wait(lambda name=name, w=w: _h2_counts(agent, name) == (w, w), timeout=10,
                      what=f"{name}: {w} requests, got {_h2_counts(agent, name)}")
        proc.finish()  # unharmed: every request answered 200, exit 0
        assert agent.wait_value("pyhttp2probe_attached_processes", 0) == 0
        assert agent.value("pyhttp2probe_attach_errors_total") == 0
        assert agent.stop() == 0, agent.stderr


# -- 4. the agent SIGKILLed mid-load -----------------------------------------------------------
def test_agent_killed_mid_load_leaves_no_bpf_program_link_or_map_and_the_target_goes_on(
        tmp_path: Path) -> None:
    binary = _copy(_grpcwork(), tmp_path, "agent-killed")
    ct, st = tmp_path / "client.jsonl", tmp_path / "server.jsonl"
    agent = _agent()
    try:
        with start_workload(binary, ["-servers", "2", "-goroutines", "16", "-rpcs", "400",
                                     "-truth", ct, "-server-truth", st, "-hold"]) as wl:
            _wait(lambda: _traced(agent, binary.name) == 1, what="traced")
            wl.go()
            _wait(lambda: sum(agent.counts(CLIENT).values()) > 500, timeout=60,
                  what="calls flowing")
            held = agent.bpf_ids()
            assert held["prog"] and held["link"] and held["map"]
            assert agent.kill() == -9
            wl.wait_done(120)
            summary = wl.finish()  # exit 0
    finally:
        agent.stop()
    rows = read_truth(ct)
    assert summary is not None and len(rows) == summary["total"] > 12_000
    assert summary["code_mismatch"] == 0
    assert len(read_truth(st)) == summary["server_handled"]

    def left() -> dict[str, set[int]]:
        return {"prog": held["prog"] & {p["id"] for p in _bpftool("prog", "show")},
                "link": held["link"] & {ln["id"] for ln in _bpftool("link", "show")},
                "map": held["map"] & {m["id"] for m in _bpftool("map", "show")}}

    # The kernel frees them once the last fd closes (and an RCU grace period passes).
    deadline = time.monotonic() + 10
    while any((remain := left()).values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert remain == {"prog": set(), "link": set(), "map": set()}
