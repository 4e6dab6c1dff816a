"""The node service's own contracts: selection by port and exclusion, service_name from the
OpenTelemetry variables, and SIGTERM with many targets. The agent runs as users run it
(`pyhttp2probe run` in its own process); the programs are real grpc-go programs."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from testkit.agentproc import AgentProcess
from testkit.gobuild import GoBuild, build
from testkit.prom import free_port
from testkit.workload import Workload, start_workload

DEMO = ["-duration", "1s", "-qps", "200", "-hold"]


def _copy(tmp: Path, name: str) -> Path:
    """grpcdemo under a name of its own (the selection must pick by it)."""
    path = tmp / name
    shutil.copy2(build(GoBuild(src="grpcdemo")), path)
    return path


def _run(wl: Workload) -> int:
    """Let it make its calls; returns how many client calls it says it made."""
    wl.go()
    wl.wait_done(60)
    summary = wl.finish() or {}
    return int(summary["total"])


def _client_calls(agent: AgentProcess, **labels: str) -> float:
    return agent.value("rpc_client_duration_seconds_count", **labels)


def test_port_selection_finds_a_server_that_starts_after_the_agent() -> None:
    port = free_port()
    tag = f"port{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        binary = _copy(Path(tmp), f"{tag}-demo")
        other = _copy(Path(tmp), f"{tag}-other")
        agent = stack.enter_context(AgentProcess(["--port", str(port)]))
        wl = stack.enter_context(start_workload(binary, ["-listen", f"127.0.0.1:{port}", *DEMO]))
        bystander = stack.enter_context(start_workload(other, DEMO))  # listens elsewhere
        assert agent.wait_value("pyhttp2probe_attached_processes", 1) == 1
        calls = _run(wl)
        _run(bystander)
        want = float(calls)
        deadline = time.monotonic() + 10
        while _client_calls(agent) != want and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _client_calls(agent) == want
        assert _client_calls(agent, service_name=other.name) == 0


def test_exclude_wins_and_service_name_comes_from_the_otel_variables() -> None:
    tag = f"otel{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        a, b, c = (_copy(Path(tmp), f"{tag}-{x}") for x in "abc")
        agent = stack.enter_context(
            AgentProcess(["--exe", f"{tag}-*", "--exclude-exe", f"{tag}-c"]))
        wa = stack.enter_context(start_workload(a, DEMO, env={"OTEL_SERVICE_NAME": "checkout"}))
        wb = stack.enter_context(start_workload(b, DEMO, env={
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=cart%20v2"}))
        wc = stack.enter_context(start_workload(c, DEMO))
        assert agent.wait_value("pyhttp2probe_attached_processes", 2) == 2
        calls = {"checkout": _run(wa), "cart v2": _run(wb)}
        _run(wc)
        for name, n in calls.items():
            deadline = time.monotonic() + 10
            while _client_calls(agent, service_name=name) != n and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _client_calls(agent, service_name=name) == n, name
        assert _client_calls(agent) == sum(calls.values()), "nothing of the excluded one"


def test_sigterm_with_50_targets_detaches_everything_and_exits_0() -> None:
    """The contract: exit 0 within 2 s of SIGTERM, with every probe detached."""
    tag = f"sig{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        binary = _copy(Path(tmp), f"{tag}-demo")
        workloads = [stack.enter_context(start_workload(binary, DEMO)) for _ in range(50)]
        agent = stack.enter_context(AgentProcess(["--exe", f"{tag}-*"]))
        assert agent.value("pyhttp2probe_attached_processes") == 50  # judged before ready
        assert agent.stop() == 0, agent.stderr
        assert agent.stop_seconds is not None and agent.stop_seconds < 2.0, agent.stop_seconds
        for wl in workloads:  # unharmed: each still makes its calls and exits 0
            wl.go()
        for wl in workloads:
            wl.wait_done(60)
            assert int((wl.finish() or {})["total"]) > 0


def test_series_of_an_exited_process_stay_until_the_ttl_then_leave() -> None:
    tag = f"ttl{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        binary = _copy(Path(tmp), f"{tag}-demo")
        agent = stack.enter_context(AgentProcess(["--exe", f"{tag}-*", "--series-ttl", "6s"]))
        wl = stack.enter_context(start_workload(binary, DEMO))
        assert agent.wait_value("pyhttp2probe_attached_processes", 1) == 1
        calls = _run(wl)
        assert agent.wait_value("rpc_client_duration_seconds_count", calls) == calls
        assert agent.wait_value("pyhttp2probe_attached_processes", 0) == 0  # exited
        assert _client_calls(agent) == calls  # still there: counters never went back
        # the sweep runs every 5 s: gone within ttl + one sweep (+ slack for a busy machine)
        assert agent.wait_value("rpc_client_duration_seconds_count", 0, timeout=25) == 0
