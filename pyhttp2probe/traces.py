"""Spans joined into traces, without writing anything into the traced programs.

The agent sees each RPC's two ends as two spans; a trace needs each span's parent. Three
joins, all from what the probes read (bpf_src/trace_ctx.h), none by goroutine tracking:

1. traceparent: a server span whose request carried a W3C `traceparent` (gRPC metadata) is
   a child of the span it names, in its trace.
2. context: a client call made while serving a request — its Go context descends from that
   request's, as it does when a handler passes its ctx on — is a child of that server span:
   both spans carry the same request-context pointer (`Span.context`), in one process, and
   the call starts inside the server span's time.
3. connection: when both ends of one RPC are traced by this agent (two services on one node,
   or a process calling itself), the server span is a child of the client span: the same
   connection seen from both ends (client ip:port, server ip:port) and the same stream id,
   the server's start inside the client's time. A connection's addresses can be reused only
   after it closed (and TIME_WAIT), and stream ids restart with it: the time containment
   tells the two apart. Both ends must be on this node, so this join is per node.
Otherwise a span is a root of a new trace (a fresh random trace id).

A client span that could be the parent of a server span of ours gets its trace from what
that server received (a traceparent) when there is one; records of one drain pass arrive
ring by ring (clients before servers), so such a client span becomes a root only at
flush(), which the agent calls once every ring of a pass is in.

Parents usually end after their children (a server span after the calls its handler made; a
client span after the server span it called), so a span waits here until its parent has
ended, been given ids, and reached the sinks, bounded: a client call known to run under a
server request waits up to `max_wait_s` for that span; a server span whose client may be a
traced process on this node waits up to `conn_wait_s` for it. Then it goes on as a root (or
under its traceparent). Spans reach the sinks in batches, parents before their children.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .sinks import SpanSink
from .spans import Span

DEFAULT_MAX_WAIT_S = 30.0  # a call under a server request: that request's longest wait
DEFAULT_CONN_WAIT_S = 2.0  # a server span whose client may be traced here
DEFAULT_MAX_PENDING = 100_000  # spans waiting; past it the oldest go on as roots
# Ended spans stay findable this long, for a counterpart ending later than usual (a call
# outliving its handler; a server finishing after its client gave up). Bounds memory: at
# 20k spans/s, ~60k small nodes.
_KEEP_S = 3.0
_UNTRACED_MAX = 65536  # connections remembered as having an untraced client
_LATE_SERVER_NS = 1_000_000_000  # an abandoned call's server start after the client's end
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}\Z")
_LOOPBACK = ("127.", "::1", "::ffff:127.")


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """(trace id, parent span id) of a version-00 W3C traceparent; None if invalid (bad
    shape, or an all-zero id, which the spec says to ignore)."""
    m = _TRACEPARENT.match(value.rstrip("\0"))
    if not m or m[1] == "0" * 32 or m[2] == "0" * 16:
        return None
    return m[1], m[2]


@dataclass(eq=False, slots=True)
class _Node:
    span: Span
    arrived: float  # time.monotonic()
    deadline: float = 0.0  # waits for a parent until then (0: not waiting)
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)
    resolved: bool = False


def _is_server(s: Span) -> bool:
    return s.kind.endswith("_server")


def _conn_key(s: Span) -> tuple[str, int, str, int, int]:
    return (s.client_address, s.client_port, s.server_address, s.server_port, s.stream_id)


class TraceJoiner:
    """A SpanSink that gives each span its W3C ids and parent, then hands it to `sinks`.

    on_span(span) runs for every span given ids (the Prometheus exemplars). tick() (the
    agent's housekeeping) lets waits time out when no spans arrive; close() sends what
    still waits, as roots, and does not close the sinks (their owner does).
    """

    def __init__(self, sinks: Iterable[SpanSink] = (), *,
                 on_span: Callable[[Span], None] | None = None,
                 max_wait_s: float = DEFAULT_MAX_WAIT_S,
                 conn_wait_s: float = DEFAULT_CONN_WAIT_S,
                 max_pending: int = DEFAULT_MAX_PENDING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sinks: list[SpanSink] = list(sinks)
        self._on_span = on_span
        self._max_wait = max_wait_s
        self._conn_wait = conn_wait_s
        self._max_pending = max_pending
        self._clock = clock
        self._rand = random.Random()  # seeded from os.urandom
        self._lock = threading.Lock()
        self._pending: dict[int, _Node] = {}  # id(node) -> node, waiting for a parent
        # waiters in deadline order, one queue per wait length (so arrival order is it)
        self._deadlines: tuple[deque[_Node], deque[_Node]] = (deque(), deque())
        # connections whose server spans found no client span: their client is not traced
        # here, so later spans of theirs do not wait
        self._untraced: OrderedDict[tuple[str, int, str, int], None] = OrderedDict()
        # findable ended spans (kept _KEEP_S): servers by (pid, request context), clients
        # by their connection and stream; spans waiting for one of those, likewise
        self._servers: dict[tuple[int, int], list[_Node]] = defaultdict(list)
        self._clients: dict[tuple[str, int, str, int, int], list[_Node]] = defaultdict(list)
        self._want_server: dict[tuple[int, int], list[_Node]] = defaultdict(list)
        self._want_client: dict[tuple[str, int, str, int, int], list[_Node]] = \
            defaultdict(list)
        self._kept: deque[tuple[float, _Node]] = deque()  # (arrival, node), arrival order
        self._client_ips: set[str] = set()  # local addresses traced clients connect from
        self._out: list[Span] = []
        self._deferred: list[_Node] = []  # client spans rooted at the next flush()
        self.joined = {"traceparent": 0, "context": 0, "connection": 0}
        self.roots = 0
        self.timed_out = 0

    # -- SpanSink -------------------------------------------------------------------------
    def write(self, spans: Sequence[Span]) -> None:
        now = self._clock()
        with self._lock:
            for s in spans:
                self._add(s, now)
            self._expire(now)
            out, self._out = self._out, []
        self._emit(out)

    def flush(self) -> None:
        """The end of a drain pass: client spans that found no server child with a
        traceparent in it become roots (see the module docstring)."""
        with self._lock:
            self._root_deferred()
            out, self._out = self._out, []
        self._emit(out)

    def tick(self) -> None:
        with self._lock:
            self._root_deferred()
            self._expire(self._clock())
            out, self._out = self._out, []
        self._emit(out)

    def _root_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for node in deferred:
            if not node.resolved and node.parent is None and not node.deadline:
                self._root(node)

    def close(self) -> None:
        with self._lock:
            self._root_deferred()
            for node in list(self._pending.values()):
                self._give_up(node)
            out, self._out = self._out, []
        self._emit(out)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- joining --------------------------------------------------------------------------
    def _add(self, s: Span, now: float) -> None:
        s.span_id = f"{self._rand.getrandbits(64) or 1:016x}"
        node = _Node(s, now)
        self._kept.append((now, node))
        if _is_server(s):
            self._add_server(node, now)
        else:
            self._add_client(node, now)

    def _add_client(self, node: _Node, now: float) -> None:
        s = node.span
        if s.client_port:
            self._client_ips.add(s.client_address)
            key = _conn_key(s)
            self._clients[key].append(node)
            for child in self._take(self._want_client, key, node, _server_inside):
                self._link(child, node, "connection")
        if s.context:
            parent = _find(self._servers.get((s.pid, s.context)), s, _client_inside)
            if parent is not None:
                self._link(node, parent, "context")
            else:
                self._wait(node, self._want_server, (s.pid, s.context), now + self._max_wait,
                           1)
            return
        if s.client_port:
            self._deferred.append(node)  # a server child may yet bring it a traceparent
        else:
            self._root(node)

    def _add_server(self, node: _Node, now: float) -> None:
        s = node.span
        if s.context:
            key = (s.pid, s.context)
            self._servers[key].append(node)
            for child in self._take(self._want_server, key, node, _client_inside):
                self._link(child, node, "context")
        if s.client_port:
            parent = _find(self._clients.get(_conn_key(s)), s, _server_inside)
            if parent is not None:
                self._link(node, parent, "connection")
                return
            if ((s.client_address in self._client_ips
                 or s.client_address.startswith(_LOOPBACK))
                    and _conn_key(s)[:4] not in self._untraced):
                self._wait(node, self._want_client, _conn_key(s), now + self._conn_wait, 0)
                return
        self._root(node)

    def _wait(self, node: _Node, index: dict, key: object, deadline: float,
              queue: int) -> None:
        node.deadline = deadline
        index[key].append(node)
        self._pending[id(node)] = node
        self._deadlines[queue].append(node)
        if len(self._pending) > self._max_pending:  # the oldest waiter gives up
            self._give_up(next(iter(self._pending.values())))

    def _take(self, index: dict, key: object, parent: _Node,
              inside: Callable[[Span, Span], bool]) -> list[_Node]:
        """Waiters under `key` that `parent` is the parent of (removed from the index)."""
        waiting = index.get(key)
        if not waiting:
            return []
        mine = [n for n in waiting if n.deadline and inside(n.span, parent.span)]
        if mine:
            rest = [n for n in waiting if n not in mine]
            if rest:
                index[key] = rest
            else:
                del index[key]
        return mine

    def _link(self, node: _Node, parent: _Node, how: str) -> None:
        if node.parent is not None or node.resolved or _ancestor(node, parent):
            return
        self._pending.pop(id(node), None)
        node.deadline = 0.0
        node.parent = parent
        self.joined[how] += 1
        if parent.resolved:
            self._resolve(node)
        else:
            parent.children.append(node)
            if how == "connection" and not parent.span.context:
                # a client span's trace comes from what its server received, if anything
                tp = parse_traceparent(node.span.traceparent)
                if tp is not None and not parent.span.parent_span_id:
                    parent.span.trace_id, parent.span.parent_span_id = tp

    def _root(self, node: _Node) -> None:
        s = node.span
        if not s.trace_id:
            tp = parse_traceparent(s.traceparent) if s.traceparent else None
            if tp is not None:
                s.trace_id, s.parent_span_id = tp
                self.joined["traceparent"] += 1
            else:
                s.trace_id = f"{self._rand.getrandbits(128) or 1:032x}"
                self.roots += 1
        self._resolve(node)

    def _give_up(self, node: _Node) -> None:
        """No parent came in time: the span goes on under its traceparent, or as a root."""
        if self._pending.get(id(node)) is not node:
            return  # found its parent meanwhile
        del self._pending[id(node)]
        node.deadline = 0.0
        self.timed_out += 1
        s = node.span
        if _is_server(s) and s.client_port:
            self._untraced[_conn_key(s)[:4]] = None
            if len(self._untraced) > _UNTRACED_MAX:
                self._untraced.popitem(last=False)
        self._root(node)

    def _resolve(self, node: _Node) -> None:
        stack = [node]
        while stack:
            n = stack.pop()
            s = n.span
            if n.parent is not None:
                s.trace_id = n.parent.span.trace_id
                s.parent_span_id = n.parent.span.span_id
            n.resolved = True
            self._out.append(s)
            stack.extend(n.children)
            n.children = []

    def _expire(self, now: float) -> None:
        for q in self._deadlines:
            while q and q[0].deadline <= now:  # 0: it found its parent meanwhile
                self._give_up(q.popleft())  # (then a no-op)
        kept = self._kept
        while kept and kept[0][0] < now - _KEEP_S:
            self._forget(kept.popleft()[1])

    def _forget(self, node: _Node) -> None:
        s = node.span
        for index, key in ((self._servers, (s.pid, s.context)), (self._clients, _conn_key(s)),
                           (self._want_server, (s.pid, s.context)),
                           (self._want_client, _conn_key(s))):
            nodes = index.get(key)
            if nodes and node in nodes:
                nodes.remove(node)
                if not nodes:
                    del index[key]
        node.parent = None  # let finished trees be freed

    def _emit(self, spans: list[Span]) -> None:
        if not spans:
            return
        if self._on_span is not None:
            for s in spans:
                self._on_span(s)
        for sink in self.sinks:
            sink.write(spans)


def _client_inside(client: Span, server: Span) -> bool:
    """A call made while serving: it starts inside the server span."""
    return server.start_ns <= client.start_ns <= server.end_ns


def _server_inside(server: Span, client: Span) -> bool:
    """The server end of a call: it starts inside the client span, or shortly after it
    ended: a call the client abandoned (deadline, cancel) can reach the server's handler
    after that (measured: up to ~2 ms). Stream ids do not repeat in a connection, and its
    addresses come back only after TIME_WAIT, so the slack cannot pair two calls."""
    return client.start_ns <= server.start_ns <= client.end_ns + _LATE_SERVER_NS


def _find(nodes: list[_Node] | None, s: Span,
          inside: Callable[[Span, Span], bool]) -> _Node | None:
    """The latest-starting candidate `s` is inside (the innermost, if several; of a gRPC call
    served by ServeHTTP, whose HTTP/2 and gRPC spans share a start and a context, the gRPC
    one)."""
    best = None
    for n in nodes or ():
        if inside(s, n.span) and (best is None or _rank(n.span) > _rank(best.span)):
            best = n
    return best


def _rank(s: Span) -> tuple[int, bool]:
    return (s.start_ns, s.kind == "grpc_server")


def _ancestor(node: _Node, other: _Node) -> bool:
    """Whether `node` is `other` or one of its ancestors (a link would make a cycle)."""
    n: _Node | None = other
    while n is not None:
        if n is node:
            return True
        n = n.parent
    return False
