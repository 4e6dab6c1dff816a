"""Go amd64 register ABI: which registers carry each argument of a function.

Positions alone are wrong: an interface or string takes two registers and a slice three
(e.g. NewStream(ctx, callHdr) on *http2Client: t=RAX, ctx=RBX+RCX, callHdr=RDI).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

INT_REGS: tuple[str, ...] = ("RAX", "RBX", "RCX", "RDI", "RSI", "R8", "R9", "R10", "R11")

WORDS: Mapping[str, int] = MappingProxyType({
    "ptr": 1, "int": 1, "uint": 1, "int64": 1, "uint64": 1, "int32": 1, "uint32": 1,
    "int16": 1, "uint16": 1, "int8": 1, "uint8": 1, "bool": 1, "uintptr": 1, "map": 1,
    "chan": 1, "func": 1, "iface": 2, "string": 2, "slice": 3,
})


def arg_registers(kinds: list[str]) -> list[tuple[str, ...] | None]:
    """Registers of each argument (receiver first); None once it spills to the stack.

    Go assigns whole arguments: one that does not fit in the remaining registers goes
    to the stack, and later arguments may still use registers (we report them as Go does).
    """
    out: list[tuple[str, ...] | None] = []
    used = 0
    for kind in kinds:
        if kind not in WORDS:
            raise ValueError(f"unknown argument kind {kind!r}; known: {sorted(WORDS)}")
        n = WORDS[kind]
        if used + n <= len(INT_REGS):
            out.append(INT_REGS[used:used + n])
            used += n
        else:
            out.append(None)
    return out
