"""The three-service chain of tests/go/tracechain as processes, for the trace-structure
tests (tests/test_traces.py) and benchmarks: service C, service B (whose handlers call C),
clients A (traced) and D (untraced: run from a file the agent does not select) calling B.
Each role is a process of its own, started from a private copy of the binary named after
its service (OTEL_SERVICE_NAME is set too), so the agent's service.name tells them apart.

    names = ChainNames.of("chain-123", untraced="plain-123")
    with ChainServers(tmp, names) as servers:
        wait_traced([names.c, names.b])                     # e.g. the agent's metrics
        servers.go()
        clients = run_clients(tmp, [Client(names.a, "a", servers.b_addr),
                                    Client(names.d, "d", servers.b_addr)],
                              wait_traced=wait_traced)
        b_rows, c_rows = servers.stop()
    assert not truth_problems(clients[names.a] + clients[names.d], b_rows, c_rows)

Truth rows: see tests/go/tracechain/main.go. A client row's "tree" is the complete expected
tree of spans below and including its own client span: nodes {role, side, method, kind,
code, children}, roles a, b, c, d.
"""

from __future__ import annotations

import collections
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from testkit.gobuild import GoBuild, build
from testkit.workload import Workload, read_truth, start_workload

WaitTraced = Callable[[Sequence[str]], None]


def chain_binary() -> Path:
    """The tracechain binary (built on first use, cached by content)."""
    return build(GoBuild(src="tracechain"))


def install(directory: Path, name: str) -> Path:
    """A private copy of the binary named `name`: the agent selects processes by file name,
    and a file of its own keeps each role's probes (and traps) its own."""
    path = directory / name
    if not path.exists():
        shutil.copy2(chain_binary(), path)
    return path


@dataclass(frozen=True)
class ChainNames:
    """The service names of one chain; each is also its binary's file name."""

    a: str
    b: str
    c: str
    d: str

    @classmethod
    def of(cls, traced: str, untraced: str) -> ChainNames:
        """A, B, C named `<traced>-a` … (select them with --exe '<traced>-*'); D named
        `<untraced>-d`, which that pattern must not match."""
        return cls(a=f"{traced}-a", b=f"{traced}-b", c=f"{traced}-c", d=f"{untraced}-d")

    def role_of(self) -> dict[str, str]:
        """Service name -> role."""
        return {self.a: "a", self.b: "b", self.c: "c", self.d: "d"}


class ChainServers:
    """C and B running, serving from the moment this returns (addresses in c_addr and
    b_addr); stop() ends them gracefully and returns their truth rows (B's, C's)."""

    def __init__(self, tmp: Path, names: ChainNames, c_conns: int = 1) -> None:
        self.tmp, self.names = tmp, names
        self._wls: list[Workload] = []
        try:
            self.c_addr = self._start(names.c, ["-role", "c"])
            self.b_addr = self._start(names.b, ["-role", "b", "-c", self.c_addr,
                                                "-c-conns", str(c_conns)])
        except BaseException:
            self.kill()
            raise

    def _start(self, name: str, args: list[str]) -> str:
        ready = self.tmp / f"{name}.addr"
        ready.unlink(missing_ok=True)
        wl = start_workload(install(self.tmp, name),
                            [*args, "-listen", "127.0.0.1:0", "-ready", ready,
                             "-truth", self.tmp / f"{name}.jsonl", "-hold"],
                            env={"OTEL_SERVICE_NAME": name})
        self._wls.append(wl)
        return ready.read_text().strip()  # written before READY

    @property
    def pids(self) -> list[int | None]:
        return [wl.pid for wl in self._wls]

    def go(self) -> None:
        """Past the -wait-start line: from now on the next stdin line or EOF stops them."""
        for wl in self._wls:
            wl.go()

    def stop(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """B first (its handlers finish their calls to C), then C; their truth rows."""
        for wl in reversed(self._wls):
            wl.go()
            wl.finish()
        return (read_truth(self.tmp / f"{self.names.b}.jsonl"),
                read_truth(self.tmp / f"{self.names.c}.jsonl"))

    def kill(self) -> None:
        for wl in self._wls:
            wl.kill()

    def __enter__(self) -> ChainServers:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()  # no-op after stop()


@dataclass(frozen=True)
class Client:
    """One client process: `name` is its service and file name, `role` "a" or "d" (the
    same code; D is untraced only because the agent does not select its file)."""

    name: str
    role: str
    b_addr: str
    calls: int = 100
    concurrency: int = 8
    conns: int = 2
    seed: int = 1
    traceparent: float = 0.5  # fraction of calls sending a W3C traceparent
    fanout: float = 0.0  # fraction of calls with 2+ children that B makes concurrently

    def args(self, truth: Path) -> list[str]:
        return ["-role", self.role, "-name", self.name, "-b", self.b_addr,
                "-calls", str(self.calls), "-concurrency", str(self.concurrency),
                "-conns", str(self.conns), "-seed", str(self.seed),
                "-traceparent", str(self.traceparent), "-fanout", str(self.fanout),
                "-truth", str(truth), "-hold"]


def run_clients(tmp: Path, clients: Sequence[Client], wait_traced: WaitTraced | None = None,
                timeout: float = 120.0) -> dict[str, list[dict[str, Any]]]:
    """Start every client, let wait_traced (given the names of the role-"a" ones) wait for
    the agent to trace them, then run them all at once to their end. Truth rows by name."""
    wls: list[Workload] = []
    try:
        for c in clients:
            wls.append(start_workload(install(tmp, c.name), c.args(tmp / f"{c.name}.jsonl"),
                                      env={"OTEL_SERVICE_NAME": c.name}))
        if wait_traced is not None:
            wait_traced([c.name for c in clients if c.role == "a"])
        for wl in wls:
            wl.go()
        for wl in wls:
            wl.wait_done(timeout)
        for wl in wls:
            wl.finish()
    finally:
        for wl in wls:
            wl.kill()
    return {c.name: read_truth(tmp / f"{c.name}.jsonl") for c in clients}


def truth_problems(client_rows: Sequence[dict[str, Any]], b_rows: Sequence[dict[str, Any]],
                   c_rows: Sequence[dict[str, Any]]) -> list[str]:
    """What the workload did that its plan did not say (nothing, when it is right): every
    client call got its expected code; B served each call once, received its traceparent,
    returned the planned code and made the planned calls with the planned outcomes; C served
    each of those once. The tree of a client row is then the whole truth of its call."""
    out: list[str] = []
    b_by = collections.defaultdict(list)
    for r in b_rows:
        b_by[r["call"]].append(r)
    c_by = collections.defaultdict(list)
    for r in c_rows:
        c_by[r["call"]].append(r)
    seen_b: set[str] = set()
    seen_c: set[str] = set()
    for r in client_rows:
        call = r["call"]
        if r["code"] != r["expected_code"]:
            out.append(f"{call}: code {r['code']}, planned {r['expected_code']}")
        bs = b_by.get(call, [])
        if len(bs) != 1:
            out.append(f"{call}: B served it {len(bs)} times")
            continue
        seen_b.add(call)
        b = bs[0]
        tp = r["traceparent"]
        sent = f"00-{tp['trace_id']}-{tp['parent_id']}-01" if tp else ""
        if b["traceparent"] != sent:
            out.append(f"{call}: B received traceparent {b['traceparent']!r}, sent {sent!r}")
        want_b = r["tree"]["children"][0]
        if (b["method"], b["code"]) != (want_b["method"], want_b["code"]) or b["plan_call"] != call:
            out.append(f"{call}: B served {b['method']} -> {b['code']}, planned "
                       f"{want_b['method']} -> {want_b['code']}")
        got_kids = [(k["method"], k["code"]) for k in b["children"]]
        want_kids = [(k["method"], k["code"]) for k in want_b["children"]]
        if got_kids != want_kids:
            out.append(f"{call}: B's calls to C {got_kids}, planned {want_kids}")
        for k in b["children"]:
            cs = c_by.get(k["call"], [])
            if len(cs) != 1 or (cs[0]["method"], cs[0]["code"]) != (k["method"], k["code"]):
                out.append(f"{k['call']}: C served it as {[(c['method'], c['code']) for c in cs]}"
                           f", B saw {k['method']} -> {k['code']}")
            seen_c.add(k["call"])
    out += [f"{call}: B served a call no client made" for call in b_by.keys() - seen_b]
    out += [f"{call}: C served a call B did not make" for call in c_by.keys() - seen_c]
    return out
