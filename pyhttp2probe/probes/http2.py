"""Generic HTTP/2 probes (net/http's bundled HTTP/2 and golang.org/x/net/http2), client and
server: attach plan -> one struct http2_config per flavor present + attach points, and
the decoding of struct http2_event into spans.

Two hits per request on each side (bpf_src/http2.bpf.c says why these points). A
process may link both flavors (net/http always bundles its own; x/net/http2 comes in
with gRPC or explicit use), so each flavor has its own programs and config key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..events import Layout
from ..spans import Span
from . import AttachPoint, after_stack_check
from .grpc_server import (
    FN_WRITE_STATUS_HT,
    PlanFields,
    _columns,
    _strs,
    set_chain,
    split_hostport,
    srv_flag_names,
)

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
    def server_panic(self) -> tuple[str, str]:
        """handlerPanicRST.writeFrame: the value method and its pointer wrapper (the one an
        interface call reaches; it may inline the other)."""
        return (f"{self.type_prefix}handlerPanicRST.writeFrame",
                self.fn("handlerPanicRST", "writeFrame"))

    def functions(self) -> tuple[str, ...]:
        return (self.server_start, self.server_end, self.client_start, self.client_end,
                *self.server_panic)

    def fields(self) -> tuple[str, ...]:
        t = self.ty
        return (t("responseWriter.rws"), t("responseWriterState.stream"),
                t("responseWriterState.conn"), t("responseWriterState.req"),
                t("responseWriterState.status"), t("responseWriterState.sentHeader"),
                t("stream.id"), t("clientStream.cc"),
                t("clientStream.ID"), t("clientStream.res"), t("clientStream.readClosed"),
                *(f"{r}.{n}" for r in dict.fromkeys((self.server_request, self.client_request))
                  for n in ("Method", "URL", "Host")),
                f"{self.server_request}.{self.request_ctx}", f"{self.response}.StatusCode")


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
FIELDS = tuple(dict.fromkeys((*STD_FIELDS, *(f for fl in FLAVORS for f in fl.fields()))))


def _suffix(fl: Flavor) -> str:
    return "xnet" if fl is XNET else "bundled"


@dataclass
class FlavorProbes:
    """One flavor's config (map key = tgid << 8 | flavor.code) and attach points."""

    flavor: Flavor
    config: bytes
    points: list[AttachPoint]
    sides: tuple[str, ...]  # "server", "client"

    def config_key(self, tgid: int) -> int:
        return (tgid << 8) | self.flavor.code


@dataclass
class Http2Probes:
    """Every flavor found in one binary."""

    flavors: list[FlavorProbes] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def points(self) -> list[AttachPoint]:
        return [p for fp in self.flavors for p in fp.points]


def _entry(functions: Mapping[str, Any], name: str, binary: str) -> int | None:
    """Past Go's stack check, where an entry probe fires once per call (see probes/)."""
    fo = functions.get(name)
    if fo is None:
        return None
    return after_stack_check(binary, int(fo.entry)) if binary else int(fo.entry)


def _panic_points(fl: Flavor, functions: Mapping[str, Any], binary: str,
                  notes: list[str]) -> list[AttachPoint]:
    """Where a panicking handler's request ends (error path only: 0 hits otherwise)."""
    sfx = _suffix(fl)
    value, ptr = fl.server_panic
    points = []
    for name, prog in ((value, f"http2_server_panic_{sfx}"),
                       (ptr, f"http2_server_panic_ptr_{sfx}")):
        off = _entry(functions, name, binary)
        if off is not None:
            points.append(AttachPoint(prog, name, off))
    if not points:
        notes.append(f"{fl.name}: {value} not linked: a panicking handler's request "
                     "leaves no span")
    return points


def build(plan: Any, layout: Layout, binary: str = "") -> Http2Probes:
    """Config and attach points for each HTTP/2 flavor (and side) linked into the binary."""
    functions: Mapping[str, Any] = plan.functions
    f = PlanFields(plan, binary)
    out = Http2Probes()
    serve_http = any(name in functions for name in FN_WRITE_STATUS_HT)
    for fl in FLAVORS:
        if any(fp.flavor.code == fl.code for fp in out.flavors):
            continue  # net/http's own HTTP/2: bundled or internal, never both
        sides: list[str] = []
        points: list[AttachPoint] = []
        sfx = _suffix(fl)
        pairs = (("server", fl.server_start, fl.server_end),
                 ("client", fl.client_start, fl.client_end))
        for side, start_fn, end_fn in pairs:
            start, end = _entry(functions, start_fn, binary), _entry(functions, end_fn, binary)
            if start is None or end is None:
                if (start is None) != (end is None):
                    out.notes.append(f"{fl.name} {side}: only one of {start_fn}, {end_fn} "
                                     "is linked (inlined?): side not traced")
                continue
            sides.append(side)
            points.append(AttachPoint(f"http2_{side}_start_{sfx}", start_fn, start))
            points.append(AttachPoint(f"http2_{side}_end_{sfx}", end_fn, end))
            if side == "server":
                points += _panic_points(fl, functions, binary, out.notes)
        if not sides:
            continue
        t = fl.ty
        cfg = layout.new("http2_config")
        if "server" in sides:
            sid = f[t("stream.id")]
            rws_stream = f[t("responseWriterState.stream")]
            set_chain(cfg, "rw_stream_id", [f[t("responseWriter.rws")], rws_stream], sid)
            set_chain(cfg, "rws_stream_id", [rws_stream], sid)
            cfg.w_rws = f[t("responseWriter.rws")]
            cfg.rws_conn = f[t("responseWriterState.conn")]
            cfg.rws_req = f[t("responseWriterState.req")]
            cfg.rws_status = f[t("responseWriterState.status")]
            cfg.rws_req_inline = 0 if f.is_pointer(t("responseWriterState.req")) else 1
            if f.has(t("responseWriterState.sentHeader")):  # a panic's status, if sent
                cfg.rws_sent_header = f[t("responseWriterState.sentHeader")]
            ctx_field = f"{fl.server_request}.{fl.request_ctx}"
            if not serve_http:
                pass  # no grpc ServeHTTP linked: nothing to join, no per-request map work
            elif f.has(ctx_field):  # joins gRPC-over-ServeHTTP calls to requests
                cfg.req_ctx = f[ctx_field]
                cfg.req_ctx_valid = 1
            else:
                out.notes.append(f"{fl.name}: no Request.ctx offset: gRPC calls served by "
                                 "ServeHTTP get no start (unmatched)")
        if "client" in sides:
            cfg.cs_cc = f[t("clientStream.cc")]
            cfg.cs_id = f[t("clientStream.ID")]
            cfg.cs_res = f[t("clientStream.res")]
            cfg.res_status = f[f"{fl.response}.StatusCode"]
            cfg.creq_method = f[f"{fl.client_request}.Method"]
            cfg.creq_url = f[f"{fl.client_request}.URL"]
            cfg.creq_host = f[f"{fl.client_request}.Host"]
            if f.has(t("clientStream.readClosed")):  # optional: sharpens the error flag
                cfg.cs_read_closed = f[t("clientStream.readClosed")]
            else:
                out.notes.append(f"{fl.name}: no clientStream.readClosed offset: a late "
                                 "cancel after a complete response counts as an error")
        if "server" in sides:
            cfg.req_method = f[f"{fl.server_request}.Method"]
            cfg.req_url = f[f"{fl.server_request}.URL"]
            cfg.req_host = f[f"{fl.server_request}.Host"]
        cfg.url_host = f["net/url.URL.Host"]
        cfg.url_path = f["net/url.URL.Path"]
        out.flavors.append(FlavorProbes(fl, layout.to_bytes(cfg), points, tuple(sides)))
    return out


# ---- decoding ---------------------------------------------------------------------------

@dataclass(slots=True)
class Http2Event:
    """One finished HTTP/2 request (struct http2_event); side is "client" or "server"."""

    side: str
    tgid: int
    conn: int
    start_ns: int
    end_ns: int
    stream_id: int
    status: int
    flags: int
    flavor: int
    method: str
    host: str
    path: str


def decode(layout: Layout, records: Any) -> list[Http2Event]:
    """Decode http2_event records (a sequence of bytes-like records), column-wise."""
    if not records:
        return []
    c = _columns(layout, "http2_event", records)
    client = layout.constants["EV_HTTP2_CLIENT"]
    sides = ["client" if t == client else "server" for t in c["type"]]
    return [Http2Event(*row) for row in zip(
        sides, c["tgid"], c["conn"], c["start_ns"], c["end_ns"], c["stream_id"], c["status"],
        c["flags"], c["flavor"], _strs(c["method"], c["method_len"]),
        _strs(c["host"], c["host_len"]), _strs(c["path"], c["path_len"]), strict=True)]


def span_from_event(ev: Http2Event, constants: Mapping[str, int],
                    service_name: str = "") -> Span:
    """One HTTP/2 span: method = HTTP method, full_method = path, status_code = HTTP status,
    service = the HTTP/2 implementation that carried it ("net/http" or "x/net/http2").

    server_address/port: the request's host (client: URL host; server: :authority, as
    OpenTelemetry's HTTP server conventions take it).
    """
    address, port = split_hostport(ev.host)
    start = ev.start_ns
    return Span(
        pid=ev.tgid, transport=ev.conn, stream_id=ev.stream_id, kind=f"http_{ev.side}",
        service=FLAVOR_NAMES.get(ev.flavor, ""), method=ev.method, full_method=ev.path,
        status_code=ev.status,
        start_ns=start, end_ns=ev.end_ns,
        duration_s=(ev.end_ns - start) / 1e9 if start else 0.0,
        server_address=address, server_port=port,
        flags=srv_flag_names(ev.flags, constants), service_name=service_name)
