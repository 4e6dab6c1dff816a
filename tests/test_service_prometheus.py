"""End to end, as an SRE runs it: the agent is started with --exe before the workload
exists, finds it by itself, and a real Prometheus scraping the agent reports exactly the
calls the workload says it made — also once the workload has exited."""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from testkit.agentproc import AgentProcess, run_found_workload
from testkit.gobuild import GO_ROOT, GoBuild, build
from testkit.prom import Prometheus

PINS = sorted(p.name for p in (GO_ROOT / "grpcmods").iterdir() if (p / "go.sum").exists())
# No client-side abandons (cancel, deadline): every server call then has a handler and a
# server truth line, so both sides can be compared to truth exactly.
ARGS = ["-servers", "2", "-goroutines", "4", "-rpcs", "20", "-churn", "1", "-errors", "0.25",
        "-client-failures", "0", "-nested", "0"]


def _vector(result: list[dict[str, Any]]) -> collections.Counter[tuple[str, str]]:
    return collections.Counter({
        (r["metric"]["rpc_method"], r["metric"]["rpc_grpc_status_code"]): int(float(r["value"][1]))
        for r in result})


def _private_copy(tmp: str) -> Path:
    """The workload under a name of its own, so the --exe pattern selects nothing else."""
    binary = Path(tmp) / f"e2e-{os.getpid()}-grpcwork"
    shutil.copy2(build(GoBuild(src="grpcwork", mod=f"grpcmods/{PINS[-1]}")), binary)
    return binary


def test_prometheus_sees_exactly_the_calls_of_a_workload_found_by_exe_pattern() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        binary = _private_copy(tmp)
        with AgentProcess(["--exe", f"e2e-{os.getpid()}-*"]) as agent, \
                Prometheus([f"127.0.0.1:{agent.port}"]) as prom:
            _run_and_compare(agent, prom, binary, Path(tmp))


def _run_and_compare(agent: AgentProcess, prom: Prometheus, binary: Path, tmp: Path) -> None:
    assert agent.value("pyhttp2probe_attached_processes") == 0  # ready with no target
    client, server = run_found_workload(agent, binary, ARGS, tmp)
    assert sum(client.values()) > 100 and len(client) > 1
    # the workload has exited: detached, its series stay (--series-ttl)
    for metric, want in (("rpc_client_duration_seconds_count", client),
                         ("rpc_server_duration_seconds_count", server)):
        q = f"sum by (rpc_method, rpc_grpc_status_code) ({metric})"
        got = prom.wait_for(q, want, _vector)
        assert got == want, metric
    assert agent.stop() == 0, agent.stderr
