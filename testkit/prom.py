"""A real Prometheus server for tests: Debian's `prometheus`, scraping given targets every
second, queried through its own HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any


def stop_child(proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM a backend the test started, SIGKILL if it lingers; close its stderr pipe."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> str:
    return urllib.request.urlopen(url, timeout=timeout).read().decode()


def wait_http(url: str, timeout: float = 30.0, status_ok: bool = True) -> None:
    """Until `url` answers (200 when status_ok)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            http_get(url)
            return
        except OSError as exc:
            if not status_ok and getattr(exc, "code", None):
                return
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Prometheus:
    """`with Prometheus(["127.0.0.1:9464"]) as prom: prom.query("up")`; storage in a temp
    dir, listening on a free loopback port, scrape and evaluation interval 1 s.

    exemplar_storage: keep the exemplars of OpenMetrics scrapes (off by default in
    Prometheus 2), for exemplars()."""

    def __init__(self, targets: list[str], extra_flags: tuple[str, ...] = (),
                 exemplar_storage: bool = False) -> None:
        if exemplar_storage:
            extra_flags = ("--enable-feature=exemplar-storage", *extra_flags)
        self.targets = targets
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="prom-"))
        config = self._dir / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "pyhttp2probe", "scrape_interval": "1s",
                                "static_configs": [{"targets": targets}]}],
        }))
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={self._dir / 'db'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn", *extra_flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_http(f"{self.url}/-/ready", timeout=60)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of `promql` (status must be success)."""
        q = urllib.parse.urlencode({"query": promql})
        body = json.loads(http_get(f"{self.url}/api/v1/query?{q}"))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def exemplars(self, promql: str, start: float, end: float) -> list[dict[str, Any]]:
        """`/api/v1/query_exemplars` of `promql` between Unix times start and end: one
        {"seriesLabels": {...}, "exemplars": [{"labels", "value", "timestamp"}]} per series
        (empty unless started with exemplar_storage)."""
        q = urllib.parse.urlencode({"query": promql, "start": start, "end": end})
        body = json.loads(http_get(f"{self.url}/api/v1/query_exemplars?{q}"))
        assert body["status"] == "success", body
        return body["data"]

    def wait_for(self, promql: str, want: Any, key: Any, timeout: float = 30.0) -> Any:
        """Poll `promql` until key(result) == want (spans show up a scrape or two later)."""
        deadline = time.monotonic() + timeout
        while True:
            got = key(self.query(promql))
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.5)

    def close(self) -> None:
        stop_child(self.proc)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def label_values(prom: Prometheus, label: str, match: str | None = None) -> set[str]:
    """What Grafana's `label_values(label)` / `label_values(match, label)` lists: the values
    of `label` over every series, or over the series `match` (a series selector) selects."""
    if match is None:
        body = json.loads(http_get(f"{prom.url}/api/v1/label/{label}/values"))
        assert body["status"] == "success", body
        return set(body["data"])
    q = urllib.parse.urlencode({"match[]": match})
    body = json.loads(http_get(f"{prom.url}/api/v1/series?{q}"))
    assert body["status"] == "success", body
    return {s[label] for s in body["data"] if label in s}
