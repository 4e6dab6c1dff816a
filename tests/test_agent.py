"""One Agent, many processes: objects loaded once, links per file or per process, spans of
each process one to one with that process's own ground truth.

Real BPF against real grpc-go programs (two pinned versions), no mocks.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pyhttp2probe import Agent, TargetError
from pyhttp2probe.spans import Span
from testkit.client_match import match
from testkit.gobuild import GO_ROOT, GoBuild, build
from testkit.traced import match_one_to_one, span_wraps_handler
from testkit.workload import Workload, read_truth, start_workload

PINS = sorted(p.name for p in (GO_ROOT / "grpcmods").iterdir() if (p / "go.sum").exists())
OLDEST, NEWEST = PINS[0], PINS[-1]
SMALL = ["-servers", "2", "-goroutines", "4", "-rpcs", "15", "-churn", "1", "-errors", "0.2",
         "-client-failures", "0.05"]


def _grpcwork(pin: str) -> Path:
    return build(GoBuild(src="grpcwork", mod=f"grpcmods/{pin}"))


def _bpf_fds(kind: str) -> set[int]:
    """Ids of the BPF programs ("prog_id") or links ("link_id") this process holds, from
    the kernel's /proc/self/fdinfo."""
    out = set()
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            text = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(f"{kind}:"):
                out.add(int(line.split()[1]))
    return out


def _start(stack: ExitStack, binary: Path, tmp: Path, tag: str) -> tuple[Workload, Path, Path]:
    ct, st = tmp / f"{tag}-client.jsonl", tmp / f"{tag}-server.jsonl"
    wl = stack.enter_context(start_workload(
        binary, [*SMALL, "-seed", str(abs(hash(tag)) % 1000), "-truth", ct,
                 "-server-truth", st, "-hold"]))
    return wl, ct, st


def _assert_one_to_one(spans: list[Span], client: list[dict[str, Any]],
                       server: list[dict[str, Any]], what: str) -> None:
    res = match([s for s in spans if s.kind == "grpc_client"], client)
    assert res.exact, f"{what}: {res.summary()}"
    srv = [s for s in spans if s.kind == "grpc_server"]
    _, lost, _ = match_one_to_one(
        server, srv, truth_key=lambda t: (t["method"], t["code"], t["server_port"]),
        span_key=lambda s: (s.full_method, s.status_code, s.server_port),
        compatible=span_wraps_handler)
    assert not lost, f"{what}: server truth without a span: {[server[i] for i in lost[:3]]}"


def _go_and_drain(agent: Agent, runs: list[tuple[Workload, Path, Path]]) -> dict[str, int]:
    """Let every attached workload go, wait for all, drain: the agent's counters."""
    for wl, _, _ in runs:
        wl.go()
    for wl, _, _ in runs:
        wl.wait_done(120)
    agent.drain()
    return agent.stats()


def test_one_agent_traces_four_processes_each_one_to_one_with_its_own_truth() -> None:
    new, old = _grpcwork(NEWEST), _grpcwork(OLDEST)
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        runs = [_start(stack, b, tmp, f"p{i}") for i, b in enumerate((new, new, new, old))]
        with Agent() as agent:
            programs_loaded = _bpf_fds("prog_id")
            agent.attach(runs[0][0].pid)
            programs_one = _bpf_fds("prog_id")
            for wl, _, _ in runs[1:]:
                agent.attach(wl.pid)
            assert agent.targets == {wl.pid for wl, _, _ in runs}
            assert _bpf_fds("prog_id") == programs_one == programs_loaded
            agent.attach(runs[0][0].pid)  # idempotent
            assert len(agent.targets) == 4
            stats = _go_and_drain(agent, runs)
        spans = list(agent.spans(timeout=0.2))
        for wl, _, _ in runs:
            wl.finish()
        assert stats["grpc_client.ringbuf_full"] == stats["grpc_server.ringbuf_full"] == 0
        by_pid = collections.defaultdict(list)
        for s in spans:
            by_pid[s.pid].append(s)
        assert set(by_pid) == {wl.pid for wl, _, _ in runs}
        for (wl, ct, st), binary in zip(runs, (new, new, new, old), strict=True):
            _assert_one_to_one(by_pid[wl.pid], read_truth(ct), read_truth(st),
                               f"pid {wl.pid} ({binary.name})")
            assert {s.service_name for s in by_pid[wl.pid]} == {binary.name}


def test_processes_of_one_binary_share_links_until_an_untraced_one_runs_it() -> None:
    binary = _grpcwork(NEWEST)
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        with Agent() as agent:
            first, _, _ = _start(stack, binary, tmp, "a")
            agent.attach(first.pid)
            shared = agent.links()
            assert 0 < shared == len(_bpf_fds("link_id"))
            second, _, _ = _start(stack, binary, tmp, "b")
            agent.attach(second.pid)
            assert agent.links() == shared, "a second process of the file costs no link"
            # an untraced process of the same file takes the shared traps: the agent sees
            # them (no_config) and gives the traced processes links of their own
            untraced, _, _ = _start(stack, binary, tmp, "c")
            untraced.go()
            untraced.wait_done(60)
            deadline = time.monotonic() + 10
            while agent.links() == shared and time.monotonic() < deadline:
                time.sleep(0.2)
            assert agent.links() == 2 * shared, "per-process links for the two traced ones"
            first.go()
            first.wait_done(60)
            agent.drain()
            spans = [s for s in agent.spans(timeout=0.2) if s.kind == "grpc_client"]
            assert spans and {s.pid for s in spans} == {first.pid}
            agent.detach(first.pid)
            agent.detach(second.pid)
            agent.detach(second.pid)  # idempotent
            assert agent.links() == 0 and not agent.targets
            assert not _bpf_fds("link_id")


def test_two_agents_with_their_own_registries_work_side_by_side() -> None:
    binary = _grpcwork(NEWEST)
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        r1, r2 = CollectorRegistry(), CollectorRegistry()
        with Agent(registry=r1) as a1, Agent(registry=r2) as a2:
            (w1, c1, _), (w2, c2, _) = _start(stack, binary, tmp, "x"), _start(stack, binary,
                                                                               tmp, "y")
            a1.attach(w1.pid)
            a2.attach(w2.pid)
            for wl in (w1, w2):
                wl.go()
            for wl in (w1, w2):
                wl.wait_done(60)
            a1.drain()
            a2.drain()
            got = [_client_counts(generate_latest(r).decode()) for r in (r1, r2)]
        for wl in (w1, w2):
            wl.finish()
        truths = (read_truth(c1), read_truth(c2))
    for counts, truth in zip(got, truths, strict=True):
        want = collections.Counter((r["method"], str(r["code"])) for r in truth)
        assert counts == want


def _client_counts(text: str) -> collections.Counter[tuple[str, str]]:
    got: collections.Counter[tuple[str, str]] = collections.Counter()
    for fam in text_string_to_metric_families(text):
        if fam.name != "rpc_client_duration_seconds":
            continue
        for s in fam.samples:
            if s.name.endswith("_count"):
                lab = s.labels
                got[(f"/{lab['rpc_service']}/{lab['rpc_method']}",
                     lab["rpc_grpc_status_code"])] += int(s.value)
    return got


def test_attach_refuses_what_it_cannot_trace_naming_the_reason() -> None:
    plain_go = build(GoBuild(src="calltarget"))  # Go, but neither gRPC nor HTTP/2
    registry = CollectorRegistry()
    with Agent(registry=registry) as agent, \
            subprocess.Popen(["sleep", "30"]) as not_go, \
            subprocess.Popen([str(plain_go), "calls", "1"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True) as no_probes:
        try:
            with pytest.raises(TargetError, match="no such process") as e1:
                agent.attach(2**22 + 12345)
            assert e1.value.reason == "no_process"
            with pytest.raises(TargetError, match="not a Go program") as e2:
                agent.attach(not_go.pid)
            assert e2.value.reason == "not_go"
            assert no_probes.stdout is not None and no_probes.stdout.readline()  # started
            with pytest.raises(TargetError, match="neither grpc-go nor HTTP/2") as e3:
                agent.attach(no_probes.pid)
            assert e3.value.reason == "no_probes"
            assert not agent.targets and agent.links() == 0
            text = generate_latest(registry).decode()
            for reason in ("no_process", "not_go", "no_probes"):
                assert f'pyhttp2probe_attach_errors_total{{reason="{reason}"}} 1.0' in text
        finally:
            not_go.kill()
            no_probes.kill()


def test_run_traces_every_listed_pid_in_one_agent() -> None:
    binary = _grpcwork(NEWEST)
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        (w1, c1, _), (w2, c2, _) = _start(stack, binary, tmp, "r1"), _start(stack, binary,
                                                                            tmp, "r2")
        port = _free_port()
        agent = subprocess.Popen(
            [sys.executable, "-m", "pyhttp2probe", "run", "--pid", str(w1.pid), "--pid",
             str(w2.pid), "--listen", f"127.0.0.1:{port}", "--log-level", "warning"],
            stderr=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            _wait_for(f"http://127.0.0.1:{port}/readyz")
            assert "pyhttp2probe_attached_processes 2.0" in _get(url)  # before ready
            for wl in (w1, w2):
                wl.go()
            for wl in (w1, w2):
                wl.wait_done(60)
            want = collections.Counter(
                (r["method"], str(r["code"])) for r in read_truth(c1) + read_truth(c2))
            deadline = time.monotonic() + 10
            while (got := _client_counts(_get(url))) != want and time.monotonic() < deadline:
                time.sleep(0.3)
            assert got == want
        finally:
            agent.terminate()
            _, err = agent.communicate(timeout=20)
        assert agent.returncode == 0, err
        for wl in (w1, w2):
            wl.finish()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    return urllib.request.urlopen(url, timeout=5).read().decode()


def _wait_for(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _get(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_perf_event_links_trace_the_same_where_uprobe_multi_is_missing() -> None:
    """The fallback for kernels without uprobe_multi (< 6.6): one link per offset."""
    binary = _grpcwork(NEWEST)
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        wl, ct, st = _start(stack, binary, Path(tmpdir), "perf")
        with Agent(link_style="perf_event") as agent:
            agent.attach(wl.pid)
            target = agent.target(wl.pid)
            assert target is not None
            offsets = sum(len(s.points) for s in target.paths.values())
            assert agent.links() == offsets == len(_bpf_fds("link_id")) > 3
            wl.go()
            wl.wait_done(60)
            agent.drain()
        spans = list(agent.spans(timeout=0.2))
        wl.finish()
        _assert_one_to_one(spans, read_truth(ct), read_truth(st), "perf-event links")
