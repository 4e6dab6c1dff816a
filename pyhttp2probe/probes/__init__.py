"""Probe sets: each turns an attach plan into a BPF config struct plus attach points."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class AttachPoint:
    """One uprobe: which program of the object goes at which file offset of the binary."""

    program: str
    symbol: str
    file_offset: int


_PROLOGUE_SCAN = 64  # bytes: Go's stack check is the first 2-4 instructions


def after_stack_check(binary: str | os.PathLike[str], entry: int) -> int:
    """File offset just past a Go function's stack-bound check (amd64), else `entry`.

    When the goroutine stack must grow, the prologue calls runtime.morestack and then
    re-runs the function from its entry, so an entry uprobe fires twice for one call
    (measured: a second finish() hit ~1 ms later, reading the same arguments). Past the
    `cmp ..., [r14+16]; jbe` the body runs once per call, and the argument registers are
    still untouched there.
    """
    import capstone

    with open(binary, "rb") as f:
        f.seek(entry)
        code = f.read(_PROLOGUE_SCAN)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    saw_check = False
    for n, (addr, size, mnemonic, ops) in enumerate(md.disasm_lite(code, 0)):
        if n >= 6:
            break
        if mnemonic == "cmp" and "r14" in ops:
            saw_check = True
        elif saw_check and mnemonic in ("jbe", "jna", "jb", "jc", "jnae"):
            return entry + addr + size
    return entry


__all__ = ["AttachPoint", "after_stack_check"]
