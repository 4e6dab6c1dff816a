"""gRPC server probes: attach plan -> struct grpc_server_config + attach points, and the
decoding of struct grpc_server_event into spans.

Two hits per RPC on grpc's own transport (bpf_src/grpc_server.bpf.c says why these
points): the entry of transport.(*http2Server).operateHeaders and the entry of the
transport's writeStatus. Through (*grpc.Server).ServeHTTP only the end is probed; its start
and identity come from the HTTP/2 request it runs in (the http2 object's maps, shared).
Layout decisions that differ across grpc-go versions are made here, from the plan:
  <1.60      operateHeaders(frame, handle, traceCtx): frame is Go argument 2
  >=1.60     operateHeaders(ctx, frame, handle): frame is argument 4 (ctx takes two)
  <1.69      WriteStatus; Stream{id, method}
  1.69-1.76  *ServerStream{*Stream (pointer)}; writeStatus
  >=1.77     *ServerStream{Stream (value)}; writeStatus
  local address: http2Server.localAddr (old) or http2Server.peer.LocalAddr (newer)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..events import Layout, _ip
from ..spans import Span, flag_names, split_method
from . import AttachPoint, after_stack_check
from .grpc_client import ITAB_FUN0_AMD64, ProbePlanError

GRPC = "google.golang.org/grpc"
TRANSPORT = GRPC + "/internal/transport"
STATUS = GRPC + "/internal/status"
SPB = "google.golang.org/genproto/googleapis/rpc/status"
PEER = GRPC + "/peer"

FN_HANDLE_STREAM = GRPC + ".(*Server).handleStream"
FN_OPERATE_HEADERS = TRANSPORT + ".(*http2Server).operateHeaders"
XNET_H2 = "golang.org/x/net/http2"
# grpc-go added operateHeaders' ctx argument (before frame) in this release
OPERATE_HEADERS_CTX_SINCE = (1, 60, 0)
# Renamed WriteStatus -> writeStatus in v1.69; the first present wins.
FN_WRITE_STATUS = (TRANSPORT + ".(*http2Server).writeStatus",
                   TRANSPORT + ".(*http2Server).WriteStatus")
FN_WRITE_STATUS_HT = (TRANSPORT + ".(*serverHandlerTransport).writeStatus",
                      TRANSPORT + ".(*serverHandlerTransport).WriteStatus")
FN_TCPADDR_NETWORK = "net.(*TCPAddr).Network"
# RPCs rejected before any handler (InTapHandle, content-type, headers): error path only.
FN_EARLY_ABORT = TRANSPORT + ".(*loopyWriter).earlyAbortStreamHandler"
HPACK = "golang.org/x/net/http2/hpack"

FUNCTIONS = (FN_HANDLE_STREAM, FN_OPERATE_HEADERS, *FN_WRITE_STATUS, *FN_WRITE_STATUS_HT,
             FN_TCPADDR_NETWORK, FN_EARLY_ABORT)
FIELDS = (
    f"{TRANSPORT}.ServerStream.Stream", f"{TRANSPORT}.Stream.id", f"{TRANSPORT}.Stream.method",
    f"{STATUS}.Status.s", f"{SPB}.Status.Code",
    f"{TRANSPORT}.http2Server.localAddr", f"{TRANSPORT}.http2Server.peer",
    f"{PEER}.Peer.LocalAddr", f"{TRANSPORT}.serverHandlerTransport.req",
    "net/http.Request.Host", "net.TCPAddr.IP", "net.TCPAddr.Port",
    f"{TRANSPORT}.earlyAbortStream.streamID", f"{TRANSPORT}.earlyAbortStream.status",
    f"{TRANSPORT}.earlyAbortStream.hf", f"{HPACK}.HeaderField.Name",
    f"{HPACK}.HeaderField.Value", f"{HPACK}.HeaderField.Sensitive",
    f"{TRANSPORT}.http2Server.framer", f"{TRANSPORT}.loopyWriter.framer",
    f"{XNET_H2}.MetaHeadersFrame.HeadersFrame", f"{XNET_H2}.HeadersFrame.FrameHeader",
    f"{XNET_H2}.FrameHeader.Type", f"{XNET_H2}.FrameHeader.StreamID", "net/http.Request.ctx",
)

OBJECT = "grpc_server.bpf.o"
CONFIG_MAP = "grpc_server_config"
PROG_START = "grpc_server_operate_headers"
PROG_END = "grpc_server_write_status"
PROG_END_HT = "grpc_server_write_status_ht"
PROG_REJECTED = "grpc_server_early_abort"
PROGRAMS = (PROG_START, PROG_END, PROG_END_HT, PROG_REJECTED)


class PlanFields:
    """Field offsets of a plan by "pkg.Type.field", with the field's Go type when known."""

    def __init__(self, plan: Any, binary: str) -> None:
        self.fields: Mapping[str, Any] = plan.fields
        self.types: Mapping[str, str] = getattr(plan, "field_types", None) or {}
        self.binary = binary

    def has(self, key: str) -> bool:
        return self.fields.get(key) is not None

    def __getitem__(self, key: str) -> int:
        if not self.has(key):
            raise ProbePlanError(f"{self.binary}: no offset for field {key} in the attach plan")
        v = self.fields[key]
        return int(v) if isinstance(v, int) else int(v.offset)

    def is_pointer(self, key: str) -> bool:
        """Whether the field holds a pointer (an embedded *T rather than T)."""
        name = self.types.get(key)
        if name is None:
            v = self.fields.get(key)
            name = getattr(v, "type_name", None) or getattr(v, "type", None)
        if not isinstance(name, str):
            raise ProbePlanError(f"{self.binary}: plan gives no type for field {key}")
        return name.startswith("*")


def set_chain(cfg: Any, name: str, hops: list[int], last: int) -> None:
    """Fill the struct go_chain `name` of a config: follow `hops` pointers, then add `last`."""
    c = getattr(cfg, name)
    c.valid = 1
    c.nhops = len(hops)
    for i, h in enumerate(hops):
        c.hop[i] = h
    c.last = last


@dataclass
class ServerProbes:
    """What the tracer loads: config bytes for the tgid key, and where to attach."""

    config: bytes
    points: list[AttachPoint]
    layout_name: str
    notes: list[str] = field(default_factory=list)


def present(plan: Any) -> bool:
    """Whether the binary serves gRPC at all (handleStream is linked)."""
    return FN_HANDLE_STREAM in plan.functions


def _body(binary: str, entry: int) -> int:
    """Past Go's stack check, where an entry probe fires once per call (see probes/)."""
    return after_stack_check(binary, entry) if binary else entry


def _first(functions: Mapping[str, Any], names: tuple[str, ...],
           binary: str) -> tuple[str, int] | None:
    for name in names:
        fo = functions.get(name)
        if fo is not None:
            return name, _body(binary, int(fo.entry))
    return None


def build(plan: Any, layout: Layout, runtime_addr: Callable[[int], int],
          binary: str = "") -> ServerProbes:
    """Config and attach points for one process serving gRPC."""
    functions: Mapping[str, Any] = plan.functions
    f = PlanFields(plan, binary)
    cfg = layout.new("grpc_server_config")
    notes: list[str] = []

    sid, method = f[f"{TRANSPORT}.Stream.id"], f[f"{TRANSPORT}.Stream.method"]
    embed = f"{TRANSPORT}.ServerStream.Stream"
    if f.has(embed) and f.is_pointer(embed):
        layout_name = "ServerStream{*Stream}"
        set_chain(cfg, "stream_id", [f[embed]], sid)
        set_chain(cfg, "stream_method", [f[embed]], method)
    elif f.has(embed):
        layout_name = "ServerStream{Stream}"
        set_chain(cfg, "stream_id", [], f[embed] + sid)
        set_chain(cfg, "stream_method", [], f[embed] + method)
    else:
        layout_name = "Stream"
        set_chain(cfg, "stream_id", [], sid)
        set_chain(cfg, "stream_method", [], method)
    set_chain(cfg, "status_code", [f[f"{STATUS}.Status.s"]], f[f"{SPB}.Status.Code"])

    if f.has(f"{TRANSPORT}.http2Server.localAddr"):
        set_chain(cfg, "t_local_addr", [], f[f"{TRANSPORT}.http2Server.localAddr"])
    elif f.has(f"{TRANSPORT}.http2Server.peer") and f.has(f"{PEER}.Peer.LocalAddr"):
        set_chain(cfg, "t_local_addr", [],
               f[f"{TRANSPORT}.http2Server.peer"] + f[f"{PEER}.Peer.LocalAddr"])
    else:
        notes.append("http2Server has neither localAddr nor peer.LocalAddr: no server address")
    if f.has(f"{TRANSPORT}.serverHandlerTransport.req") and f.has("net/http.Request.Host"):
        set_chain(cfg, "ht_host", [f[f"{TRANSPORT}.serverHandlerTransport.req"]],
               f["net/http.Request.Host"])
    cfg.itab_fun0 = ITAB_FUN0_AMD64
    if f.has("net.TCPAddr.IP"):
        cfg.tcpaddr_ip = f["net.TCPAddr.IP"]
        cfg.tcpaddr_port = f["net.TCPAddr.Port"]
    fo = functions.get(FN_TCPADDR_NETWORK)
    if fo is not None:
        cfg.tcpaddr_network_fn = runtime_addr(int(fo.entry))
    else:
        notes.append("net.(*TCPAddr).Network absent: local address read without type check")

    if f.has(f"{TRANSPORT}.serverHandlerTransport.req") and f.has("net/http.Request.ctx"):
        set_chain(cfg, "ht_ctx", [f[f"{TRANSPORT}.serverHandlerTransport.req"]],
                  f["net/http.Request.ctx"] + 8)  # the iface's data word
    start = _operate_headers(cfg, f, plan, binary, notes)
    rejected = _early_abort(cfg, f, functions, binary, notes)

    points = [start]
    end = _first(functions, FN_WRITE_STATUS, binary)
    if end is None:
        raise ProbePlanError(f"{binary}: none of {', '.join(FN_WRITE_STATUS)} in the binary")
    points.append(AttachPoint(PROG_END, *end))
    end_ht = _first(functions, FN_WRITE_STATUS_HT, binary)
    if end_ht is not None:  # linked only when the program can use ServeHTTP
        points.append(AttachPoint(PROG_END_HT, *end_ht))
    if rejected is not None:
        points.append(rejected)
    return ServerProbes(config=layout.to_bytes(cfg), points=points, layout_name=layout_name,
                        notes=notes)


def grpc_version(plan: Any) -> tuple[int, ...] | None:
    """(major, minor, patch) of the linked grpc-go, None when the build info lacks it."""
    v = (getattr(plan, "modules", None) or {}).get(GRPC)
    m = re.match(r"v(\d+)\.(\d+)\.(\d+)", v or "")
    return tuple(int(x) for x in m.groups()) if m else None


def _operate_headers(cfg: Any, f: PlanFields, plan: Any, binary: str,
                     notes: list[str]) -> AttachPoint:
    """Config and attach point of the start: operateHeaders, where the frame opening a
    stream carries its final id. Which register holds the frame depends on the version."""
    fo = plan.functions.get(FN_OPERATE_HEADERS)
    if fo is None:
        raise ProbePlanError(f"{binary}: function {FN_OPERATE_HEADERS} not found in the binary")
    version = grpc_version(plan)
    if version is None:
        notes.append("grpc-go version unknown: operateHeaders taken as >= v1.60 (ctx, frame)")
    cfg.frame_arg = 2 if version is not None and version < OPERATE_HEADERS_CTX_SINCE else 4
    cfg.t_framer = f[f"{TRANSPORT}.http2Server.framer"]
    cfg.loopy_framer = f[f"{TRANSPORT}.loopyWriter.framer"]
    set_chain(cfg, "frame_header", [f[f"{XNET_H2}.MetaHeadersFrame.HeadersFrame"]],
              f[f"{XNET_H2}.HeadersFrame.FrameHeader"])
    cfg.fh_type = f[f"{XNET_H2}.FrameHeader.Type"]
    cfg.fh_stream_id = f[f"{XNET_H2}.FrameHeader.StreamID"]
    return AttachPoint(PROG_START, FN_OPERATE_HEADERS, _body(binary, int(fo.entry)))


def _early_abort(cfg: Any, f: PlanFields, functions: Mapping[str, Any], binary: str,
                 notes: list[str]) -> AttachPoint | None:
    """Config and attach point of the rejected-RPC counter, or None (with a note) when the
    binary lacks the handler or its layout: the spans go on without the counter."""
    fo = functions.get(FN_EARLY_ABORT)
    eas = f"{TRANSPORT}.earlyAbortStream"
    if fo is None or not f.has(f"{eas}.streamID"):
        notes.append(f"{FN_EARLY_ABORT} or earlyAbortStream.streamID absent: "
                     "RPCs rejected before a handler are not counted")
        return None
    cfg.eas_stream_id = f[f"{eas}.streamID"]
    if f.has(f"{eas}.status"):  # < v1.79: *status.Status
        set_chain(cfg, "eas_code", [f[f"{eas}.status"], f[f"{STATUS}.Status.s"]],
                  f[f"{SPB}.Status.Code"])
    elif f.has(f"{eas}.hf") and all(f.has(f"{HPACK}.HeaderField.{n}")
                                     for n in ("Name", "Value", "Sensitive")):
        cfg.eas_hf = f[f"{eas}.hf"]
        cfg.hf_name = f[f"{HPACK}.HeaderField.Name"]
        cfg.hf_value = f[f"{HPACK}.HeaderField.Value"]
        # Sensitive (bool) is the struct's last field; Go pads it to the 8-byte alignment
        cfg.hf_stride = (f[f"{HPACK}.HeaderField.Sensitive"] + 1 + 7) & ~7
    else:
        notes.append("earlyAbortStream has neither status nor hf (with hpack.HeaderField): "
                     "RPCs rejected before a handler are not counted")
        return None
    return AttachPoint(PROG_REJECTED, FN_EARLY_ABORT, _body(binary, int(fo.entry)))


def decode_rejected(layout: Layout, records: Any) -> list[tuple[int, int, int]]:
    """(tgid, status code, flags) of each grpc_server_reject_event record."""
    if not records:
        return []
    c = _columns(layout, "grpc_server_reject_event", records)
    return list(zip(c["tgid"], c["status_code"], c["flags"], strict=True))


# ---- decoding ---------------------------------------------------------------------------

@dataclass(slots=True)
class GrpcServerEvent:
    """One finished server RPC as the BPF side saw it (struct grpc_server_event)."""

    tgid: int
    transport: int
    start_ns: int
    end_ns: int
    stream_id: int
    status_code: int
    flags: int
    local_ip: str
    local_port: int
    method: str
    host: str


def _columns(layout: Layout, struct: str, records: Any) -> dict[str, list[Any]]:
    """Decode same-type records column-wise: one numpy pass, then plain lists.

    Per-record numpy access costs ~25 µs a record; columns cost a few µs in all.
    """
    size = layout.sizeof(struct)
    raw = b"".join(bytes(r[:size]) for r in records if len(r) >= size)
    arr = np.frombuffer(raw, dtype=layout.dtype(struct))
    return {name: arr[name].tolist() for name in arr.dtype.names or ()}


def _strs(col: list[bytes], lens: list[int]) -> list[str]:
    return [b[:n].decode("utf-8", "replace") for b, n in zip(col, lens, strict=True)]


def _ips(col: Any) -> list[str]:
    seen: dict[bytes, str] = {}  # a batch holds few distinct listener addresses
    out = []
    for x in col:
        raw = bytes(x)
        ip = seen.get(raw)
        if ip is None:
            ip = seen[raw] = _ip(raw)
        out.append(ip)
    return out


def decode(layout: Layout, records: Any) -> list[GrpcServerEvent]:
    """Decode grpc_server_event records (a sequence of bytes-like records)."""
    if not records:
        return []
    c = _columns(layout, "grpc_server_event", records)
    return [GrpcServerEvent(*row) for row in zip(
        c["tgid"], c["transport"], c["start_ns"], c["end_ns"], c["stream_id"],
        c["status_code"], c["flags"], _ips(c["local_ip"]), c["local_port"],
        _strs(c["method"], c["method_len"]), _strs(c["host"], c["host_len"]), strict=True)]


def srv_flag_names(flags: int, constants: Mapping[str, int]) -> tuple[str, ...]:
    """Names of the set SPAN_F_* bits of events.h (one set for every record type)."""
    return flag_names(flags, constants)


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


def span_from_event(ev: GrpcServerEvent, constants: Mapping[str, int],
                    service_name: str = "") -> Span:
    """The server span of one RPC; server_address/port are the local listener's."""
    service, method = split_method(ev.method)
    names = srv_flag_names(ev.flags, constants)
    if ev.local_port:
        address, port = ev.local_ip, ev.local_port
    else:
        address, port = split_hostport(ev.host)
    start = ev.start_ns
    return Span(
        pid=ev.tgid, transport=ev.transport, stream_id=ev.stream_id, kind="grpc_server",
        service=service, method=method, full_method=ev.method, status_code=ev.status_code,
        start_ns=start, end_ns=ev.end_ns,
        duration_s=(ev.end_ns - start) / 1e9 if start else 0.0,
        server_address=address, server_port=port, flags=names, service_name=service_name)
