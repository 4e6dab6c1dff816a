"""eBPF agent tracing Go gRPC/HTTP2 programs with uprobes.

    from pyhttp2probe import Agent
    with Agent() as agent:
        agent.attach(pid)
        for span in agent.spans(timeout=1.0): ...

Names are imported on first use, so `pyhttp2probe inspect` and `--help` load no BPF.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Agent": ".agent", "AgentClosedError": ".agent", "Target": ".agent",
    "TargetError": ".targets", "Span": ".spans", "SpanSink": ".sinks",
    "JsonLinesSink": ".sinks", "Tracer": ".tracer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pyhttp2probe' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)


__all__ = [*_LAZY, "__version__"]
