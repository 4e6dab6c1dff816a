"""The gRPC server end takes an RPC whose status is grpc.statusOK (the package-level
*status.Status every OK RPC ends with) as OK without reading it: it learns the variable's
value once init has set it. Shown on real grpc-go, plain and PIE: the learned pointer is
the variable's value in the process (read from /proc/PID/mem), and the spans' codes are
exactly the workload's (errors included) with the shortcut on."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pyhttp2probe import Agent
from testkit.gobuild import GO_ROOT, GoBuild, build
from testkit.workload import read_truth, start_workload


@pytest.mark.parametrize("flags", [(), ("-buildmode=pie",)], ids=["exec", "pie"])
def test_the_learned_ok_status_is_the_variables_value(flags: tuple[str, ...],
                                                      tmp_path: Path) -> None:
    pins = sorted(p.name for p in (GO_ROOT / "grpcmods").iterdir() if (p / "go.sum").exists())
    binary = build(GoBuild(src="grpcwork", mod=f"grpcmods/{pins[-1]}", flags=flags))
    truth = tmp_path / "server.jsonl"
    args = ["-servers", "1", "-goroutines", "4", "-rpcs", "25", "-errors", "0.3",
            "-client-failures", "0", "-server-truth", truth, "-hold"]
    with start_workload(binary, args) as wl, Agent(registry=None) as agent:
        agent.attach(wl.pid)
        wl.go()
        wl.wait_done(120)
        agent.drain()
        raw = agent.config_table("grpc_server", "grpc_server_config").read(
            wl.pid.to_bytes(4, "little"))
        assert raw is not None
        cfg = np.frombuffer(raw, agent.layout.dtype("grpc_server_config"))[0]
        with open(f"/proc/{wl.pid}/mem", "rb") as mem:
            mem.seek(int(cfg["status_ok_var"]))
            (value,) = struct.unpack("<Q", mem.read(8))
        got = Counter((s.full_method, s.status_code) for s in agent.spans(timeout=0.5)
                      if s.kind == "grpc_server")
        wl.finish()
    assert cfg["status_ok_var"] != 0 and value != 0
    assert cfg["status_ok"] == value
    want = Counter((r["method"], r["code"]) for r in read_truth(truth))
    assert got == want
    assert any(code == 0 for _, code in want) and any(code != 0 for _, code in want)
