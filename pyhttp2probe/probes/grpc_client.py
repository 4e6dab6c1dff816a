"""gRPC client probes: attach plan -> struct grpc_client_config + attach points.

Every offset comes from the plan (DWARF, or the offsets table for stripped binaries); the
layout decisions that differ across grpc-go versions are made here, from which fields the
plan has and whether an embedded field is a pointer or a value:
  <1.69      csAttempt.s -> transport.Stream{id, ct, status} (ct *http2Client, but a
             ClientTransport interface in 1.66-1.68: the pointer is its data word)
  1.69-1.76  csAttempt.s -> transport.ClientStream{*Stream (pointer), ct, status}
  >=1.77     csAttempt.transportStream -> transport.ClientStream{Stream (value), ct, status}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..events import Layout
from . import AttachPoint, after_stack_check

GRPC = "google.golang.org/grpc"
TRANSPORT = GRPC + "/internal/transport"
STATUS = GRPC + "/internal/status"
SPB = "google.golang.org/genproto/googleapis/rpc/status"

FN_START = GRPC + ".(*clientStream).newAttemptLocked"
FN_END = GRPC + ".(*clientStream).finish"
FN_STATUS_ERROR = STATUS + ".(*Error).Error"
FN_TCPADDR_NETWORK = "net.(*TCPAddr).Network"
FN_NEWSTREAM = TRANSPORT + ".(*http2Client).NewStream"  # ablation only
# >= 1.50: failed stream creation returns without finish(); its last attempt ends where
# shouldRetry returns an error (RET probes, plus its entry for the error it was given:
# error path only). Older versions call finish().
FN_SHOULD_RETRY = GRPC + ".(*csAttempt).shouldRetry"

ITAB_FUN0_AMD64 = 24  # runtime.itab{inter, _type, hash uint32, _ [4]byte, fun [1]uintptr}

FUNCTIONS = (FN_START, FN_END, FN_STATUS_ERROR, FN_TCPADDR_NETWORK, FN_NEWSTREAM,
             FN_SHOULD_RETRY)
FIELDS = (
    f"{GRPC}.clientStream.attempt", f"{GRPC}.clientStream.finished",
    f"{GRPC}.clientStream.callHdr", f"{GRPC}.clientStream.cc", f"{GRPC}.ClientConn.target",
    f"{GRPC}.csAttempt.s", f"{GRPC}.csAttempt.transportStream",
    f"{TRANSPORT}.CallHdr.Method", f"{TRANSPORT}.Stream.id", f"{TRANSPORT}.Stream.ct",
    f"{TRANSPORT}.Stream.status", f"{TRANSPORT}.ClientStream.Stream",
    f"{TRANSPORT}.ClientStream.ct", f"{TRANSPORT}.ClientStream.status",
    f"{TRANSPORT}.http2Client.remoteAddr", f"{TRANSPORT}.http2Client.nextID",
    f"{STATUS}.Error.s", f"{STATUS}.Status.s", f"{SPB}.Status.Code",
    "net.TCPAddr.IP", "net.TCPAddr.Port",
)

PROGRAMS = {"ours": ("grpc_client_start", "grpc_client_end"),
            "oldkey": ("oldkey_start", "oldkey_end")}


class ProbePlanError(Exception):
    """The plan lacks something these probes need; the message names it."""


@dataclass
class ClientProbes:
    """What the tracer loads: config bytes for the tgid key, and where to attach."""

    config: bytes
    points: list[AttachPoint]
    layout_name: str
    notes: list[str] = field(default_factory=list)


def _offset(v: Any) -> int:
    return int(v) if isinstance(v, int) else int(v.offset)


def _is_pointer(v: Any) -> bool:
    """Whether a field holds a pointer, when the plan gives a flag or a Go type name
    (kept for the server-side probes, which share these helpers)."""
    for attr in ("is_pointer", "pointer"):
        flag = getattr(v, attr, None)
        if isinstance(flag, bool):
            return flag
    for attr in ("type", "type_name", "go_type"):
        name = getattr(v, attr, None)
        if isinstance(name, str):
            return name.startswith("*")
    raise ProbePlanError(f"plan field {v!r} says neither pointer nor value")


class _Fields:
    def __init__(self, fields: Mapping[str, Any], binary: str) -> None:
        self.fields = fields
        self.binary = binary

    def has(self, key: str) -> bool:
        return key in self.fields and self.fields[key] is not None

    def __getitem__(self, key: str) -> int:
        if not self.has(key):
            raise ProbePlanError(f"{self.binary}: no offset for field {key} in the attach plan")
        return _offset(self.fields[key])

    def raw(self, key: str) -> Any:
        return self.fields[key]


def _chain(cfg: Any, name: str, hops: list[int], last: int) -> None:
    c = getattr(cfg, name)
    c.valid = 1
    c.nhops = len(hops)
    for i, h in enumerate(hops):
        c.hop[i] = h
    c.last = last


# Interface types a transport pointer is held in: the value is (itab, data), the
# *http2Client is the data word.
_TRANSPORT_IFACES = (f"{TRANSPORT}.ClientTransport",)


def _pointer_word(plan: Any, key: str, binary: str) -> int:
    """Where, inside field `key`, the transport pointer is: 0 for a *http2Client field, 8
    (the data word) for a ClientTransport interface field (grpc-go 1.66-1.68's Stream.ct;
    reading its first word gave the itab, one static address for every connection)."""
    gotype = (getattr(plan, "field_types", None) or {}).get(key)
    if gotype is None:
        raise ProbePlanError(f"{binary}: the plan gives no Go type for {key}")
    if gotype.startswith("*"):
        return 0
    if gotype in _TRANSPORT_IFACES:
        return 8
    raise ProbePlanError(f"{binary}: {key} has type {gotype}, neither a pointer nor "
                         "ClientTransport")


def build(plan: Any, layout: Layout, runtime_addr: Callable[[int], int],
          variant: str = "ours", binary: str = "") -> ClientProbes:
    """Config and attach points for one process.

    `runtime_addr(file_offset)` maps a file offset of the binary to its address in the
    process (load bias for PIE); the status-error and TCPAddr checks compare code addresses.
    """
    functions: Mapping[str, Any] = plan.functions
    f = _Fields(plan.fields, binary)
    cfg = layout.new("grpc_client_config")
    notes: list[str] = []

    cfg.itab_fun0 = ITAB_FUN0_AMD64
    cfg.cs_finished = f[f"{GRPC}.clientStream.finished"]
    cfg.cs_attempt = f[f"{GRPC}.clientStream.attempt"]
    _chain(cfg, "cs_method", [f[f"{GRPC}.clientStream.callHdr"]], f[f"{TRANSPORT}.CallHdr.Method"])
    _chain(cfg, "cs_target", [f[f"{GRPC}.clientStream.cc"]], f[f"{GRPC}.ClientConn.target"])
    code = f[f"{SPB}.Status.Code"]
    status_s = f[f"{STATUS}.Status.s"]
    _chain(cfg, "err_code", [f[f"{STATUS}.Error.s"], status_s], code)

    if f.has(f"{GRPC}.csAttempt.transportStream"):
        cfg.attempt_stream = f[f"{GRPC}.csAttempt.transportStream"]
    else:
        cfg.attempt_stream = f[f"{GRPC}.csAttempt.s"]

    embed = f"{TRANSPORT}.ClientStream.Stream"
    sid = f[f"{TRANSPORT}.Stream.id"]
    if f.has(embed):
        gotype = getattr(plan, "field_types", {}).get(embed)
        if gotype is None:
            raise ProbePlanError(f"{binary}: the plan does not say whether {embed} is "
                                 "embedded by pointer or by value")
        if gotype.startswith("*"):
            layout_name = "ClientStream{*Stream}"
            _chain(cfg, "stream_id", [f[embed]], sid)
        else:
            layout_name = "ClientStream{Stream}"
            _chain(cfg, "stream_id", [], f[embed] + sid)
        ct = f"{TRANSPORT}.ClientStream.ct"
        _chain(cfg, "stream_ct", [], f[ct] + _pointer_word(plan, ct, binary))
        _chain(cfg, "stream_code", [f[f"{TRANSPORT}.ClientStream.status"], status_s], code)
    else:
        layout_name = "Stream"
        _chain(cfg, "stream_id", [], sid)
        ct = f"{TRANSPORT}.Stream.ct"
        word = _pointer_word(plan, ct, binary)
        if word:
            layout_name = "Stream{ct ClientTransport}"
        _chain(cfg, "stream_ct", [], f[ct] + word)
        _chain(cfg, "stream_code", [f[f"{TRANSPORT}.Stream.status"], status_s], code)

    _chain(cfg, "ct_remote_addr", [], f[f"{TRANSPORT}.http2Client.remoteAddr"])
    cfg.tcpaddr_ip = f["net.TCPAddr.IP"]
    cfg.tcpaddr_port = f["net.TCPAddr.Port"]

    def entry(sym: str) -> int:
        fo = functions.get(sym)
        if fo is None:
            raise ProbePlanError(f"{binary}: function {sym} not found in the binary")
        return int(fo.entry)

    cfg.status_error_fn = runtime_addr(entry(FN_STATUS_ERROR))
    if FN_TCPADDR_NETWORK in functions:
        cfg.tcpaddr_network_fn = runtime_addr(entry(FN_TCPADDR_NETWORK))
    else:
        notes.append("net.(*TCPAddr).Network absent: peer address read without type check")

    start_prog, end_prog = PROGRAMS[variant]
    def body(sym: str) -> int:
        """Past the stack check: an entry probe there fires once per call (see helper)."""
        return after_stack_check(binary, entry(sym)) if binary else entry(sym)

    if variant == "oldkey":
        cfg.ct_next_id = f[f"{TRANSPORT}.http2Client.nextID"]
        start = AttachPoint(start_prog, FN_NEWSTREAM, body(FN_NEWSTREAM))
    else:
        start = AttachPoint(start_prog, FN_START, body(FN_START))
    points = [start, AttachPoint(end_prog, FN_END, body(FN_END))]
    if variant == "ours" and FN_SHOULD_RETRY in functions:
        rets = list(functions[FN_SHOULD_RETRY].returns)
        if not rets:
            raise ProbePlanError(f"{binary}: no RET found in {FN_SHOULD_RETRY}")
        points += [AttachPoint("grpc_client_fail_entry", FN_SHOULD_RETRY, body(FN_SHOULD_RETRY))]
        points += [AttachPoint("grpc_client_fail", FN_SHOULD_RETRY, int(r)) for r in rets]
    return ClientProbes(config=layout.to_bytes(cfg), points=points, layout_name=layout_name,
                        notes=notes)
