"""Function names and ranges from Go's .gopclntab, for stripped binaries.

Header layouts (runtime/symtab.go pcHeader, debug/gosym):
- Go 1.16/1.17 (magic 0xfffffffa): magic, pad, minLC, ptrSize, nfunc, nfiles, then
  funcname/cu/filetab/pctab/pcln offsets; functab = (entry uintptr, funcoff uintptr) pairs.
- Go 1.18/1.19 (0xfffffff0) and 1.20+ (0xfffffff1): same, plus `textStart` after nfiles;
  functab = (entryOff uint32, funcOff uint32) pairs relative to the text start.
- Go 1.26 keeps the slot but no longer fills it (it is 0): the text start must come from
  the .text section (what runtime.text is), never from the header. A peer crashed on this.
"""

from __future__ import annotations

import struct

from .elf import ElfFile
from .errors import GoBinaryError
from .varint import uvarint

MAGIC_116 = 0xFFFFFFFA
MAGIC_118 = 0xFFFFFFF0
MAGIC_120 = 0xFFFFFFF1
MAGIC_12 = 0xFFFFFFFB
MAX_FUNCS = 4_000_000


def _pc_table_end(tab: bytes, off: int, limit: int) -> int:
    """Sum of the pc deltas of one pc-value table = the function's true size.

    Why not next entry minus this entry: that includes the int3 alignment fill, and a
    function may itself end in int3, so trimming is wrong too; the linker's pcsp table
    covers exactly the function's bytes (what .symtab's st_size says).
    """
    pc = 0
    first = True
    pos = off
    for _ in range(1 << 20):
        uvdelta, pos = uvarint(tab, pos, ".gopclntab")
        if uvdelta == 0 and not first:
            return pc
        first = False
        pcdelta, pos = uvarint(tab, pos, ".gopclntab")
        pc += pcdelta
        if pc > limit:
            break
    raise GoBinaryError("bad pc-value table in .gopclntab")


def funcname_blob(elf: ElfFile) -> bytes | None:
    """The funcnametab (NUL-separated function names), or None without a usable pclntab."""
    sec = elf.section(".gopclntab")
    if sec is None:
        return None
    try:
        tab = elf.section_data(sec)
        magic = struct.unpack_from("<I", tab, 0)[0]
        if magic not in (MAGIC_116, MAGIC_118, MAGIC_120):
            return None
        idx = 8 + 8 * (3 if magic != MAGIC_116 else 2)
        (off,) = struct.unpack_from("<Q", tab, idx)
        (cu,) = struct.unpack_from("<Q", tab, idx + 8)
    except struct.error:
        return None
    if not off <= cu <= len(tab):
        return None
    return b"\0" + tab[off:cu]


def pclntab_functions(elf: ElfFile, wanted: set[str] | None = None) -> dict[str, tuple[int, int]]:
    """name -> (vaddr, size) for functions in .gopclntab (only `wanted` names if given)."""
    sec = elf.section(".gopclntab")
    if sec is None:
        raise GoBinaryError(f"{elf.path}: no .symtab and no .gopclntab (not a Go binary?)")
    tab = elf.section_data(sec)
    if len(tab) < 8:
        raise GoBinaryError(f"{elf.path}: .gopclntab truncated")
    magic, pad1, pad2, _minlc, ptrsize = struct.unpack_from("<IBBBB", tab, 0)
    if pad1 or pad2 or ptrsize != 8:
        raise GoBinaryError(f"{elf.path}: bad .gopclntab header")
    if magic == MAGIC_12:
        from .errors import UnsupportedGoVersionError

        raise UnsupportedGoVersionError(f"{elf.path}: pclntab of Go < 1.16 is not supported")
    if magic == MAGIC_116:
        hdr_words = 7
    elif magic in (MAGIC_118, MAGIC_120):
        hdr_words = 8
    else:
        raise GoBinaryError(f"{elf.path}: unknown .gopclntab magic {magic:#x}")
    if len(tab) < 8 + 8 * hdr_words:
        raise GoBinaryError(f"{elf.path}: .gopclntab truncated")
    words = struct.unpack_from(f"<{hdr_words}Q", tab, 8)
    nfunc = words[0]
    if hdr_words == 8:
        hdr_text = words[2]
        funcname_off, _cu, _ft, pctab_off, pcln_off = words[3:8]
    else:
        hdr_text = 0
        funcname_off, _cu, _ft, pctab_off, pcln_off = words[2:7]
    if nfunc > MAX_FUNCS or funcname_off > len(tab) or pcln_off > len(tab):
        raise GoBinaryError(f"{elf.path}: bad .gopclntab header")
    text_sec = elf.section(".text")
    text_start = text_sec.addr if text_sec is not None else hdr_text
    if magic == MAGIC_116:
        ent_fmt, ent_size = "<QQ", 16
    else:
        ent_fmt, ent_size = "<II", 8
    ft_end = pcln_off + (nfunc + 1) * ent_size
    if ft_end > len(tab):
        raise GoBinaryError(f"{elf.path}: .gopclntab functab truncated")
    entries = list(struct.iter_unpack(ent_fmt, tab[pcln_off:ft_end]))
    names = tab[funcname_off:]
    want_bytes = {w.encode(): w for w in wanted} if wanted is not None else None
    out: dict[str, tuple[int, int]] = {}
    base = pcln_off
    for i in range(nfunc):
        entry, funcoff = entries[i]
        next_entry = entries[i + 1][0]
        foff = base + funcoff
        if magic == MAGIC_116:
            if foff + 12 > len(tab):
                raise GoBinaryError(f"{elf.path}: .gopclntab _func out of range")
            (name_off,) = struct.unpack_from("<i", tab, foff + 8)
            pcsp_at = foff + 20
            vaddr, end = entry, next_entry
        else:
            if foff + 8 > len(tab):
                raise GoBinaryError(f"{elf.path}: .gopclntab _func out of range")
            (name_off,) = struct.unpack_from("<i", tab, foff + 4)
            pcsp_at = foff + 16
            vaddr, end = text_start + entry, text_start + next_entry
        if name_off < 0 or name_off >= len(names):
            continue
        nul = names.find(b"\0", name_off)
        if nul < 0:
            continue
        raw = names[name_off:nul]
        if want_bytes is not None:
            name = want_bytes.get(raw)
            if name is None:
                continue
        else:
            name = raw.decode("utf-8", "replace")
        if end <= vaddr:
            continue
        # A name can appear twice (a function and its ABI wrapper). For Go functions (all
        # the catalogue holds) the first is the real one, as .symtab names it.
        if name in out:
            continue
        size = end - vaddr
        if pcsp_at + 4 <= len(tab):
            (pcsp,) = struct.unpack_from("<I", tab, pcsp_at)
            if pcsp and pctab_off + pcsp < len(tab):
                size = min(size, _pc_table_end(tab, pctab_off + pcsp, size) or size)
        out[name] = (vaddr, size)
    return out
