"""The Prometheus families of issue 5, scraped from the tracer's collector after real
traffic: http_client/http_server_request_duration_seconds (h2work) and
rpc_server_duration_seconds (gRPC via ServeHTTP), with the DESIGN.md labels and counts
equal to the ground truth."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from testkit.gobuild import GoBuild, build
from testkit.traced import SERVEHTTP_MOD, read_ports, traced
from testkit.workload import read_truth, start_workload


def _counts(text: str, family: str) -> list[tuple[dict[str, str], float]]:
    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            return [(s.labels, s.value) for s in fam.samples if s.name == family + "_count"]
    return []


def test_http2_duration_histograms_count_every_request_with_labels() -> None:
    binary = build(GoBuild(src="h2work"))
    with tempfile.TemporaryDirectory() as tmp:
        ct, st = Path(tmp) / "c.jsonl", Path(tmp) / "s.jsonl"
        args = ["-servers", "4", "-goroutines", "4", "-rpcs", "10", "-truth", ct,
                "-server-truth", st, "-hold"]
        with start_workload(binary, args) as wl:
            run = traced(wl)
        client, server = read_truth(ct), read_truth(st)
    text = run.extra["metrics"]
    for family, truth in (("http_client_request_duration_seconds", client),
                          ("http_server_request_duration_seconds", server)):
        samples = _counts(text, family)
        assert samples, family
        want = Counter((t["method"], str(t["status"]), str(t["server_port"]))
                       for t in truth if t["proto"] == "HTTP/2.0")
        got: Counter[tuple[str, str, str]] = Counter()
        for labels, value in samples:
            assert labels["network_protocol_version"] == "2"
            assert labels["server_address"] == "127.0.0.1"
            assert labels["service_name"] == binary.name
            got[(labels["http_request_method"], labels["http_response_status_code"],
                 labels["server_port"])] += int(value)
        assert got == want, family


def test_rpc_server_duration_histogram_labels_and_counts() -> None:
    binary = build(GoBuild(src="grpcservehttp", mod=SERVEHTTP_MOD))
    with tempfile.TemporaryDirectory() as tmp:
        truth_path, ports = Path(tmp) / "t.jsonl", Path(tmp) / "ports"
        with start_workload(binary, ["-conns", "2", "-goroutines", "3", "-rpcs", "10",
                                     "-truth", truth_path, "-ports", ports, "-hold"]) as wl:
            _, hport, _ = read_ports(ports)
            run = traced(wl)
        truth = read_truth(truth_path)
    samples = _counts(run.extra["metrics"], "rpc_server_duration_seconds")
    got: Counter[str] = Counter()
    for labels, value in samples:
        assert labels["rpc_system"] == "grpc"
        assert labels["rpc_service"] == "grpc.health.v1.Health"
        assert labels["rpc_method"] == "Check"
        assert labels["server_port"] == str(hport)
        got[labels["rpc_grpc_status_code"]] += int(value)
    assert got == Counter(str(t["code"]) for t in truth)
