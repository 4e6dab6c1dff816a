"""MetricsServer on a real socket: /metrics (text and OpenMetrics), /healthz, /readyz, 404,
any free port, IPv6, a thread per request, close() idempotent and freeing the port."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from pyhttp2probe.httpserver import MetricsServer


def _get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


@pytest.fixture
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("demo_requests", "requests seen", registry=reg).inc(3)
    return reg


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[MetricsServer]:
    with MetricsServer(registry, "127.0.0.1", 0, ready=lambda: True) as s:
        yield s


def test_metrics_in_text_and_openmetrics(server: MetricsServer) -> None:
    status, ctype, body = _get(f"{server.url}/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert "demo_requests_total 3.0" in body
    status, ctype, body = _get(f"{server.url}/metrics",
                               accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    assert "demo_requests_total 3.0" in body and body.endswith("# EOF\n")
    _, _, body = _get(f"{server.url}/metrics?name[]=nothing_here")
    assert "demo_requests" not in body


def test_healthz_and_unknown_paths(server: MetricsServer) -> None:
    assert _get(f"{server.url}/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    for path in ("/", "/metricsx", "/healthz/x", "/nope"):
        status, _, body = _get(server.url + path)
        assert status == 404 and "/metrics" in body, path


def test_readyz_follows_ready_and_says_why_not(registry: CollectorRegistry) -> None:
    answer: list[bool | tuple[bool, str]] = [False]
    with MetricsServer(registry, "127.0.0.1", 0, ready=lambda: answer[0]) as s:
        assert _get(f"{s.url}/readyz")[0::2] == (503, "not ready: the agent is not ready yet\n")
        answer[0] = (False, "BPF objects not loaded")
        assert _get(f"{s.url}/readyz")[0::2] == (503, "not ready: BPF objects not loaded\n")
        answer[0] = True
        assert _get(f"{s.url}/readyz")[0::2] == (200, "ready\n")
        assert _get(f"{s.url}/healthz")[0] == 200


def test_a_failing_readiness_check_is_503_not_a_crash(registry: CollectorRegistry) -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    with MetricsServer(registry, "127.0.0.1", 0, ready=broken) as s:
        status, _, body = _get(f"{s.url}/readyz")
        assert status == 503 and "readiness check failed" in body and "boom" in body
        assert _get(f"{s.url}/healthz")[0] == 200  # the server still serves


def test_port_zero_binds_a_free_port_and_close_frees_it(registry: CollectorRegistry) -> None:
    s = MetricsServer(registry, "127.0.0.1", 0, ready=lambda: True)
    port = s.port
    assert port != 0 and _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    s.close()
    s.close()  # idempotent
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    again = MetricsServer(registry, "127.0.0.1", port, ready=lambda: True)  # port is free
    try:
        assert again.port == port and _get(f"{again.url}/healthz")[0] == 200
    finally:
        again.close()


def test_ipv6_loopback(registry: CollectorRegistry) -> None:
    if not socket.has_ipv6:
        pytest.fail("this machine has IPv6; the agent's --listen [::1]:PORT must work")
    with MetricsServer(registry, "::1", 0, ready=lambda: True) as s:
        assert s.url.startswith("http://[::1]:")
        assert _get(f"{s.url}/metrics")[0] == 200


def test_a_slow_request_does_not_block_the_others(registry: CollectorRegistry) -> None:
    """A thread per request: a stuck readiness check (or scraper) leaves /healthz alive."""
    entered, release = threading.Event(), threading.Event()

    def slow() -> bool:
        entered.set()
        release.wait(10)
        return True

    with MetricsServer(registry, "127.0.0.1", 0, ready=slow) as s:
        got: list[int] = []
        t = threading.Thread(target=lambda: got.append(_get(f"{s.url}/readyz")[0]))
        t.start()
        assert entered.wait(5)
        assert _get(f"{s.url}/healthz")[0] == 200
        assert _get(f"{s.url}/metrics")[0] == 200
        release.set()
        t.join(5)
        assert got == [200]


def test_bind_failure_raises_and_leaves_nothing_running(registry: CollectorRegistry) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        before = threading.active_count()
        with pytest.raises(OSError):
            MetricsServer(registry, "127.0.0.1", busy.getsockname()[1], ready=lambda: True)
        assert threading.active_count() == before
