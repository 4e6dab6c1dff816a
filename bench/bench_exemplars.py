"""Cost of exemplars (issue 13): `python3 bench/bench_exemplars.py` (or bench/run.py).

Side by side, best of ROUNDS, on one thread:
  * RpcMetrics.observe_exemplar per span (what the trace joiner calls on the drain thread
    for every span it gave ids to), and of that the label tuple alone (span_labels);
  * observe_spans per span, the Span-object metrics path, for scale;
  * one scrape (OpenMetrics) of SERIES series, every bucket with or without an exemplar.
Spans are gRPC client spans over SERIES label sets, durations over the default buckets.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest

from pyhttp2probe.metrics import RpcMetrics, span_labels
from pyhttp2probe.spans import Span

ROUNDS = 5
SPANS = 100_000
SERIES = 200
SCRAPES = 20


def _spans(n: int, rng: random.Random) -> list[Span]:
    out = []
    end = 10**12
    for i in range(n):
        end += rng.randrange(1, 20_000)
        dur = int(rng.lognormvariate(12, 1.5))  # median ~160 µs, tails to seconds
        m = rng.randrange(SERIES)
        out.append(Span("grpc_client", 4242, 0xC000 + m % 4, 2 * i + 1, end - dur, end,
                        m % 3, "pkg.Service", f"Method{m // 3}", f"/pkg.Service/Method{m // 3}",
                        "10.0.0.7", 8443, service_name="checkout",
                        trace_id=rng.randbytes(16).hex(), span_id=rng.randbytes(8).hex()))
    return out


def _best(fn: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure() -> dict[str, float]:
    spans = _spans(SPANS, random.Random(13))
    metrics = RpcMetrics(registry=None)
    metrics.observe_spans(spans)
    observe = metrics.observe_exemplar

    def exemplars() -> None:
        for s in spans:
            observe(s)

    def labels() -> None:
        for s in spans:
            span_labels(s)

    per_span = {
        "observe_exemplar": _best(exemplars) / SPANS * 1e6,
        "span_labels": _best(labels) / SPANS * 1e6,
        "observe_spans": _best(lambda: RpcMetrics(registry=None).observe_spans(spans))
        / SPANS * 1e6,
    }
    scrape = {}
    for name, feed in (("without", False), ("with", True)):
        registry = CollectorRegistry()
        m = RpcMetrics(registry=registry)
        m.observe_spans(spans)
        if feed:
            for s in spans:
                m.observe_exemplar(s)
        scrape[name] = _best(lambda r=registry: [generate_latest(r) for _ in range(SCRAPES)]
                             ) / SCRAPES * 1e3
    return {**per_span, "scrape_without_ms": scrape["without"],
            "scrape_with_ms": scrape["with"]}


def run() -> str:
    r = measure()
    return "\n".join([
        "## Exemplars",
        "",
        f"`RpcMetrics` over {SPANS:,} gRPC client spans with trace ids in {SERIES} label "
        f"sets, one thread, best of {ROUNDS}. Scrape: one OpenMetrics `generate_latest` of "
        "those series (18 buckets each), every filled bucket with its exemplar or none.",
        "",
        "| step | cost |",
        "|---|---:|",
        f"| `observe_exemplar`, per span (the trace joiner's call) | "
        f"{r['observe_exemplar']:.2f} µs |",
        f"| of which the label tuple (`span_labels`) | {r['span_labels']:.2f} µs |",
        f"| `observe_spans`, per span (Span-object metrics path, for scale) | "
        f"{r['observe_spans']:.2f} µs |",
        f"| scrape without exemplars | {r['scrape_without_ms']:.2f} ms |",
        f"| scrape with exemplars | {r['scrape_with_ms']:.2f} ms |",
    ])


if __name__ == "__main__":
    print(run())
