"""The demo's table is computed from a real /metrics text the way PromQL would."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from pyhttp2probe.report import format_table, histogram_quantile, method_stats

LABELS = ("rpc_service", "rpc_method", "rpc_grpc_status_code")


def _scrape_of(observations: list[tuple[str, str, str, float]]) -> str:
    reg = CollectorRegistry()
    hist = Histogram("rpc_client_duration_seconds", "d", LABELS, registry=reg,
                     buckets=(0.001, 0.002, 0.004, 0.008))
    for service, method, code, value in observations:
        hist.labels(service, method, code).observe(value)
    return generate_latest(reg).decode()


def test_method_stats_fold_codes_into_count_and_error_rate() -> None:
    obs = [("a.S", "M", "0", 0.0015)] * 8 + [("a.S", "M", "14", 0.0015)] * 2
    obs += [("a.S", "N", "0", 0.003)] * 5
    rows = method_stats(_scrape_of(obs))
    assert [(r.method, r.count, r.errors) for r in rows] == [("M", 10, 2), ("N", 5, 0)]
    assert 0.001 <= rows[0].quantile(0.5) <= 0.002
    assert 0.002 <= rows[1].quantile(0.99) <= 0.004
    table = format_table(rows, window_s=5.0)
    assert "a.S/M" in table and "20.0%" in table and "2.0" in table


def test_histogram_quantile_interpolates_like_promql() -> None:
    buckets = [(0.001, 10.0), (0.002, 20.0), (math.inf, 20.0)]
    assert histogram_quantile(0.5, buckets) == 0.001
    assert histogram_quantile(0.75, buckets) == 0.0015
    assert histogram_quantile(1.0, [(0.001, 1.0), (math.inf, 2.0)]) == 0.001
    assert math.isnan(histogram_quantile(0.5, []))
