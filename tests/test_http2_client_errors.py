"""HTTP/2 client requests that the caller abandons (a deadline before response headers)
still end as exactly one span each, flagged error/no_response with status 0, while the
others carry their exact status; the server side sees every request once."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from testkit.gobuild import GoBuild, build
from testkit.traced import SERVEHTTP_MOD, read_ports, traced
from testkit.workload import read_truth, start_workload


def test_abandoned_http2_client_requests_are_error_spans() -> None:
    binary = build(GoBuild(src="grpcservehttp", mod=SERVEHTTP_MOD))
    with tempfile.TemporaryDirectory() as tmp:
        truth_path, ports = Path(tmp) / "h2.jsonl", Path(tmp) / "ports"
        args = ["-conns", "0", "-h2-goroutines", "10", "-h2-requests", "20",
                "-h2-truth", truth_path, "-ports", ports, "-hold"]
        with start_workload(binary, args) as wl:
            read_ports(ports)
            run = traced(wl, settle_s=0.5)
        truth = read_truth(truth_path)

    assert run.stats["http2.unmatched_end"] == 0 and run.stats["http2.bad_read"] == 0
    spans = run.of_kind("http_client")
    assert len(spans) == len(truth) == 200
    failed = [t for t in truth if t["error"]]
    assert failed and all(t["path"] == "/sleep/200" for t in failed)
    err_spans = [s for s in spans if "error" in s.flags]
    assert len(err_spans) == len(failed)
    assert all(s.status_code == 0 and "no_response" in s.flags for s in err_spans)
    assert Counter((s.method, s.full_method, s.status_code) for s in spans
                   if "error" not in s.flags) == Counter(
        (t["method"], t["path"], t["status"]) for t in truth if not t["error"])
    assert len(run.of_kind("http_server")) == len(truth)
    rc = run.run_counts
    assert rc["http2_client_start_bundled"] == rc["http2_client_end_bundled"] == len(truth)
