"""`pyhttp2probe run`: the agent as a node service.

Order of a start: settings (flags > PYHTTP2PROBE_* > YAML file > defaults; config.py), then
privileges (privileges.py), both before anything is loaded and each exiting 2 with one line
naming what is wrong; then logging, then the service (service.serve), which runs until
SIGINT/SIGTERM or --duration and detaches every probe on the way out.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from typing import Any

from .config import (
    EPILOG,
    ConfigError,
    add_run_arguments,
    otlp_traces_endpoint,
    settings_from_args,
)

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
        otlp = otlp_traces_endpoint(settings, os.environ)
    except ConfigError as e:
        print(f"pyhttp2probe: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    missing = missing_privileges(settings.link_style)
    if missing:
        print(f"pyhttp2probe: error: missing privileges: {'; '.join(missing)}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    configure_logging(settings.log_level)
    from .service import serve

    tune_gc()
    return serve(settings, otlp_endpoint=otlp)


def tune_gc() -> None:
    """The node service is one long-lived process that makes a few short-lived objects per
    span and keeps some for seconds (the trace joiner's window, the OTLP queue). CPython's
    default (a gen-0 collection every 700 allocations, each one over whatever survived)
    then spends more than the joiner itself: measured 7.6 µs/span for the joiner with the
    defaults, 3.7 with these settings. What exists at start is frozen out of every scan."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
