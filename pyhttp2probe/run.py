"""`pyhttp2probe run --pid PID`: trace one process, serve /metrics, optionally write spans.

Runs until SIGINT/SIGTERM, --duration seconds, or the traced process exits; every exit path
detaches the probes (Tracer.close) before returning.
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
    """`run --pid PID [--listen HOST:PORT] [--spans-out FILE|-] [--duration S]`."""
    p = sub.add_parser("run", help="trace a running Go process; serve Prometheus /metrics")
    p.add_argument("--pid", type=int, required=True, help="process to trace")
    p.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 9464),
                   help="where to serve /metrics (default 127.0.0.1:9464)")
    p.add_argument("--spans-out", default=None,
                   help="write spans as JSON lines to FILE, or '-' for stdout")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after S seconds (default: until SIGINT/SIGTERM)")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    return p


def cmd_run(args: argparse.Namespace) -> int:
    """Attach, serve, wait for a stop condition, detach."""
    import structlog
    from prometheus_client import REGISTRY, start_http_server

    from .tracer import Tracer, TracerError

    configure_logging(args.log_level)
    log = structlog.get_logger("pyhttp2probe.run").bind(pid=args.pid)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    host, port = args.listen
    tracer = Tracer(pid=args.pid, registry=REGISTRY, spans_out=args.spans_out,
                    keep_spans=False)
    try:
        try:
            tracer.start()
        except TracerError as exc:
            print(f"pyhttp2probe: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        server, thread = start_http_server(port, addr=host, registry=REGISTRY)
        log.info("serving metrics", url=f"http://{host}:{server.server_port}/metrics")
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            stop.wait(1.0 if left is None else min(1.0, left))
            if not os.path.exists(f"/proc/{args.pid}"):
                log.info("traced process exited")
                break
            if tracer.error is not None:
                log.error("drain failed", error=repr(tracer.error))
                return 1
        server.shutdown()
        thread.join(timeout=5)
        return 0
    finally:
        tracer.close()
        for s, h in old.items():
            signal.signal(s, h)
