"""A small, bounds-checked ELF64 little-endian reader.

Why not pyelftools for this part: symbol lookup in a 20+ MB Go binary must be fast, and
every size read from a hostile file must be checked before anything is allocated. Every
malformed read raises GoBinaryError.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import GoBinaryError

SHT_SYMTAB = 2
SHT_NOBITS = 8
SHF_COMPRESSED = 0x800
PT_LOAD = 1
PF_X = 1
PF_W = 2
STT_OBJECT = 1
STT_FUNC = 2
ET_EXEC = 2
ET_DYN = 3
EM_X86_64 = 62
EM_AARCH64 = 183

MAX_SECTIONS = 1 << 16
MAX_SEGMENTS = 1 << 12


@dataclass(frozen=True)
class Section:
    """One section header; `offset`/`size` are checked against the file size."""

    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


@dataclass(frozen=True)
class Segment:
    """One program header."""

    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


class ElfFile:
    """Read-only view of one ELF file (memory-mapped; call close() or use `with`)."""

    def __init__(self, path: str | os.PathLike[str], data: bytes | None = None) -> None:
        """Map the file at `path`, or parse `data` (in-memory; `path` only names it)."""
        self.path = str(path)
        if data is not None:
            self.size, self.mtime_ns, self.data = len(data), 0, data
            if self.size < 64:
                raise GoBinaryError(f"{self.path}: not an ELF file (too small)")
            self._parse_header()
            return
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                self.size = st.st_size
                if self.size < 64:
                    raise GoBinaryError(f"{self.path}: not an ELF file (too small)")
                self.data: mmap.mmap | bytes = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise GoBinaryError(f"{self.path}: cannot read: {e.strerror or e}") from e
        self.mtime_ns = st.st_mtime_ns
        try:
            self._parse_header()
        except GoBinaryError:
            self.close()
            raise

    def close(self) -> None:
        """Release the mapping; idempotent."""
        data = self.data
        self.data = b""
        if isinstance(data, mmap.mmap):
            data.close()

    def __enter__(self) -> ElfFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw reads ---------------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        """Bytes [offset, offset+size) of the file, or GoBinaryError when out of range."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise GoBinaryError(f"{self.path}: truncated (read {size} bytes at {offset:#x})")
        return bytes(self.data[offset:offset + size])

    def _unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        return struct.unpack(fmt, self.read(offset, struct.calcsize(fmt)))

    # -- headers -----------------------------------------------------------------
    def _parse_header(self) -> None:
        ident = self.read(0, 16)
        if ident[:4] != b"\x7fELF":
            raise GoBinaryError(f"{self.path}: not an ELF file")
        if ident[4] != 2 or ident[5] != 1:
            raise GoBinaryError(f"{self.path}: only 64-bit little-endian ELF is supported")
        (self.e_type, self.machine, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize,
         shnum, shstrndx) = self._unpack("<HHIQQQIHHHHHH", 16)
        if self.e_type not in (ET_EXEC, ET_DYN):
            raise GoBinaryError(f"{self.path}: not an executable (ELF type {self.e_type})")
        self.segments: list[Segment] = []
        if phnum:
            if phentsize < 56 or phnum > MAX_SEGMENTS:
                raise GoBinaryError(f"{self.path}: bad program header table")
            for i in range(phnum):
                p_type, p_flags, off, vaddr, _, filesz, memsz, _ = self._unpack(
                    "<IIQQQQQQ", phoff + i * phentsize)
                self.segments.append(Segment(p_type, p_flags, off, vaddr, filesz, memsz))
        self.sections: list[Section] = []
        self._by_name: dict[str, Section] = {}
        if shnum:
            if shentsize < 64 or shnum > MAX_SECTIONS or shstrndx >= shnum:
                raise GoBinaryError(f"{self.path}: bad section header table")
            raw = []
            for i in range(shnum):
                raw.append(self._unpack("<IIQQQQIIQQ", shoff + i * shentsize))
            strtab = raw[shstrndx]
            names = self.read(strtab[4], strtab[5]) if strtab[1] != SHT_NOBITS else b""
            for name_off, typ, flags, addr, off, size, link, _, _, entsize in raw:
                end = names.find(b"\0", name_off) if name_off < len(names) else -1
                name = names[name_off:end].decode("latin-1") if end >= 0 else ""
                if typ != SHT_NOBITS and off + size > self.size:
                    raise GoBinaryError(f"{self.path}: truncated (section {name or '?'})")
                sec = Section(name, typ, flags, addr, off, size, link, entsize)
                self.sections.append(sec)
                self._by_name.setdefault(name, sec)

    @property
    def is_pie(self) -> bool:
        """True for position-independent executables (uprobe offsets are file offsets anyway)."""
        return self.e_type == ET_DYN

    def section(self, name: str) -> Section | None:
        """The first section with this name, or None."""
        return self._by_name.get(name)

    def section_data(self, sec: Section) -> bytes:
        """Raw (possibly compressed) bytes of a section."""
        if sec.type == SHT_NOBITS:
            return b""
        return self.read(sec.offset, sec.size)

    def vaddr_to_offset(self, vaddr: int) -> int:
        """Translate a virtual address to a file offset through the PT_LOAD segments."""
        for seg in self.segments:
            if seg.type == PT_LOAD and seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset
        raise GoBinaryError(f"{self.path}: address {vaddr:#x} is in no loaded segment")

    def read_vaddr(self, vaddr: int, size: int) -> bytes:
        """Bytes at a virtual address (must lie in one segment's file image)."""
        for seg in self.segments:
            if seg.type == PT_LOAD and seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                if vaddr + size > seg.vaddr + seg.filesz:
                    raise GoBinaryError(f"{self.path}: read past segment at {vaddr:#x}")
                return self.read(vaddr - seg.vaddr + seg.offset, size)
        raise GoBinaryError(f"{self.path}: address {vaddr:#x} is in no loaded segment")

    # -- symbols -----------------------------------------------------------------
    def object_symbols(self, wanted: set[str]) -> dict[str, int]:
        """Data symbols (package-level variables) from .symtab: name -> vaddr; {} when
        stripped."""
        if not wanted:
            return {}
        return {k: v for k, (v, _) in self._symbols(wanted, STT_OBJECT).items()}

    def func_symbols(self, wanted: set[str] | None = None) -> dict[str, tuple[int, int]]:
        """Function symbols from .symtab: name -> (vaddr, size); only `wanted` if given.

        Scans the string table for the wanted names first, so a huge symtab is only
        walked with a cheap integer comparison per entry.
        """
        return self._symbols(wanted, STT_FUNC)

    def _symbols(self, wanted: set[str] | None, kind: int) -> dict[str, tuple[int, int]]:
        sec = self.section(".symtab")
        if sec is None or sec.type != SHT_SYMTAB or sec.size == 0:
            return {}
        if sec.link >= len(self.sections):
            raise GoBinaryError(f"{self.path}: bad .symtab link")
        strs = self.section_data(self.sections[sec.link])
        symdata = self.section_data(sec)
        want_offs: dict[int, str] | None = None
        if wanted is not None:
            want_offs = {}
            for name in wanted:
                needle = b"\0" + name.encode() + b"\0"
                start = 0
                while True:
                    i = strs.find(needle, start)
                    if i < 0:
                        break
                    want_offs[i + 1] = name
                    start = i + 1
            if not want_offs:
                return {}
        out: dict[str, tuple[int, int]] = {}
        n = len(symdata) // 24
        for (st_name, st_info, _, _, value, size) in struct.iter_unpack(
                "<IBBHQQ", symdata[:n * 24]):
            if st_info & 0xF != kind:
                continue
            if want_offs is not None:
                name = want_offs.get(st_name)
                if name is None:
                    continue
            else:
                end = strs.find(b"\0", st_name)
                if end < 0:
                    continue
                name = strs[st_name:end].decode("utf-8", "replace")
            out.setdefault(name, (value, size))
        return out


def open_elf(path: str | Path) -> ElfFile:
    """Open and validate an ELF file; GoBinaryError on any problem."""
    return ElfFile(path)
