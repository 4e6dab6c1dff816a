"""`pyhttp2probe top` as a person uses it: in a real terminal (tmux), reading a running agent
or attaching itself, sorted by key presses, quit with `q`; plus its figures from counter
and histogram deltas, checked on known series."""

from __future__ import annotations

import itertools
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pyhttp2probe.cli import main
from pyhttp2probe.metrics import RpcMetrics
from pyhttp2probe.report import call_stats, health, parse
from pyhttp2probe.spans import Span
from pyhttp2probe.top import Row, Tracker, plain_table, sort_rows
from testkit.agentproc import AgentProcess
from testkit.gobuild import GoBuild, build
from testkit.prom import free_port
from testkit.workload import start_workload

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("demo.Greeter/SayHello", "demo.Greeter/SayBye", "demo.Store/Get",
           "demo.Store/List", "demo.Store/Put")
ROW = re.compile(r"^(grpc|http) (client|server)  ")
_sessions = itertools.count()


# -- the figures, on known series ----------------------------------------------------------

def _span(kind: str, method: str, code: int, dur_s: float, service: str = "demo.S") -> Span:
    return Span(kind, 1, 1, 1, 1, 1 + int(dur_s * 1e9), code, service, method,
                server_address="127.0.0.1", server_port=8443, service_name="app",
                attributes={"network.protocol.version": "2"})


def test_call_stats_reads_every_family_the_same_from_text_and_registry() -> None:
    reg = CollectorRegistry()
    metrics = RpcMetrics(registry=reg)
    metrics.observe_spans([_span("grpc_client", "Get", 0, 0.002)] * 3
                          + [_span("grpc_client", "Get", 14, 0.002)]
                          + [_span("grpc_server", "Get", 0, 0.001)] * 2
                          + [_span("http_client", "GET", 200, 0.01, "net/http"),
                             _span("http_client", "GET", 404, 0.01, "net/http"),
                             _span("http_client", "GET", 503, 0.01, "net/http"),
                             _span("http_server", "POST", 0, 0.02, "net/http")])
    metrics.set_attached(2)
    metrics.set_kernel_counts(5, {"grpc_client_unmatched_end": 3})
    from_registry = call_stats(reg.collect())
    from_text = call_stats(parse(generate_latest(reg).decode()))
    assert [(r.key, r.count, r.errors) for r in from_registry] == \
        [(r.key, r.count, r.errors) for r in from_text]
    got = {r.key: (r.count, r.errors) for r in from_text}
    assert got == {
        ("grpc client", "app", "demo.S/Get"): (4, 1),
        ("grpc server", "app", "demo.S/Get"): (2, 0),
        ("http client", "app", "GET 127.0.0.1:8443"): (3, 1),  # 404 is not an error, 503 is
        ("http server", "app", "POST 127.0.0.1:8443"): (1, 1),  # no response at all
    }
    h = health(reg.collect())
    assert (h.attached, h.drops, h.unmatched) == (2, 5, 3)


def _stats(count: float, errors: float, fast: float) -> list:
    """One gRPC row: `fast` of the calls under 1 ms, the rest under 10 ms."""
    reg = CollectorRegistry()
    metrics = RpcMetrics(registry=reg, buckets=(0.001, 0.01))
    spans = [_span("grpc_client", "M", 0, 0.0005)] * int(fast)
    spans += [_span("grpc_client", "M", 0, 0.005)] * int(count - fast - errors)
    spans += [_span("grpc_client", "M", 2, 0.005)] * int(errors)
    metrics.observe_spans(spans)
    return call_stats(reg.collect())


def test_rates_from_counter_deltas_quantiles_from_the_window() -> None:
    tracker = Tracker(window_s=10.0)
    (first,) = tracker.update(100.0, _stats(100, 0, 100))
    assert first.rate is None and first.total == 100  # one scrape: no rate yet
    assert not first.windowed and first.p50 < 0.001  # cumulative so far
    (row,) = tracker.update(102.0, _stats(140, 10, 100))  # 40 calls in 2 s, all slow
    assert row.rate == 20.0 and row.windowed
    assert row.error_pct == 25.0 and 0.001 < row.p50 < 0.01  # of the 40, not of all 140
    (idle,) = tracker.update(103.0, _stats(140, 10, 100))
    assert idle.rate == 0.0 and idle.windowed  # the window still holds the 40
    for t in range(104, 113):
        (idle,) = tracker.update(float(t), _stats(140, 10, 100))
    assert idle.rate == 0.0 and not idle.windowed  # nothing in the last 10 s: cumulative
    assert idle.p50 < 0.001 and idle.error_pct == pytest.approx(100 * 10 / 140)
    (reset,) = tracker.update(113.0, _stats(30, 0, 30))  # the agent restarted
    assert reset.rate == 30.0 and reset.windowed and reset.total == 30


def _row(method: str, rate: float | None, err: float) -> Row:
    return Row("grpc client", "app", method, rate, err, 0.001, 0.002, 10, True)


def test_sort_keys_and_reverse() -> None:
    rows = [_row("b", 5.0, 1.0), _row("a", None, 9.0), _row("c", 7.0, math.nan)]
    assert [r.method for r in sort_rows(rows, "rate")] == ["c", "b", "a"]
    assert [r.method for r in sort_rows(rows, "rate", reverse=True)] == ["b", "c", "a"]
    assert [r.method for r in sort_rows(rows, "err")] == ["a", "b", "c"]
    assert [r.method for r in sort_rows(rows, "method")] == ["a", "b", "c"]
    assert [r.method for r in sort_rows(rows, "method", reverse=True)] == ["c", "b", "a"]
    text = plain_table(sort_rows(rows, "rate")).splitlines()
    assert text[0].split() == ["side", "service", "method", "rate/s", "err%", "p50", "p99",
                               "calls"]
    assert text[1].split()[:6] == ["grpc", "client", "app", "c", "7.0", "-"]


@pytest.mark.parametrize(("argv", "says"), [
    ([], "nothing to trace"),
    (["--exe", "x", "--interval", "soon"], "--interval: 'soon' is not a duration"),
    (["--url", "http://127.0.0.1:1/metrics", "--exe", "x"], "--url reads a running agent"),
    (["--url", "ftp://h/metrics"], "--url: 'ftp://h/metrics' is not"),
    (["--url", "h:1", "--sort", "speed"], "--sort: 'speed' is not one of"),
    (["--exe", "x", "--ring-size", "3"], "--ring-size: must be a power of two"),
    (["--exe", "x", "--spans-out", "-"], "--spans-out: '-' (stdout) is top's screen"),
])
def test_bad_options_exit_2_with_one_line(argv: list[str], says: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyhttp2probe: error: ") and says in err


# -- in a terminal -------------------------------------------------------------------------

class Terminal:
    """`cmd` in a 160x40 tmux pane of a private tmux server; its exit code in a file."""

    def __init__(self, cmd: list[str], tmp: Path) -> None:
        self.name = f"top{os.getpid()}-{next(_sessions)}"
        self.rc_file = tmp / f"{self.name}.rc"
        shell = (f"cd {shlex.quote(str(ROOT))} && {shlex.join(cmd)}; "
                 f"echo $? > {shlex.quote(str(self.rc_file))}; sleep 300")
        self._tmux("new-session", "-d", "-s", self.name, "-x", "160", "-y", "40", shell)

    def _tmux(self, *args: str) -> str:
        # pytest exports COLUMNS=80 and LINES=24, which would win over the pane's real size
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run(["tmux", "-L", self.name, *args], check=True, env=env,
                              capture_output=True, text=True, timeout=10).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name)

    def press(self, key: str) -> None:
        self._tmux("send-keys", "-t", self.name, key)

    def wait_for(self, ok: Callable[[str], bool], timeout: float, what: str) -> str:
        """The first whole frame (the same on two reads: not one caught mid-redraw) that
        satisfies `ok`."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            assert "Traceback" not in text, text
            if ok(text):
                time.sleep(0.05)
                if self.screen() == text:
                    return text
                continue
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout}s; the screen:\n{text}")
            time.sleep(0.1)

    def exit_code(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while not self.rc_file.exists() or not self.rc_file.read_text().strip():
            assert time.monotonic() < deadline, f"still running:\n{self.screen()}"
            time.sleep(0.05)
        return int(self.rc_file.read_text())

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-session", "-t", self.name],
                       capture_output=True, timeout=10)


@contextmanager
def terminal(cmd: list[str], tmp: Path) -> Iterator[Terminal]:
    term = Terminal(cmd, tmp)
    try:
        yield term
    finally:
        term.close()


def top(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyhttp2probe", "top", *args]


def rows(screen: str) -> list[list[str]]:
    """[side, service, method, rate, err%, p50, p99, calls] of each table line."""
    return [re.split(r"\s{2,}", line.strip()) for line in screen.splitlines()
            if ROW.match(line)]


def shows_every_method_busy(screen: str) -> bool:
    busy = {r[2] for r in rows(screen) if len(r) == 8 and r[3] not in ("-", "0.0")}
    return busy >= set(METHODS)


def sorted_by(screen: str, column: int, numeric: bool, descending: bool) -> bool:
    values: list = [r[column] for r in rows(screen)]
    if numeric:
        values = [float(v.rstrip("%")) for v in values if v != "-"]
    return len(values) >= len(METHODS) and values == sorted(values, reverse=descending)


def _demo(tmp: Path, name: str) -> Path:
    path = tmp / name
    shutil.copy2(build(GoBuild(src="grpcdemo")), path)
    return path


def test_top_reads_a_running_agent_sorts_on_keys_and_quits() -> None:
    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        tmp = Path(d)
        binary = _demo(tmp, f"top{os.getpid()}-url")
        agent = stack.enter_context(AgentProcess(["--exe", binary.name]))
        wl = stack.enter_context(start_workload(binary, ["-duration", "6s", "-qps", "300",
                                                         "-hold"]))
        assert agent.wait_value("pyhttp2probe_attached_processes", 1) == 1
        url = f"{agent.url}/metrics"
        term = stack.enter_context(terminal(top("--url", url), tmp))
        wl.go()
        screen = term.wait_for(shows_every_method_busy, 20, "every demo method with a rate")
        assert url in screen and "health: attached 1" in screen
        assert "sort: rate/s ▼" in screen and sorted_by(screen, 3, True, True), screen

        term.press("s")
        screen = term.wait_for(lambda s: "sort: err% ▼" in s, 5, "sort by err%")
        assert sorted_by(screen, 4, True, True), screen
        for _ in range(6):  # p50, p99, calls, side, service, method
            term.press("s")
        screen = term.wait_for(lambda s: "sort: method ▲" in s, 5, "sort by method")
        assert sorted_by(screen, 2, False, False), screen
        term.press("r")
        screen = term.wait_for(lambda s: "sort: method ▼" in s, 5, "reversed")
        assert sorted_by(screen, 2, False, True), screen
        assert rows(screen)[0][2] == "demo.Store/Put"

        # not a terminal: one table after one interval, for scripts
        snap = subprocess.run(top("--url", url, "--interval", "0.5", "--sort", "method"),
                              capture_output=True, text=True, timeout=30)
        assert snap.returncode == 0, snap.stderr
        lines = snap.stdout.splitlines()
        assert lines[0].startswith(f"# {url}") and lines[1].split()[:3] == ["side", "service",
                                                                           "method"]
        assert {line.split()[3] for line in lines[2:]} == set(METHODS)

        term.press("q")
        assert term.exit_code() == 0
        wl.wait_done(30)
        wl.finish()


def test_top_attaches_itself_and_sees_a_program_started_after_it() -> None:
    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        tmp = Path(d)
        binary = _demo(tmp, f"top{os.getpid()}-attach")
        term = stack.enter_context(terminal(top("--exe", binary.name), tmp))
        term.wait_for(lambda s: "attached: 0 processes" in s and "starting:" not in s, 30,
                      "the agent ready")
        # 8 s of calls: on a cold machine the first attach also plans the binary from
        # scratch (no plan cache yet), which under a full suite's load can take seconds
        wl = stack.enter_context(start_workload(binary, ["-duration", "8s", "-qps", "300",
                                                         "-hold"]))
        wl.go()
        screen = term.wait_for(shows_every_method_busy, 20, "every demo method with a rate")
        assert "attached: 1 process " in screen and binary.name in screen
        term.press("q")
        assert term.exit_code() == 0
        wl.wait_done(30)
        wl.finish()  # detached on the way out: the program exits 0


def test_a_dead_url_is_a_message_and_top_keeps_retrying() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    with tempfile.TemporaryDirectory() as d, terminal(top("--url", url), Path(d)) as term:
        term.wait_for(lambda s: f"cannot read {url}: connection refused" in s, 10, "a message")
        term.wait_for(lambda s: "(failed 3x)" in s, 10, "retries")
        term.press("q")
        assert term.exit_code() == 0
