"""Exemplars (issue 13): a latency bucket links to a trace.

End to end, as users run it: the agent traces a real gRPC workload with trace ids on (its
OTLP exporter on; nothing needs to listen) and writes its spans as JSON lines; a real
Prometheus with exemplar storage scrapes it (OpenMetrics, which Prometheus asks for) and
its query_exemplars API shows, for the client and the server histograms, exemplars that
are spans of the JSON lines, sitting on the series of their labels and the bucket of
their duration, the newest of each bucket being its most recent span. The same Prometheus
also scrapes the agent in the classic text format (through a relay that asks without an
Accept header, as Prometheus 2 itself always asks for OpenMetrics): the same counts, no
exemplar. Then the collector's own contract, on spans made here: which span becomes the
exemplar of which bucket, what is ignored, expiry with the series, and the classic text
unchanged byte for byte by exemplars.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import http.server
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families

from pyhttp2probe.httpserver import MetricsServer
from pyhttp2probe.metrics import DEFAULT_BUCKETS, RpcMetrics
from pyhttp2probe.spans import Span
from testkit.agentproc import AgentProcess, run_found_workload
from testkit.gobuild import GO_ROOT, GoBuild, build
from testkit.prom import Prometheus, free_port, http_get

PINS = sorted(p.name for p in (GO_ROOT / "grpcmods").iterdir() if (p / "go.sum").exists())
# No client-side abandons: every call has both sides. Server delays up to 20 ms spread the
# calls over a dozen buckets and make the run last a few scrapes, so a bucket's exemplar
# changes while Prometheus watches.
ARGS = ["-servers", "2", "-goroutines", "4", "-rpcs", "200", "-churn", "1", "-errors", "0.25",
        "-client-failures", "0", "-nested", "0", "-delay-max", "20ms"]
FAMILY = {"grpc_client": "rpc_client_duration_seconds",
          "grpc_server": "rpc_server_duration_seconds"}
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
BOUNDS = (*DEFAULT_BUCKETS, float("inf"))

Series = tuple[str, frozenset[tuple[str, str]], float]  # (family, labels, le)


# -- the agent, end to end ----------------------------------------------------------------
def test_prometheus_finds_exemplars_that_are_spans_of_their_series_and_bucket() -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        binary = tmp / f"exm-{os.getpid()}-grpcwork"
        shutil.copy2(build(GoBuild(src="grpcwork", mod=f"grpcmods/{PINS[-1]}")), binary)
        spans_out = tmp / "spans.jsonl"
        args = ["--exe", binary.name, "--spans-out", str(spans_out),
                # trace ids are given when traces are exported; nothing listens: counted
                # as dropped, and the ids are given all the same
                "--otlp-endpoint", f"http://127.0.0.1:{free_port()}"]
        with AgentProcess(args) as agent, ClassicRelay(agent.url) as relay, \
                Prometheus([f"127.0.0.1:{agent.port}", relay.target],
                           exemplar_storage=True) as prom:
            # Prometheus scrapes from its first target update on (~5 s after start): from
            # then on the workload's run spans a few scrapes
            assert prom.wait_for("sum(up)", 2, _scalar) == 2
            t0 = time.time()
            client, server = run_found_workload(agent, binary, ARGS, tmp)
            assert sum(client.values()) > 200 and len(client) > 1
            # both formats parsed by Prometheus: the same counts through either instance
            for instance in (f"127.0.0.1:{agent.port}", relay.target):
                for metric, want in (("rpc_client_duration_seconds_count", client),
                                     ("rpc_server_duration_seconds_count", server)):
                    q = (f'sum by (rpc_method, rpc_grpc_status_code) '
                         f'({metric}{{instance="{instance}"}})')
                    assert prom.wait_for(q, want, _vector) == want, (instance, metric)
            classic = http_get(f"{agent.url}/metrics")  # no Accept header
            assert " # {" not in classic and "trace_id" not in classic
            assert {f.name for f in text_string_to_metric_families(classic)} >= set(
                FAMILY.values())
            assert read_spans(spans_out), \
                "the agent gave no span a trace id (the trace joiner is not in)"
            assert check_exemplars(prom, spans_out, f"127.0.0.1:{agent.port}", t0) > 0
            assert exemplar_rows(prom, relay.target, t0) == []  # classic text: none
            opened = _get(f"{agent.url}/metrics", OPENMETRICS)
            assert opened.endswith("# EOF\n") and "# {" in opened
            om_parse(opened)  # strict: the whole exposition, self-metrics too
            assert agent.stop() == 0, agent.stderr


def read_spans(path: Path) -> dict[str, dict[str, Any]]:
    """span_id -> span, of the JSON lines' spans that have a trace id."""
    spans = (json.loads(line) for line in path.read_text().splitlines())
    return {s["span_id"]: s for s in spans if s.get("trace_id")}


def check_exemplars(prom: Prometheus, spans_out: Path, instance: str, t0: float,
                    timeout: float = 30.0) -> int:
    """Every exemplar Prometheus keeps for `instance`'s gRPC histograms is a span of the
    JSON lines `spans_out` on its own series and bucket, with its duration and end time;
    both histograms have some; the newest of each bucket is that bucket's most recent span;
    and some bucket moved on while Prometheus watched. Waited for (spans reach the file and
    a scrape after their exemplar was taken); returns how many exemplars."""
    offset = time.time_ns() - time.monotonic_ns()  # the agent's clocks, read here
    deadline = time.monotonic() + timeout
    while True:
        rows = exemplar_rows(prom, instance, t0)
        spans = read_spans(spans_out)  # after the query: every span it shows is written
        last: dict[Series, dict[str, Any]] = {}
        for span in sorted(spans.values(), key=lambda s: s["end_ns"]):
            if span["kind"] in FAMILY:
                last[series_of(span)] = span
        wrong: list[tuple[Any, ...]] = []
        newest: dict[Series, tuple[float, dict[str, Any]]] = {}
        for key, labels, value, ts in rows:
            span = spans.get(labels["span_id"])
            end_s = (span["end_ns"] + offset) / 1e9 if span else 0.0
            if (span is None or labels["trace_id"] != span["trace_id"]
                    or series_of(span) != key  # family, labels and bucket
                    or abs(value - span["duration_s"]) > 1e-9 * max(1.0, value)
                    or abs(ts - end_s) > 0.1):  # Prometheus keeps ms
                wrong.append((key, labels, value, ts, span))
            elif key not in newest or ts > newest[key][0]:
                newest[key] = (ts, span)
        families = {key[0] for key in newest}
        stale = [k for k, s in last.items() if k not in newest or not _same(newest[k][1], s)]
        if (not wrong and families == set(FAMILY.values()) and not stale) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not wrong, f"{len(wrong)} exemplars are no span of theirs, e.g. {wrong[:3]}"
    assert families == set(FAMILY.values()), f"exemplars for {families} only"
    assert not stale, f"{len(stale)} of {len(last)} buckets lack their latest span"
    # buckets moved on while Prometheus watched: older exemplars kept beside the newest
    assert len(rows) > len(newest), "no bucket had two exemplars over the scrapes"
    return len(rows)


def _same(got: dict[str, Any], want: dict[str, Any]) -> bool:
    """The newest exemplar is `want`, or ends in the same millisecond (Prometheus keeps
    ms timestamps and refuses an exemplar no newer than the last it has)."""
    return got is want or got["end_ns"] // 1_000_000 == want["end_ns"] // 1_000_000


def series_of(span: dict[str, Any]) -> Series:
    """The histogram series and bucket a JSON span belongs to, from its fields (labels as
    DESIGN.md names them)."""
    labels = {"rpc_system": "grpc", "rpc_service": span["service"],
              "rpc_method": span["method"], "rpc_grpc_status_code": str(span["status_code"]),
              "server_address": span["server_address"],
              "server_port": str(span["server_port"]), "service_name": span["service_name"]}
    le = next(b for b in BOUNDS if span["duration_s"] <= b)
    return FAMILY[span["kind"]], frozenset(labels.items()), le


def exemplar_rows(prom: Prometheus, instance: str, t0: float,
                  ) -> list[tuple[Series, dict[str, str], float, float]]:
    """(series, exemplar labels, value, timestamp) of every exemplar Prometheus has for
    the gRPC histograms of `instance` since t0."""
    rows = []
    for family in FAMILY.values():
        for series in prom.exemplars(f'{family}_bucket{{instance="{instance}"}}',
                                     t0 - 60, time.time() + 60):
            labels = dict(series["seriesLabels"])
            assert labels.pop("__name__") == f"{family}_bucket"
            le = float(labels.pop("le"))
            del labels["instance"], labels["job"]
            key = (family, frozenset(labels.items()), le)
            rows += [(key, e["labels"], float(e["value"]), float(e["timestamp"]))
                     for e in series["exemplars"]]
    return rows


def _scalar(result: list[dict[str, Any]]) -> float:
    return float(result[0]["value"][1]) if result else 0.0


def _vector(result: list[dict[str, Any]]) -> collections.Counter[tuple[str, str]]:
    return collections.Counter({
        (r["metric"]["rpc_method"], r["metric"]["rpc_grpc_status_code"]): int(float(r["value"][1]))
        for r in result})


def _get(url: str, accept: str | None = None) -> str:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read().decode()


class ClassicRelay:
    """An HTTP endpoint relaying GETs to `upstream` without the scraper's Accept header,
    so a Prometheus scraping it gets (and parses) the classic text format; `target` is its
    host:port."""

    def __init__(self, upstream: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with urllib.request.urlopen(upstream + self.path, timeout=5) as r:
                    body, ctype = r.read(), r.headers["Content-Type"]
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError):  # Prometheus stopped mid-scrape
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Scrapes are not log lines."""

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self) -> ClassicRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# -- the collector's contract -------------------------------------------------------------
def _span(i: int, dur_ns: int, method: str = "Get", code: int = 0, kind: str = "grpc_client",
          end_ns: int | None = None, trace: bool = True) -> Span:
    end = 10**12 + i * 1000 if end_ns is None else end_ns
    return Span(kind, 7, 0xC000, 2 * i + 1, end - dur_ns, end, code, "pkg.Svc", method,
                f"/pkg.Svc/{method}", "127.0.0.1", 5000, service_name="demo",
                trace_id=f"{i:032x}" if trace else "", span_id=f"{i:016x}" if trace else "")


def _exemplars(registry: CollectorRegistry) -> dict[tuple[str, str, str, str],
                                                    tuple[str, float]]:
    """(family, rpc_method, rpc_grpc_status_code, le) -> (span_id, value) of the
    OpenMetrics exposition."""
    got = {}
    for fam in om_parse(openmetrics_latest(registry).decode()):
        for s in fam.samples:
            if s.exemplar is not None:
                assert set(s.exemplar.labels) == {"trace_id", "span_id"}
                got[(fam.name, s.labels["rpc_method"], s.labels["rpc_grpc_status_code"],
                     s.labels["le"])] = (
                    s.exemplar.labels["span_id"], s.exemplar.value)
    return got


def test_each_bucket_keeps_its_most_recent_span_of_a_series() -> None:
    registry = CollectorRegistry()
    m = RpcMetrics(registry=registry)
    spans = [_span(1, 80_000), _span(2, 90_000), _span(3, 3_000_000),
             _span(4, 70_000, method="Put", kind="grpc_server"),
             _span(5, 10**12)]  # 1000 s: the +Inf bucket
    m.observe_spans(spans)
    for s in spans:
        m.observe_exemplar(s)
    m.observe_exemplar(_span(6, 60_000, end_ns=10**12))  # ended before span 2: not newer
    m.observe_exemplar(_span(7, 60_000, method="Never"))  # no such series
    m.observe_exemplar(_span(8, 60_000, trace=False))  # no trace id
    unmatched = _span(9, 0)
    unmatched.start_ns = 0
    m.observe_exemplar(unmatched)
    c, s = "rpc_client_duration_seconds", "rpc_server_duration_seconds"
    assert _exemplars(registry) == {
        (c, "Get", "0", "0.0001"): (f"{2:016x}", 90e-6),
        (c, "Get", "0", "0.005"): (f"{3:016x}", 3e-3),
        (c, "Get", "0", "+Inf"): (f"{5:016x}", 1000.0),
        (s, "Put", "0", "0.0001"): (f"{4:016x}", 70e-6)}
    # the timestamp is the span's end in Unix time
    text = openmetrics_latest(registry).decode()
    line = next(x for x in text.splitlines() if f'span_id="{3:016x}"' in x)
    end_unix = (spans[2].end_ns + time.time_ns() - time.monotonic_ns()) / 1e9
    assert abs(float(line.rsplit(" ", 1)[1]) - end_unix) < 0.01
    # counts are the observations', never the exemplars'
    counts = {(f.name, smp.labels["rpc_method"]): smp.value for f in om_parse(text)
              for smp in f.samples if smp.name.endswith("_count")}
    assert counts == {(c, "Get"): 4, (s, "Put"): 1}


def test_exemplars_of_folded_spans_go_to_other_and_leave_with_their_series() -> None:
    registry = CollectorRegistry()
    m = RpcMetrics(max_label_sets=1, registry=registry)
    first, folded = _span(1, 80_000, method="A"), _span(2, 80_000, method="B")
    m.observe_spans([first, folded])
    m.observe_exemplar(first)
    m.observe_exemplar(folded)
    c = "rpc_client_duration_seconds"
    assert _exemplars(registry) == {(c, "A", "0", "0.0001"): (f"{1:016x}", 80e-6),
                                    (c, "_OTHER", "0", "0.0001"): (f"{2:016x}", 80e-6)}
    assert m.expire(0.0) == 2
    m.observe_exemplar(first)  # its series has gone: nothing
    assert _exemplars(registry) == {}
    m.observe_spans([first])  # back, without an exemplar until one comes
    assert _exemplars(registry) == {}


def test_one_exemplar_per_bucket_however_many_spans() -> None:
    m = RpcMetrics(registry=None)
    spans = [_span(i, 1000 * (i % 4000)) for i in range(1, 20001)]
    m.observe_spans(spans)
    for s in spans:
        m.observe_exemplar(s)
    (h,) = m._state.hists.values()  # the storage itself: one slot per bucket
    assert h.exemplars is not None and len(h.exemplars) == len(DEFAULT_BUCKETS) + 1
    # a bucket holds the last of its spans (end times grow with i): 0 ns is in the first
    assert h.exemplars[0] is not None and h.exemplars[0][2] == f"{20000:016x}"


def test_classic_text_is_unchanged_by_exemplars_and_openmetrics_carries_them() -> None:
    spans = [_span(i, 1000 * (i * 37 % 5000), method=("Get", "Put")[i % 2], code=i % 3,
                   kind=("grpc_client", "grpc_server")[i % 3 == 0]) for i in range(1, 400)]
    plain, exemplified = CollectorRegistry(), CollectorRegistry()
    RpcMetrics(registry=plain).observe_spans(spans)
    m = RpcMetrics(registry=exemplified)
    m.observe_spans(spans)
    for s in spans:
        m.observe_exemplar(s)
    with MetricsServer(plain, "127.0.0.1", 0, ready=lambda: True) as a, \
            MetricsServer(exemplified, "127.0.0.1", 0, ready=lambda: True) as b:
        classic = _get(f"{b.url}/metrics")  # no Accept header: the classic text format
        assert classic == _get(f"{a.url}/metrics") == generate_latest(plain).decode()
        assert " # {" not in classic
        opened = _get(f"{b.url}/metrics", OPENMETRICS)
        assert opened.endswith("# EOF\n")
        # one on every bucket some span fell in, in every series
        filled = {(s.kind, s.method, s.status_code, bisect.bisect_left(BOUNDS, s.duration_s))
                  for s in spans}
        assert opened.count(" # {span_id=") == len(_exemplars(exemplified)) == len(filled)
        assert _get(f"{a.url}/metrics", OPENMETRICS).count(" # {") == 0


def test_collect_while_exemplars_pour_in() -> None:
    """observe_exemplar on one thread, scrapes on another: every scrape is whole."""
    registry = CollectorRegistry()
    m = RpcMetrics(registry=registry)
    spans = [_span(i, 1000 * (i % 3000), method=f"M{i % 50}") for i in range(1, 5001)]
    m.observe_spans(spans)
    stop = threading.Event()
    errors: list[BaseException] = []

    def pour() -> None:
        try:
            while not stop.is_set():
                for s in spans:
                    m.observe_exemplar(s)
        except BaseException as e:  # surfaced below
            errors.append(e)

    t = threading.Thread(target=pour)
    t.start()
    with contextlib.ExitStack() as done:
        done.callback(t.join)
        done.callback(stop.set)
        for _ in range(20):
            om_parse(openmetrics_latest(registry).decode())
    assert not errors
    assert len(_exemplars(registry)) > 50
