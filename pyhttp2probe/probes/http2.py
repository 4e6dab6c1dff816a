"""Generic HTTP/2 probes (net/http's bundled HTTP/2 and golang.org/x/net/http2), client and
server: attach plan -> one struct http2_config per flavor present + attach points, and
the decoding of struct http2_event into spans.

Two hits per request on each side (bpf_src/http2.bpf.c says why these points). A
process may link both flavors (net/http always bundles its own; x/net/http2 comes in
with gRPC or explicit use), so each flavor has its own programs and config key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..goelf.buildinfo import go_minor
from ..spans import Span, SpanIds, split_hostport
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
    SERVE_HTTP_ENDS,
    PlanFields,
    call_points,
    probe_offset,
    read_window,
    set_chain,
)

if TYPE_CHECKING:
    from libbpf_loader import HeaderLayout

    from ..goelf import AttachPlan
    from ..records import Columns, DecodeContext

OBJECT = "http2.bpf.o"
CONFIG_MAP = "http2_config"


@dataclass(frozen=True)
class Flavor:
    """Names of one HTTP/2 implementation's functions and types.

    The request and response types are net/http's own, except in Go 1.27's
    net/http/internal/http2, which has its own (a server request embedded by value in
    responseWriterState, a client request, a client response).
    """

    name: str
    code: int  # H2_FLAVOR_* in events.h
    fn_prefix: str  # e.g. "net/http.(*http2"
    type_prefix: str  # e.g. "net/http.http2"
    server_request: str = "net/http.Request"
    client_request: str = "net/http.Request"
    response: str = "net/http.Response"
    request_ctx: str = "ctx"  # the server request's context field

    def fn(self, recv: str, method: str) -> str:
        return f"{self.fn_prefix}{recv}).{method}"

    def ty(self, name: str) -> str:
        return self.type_prefix + name

    @property
    def server_start(self) -> str:
        return self.fn("serverConn", "runHandler")

    @property
    def server_end(self) -> str:
        return self.fn("responseWriter", "handlerDone")

    @property
    def client_start(self) -> str:
        return self.fn("clientStream", "encodeAndWriteHeaders")

    @property
    def client_end(self) -> str:
        return self.fn("clientStream", "cleanupWriteRequest")

    @property
    def server_panic(self) -> tuple[tuple[str, str], ...]:
        """(caller, callee): runHandler's deferred closure resets a panicking handler's
        stream with its one call of writeFrameFromHandler. The closure's number depends on
        how the compiler wraps runHandler's other defer (func1 in Go 1.20 .. 1.27, x/net
        v0.10 ..), so the first few closures are asked; none other calls it."""
        callee = self.fn("serverConn", "writeFrameFromHandler")
        return tuple((f"{self.server_start}.func{i}", callee) for i in range(1, 4))

    def functions(self) -> tuple[str, ...]:
        return (self.server_start, self.server_end, self.client_start, self.client_end,
                *dict.fromkeys(fn for pair in self.server_panic for fn in pair))

    def fields(self) -> tuple[str, ...]:
        t = self.ty
        return (t("responseWriter.rws"), t("responseWriterState.stream"),
                t("responseWriterState.conn"), t("responseWriterState.req"),
                t("responseWriterState.status"), t("responseWriterState.sentHeader"),
                t("stream.id"), t("clientStream.cc"),
                t("clientStream.ID"), t("clientStream.res"), t("clientStream.readClosed"),
                *(f"{r}.{n}" for r in dict.fromkeys((self.server_request, self.client_request))
                  for n in ("Method", "URL", "Host")),
                f"{self.server_request}.{self.request_ctx}", f"{self.response}.StatusCode",
                f"{self.client_request}.{self.request_ctx}",  # traces on: a call's context
                f"{self.server_request}.Header")  # traces on: an incoming traceparent


BUNDLED = Flavor("net/http", 0, "net/http.(*http2", "net/http.http2")
# Go 1.27 moved net/http's HTTP/2 into an internal package: same functions, own request
# types. It shares the bundled flavor's code (and programs): a binary links one of the two.
STD_INTERNAL = Flavor("net/http", 0, "net/http/internal/http2.(*", "net/http/internal/http2.",
                      server_request="net/http/internal/http2.ServerRequest",
                      client_request="net/http/internal/http2.ClientRequest",
                      response="net/http/internal/http2.ClientResponse", request_ctx="Context")
XNET = Flavor("x/net/http2", 1, "golang.org/x/net/http2.(*", "golang.org/x/net/http2.")
FLAVORS = (BUNDLED, STD_INTERNAL, XNET)
FLAVOR_NAMES = {fl.code: fl.name for fl in FLAVORS}

STD_FIELDS = ("net/url.URL.Host", "net/url.URL.Path")
FUNCTIONS = tuple(fn for fl in FLAVORS for fn in fl.functions())
CALLS = tuple(pair for fl in FLAVORS for pair in fl.server_panic)
FIELDS = tuple(dict.fromkeys((*STD_FIELDS, *(f for fl in FLAVORS for f in fl.fields()))))
_STD_H2 = "net/http/internal/http2"
# Go 1.27's HTTP/2 request and response types: plain data, read where they are used
ANCHORS = {
    f"{_STD_H2}.ServerRequest": (STD_INTERNAL.server_start,),
    f"{_STD_H2}.ClientRequest": (STD_INTERNAL.client_start,),
    f"{_STD_H2}.ClientResponse": (STD_INTERNAL.client_end,),
}


def _suffix(fl: Flavor) -> str:
    return "xnet" if fl is XNET else "bundled"


def _panic_points(fl: Flavor, plan: AttachPlan, notes: list[str]) -> list[AttachPoint]:
    """Where a panicking handler's request ends: its stream reset's call site (the panic
    path only: 0 hits otherwise)."""
    points = [p for caller, callee in fl.server_panic
              for p in call_points(plan, f"http2_server_panic_{_suffix(fl)}", caller, callee)]
    if not points:
        notes.append(f"{fl.name}: no call of {fl.server_panic[0][1]} in {fl.server_start}'s "
                     "closures: a panicking handler's request leaves no span")
    return points


# How the Go runtime lays out a map (http2.bpf.c reads a request's Header map): buckets up
# to Go 1.23, swiss tables from Go 1.24 (the GOEXPERIMENT=noswissmap builds of 1.24/1.25 are
# not told apart: their traceparent stays unread, nothing worse: the scan finds no key).
HDR_MAP_HMAP, HDR_MAP_SWISS = 1, 2
# bpf_src/srv_common.h: the tag bit of an h2_ctx_slots entry whose HTTP/2 request ended
CTX_HTTP_ENDED = 1
SWISS_MAPS_SINCE = 24


def _header_map(go_version: str) -> int:
    minor = go_minor(go_version)
    return HDR_MAP_HMAP if minor is not None and minor < SWISS_MAPS_SINCE else HDR_MAP_SWISS


def _rws_window(cfg: Any, stream: int) -> None:
    """The server end's one read of responseWriterState (bpf_src/http2.bpf.c read_rws):
    stream, conn, status, and req when it is a pointer, if one GO_WINDOW holds them."""
    fields = [(stream, 8), (cfg.rws_conn, 8), (cfg.rws_status, 8)]
    if not cfg.rws_req_inline:
        fields.append((cfg.rws_req, 8))
    lo = read_window(fields)
    if lo is None:
        return
    cfg.rws_window_on, cfg.rws_lo = 1, lo
    cfg.rws_w_stream, cfg.rws_w_conn = stream - lo, cfg.rws_conn - lo
    cfg.rws_w_status = cfg.rws_status - lo
    if not cfg.rws_req_inline:
        cfg.rws_w_req = cfg.rws_req - lo


def _flavor_config(fl: Flavor, sides: list[str], f: PlanFields, layout: HeaderLayout,
                   serve_http: bool, notes: list[str], trace: bool = False,
                   header_map: int = HDR_MAP_SWISS, gen: int = 1,
                   literals: tuple[int, int] | None = None) -> bytes:
    t = fl.ty
    cfg: Any = layout.new("http2_config")
    cfg.gen = gen
    if literals is not None:  # methods there go by address (read_request)
        cfg.lit_lo, cfg.lit_hi = literals
    if "server" in sides:
        sid = f[t("stream.id")]
        rws_stream = f[t("responseWriterState.stream")]
        set_chain(cfg, "rw_stream_id", [f[t("responseWriter.rws")], rws_stream], sid)
        set_chain(cfg, "rws_stream_id", [rws_stream], sid)
        cfg.w_rws = f[t("responseWriter.rws")]
        cfg.stream_id = sid  # the in-flight key: the stream's address + this
        cfg.rws_conn = f[t("responseWriterState.conn")]
        cfg.rws_req = f[t("responseWriterState.req")]
        cfg.rws_status = f[t("responseWriterState.status")]
        cfg.rws_req_inline = 0 if f.is_pointer(t("responseWriterState.req")) else 1
        _rws_window(cfg, f[t("responseWriterState.stream")])
        if f.has(t("responseWriterState.sentHeader")):  # a panic's status, if sent
            cfg.rws_sent_header = f[t("responseWriterState.sentHeader")]
        ctx_field = f"{fl.server_request}.{fl.request_ctx}"
        if not serve_http and not trace:
            pass  # no grpc ServeHTTP linked, no traces: no per-request map work
        elif f.has(ctx_field):  # joins gRPC-over-ServeHTTP calls and traces to requests
            cfg.req_ctx = f[ctx_field]
            cfg.req_ctx_valid = 1
            cfg.trace = int(trace)
            if trace and f.has(f"{fl.server_request}.Header"):
                cfg.req_header = f[f"{fl.server_request}.Header"]
                cfg.header_map = header_map
            elif trace:
                notes.append(f"{fl.name}: no request Header offset: an incoming "
                             "traceparent is not read")
        else:
            notes.append(f"{fl.name}: no Request.ctx offset: gRPC calls served by "
                         "ServeHTTP get no start (unmatched), requests join no trace")
        cfg.req_method = f[f"{fl.server_request}.Method"]
        cfg.req_url = f[f"{fl.server_request}.URL"]
        cfg.req_host = f[f"{fl.server_request}.Host"]
    if "client" in sides:
        cfg.cs_cc = f[t("clientStream.cc")]
        cfg.cs_id = f[t("clientStream.ID")]
        cfg.cs_res = f[t("clientStream.res")]
        lo = read_window([(cfg.cs_cc, 8), (cfg.cs_id, 4)])
        if lo is not None:  # bpf_src/http2.bpf.c read_cs_key
            cfg.cs_key_win_on, cfg.cs_key_lo = 1, lo
            cfg.cs_w_cc, cfg.cs_w_id = cfg.cs_cc - lo, cfg.cs_id - lo
        cfg.res_status = f[f"{fl.response}.StatusCode"]
        cfg.creq_method = f[f"{fl.client_request}.Method"]
        cfg.creq_url = f[f"{fl.client_request}.URL"]
        cfg.creq_host = f[f"{fl.client_request}.Host"]
        cctx = f"{fl.client_request}.{fl.request_ctx}"
        if trace and f.has(cctx):
            cfg.trace = 1
            cfg.creq_ctx = f[cctx]
        elif trace:
            notes.append(f"{fl.name}: no client request context offset: client requests "
                         "join no trace")
        if f.has(t("clientStream.readClosed")):  # optional: sharpens the error flag
            cfg.cs_read_closed = f[t("clientStream.readClosed")]
        else:
            notes.append(f"{fl.name}: no clientStream.readClosed offset: a late "
                         "cancel after a complete response counts as an error")
    cfg.url_host = f["net/url.URL.Host"]
    cfg.url_path = f["net/url.URL.Path"]
    return layout.to_bytes(cfg)


def setup(proc: ProcessImage, layout: HeaderLayout) -> PathSetup:
    """One config per HTTP/2 flavor linked (key tgid << 8 | flavor) and its attach points."""
    plan = proc.plan
    f = PlanFields(plan)
    serve_http = any(name in plan.functions for name in SERVE_HTTP_ENDS)
    out = PathSetup([], [])
    codes: set[int] = set()
    for fl in FLAVORS:
        if fl.code in codes:
            continue  # net/http's own HTTP/2: bundled or internal, never both
        sides: list[str] = []
        points: list[AttachPoint] = []
        sfx = _suffix(fl)
        for side, start_fn, end_fn in (("server", fl.server_start, fl.server_end),
                                       ("client", fl.client_start, fl.client_end)):
            start, end = probe_offset(plan, start_fn), probe_offset(plan, end_fn)
            if start is None or end is None:
                if (start is None) != (end is None):
                    out.notes.append(f"{fl.name} {side}: only one of {start_fn}, {end_fn} "
                                     "is linked (inlined?): side not traced")
                continue
            sides.append(side)
            points.append(AttachPoint(f"http2_{side}_start_{sfx}", start_fn, start))
            points.append(AttachPoint(f"http2_{side}_end_{sfx}", end_fn, end))
            if side == "server":
                points += _panic_points(fl, plan, out.notes)
        if not sides:
            continue
        value = _flavor_config(fl, sides, f, layout, serve_http, out.notes, proc.trace,
                               _header_map(plan.go_version), proc.gen, proc.literals)
        key = ((proc.pid << 8) | fl.code).to_bytes(8, "little")
        out.configs.append(ConfigEntry(CONFIG_MAP, key, value))
        out.points += points
        codes.add(fl.code)
        out.variant = "+".join(filter(None, (out.variant, f"{fl.name}:{'/'.join(sides)}")))
    if not out.configs:
        raise PathSkipped("no HTTP/2 client or server functions linked")
    return out


def to_spans(c: Columns, ctx: DecodeContext) -> list[Span]:
    """One HTTP/2 span per record: method = HTTP method, full_method = path, status_code =
    HTTP status, service = the HTTP/2 implementation that carried it ("net/http" or
    "x/net/http2"). server_address/port: the request's host (client: URL host; server:
    :authority, as OpenTelemetry's HTTP server conventions take it)."""
    client = (ctx.constant("EV_HTTP2_CLIENT"), ctx.constant("EV_HTTP2_CLIENT_TRACED"))
    out = []
    for typ, pid, conn, start, end, sid, status, flags, flavor, method, host, path in zip(
            c["type"], c["tgid"], c["conn"], c["start_ns"], c["end_ns"], c["stream_id"],
            c["status"], c["flags"], c["flavor"], c.methods("method", "method_len", "method_addr"),
            c.texts("host", "host_len"), c.texts("path", "path_len"), strict=True):
        address, port = split_hostport(host)
        kind = "http_client" if typ in client else "http_server"
        out.append(Span(kind, pid, conn, sid, start, end, status, FLAVOR_NAMES.get(flavor, ""),
                        method, path, address, port, ctx.flag_names(flags),
                        ctx.service_name(pid), attributes={"network.protocol.version": "2"}))
    return out


def traced_to_spans(c: Columns, ctx: DecodeContext) -> list[Span]:
    """Traces on (struct http2_trace_event): the spans, with the request context (server:
    its own; client: the one it was made under) and a server's incoming traceparent."""
    out = to_spans(type(c)(c.arr["ev"], c.ctx), ctx)  # the plain record: the same columns
    for span, node, tp in zip(out, c["ctx_node"], c["traceparent"], strict=True):
        span.context = node
        span.traceparent = tp.decode("ascii", "replace")
    return out


def label_key(c: Columns) -> np.ndarray:
    """What an HTTP/2 span's labels come from (not its path: paths are not labels)."""
    return c.key("type", "tgid", "status", "flavor", ("method", "method_len"), "method_addr",
                 ("host", "host_len"))


def ids(c: Columns) -> SpanIds:
    """Per-row fields of to_spans' spans, the path included (it is not a label)."""
    return SpanIds(c.arr["conn"], c.arr["stream_id"], np.zeros(len(c), np.uint64),
                   c.texts("path", "path_len"))


PATH = ProbePath(
    name="http2", object=OBJECT, functions=FUNCTIONS, fields=FIELDS, setup=setup, calls=CALLS,
    records=(RecordType("EV_HTTP2_CLIENT", "http2_event", to_spans, label_key, ids),
             RecordType("EV_HTTP2_SERVER", "http2_event", to_spans, label_key, ids),
             RecordType("EV_HTTP2_CLIENT_TRACED", "http2_trace_event", traced_to_spans),
             RecordType("EV_HTTP2_SERVER_TRACED", "http2_trace_event", traced_to_spans)),
    anchors=ANCHORS,
    shared_maps={"srv_conn_ctx": "grpc_client"},  # traces: bpf_src/trace_ctx.h
    in_flight_maps=("http2_server_inflight", "http2_client_inflight", "h2_ctx_live",
                    "srv_traceparent"),
    slot_tables=(SlotTable("hot_http2_server_slots", "hot_http2_sweep"),
                 SlotTable("http2_server_slots", "http2_sweep"),
                 SlotTable("hot_http2_client_slots", "hot_http2_client_sweep"),
                 SlotTable("http2_client_slots", "http2_client_sweep"),
                 SlotTable("h2_ctx_slots", "h2_ctx_sweep", ended_bit=CTX_HTTP_ENDED)),
    stages=(Stage("h2_stage", "flush_h2_stage"),))
