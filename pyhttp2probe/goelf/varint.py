"""The unsigned LEB128 varint that Go's build info, pclntab and DWARF all use."""

from __future__ import annotations

from .errors import GoBinaryError


def uvarint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """(value, next position); GoBinaryError naming `what` when it overruns or exceeds 64 bits."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise GoBinaryError(f"bad varint in {what}")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
