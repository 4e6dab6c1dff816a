"""Struct member offsets from a Go binary's DWARF: a fast reader, and pyelftools behind it.

Why not walk every DIE with pyelftools: a 20+ MB gRPC binary has a quarter of a million
DIEs (~4 s), and Go's linker puts every type into one big compile unit, so "only the CUs of
the wanted packages" would still mean the whole type CU. Instead the fast reader inflates
.debug_info and .debug_abbrev only (SHF_COMPRESSED and .zdebug, size-bounded here), finds
each wanted struct by its inline DW_FORM_string name (Go names types "pkg/path.Type"),
checks the byte before it is a structure_type abbreviation, and decodes just that DIE, its
members and each member's type DIE. DWARF 2-5 forms are supported, 32-bit DWARF only.

When the fast reader cannot decode what it finds (a form, version or layout it does not
handle, or data it rejects), pyelftools reads the same inflated sections instead, so a
binary is never refused for that alone; `struct_fields_with_source` says which reader
answered. Absent DWARF, and compressed sections that fail the size bounds, stay errors.
"""

from __future__ import annotations

import inspect
import io
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from elftools.common.exceptions import DWARFError, ELFError
from elftools.construct.core import ConstructError
from elftools.dwarf.die import DIE
from elftools.dwarf.dwarf_expr import DWARFExprParser
from elftools.dwarf.dwarfinfo import DebugSectionDescriptor, DwarfConfig, DWARFInfo

from .catalog import split_field
from .elf import EM_AARCH64, EM_X86_64, SHF_COMPRESSED, ElfFile, Section
from .errors import GoBinaryError
from .varint import uvarint

MAX_DEBUG_SIZE = 512 << 20  # refuse to inflate more than this (hostile headers)

TAG_STRUCT = 0x13
TAG_MEMBER = 0x0D
AT_NAME = 0x03
AT_TYPE = 0x49
AT_MEMBER_LOCATION = 0x38
DW_FORM_STRING = 0x08

# form -> fixed size in bytes (variable-size forms are handled in _read_die)
_FIXED: Mapping[int, int] = MappingProxyType({
          0x01: 8, 0x05: 2, 0x06: 4, 0x07: 8, 0x0B: 1, 0x0C: 1, 0x0E: 4, 0x10: 4, 0x11: 1,
          0x12: 2, 0x13: 4, 0x14: 8, 0x17: 4, 0x19: 0, 0x1C: 4, 0x1D: 4, 0x1E: 16, 0x1F: 4,
          0x20: 8, 0x21: 0, 0x25: 1, 0x26: 2, 0x27: 3, 0x28: 4, 0x29: 1, 0x2A: 2, 0x2B: 3,
          0x2C: 4})
_ULEB_FORMS = frozenset({0x0F, 0x15, 0x1A, 0x1B, 0x22, 0x23, 0x0D})
_BLOCK_FORMS: Mapping[int, int] = MappingProxyType({0x09: 0, 0x18: 0, 0x0A: 1, 0x03: 2,
                                                     0x04: 4})
_CU_REF_FORMS = frozenset({0x11, 0x12, 0x13, 0x14, 0x15})


@dataclass(frozen=True)
class FieldInfo:
    """One struct member: byte offset and its Go type name as DWARF spells it."""

    offset: int
    type_name: str


def _sleb(data: bytes, pos: int) -> tuple[int, int]:
    start = pos
    value, pos = uvarint(data, pos, "DWARF")
    nbits = 7 * (pos - start)
    if data[pos - 1] & 0x40:
        value -= 1 << nbits
    return value, pos


def section_bytes(elf: ElfFile, name: str) -> bytes | None:
    """Decompressed contents of a debug section (SHF_COMPRESSED or .zdebug), or None."""
    sec: Section | None = elf.section(name)
    zsec = elf.section(".z" + name[1:]) if sec is None else None
    if sec is None and zsec is None:
        return None
    if sec is not None:
        raw = elf.section_data(sec)
        if not sec.flags & SHF_COMPRESSED:
            return raw
        if len(raw) < 24:
            raise GoBinaryError(f"{elf.path}: {name}: truncated compression header")
        ch_type, _, ch_size = struct.unpack_from("<IIQ", raw, 0)
        if ch_type != 1:
            raise GoBinaryError(f"{elf.path}: {name}: unsupported compression {ch_type}")
        payload = raw[24:]
    else:
        assert zsec is not None
        raw = elf.section_data(zsec)
        if len(raw) < 12 or raw[:4] != b"ZLIB":
            raise GoBinaryError(f"{elf.path}: {zsec.name}: bad header")
        (ch_size,) = struct.unpack_from(">Q", raw, 4)
        payload = raw[12:]
    # zlib can inflate ~1000x: bound the output by the header *and* a sane ratio.
    if ch_size > min(MAX_DEBUG_SIZE, 64 * len(payload) + (1 << 20)):
        raise GoBinaryError(f"{elf.path}: {name}: implausible size {ch_size}")
    try:
        dec = zlib.decompressobj()
        out = dec.decompress(payload, ch_size + 1)
    except zlib.error as e:
        raise GoBinaryError(f"{elf.path}: {name}: corrupt compressed data: {e}") from e
    if len(out) != ch_size:
        raise GoBinaryError(f"{elf.path}: {name}: size mismatch after decompression")
    return out


@dataclass
class _Abbrev:
    tag: int
    children: bool
    attrs: list[tuple[int, int, int]]  # (attribute, form, implicit const)


class _Dwarf:
    """Just enough of .debug_info/.debug_abbrev to read Go struct types."""

    def __init__(self, path: str, info: bytes, abbrev: bytes) -> None:
        self.path = path
        self.info = info
        self.abbrev_raw = abbrev
        self._abbrev_tables: dict[int, dict[int, _Abbrev]] = {}
        self._cus = self._scan_cus()

    def _err(self, what: str) -> GoBinaryError:
        return GoBinaryError(f"{self.path}: DWARF: {what}")

    def _scan_cus(self) -> list[tuple[int, int, int, int, int]]:
        """(start, end, first DIE offset, version, abbrev offset) of every unit."""
        cus = []
        pos, data = 0, self.info
        while pos + 11 <= len(data):
            (length,) = struct.unpack_from("<I", data, pos)
            if length >= 0xFFFFFFF0:
                raise self._err("64-bit DWARF is not supported")
            end = pos + 4 + length
            if end > len(data) or length < 7:
                raise self._err("unit length out of range")
            (version,) = struct.unpack_from("<H", data, pos + 4)
            if version == 5:
                if length < 8:
                    raise self._err("short unit header")
                (abbrev_off,) = struct.unpack_from("<I", data, pos + 8)
                first = pos + 12
            elif version in (2, 3, 4):
                (abbrev_off,) = struct.unpack_from("<I", data, pos + 6)
                first = pos + 11
            else:
                raise self._err(f"unsupported DWARF version {version}")
            cus.append((pos, end, first, version, abbrev_off))
            pos = end
        return cus

    def _abbrevs(self, offset: int) -> dict[int, _Abbrev]:
        table = self._abbrev_tables.get(offset)
        if table is not None:
            return table
        table = {}
        data, pos = self.abbrev_raw, offset
        while True:
            code, pos = uvarint(data, pos, "DWARF")
            if code == 0:
                break
            tag, pos = uvarint(data, pos, "DWARF")
            if pos >= len(data):
                raise self._err("abbrev table truncated")
            children = data[pos] == 1
            pos += 1
            attrs = []
            while True:
                at, pos = uvarint(data, pos, "DWARF")
                form, pos = uvarint(data, pos, "DWARF")
                const = 0
                if form == 0x21:
                    const, pos = _sleb(data, pos)
                if at == 0 and form == 0:
                    break
                attrs.append((at, form, const))
            table[code] = _Abbrev(tag, children, attrs)
        self._abbrev_tables[offset] = table
        return table

    def _cu_for(self, offset: int) -> tuple[int, int, int, int, int]:
        lo, hi = 0, len(self._cus) - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            cu = self._cus[mid]
            if offset < cu[0]:
                hi = mid - 1
            elif offset >= cu[1]:
                lo = mid + 1
            else:
                return cu
        raise self._err(f"offset {offset:#x} is in no unit")

    def _read_die(self, pos: int, cu: tuple[int, int, int, int, int]
                  ) -> tuple[_Abbrev | None, dict[int, object], int]:
        """Decode one DIE at pos: (abbrev or None for a null entry, attrs, next pos)."""
        data = self.info
        code, pos = uvarint(data, pos, "DWARF")
        if code == 0:
            return None, {}, pos
        ab = self._abbrevs(cu[4]).get(code)
        if ab is None:
            raise self._err(f"unknown abbreviation {code}")
        vals: dict[int, object] = {}
        for at, form, const in ab.attrs:
            while form == 0x16:  # indirect
                form, pos = uvarint(data, pos, "DWARF")
            val: object
            if form == DW_FORM_STRING:
                end = data.find(b"\0", pos, cu[1])
                if end < 0:
                    raise self._err("unterminated string")
                val, pos = data[pos:end], end + 1
            elif form in _ULEB_FORMS:
                if form == 0x0D:
                    val, pos = _sleb(data, pos)
                else:
                    val, pos = uvarint(data, pos, "DWARF")
            elif form in _BLOCK_FORMS:
                width = _BLOCK_FORMS[form]
                if width == 0:
                    n, pos = uvarint(data, pos, "DWARF")
                else:
                    if pos + width > len(data):
                        raise self._err("truncated block")
                    n = int.from_bytes(data[pos:pos + width], "little")
                    pos += width
                val, pos = data[pos:pos + n], pos + n
            elif form in _FIXED:
                width = _FIXED[form]
                if pos + width > len(data):
                    raise self._err("truncated attribute")
                val = const if form == 0x21 else int.from_bytes(data[pos:pos + width], "little")
                pos += width
            else:
                raise self._err(f"unsupported form {form:#x}")
            if form in _CU_REF_FORMS and isinstance(val, int):
                val += cu[0]
            vals[at] = val
        if pos > cu[1]:
            raise self._err("DIE runs past its unit")
        return ab, vals, pos

    def type_name(self, offset: int, depth: int = 0) -> str:
        """Name of the type DIE at offset (Go names pointers "*T" itself)."""
        cu = self._cu_for(offset)
        ab, vals, _ = self._read_die(offset, cu)
        name = vals.get(AT_NAME)
        if isinstance(name, bytes):
            return name.decode("utf-8", "replace")
        if ab is not None and ab.tag == 0x0F and depth < 8:  # unnamed pointer
            target = vals.get(AT_TYPE)
            if isinstance(target, int):
                return "*" + self.type_name(target, depth + 1)
        return "?"

    def find_struct(self, name: str) -> dict[str, FieldInfo] | None:
        """Members of the struct type named `name`, or None if no such type.

        A candidate whose abbreviation says "structure_type named inline" but whose DIE
        does not decode is not skipped as a mismatch: unless a later candidate decodes, its
        error is raised, so a form this reader lacks is never mistaken for an absent type.
        """
        needle = name.encode() + b"\0"
        data = self.info
        start = 0
        failed: GoBinaryError | None = None
        while True:
            i = data.find(needle, start)
            if i < 0:
                if failed is not None:
                    raise failed
                return None
            start = i + 1
            # The abbreviation code sits right before an inline name; try 1- and 2-byte codes.
            for back in (1, 2):
                die = i - back
                if die < 0:
                    continue
                try:
                    cu = self._cu_for(die)
                    code, end = uvarint(data, die, "DWARF")
                except GoBinaryError:
                    continue
                if die < cu[2] or end != i:
                    continue
                try:
                    ab = self._abbrevs(cu[4]).get(code)
                    if (ab is None or ab.tag != TAG_STRUCT or not ab.attrs
                            or ab.attrs[0][:2] != (AT_NAME, DW_FORM_STRING)):
                        continue
                    _, _, pos = self._read_die(die, cu)
                except GoBinaryError as e:
                    failed = failed or e
                    continue
                return self._members(ab, pos, cu)

    def _members(self, ab: _Abbrev, pos: int, cu: tuple[int, int, int, int, int]
                 ) -> dict[str, FieldInfo]:
        out: dict[str, FieldInfo] = {}
        if not ab.children:
            return out
        depth = 1
        while depth > 0:
            child, vals, pos = self._read_die(pos, cu)
            if child is None:
                depth -= 1
                continue
            if depth == 1 and child.tag == TAG_MEMBER:
                name = vals.get(AT_NAME)
                loc = vals.get(AT_MEMBER_LOCATION)
                typ = vals.get(AT_TYPE)
                if isinstance(loc, bytes):  # DW_OP_plus_uconst block (older producers)
                    loc = uvarint(loc, 1, "DWARF")[0] if loc[:1] == b"\x23" else None
                if isinstance(name, bytes) and isinstance(loc, int):
                    tname = self.type_name(typ) if isinstance(typ, int) else "?"
                    out[name.decode("utf-8", "replace")] = FieldInfo(loc, tname)
            if child.children:
                depth += 1
        return out


def has_dwarf(elf: ElfFile) -> bool:
    """True when the binary carries .debug_info (compressed or not)."""
    return elf.section(".debug_info") is not None or elf.section(".zdebug_info") is not None


Reader = Literal["fast", "pyelftools"]


def _dwarf_sections(elf: ElfFile) -> tuple[bytes, bytes]:
    """Inflated .debug_info and .debug_abbrev; GoBinaryError when absent or out of bounds."""
    info = section_bytes(elf, ".debug_info")
    abbrev = section_bytes(elf, ".debug_abbrev")
    if info is None or abbrev is None:
        raise GoBinaryError(f"{elf.path}: no DWARF")
    return info, abbrev


def _by_type(keys: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    by_type: dict[str, list[tuple[str, str]]] = {}
    for key in keys:
        type_name, fld = split_field(key)
        by_type.setdefault(type_name, []).append((key, fld))
    return by_type


def _pick(by_type: Mapping[str, list[tuple[str, str]]],
          members_of: Mapping[str, dict[str, FieldInfo]]) -> dict[str, FieldInfo]:
    out: dict[str, FieldInfo] = {}
    for type_name, wanted in by_type.items():
        members = members_of.get(type_name)
        if members is None:
            continue
        for key, fld in wanted:
            if fld in members:
                out[key] = members[fld]
    return out


def _fast(path: str, info: bytes, abbrev: bytes, keys: Iterable[str]) -> dict[str, FieldInfo]:
    dw = _Dwarf(path, info, abbrev)
    by_type = _by_type(keys)
    found = {}
    for type_name in by_type:
        members = dw.find_struct(type_name)
        if members is not None:
            found[type_name] = members
    return _pick(by_type, found)


# What pyelftools raises on data it cannot parse; anything else (MemoryError, an alarm's
# exception, a bug) is not turned into a GoBinaryError.
_PYELFTOOLS_ERRORS = (ELFError, DWARFError, ConstructError, ValueError, LookupError, TypeError,
                      AttributeError, ArithmeticError, AssertionError, RuntimeError, EOFError,
                      struct.error, zlib.error)

# DWARFInfo keyword -> section. Only .debug_info and .debug_abbrev are read for themselves;
# pyelftools resolves string, address and list indexes while it parses a DIE, so it gets
# those sections too. Not ELFFile.get_dwarf_info: it would also inflate .debug_line,
# .debug_frame and the rest, without the size bounds of section_bytes.
_PYELFTOOLS_SECTIONS: Mapping[str, str] = MappingProxyType({
    "debug_info_sec": ".debug_info", "debug_abbrev_sec": ".debug_abbrev",
    "debug_str_sec": ".debug_str", "debug_line_str_sec": ".debug_line_str",
    "debug_str_offsets_sec": ".debug_str_offsets", "debug_addr_sec": ".debug_addr",
    "debug_loclists_sec": ".debug_loclists", "debug_rnglists_sec": ".debug_rnglists"})


def _pyelftools_dwarfinfo(elf: ElfFile, sections: Mapping[str, bytes]) -> DWARFInfo:
    """A DWARFInfo over already inflated sections (DWARFInfo keyword -> bytes)."""
    # Every section DWARFInfo takes is a required keyword, and the list grows between
    # pyelftools releases: pass None for each one not handed over.
    kwargs: dict[str, DebugSectionDescriptor | None] = {
        kw: None for kw in inspect.signature(DWARFInfo).parameters if kw.endswith("_sec")}
    for kw, data in sections.items():
        kwargs[kw] = DebugSectionDescriptor(stream=io.BytesIO(data),
                                            name=_PYELFTOOLS_SECTIONS[kw], global_offset=None,
                                            size=len(data), address=0)
    arch = {EM_X86_64: "x64", EM_AARCH64: "AArch64"}.get(elf.machine, "")
    config = DwarfConfig(little_endian=True, machine_arch=arch, default_address_size=8)
    return DWARFInfo(config=config, **kwargs)


def _pyelftools_sections(elf: ElfFile, info: bytes, abbrev: bytes) -> dict[str, bytes]:
    sections = {"debug_info_sec": info, "debug_abbrev_sec": abbrev}
    for kw, name in _PYELFTOOLS_SECTIONS.items():
        if kw in sections:
            continue
        try:
            data = section_bytes(elf, name)
        except GoBinaryError:
            data = None  # pyelftools fails later only if a DIE it parses needs this section
        if data is not None:
            sections[kw] = data
    return sections


def _elftools_type_name(die: DIE, depth: int = 0) -> str:
    """What the fast reader's type_name says, read by pyelftools: DW_AT_name, "*" + the
    target's name for an unnamed pointer, else "?"."""
    name = die.attributes.get("DW_AT_name")
    if name is not None and isinstance(name.value, bytes):
        return name.value.decode("utf-8", "replace")
    if die.tag == "DW_TAG_pointer_type" and "DW_AT_type" in die.attributes and depth < 8:
        return "*" + _elftools_type_name(die.get_DIE_from_attribute("DW_AT_type"), depth + 1)
    return "?"


def _elftools_members(struct_die: DIE, expr: DWARFExprParser) -> dict[str, FieldInfo]:
    out: dict[str, FieldInfo] = {}
    for child in struct_die.iter_children():
        if child.tag != "DW_TAG_member":
            continue
        name = child.attributes.get("DW_AT_name")
        loc = child.attributes.get("DW_AT_data_member_location")
        if name is None or not isinstance(name.value, bytes) or loc is None:
            continue
        offset = loc.value
        if isinstance(offset, list):  # a location expression: DW_OP_plus_uconst N
            ops = expr.parse_expr(offset)
            if len(ops) != 1 or ops[0].op_name != "DW_OP_plus_uconst":
                continue
            offset = ops[0].args[0]
        if not isinstance(offset, int):
            continue
        tname = (_elftools_type_name(child.get_DIE_from_attribute("DW_AT_type"))
                 if "DW_AT_type" in child.attributes else "?")
        out[name.value.decode("utf-8", "replace")] = FieldInfo(offset, tname)
    return out


def _pyelftools(elf: ElfFile, info: bytes, abbrev: bytes,
                keys: Iterable[str]) -> dict[str, FieldInfo]:
    by_type = _by_type(keys)
    pending = {t.encode() for t in by_type}
    found: dict[str, dict[str, FieldInfo]] = {}
    sections = _pyelftools_sections(elf, info, abbrev)
    # A unit can only hold a DIE named X if "X\0" is in its bytes, unless names may live in
    # a string section: skip the other units (most of them: Go's types share one).
    strings = (sections.get("debug_str_sec", b""), sections.get("debug_line_str_sec", b""))
    prefilter = not any(t + b"\0" in s for t in pending for s in strings)
    try:
        dwarf = _pyelftools_dwarfinfo(elf, sections)
        for cu in dwarf.iter_CUs():
            if not pending:
                break
            lo, hi = cu.cu_offset, cu.cu_offset + cu.size
            if prefilter and not any(info.find(t + b"\0", lo, hi) >= 0 for t in pending):
                continue
            expr = DWARFExprParser(cu.structs)
            for die in cu.iter_DIEs():
                if die.tag != "DW_TAG_structure_type":
                    continue
                name = die.attributes.get("DW_AT_name")
                if (name is None or not isinstance(name.value, bytes)
                        or name.value not in pending):
                    continue
                pending.discard(name.value)
                found[name.value.decode()] = _elftools_members(die, expr)
                if not pending:
                    break
    except _PYELFTOOLS_ERRORS as e:
        raise GoBinaryError(f"{elf.path}: DWARF (pyelftools): {type(e).__name__}: {e}") from e
    return _pick(by_type, found)


def fast_struct_fields(elf: ElfFile, keys: Iterable[str]) -> dict[str, FieldInfo]:
    """struct_fields by the fast reader alone: GoBinaryError on anything it cannot decode."""
    info, abbrev = _dwarf_sections(elf)
    return _fast(elf.path, info, abbrev, keys)


def pyelftools_struct_fields(elf: ElfFile, keys: Iterable[str]) -> dict[str, FieldInfo]:
    """struct_fields by pyelftools alone: ~0.5-1 s on a 15-20 MB gRPC binary, where the
    fast reader takes ~50 ms (it walks the whole unit holding the types)."""
    info, abbrev = _dwarf_sections(elf)
    return _pyelftools(elf, info, abbrev, keys)


def struct_fields_with_source(elf: ElfFile, keys: Iterable[str]
                              ) -> tuple[dict[str, FieldInfo], Reader]:
    """struct_fields, and which reader answered: "fast", or "pyelftools" when the fast
    reader could not decode this DWARF. GoBinaryError when DWARF is absent, a compressed
    section fails the size bounds, or both readers fail (the message has both causes)."""
    keys = tuple(keys)
    info, abbrev = _dwarf_sections(elf)
    try:
        return _fast(elf.path, info, abbrev, keys), "fast"
    except GoBinaryError as fast_error:
        try:
            return _pyelftools(elf, info, abbrev, keys), "pyelftools"
        except GoBinaryError as e:
            raise GoBinaryError(f"{fast_error}; the pyelftools fallback failed too: {e}") from e


def struct_fields(elf: ElfFile, keys: Iterable[str]) -> dict[str, FieldInfo]:
    """Offsets of the wanted "pkg.Type.field" keys present in this binary's DWARF.

    Keys whose type or field does not exist in this build are left out (versions differ).
    Raises GoBinaryError when DWARF is absent or neither reader can decode it
    (struct_fields_with_source also says which reader answered).
    """
    return struct_fields_with_source(elf, keys)[0]
