"""`pyhttp2probe run`: the agent as a node service.

Order of a start: settings (flags > PYHTTP2PROBE_* > YAML file > defaults; config.py), then
privileges (privileges.py), both before anything is loaded and each exiting 2 with one line
naming what is wrong; then logging, then the service (service.serve), which runs until
SIGINT/SIGTERM or --duration and detaches every probe on the way out.
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

from .config import EPILOG, ConfigError, Settings, add_run_arguments, settings_from_args

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


def add_run_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """`run [--pid PID …] [--exe PATTERN …] [--port N …] [--all] [options]`: see --help."""
    p = sub.add_parser("run", help="trace Go processes of this node; serve Prometheus /metrics",
                       description="Trace the selected Go processes with one agent, follow\n"
                                   "them as they start and exit, serve /metrics, /healthz\n"
                                   "and /readyz.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    return p


def cmd_run(args: argparse.Namespace) -> int:
    """Settings, then privileges, then the service; a bad setting or a missing privilege
    exits 2 with one line on stderr before anything is loaded."""
    from .privileges import missing_privileges

    try:
        settings = settings_from_args(args, os.environ)
    except ConfigError as e:
        print(f"pyhttp2probe: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    missing = missing_privileges(settings.link_style)
    if missing:
        print(f"pyhttp2probe: error: missing privileges: {'; '.join(missing)}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    configure_logging(settings.log_level)
    try:
        from .discovery import Discovery  # noqa: F401 - what the service follows processes by
        from .service import serve
    except ModuleNotFoundError as e:
        # TODO(issue 10): remove with the fallback once service and discovery are in.
        if e.name not in ("pyhttp2probe.service", "pyhttp2probe.discovery"):
            raise
        return _serve_pids(settings)
    return serve(settings)


def _serve_pids(settings: Settings) -> int:
    """The pre-service behaviour, kept until service.py lands: attach every --pid to one
    agent, serve, stop at a signal, --duration, or when every traced process has exited.

    A pid that cannot be traced is reported and skipped; with none traced, exit 2.
    """
    import structlog
    from prometheus_client import CollectorRegistry

    from .agent import Agent
    from .httpserver import MetricsServer
    from .targets import TargetError

    log = structlog.get_logger("pyhttp2probe.run")
    if not settings.pid:
        print("pyhttp2probe: error: --exe, --port and --all need pyhttp2probe.service",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    registry = CollectorRegistry()
    agent = Agent(registry=registry, spans_out=settings.spans_out, keep_spans=False,
                  max_label_sets=settings.max_label_sets, ring_bytes=settings.ring_size,
                  link_style=settings.resolved_link_style)
    server = None
    try:
        failed = 0
        for pid in settings.pid:
            try:
                agent.attach(pid)
            except TargetError as exc:
                failed += 1
                print(f"pyhttp2probe: error: {exc}", file=sys.stderr)
        if not agent.targets:
            return EXIT_BAD_INPUT
        server = MetricsServer(registry, settings.listen_host, settings.listen_port,
                               ready=lambda: True)
        log.info("serving metrics", url=f"{server.url}/metrics",
                 targets=sorted(agent.targets), failed=failed)
        deadline = time.monotonic() + settings.duration if settings.duration else None
        while not stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            stop.wait(1.0 if left is None else min(1.0, left))
            if not any(os.path.exists(f"/proc/{pid}") for pid in settings.pid):
                log.info("every traced process exited")
                break
            if agent.error is not None:
                log.error("drain failed", error=repr(agent.error))
                return 1
        return 0
    finally:
        agent.close()
        if server is not None:
            server.close()
        for s, h in old.items():
            signal.signal(s, h)
