"""gRPC server path (bpf_src/grpc_server.bpf.c says why these probe points).

Two hits per RPC on grpc's own transport: the entry of transport.(*http2Server).operateHeaders
and the entry of the transport's writeStatus. Through (*grpc.Server).ServeHTTP only the end is
probed; its start and identity come from the HTTP/2 request it runs in (the http2 path's
maps, shared). Layout decisions that differ across grpc-go versions are made here:
  <1.60      operateHeaders(frame, handle, traceCtx): frame is Go argument 2
  >=1.60     operateHeaders(ctx, frame, handle): frame is argument 4 (ctx takes two)
  <1.69      WriteStatus; Stream{id, method}
  1.69-1.76  *ServerStream{*Stream (pointer)}; writeStatus
  >=1.77     *ServerStream{Stream (value)}; writeStatus
  local address: http2Server.localAddr (old) or http2Server.peer.LocalAddr (newer)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..spans import Span, SpanIds, split_hostport, split_method
from . import (
    AttachPoint,
    ConfigEntry,
    PathSetup,
    PathSkipped,
    ProbePath,
    ProcessImage,
    RecordType,
    SlotTable,
    Stage,
)
from .planning import (
    ITAB_FUN0_AMD64,
    SERVE_HTTP_ENDS,
    PlanFields,
    entry_point,
    first_present,
    module_version,
    probe_offset,
    read_window,
    return_points,
    set_chain,
    tcpaddr_network_fn,
    variable_address,
)

if TYPE_CHECKING:
    from libbpf_loader import HeaderLayout

    from ..goelf import AttachPlan
    from ..records import Columns, DecodeContext

GRPC = "google.golang.org/grpc"
TRANSPORT = GRPC + "/internal/transport"
STATUS = GRPC + "/internal/status"
SPB = "google.golang.org/genproto/googleapis/rpc/status"
PEER = GRPC + "/peer"
XNET_H2 = "golang.org/x/net/http2"
HPACK = "golang.org/x/net/http2/hpack"

FN_HANDLE_STREAM = GRPC + ".(*Server).handleStream"  # present: the binary serves gRPC
# status.New(codes.OK, ""), the status of every OK end (grpc-go v1.34 .. v1.85 server.go)
VAR_STATUS_OK = GRPC + ".statusOK"
FN_OPERATE_HEADERS = TRANSPORT + ".(*http2Server).operateHeaders"
# grpc-go added operateHeaders' ctx argument (before frame) in this release
OPERATE_HEADERS_CTX_SINCE = (1, 60, 0)
# http2Server.ctx is per connection (setConnection) from this release; before, without a stats
# handler it is context.Background() itself, which every context of the process descends from
PER_CONN_CTX_SINCE = (1, 41, 0)
# Renamed WriteStatus -> writeStatus in v1.69; the first present wins.
FN_WRITE_STATUS = (TRANSPORT + ".(*http2Server).writeStatus",
                   TRANSPORT + ".(*http2Server).WriteStatus")
FN_WRITE_STATUS_HT = SERVE_HTTP_ENDS
# RPCs rejected before any handler (InTapHandle, content-type, headers): error path only.
FN_EARLY_ABORT = TRANSPORT + ".(*loopyWriter).earlyAbortStreamHandler"

# The transport's constructor: its RETs fill the connection cache (bpf_src/conn_cache.h).
FN_NEW_TRANSPORT = TRANSPORT + ".NewServerTransport"

FUNCTIONS = (FN_HANDLE_STREAM, FN_OPERATE_HEADERS, *FN_WRITE_STATUS, *FN_WRITE_STATUS_HT,
             "net.(*TCPAddr).Network", FN_EARLY_ABORT, FN_NEW_TRANSPORT)
FIELDS = (
    f"{TRANSPORT}.ServerStream.Stream", f"{TRANSPORT}.Stream.id", f"{TRANSPORT}.Stream.method",
    f"{STATUS}.Status.s", f"{SPB}.Status.Code",
    f"{TRANSPORT}.http2Server.localAddr", f"{TRANSPORT}.http2Server.peer",
    f"{PEER}.Peer.LocalAddr", f"{TRANSPORT}.serverHandlerTransport.req",
    "net/http.Request.Host", "net.TCPAddr.IP", "net.TCPAddr.Port",
    # earlyAbortStream: {streamID, status *status.Status} before v1.79; {streamID, hf
    # []hpack.HeaderField} (the "grpc-status" field's value carries the code) from v1.79.
    f"{TRANSPORT}.earlyAbortStream.streamID", f"{TRANSPORT}.earlyAbortStream.status",
    f"{TRANSPORT}.earlyAbortStream.hf", f"{HPACK}.HeaderField.Name",
    f"{HPACK}.HeaderField.Value",
    f"{HPACK}.HeaderField.Sensitive",  # the last field: gives the slice element stride
    # the start at operateHeaders: the HEADERS frame's stream id; the framer a transport
    # shares with its loopy writer keys in-flight RPCs, so an early abort drops its start
    f"{TRANSPORT}.http2Server.framer", f"{TRANSPORT}.loopyWriter.framer",
    f"{XNET_H2}.MetaHeadersFrame.HeadersFrame", f"{XNET_H2}.HeadersFrame.FrameHeader",
    f"{XNET_H2}.FrameHeader.Type", f"{XNET_H2}.FrameHeader.StreamID",
    "net/http.Request.ctx",  # the ServeHTTP join through the request's context chain
    # traces on (bpf_src/trace_ctx.h): the request's context, the connection's (< v1.60),
    # the client's address, the HEADERS frame's fields (an incoming traceparent)
    f"{TRANSPORT}.Stream.ctx", f"{TRANSPORT}.http2Server.ctx",
    f"{TRANSPORT}.http2Server.remoteAddr", f"{PEER}.Peer.Addr",
    f"{XNET_H2}.MetaHeadersFrame.Fields",
)
ANCHORS = {
    # peer.Peer has no methods before v1.64 (String came then), yet http2Server embeds it
    # by value from v1.60: without an anchor the server's local address vanished there.
    f"{PEER}.Peer": (FN_OPERATE_HEADERS,),
    # earlyAbortStream's only method (isTransportResponseFrame) is gone from v1.83, and
    # HeaderField's may all be inlined: both are read wherever the handler is linked.
    f"{TRANSPORT}.earlyAbortStream": (FN_EARLY_ABORT,),
    f"{HPACK}.HeaderField": (FN_EARLY_ABORT,),
}

OBJECT = "grpc_server.bpf.o"
CONFIG_MAP = "grpc_server_config"
PROG_START = "grpc_server_operate_headers"
PROG_END = "grpc_server_write_status"
PROG_END_HT = "grpc_server_write_status_ht"
PROG_REJECTED = "grpc_server_early_abort"
PROG_CONN = "grpc_server_conn"


def setup(proc: ProcessImage, layout: HeaderLayout) -> PathSetup:
    """Config (keyed by tgid) and attach points for one process serving gRPC."""
    plan = proc.plan
    if FN_HANDLE_STREAM not in plan.functions:
        raise PathSkipped(f"no grpc-go server linked ({FN_HANDLE_STREAM} absent)")
    f = PlanFields(plan)
    cfg = layout.new("grpc_server_config")
    cfg.gen = proc.gen
    notes: list[str] = []
    cfg.status_ok_var = variable_address(proc, VAR_STATUS_OK)
    if not cfg.status_ok_var:
        notes.append(f"{VAR_STATUS_OK} not in .symtab (stripped): every end reads its status")

    sid, method = f[f"{TRANSPORT}.Stream.id"], f[f"{TRANSPORT}.Stream.method"]
    embed = f"{TRANSPORT}.ServerStream.Stream"
    if f.has(embed) and f.is_pointer(embed):
        variant = "ServerStream{*Stream}"
        set_chain(cfg, "stream_id", [f[embed]], sid)
        set_chain(cfg, "stream_method", [f[embed]], method)
    elif f.has(embed):
        variant = "ServerStream{Stream}"
        set_chain(cfg, "stream_id", [], f[embed] + sid)
        set_chain(cfg, "stream_method", [], f[embed] + method)
        _stream_window(cfg, f[embed] + sid, f[embed] + method)
    else:
        variant = "Stream"
        set_chain(cfg, "stream_id", [], sid)
        set_chain(cfg, "stream_method", [], method)
        _stream_window(cfg, sid, method)
    set_chain(cfg, "status_code", [f[f"{STATUS}.Status.s"]], f[f"{SPB}.Status.Code"])

    if f.has(f"{TRANSPORT}.http2Server.localAddr"):
        set_chain(cfg, "t_local_addr", [], f[f"{TRANSPORT}.http2Server.localAddr"])
    elif f.has(f"{TRANSPORT}.http2Server.peer") and f.has(f"{PEER}.Peer.LocalAddr"):
        set_chain(cfg, "t_local_addr", [],
                  f[f"{TRANSPORT}.http2Server.peer"] + f[f"{PEER}.Peer.LocalAddr"])
    else:
        notes.append("http2Server has neither localAddr nor peer.LocalAddr: no server address")
    req = f"{TRANSPORT}.serverHandlerTransport.req"
    if f.has(req) and f.has("net/http.Request.Host"):
        set_chain(cfg, "ht_host", [f[req]], f["net/http.Request.Host"])
    cfg.itab_fun0 = ITAB_FUN0_AMD64
    if f.has("net.TCPAddr.IP"):
        cfg.tcpaddr_ip = f["net.TCPAddr.IP"]
        cfg.tcpaddr_port = f["net.TCPAddr.Port"]
    cfg.tcpaddr_network_fn = tcpaddr_network_fn(plan, proc.runtime_addr, notes)
    if f.has(req) and f.has("net/http.Request.ctx"):
        set_chain(cfg, "ht_ctx", [f[req]], f["net/http.Request.ctx"] + 8)  # iface data word

    points = [_operate_headers(cfg, f, plan, notes)]
    if proc.trace:
        _trace_context(cfg, f, notes, module_version(plan, GRPC))
    end = first_present(plan, PROG_END, FN_WRITE_STATUS)
    if end is None:
        raise PathSkipped(f"{plan.path}: none of {', '.join(FN_WRITE_STATUS)} in the binary")
    points.append(end)
    end_ht = first_present(plan, PROG_END_HT, FN_WRITE_STATUS_HT)
    if end_ht is not None:  # linked only when the program can use ServeHTTP
        points.append(end_ht)
    rejected = _early_abort(cfg, f, plan, notes)
    if rejected is not None:
        points.append(rejected)
    conn = return_points(plan, PROG_CONN, FN_NEW_TRANSPORT)
    if conn:
        cfg.conn_cache = 1
        points += conn
    else:
        notes.append(f"no RET of {FN_NEW_TRANSPORT} found: every RPC reads its listener's "
                     "address (no connection cache)")
    key = proc.pid.to_bytes(4, "little")
    return PathSetup([ConfigEntry(CONFIG_MAP, key, layout.to_bytes(cfg))], points, notes,
                     variant)


def _stream_window(cfg: Any, sid: int, method: int) -> None:
    """The end's one read of the stream's id and method (bpf_src/grpc_server.bpf.c
    finish), when both fit; else a read each (sw_on 0)."""
    lo = read_window([(sid, 4), (method, 16)])
    if lo is not None:
        cfg.sw_on, cfg.sw_lo, cfg.sw_id, cfg.sw_method = 1, lo, sid - lo, method - lo


def _operate_headers(cfg: object, f: PlanFields, plan: AttachPlan,
                     notes: list[str]) -> AttachPoint:
    """Config and attach point of the start: operateHeaders, where the frame opening a
    stream carries its final id. Which register holds the frame depends on the version."""
    point = entry_point(plan, PROG_START, FN_OPERATE_HEADERS)
    version = module_version(plan, GRPC)
    if version is None:
        notes.append("grpc-go version unknown: operateHeaders taken as >= v1.60 (ctx, frame)")
    cfg.frame_arg = 2 if version is not None and version < OPERATE_HEADERS_CTX_SINCE else 4
    cfg.t_framer = f[f"{TRANSPORT}.http2Server.framer"]
    cfg.loopy_framer = f[f"{TRANSPORT}.loopyWriter.framer"]
    set_chain(cfg, "frame_header", [f[f"{XNET_H2}.MetaHeadersFrame.HeadersFrame"]],
              f[f"{XNET_H2}.HeadersFrame.FrameHeader"])
    cfg.fh_type = f[f"{XNET_H2}.FrameHeader.Type"]
    cfg.fh_stream_id = f[f"{XNET_H2}.FrameHeader.StreamID"]
    return point


def _trace_context(cfg: Any, f: PlanFields, notes: list[str],
                   version: tuple[int, ...] | None) -> None:
    """Traces on: where the request's context, the connection's context (before v1.60; an
    argument since), the client's address and the frame's header fields are."""
    ctx = f"{TRANSPORT}.Stream.ctx"
    embed = f"{TRANSPORT}.ServerStream.Stream"
    if f.has(embed) and f.is_pointer(embed):
        stream_ctx = ([f[embed]], f[ctx] + 8)
    else:
        stream_ctx = ([], (f[embed] if f.has(embed) else 0) + f[ctx] + 8)
    remote = None
    if f.has(f"{TRANSPORT}.http2Server.remoteAddr"):
        remote = f[f"{TRANSPORT}.http2Server.remoteAddr"]
    elif f.has(f"{TRANSPORT}.http2Server.peer") and f.has(f"{PEER}.Peer.Addr"):
        remote = f[f"{TRANSPORT}.http2Server.peer"] + f[f"{PEER}.Peer.Addr"]
    if cfg.frame_arg == 2 and not f.has(f"{TRANSPORT}.http2Server.ctx"):
        notes.append("http2Server.ctx absent: server spans are not joined to traces")
        return
    if remote is None or not f.has(f"{XNET_H2}.MetaHeadersFrame.Fields"):
        notes.append("http2Server's client address or MetaHeadersFrame.Fields absent: "
                     "server spans are not joined to traces")
        return
    cfg.trace = 1
    set_chain(cfg, "stream_ctx", *stream_ctx)
    set_chain(cfg, "t_remote_addr", [], remote)
    if cfg.frame_arg == 2 and version is not None and version < PER_CONN_CTX_SINCE:
        notes.append("grpc-go < v1.41: http2Server.ctx is context.Background() itself, not a "
                     "per-connection context: client calls are not joined under its spans")
    elif cfg.frame_arg == 2:
        cfg.t_ctx = f[f"{TRANSPORT}.http2Server.ctx"] + 8  # the iface's data word
    cfg.frame_fields = f[f"{XNET_H2}.MetaHeadersFrame.Fields"]
    if not _header_field_layout(cfg, f):
        notes.append("hpack.HeaderField layout absent: an incoming traceparent is not read")


def _header_field_layout(cfg: Any, f: PlanFields) -> bool:
    """hpack.HeaderField's Name, Value and slice stride into the config (read by the early
    abort's grpc-status and by the traceparent search); False when the plan lacks them."""
    if not all(f.has(f"{HPACK}.HeaderField.{n}") for n in ("Name", "Value", "Sensitive")):
        return False
    cfg.hf_name = f[f"{HPACK}.HeaderField.Name"]
    cfg.hf_value = f[f"{HPACK}.HeaderField.Value"]
    # Sensitive (bool) is the struct's last field; Go pads it to the 8-byte alignment
    cfg.hf_stride = (f[f"{HPACK}.HeaderField.Sensitive"] + 1 + 7) & ~7
    return True


def _early_abort(cfg: object, f: PlanFields, plan: AttachPlan,
                 notes: list[str]) -> AttachPoint | None:
    """Config and attach point of the rejected-RPC counter, or None (with a note) when the
    binary lacks the handler or its layout: the spans go on without the counter."""
    off = probe_offset(plan, FN_EARLY_ABORT)
    eas = f"{TRANSPORT}.earlyAbortStream"
    if off is None or not f.has(f"{eas}.streamID"):
        notes.append(f"{FN_EARLY_ABORT} or earlyAbortStream.streamID absent: "
                     "RPCs rejected before a handler are not counted")
        return None
    cfg.eas_stream_id = f[f"{eas}.streamID"]
    if f.has(f"{eas}.status"):  # < v1.79: *status.Status
        set_chain(cfg, "eas_code", [f[f"{eas}.status"], f[f"{STATUS}.Status.s"]],
                  f[f"{SPB}.Status.Code"])
    elif f.has(f"{eas}.hf") and _header_field_layout(cfg, f):
        cfg.eas_hf = f[f"{eas}.hf"]
    else:
        notes.append("earlyAbortStream has neither status nor hf (with hpack.HeaderField): "
                     "RPCs rejected before a handler are not counted")
        return None
    return AttachPoint(PROG_REJECTED, FN_EARLY_ABORT, off)


def to_spans(c: Columns, ctx: DecodeContext) -> list[Span]:
    """Server spans; server_address/port are the local listener's (or, through ServeHTTP,
    the request's Host)."""
    out = []
    for pid, conn, start, end, sid, code, flags, ip, port, method, host in zip(
            c["tgid"], c["transport"], c["start_ns"], c["end_ns"], c["stream_id"],
            c["status_code"], c["flags"], c.ips("local_ip"), c["local_port"],
            c.texts("method", "method_len"), c.texts("host", "host_len"), strict=True):
        service, meth = split_method(method)
        address, port_ = (ip, port) if port else split_hostport(host)
        out.append(Span("grpc_server", pid, conn, sid, start, end, code, service, meth, method,
                        address, port_, ctx.flag_names(flags), ctx.service_name(pid)))
    return out


def traced_to_spans(c: Columns, ctx: DecodeContext) -> list[Span]:
    """Traces on (struct grpc_server_trace_event): the spans, with what the joiner joins
    server spans by: the request's context, the client's address, the incoming
    traceparent."""
    out = to_spans(type(c)(c.arr["ev"], c.ctx), ctx)  # the plain record: the same columns
    for span, node, ip, port, tp in zip(out, c["ctx_node"], c.ips("remote_ip"),
                                        c["remote_port"], c["traceparent"], strict=True):
        span.context, span.client_address, span.client_port = node, ip, port
        span.traceparent = tp.decode("ascii", "replace")
    return out


def label_key(c: Columns) -> np.ndarray:
    """What a server span's labels come from: the listener, or the Host without one."""
    return c.key("tgid", "status_code", "local_port", "local_ip", ("method", "method_len"),
                 ("host", "host_len"))


def ids(c: Columns) -> SpanIds:
    """Per-row fields of to_spans' spans (a server span has no call)."""
    return SpanIds(c.arr["transport"], c.arr["stream_id"], np.zeros(len(c), np.uint64))


def count_rejected(c: Columns, ctx: DecodeContext) -> list[Span]:
    """RPCs rejected before any handler: no method is known there; counted by code."""
    for code in c["status_code"]:
        ctx.count("grpc_server_rejected", str(code))
    return []


PATH = ProbePath(
    name="grpc_server", object=OBJECT, functions=FUNCTIONS, fields=FIELDS, setup=setup,
    records=(RecordType("EV_GRPC_SERVER", "grpc_server_event", to_spans, label_key, ids),
             RecordType("EV_GRPC_SERVER_TRACED", "grpc_server_trace_event", traced_to_spans),
             RecordType("EV_GRPC_SERVER_REJECTED", "grpc_server_reject_event", count_rejected)),
    anchors=ANCHORS,
    # the ServeHTTP join: a gRPC call served by ServeHTTP finds its HTTP/2 request there
    shared_maps={"h2_ctx_live": "http2", "h2_ctx_ended": "http2", "h2_ctx_slots": "http2",
                 "srv_conn_ctx": "grpc_client"},  # traces: bpf_src/trace_ctx.h
    in_flight_maps=("grpc_server_inflight", "srv_traceparent"),
    slot_tables=(SlotTable("hot_grpc_server_slots", "hot_grpc_server_sweep"),
                 SlotTable("grpc_server_slots", "grpc_server_sweep")),
    stages=(Stage("server_stage", "flush_server_stage"),),
    variables=(VAR_STATUS_OK,))
