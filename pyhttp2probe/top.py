"""`pyhttp2probe top`: a live terminal view of the traced calls, one row per (side,
service_name, method), refreshed every second.

Two sources, one view:
- `--url http://HOST:PORT/metrics`: scrape a running agent (`pyhttp2probe run`);
- the selection flags of `run` (`--pid/--exe/--port/--all/--exclude-exe` and every other
  run option, from flags, PYHTTP2PROBE_* and the YAML file alike): run the node service
  in this process, on a thread, and read its registry directly.

Figures: rate/s from the call counters' increase since the previous refresh; err%, p50 and
p99 from the increase of the histograms over a sliding window (`--window`, 10 s), shown
dim from the cumulative histograms when the window saw no call. Quantiles interpolate like
PromQL's histogram_quantile (report.py), so they match a dashboard of the same series.

The screen is drawn with rich (Live, on the alternate screen); keys are read from the
terminal in cbreak mode: `s`/`S` next/previous sort column, `r` reverse, `q` quit. When
stdout is not a terminal, or with `--once`, one plain table is printed after one interval
(rates need two scrapes) and top exits.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import select
import signal
import socket
import sys
import threading
import time
import urllib.error
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric

from .config import (
    EPILOG,
    OPTIONS,
    ConfigError,
    Settings,
    add_run_arguments,
    flag_name,
    parse_duration,
    settings_from_args,
)
from .report import Health, MethodStats, call_stats, health, parse, scrape

EXIT_BAD_INPUT = 2
DEFAULT_INTERVAL_S = 1.0
DEFAULT_WINDOW_S = 10.0
NOT_SHOWN = "-"


# -- the figures ---------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the view."""

    side: str
    service_name: str
    method: str
    rate: float | None  # calls/s since the previous refresh; None on the first one
    error_pct: float  # NaN when no call at all
    p50: float  # seconds; NaN when no call at all
    p99: float
    total: float  # calls since the series began
    windowed: bool  # err%, p50, p99 from the window (else cumulative: no call in it)


_Snapshot = tuple[float, dict[tuple[str, str, str], MethodStats]]


class Tracker:
    """Turns successive cumulative snapshots into rows: rates from the counters' increase
    since the previous snapshot, err% and quantiles from the increase over the window. A
    counter that went down (the agent restarted, a series expired and came back) counts
    from zero."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.window_s = window_s
        self._history: deque[_Snapshot] = deque()

    def update(self, t: float, stats: Sequence[MethodStats]) -> list[Row]:
        cur = {s.key: s for s in stats}
        prev = self._history[-1] if self._history else None
        self._history.append((t, cur))
        # the base of the window: the latest snapshot at least window_s old, if any
        while len(self._history) >= 2 and self._history[1][0] <= t - self.window_s:
            self._history.popleft()
        base = self._history[0] if self._history[0][0] < t else None
        return [self._row(s, prev, base, t) for s in stats]

    @staticmethod
    def _row(s: MethodStats, prev: _Snapshot | None, base: _Snapshot | None,
             t: float) -> Row:
        rate = None
        if prev is not None and t > prev[0]:
            before = prev[1].get(s.key)
            calls = s.count - (before.count if before is not None else 0.0)
            if calls < 0:
                calls = s.count  # reset
            rate = calls / (t - prev[0])
        win = _delta(s, base[1].get(s.key)) if base is not None else None
        windowed = win is not None and win.count > 0
        shown = win if win is not None and windowed else s
        error_pct = 100.0 * shown.errors / shown.count if shown.count else math.nan
        return Row(s.side, s.service_name, s.name, rate, error_pct, shown.quantile(0.5),
                   shown.quantile(0.99), s.count, windowed)


def _delta(now: MethodStats, then: MethodStats | None) -> MethodStats:
    """The calls between two cumulative states of one row (all of `now` after a reset)."""
    if then is None:
        return now
    buckets = {le: c - then.buckets.get(le, 0.0) for le, c in now.buckets.items()}
    if now.count < then.count or any(c < 0 for c in buckets.values()):
        return now
    return MethodStats(now.service, now.method, now.count - then.count,
                       now.errors - then.errors, now.total_s - then.total_s, buckets,
                       now.side, now.service_name)


# -- columns and sorting -------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    key: str  # what --sort and the header call it
    header: str
    value: Callable[[Row], Any]
    numeric: bool  # sorted high-first by default; right-aligned


COLUMNS: tuple[Column, ...] = (
    Column("rate", "rate/s", lambda r: r.rate, True),
    Column("err", "err%", lambda r: r.error_pct, True),
    Column("p50", "p50", lambda r: r.p50, True),
    Column("p99", "p99", lambda r: r.p99, True),
    Column("total", "calls", lambda r: r.total, True),
    Column("side", "side", lambda r: r.side, False),
    Column("service", "service", lambda r: r.service_name, False),
    Column("method", "method", lambda r: r.method, False),
)
SORT_KEYS = tuple(c.key for c in COLUMNS)
# left to right on the screen
LAYOUT = ("side", "service", "method", "rate", "err", "p50", "p99", "total")
_BY_KEY = {c.key: c for c in COLUMNS}


def sort_rows(rows: Sequence[Row], key: str, reverse: bool = False) -> list[Row]:
    """Numbers high-first, names A-Z (`reverse` flips either); rows without the figure
    (no rate yet, no call) last either way; ties by side, service, method."""
    col = _BY_KEY[key]
    base = sorted(rows, key=lambda r: (r.side, r.service_name, r.method))
    have = [r for r in base if not _missing(col.value(r))]
    lack = [r for r in base if _missing(col.value(r))]
    return sorted(have, key=col.value, reverse=col.numeric != reverse) + lack


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_rate(v: float | None) -> str:
    return NOT_SHOWN if v is None else f"{v:.1f}"


def fmt_pct(v: float) -> str:
    return NOT_SHOWN if math.isnan(v) else f"{v:.1f}%"


def fmt_seconds(v: float) -> str:
    """A latency as a person reads it: 87µs, 1.25ms, 2.50s."""
    if math.isnan(v):
        return NOT_SHOWN
    if v < 1e-3:
        return f"{v * 1e6:.0f}µs"
    if v < 1.0:
        return f"{v * 1e3:.2f}ms"
    return f"{v:.2f}s"


def cells(r: Row) -> dict[str, str]:
    return {"side": r.side, "service": r.service_name, "method": r.method,
            "rate": fmt_rate(r.rate), "err": fmt_pct(r.error_pct), "p50": fmt_seconds(r.p50),
            "p99": fmt_seconds(r.p99), "total": f"{r.total:.0f}"}


def plain_table(rows: Sequence[Row]) -> str:
    """Fixed-width text, one header line then one line per row (for scripts)."""
    table = [[_BY_KEY[k].header for k in LAYOUT]] + [[cells(r)[k] for k in LAYOUT]
                                                     for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(LAYOUT))]
    out = []
    for line in table:
        parts = [v.rjust(w) if _BY_KEY[k].numeric else v.ljust(w)
                 for k, v, w in zip(LAYOUT, line, widths, strict=True)]
        out.append("  ".join(parts).rstrip())
    return "\n".join(out)


# -- sources -------------------------------------------------------------------------------

class SourceError(Exception):
    """The source cannot be read now (retried at the next refresh)."""


class Source(Protocol):
    def label(self) -> str: ...

    def families(self) -> list[Metric]: ...

    def waiting(self) -> str | None: ...  # why there is nothing to show yet, if so

    def done(self) -> int | None: ...  # the exit code once the source has ended

    def close(self) -> None: ...


class UrlSource:
    """A running agent's /metrics."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def label(self) -> str:
        return self.url

    def families(self) -> list[Metric]:
        try:
            text = scrape(self.url, timeout_s=self.timeout_s)
        except urllib.error.HTTPError as e:
            raise SourceError(f"HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise SourceError(_why(e.reason)) from None
        except (OSError, ValueError) as e:  # reset, timed out, bad status line
            raise SourceError(_why(e)) from None
        try:
            return parse(text)
        except Exception as e:  # any parser complaint: not our text
            raise SourceError(f"not Prometheus text: {e}") from None

    def waiting(self) -> str | None:
        return None

    def done(self) -> int | None:
        return None

    def close(self) -> None:
        pass


def _why(e: object) -> str:
    if isinstance(e, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower() if e.strerror[:1].isupper() else e.strerror
    return str(e) or type(e).__name__


class AttachedSource:
    """The node service of `run`, in this process: started on a thread, read through its
    registry (no HTTP), stopped and detached by close()."""

    def __init__(self, settings: Settings) -> None:
        from prometheus_client.registry import CollectorRegistry

        from .service import Service

        self.registry = CollectorRegistry()
        self.service = Service(settings, self.registry)
        self.error: BaseException | None = None
        self.exit_code: int | None = None
        self._thread = threading.Thread(target=self._main, name="pyhttp2probe-top-service",
                                        daemon=True)

    def start(self) -> AttachedSource:
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            self.service.start()
            self.exit_code = self.service.run()
        except BaseException as e:  # reported on exit, not a traceback
            self.error = e

    def label(self) -> str:
        agent = self.service.agent
        n = len(agent.targets) if agent is not None else 0
        text = f"attached: {n} process{'' if n == 1 else 'es'}"
        server = self.service.server
        if server is not None:
            text += f" (serving http://{self.service.settings.listen_host}:{server.port}/metrics)"
        return text

    def families(self) -> list[Metric]:
        return list(self.registry.collect())

    def waiting(self) -> str | None:
        ready, why = self.service.ready()
        return None if ready else why

    def done(self) -> int | None:
        if self._thread.is_alive() or not self._thread.ident:
            return None
        return 1 if self.error is not None else (self.exit_code or 0)

    def close(self) -> None:
        self.service.stop()
        if self._thread.ident:
            self._thread.join(timeout=60)
        self.service.close()


class LogTail:
    """A file for structlog's PrintLogger that keeps the last lines for the screen."""

    def __init__(self, n: int = 3) -> None:
        self.lines: deque[str] = deque(maxlen=n)
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self.lines.extend(line for line in text.splitlines() if line.strip())
        return len(text)

    def flush(self) -> None:
        pass


def _log_to(tail: LogTail, level: str) -> None:
    import logging

    import structlog

    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="%H:%M:%S"),
                    structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=tail),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


# -- the view ------------------------------------------------------------------------------

@dataclass
class View:
    """What the screen shows; refresh() reads the source, the keys change the order."""

    source: Source
    tracker: Tracker
    interval_s: float
    sort: str = "rate"
    reverse: bool = False
    rows: list[Row] = field(default_factory=list)
    health: Health | None = None
    refreshed: str = ""  # wall-clock time of the last good read
    problem: str | None = None  # the last read failed: why
    failures: int = 0
    logs: LogTail | None = None

    def refresh(self) -> None:
        try:
            families = self.source.families()
        except SourceError as e:
            self.problem = str(e)
            self.failures += 1
            return
        self.problem, self.failures = None, 0
        self.rows = self.tracker.update(time.monotonic(), call_stats(families))
        self.health = health(families)
        self.refreshed = time.strftime("%H:%M:%S")

    def key(self, ch: str) -> bool:
        """Handle one key; True to quit."""
        if ch in ("q", "Q", "\x1b"):
            return True
        if ch in ("s", "S"):
            i = SORT_KEYS.index(self.sort) + (1 if ch == "s" else -1)
            self.sort, self.reverse = SORT_KEYS[i % len(SORT_KEYS)], False
        elif ch == "r":
            self.reverse = not self.reverse
        return False

    def sorted_rows(self) -> list[Row]:
        return sort_rows(self.rows, self.sort, self.reverse)

    def arrow(self) -> str:
        return "▼" if _BY_KEY[self.sort].numeric != self.reverse else "▲"

    def health_text(self) -> str:
        h = self.health
        if h is None:
            return "health: -"
        attached = NOT_SHOWN if h.attached is None else f"{h.attached:.0f}"
        return (f"health: attached {attached} · drops {h.drops:.0f} · unmatched "
                f"{h.unmatched:.0f} · attach errors {h.attach_errors:.0f}")


def render(view: View) -> Any:
    """The screen: two header lines, a status line, the table, the footer."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text.assemble(("pyhttp2probe top", "bold"), "  source: ", (view.source.label(),
                                                                       "cyan"),
                         f"  refreshed {view.refreshed or NOT_SHOWN} "
                         f"(every {view.interval_s:g}s)")
    keys = Text.assemble(view.health_text(), "   sort: ",
                         (f"{_BY_KEY[view.sort].header} {view.arrow()}", "bold"),
                         ("   s/S: sort column  r: reverse  q: quit", "dim"))
    parts: list[Any] = [head, keys]
    waiting = view.source.waiting()
    if view.problem is not None:
        parts.append(Text(f"cannot read {view.source.label()}: {view.problem} — retrying "
                          f"every {view.interval_s:g}s (failed {view.failures}x)",
                          style="bold red"))
    elif waiting is not None:
        parts.append(Text(f"starting: {waiting}…", style="yellow"))
    else:
        parts.append(Text(""))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=False)
    for k in LAYOUT:
        col = _BY_KEY[k]
        header = f"{col.header} {view.arrow()}" if k == view.sort else col.header
        table.add_column(header, justify="right" if col.numeric else "left", no_wrap=True,
                         style="bold" if k == view.sort else None)
    rows = view.sorted_rows()
    for r in rows:
        c = cells(r)
        old = "" if r.windowed else "dim"  # cumulative figures: no call in the window
        table.add_row(*(Text(c[k], style=old) if k in ("err", "p50", "p99") else c[k]
                        for k in LAYOUT))
    parts.append(table if rows else Text("no traced calls yet", style="dim"))
    parts.append(Text(f"rate/s: since the last refresh · err%, p50, p99: the last "
                      f"{view.tracker.window_s:g}s (dim: cumulative, no call in it) · "
                      "errors: gRPC status != 0, HTTP 5xx or no response", style="dim"))
    if view.logs is not None:
        parts.extend(Text(line, style="dim", no_wrap=True, overflow="ellipsis")
                     for line in list(view.logs.lines))
    return Group(*parts)


# -- the terminal --------------------------------------------------------------------------

class Keys:
    """Single key presses from the terminal (cbreak: no echo, no Enter needed; Ctrl-C
    still interrupts). Without a terminal on stdin, read() only waits."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self._saved: Any = None

    def __enter__(self) -> Keys:
        import termios
        import tty

        if sys.stdin.isatty():
            self.fd = sys.stdin.fileno()
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def read(self, timeout_s: float) -> str:
        if self.fd is None:
            time.sleep(max(timeout_s, 0.0))
            return ""
        ready, _, _ = select.select([self.fd], [], [], max(timeout_s, 0.0))
        if not ready:
            return ""
        data = os.read(self.fd, 64)
        if not data:  # the terminal went away
            raise EOFError
        return data.decode(errors="ignore")

    def __exit__(self, *exc: object) -> None:
        import termios

        if self.fd is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


class _Quit(Exception):
    pass


@contextlib.contextmanager
def _quit_on_sigterm() -> Iterator[None]:
    def quit_(signum: int, frame: object) -> None:
        raise _Quit

    old = signal.signal(signal.SIGTERM, quit_)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def live(view: View) -> int:
    """Draw and refresh until q, SIGTERM, SIGINT or the end of the source; exit code."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    next_at = time.monotonic()
    try:
        with _quit_on_sigterm(), Keys() as keys, Live(console=console, screen=True,
                                                        auto_refresh=False) as screen:
            while True:
                if time.monotonic() >= next_at:
                    view.refresh()
                    next_at = time.monotonic() + view.interval_s
                    code = view.source.done()
                    if code is not None:
                        return code
                    screen.update(render(view), refresh=True)
                pressed = keys.read(next_at - time.monotonic())
                if pressed:
                    if any(view.key(ch) for ch in pressed):
                        return 0
                    screen.update(render(view), refresh=True)
    except (_Quit, KeyboardInterrupt, EOFError):
        return 0


def once(view: View) -> int:
    """Two reads one interval apart (the rates need both), one plain table on stdout."""
    view.refresh()
    if view.problem is None:
        time.sleep(view.interval_s)
        view.refresh()
    if view.problem is not None:
        print(f"pyhttp2probe: error: cannot read {view.source.label()}: {view.problem}",
              file=sys.stderr)
        return 1
    print(f"# {view.source.label()}  {view.refreshed}  {view.health_text()}")
    print(plain_table(view.sorted_rows()))
    return 0


# -- the command line ----------------------------------------------------------------------

def add_top_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """`top (--url URL | run's selection and options) [--interval S] [--window S] ...`."""
    p = sub.add_parser(
        "top", help="live per-method rate, error rate and p50/p99 in the terminal",
        description="A live view of the traced calls: rate/s, err%, p50, p99 and calls per\n"
                    "side, service and method. Reads a running agent (--url), or runs one\n"
                    "in this process with run's selection flags and options.\n"
                    "Keys: s/S next/previous sort column, r reverse, q quit.\n"
                    "When stdout is not a terminal (or with --once), prints one table after\n"
                    "one interval and exits.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s = argparse.SUPPRESS
    view = p.add_argument_group("view")
    view.add_argument("--url", default=s, metavar="URL",
                      help="read this agent's metrics (http://HOST:PORT/metrics; HOST:PORT "
                           "is completed) instead of attaching")
    view.add_argument("--interval", default=s, metavar="SECONDS",
                      help=f"refresh period (default {DEFAULT_INTERVAL_S:g}; e.g. 2, 500ms)")
    view.add_argument("--window", default=s, metavar="SECONDS",
                      help=f"err%%, p50 and p99 over this sliding window (default "
                           f"{DEFAULT_WINDOW_S:g})")
    view.add_argument("--sort", default=s, metavar="|".join(SORT_KEYS),
                      help="initial sort column (default rate, high first)")
    view.add_argument("--reverse", action="store_true", default=s,
                      help="reverse the initial order")
    view.add_argument("--once", action="store_true", default=s,
                      help="print one table and exit (also when stdout is not a terminal)")
    add_run_arguments(p)
    return p


def normalize_url(url: str) -> str:
    """http://HOST:PORT/metrics from itself, http://HOST:PORT or HOST:PORT."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    scheme, _, rest = text.partition("://")
    if scheme not in ("http", "https") or not rest or rest.startswith("/"):
        raise ConfigError(f"--url: {url!r} is not http://HOST:PORT/metrics")
    if "/" not in rest:
        text += "/metrics"
    return text


def _view_options(given: dict[str, Any]) -> tuple[float, float, str, bool]:
    errors = []
    values = []
    for name, default in (("interval", DEFAULT_INTERVAL_S), ("window", DEFAULT_WINDOW_S)):
        try:
            values.append(parse_duration(given[name]) if name in given else default)
        except ValueError as e:
            errors.append(f"--{name}: {e}")
            values.append(default)
    sort = given.get("sort", "rate")
    if sort not in SORT_KEYS:
        errors.append(f"--sort: {sort!r} is not one of {', '.join(SORT_KEYS)}")
    if errors:
        raise ConfigError("; ".join(errors))
    return values[0], values[1], sort, bool(given.get("reverse", False))


def _source_of(args: argparse.Namespace) -> UrlSource | Settings:
    """The URL source, or the settings of the agent to run in this process."""
    given = vars(args)
    if "url" in given:
        run_flags = [flag_name(k) for k in (*OPTIONS, "config") if k in given]
        if run_flags:
            raise ConfigError(f"--url reads a running agent; {', '.join(run_flags)} "
                              f"{'is' if len(run_flags) == 1 else 'are'} for attaching in "
                              "this process: give one or the other")
        return UrlSource(normalize_url(given["url"]))
    settings = settings_from_args(args, os.environ)
    if settings.spans_out == "-":
        raise ConfigError("--spans-out: '-' (stdout) is top's screen; give a file")
    if "listen" not in settings.model_fields_set:
        # serve /metrics only where asked; never on the port a node's agent may hold
        settings = settings.model_copy(update={"listen": "127.0.0.1:0"})
    return settings


def cmd_top(args: argparse.Namespace) -> int:
    """Options, then (attaching) privileges, then the view; a bad option or a missing
    privilege exits 2 with one line on stderr before anything is loaded."""
    try:
        interval, window, sort, reverse = _view_options(vars(args))
        chosen = _source_of(args)
    except ConfigError as e:
        print(f"pyhttp2probe: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    one_shot = bool(vars(args).get("once")) or not sys.stdout.isatty()
    logs = None
    source: UrlSource | AttachedSource
    if isinstance(chosen, UrlSource):
        source = chosen
    else:
        from .privileges import missing_privileges

        missing = missing_privileges(chosen.link_style)
        if missing:
            print(f"pyhttp2probe: error: missing privileges: {'; '.join(missing)}",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        if one_shot:
            from .run import configure_logging

            configure_logging(chosen.log_level)
        else:  # the screen is ours: the last log lines go under the table
            logs = LogTail()
            _log_to(logs, chosen.log_level)
        source = AttachedSource(chosen).start()
    view = View(source, Tracker(window), interval, sort, reverse, logs=logs)
    try:
        if one_shot:
            _wait_ready(source)
            code = once(view)
        else:
            code = live(view)
    finally:
        source.close()
    if isinstance(source, AttachedSource) and source.error is not None:
        print(f"pyhttp2probe: error: {source.error}", file=sys.stderr)
        return 1
    return code


def _wait_ready(source: Source, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while source.waiting() is not None and source.done() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
