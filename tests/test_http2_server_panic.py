"""An HTTP/2 server handler that panics still ends as exactly one server span: net/http
recovers, skips handlerDone and resets the stream, so the span ends where its recover asks
for that reset, flagged error+panic, with the status the client saw (none before the
header, the flushed one after it) and the request's method and path. Nothing stays in flight, and a
healthy request still costs exactly 2 hits (the panic probe fires on panics only).
Go 1.26's bundled HTTP/2 and Go 1.27's net/http/internal/http2, stripped too.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest

from testkit.gobuild import GoBuild, build
from testkit.traced import SERVEHTTP_MOD, read_ports, traced
from testkit.workload import read_truth, start_workload

GOROUTINES, REQUESTS, PANICS = 6, 10, 6
BUILDS = [("", ""), ("", "-s -w"), ("go1.27.4", ""), ("go1.27.4", "-s -w")]


@pytest.mark.parametrize(("toolchain", "ldflags"), BUILDS,
                         ids=[(t or "go1.26") + ("-stripped" if f else "") for t, f in BUILDS])
def test_panicking_handler_ends_as_one_flagged_span(toolchain: str, ldflags: str) -> None:
    env = (("GOTOOLCHAIN", toolchain),) if toolchain else ()
    binary = build(GoBuild(src="grpcservehttp", mod=SERVEHTTP_MOD, ldflags=ldflags, env=env))
    with tempfile.TemporaryDirectory() as tmp:
        truth_path, ports = Path(tmp) / "h2.jsonl", Path(tmp) / "ports"
        args = ["-conns", "0", "-h2-goroutines", str(GOROUTINES), "-h2-requests",
                str(REQUESTS), "-h2-panics", str(PANICS), "-h2-truth", truth_path,
                "-ports", ports, "-hold"]
        with start_workload(binary, args) as wl:
            read_ports(ports)
            run = traced(wl, settle_s=0.5)
        truth = read_truth(truth_path)

    for k in ("unmatched_end", "bad_read", "ringbuf_full"):
        assert run.stats[f"http2.{k}"] == 0, run.stats
    panics = [t for t in truth if t["path"].startswith("/panic/")]
    assert len(panics) == GOROUTINES * PANICS and all(t["error"] for t in panics)
    server = run.of_kind("http_server")
    assert len(server) == len(truth)  # one span per request, panicking or not
    flagged = [s for s in server if "panic" in s.flags]
    assert Counter((s.method, s.full_method) for s in flagged) == Counter(
        (t["method"], t["path"]) for t in panics)
    for s in flagged:
        assert "error" in s.flags and s.start_ns < s.end_ns, s
        if s.full_method == "/panic/after-header":  # the client got 200, then the reset
            assert s.status_code == 200 and "no_response" not in s.flags, s
        else:
            assert s.status_code == 0 and "no_response" in s.flags, s
    healthy = [s for s in server if "panic" not in s.flags]
    assert not [s for s in healthy if "error" in s.flags]
    assert run.extra["in_flight"]["http2.http2_server_inflight"] == 0, run.extra["in_flight"]
    assert run.extra["in_flight"]["http2.http2_server_slots"] == 0, run.extra["in_flight"]
    assert run.extra["in_flight"]["http2.hot_http2_server_slots"] == 0, run.extra["in_flight"]
    assert run.extra["in_flight"]["http2.h2_ctx_live"] == 0, run.extra["in_flight"]

    rc = run.run_counts
    assert rc["http2_server_start_bundled"] == len(server)
    assert rc["http2_server_end_bundled"] == len(healthy)
    # the reset is asked for once per panic, at the one call site probed
    assert rc["http2_server_panic_bundled"] == len(flagged)
    assert run.stats["http2.dup_end"] == 0
