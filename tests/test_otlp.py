"""OTLP export end to end, as users run it: the agent (`run --exe … --otlp-endpoint URL`)
traces a gRPC workload and a real Jaeger shows every RPC of it, one span per side, with
the semantic-convention attributes and the process's resource, each server span the child
of its client span (the workload calls itself: both ends traced, joined by the connection),
and the JSON lines carry the very same ids. Before Jaeger listens the agent keeps serving
and counts the spans it cannot deliver; once Jaeger listens on that port the same exporter
delivers again."""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from testkit.agentproc import AgentProcess
from testkit.gobuild import GO_ROOT, GoBuild, build
from testkit.jaeger import Jaeger, jaeger_binary
from testkit.prom import free_port
from testkit.workload import read_truth, start_workload

PINS = sorted(p.name for p in (GO_ROOT / "grpcmods").iterdir() if (p / "go.sum").exists())
# No client-side abandons: every call then has a server span and a server truth line.
ARGS = ["-servers", "2", "-goroutines", "4", "-rpcs", "20", "-churn", "1", "-errors", "0.25",
        "-client-failures", "0", "-nested", "0"]
SMALL = ["-servers", "1", "-goroutines", "2", "-rpcs", "10", "-errors", "0",
         "-client-failures", "0", "-nested", "0"]
DROPPED = "pyhttp2probe_otlp_spans_dropped_total"
EXPORTED = "pyhttp2probe_otlp_spans_exported_total"

Key = tuple[str, str, int]  # (span kind, method, status code)


def _truth(path: Path, kind: str) -> collections.Counter[Key]:
    return collections.Counter((kind, r["method"].rsplit("/", 1)[1], int(r["code"]))
                               for r in read_truth(path))


def _run(agent: AgentProcess, binary: Path, args: list[str], tmp: Path,
         ) -> collections.Counter[Key]:
    """Run the workload to its end while the agent traces it; its truth, both sides."""
    ct, st = tmp / f"{binary.name}.client.jsonl", tmp / f"{binary.name}.server.jsonl"
    attached = agent.value("pyhttp2probe_attached_processes")
    with start_workload(binary, [*args, "-truth", ct, "-server-truth", st, "-hold"]) as wl:
        assert agent.wait_value("pyhttp2probe_attached_processes", attached + 1) == attached + 1
        wl.go()
        wl.wait_done(120)
        wl.finish()
    return _truth(ct, "client") + _truth(st, "server")


def _tag(span: dict[str, Any], key: str) -> Any:
    return span["tagmap"][key][1]


def _check_span(span: dict[str, Any], binary: Path, pid_tags: set[int]) -> Key:
    """The contracted shape of one exported gRPC span; returns its (kind, method, code)."""
    tags = span["tagmap"]
    kind = _tag(span, "span.kind")
    assert kind in ("client", "server"), tags
    service, method = _tag(span, "rpc.service"), _tag(span, "rpc.method")
    assert span["operationName"] == f"{service}/{method}"
    assert tags["rpc.system"] == ("string", "grpc")
    code_type, code = tags["rpc.grpc.status_code"]
    assert code_type == "int64"
    assert tags["server.port"][0] == "int64" and tags["server.port"][1] > 0
    assert tags["server.address"] == ("string", "127.0.0.1")
    status = tags.get("otel.status_code", ("string", "UNSET"))[1]  # UNSET has no tag
    assert (status == "ERROR") == (code != 0), tags
    assert span["duration"] >= 0
    process = span["process"]
    assert process["serviceName"] == binary.name
    ptags = {t["key"]: t["value"] for t in process["tags"]}
    assert ptags.get("process.executable.path") == str(binary), process
    assert ptags["host.name"] == os.uname().nodename
    pid_tags.add(int(ptags["process.pid"]))
    return (kind, method, int(code))


def _private_copy(tmp: Path, name: str) -> Path:
    binary = tmp / name
    shutil.copy2(build(GoBuild(src="grpcwork", mod=f"grpcmods/{PINS[-1]}")), binary)
    return binary


def test_jaeger_shows_every_rpc_and_the_agent_survives_jaeger_being_down() -> None:
    jaeger_binary()  # built (or found) before anything runs: its build is not the test's
    prefix = f"otlp-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        down = _private_copy(tmp, f"{prefix}-down-grpcwork")
        up = _private_copy(tmp, f"{prefix}-up-grpcwork")
        port = free_port()  # nothing listens there yet
        spans_out = tmp / "spans.jsonl"  # the same spans, ids included, as JSON lines
        with AgentProcess(["--exe", f"{prefix}-*", "--spans-out", str(spans_out),
                           "--otlp-endpoint", f"http://127.0.0.1:{port}"]) as agent:
            # -- backend down: spans are counted as dropped, the agent keeps serving ------
            lost = sum(_run(agent, down, SMALL, tmp).values())
            deadline = time.monotonic() + 30
            while agent.value(DROPPED) < lost and time.monotonic() < deadline:
                t0 = time.monotonic()
                agent.metrics_text()
                assert time.monotonic() - t0 < 1.0  # never blocked by the export
                time.sleep(0.2)
            assert agent.value(DROPPED, reason="export_failed") == lost
            assert agent.value(EXPORTED) == 0
            # -- backend up on that port: the same exporter delivers again ----------------
            with Jaeger(port) as jaeger:
                want = _run(agent, up, ARGS, tmp)
                assert sum(want.values()) > 200 and len(want) > 4
                # SIGTERM at once: what is still queued is flushed before the agent exits
                assert agent.stop() == 0, agent.stderr
                assert agent.stop_seconds is not None and agent.stop_seconds < 15
                closed = _closed_log(agent.stderr)
                assert closed["exported"] == sum(want.values())
                assert closed["dropped"] == {"queue_full": 0, "export_failed": lost,
                                             "shutdown": 0}
                deadline = time.monotonic() + 30
                spans: list[dict[str, Any]] = []
                while time.monotonic() < deadline:  # Jaeger shows spans ~1.5 s after export
                    spans = jaeger.spans(up.name)
                    if len(spans) >= sum(want.values()):
                        break
                    time.sleep(0.5)
                pids: set[int] = set()
                got = collections.Counter(_check_span(s, up, pids) for s in spans)
                assert got == want
                assert len(pids) == 1
                _check_joined(spans, _json_spans(spans_out, up.name))
                assert down.name not in jaeger.services()  # all dropped, as counted


def _json_spans(path: Path, service: str) -> dict[str, dict[str, Any]]:
    """The JSON-lines spans of `service`, by span id."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["span_id"]: r for r in rows if r["service_name"] == service}


def _check_joined(spans: list[dict[str, Any]], json_spans: dict[str, dict[str, Any]]) -> None:
    """Client spans are roots; each server span is CHILD_OF the client span of its call (same
    trace, method, code, stream id, and the server inside the client's time); the JSON lines
    hold every exported span under the same trace, span and parent ids."""
    by_id = {s["spanID"]: s for s in spans}
    assert len(by_id) == len(spans)
    children: collections.Counter[str] = collections.Counter()
    for span in spans:
        row = json_spans[span["spanID"]]
        parents = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
        assert (row["trace_id"], row["parent_span_id"]) == (
            span["traceID"], parents[0] if parents else ""), (row, span)
        if _tag(span, "span.kind") == "client":
            assert parents == [], span
            continue
        assert len(parents) == 1, span
        client = by_id[parents[0]]
        assert _tag(client, "span.kind") == "client"
        assert client["traceID"] == span["traceID"]
        for key in ("rpc.method", "rpc.grpc.status_code", "server.port"):
            assert _tag(client, key) == _tag(span, key), (client, span)
        assert client["startTime"] <= span["startTime"] <= client["startTime"] + \
            client["duration"], (client, span)
        children[parents[0]] += 1
    assert max(children.values()) == 1  # one server span per client span
    assert len(json_spans) == len(spans)


def _closed_log(stderr: str) -> dict[str, Any]:
    """The agent's last log line of the OTLP sink ("otlp export closed", JSON)."""
    lines = [json.loads(line) for line in stderr.splitlines()
             if '"otlp export closed"' in line]
    assert len(lines) == 1, stderr
    return lines[0]


def test_jaeger_shows_every_http2_request_with_http_conventions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"otlp-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmpdir, Jaeger() as jaeger:
        tmp = Path(tmpdir)
        binary = tmp / f"{prefix}-h2work"
        shutil.copy2(build(GoBuild(src="h2work")), binary)
        ct, st = tmp / "client.jsonl", tmp / "server.jsonl"
        # turned on the OpenTelemetry way this time: the base endpoint variable
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_url)
        with AgentProcess(["--exe", binary.name]) as agent:
            args = ["-servers", "4", "-goroutines", "2", "-rpcs", "10", "-errors", "0.3",
                    "-truth", ct, "-server-truth", st, "-hold"]
            with start_workload(binary, args) as wl:
                assert agent.wait_value("pyhttp2probe_attached_processes", 1) == 1
                wl.go()
                wl.wait_done(120)
                wl.finish()
            assert agent.stop() == 0, agent.stderr
        want: collections.Counter[tuple[str, str, int, str, int]] = collections.Counter(
            (kind, t["method"], int(t["status"]), t["path"], int(t["server_port"]))
            for kind, path in (("client", ct), ("server", st)) for t in read_truth(path)
            if t["proto"] == "HTTP/2.0")
        assert sum(want.values()) > 100
        assert {k[2] for k in want} >= {200, 404, 500}, want  # 4xx and 5xx both covered
        deadline = time.monotonic() + 30
        while len(spans := jaeger.spans(binary.name)) < sum(want.values()) \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        got: collections.Counter[tuple[str, str, int, str, int]] = collections.Counter()
        for span in spans:
            tags = span["tagmap"]
            kind, method = _tag(span, "span.kind"), _tag(span, "http.request.method")
            code_type, code = tags["http.response.status_code"]
            assert code_type == "int64" and span["operationName"] == method
            assert tags["network.protocol.version"] == ("string", "2")
            assert tags["server.address"] == ("string", "127.0.0.1")
            assert tags["server.port"][0] == "int64"
            status = tags.get("otel.status_code", ("string", "UNSET"))[1]
            assert (status == "ERROR") == (code >= (400 if kind == "client" else 500)), tags
            assert span["process"]["serviceName"] == binary.name
            got[(kind, method, code, _tag(span, "url.path"), tags["server.port"][1])] += 1
        assert got == want
