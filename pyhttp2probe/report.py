"""Read the agent's own /metrics back and summarise it per method, as a person wants it.

The demo prints its table from a real scrape of the endpoint (not from in-process state),
so what it shows is exactly what Prometheus would see. Parsing uses prometheus-client's
own text parser; quantiles use the same linear interpolation as PromQL's
`histogram_quantile`, so the figures match a dashboard built on the same series.
"""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass
class MethodStats:
    """Aggregated histogram of one (service, method) over every code and peer."""

    service: str
    method: str
    count: float = 0.0
    errors: float = 0.0
    total_s: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count

    def quantile(self, q: float) -> float:
        return histogram_quantile(q, sorted(self.buckets.items()))


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile over cumulative (le, count) pairs; NaN when empty."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # the highest finite bound, as Prometheus does
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def scrape(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return resp.read().decode()


def method_stats(text: str, metric: str = "rpc_client_duration_seconds") -> list[MethodStats]:
    """Fold one histogram family of a scrape into per-(service, method) statistics."""
    by_method: dict[tuple[str, str], MethodStats] = {}
    bucket_sums: dict[tuple[str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        if family.name != metric:
            continue
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("rpc_service", ""), labels.get("rpc_method", ""))
            stats = by_method.setdefault(key, MethodStats(*key))
            if sample.name.endswith("_bucket"):
                bucket_sums[key][float(labels["le"])] += sample.value
            elif sample.name.endswith("_count"):
                stats.count += sample.value
                if labels.get("rpc_grpc_status_code", "0") != "0":
                    stats.errors += sample.value
            elif sample.name.endswith("_sum"):
                stats.total_s += sample.value
    for key, stats in by_method.items():
        stats.buckets = dict(bucket_sums[key])
    return sorted(by_method.values(), key=lambda s: (s.service, s.method))


def format_table(rows: Iterable[MethodStats], window_s: float) -> str:
    """A fixed-width table: rate, error rate, p50 and p99 per method."""
    header = f"{'service/method':<40} {'calls':>8} {'rate/s':>9} {'errors':>7} " \
             f"{'p50 ms':>9} {'p99 ms':>9}"
    lines = [header, "-" * len(header)]
    for s in rows:
        rate = s.count / window_s if window_s > 0 else math.nan
        err = 100.0 * s.errors / s.count if s.count else 0.0
        lines.append(f"{s.service + '/' + s.method:<40} {s.count:>8.0f} {rate:>9.1f} "
                     f"{err:>6.1f}% {1e3 * s.quantile(0.5):>9.3f} {1e3 * s.quantile(0.99):>9.3f}")
    return "\n".join(lines)
