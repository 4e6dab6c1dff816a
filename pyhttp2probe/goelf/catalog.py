"""What the probes need from a target: function symbols and struct fields (data only).

Extend by appending names. Versions differ: a name absent from a binary is simply
reported as absent in the plan, never an error. Field keys are "pkg/path.Type.field".
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

GRPC = "google.golang.org/grpc"
TRANSPORT = "google.golang.org/grpc/internal/transport"
XNET_H2 = "golang.org/x/net/http2"

GRPC_CLIENT_FUNCTIONS: tuple[str, ...] = (
    f"{GRPC}.(*clientStream).newAttemptLocked",
    f"{GRPC}.(*clientStream).finish",
    f"{GRPC}/internal/status.(*Error).Error",
    f"{TRANSPORT}.(*http2Client).NewStream",
    f"{TRANSPORT}.(*http2Client).CloseStream",
    f"{TRANSPORT}.(*ClientStream).Close",
    # >= 1.50: where a call whose stream creation failed ends (RETs; error path only)
    f"{GRPC}.(*csAttempt).shouldRetry",
    "net.(*TCPAddr).Network",  # tells a *net.TCPAddr in a net.Addr apart by itab fun[0]
)

GRPC_SERVER_FUNCTIONS: tuple[str, ...] = (
    f"{TRANSPORT}.(*http2Server).operateHeaders",
    f"{TRANSPORT}.(*http2Server).WriteStatus",
    f"{TRANSPORT}.(*http2Server).writeStatus",
    f"{GRPC}.(*Server).handleStream",
    f"{GRPC}.(*Server).ServeHTTP",
    f"{TRANSPORT}.(*serverHandlerTransport).WriteStatus",
    f"{TRANSPORT}.(*serverHandlerTransport).writeStatus",
    # RPCs rejected before any handler runs (InTapHandle, bad content-type or headers):
    # counted, not spanned (pyhttp2probe/probes/grpc_server.py)
    f"{TRANSPORT}.(*loopyWriter).earlyAbortStreamHandler",
)

NET_HTTP_H2_FUNCTIONS: tuple[str, ...] = (
    "net/http.(*http2ClientConn).RoundTrip",
    "net/http.(*http2clientStream).cleanupWriteRequest",
    "net/http.(*http2serverConn).processHeaders",
    "net/http.(*http2serverConn).closeStream",
    "net/http.(*http2responseWriterState).writeChunk",
)

XNET_H2_FUNCTIONS: tuple[str, ...] = (
    f"{XNET_H2}.(*ClientConn).RoundTrip",
    f"{XNET_H2}.(*clientStream).cleanupWriteRequest",
    f"{XNET_H2}.(*serverConn).processHeaders",
    f"{XNET_H2}.(*serverConn).closeStream",
    f"{XNET_H2}.(*responseWriterState).writeChunk",
)

FUNCTIONS: tuple[str, ...] = (GRPC_CLIENT_FUNCTIONS + GRPC_SERVER_FUNCTIONS
                              + NET_HTTP_H2_FUNCTIONS + XNET_H2_FUNCTIONS)

GRPC_FIELDS: tuple[str, ...] = (
    f"{GRPC}.clientStream.callHdr",
    f"{GRPC}.clientStream.attempt",
    f"{GRPC}.clientStream.finished",
    f"{GRPC}.clientStream.cc",
    f"{GRPC}.csAttempt.s",
    f"{GRPC}.csAttempt.transportStream",
    f"{GRPC}.ClientConn.target",
    f"{TRANSPORT}.CallHdr.Method",
    f"{TRANSPORT}.Stream.id",
    f"{TRANSPORT}.Stream.ct",
    f"{TRANSPORT}.Stream.st",
    f"{TRANSPORT}.Stream.status",
    f"{TRANSPORT}.Stream.method",
    f"{TRANSPORT}.ClientStream.Stream",
    f"{TRANSPORT}.ClientStream.ct",
    f"{TRANSPORT}.ClientStream.status",
    f"{TRANSPORT}.ServerStream.Stream",
    f"{TRANSPORT}.ServerStream.st",
    f"{TRANSPORT}.http2Client.remoteAddr",
    f"{TRANSPORT}.http2Client.localAddr",
    f"{TRANSPORT}.http2Client.nextID",
    f"{TRANSPORT}.http2Server.remoteAddr",
    f"{TRANSPORT}.http2Server.localAddr",
    f"{GRPC}/internal/status.Error.s",
    f"{GRPC}/internal/status.Status.s",
    # module google.golang.org/genproto, later google.golang.org/genproto/googleapis/rpc
    "google.golang.org/genproto/googleapis/rpc/status.Status.Code",
)

STD_FIELDS: tuple[str, ...] = (
    "net.TCPAddr.IP",
    "net.TCPAddr.Port",
    "net/http.http2clientStream.cc",
    "net/http.http2clientStream.ID",
    "net/http.http2ClientConn.tconn",
    "net/http.http2stream.id",
    "net/http.http2stream.sc",
    "net/http.http2serverConn.conn",
)

XNET_FIELDS: tuple[str, ...] = (
    f"{XNET_H2}.clientStream.cc",
    f"{XNET_H2}.clientStream.ID",
    f"{XNET_H2}.ClientConn.tconn",
    f"{XNET_H2}.stream.id",
    f"{XNET_H2}.stream.sc",
    f"{XNET_H2}.serverConn.conn",
)

FIELDS: tuple[str, ...] = GRPC_FIELDS + STD_FIELDS + XNET_FIELDS


def split_field(key: str) -> tuple[str, str]:
    """("pkg/path.Type", "field") from "pkg/path.Type.field"."""
    type_name, _, fld = key.rpartition(".")
    return type_name, fld


def package_of(key: str) -> str:
    """The Go package path of a field key ("pkg/path" of "pkg/path.Type.field")."""
    type_name, _ = split_field(key)
    slash = type_name.rfind("/")
    dot = type_name.find(".", slash + 1)
    return type_name[:dot]


def function_package(symbol: str) -> str:
    """The Go package path of a function symbol ("pkg/path" of "pkg/path.(*T).m")."""
    slash = symbol.rfind("/")
    dot = symbol.find(".", slash + 1)
    return symbol[:dot]


# Types with no methods of their own: present in a binary when one of these functions is.
# (Every other wanted type counts as present when any of its methods is linked, which is
# how a stripped binary and its DWARF twin agree on which fields exist.)
TYPE_ANCHORS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    f"{TRANSPORT}.CallHdr": (f"{TRANSPORT}.(*http2Client).NewStream",),
    # peer.Peer has no methods before v1.64 (String came then), yet http2Server embeds it
    # by value from v1.60: without an anchor the server's local address vanished there.
    f"{GRPC}/peer.Peer": (f"{TRANSPORT}.(*http2Server).operateHeaders",),
    # earlyAbortStream's only method (isTransportResponseFrame) is gone from v1.83, and
    # HeaderField's may all be inlined: both are read wherever the handler is linked.
    f"{TRANSPORT}.earlyAbortStream": (f"{TRANSPORT}.(*loopyWriter).earlyAbortStreamHandler",),
    "golang.org/x/net/http2/hpack.HeaderField": (
        f"{TRANSPORT}.(*loopyWriter).earlyAbortStreamHandler",),
    # Go 1.27's HTTP/2 request and response types: plain data, read where they are used
    "net/http/internal/http2.ServerRequest": ("net/http/internal/http2.(*serverConn).runHandler",),
    "net/http/internal/http2.ClientRequest": (
        "net/http/internal/http2.(*clientStream).encodeAndWriteHeaders",),
    "net/http/internal/http2.ClientResponse": (
        "net/http/internal/http2.(*clientStream).cleanupWriteRequest",),
})


# ---- gRPC server and generic HTTP/2 probes (issue 5; pyhttp2probe/probes/grpc_server.py
# and http2.py say why each is needed). Appended to FUNCTIONS/FIELDS below.
SERVER_H2_FUNCTIONS: tuple[str, ...] = (
    "net.(*TCPAddr).Network",
    "net/http.(*http2serverConn).runHandler",
    "net/http.(*http2responseWriter).handlerDone",
    "net/http.(*http2clientStream).encodeAndWriteHeaders",
    f"{XNET_H2}.(*serverConn).runHandler",
    f"{XNET_H2}.(*responseWriter).handlerDone",
    f"{XNET_H2}.(*clientStream).encodeAndWriteHeaders",
)

SERVER_H2_FIELDS: tuple[str, ...] = (
    f"{TRANSPORT}.http2Server.peer",
    f"{GRPC}/peer.Peer.LocalAddr",
    f"{TRANSPORT}.serverHandlerTransport.req",
    "net/http.Request.Method",
    "net/http.Request.URL",
    "net/http.Request.Host",
    "net/url.URL.Host",
    "net/url.URL.Path",
    "net/http.Response.StatusCode",
    *(f"{pfx}{name}" for pfx in ("net/http.http2", f"{XNET_H2}.") for name in (
        "responseWriter.rws", "responseWriterState.stream", "responseWriterState.conn",
        "responseWriterState.req", "responseWriterState.status", "stream.id",
        "clientStream.cc", "clientStream.ID", "clientStream.res", "clientStream.readClosed")),
)

# earlyAbortStream: {streamID, status *status.Status} before v1.79; {streamID, hf
# []hpack.HeaderField} (the "grpc-status" field's value carries the code) from v1.79.
HPACK = "golang.org/x/net/http2/hpack"
EARLY_ABORT_FIELDS: tuple[str, ...] = (
    f"{TRANSPORT}.earlyAbortStream.streamID",
    f"{TRANSPORT}.earlyAbortStream.status",
    f"{TRANSPORT}.earlyAbortStream.hf",
    f"{HPACK}.HeaderField.Name",
    f"{HPACK}.HeaderField.Value",
    f"{HPACK}.HeaderField.Sensitive",  # the last field: gives the slice element stride
)
SERVER_H2_FIELDS = SERVER_H2_FIELDS + EARLY_ABORT_FIELDS

# The gRPC server's start at operateHeaders (the HEADERS frame's stream id; the framer a
# transport shares with its loopy writer keys in-flight RPCs, so an early abort can drop
# its start), and the join of a ServeHTTP call to its HTTP/2 stream through the request
# context chain (Request.ctx).
JOIN_FIELDS: tuple[str, ...] = (
    f"{TRANSPORT}.http2Server.framer",
    f"{TRANSPORT}.loopyWriter.framer",
    f"{XNET_H2}.MetaHeadersFrame.HeadersFrame",
    f"{XNET_H2}.HeadersFrame.FrameHeader",
    f"{XNET_H2}.FrameHeader.Type",
    f"{XNET_H2}.FrameHeader.StreamID",
    "net/http.Request.ctx",
)
SERVER_H2_FIELDS = SERVER_H2_FIELDS + JOIN_FIELDS

# Go 1.27 moved net/http's HTTP/2 from h2_bundle.go into net/http/internal/http2: the same
# functions, and request/response types of its own (pyhttp2probe/probes/http2.py).
STD_H2 = "net/http/internal/http2"
STD_H2_FUNCTIONS: tuple[str, ...] = (
    f"{STD_H2}.(*serverConn).runHandler",
    f"{STD_H2}.(*responseWriter).handlerDone",
    f"{STD_H2}.(*clientStream).encodeAndWriteHeaders",
    f"{STD_H2}.(*clientStream).cleanupWriteRequest",
)
STD_H2_FIELDS: tuple[str, ...] = (
    *(f"{STD_H2}.{name}" for name in (
        "responseWriter.rws", "responseWriterState.stream", "responseWriterState.conn",
        "responseWriterState.req", "responseWriterState.status", "stream.id",
        "clientStream.cc", "clientStream.ID", "clientStream.res", "clientStream.readClosed",
        "ServerRequest.Method", "ServerRequest.URL", "ServerRequest.Host",
        "ServerRequest.Context", "ClientRequest.Method", "ClientRequest.URL",
        "ClientRequest.Host", "ClientResponse.StatusCode")),
)
SERVER_H2_FUNCTIONS = SERVER_H2_FUNCTIONS + STD_H2_FUNCTIONS
SERVER_H2_FIELDS = SERVER_H2_FIELDS + STD_H2_FIELDS

# A panicking HTTP/2 handler's request ends where its stream reset is written (value method
# and the pointer wrapper an interface call reaches); sentHeader tells whether a status went
# out before the panic.
PANIC_FUNCTIONS: tuple[str, ...] = tuple(
    name for fn_pfx, ty_pfx in (("net/http.(*http2", "net/http.http2"),
                                (f"{XNET_H2}.(*", f"{XNET_H2}."),
                                (f"{STD_H2}.(*", f"{STD_H2}."))
    for name in (f"{ty_pfx}handlerPanicRST.writeFrame", f"{fn_pfx}handlerPanicRST).writeFrame"))
PANIC_FIELDS: tuple[str, ...] = tuple(
    f"{pfx}responseWriterState.sentHeader"
    for pfx in ("net/http.http2", f"{XNET_H2}.", f"{STD_H2}."))
SERVER_H2_FUNCTIONS = SERVER_H2_FUNCTIONS + PANIC_FUNCTIONS
SERVER_H2_FIELDS = SERVER_H2_FIELDS + PANIC_FIELDS

FUNCTIONS = FUNCTIONS + tuple(f for f in SERVER_H2_FUNCTIONS if f not in FUNCTIONS)
FIELDS = FIELDS + tuple(f for f in SERVER_H2_FIELDS if f not in FIELDS)
