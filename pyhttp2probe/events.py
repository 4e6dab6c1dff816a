"""Decode ring-buffer records using the layout declared once in bpf_src/events.h.

The text of events.h (records) and config.h (per-process configs) is fed to cffi's cdef
(DESIGN.md rule 5: never a hand-copied format), and a numpy structured dtype is built from
cffi's offsets so a whole batch of same-size records decodes with one numpy.frombuffer call.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cffi
import numpy as np

from .assets import bpf_asset

_TYPEDEFS = """
typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32; typedef uint64_t __u64;
typedef int8_t __s8; typedef int16_t __s16; typedef int32_t __s32; typedef int64_t __s64;
"""
_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)\s+(0x[0-9a-fA-F]+|-?\d+)\b", re.M)
_PREPROC = re.compile(r"^\s*#.*$", re.M)
_NUMPY_OF = {
    "uint8_t": "u1", "uint16_t": "u2", "uint32_t": "u4", "uint64_t": "u8",
    "int8_t": "i1", "int16_t": "i2", "int32_t": "i4", "int64_t": "i8", "char": "S1",
}


# The cdef-friendly headers, concatenated in this order (each is self-sufficient).
HEADERS = ("events.h", "config.h")


def header_path(name: str = "events.h") -> Path:
    """A header shipped beside the BPF objects (the one they were compiled with)."""
    return bpf_asset(name)


class Layout:
    """cffi view of events.h + config.h: struct types, integer #define constants, dtypes."""

    def __init__(self, text: str | None = None) -> None:
        if text is None:
            text = "\n".join(header_path(name).read_text() for name in HEADERS)
        self.constants: dict[str, int] = {m[1]: int(m[2], 0) for m in _DEFINE.finditer(text)}
        body = _PREPROC.sub("", text)
        if self.constants:
            # Array bounds use the header's constants; cdef wants literal numbers.
            names = re.compile(r"\b(" + "|".join(map(re.escape, self.constants)) + r")\b")
            body = names.sub(lambda m: str(self.constants[m[1]]), body)
        self.ffi = cffi.FFI()
        self.ffi.cdef(_TYPEDEFS + body)
        self._dtypes: dict[str, np.dtype] = {}

    def sizeof(self, struct: str) -> int:
        return self.ffi.sizeof(f"struct {struct}")

    def new(self, struct: str) -> Any:
        """A zeroed struct owned by Python (cffi cdata)."""
        return self.ffi.new(f"struct {struct} *")

    def to_bytes(self, cdata: Any) -> bytes:
        return bytes(self.ffi.buffer(cdata))

    def dtype(self, struct: str) -> np.dtype:
        """numpy structured dtype at cffi's offsets (nested structs recurse)."""
        if struct not in self._dtypes:
            self._dtypes[struct] = self._dtype_of(self.ffi.typeof(f"struct {struct}"))
        return self._dtypes[struct]

    def _dtype_of(self, ctype: Any) -> np.dtype:
        names, formats, offsets = [], [], []
        for name, field in ctype.fields:
            names.append(name)
            formats.append(self._format(field.type))
            offsets.append(field.offset)
        return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                         "itemsize": self.ffi.sizeof(ctype)})

    def _format(self, ftype: Any) -> Any:
        if ftype.kind == "array":
            if ftype.item.cname == "char":
                return f"S{ftype.length}"
            return (self._format(ftype.item), (ftype.length,))
        if ftype.kind == "struct":
            return self._dtype_of(ftype)
        return _NUMPY_OF[ftype.cname]


@dataclass(slots=True)
class GrpcClientEvent:
    """One finished gRPC client call as the BPF side saw it (see struct grpc_client_event)."""

    tgid: int
    transport: int
    cs: int
    start_ns: int
    end_ns: int
    stream_id: int
    status_code: int
    flags: int
    peer_ip: str
    peer_port: int
    method: str
    target: str


def _ip(raw: bytes) -> str:
    if not any(raw):
        return ""
    addr = ipaddress.IPv6Address(bytes(raw))
    return str(addr.ipv4_mapped or addr)


class EventDecoder:
    """Turns ring-buffer batches into event dataclasses; unknown record types are counted."""

    def __init__(self, layout: Layout | None = None) -> None:
        self.layout = layout or Layout()
        self.ev_grpc_client = self.layout.constants["EV_GRPC_CLIENT"]
        self.size = self.layout.sizeof("grpc_client_event")
        self.dtype = self.layout.dtype("grpc_client_event")
        self.unknown = 0
        self._ip_text: dict[bytes, str] = {}
        self._str_text: dict[bytes, str] = {}

    def decode_buffer(self, buf: bytes, count: int | None = None) -> list[GrpcClientEvent]:
        """Decode `count` back-to-back records of sizeof(grpc_client_event) from buf."""
        if count is None:
            count = len(buf) // self.size
        arr = np.frombuffer(buf, dtype=self.dtype, count=count)
        return list(self._events(arr))

    def decode_records(self, records: Sequence[bytes]) -> list[GrpcClientEvent]:
        """Decode records of any sizes one by one (the slow path for mixed batches)."""
        out: list[GrpcClientEvent] = []
        for rec in records:
            if len(rec) < self.size:
                self.unknown += 1
                continue
            arr = np.frombuffer(rec, dtype=self.dtype, count=1)
            out.extend(self._events(arr))
        return out

    def decode_batch(self, batch: Any) -> list[GrpcClientEvent]:
        """A libbpf_loader ring-buffer batch: one numpy pass when all records share a size."""
        if getattr(batch, "uniform_size", None) == self.size:
            return list(self._events(batch.as_array(self.dtype)))
        return self.decode_records(list(batch))

    def _events(self, arr: np.ndarray) -> Iterator[GrpcClientEvent]:
        """Column-wise: one tolist() per field in C, then one dataclass per row."""
        if len(arr) == 0:
            return
        if not (arr["type"] == self.ev_grpc_client).all():
            keep = arr["type"] == self.ev_grpc_client
            self.unknown += int((~keep).sum())
            arr = arr[keep]
        cols = {name: arr[name].tolist() for name in (
            "tgid", "transport", "cs", "start_ns", "end_ns", "stream_id", "status_code",
            "flags", "peer_port", "method_len", "target_len")}
        ips = np.ascontiguousarray(arr["peer_ip"]).view("V16").ravel().tolist()
        methods = arr["method"].tolist()  # bytes, trailing NULs stripped by numpy
        targets = arr["target"].tolist()
        ip_text = self._ip_text
        for i in range(len(arr)):
            raw_ip = ips[i]
            ip = ip_text.get(raw_ip)
            if ip is None:
                ip = _ip(raw_ip)
                if len(ip_text) < 4096:
                    ip_text[raw_ip] = ip
            yield GrpcClientEvent(
                tgid=cols["tgid"][i], transport=cols["transport"][i], cs=cols["cs"][i],
                start_ns=cols["start_ns"][i], end_ns=cols["end_ns"][i],
                stream_id=cols["stream_id"][i], status_code=cols["status_code"][i],
                flags=cols["flags"][i], peer_ip=ip, peer_port=cols["peer_port"][i],
                method=self._text(methods[i][:cols["method_len"][i]]),
                target=self._text(targets[i][:cols["target_len"][i]]),
            )

    def _text(self, raw: bytes) -> str:
        """Decoded method/target names, memoised: a program has few distinct ones."""
        s = self._str_text.get(raw)
        if s is None:
            s = raw.decode("utf-8", "replace")
            if len(self._str_text) < 4096:
                self._str_text[raw] = s
        return s
