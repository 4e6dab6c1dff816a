"""A real trace backend for tests: Jaeger all-in-one (v1: in-memory storage, OTLP/HTTP
receiver, query API), built from the Go module proxy by ci/setup-jaeger.sh and cached.
Every listener is on 127.0.0.1: OTLP/HTTP and the query API on the ports given, every
other one on a free loopback port."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
from pathlib import Path
from types import TracebackType
from typing import Any

from testkit.prom import free_port, http_get, stop_child, wait_http

ROOT = Path(__file__).resolve().parent.parent


def jaeger_binary() -> Path:
    """The all-in-one binary (built on first use: about 2 minutes cold)."""
    proc = subprocess.run(["bash", str(ROOT / "ci" / "setup-jaeger.sh")], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"ci/setup-jaeger.sh failed:\n{proc.stderr[-4000:]}"
    return Path(proc.stdout.strip().splitlines()[-1])


class Jaeger:
    """`with Jaeger(otlp_port) as j: j.spans("my-service")`."""

    def __init__(self, otlp_port: int | None = None) -> None:
        # A port free_port() found can be taken before Jaeger binds it (it then exits at
        # once): start again on fresh ports, a few times, before giving up.
        for attempt in range(3):
            self._start(otlp_port)
            try:
                self._wait_up(timeout=60)
                return
            except BaseException:
                exited = self.proc.poll() is not None  # by itself: not stopped by us
                self.close()
                if attempt == 2 or not exited:
                    raise
                print(f"jaeger exited at start ({self.proc.returncode}): again on new ports")

    def _start(self, otlp_port: int | None) -> None:
        self.otlp_port = otlp_port or free_port()
        self.query_port = free_port()
        lo = "127.0.0.1"
        flags = [
            f"--collector.otlp.http.host-port={lo}:{self.otlp_port}",
            f"--collector.otlp.grpc.host-port={lo}:{free_port()}",
            f"--collector.grpc-server.host-port={lo}:{free_port()}",
            f"--collector.http-server.host-port={lo}:{free_port()}",
            f"--query.http-server.host-port={lo}:{self.query_port}",
            f"--query.grpc-server.host-port={lo}:{free_port()}",
            f"--admin.http.host-port={lo}:{free_port()}",
            # zipkin: off by default; no agent (UDP) listeners in v1.76's all-in-one
        ]
        # its own tracing off: else it traces itself and waits 10 s for that at exit
        env = {**os.environ, "OTEL_TRACES_SAMPLER": "always_off"}
        for var in [v for v in env if v.startswith("OTEL_EXPORTER_")]:
            del env[var]
        self.proc = subprocess.Popen([str(jaeger_binary()), *flags], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)

    def _wait_up(self, timeout: float) -> None:
        """Until its query API answers; raises at once when it exited."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            try:
                wait_http(f"{self.url}/api/services", timeout=1)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
        raise RuntimeError(f"jaeger exited with {self.proc.returncode}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def otlp_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    def services(self) -> list[str]:
        return json.loads(http_get(f"{self.url}/api/services"))["data"] or []

    def spans(self, service: str) -> list[dict[str, Any]]:
        """Every span of `service` (the last hour), each with its process (resource) under
        "process" and its tags as a {key: (type, value)} dict under "tagmap"."""
        now_us = time.time_ns() // 1000
        q = urllib.parse.urlencode({"service": service, "limit": 100000,
                                    "start": now_us - 3600 * 10**6, "end": now_us + 60 * 10**6})
        body = json.loads(http_get(f"{self.url}/api/traces?{q}", timeout=30))
        out = []
        for trace in body.get("data") or []:
            for span in trace["spans"]:
                span["process"] = trace["processes"][span["processID"]]
                span["tagmap"] = {t["key"]: (t["type"], t["value"]) for t in span["tags"]}
                out.append(span)
        return out

    def close(self) -> None:
        stop_child(self.proc)

    def __enter__(self) -> Jaeger:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
