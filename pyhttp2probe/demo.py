"""`pyhttp2probe demo`: the README's main job, end to end on real parts.

Builds the Go gRPC demo program kept under tests/go/grpcdemo, starts it, attaches the
agent before its load begins, drives load for a while, then scrapes the agent's own
/metrics and prints per-method rate, error rate and p50/p99. It needs a source checkout
(the Go program and its pinned modules live in tests/), Go on the PATH, and root.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .run import parse_listen

REPO = Path(__file__).resolve().parent.parent


def add_demo_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """`demo [--duration S] [--qps N] [--listen HOST:PORT] [--linger S]`."""
    p = sub.add_parser("demo", help="trace a demo Go gRPC program and print its RPC metrics")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    p.add_argument("--qps", type=float, default=300.0, help="client calls per second")
    p.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 9464),
                   help="where to serve /metrics (default 127.0.0.1:9464; busy -> any port)")
    p.add_argument("--linger", type=float, default=0.0,
                   help="keep serving /metrics this many seconds after the table")
    return p


def _build_demo_binary() -> Path:
    if not (REPO / "tests" / "go" / "grpcdemo").is_dir():
        raise SystemExit("pyhttp2probe demo: needs a source checkout (tests/go/grpcdemo)")
    sys.path.insert(0, str(REPO))
    from tests.gobuild import GoBuild, build

    return build(GoBuild(src="grpcdemo"))


def _serve(registry: object, host: str, port: int) -> tuple[object, object, int]:
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError:  # the default port is taken: any free one will do for a demo
        server, thread = start_http_server(0, addr=host, registry=registry)
    return server, thread, server.server_port


def cmd_demo(args: argparse.Namespace) -> int:
    """Build, start, attach, load, report; every path stops the program and detaches."""
    from prometheus_client import CollectorRegistry

    from tests.truth import start_workload

    from .report import format_table, method_stats, scrape
    from .run import configure_logging
    from .tracer import Tracer

    configure_logging("warning")
    print("building the Go gRPC demo program (cached after the first run)...", flush=True)
    binary = _build_demo_binary()
    registry = CollectorRegistry()
    argv = ["-duration", f"{args.duration}s", "-qps", str(args.qps), "-hold"]
    with start_workload(binary, argv) as workload, \
            Tracer(pid=workload.pid, registry=registry, keep_spans=False) as tracer:
        server, thread, port = _serve(registry, *args.listen)
        url = f"http://{args.listen[0]}:{port}/metrics"
        print(f"tracing pid {workload.pid} ({binary.name}); metrics at {url}", flush=True)
        started = time.monotonic()
        workload.go()
        step = min(5.0, max(0.5, args.duration / 4))
        while time.monotonic() - started < args.duration:
            time.sleep(min(step, max(0.0, args.duration - (time.monotonic() - started))))
            seen = sum(r.count for r in method_stats(scrape(url)))
            print(f"  {time.monotonic() - started:5.1f}s  {seen:8.0f} RPCs traced", flush=True)
        workload.wait_done(timeout=60.0)
        window = time.monotonic() - started
        tracer.drain()
        text = scrape(url)
        for side in ("client", "server"):
            metric = f"rpc_{side}_duration_seconds"
            print(f"\n{side} side, as the agent saw it over {window:.1f}s ({metric}):\n")
            print(format_table(method_stats(text, metric), window))
        seen = sum(r.count for r in method_stats(text))
        seen_errors = sum(r.errors for r in method_stats(text))
        print(f"\nagent: {seen:.0f} client calls ({seen_errors:.0f} errors), "
              f"{tracer.unmatched} unmatched; raw series: curl -s {url} | grep ^rpc_",
              flush=True)
        if args.linger > 0:
            print(f"serving {url} for {args.linger:.0f} more seconds", flush=True)
            time.sleep(args.linger)
        server.shutdown()
        thread.join(timeout=5)
        summary = workload.finish() or {}
    print(f"program: {summary.get('total', '?')} client calls ({summary.get('errors', '?')} "
          "errors), by its own count", flush=True)
    return 0
