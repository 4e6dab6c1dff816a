"""The Grafana dashboard (deploy/grafana/pyhttp2probe.json): its structure, then every
panel query run against a real Prometheus scraping the agent while a workload makes gRPC
and HTTP/2 calls as client and server, each query returning series that carry the labels
its legend names."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from testkit.agentproc import AgentProcess
from testkit.gobuild import GoBuild, build
from testkit.prom import Prometheus, label_values
from testkit.workload import start_workload

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "pyhttp2probe.json"
HISTOGRAMS = {  # row title -> (histogram, method labels, error matcher)
    "gRPC client": ("rpc_client_duration_seconds", ("rpc_service", "rpc_method"),
                    'rpc_grpc_status_code!="0"'),
    "gRPC server": ("rpc_server_duration_seconds", ("rpc_service", "rpc_method"),
                    'rpc_grpc_status_code!="0"'),
    "HTTP/2 client": ("http_client_request_duration_seconds", ("http_request_method",),
                      'http_response_status_code=~"5..|0"'),
    "HTTP/2 server": ("http_server_request_duration_seconds", ("http_request_method",),
                      'http_response_status_code=~"5.."'),
}
HEALTH = ("pyhttp2probe_ringbuf_drops_total", "pyhttp2probe_unmatched_total",
          "pyhttp2probe_attach_errors_total", "pyhttp2probe_instrumented_processes")
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "10s", "__range": "5m"}
# gRPC Check calls (every third NotFound) over ServeHTTP, and net/http HTTP/2 requests
# answering 200, 404, 503 and, abandoned by the client after 20 ms, none (status 0): all
# four span kinds, with errors, for several seconds. One process throughout: a series is
# born at its first scrape with what was counted so far, so rate() > 0 needs the same
# series (same process, same listener port) to grow across later scrapes.
WORKLOAD = ["-conns", "2", "-goroutines", "2", "-rpcs", "30000", "-h2-goroutines", "2",
            "-h2-requests", "7500"]


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(row title, panel) of every non-row panel, in order (collapsed rows hold theirs)."""
    out, row = [], ""
    for p in dash["panels"]:
        if p["type"] == "row":
            row = p["title"]
            out += [(row, q) for q in p.get("panels", [])]
        else:
            out.append((row, p))
    return out


def _legend_labels(target: dict[str, Any]) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))


def _by_labels(expr: str) -> set[str]:
    """Labels of every `by (...)` clause but `le` (histogram_quantile consumes it)."""
    return {lab.strip() for clause in re.findall(r"\bby\s*\(([^)]*)\)", expr)
            for lab in clause.split(",") if lab.strip()} - {"le"}


def _substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's interpolation: $name, ${name} and ${name:format} (KeyError if unknown)."""
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)",
                  lambda m: variables[m.group(1) or m.group(2)], expr)


def test_dashboard_structure() -> None:
    dash = _dashboard()
    assert dash["schemaVersion"] >= 36
    assert dash["refresh"] == "10s"
    tvars = {v["name"]: v for v in dash["templating"]["list"]}
    assert tvars["datasource"]["type"] == "datasource"
    assert tvars["datasource"]["query"] == "prometheus"
    for name in ("service_name", "rpc_service", "rpc_method"):
        v = tvars[name]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${datasource}", name
        assert v["definition"].startswith("label_values(") and v["multi"] and v["includeAll"]
        assert v["allValue"] == ".*", name
    assert tvars["service_name"]["definition"] == "label_values(service_name)"

    ids = [p["id"] for p in dash["panels"]] + [
        q["id"] for p in dash["panels"] for q in p.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == [*HISTOGRAMS, "Agent health"]

    known = set(tvars) | set(GRAFANA_BUILTINS)
    for row, p in _panels(dash):
        where = f"{row} / {p['title']}"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert p.get("description"), where
        assert p["targets"], where
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for t in p["targets"]:
            expr = t["expr"]
            assert expr and t["datasource"]["uid"] == "${datasource}", where
            used = {a or b for a, b in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", expr)}
            assert used <= known, (where, used - known)
            # the legend names exactly the labels the query keeps, so no two series look alike
            assert _by_labels(expr), (where, expr)
            assert _legend_labels(t) == _by_labels(expr), (where, t["legendFormat"], expr)
            for m in re.findall(r"rate\(([^)]*)\)", expr):
                assert m.endswith("[$__rate_interval]"), (where, m)

    exprs = {row: [t["expr"] for r, p in _panels(dash) if r == row for t in p["targets"]]
             for row in rows}
    for row, (metric, method, err) in HISTOGRAMS.items():
        sel = r'\{[^}]*service_name=~"\$service_name"[^}]*\}'
        by = f"sum by (service_name, {', '.join(method)}) "
        rate = [e for e in exprs[row] if e.startswith(by + f"(rate({metric}_count")]
        assert rate, f"{row}: no request rate by service and method"
        assert all(re.search(metric + "_count" + sel, e) for e in rate), row
        assert any(err in e and "/ " + by in e for e in exprs[row]), f"{row}: no error ratio"
        for q in ("0.5", "0.95", "0.99"):
            want = (f"histogram_quantile({q}, sum by (le, service_name, {', '.join(method)}) "
                    f"(rate({metric}_bucket")
            assert any(e.startswith(want) for e in exprs[row]), f"{row}: no p{q} latency"
    for metric in HEALTH:
        assert any(metric in e for e in exprs["Agent health"]), metric


def _check(result: list[dict[str, Any]], labels: set[str], service: str,
           spans: bool) -> str | None:
    """Why `result` does not do for a panel (None when it does)."""
    if not result:
        return "no series"
    for r in result:
        missing = labels - set(r["metric"])
        if missing:
            return f"series {r['metric']} lacks {sorted(missing)}"
        if "service_name" in labels and r["metric"]["service_name"] != service:
            return f"series of another service: {r['metric']}"
    values = [float(r["value"][1]) for r in result]
    if spans and not any(v > 0 for v in values):  # the workload's calls are in the window
        return f"no series above 0: {values}"
    if not any(math.isfinite(v) for v in values):  # drops, attach errors: 0 is fine
        return f"no finite value: {values}"
    return None


def test_every_panel_query_returns_series_with_its_labels() -> None:
    dash = _dashboard()
    with tempfile.TemporaryDirectory() as tmp:
        service = f"grafana-{os.getpid()}-grpcservehttp"
        binary = Path(tmp) / service  # a private name: --exe selects nothing else
        shutil.copy2(build(GoBuild(src="grpcservehttp", mod="grpcmods/v1.85.0")), binary)
        variables = {**GRAFANA_BUILTINS, "service_name": service, "rpc_service": ".*",
                     "rpc_method": ".*"}
        with AgentProcess(["--exe", f"grafana-{os.getpid()}-*"]) as agent, \
                Prometheus([f"127.0.0.1:{agent.port}"]) as prom, \
                start_workload(binary, [*WORKLOAD, "-hold"]) as wl:
            # found by the agent (exec event) and traced from its first call
            assert agent.wait_value("pyhttp2probe_attached_processes", 1) == 1
            t0 = time.monotonic()
            wl.go()
            pending = {(row, p["title"], t["refId"]): t for row, p in _panels(dash)
                       for t in p["targets"]}
            why: dict[tuple[str, str, str], str] = {}
            while pending and time.monotonic() < t0 + 45:
                time.sleep(1)
                for key, t in list(pending.items()):
                    expr = _substitute(t["expr"], variables)
                    reason = _check(prom.query(expr), _by_labels(t["expr"]), service,
                                    spans="pyhttp2probe_" not in expr)
                    if reason is None:
                        del pending[key]
                    else:
                        why[key] = f"{reason}\n    {expr}"
            answered_s = time.monotonic() - t0
            tvars = {v["name"]: v for v in dash["templating"]["list"]}
            listed = {name: _label_values(prom, tvars[name]["definition"], variables)
                      for name in ("service_name", "rpc_service", "rpc_method")}
            wl.wait_done(60)
            wl.finish()
            assert not pending, "\n".join(f"{k}: {why.get(k)}" for k in pending)
            print(f"every query answered {answered_s:.1f} s after the first call")
            assert service in listed["service_name"], listed
            assert listed["rpc_service"] == {"grpc.health.v1.Health"}, listed
            assert listed["rpc_method"] == {"Check"}, listed
            assert agent.stop() == 0, agent.stderr


def _label_values(prom: Prometheus, definition: str, variables: dict[str, str]) -> set[str]:
    """A Grafana `label_values(label)` / `label_values(selector, label)` variable query."""
    inner = _substitute(definition, variables).removeprefix("label_values(").removesuffix(")")
    match, _, label = inner.rpartition(",")
    return label_values(prom, label.strip(), match.strip() or None)
