"""Assemble spans from decoded events: one span per (pid, connection, stream).

The BPF side already pairs start and end, so assembly is a pure function of one record
plus the traced program's name; it lives here so sinks and metrics see one shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .events import GrpcClientEvent

# Flag bits are events.h's SPAN_F_* constants, read from the header at run time
# (Layout.constants); a bit's name is its constant's name after the prefix, lowercased.
FLAG_PREFIX = "SPAN_F_"


@dataclass(slots=True)
class Span:
    """One RPC. Identity: (pid, transport, stream_id); no-stream calls use (pid, 0, cs)."""

    pid: int
    transport: int
    stream_id: int
    kind: str
    service: str
    method: str
    full_method: str
    status_code: int
    start_ns: int
    end_ns: int
    duration_s: float
    server_address: str
    server_port: int
    flags: tuple[str, ...]
    service_name: str = ""
    cs: int = 0

    @property
    def key(self) -> tuple[int, int, int]:
        if self.transport:
            return (self.pid, self.transport, self.stream_id)
        return (self.pid, 0, self.cs)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["flags"] = list(self.flags)
        return d


def split_method(full: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method'); odd shapes keep what they can."""
    parts = full.lstrip("/").split("/", 1)
    if len(parts) == 2:
        return parts[0], parts[1]
    return "", parts[0]


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


def flag_names(flags: int, constants: Mapping[str, int]) -> tuple[str, ...]:
    """Names of the set SPAN_F_* bits of events.h, in bit order ("unmatched", ...)."""
    if not flags:
        return ()
    bits = sorted((bit, name) for name, bit in constants.items() if name.startswith(FLAG_PREFIX))
    return tuple(name[len(FLAG_PREFIX):].lower() for bit, name in bits if flags & bit)


def span_from_event(ev: GrpcClientEvent, constants: dict[str, int],
                    service_name: str = "") -> Span:
    """Build the client span for one finished call."""
    service, method = split_method(ev.method)
    names = flag_names(ev.flags, constants) if ev.flags else ()
    if ev.transport:
        address, port = ev.peer_ip, ev.peer_port
    else:
        address, port = parse_target(ev.target)
    start = ev.start_ns
    return Span(
        pid=ev.tgid, transport=ev.transport, stream_id=ev.stream_id if ev.transport else 0,
        kind="grpc_client", service=service, method=method, full_method=ev.method,
        status_code=ev.status_code, start_ns=start, end_ns=ev.end_ns,
        duration_s=(ev.end_ns - start) / 1e9 if start else 0.0,
        server_address=address, server_port=port, flags=names, service_name=service_name,
        cs=ev.cs,
    )
