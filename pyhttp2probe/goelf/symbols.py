"""Function symbols -> file offsets of the entry and every RET."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .disasm import past_stack_check, ret_offsets
from .elf import EM_X86_64, PF_X, PT_LOAD, ElfFile
from .errors import GoBinaryError

MAX_FUNC_SIZE = 16 << 20  # no Go function is this big; guards hostile sizes


@dataclass
class FunctionOffsets:
    """Where a function lives: file offsets of its entry and RETs, its vaddr and size, and
    `body`: where an entry probe goes (past Go's stack check; see disasm.past_stack_check)."""

    entry: int
    returns: list[int] = field(default_factory=list)
    vaddr: int = 0
    size: int = 0
    body: int = -1

    def __post_init__(self) -> None:
        if self.body < 0:
            self.body = self.entry


def offsets_for(elf: ElfFile, vaddr: int, size: int, md: Any = None) -> FunctionOffsets:
    """Build FunctionOffsets for one function's address range."""
    if size <= 0 or size > MAX_FUNC_SIZE:
        raise GoBinaryError(f"{elf.path}: implausible function size {size} at {vaddr:#x}")
    entry = elf.vaddr_to_offset(vaddr)
    seg_ok = any(s.type == PT_LOAD and s.flags & PF_X and s.vaddr <= vaddr < s.vaddr + s.filesz
                 for s in elf.segments)
    if not seg_ok:
        raise GoBinaryError(f"{elf.path}: function at {vaddr:#x} is not in executable code")
    code = elf.read(entry, size)
    if elf.machine != EM_X86_64:
        raise GoBinaryError(f"{elf.path}: RET search supports x86-64 only")
    return FunctionOffsets(entry=entry, returns=ret_offsets(code, entry, md), vaddr=vaddr,
                           size=size, body=entry + past_stack_check(code, md))


def find_functions(elf: ElfFile, names: set[str]) -> dict[str, tuple[int, int]]:
    """name -> (vaddr, size) for the wanted names present: .symtab first, then pclntab."""
    found = elf.func_symbols(names)
    if not found:
        from .pclntab import pclntab_functions  # local: only stripped binaries need it

        found = pclntab_functions(elf, names)
    return found


def function_offsets(path: str | os.PathLike[str], symbol: str) -> FunctionOffsets:
    """Entry and RET file offsets of one function; GoBinaryError if absent or unreadable."""
    with ElfFile(path) as elf:
        found = find_functions(elf, {symbol})
        if symbol not in found:
            raise GoBinaryError(f"{elf.path}: function {symbol} not found")
        vaddr, size = found[symbol]
        return offsets_for(elf, vaddr, size)


def _names_blob(elf: ElfFile) -> bytes:
    """NUL-separated function names: pclntab's funcnametab (present stripped or not)."""
    from .pclntab import funcname_blob

    blob = funcname_blob(elf)
    if blob is None:
        sec = elf.section(".strtab")
        blob = elf.section_data(sec) if sec is not None else b""
    return blob


def present_types(elf: ElfFile, type_names: set[str],
                  anchors: Mapping[str, tuple[str, ...]]) -> set[str]:
    """Which "pkg.Type" names this binary links: any method linked, or an anchor function.

    Computed from function names alone, so a stripped binary answers as its DWARF twin.
    """
    blob = _names_blob(elf)
    out = set()
    for t in type_names:
        pkg, _, name = t.rpartition(".")
        keys = [f"\0{pkg}.(*{name}).", f"\0{pkg}.{name}."]
        keys += [f"\0{a}\0" for a in anchors.get(t, ())]
        if any(blob.find(k.encode()) >= 0 for k in keys):
            out.add(t)
    return out
