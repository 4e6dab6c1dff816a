"""gRPC served by (*grpc.Server).ServeHTTP under net/http's HTTP/2 server, and ghz (a Go
gRPC load tool nobody on this project wrote) as a second oracle against grpc's own
transport: the agent's server span counts per status code equal what each side reports.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from testkit.gobuild import GoBuild, build
from testkit.traced import SERVEHTTP_MOD, ghz_binary, read_ports, traced
from testkit.workload import read_truth, start_workload

MOD = SERVEHTTP_MOD
CHECK = "/grpc.health.v1.Health/Check"
HEALTH_PROTO = """syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Nope(HealthCheckRequest) returns (HealthCheckResponse);  // not served: Unimplemented
}
"""
# ghz's statusCodeDistribution names -> gRPC codes
GHZ_CODES = {"OK": 0, "NotFound": 5, "Unimplemented": 12}


def test_grpc_served_by_servehttp_yields_one_server_span_per_call() -> None:
    binary = build(GoBuild(src="grpcservehttp", mod=MOD))
    with tempfile.TemporaryDirectory() as tmp:
        truth_path, ports = Path(tmp) / "truth.jsonl", Path(tmp) / "ports"
        args = ["-conns", "3", "-goroutines", "6", "-rpcs", "30", "-truth", truth_path,
                "-ports", ports, "-hold"]
        with start_workload(binary, args) as wl:
            _, hport, _ = read_ports(ports)
            run = traced(wl)
        truth = read_truth(truth_path)

    spans = run.of_kind("grpc_server")
    assert len(run.of_kind("grpc_server", include_unmatched=True)) == len(spans)
    assert all("via_serve_http" in s.flags for s in spans)
    assert Counter((s.full_method, s.status_code, s.server_port) for s in spans) == Counter(
        (t["method"], t["code"], t["server_port"]) for t in truth)
    assert {s.status_code for s in spans} == {0, 5}
    assert {s.server_port for s in spans} == {hport}  # the ServeHTTP listener, from Host
    # the HTTP/2 request under each call is an HTTP/2 server span too (grpc answers 200),
    # and the call's span carries that request's identity (conn, stream id) and start
    http = [s for s in run.of_kind("http_server") if s.full_method == CHECK]
    assert len(http) == len(truth) and {s.status_code for s in http} == {200}
    assert {(s.connection, s.stream_id, s.start_ns) for s in http} == {
        (s.connection, s.stream_id, s.start_ns) for s in spans}
    # 3 hits per call: the HTTP/2 request's start and end, the gRPC end
    n, rc = len(truth), run.run_counts
    assert rc["grpc_server_operate_headers"] == 0
    assert rc["grpc_server_write_status_ht"] == n
    assert sum(v for k, v in rc.items() if k.startswith("http2_server_")) == 2 * n


@pytest.fixture(scope="module")
def ghz() -> Path:
    try:
        return ghz_binary()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot build ghz from the Go module proxy: {exc}")


@pytest.mark.parametrize("listener", ["grpc", "servehttp"])
def test_ghz_counts_equal_agent_server_spans(ghz: Path, listener: str) -> None:
    """ghz against grpc's own transport, and against net/http's h2c listener, which hands
    gRPC requests to (*grpc.Server).ServeHTTP."""
    binary = build(GoBuild(src="grpcservehttp", mod=MOD))
    with tempfile.TemporaryDirectory() as tmp:
        proto, ports = Path(tmp) / "health.proto", Path(tmp) / "ports"
        proto.write_text(HEALTH_PROTO)
        with start_workload(binary, ["-conns", "0", "-ports", ports, "-hold"]) as wl:
            grpc_port, h2c_port, _ = read_ports(ports)
            gport = grpc_port if listener == "grpc" else h2c_port

            def load() -> list[dict]:
                reports = []
                for method, service, n in (("Check", "", 3000), ("Check", "missing", 700),
                                           ("Nope", "", 300)):
                    out = subprocess.run(
                        [ghz, "--insecure", "--proto", proto,
                         "--call", f"grpc.health.v1.Health.{method}",
                         "-d", json.dumps({"service": service}), "-n", str(n), "-c", "24",
                         "--connections", "4", "-O", "json", f"127.0.0.1:{gport}"],
                        check=True, capture_output=True, text=True, timeout=300)
                    reports.append(json.loads(out.stdout))
                return reports

            run = traced(wl, during=load)
    reports = run.extra["during"]
    want: Counter[int] = Counter()
    for rep in reports:
        for name, count in rep["statusCodeDistribution"].items():
            want[GHZ_CODES[name]] += count
    assert sum(want.values()) == sum(r["count"] for r in reports) == 4000
    assert want[12] == 300  # unknown method: answered by handleStream itself
    spans = run.of_kind("grpc_server")
    assert len(run.of_kind("grpc_server", include_unmatched=True)) == len(spans)
    assert Counter(s.status_code for s in spans) == want
    assert Counter(s.full_method for s in spans) == {CHECK: 3700,
                                                    "/grpc.health.v1.Health/Nope": 300}
    assert {s.server_port for s in spans} == {gport}
    n = len(spans)
    rc = run.run_counts
    if listener == "grpc":
        assert not [s for s in spans if s.flags]
        assert rc["grpc_server_operate_headers"] + rc["grpc_server_write_status"] == 2 * n
        return
    # ServeHTTP: each call joined to its HTTP/2 request; 3 hits per call in all
    assert all(s.flags == ("via_serve_http",) for s in spans), Counter(s.flags for s in spans)
    http = run.of_kind("http_server")
    assert {(s.connection, s.stream_id, s.start_ns) for s in http} == {
        (s.connection, s.stream_id, s.start_ns) for s in spans}
    assert rc["grpc_server_operate_headers"] == rc["grpc_server_write_status"] == 0
    hits = rc["grpc_server_write_status_ht"] + sum(
        v for k, v in rc.items() if k.startswith("http2_server_"))
    assert hits == 3 * n, rc
