"""h2load (nghttp2's load generator, written by nobody on this project) against Go's
net/http HTTP/2 server, over h2c and TLS: the agent's HTTP/2 server span counts, in total
and per status class, equal what h2load reports, at exactly two probe hits per request.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from testkit.gobuild import GoBuild, build
from testkit.traced import SERVEHTTP_MOD, read_ports, traced
from testkit.workload import start_workload

PATHS = ("/status/200", "/status/201", "/status/404", "/status/503", "/status/204")


def _h2load(url_base: str, n: int) -> dict[str, int]:
    """Run h2load over PATHS (it cycles through them) and parse its counts."""
    out = subprocess.run(
        ["h2load", "-n", str(n), "-c", "6", "-m", "16",
         *(url_base + p for p in PATHS)],
        check=True, capture_output=True, text=True, timeout=300).stdout
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert req and codes, out
    total, _, done, ok, failed, errored = (int(x) for x in req.groups())
    c2, c3, c4, c5 = (int(x) for x in codes.groups())
    return {"total": total, "done": done, "succeeded": ok, "failed": failed,
            "errored": errored, "2xx": c2, "3xx": c3, "4xx": c4, "5xx": c5}


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) missing")
@pytest.mark.parametrize("scheme", ["h2c", "tls"])
def test_h2load_counts_equal_agent_http2_server_spans(scheme: str) -> None:
    binary = build(GoBuild(src="grpcservehttp", mod=SERVEHTTP_MOD))
    n = 3000
    with tempfile.TemporaryDirectory() as tmp:
        ports = Path(tmp) / "ports"
        with start_workload(binary, ["-conns", "0", "-ports", ports, "-hold"]) as wl:
            _, hport, tport = read_ports(ports)
            base = (f"http://127.0.0.1:{hport}" if scheme == "h2c"
                    else f"https://127.0.0.1:{tport}")
            run = traced(wl, during=lambda: _h2load(base, n))
    got = run.extra["during"]
    assert got["done"] == got["total"] == n and got["errored"] == 0

    spans = run.of_kind("http_server")
    assert len(run.of_kind("http_server", include_unmatched=True)) == len(spans)
    assert len(spans) == got["done"]
    classes = Counter(f"{s.status_code // 100}xx" for s in spans)
    assert {k: classes.get(k, 0) for k in ("2xx", "3xx", "4xx", "5xx")} == {
        k: got[k] for k in ("2xx", "3xx", "4xx", "5xx")}
    assert Counter(s.full_method for s in spans) == {p: n // len(PATHS) for p in PATHS}
    assert all(s.method == "GET" and s.status_code == int(s.full_method[-3:]) for s in spans)
    assert {s.server_port for s in spans} == {hport if scheme == "h2c" else tport}
    rc = run.run_counts
    assert rc["http2_server_start_bundled"] == rc["http2_server_end_bundled"] == n
