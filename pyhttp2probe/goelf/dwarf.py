"""Struct member offsets from a Go binary's DWARF, reading only what is needed.

Why not walk every DIE with pyelftools: a 20+ MB gRPC binary has tens of thousands of DIEs,
and Go's linker puts every type into one big compile unit, so "only the CUs of the wanted
packages" would still mean the whole type CU. Instead: decompress .debug_info and
.debug_abbrev only (pyelftools' section decompression handles SHF_COMPRESSED and .zdebug),
find each wanted struct by its inline DW_FORM_string name (Go names types "pkg/path.Type"),
check the byte before it is a structure_type abbreviation, and decode just that DIE, its
members and each member's type DIE. DWARF 4 and 5 forms are supported.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .catalog import split_field
from .elf import SHF_COMPRESSED, ElfFile, Section
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
        """Members of the struct type named `name`, or None if no such type."""
        needle = name.encode() + b"\0"
        data = self.info
        start = 0
        while True:
            i = data.find(needle, start)
            if i < 0:
                return None
            start = i + 1
            # The abbreviation code sits right before an inline name; try 1- and 2-byte codes.
            for back in (1, 2):
                die = i - back
                if die < 0:
                    continue
                try:
                    cu = self._cu_for(die)
                    if die < cu[2]:
                        continue
                    ab, vals, pos = self._read_die(die, cu)
                except GoBinaryError:
                    continue
                if (ab is None or ab.tag != TAG_STRUCT or vals.get(AT_NAME) != needle[:-1]
                        or not ab.attrs or ab.attrs[0][:2] != (AT_NAME, DW_FORM_STRING)):
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


def struct_fields(elf: ElfFile, keys: Iterable[str]) -> dict[str, FieldInfo]:
    """Offsets of the wanted "pkg.Type.field" keys present in this binary's DWARF.

    Keys whose type or field does not exist in this build are left out (versions differ).
    Raises GoBinaryError when DWARF is absent or malformed.
    """
    info = section_bytes(elf, ".debug_info")
    abbrev = section_bytes(elf, ".debug_abbrev")
    if info is None or abbrev is None:
        raise GoBinaryError(f"{elf.path}: no DWARF")
    dw = _Dwarf(elf.path, info, abbrev)
    by_type: dict[str, list[tuple[str, str]]] = {}
    for key in keys:
        type_name, fld = split_field(key)
        by_type.setdefault(type_name, []).append((key, fld))
    out: dict[str, FieldInfo] = {}
    for type_name, wanted in by_type.items():
        members = dw.find_struct(type_name)
        if members is None:
            continue
        for key, fld in wanted:
            if fld in members:
                out[key] = members[fld]
    return out
