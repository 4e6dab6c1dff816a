"""The one span shape every probe path produces and every sink consumes.

A span is one RPC or HTTP/2 request as seen on one side. Its identity is
(pid, connection, stream_id): the connection is the transport object's address in the traced
process (*http2Client, *http2Server, *ClientConn, *serverConn), the stream id the HTTP/2
stream's. Calls that never got a stream (a gRPC call failing before it) have connection 0
and are told apart by `call` (their per-call object's address).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

KINDS = ("grpc_client", "grpc_server", "http_client", "http_server")


@dataclass(slots=True)
class Span:
    """One finished RPC or request.

    kind: one of KINDS. service/method: the gRPC service and method ("pkg.Service",
    "Method"), or for HTTP/2 the implementation ("net/http", "x/net/http2") and the HTTP
    method. full_method: the gRPC "/pkg.Service/Method", or the HTTP path. status_code: the
    gRPC code or the HTTP status. server_address/server_port: the peer (client side) or the
    local listener (server side). flags: names of the SPAN_F_* bits of events.h.
    """

    kind: str
    pid: int
    connection: int
    stream_id: int
    start_ns: int
    end_ns: int
    status_code: int
    service: str = ""
    method: str = ""
    full_method: str = ""
    server_address: str = ""
    server_port: int = 0
    flags: tuple[str, ...] = ()
    service_name: str = ""
    call: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)
    # W3C trace context, set by the trace joiner (pyhttp2probe/traces.py) when traces are
    # on: lowercase hex, trace_id 32 digits, span ids 16; "" when off or for a root's parent.
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    # What the joiner joins by (traces on; 0/"" otherwise), not exported as such.
    # context: a server span's own request context; a client span's, the server request
    # context it was made under (bpf_src/trace_ctx.h). client_address/client_port: the
    # client's end of the connection (client: local; server: remote). traceparent: the W3C
    # header the server request came with, as sent.
    context: int = 0
    client_address: str = ""
    client_port: int = 0
    traceparent: str = ""

    @property
    def duration_s(self) -> float:
        """End minus start in seconds; 0 for an end without a start (flag "unmatched")."""
        return (self.end_ns - self.start_ns) / 1e9 if self.start_ns else 0.0

    @property
    def key(self) -> tuple[int, int, int]:
        """(pid, connection, stream id), or (pid, 0, call) for a call without a stream."""
        if self.connection:
            return (self.pid, self.connection, self.stream_id)
        return (self.pid, 0, self.call)

    def to_json(self) -> dict[str, Any]:
        """The span as a JSON-ready dict: every field in declaration order (attributes only
        when there are some, trace ids only when set, the joiner's inputs never), then
        duration_s."""
        d = {"kind": self.kind, "pid": self.pid, "connection": self.connection,
             "stream_id": self.stream_id, "start_ns": self.start_ns, "end_ns": self.end_ns,
             "status_code": self.status_code, "service": self.service, "method": self.method,
             "full_method": self.full_method, "server_address": self.server_address,
             "server_port": self.server_port, "flags": list(self.flags),
             "service_name": self.service_name, "call": self.call}
        if self.attributes:
            d["attributes"] = dict(self.attributes)
        if self.trace_id:
            d.update(trace_id=self.trace_id, span_id=self.span_id,
                     parent_span_id=self.parent_span_id)
        d["duration_s"] = self.duration_s
        return d


class SpanIds(NamedTuple):
    """A record type's per-row span fields that no metric label uses (RecordType.ids):
    connection, stream_id and call as the Span fields would hold them, and full_method per
    row where it is not a label (the HTTP path; None: the group's exemplar's)."""

    connection: np.ndarray
    stream_id: np.ndarray
    call: np.ndarray
    full_method: list[str] | None = None


@dataclass
class SpanRows:
    """SpanColumns' per-row fields beyond durations: with a group's exemplar, each row's
    whole span (its trace ids aside: the joiner sets those), for sinks that write every
    span (JSON lines) without a Span object per span."""

    ids: SpanIds
    start_ns: np.ndarray
    end_ns: np.ndarray
    flags: np.ndarray  # SPAN_F_* bits per row
    flag_names: Callable[[int], tuple[str, ...]]  # bits -> Span.flags


@dataclass
class SpanColumns:
    """Finished spans of one batch as columns, for sinks that aggregate (a ColumnSink such
    as the Prometheus collector): no Span object per span.

    Rows are spans in arrival order; rows of one `group` agree in every field a metric
    label is made of — kind, pid, service, method, status_code, server_address,
    server_port, service_name, attributes, and full_method except for HTTP (the path) —
    and `exemplars[g]` is group g's first span, standing for all of them in those fields
    (its identity, times and flags are its own). Groups are numbered in the order they
    first occur. Unmatched spans (no start) are never in it.

    `rows` (only when a sink asked for them: Decoder.decode_batch(rows=True)) holds the
    rest of each row's span; `exact` says every row is its own group, its exemplar its
    whole span (from_spans).
    """

    exemplars: list[Span]
    group: np.ndarray  # intp per row: index into exemplars
    duration_ns: np.ndarray  # int64 per row: end_ns - start_ns (0 without a start)
    status_guessed: np.ndarray  # bool per row: flag "status_guessed"
    rows: SpanRows | None = None
    exact: bool = False

    def __len__(self) -> int:
        return len(self.group)

    @classmethod
    def from_spans(cls, spans: Sequence[Span]) -> SpanColumns:
        """Every span its own group (for spans built one by one)."""
        return cls(list(spans), np.arange(len(spans), dtype=np.intp),
                   np.array([s.end_ns - s.start_ns if s.start_ns else 0 for s in spans],
                            dtype=np.int64),
                   np.array(["status_guessed" in s.flags for s in spans], dtype=bool),
                   exact=True)


def clock_offset_ns() -> int:
    """Unix epoch ns minus CLOCK_MONOTONIC ns, now: what turns a span's kernel times
    (bpf_ktime_get_ns) into wall-clock times for exporters."""
    return time.time_ns() - time.monotonic_ns()


@functools.lru_cache(maxsize=4096)  # few distinct values; spans call it per span
def split_method(full: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method'); odd shapes keep what they can."""
    parts = full.lstrip("/").split("/", 1)
    if len(parts) == 2:
        return parts[0], parts[1]
    return "", parts[0]


@functools.lru_cache(maxsize=4096)  # few distinct values; spans call it per span
def split_hostport(hostport: str) -> tuple[str, int]:
    """'h:p' or '[v6]:p' -> (host, port); no port -> (host, 0)."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end > 0:
            tail = hostport[end + 1:]
            return hostport[1:end], int(tail[1:]) if tail[1:].isdigit() else 0
    host, sep, port = hostport.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return hostport, 0


@functools.lru_cache(maxsize=4096)  # few distinct values; spans call it per span
def parse_target(target: str) -> tuple[str, int]:
    """A grpc dial target ('dns:///h:p', 'passthrough:///h:p', 'h:p', '[v6]:p') -> (host, port).

    Used only for calls that never got a connection: the peer is what the program dialled.
    A Unix socket target ('unix:path', 'unix:///abs/path', 'unix-abstract:name') has no
    host or port: ('', 0), the same peer labels a connected call over that socket gets
    (the probes read only TCP addresses), so one peer never splits into two label sets.
    """
    rest = target
    if rest.startswith(("unix:", "unix-abstract:")):
        return "", 0
    if "://" in rest:
        rest = rest.split("://", 1)[1]
        rest = rest.split("/", 1)[1] if "/" in rest else rest  # drop the authority
    host, port = rest, 0
    if rest.startswith("["):
        end = rest.find("]")
        host = rest[1:end] if end > 0 else rest
        tail = rest[end + 1:] if end > 0 else ""
        if tail.startswith(":") and tail[1:].isdigit():
            port = int(tail[1:])
    elif rest.count(":") == 1:
        h, p = rest.split(":")
        if p.isdigit():
            host, port = h, int(p)
    return host, port
