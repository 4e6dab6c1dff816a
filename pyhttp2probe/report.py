"""Read the agent's own /metrics back and summarise it per method, as a person wants it.

The demo prints its table from a real scrape of the endpoint (not from in-process state),
so what it shows is exactly what Prometheus would see. Parsing uses prometheus-client's
own text parser; quantiles use the same linear interpolation as PromQL's
`histogram_quantile`, so the figures match a dashboard built on the same series.

`call_stats` and `health` take metric families from either source — a scrape's text
(`parse`) or a live registry (`registry.collect()`) — which is how `pyhttp2probe top`
reads a remote agent and the one it runs itself through the same code.
"""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

# histogram family -> the side of the call it times, as `top` shows it
SIDES: dict[str, str] = {
    "rpc_client_duration_seconds": "grpc client",
    "rpc_server_duration_seconds": "grpc server",
    "http_client_request_duration_seconds": "http client",
    "http_server_request_duration_seconds": "http server",
}


@dataclass
class MethodStats:
    """Aggregated histogram of one (service, method) over every code and peer."""

    service: str
    method: str
    count: float = 0.0
    errors: float = 0.0
    total_s: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    side: str = ""  # "grpc client", ... (SIDES); "" from method_stats
    service_name: str = ""  # the traced program's; "" from method_stats

    def quantile(self, q: float) -> float:
        return histogram_quantile(q, sorted(self.buckets.items()))

    @property
    def name(self) -> str:
        """`rpc_service/rpc_method` for gRPC; the HTTP row's method (and peer) as is."""
        return f"{self.service}/{self.method}" if self.service else self.method

    @property
    def key(self) -> tuple[str, str, str]:
        """What one row of `top` stands for: (side, service_name, name)."""
        return (self.side, self.service_name, self.name)


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


def parse(text: str) -> list[Metric]:
    """The metric families of one scrape's text."""
    return list(text_string_to_metric_families(text))


def _is_error(side: str, labels: dict[str, str]) -> bool:
    """gRPC: any status code but OK (0). HTTP: a 5xx status, or none at all (0: the
    request got no response)."""
    if side.startswith("grpc"):
        return labels.get("rpc_grpc_status_code", "0") != "0"
    try:
        status = int(labels.get("http_response_status_code", ""))
    except ValueError:
        return False
    return status == 0 or status >= 500


def _row_of(side: str, labels: dict[str, str]) -> tuple[str, str]:
    """(service, method) of a sample: the gRPC service and method; for HTTP (no path
    label) the request method and the server's address, which is what the series have."""
    if side.startswith("grpc"):
        return labels.get("rpc_service", ""), labels.get("rpc_method", "")
    method = labels.get("http_request_method", "") or "?"
    addr, port = labels.get("server_address", ""), labels.get("server_port", "")
    if port and port != "0":
        host = f"[{addr}]" if ":" in addr else addr
        method = f"{method} {host}:{port}"
    return "", method


def call_stats(families: Iterable[Metric]) -> list[MethodStats]:
    """Every traced call family folded into one MethodStats per (side, service_name,
    service, method), over status codes and peers (for HTTP: over status codes)."""
    rows: dict[tuple[str, str, str, str], MethodStats] = {}
    buckets: dict[tuple[str, str, str, str], dict[float, float]] = defaultdict(
        lambda: defaultdict(float))
    for family in families:
        side = SIDES.get(family.name)
        if side is None:
            continue
        for sample in family.samples:
            labels = sample.labels
            service, method = _row_of(side, labels)
            key = (side, labels.get("service_name", ""), service, method)
            stats = rows.get(key)
            if stats is None:
                stats = rows[key] = MethodStats(service, method, side=side,
                                                service_name=key[1])
            if sample.name.endswith("_bucket"):
                buckets[key][float(labels["le"])] += sample.value
            elif sample.name.endswith("_count"):
                stats.count += sample.value
                if _is_error(side, labels):
                    stats.errors += sample.value
            elif sample.name.endswith("_sum"):
                stats.total_s += sample.value
    for key, stats in rows.items():
        stats.buckets = dict(buckets[key])
    return sorted(rows.values(), key=lambda r: r.key)


@dataclass
class Health:
    """The agent's own view of itself, from its pyhttp2probe_* self-metrics."""

    attached: float | None = None  # processes traced now; None: no such series
    drops: float = 0.0  # ring-buffer drops + discovery (exec/exit) drops
    unmatched: float = 0.0  # ends without a start, and other pairing failures
    attach_errors: float = 0.0
    ready: float | None = None


_HEALTH = {
    "pyhttp2probe_attached_processes": "attached",
    "pyhttp2probe_ringbuf_drops_total": "drops",
    "pyhttp2probe_discovery_drops_total": "drops",
    "pyhttp2probe_unmatched_total": "unmatched",
    "pyhttp2probe_attach_errors_total": "attach_errors",
    "pyhttp2probe_ready": "ready",
}


def health(families: Iterable[Metric]) -> Health:
    """Sum the self-metrics `top` shows in its header."""
    out = Health()
    for family in families:
        for sample in family.samples:
            attr = _HEALTH.get(sample.name)
            if attr is not None:
                setattr(out, attr, (getattr(out, attr) or 0.0) + sample.value)
    return out


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
