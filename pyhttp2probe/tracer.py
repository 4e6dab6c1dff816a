"""Tracer: one process, one Agent — the short way to trace a single pid.

    with Tracer(pid=1234) as tracer:
        for span in tracer.spans():
            ...

It is a thin façade: everything (loading, links, draining, sinks) is the Agent's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from prometheus_client.registry import CollectorRegistry

from .agent import Agent
from .metrics import DEFAULT_BUCKETS
from .spans import Span
from .targets import TargetError

TracerError = TargetError  # the name older callers catch


class Tracer:
    """Trace process `pid`: spans(), Prometheus metrics, JSON lines (see Agent for the
    arguments). server_side=False loads the gRPC client path alone (e.g. to measure its
    cost); `service_name` overrides the process's own."""

    def __init__(self, pid: int, registry: CollectorRegistry | None = None,
                 spans_out: str | Path | TextIO | None = None, keep_spans: bool = True,
                 service_name: str | None = None,
                 buckets: tuple[float, ...] = DEFAULT_BUCKETS, max_label_sets: int = 1000,
                 server_side: bool = True, **agent_kw: Any) -> None:
        self.pid = pid
        self.service_name = service_name
        self._agent_kw = dict(registry=registry, spans_out=spans_out, keep_spans=keep_spans,
                              buckets=buckets, max_label_sets=max_label_sets, **agent_kw)
        if not server_side:
            from .probes import grpc_client

            self._agent_kw["paths"] = (grpc_client.PATH,)
        self.agent: Agent | None = None

    def start(self) -> Tracer:
        if self.agent is None:
            self.agent = Agent(**self._agent_kw)
            try:
                self.agent.attach(self.pid, self.service_name)
            except BaseException:
                self.agent.close()
                raise
        return self

    def _live(self) -> Agent:
        if self.agent is None:
            raise RuntimeError("tracer not started")
        return self.agent

    @property
    def metrics(self) -> Any:
        return self._live().metrics

    @property
    def unmatched(self) -> int:
        return self._live().unmatched

    @property
    def error(self) -> BaseException | None:
        return self._live().error

    def spans(self, timeout: float | None = None) -> Iterator[Span]:
        return self._live().spans(timeout)

    def drain(self) -> int:
        return self._live().drain()

    def stats(self) -> dict[str, int]:
        return self._live().stats()

    def program_run_counts(self) -> dict[str, int]:
        return self._live().run_counts()

    def in_flight(self) -> dict[str, int]:
        return self._live().in_flight()

    def close(self) -> None:
        if self.agent is not None:
            self.agent.close()

    def __enter__(self) -> Tracer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
