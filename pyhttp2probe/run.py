"""`pyhttp2probe run --pid A --pid B …`: trace processes in one agent, serve /metrics,
optionally write spans.

Runs until SIGINT/SIGTERM, --duration seconds, or every traced process has exited; every
exit path detaches the probes (Agent.close) before returning.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

EXIT_BAD_INPUT = 2


def configure_logging(level: str = "info") -> None:
    """structlog: readable lines on a terminal, JSON lines otherwise (for log collectors)."""
    import structlog  # imported here: `inspect` and `--help` need not pay for it
    renderer: Any = (structlog.dev.ConsoleRenderer() if sys.stderr.isatty()
                     else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def parse_listen(value: str) -> tuple[str, int]:
    """'HOST:PORT' (or ':PORT', '[v6]:PORT') -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {value!r}")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def add_run_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """`run --pid PID [--pid PID …] [--listen HOST:PORT] [--spans-out FILE|-] [--duration S]`."""
    p = sub.add_parser("run", help="trace running Go processes; serve Prometheus /metrics")
    p.add_argument("--pid", type=int, action="append", required=True, dest="pids",
                   metavar="PID", help="process to trace (repeat for more; one agent)")
    p.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 9464),
                   help="where to serve /metrics (default 127.0.0.1:9464)")
    p.add_argument("--spans-out", default=None,
                   help="write spans as JSON lines to FILE, or '-' for stdout")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after S seconds (default: until SIGINT/SIGTERM)")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    return p


def cmd_run(args: argparse.Namespace) -> int:
    """Attach every pid to one agent, serve, wait for a stop condition, detach.

    A pid that cannot be traced is reported and skipped; with none traced, exit 2. Runs
    until a signal, --duration, or every traced process has exited.
    """
    import structlog
    from prometheus_client import REGISTRY, start_http_server

    from .agent import Agent
    from .targets import TargetError

    configure_logging(args.log_level)
    log = structlog.get_logger("pyhttp2probe.run")
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    host, port = args.listen
    agent = Agent(registry=REGISTRY, spans_out=args.spans_out, keep_spans=False)
    try:
        failed = 0
        for pid in dict.fromkeys(args.pids):
            try:
                agent.attach(pid)
            except TargetError as exc:
                failed += 1
                print(f"pyhttp2probe: error: {exc}", file=sys.stderr)
        if not agent.targets:
            return EXIT_BAD_INPUT
        server, thread = start_http_server(port, addr=host, registry=REGISTRY)
        log.info("serving metrics", url=f"http://{host}:{server.server_port}/metrics",
                 targets=sorted(agent.targets), failed=failed)
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            stop.wait(1.0 if left is None else min(1.0, left))
            if not any(os.path.exists(f"/proc/{pid}") for pid in args.pids):
                log.info("every traced process exited")
                break
            if agent.error is not None:
                log.error("drain failed", error=repr(agent.error))
                return 1
        server.shutdown()
        thread.join(timeout=5)
        return 0
    finally:
        agent.close()
        for s, h in old.items():
            signal.signal(s, h)
