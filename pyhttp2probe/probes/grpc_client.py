"""gRPC client path (bpf_src/grpc_client.bpf.c says why these probe points).

Every offset comes from the plan (DWARF, or the offsets table for stripped binaries); the
layout decisions that differ across grpc-go versions are made here, from which fields the
plan has and whether an embedded field is a pointer or a value:
  <1.69      csAttempt.s -> transport.Stream{id, ct, status} (ct *http2Client, but a
             ClientTransport interface in 1.66-1.68: the pointer is its data word)
  1.69-1.76  csAttempt.s -> transport.ClientStream{*Stream (pointer), ct, status}
  >=1.77     csAttempt.transportStream -> transport.ClientStream{Stream (value), ct, status}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..spans import Span, SpanIds, parse_target, split_method
from . import (
    SLOT_ENDED,
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
    PlanFields,
    call_points,
    entry_point,
    read_window,
    return_points,
    set_chain,
    tcpaddr_network_fn,
)

if TYPE_CHECKING:
    from libbpf_loader import HeaderLayout

    from ..goelf import AttachPlan
    from ..records import Columns, DecodeContext

GRPC = "google.golang.org/grpc"
TRANSPORT = GRPC + "/internal/transport"
STATUS = GRPC + "/internal/status"
SPB = "google.golang.org/genproto/googleapis/rpc/status"

FN_START = GRPC + ".(*clientStream).newAttemptLocked"
FN_END = GRPC + ".(*clientStream).finish"
# The end of a call with an attempt: finish()'s CALL of it (bpf_src/grpc_client.bpf.c END).
FN_ATTEMPT_FINISH = GRPC + ".(*csAttempt).finish"
# Where finish() is called while cs.attempt may still be nil (the first attempt could not
# be made): withRetry from v1.49, newClientStreamWithParams / newClientStream before.
FN_WITH_RETRY = GRPC + ".(*clientStream).withRetry"
FN_NEW_CLIENT_STREAM_WITH_PARAMS = GRPC + ".newClientStreamWithParams"
FN_FIRST_ATTEMPT = (FN_WITH_RETRY, FN_NEW_CLIENT_STREAM_WITH_PARAMS, GRPC + ".newClientStream")
# Where a call starts, once (bpf_src/grpc_client.bpf.c START): newClientStreamWithParams'
# CALL of newAttemptLocked (<= v1.48), else its CALL of withRetry, whose loop makes the
# first attempt (and again a retry's, when the first op failed: so not newAttemptLocked).
START_CALLS = ((FN_NEW_CLIENT_STREAM_WITH_PARAMS, FN_START),
               (FN_NEW_CLIENT_STREAM_WITH_PARAMS, FN_WITH_RETRY))
FN_STATUS_ERROR = STATUS + ".(*Error).Error"
FN_TCPADDR_NETWORK = "net.(*TCPAddr).Network"
# >= 1.50: failed stream creation returns without finish(); its last attempt ends where
# shouldRetry returns an error (RET probes: error path only). Older versions call finish().
FN_SHOULD_RETRY = GRPC + ".(*csAttempt).shouldRetry"
# v1.78+: newClientStream's deferred cleanup calls endOfClientStream only when it fails: the
# end of calls failing before a stream, reached by no other call (so a unary call's error
# status does not also pass shouldRetry's probe). The closure is one of newClientStream's.
FN_END_OF_CLIENT_STREAM = GRPC + ".endOfClientStream"
FN_NEW_CLIENT_STREAM_CLOSURES = tuple(f"{GRPC}.newClientStream.func{i}" for i in range(1, 8))
# What shouldRetry returns when a retry policy gives up: fmt.Errorf("...: %w", err).
FN_WRAP_ERROR = "fmt.(*wrapError).Error"
# fmt.wrapError{msg string; err error} since Go 1.13: err after the string header.
WRAP_ERROR_ERR = 16

# The transport's constructor: its RETs fill the connection cache (bpf_src/conn_cache.h).
# newHTTP2Client returns the *http2Client (RAX); v1.69 renamed it NewHTTP2Client, which
# returns a ClientTransport (the pointer is the interface's data word, RBX).
FN_NEW_TRANSPORT = ((TRANSPORT + ".newHTTP2Client", 1), (TRANSPORT + ".NewHTTP2Client", 2))

FUNCTIONS = (FN_START, FN_END, FN_ATTEMPT_FINISH, *FN_FIRST_ATTEMPT, FN_STATUS_ERROR,
             FN_TCPADDR_NETWORK, FN_SHOULD_RETRY, FN_END_OF_CLIENT_STREAM,
             *FN_NEW_CLIENT_STREAM_CLOSURES, FN_WRAP_ERROR,
             *(fn for fn, _ in FN_NEW_TRANSPORT))
CALLS = ((FN_END, FN_ATTEMPT_FINISH), *((fn, FN_END) for fn in FN_FIRST_ATTEMPT),
         *START_CALLS,
         *((fn, FN_END_OF_CLIENT_STREAM) for fn in FN_NEW_CLIENT_STREAM_CLOSURES))
FIELDS = (
    f"{GRPC}.clientStream.attempt", f"{GRPC}.clientStream.finished",
    f"{GRPC}.clientStream.callHdr", f"{GRPC}.clientStream.cc", f"{GRPC}.ClientConn.target",
    f"{GRPC}.csAttempt.s", f"{GRPC}.csAttempt.transportStream", f"{GRPC}.csAttempt.cs",
    f"{GRPC}.csAttempt.t", f"{GRPC}.csAttempt.transport",
    f"{TRANSPORT}.CallHdr.Method", f"{TRANSPORT}.Stream.id", f"{TRANSPORT}.Stream.ct",
    f"{TRANSPORT}.Stream.method",
    f"{TRANSPORT}.Stream.status", f"{TRANSPORT}.ClientStream.Stream",
    f"{TRANSPORT}.ClientStream.ct", f"{TRANSPORT}.ClientStream.status",
    f"{TRANSPORT}.http2Client.remoteAddr",
    # traces on: the call's context (its server request, trace_ctx.h), the local address
    f"{GRPC}.clientStream.ctx", f"{TRANSPORT}.http2Client.localAddr",
    f"{STATUS}.Error.s", f"{STATUS}.Status.s", f"{SPB}.Status.Code",
    "net.TCPAddr.IP", "net.TCPAddr.Port",
)
# CallHdr has no methods: present wherever the client's transport is linked.
ANCHORS = {f"{TRANSPORT}.CallHdr": (f"{TRANSPORT}.(*http2Client).NewStream",)}

OBJECT = "grpc_client.bpf.o"
CONFIG_MAP = "grpc_client_config"

# Interface types a transport pointer is held in: the value is (itab, data), the
# *http2Client is the data word.
_TRANSPORT_IFACES = (f"{TRANSPORT}.ClientTransport",)


def _pointer_word(f: PlanFields, key: str) -> int:
    """Where, inside field `key`, the transport pointer is: 0 for a *http2Client field, 8
    (the data word) for a ClientTransport interface field (grpc-go 1.66-1.68's Stream.ct;
    reading its first word gave the itab, one static address for every connection)."""
    gotype = f.go_type(key)
    if gotype.startswith("*"):
        return 0
    if gotype in _TRANSPORT_IFACES:
        return 8
    raise PathSkipped(f"{f.plan.path}: {key} has type {gotype}, neither a pointer nor "
                      "ClientTransport")


def _stream_window(cfg: Any, f: PlanFields, base: int, ct: int) -> None:
    """The end's one read of the stream (grpc_client_common.h fill_end): its id and method,
    at `base` + their Stream offsets, and ct when it fits too; left off (sw_on 0: a read per
    field) when they do not fit."""
    if not f.has(f"{TRANSPORT}.Stream.method"):
        return
    sid, method = base + f[f"{TRANSPORT}.Stream.id"], base + f[f"{TRANSPORT}.Stream.method"]
    lo = read_window([(sid, 4), (method, 16)])
    if lo is None:
        return
    cfg.sw_on, cfg.sw_lo, cfg.sw_id, cfg.sw_method = 1, lo, sid - lo, method - lo
    if read_window([(sid, 4), (method, 16), (ct, 8)]) == lo:
        cfg.sw_ct_on, cfg.sw_ct = 1, ct - lo


def setup(proc: ProcessImage, layout: HeaderLayout) -> PathSetup:
    """Config (keyed by tgid) and attach points for one process."""
    plan = proc.plan
    if FN_START not in plan.functions:
        raise PathSkipped("no grpc-go client linked")
    f = PlanFields(plan)
    cfg = layout.new("grpc_client_config")
    cfg.gen = proc.gen
    notes: list[str] = []

    cfg.itab_fun0 = ITAB_FUN0_AMD64
    cfg.cs_finished = f[f"{GRPC}.clientStream.finished"]
    cfg.cs_attempt = f[f"{GRPC}.clientStream.attempt"]
    # Both in one 64-byte read when they fit (bpf_src/grpc_client_common.h read_cs_state).
    window = read_window([(cfg.cs_finished, 1), (cfg.cs_attempt, 8)], 64)
    if window is not None:
        cfg.cs_window, cfg.cs_window_on = window, 1
    set_chain(cfg, "cs_method", [f[f"{GRPC}.clientStream.callHdr"]],
              f[f"{TRANSPORT}.CallHdr.Method"])
    set_chain(cfg, "cs_target", [f[f"{GRPC}.clientStream.cc"]], f[f"{GRPC}.ClientConn.target"])
    code = f[f"{SPB}.Status.Code"]
    status_s = f[f"{STATUS}.Status.s"]
    set_chain(cfg, "err_code", [f[f"{STATUS}.Error.s"], status_s], code)

    if f.has(f"{GRPC}.csAttempt.transportStream"):
        cfg.attempt_stream = f[f"{GRPC}.csAttempt.transportStream"]
    else:
        cfg.attempt_stream = f[f"{GRPC}.csAttempt.s"]

    embed = f"{TRANSPORT}.ClientStream.Stream"
    sid = f[f"{TRANSPORT}.Stream.id"]
    if f.has(embed):
        if f.is_pointer(embed):
            variant = "ClientStream{*Stream}"
            set_chain(cfg, "stream_id", [f[embed]], sid)
        else:
            variant = "ClientStream{Stream}"
            set_chain(cfg, "stream_id", [], f[embed] + sid)
        ct = f"{TRANSPORT}.ClientStream.ct"
        set_chain(cfg, "stream_ct", [], f[ct] + _pointer_word(f, ct))
        if not f.is_pointer(embed):
            _stream_window(cfg, f, f[embed], f[ct] + _pointer_word(f, ct))
        set_chain(cfg, "stream_code", [f[f"{TRANSPORT}.ClientStream.status"], status_s], code)
    else:
        variant = "Stream"
        set_chain(cfg, "stream_id", [], sid)
        ct = f"{TRANSPORT}.Stream.ct"
        word = _pointer_word(f, ct)
        if word:
            variant = "Stream{ct ClientTransport}"
        set_chain(cfg, "stream_ct", [], f[ct] + word)
        set_chain(cfg, "stream_code", [f[f"{TRANSPORT}.Stream.status"], status_s], code)
        _stream_window(cfg, f, 0, f[ct] + word)

    set_chain(cfg, "ct_remote_addr", [], f[f"{TRANSPORT}.http2Client.remoteAddr"])
    cfg.tcpaddr_ip = f["net.TCPAddr.IP"]
    cfg.tcpaddr_port = f["net.TCPAddr.Port"]

    status_error = plan.functions.get(FN_STATUS_ERROR)
    if status_error is None:
        raise PathSkipped(f"{plan.path}: function {FN_STATUS_ERROR} not found in the binary")
    cfg.status_error_fn = proc.runtime_addr(status_error.entry)
    cfg.tcpaddr_network_fn = tcpaddr_network_fn(plan, proc.runtime_addr, notes)
    wrap = plan.functions.get(FN_WRAP_ERROR)
    cfg.wrap_error_fn = proc.runtime_addr(wrap.entry) if wrap is not None else 0
    cfg.wrap_error_err = WRAP_ERROR_ERR
    if proc.literals is not None:
        cfg.lit_lo, cfg.lit_hi = proc.literals
    else:
        notes.append("no read-only .rodata mapped: every call's method is copied")

    if proc.trace:
        if f.has(f"{GRPC}.clientStream.ctx") and f.has(f"{TRANSPORT}.http2Client.localAddr"):
            cfg.trace = 1
            cfg.cs_ctx = f[f"{GRPC}.clientStream.ctx"]
            set_chain(cfg, "ct_local_addr", [], f[f"{TRANSPORT}.http2Client.localAddr"])
        else:
            notes.append("clientStream.ctx or http2Client.localAddr absent: client spans "
                         "are not joined to traces")
    cleanup = _cleanup_sites(plan)
    points = [*_start_points(cfg, plan, notes), *_end_points(cfg, f, notes, bool(cleanup))]
    if cleanup:
        points += cleanup
    elif FN_SHOULD_RETRY in plan.functions:
        fail = return_points(plan, "grpc_client_fail", FN_SHOULD_RETRY)
        if not fail:
            raise PathSkipped(f"{plan.path}: no RET found in {FN_SHOULD_RETRY}")
        points += fail
    for fn, reg in FN_NEW_TRANSPORT:
        conn = return_points(plan, "grpc_client_conn", fn)
        if conn:
            cfg.conn_cache, cfg.conn_ret_reg = 1, reg
            points += conn
            break
    else:
        notes.append("no RET of the transport's constructor found: every call reads its "
                     "server address (no connection cache)")
    key = proc.pid.to_bytes(4, "little")
    return PathSetup([ConfigEntry(CONFIG_MAP, key, layout.to_bytes(cfg))], points, notes,
                     variant)


def _start_sites(plan: AttachPlan) -> list[AttachPoint]:
    """The start's call sites (bpf_src/grpc_client.bpf.c START): the first of START_CALLS
    found, once per call; [] when none is."""
    for caller, callee in START_CALLS:
        first = call_points(plan, "grpc_client_start", caller, callee)
        if first:
            return first
    return []


def _cleanup_sites(plan: AttachPlan) -> list[AttachPoint]:
    """v1.78+: newClientStream's cleanup CALL of endOfClientStream (FAIL); [] before."""
    return [p for fn in FN_NEW_CLIENT_STREAM_CLOSURES
            for p in call_points(plan, "grpc_client_fail_cleanup", fn, FN_END_OF_CLIENT_STREAM)]


def _end_sites(plan: AttachPlan, cleanup: bool) -> tuple[list[AttachPoint], list[AttachPoint]]:
    """The end's call sites (bpf_src/grpc_client.bpf.c END): finish()'s CALL of the
    attempt's finish, and finish()'s CALLs where a call may have no attempt (none needed
    when newClientStream's cleanup ends those: `cleanup`)."""
    at_attempt = call_points(plan, "grpc_client_end_attempt", FN_END, FN_ATTEMPT_FINISH)
    no_attempt = [] if cleanup else [p for fn in FN_FIRST_ATTEMPT
                                     for p in call_points(plan, "grpc_client_end", fn, FN_END)]
    return at_attempt, no_attempt


def call_site_gaps(plan: AttachPlan) -> list[str]:
    """Which of the client's call-site probes this binary lacks (setup then falls back to
    entry probes, and says so); ci/gen_offsets_table.py checks every covered build."""
    gaps = []
    if not _start_sites(plan):
        gaps.append(f"no CALL of {' or '.join(b for _, b in START_CALLS)} in "
                    f"{FN_NEW_CLIENT_STREAM_WITH_PARAMS}")
    cleanup = bool(_cleanup_sites(plan))
    at_attempt, no_attempt = _end_sites(plan, cleanup)
    if not at_attempt:
        gaps.append(f"no CALL of {FN_ATTEMPT_FINISH} in {FN_END}")
    if not (no_attempt or cleanup):
        gaps.append(f"no CALL of finish() before a first attempt, nor of "
                    f"{FN_END_OF_CLIENT_STREAM} in newClientStream's cleanup")
    return gaps


def _start_points(cfg: Any, plan: AttachPlan, notes: list[str]) -> list[AttachPoint]:
    """Where calls start: the start's call sites (no read of cs.attempt); else
    newAttemptLocked's entry, which reads cs.attempt to skip retries."""
    first = _start_sites(plan)
    if first:
        cfg.start_first = 1
        return first
    notes.append("newClientStreamWithParams' CALL of newAttemptLocked or withRetry not found: "
                 "calls start at newAttemptLocked's entry (each attempt traps, reads cs.attempt)")
    return [entry_point(plan, "grpc_client_start", FN_START)]


def _attempt_transport(f: PlanFields) -> int | None:
    """Where, in a csAttempt, the *http2Client its stream was made on is (csAttempt.t, named
    transport from v1.71: a ClientTransport, so its data word), or None when the plan does
    not have it."""
    t = next((k for k in (f"{GRPC}.csAttempt.transport", f"{GRPC}.csAttempt.t") if f.has(k)),
             None)
    if t is None:
        return None
    try:
        return f[t] + _pointer_word(f, t)
    except PathSkipped:
        return None  # another type: the end reads the stream's ct instead


def _attempt_window(cfg: Any, f: PlanFields) -> None:
    """The end's one read of the attempt: cs and the stream, and the transport when it fits
    too (grpc_client_end_attempt); left off (aw_on 0: a read per field) when they do not."""
    fields = [(cfg.attempt_cs, 8), (cfg.attempt_stream, 8)]
    ct = _attempt_transport(f)
    if ct is not None:
        lo = read_window([*fields, (ct, 8)], 64)
        if lo is not None:
            cfg.aw_lo, cfg.aw_on, cfg.aw_ct_on, cfg.aw_ct = lo, 1, 1, ct - lo
            return
    lo = read_window(fields, 64)
    if lo is not None:
        cfg.aw_lo, cfg.aw_on = lo, 1


def _end_points(cfg: Any, f: PlanFields, notes: list[str], cleanup: bool) -> list[AttachPoint]:
    """Where calls end: the end's call sites when all are found (and csAttempt.cs has an
    offset); else finish()'s entry."""
    plan = f.plan
    at_attempt, no_attempt = _end_sites(plan, cleanup)
    if at_attempt and (no_attempt or cleanup) and f.has(f"{GRPC}.csAttempt.cs"):
        cfg.end_at_attempt = 1
        cfg.attempt_cs = f[f"{GRPC}.csAttempt.cs"]
        _attempt_window(cfg, f)
        return at_attempt + no_attempt
    notes.append("finish()'s calls of the attempt's finish not found: calls end at finish()'s "
                 "entry (a streaming call's context watcher adds a hit)")
    return [entry_point(plan, "grpc_client_end", FN_END)]


def to_spans(c: Columns, ctx: DecodeContext) -> list[Span]:
    """Client spans; a call that never got a connection reports its dial target as peer."""
    return _spans(c, ctx, c.texts("method", "method_len"), c.texts("target", "target_len"))


def lit_to_spans(c: Columns, ctx: DecodeContext) -> list[Span]:
    """Client spans of struct grpc_client_lit_event: a call with a connection whose method
    is a literal of the binary, read from it by address (pyhttp2probe/literals.py)."""
    return _spans(c, ctx, c.literals("method_addr", "method_len"), [""] * len(c))


def _spans(c: Columns, ctx: DecodeContext, methods: list[str],
           targets: list[str]) -> list[Span]:
    out = []
    for pid, conn, call, start, end, sid, code, flags, ip, port, method, target in zip(
            c["tgid"], c["transport"], c["cs"], c["start_ns"], c["end_ns"], c["stream_id"],
            c["status_code"], c["flags"], c.ips("peer_ip"), c["peer_port"], methods,
            targets, strict=True):
        service, meth = split_method(method)
        address, port_ = (ip, port) if conn else parse_target(target)
        out.append(Span(
            "grpc_client", pid, conn, sid if conn else 0, start, end, code, service, meth,
            method, address, port_, ctx.flag_names(flags), ctx.service_name(pid), call))
    return out


def traced_to_spans(c: Columns, ctx: DecodeContext) -> list[Span]:
    """Traces on (struct grpc_client_trace_event): the spans, with what the joiner joins
    client spans by: the request context of the call, the connection's local address."""
    out = to_spans(type(c)(c.arr["ev"], c.ctx), ctx)  # the plain record: the same columns
    for span, node, ip, port in zip(out, c["ctx_node"], c.ips("local_ip"), c["local_port"],
                                    strict=True):
        span.context, span.client_address, span.client_port = node, ip, port
    return out


def label_key(c: Columns) -> np.ndarray:
    """What a client span's labels come from: the peer is (ip, port) on a connection, the
    dial target without one."""
    return c.key("tgid", c.nonzero("transport"), "status_code", "peer_port", "peer_ip",
                 ("method", "method_len"), ("target", "target_len"))


def lit_label_key(c: Columns) -> np.ndarray:
    """label_key of struct grpc_client_lit_event: in one process, the method's address and
    length name its text (a literal); the call always had a connection."""
    return c.key("tgid", "status_code", "peer_port", "peer_ip", "method_addr", "method_len")


def ids(c: Columns) -> SpanIds:
    """Per-row fields of to_spans' spans: a call without a connection has no stream id."""
    conn = c.arr["transport"]
    return SpanIds(conn, np.where(conn != 0, c.arr["stream_id"], 0), c.arr["cs"])


PATH = ProbePath(
    name="grpc_client", object=OBJECT, functions=FUNCTIONS, fields=FIELDS, setup=setup,
    calls=CALLS,
    records=(RecordType("EV_GRPC_CLIENT", "grpc_client_event", to_spans, label_key, ids),
             RecordType("EV_GRPC_CLIENT_LIT", "grpc_client_lit_event", lit_to_spans,
                        lit_label_key, ids),
             RecordType("EV_GRPC_CLIENT_TRACED", "grpc_client_trace_event", traced_to_spans)),
    anchors=ANCHORS, in_flight_maps=("inflight",),
    slot_tables=(SlotTable("hot_inflight_slots", "hot_grpc_client_sweep", SLOT_ENDED),
                 SlotTable("inflight_slots", "grpc_client_sweep", SLOT_ENDED)),
    stages=(Stage("client_stage", "flush_client_stage"),))
