"""Trace structure end to end (issue 13). A real trace backend, Jaeger, receives the agent's
OTLP spans of a chain of three services on this host and is queried through its own HTTP
API: client A calls B, B's handlers call C with their own context (0..3 calls each, unary
and server-streaming, some errors, some of C's errors handed back by B), in sequence or
fanned out on goroutines; an untraced client D calls B too. For about half of their calls
A and D send a W3C traceparent. Every RPC must appear once per traced side, under the span
of the call that made it, one to one with the ground truth the workload writes
(tests/go/tracechain, testkit/chain.py):

- A's client span is a root of a fresh trace, or, when A sent a traceparent, in the sent
  trace with the sent parent id as its parent;
- B's server span is the child of A's client span (or of D's sent parent, in D's trace;
  a root when D sent none); each of B's calls to C is the child of B's server span of the
  request whose handler made it; C's server span is the child of that call's client span;
- one trace per call of A, every span of the call in it, nothing else in it.

Everything runs once per module (fixture `run`): Jaeger, the agent, two chains side by side
(one with sequential children, one whose B fans its children out), then the clients,
K goroutines each. The tests read that one run from different sides."""

from __future__ import annotations

import collections
import json
import os
import tempfile
import time
import urllib.error
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testkit.agentproc import AgentProcess
from testkit.chain import (
    ChainNames,
    ChainServers,
    Client,
    chain_binary,
    run_clients,
    truth_problems,
)
from testkit.jaeger import Jaeger, jaeger_binary

PREFIX = f"chain{os.getpid()}"
PLAIN = ChainNames.of(PREFIX, untraced=f"untraced{os.getpid()}")
FAN = ChainNames.of(f"{PREFIX}-fan", untraced=f"untraced{os.getpid()}-fan")  # no D runs
INSTRUMENTED = "pyhttp2probe_instrumented_processes"
# The parent and child of one RPC run in two processes: the server's span may start a
# little before the client's (the client's start is read when NewStream returns, after
# the headers are queued). Within one process a child is strictly inside its parent
# (Jaeger keeps microseconds: a few of rounding).
CROSS_PROCESS_US = 2000
SAME_PROCESS_US = 5
SHOW = 4  # examples shown per kind of difference

# (role, kind) of a span -> (role, kind) its parent must have, when it has one exported
PARENT_OF = {("b", "server"): ("a", "client"), ("b", "client"): ("b", "server"),
             ("c", "server"): ("b", "client")}
CHILDREN_OF = {("a", "client"): 1, ("b", "client"): 1, ("c", "server"): 0}  # exact counts

Shape = tuple[Any, ...]  # (role, kind, method, code, (child shapes, sorted))


# -- spans as Jaeger shows them ------------------------------------------------------------
@dataclass(eq=False)
class Sp:
    """One exported span, linked to its children."""

    id: str
    trace: str
    parents: list[tuple[str, str]]  # (trace id, span id) of each CHILD_OF reference
    service: str
    role: str
    kind: str
    method: str
    code: int
    start_us: int
    end_us: int
    raw: dict[str, Any]
    children: list[Sp] = field(default_factory=list)

    @property
    def parent(self) -> str:
        return self.parents[0][1] if self.parents else ""

    def __repr__(self) -> str:
        parent = f" parent {self.parent}" if self.parent else " root"
        return (f"<{self.role}:{self.kind} {short(self.method)}={self.code} span {self.id} "
                f"trace {self.trace}{parent}>")


def short(method: str) -> str:
    return method.removeprefix("/tracechain.")


def _sp(raw: dict[str, Any], role_of: dict[str, str]) -> Sp:
    tags = raw["tagmap"]
    service = raw["process"]["serviceName"]
    return Sp(id=raw["spanID"].zfill(16), trace=raw["traceID"].zfill(32),
              parents=[(r["traceID"].zfill(32), r["spanID"].zfill(16))
                       for r in raw["references"] if r["refType"] == "CHILD_OF"],
              service=service, role=role_of[service], kind=tags["span.kind"][1],
              method=f"/{tags['rpc.service'][1]}/{tags['rpc.method'][1]}",
              code=int(tags["rpc.grpc.status_code"][1]), start_us=raw["startTime"],
              end_us=raw["startTime"] + raw["duration"], raw=raw)


def link(spans: Sequence[Sp]) -> dict[str, Sp]:
    """Spans by id, each with its exported children."""
    by_id = {s.id: s for s in spans}
    for s in spans:
        if s.parent in by_id:
            by_id[s.parent].children.append(s)
    return by_id


def shape(s: Sp) -> Shape:
    return (s.role, s.kind, s.method, s.code, tuple(sorted(shape(c) for c in s.children)))


def truth_shape(node: dict[str, Any]) -> Shape:
    return (node["role"], node["side"], node["method"], node["code"],
            tuple(sorted(truth_shape(c) for c in node["children"])))


def render(sh: Shape) -> str:
    role, kind, method, code, kids = sh
    text = f"{role}:{kind} {short(method)}={code}"
    return f"{text} [{', '.join(render(k) for k in kids)}]" if kids else text


def tree_spans(s: Sp) -> Iterator[Sp]:
    yield s
    for c in s.children:
        yield from tree_spans(c)


class Problems:
    """Differences found, by kind; report() shows how many of each and a few examples."""

    def __init__(self) -> None:
        self.by: dict[str, list[str]] = collections.defaultdict(list)

    def add(self, kind: str, example: str) -> None:
        self.by[kind].append(example)

    def __bool__(self) -> bool:
        return bool(self.by)

    def report(self, title: str) -> str:
        lines = [title]
        for kind, examples in self.by.items():
            lines.append(f"- {kind}: {len(examples)}")
            lines += [f"    {e}" for e in examples[:SHOW]]
        return "\n".join(lines)


# -- the run ------------------------------------------------------------------------------
@dataclass
class ChainRun:
    names: ChainNames
    clients: dict[str, list[dict[str, Any]]]  # truth rows by role: "a", "d"
    servers: tuple[list[dict[str, Any]], list[dict[str, Any]]]  # truth rows of B, of C
    spans: list[Sp]  # exported spans of this chain's services
    by_id: dict[str, Sp]


@dataclass
class Run:
    plain: ChainRun
    fan: ChainRun
    exported: int  # what the agent says it exported
    services: list[str]  # what Jaeger knows


def _closed_log(stderr: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in stderr.splitlines()
             if '"otlp export closed"' in line]
    assert len(lines) == 1, stderr[-4000:]
    return lines[0]


def _jaeger_spans(jaeger: Jaeger, services: Sequence[str], want: int,
                  timeout: float = 30.0) -> list[dict[str, Any]]:
    """Distinct spans of `services`, polled until there are `want` (Jaeger shows a span
    about 1.5 s after it took it) or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        got: dict[str, dict[str, Any]] = {}
        for service in services:
            try:
                spans = jaeger.spans(service)
            except urllib.error.HTTPError:  # not known to Jaeger (yet)
                spans = []
            for s in spans:  # a trace of `service` holds other services' spans too
                if s["process"]["serviceName"] in services:
                    got[s["spanID"]] = s
        if len(got) >= want or time.monotonic() > deadline:
            return list(got.values())
        time.sleep(0.3)


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    jaeger_binary()  # built (or found) before the clock starts: its build is not the test's
    chain_binary()
    with tempfile.TemporaryDirectory() as tmpdir, Jaeger() as jaeger:
        tmp = Path(tmpdir)
        with AgentProcess(["--exe", f"{PREFIX}-*",
                           "--otlp-endpoint", jaeger.otlp_url]) as agent:

            def wait_traced(names: Sequence[str]) -> None:
                for name in names:
                    got = agent.wait_value(INSTRUMENTED, 1, timeout=30, service_name=name)
                    assert got == 1, f"the agent does not trace {name}"

            with ChainServers(tmp, PLAIN) as plain, ChainServers(tmp, FAN) as fan:
                wait_traced([PLAIN.c, PLAIN.b, FAN.c, FAN.b])
                plain.go()
                fan.go()
                rows = run_clients(tmp, [
                    Client(PLAIN.a, "a", plain.b_addr, calls=300, concurrency=8),
                    Client(PLAIN.d, "d", plain.b_addr, calls=100, concurrency=4, seed=2),
                    Client(FAN.a, "a", fan.b_addr, calls=150, concurrency=8, seed=3,
                           fanout=1.0),
                ], wait_traced=wait_traced)
                plain_truth, fan_truth = plain.stop(), fan.stop()
            # SIGTERM: the agent drains and flushes what is queued before it exits
            assert agent.stop() == 0, agent.stderr[-4000:]
        exported = _closed_log(agent.stderr)["exported"]
        ours = [PLAIN.a, PLAIN.b, PLAIN.c, FAN.a, FAN.b, FAN.c]
        raw = _jaeger_spans(jaeger, ours, exported)
        services = jaeger.services()
    for (b_rows, c_rows), client_rows in ((plain_truth, rows[PLAIN.a] + rows[PLAIN.d]),
                                          (fan_truth, rows[FAN.a])):
        wrong = truth_problems(client_rows, b_rows, c_rows)
        assert not wrong, "the workload did not run its plan:\n" + "\n".join(wrong[:20])

    yield Run(plain=chain_run(PLAIN, {"a": rows[PLAIN.a], "d": rows[PLAIN.d]}, plain_truth,
                              raw),
              fan=chain_run(FAN, {"a": rows[FAN.a], "d": []}, fan_truth, raw),
              exported=exported, services=services)


def chain_run(names: ChainNames, clients: dict[str, list[dict[str, Any]]],
              servers: tuple[list[dict[str, Any]], list[dict[str, Any]]],
              raw: Sequence[dict[str, Any]]) -> ChainRun:
    """One chain's truth and its spans among Jaeger's `raw` ones, linked."""
    role_of = names.role_of()
    spans = [_sp(s, role_of) for s in raw if s["process"]["serviceName"] in role_of]
    return ChainRun(names, clients, servers, spans, link(spans))


# -- what the truth says ------------------------------------------------------------------
def traced_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The nodes of a truth tree that are spans of traced processes (all but D's)."""
    if node["role"] != "d":
        yield node
    for c in node["children"]:
        yield from traced_nodes(c)


def expected_tree(row: dict[str, Any]) -> dict[str, Any]:
    """The part of a client row's tree the agent sees: all of it for A, below D's own
    (untraced) client call for D."""
    return row["tree"] if row["role"] == "a" else row["tree"]["children"][0]


# -- checks -------------------------------------------------------------------------------
def call_tree_problems(chain: ChainRun, rows: Sequence[dict[str, Any]], tops: Sequence[Sp],
                       root: str) -> Problems:
    """Each client call of `rows` against the exported trees topped by `tops` (named
    `root`): A's client spans for A's calls, B's server spans for D's. Found by the sent
    trace id when the call sent a traceparent (its parent must be the sent parent id), else
    among the roots, as a multiset of shapes. Every span of a call's tree is in the call's
    trace, nothing else is, and no two calls share a trace."""
    p = Problems()
    by_trace: dict[str, list[Sp]] = collections.defaultdict(list)
    for s in tops:
        by_trace[s.trace].append(s)
    in_trace: dict[str, list[Sp]] = collections.defaultdict(list)
    for s in chain.spans:
        in_trace[s.trace].append(s)
    sent = {r["traceparent"]["trace_id"] for r in rows if r["traceparent"]}
    found: list[tuple[dict[str, Any], Sp]] = []
    for r in rows:
        tp = r["traceparent"]
        if not tp:
            continue
        want = truth_shape(expected_tree(r))
        got = by_trace.get(tp["trace_id"], [])
        if len(got) != 1:
            p.add(f"calls that sent a traceparent without exactly one {root} span in the "
                  f"sent trace",
                  f"{r['call']} trace {tp['trace_id']}: {got or 'none'}; want {render(want)}")
            continue
        top = got[0]
        found.append((r, top))
        if top.parent != tp["parent_id"]:
            p.add(f"{root} spans in a sent trace whose parent is not the sent parent id",
                  f"{r['call']}: {top}, sent parent {tp['parent_id']}")
        if shape(top) != want:
            p.add("calls that sent a traceparent whose tree differs from the truth",
                  f"{r['call']}:\n      want {render(want)}\n      got  {render(shape(top))}")
    # the calls that sent none: their trees are roots, in traces no call sent
    loose = [s for s in tops if s.trace not in sent]
    for s in loose:
        if s.parents:
            p.add(f"{root} spans with a parent though their call sent no traceparent",
                  f"{s}")
    want_roots = collections.Counter(truth_shape(expected_tree(r)) for r in rows
                                     if not r["traceparent"])
    got_roots = collections.Counter(shape(s) for s in loose if not s.parents)
    for sh, n in (want_roots - got_roots).items():
        p.add("trees of calls without a traceparent missing from the roots",
              f"{n}x {render(sh)}")
    for sh, n in (got_roots - want_roots).items():
        p.add("root trees that no call without a traceparent made", f"{n}x {render(sh)}")
    found += [({"call": "(no traceparent)"}, s) for s in loose if not s.parents]
    # one trace per call, holding its tree and nothing else
    traces = collections.Counter(top.trace for _, top in found)
    for trace, n in traces.items():
        if n > 1:
            p.add("traces shared by several calls", f"trace {trace}: {n} calls")
    for r, top in found:
        tree = list(tree_spans(top))
        if any(s.trace != top.trace for s in tree):
            p.add("calls whose spans are not all in one trace",
                  f"{r['call']}: {[s for s in tree if s.trace != top.trace]}")
        outside = [s for s in in_trace[top.trace] if s not in tree]
        if outside and traces[top.trace] == 1:
            p.add("traces holding spans outside their call's tree",
                  f"{r['call']} trace {top.trace}: {outside}")
    return p


def parent_problems(chain: ChainRun) -> Problems:
    """Every exported span against the only parents it may have: B's server span under A's
    client span (or D's sent parent, or none when D sent none), B's calls under B's server
    span, C's server span under B's call to it; A's client span a root or under A's sent
    parent. Same trace as the parent; inside its time; the right number of children."""
    p = Problems()
    sent = {r["traceparent"]["parent_id"]: (r["role"], r["traceparent"]["trace_id"])
            for rows in chain.clients.values() for r in rows if r["traceparent"]}
    roots: collections.Counter[tuple[str, str]] = collections.Counter()
    for s in chain.spans:
        key = (s.role, s.kind)
        if len(s.parents) > 1:
            p.add("spans with several parents", f"{s}: {s.parents}")
        parent = chain.by_id.get(s.parent)
        if not s.parents:
            roots[key] += 1
        elif parent is None:
            role, trace = sent.get(s.parent, ("", ""))
            ok = {("a", "client"): "a", ("b", "server"): "d"}.get(key)
            if role != ok or trace != s.trace:
                p.add("spans whose parent is neither exported nor the traceparent their "
                      "caller sent", f"{s}")
        elif (parent.role, parent.kind) != PARENT_OF.get(key):
            want = PARENT_OF.get(key)
            p.add(f"{key[0]}:{key[1]} spans under a {parent.role}:{parent.kind} span "
                  f"(want {'no exported parent' if want is None else ':'.join(want)})",
                  f"{s} under {parent}")
        else:
            if parent.trace != s.trace or s.parents[0][0] != s.trace:
                p.add("spans in another trace than their parent", f"{s} under {parent}")
            tol = SAME_PROCESS_US if parent.service == s.service else CROSS_PROCESS_US
            if s.start_us < parent.start_us - tol or s.end_us > parent.end_us + tol:
                p.add("spans not inside their parent's time",
                      f"{s} [{s.start_us}, {s.end_us}] under {parent} "
                      f"[{parent.start_us}, {parent.end_us}]")
        if key in CHILDREN_OF and len(s.children) != CHILDREN_OF[key]:
            p.add(f"{key[0]}:{key[1]} spans without exactly {CHILDREN_OF[key]} children",
                  f"{s}: {s.children}")
    # roots: A's calls without a traceparent, B's server spans of D's calls without one
    want_roots = collections.Counter({
        ("a", "client"): sum(not r["traceparent"] for r in chain.clients["a"]),
        ("b", "server"): sum(not r["traceparent"] for r in chain.clients["d"])})
    for key in want_roots.keys() | roots.keys():
        if roots[key] != want_roots[key]:
            p.add("roots, by kind of span, not as many as the calls that sent no traceparent",
                  f"{key[0]}:{key[1]}: {roots[key]} roots, want {want_roots[key]}")
    return p


# -- the tests ----------------------------------------------------------------------------
def test_every_rpc_of_the_chain_is_exported_once_per_traced_side(run: Run) -> None:
    """Counts and attributes, structure aside: (service, kind, method, code) of Jaeger's
    spans equal the truth's, for both chains; what the agent exported is all Jaeger holds;
    nothing of the untraced client D."""
    total = 0
    for chain in (run.plain, run.fan):
        name_of = {v: k for k, v in chain.names.role_of().items()}
        want = collections.Counter(
            (name_of[n["role"]], n["side"], n["method"], n["code"])
            for rows in chain.clients.values() for r in rows for n in traced_nodes(r["tree"]))
        got = collections.Counter((s.service, s.kind, s.method, s.code) for s in chain.spans)
        assert got == want, (f"exported spans differ from the truth; missing: "
                             f"{dict(want - got)}; extra: {dict(got - want)}")
        kinds = {k[1] for k in want}
        assert kinds == {"client", "server"} and {k[3] for k in want} > {0}, want
        for s in chain.spans:
            tags = s.raw["tagmap"]
            assert tags["rpc.system"] == ("string", "grpc"), s.raw
            assert tags["rpc.grpc.status_code"][0] == "int64", s.raw
            assert s.raw["operationName"] == s.method[1:], s.raw
        total += sum(want.values())
    assert run.exported == total, f"the agent exported {run.exported} spans, the truth has {total}"
    assert PLAIN.d not in run.services, run.services
    streams = sum(r["kind"] == "server_stream" for r in run.plain.clients["a"])
    assert 0 < streams < len(run.plain.clients["a"])


def test_every_span_hangs_under_the_span_of_its_caller_in_the_same_trace(run: Run) -> None:
    reports = [p.report(f"{chain.names.a} -> {chain.names.b} -> {chain.names.c}: spans "
                        f"under a wrong parent (or none)")
               for chain in (run.plain, run.fan) if (p := parent_problems(chain))]
    assert not reports, "\n".join(reports)


def test_each_call_of_a_traced_client_is_one_trace_with_the_tree_its_truth_has(
        run: Run) -> None:
    rows = run.plain.clients["a"]
    assert 0 < sum(bool(r["traceparent"]) for r in rows) < len(rows)
    tops = [s for s in run.plain.spans if (s.role, s.kind) == ("a", "client")]
    p = call_tree_problems(run.plain, rows, tops, "a:client")
    assert not p, p.report(f"{len(rows)} calls of A ({PLAIN.a}, 8 goroutines): traces "
                           f"differ from the truth")


def test_an_untraced_clients_traceparent_is_the_parent_of_the_servers_span(run: Run) -> None:
    rows = run.plain.clients["d"]
    assert 0 < sum(bool(r["traceparent"]) for r in rows) < len(rows)
    # B's server spans not under an exported span: D's calls' (A's calls' are under A's)
    tops = [s for s in run.plain.spans if (s.role, s.kind) == ("b", "server")
            and s.parent not in run.plain.by_id]
    p = call_tree_problems(run.plain, rows, tops, "b:server")
    assert not p, p.report(f"{len(rows)} calls of the untraced client D: B's server spans "
                           f"not under an exported span differ from the truth")


def test_calls_fanned_out_on_goroutines_hang_under_the_handlers_span(run: Run) -> None:
    rows = run.fan.clients["a"]
    fanned = sum(r["fanout"] for r in rows)
    assert fanned > 20, f"only {fanned} calls fanned out"
    tops = [s for s in run.fan.spans if (s.role, s.kind) == ("a", "client")]
    p = call_tree_problems(run.fan, rows, tops, "a:client")
    assert not p, p.report(f"{len(rows)} calls of A ({FAN.a}), {fanned} of them fanned out "
                           f"by B on goroutines: traces differ from the truth")


# -- the checks against the truth itself ---------------------------------------------------
def truth_as_jaeger(chain: ChainRun) -> list[dict[str, Any]]:
    """The spans a perfect agent would export for this chain's truth, as Jaeger shows them
    (ids, CHILD_OF references, times in µs from the workload's own CLOCK_MONOTONIC
    readings: the client's around its call, the handler's entry and exit)."""
    b_rows, c_rows = chain.servers
    b_by = {r["call"]: r for r in b_rows}
    c_by = {r["call"]: r for r in c_rows}
    out: list[dict[str, Any]] = []

    def span(service: str, kind: str, method: str, code: int, trace: str, parent: str,
             start_ns: int, end_ns: int) -> str:
        sid = os.urandom(8).hex()
        svc, name = method[1:].split("/")
        out.append({
            "spanID": sid, "traceID": trace, "operationName": method[1:],
            "references": [{"refType": "CHILD_OF", "traceID": trace, "spanID": parent}]
            if parent else [],
            "startTime": start_ns // 1000, "duration": (end_ns - start_ns) // 1000,
            "process": {"serviceName": service},
            "tagmap": {"span.kind": ("string", kind), "rpc.system": ("string", "grpc"),
                       "rpc.service": ("string", svc), "rpc.method": ("string", name),
                       "rpc.grpc.status_code": ("int64", code)}})
        return sid

    for rows in chain.clients.values():
        for r in rows:
            tp = r["traceparent"]
            trace, parent = (tp["trace_id"], tp["parent_id"]) if tp else (os.urandom(16).hex(), "")
            if r["role"] == "a":
                parent = span(chain.names.a, "client", r["method"], r["code"], trace, parent,
                              r["start_ns"], r["end_ns"])
            b = b_by[r["call"]]
            bs = span(chain.names.b, "server", b["method"], b["code"], trace, parent,
                      b["start_ns"], b["end_ns"])
            for k in b["children"]:
                bc = span(chain.names.b, "client", k["method"], k["code"], trace, bs,
                          k["start_ns"], k["end_ns"])
                c = c_by[k["call"]]
                span(chain.names.c, "server", c["method"], c["code"], trace, bc,
                     c["start_ns"], c["end_ns"])
    return out


def _all_problems(chain: ChainRun) -> dict[str, list[str]]:
    a_tops = [s for s in chain.spans if (s.role, s.kind) == ("a", "client")]
    d_tops = [s for s in chain.spans if (s.role, s.kind) == ("b", "server")
              and s.parent not in chain.by_id]
    found: dict[str, list[str]] = {}
    for p in (parent_problems(chain),
              call_tree_problems(chain, chain.clients["a"], a_tops, "a:client"),
              call_tree_problems(chain, chain.clients["d"], d_tops, "b:server")):
        found.update(p.by)
    return found


def test_the_checks_pass_the_truth_itself_and_catch_misplaced_spans(run: Run) -> None:
    """The oracle, checked: the spans a perfect agent would export pass every check above
    (also their time containment, on the workload's own clock); children swapped between
    two calls, a child moved into another call's trace, a server span cut from its client,
    a span in another trace than its parent, a lost span and a duplicated one are each
    caught."""
    for chain in (run.plain, run.fan):
        raw = truth_as_jaeger(chain)
        perfect = chain_run(chain.names, chain.clients, chain.servers, raw)
        assert not _all_problems(perfect), _all_problems(perfect)

    chain = run.plain
    raw = truth_as_jaeger(chain)
    spans = chain_run(chain.names, chain.clients, chain.servers, raw)
    c_servers = [s for s in spans.spans if (s.role, s.kind) == ("c", "server")]
    # two C server spans of different methods, in different calls
    x = c_servers[0]
    y = next(s for s in c_servers if s.method != x.method and s.trace != x.trace)
    a_client = next(s for s in spans.spans if (s.role, s.kind) == ("a", "client"))
    b_server = a_client.children[0]
    b_client = next(s for s in spans.spans if (s.role, s.kind) == ("b", "client"))

    def mutated(change: Any) -> dict[str, list[str]]:
        copy = json.loads(json.dumps(raw))
        by_id = {s["spanID"]: s for s in copy}
        change(by_id)
        return _all_problems(chain_run(chain.names, chain.clients, chain.servers,
                                       list(by_id.values())))

    def swap(by_id: dict[str, Any]) -> None:
        by_id[x.id]["references"], by_id[y.id]["references"] = (
            by_id[y.id]["references"], by_id[x.id]["references"])

    def move(by_id: dict[str, Any]) -> None:  # x wholly into y's call: its trace too
        by_id[x.id]["references"] = by_id[y.id]["references"]
        by_id[x.id]["traceID"] = by_id[y.id]["traceID"]

    def cut(by_id: dict[str, Any]) -> None:
        by_id[b_server.id]["references"] = []

    def other_trace(by_id: dict[str, Any]) -> None:
        by_id[b_client.id]["traceID"] = "f" * 32

    def lose(by_id: dict[str, Any]) -> None:
        del by_id[x.id]

    def duplicate(by_id: dict[str, Any]) -> None:
        by_id["0" * 15 + "1"] = {**by_id[x.id], "spanID": "0" * 15 + "1"}

    for change, want in ((swap, ("tree differs", "missing from the roots")),
                         (move, ("tree differs", "missing from the roots")),
                         (cut, ("roots, by kind of span",)),
                         (other_trace, ("in another trace",)),
                         (lose, ("without exactly 1",)), (duplicate, ("without exactly 1",))):
        found = mutated(change)
        assert any(w in kind for kind in found for w in want), (change.__name__, found)
