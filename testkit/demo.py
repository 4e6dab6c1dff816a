"""`make demo` (`python3 -m testkit.demo`): the README's main job, end to end on real parts.

Builds the Go gRPC demo program kept under tests/go/grpcdemo, starts it, attaches an Agent
before its load begins, drives load for a while, then scrapes the agent's own /metrics and
prints per-method rate, error rate and p50/p99. It needs the source checkout (the Go
program and its pinned modules live in tests/), Go on the PATH, and root.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pyhttp2probe.run import configure_logging

REPO = Path(__file__).resolve().parent.parent


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {value!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def parser() -> argparse.ArgumentParser:
    """`[--duration S] [--qps N] [--listen HOST:PORT] [--linger S]`."""
    p = argparse.ArgumentParser(prog="python3 -m testkit.demo",
                                description="trace a demo Go gRPC program and print its RPC "
                                "metrics")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    p.add_argument("--qps", type=float, default=300.0, help="client calls per second")
    p.add_argument("--listen", type=_listen, default=("127.0.0.1", 9464),
                   help="where to serve /metrics (default 127.0.0.1:9464; busy -> any port)")
    p.add_argument("--linger", type=float, default=0.0,
                   help="keep serving /metrics this many seconds after the table")
    return p


def _build_demo_binary() -> Path:
    from testkit.gobuild import GoBuild, build

    return build(GoBuild(src="grpcdemo"))


def _serve(registry: object, host: str, port: int) -> tuple[object, object, int]:
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError:  # the default port is taken: any free one will do for a demo
        server, thread = start_http_server(0, addr=host, registry=registry)
    return server, thread, server.server_port


def main(argv: list[str] | None = None) -> int:
    """Build, start, attach, load, report; every path stops the program and detaches."""
    from prometheus_client import CollectorRegistry

    from pyhttp2probe import Agent
    from pyhttp2probe.report import format_table, method_stats, scrape
    from testkit.workload import start_workload

    args = parser().parse_args(argv)

    configure_logging("warning")
    print("building the Go gRPC demo program (cached after the first run)...", flush=True)
    binary = _build_demo_binary()
    registry = CollectorRegistry()
    load = ["-duration", f"{args.duration}s", "-qps", str(args.qps), "-hold"]
    with start_workload(binary, load) as workload, \
            Agent(registry=registry, keep_spans=False) as agent:
        assert workload.pid is not None
        agent.attach(workload.pid)
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
        agent.drain()
        text = scrape(url)
        for side in ("client", "server"):
            metric = f"rpc_{side}_duration_seconds"
            print(f"\n{side} side, as the agent saw it over {window:.1f}s ({metric}):\n")
            print(format_table(method_stats(text, metric), window))
        seen = sum(r.count for r in method_stats(text))
        seen_errors = sum(r.errors for r in method_stats(text))
        print(f"\nagent: {seen:.0f} client calls ({seen_errors:.0f} errors), "
              f"{agent.unmatched} unmatched; raw series: curl -s {url} | grep ^rpc_",
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


if __name__ == "__main__":
    sys.exit(main())
