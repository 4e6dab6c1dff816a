"""The pyelftools DWARF reader: same answers as the fast reader, and the fallback when the
fast reader cannot decode a binary (a crafted copy of a real one), never when DWARF is absent."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from pyhttp2probe.goelf import GoBinaryError, struct_fields
from pyhttp2probe.goelf.dwarf import (
    fast_struct_fields,
    pyelftools_struct_fields,
    section_bytes,
    struct_fields_with_source,
)
from pyhttp2probe.goelf.elf import SHF_COMPRESSED, ElfFile
from pyhttp2probe.goelf.varint import uvarint
from pyhttp2probe.probes import catalogue
from testkit.gobuild import GoBuild, build

KEYS = catalogue().fields
VERSIONS = ["v1.40.0", "v1.85.0"]

TAG_STRUCTURE_TYPE = 0x13
DW_FORM_ADDR = 0x01
DW_FORM_REF_SUP8 = 0x24  # 8 bytes like DW_FORM_addr; pyelftools reads it, the fast reader not
DW_FORM_IMPLICIT_CONST = 0x21


def _mini(version: str, ldflags: str = "") -> Path:
    return build(GoBuild(src="grpcmini", mod=f"grpcmods/{version}", ldflags=ldflags))


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    return uvarint(data, pos, "crafted .debug_abbrev")


def _form_positions(abbrev: bytes, tag: int, form: int) -> list[int]:
    """Offsets of the (one-byte) `form` codes in every abbreviation declaring `tag`."""
    out, pos = [], 0
    while pos < len(abbrev):
        code, pos = _uleb(abbrev, pos)
        if code == 0:  # end of one table
            continue
        this_tag, pos = _uleb(abbrev, pos)
        pos += 1  # DW_CHILDREN_*
        while True:
            at, pos = _uleb(abbrev, pos)
            form_at = pos
            this_form, pos = _uleb(abbrev, pos)
            if this_form == DW_FORM_IMPLICIT_CONST:
                _, pos = _uleb(abbrev, pos)  # its sleb128 value has the same length rule
            if at == 0 and this_form == 0:
                break
            if this_tag == tag and this_form == form:
                out.append(form_at)
    return out


def _with_section(elf: ElfFile, data: bytes, name: str, contents: bytes) -> bytes:
    """A copy of the file whose section `name` holds `contents` (compressed like the
    original), written at the end of the file and pointed to by the section header."""
    sec = elf.section(name)
    assert sec is not None
    if sec.flags & SHF_COMPRESSED:
        _, _, _, align = struct.unpack_from("<IIQQ", elf.section_data(sec), 0)
        contents = struct.pack("<IIQQ", 1, 0, len(contents), align) + zlib.compress(contents)
    out = bytearray(data)
    out += bytes(-len(out) % 8)
    offset = len(out)
    out += contents
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    header = shoff + elf.sections.index(sec) * 64
    struct.pack_into("<QQ", out, header + 24, offset, len(contents))  # sh_offset, sh_size
    return bytes(out)


def _with_struct_form(binary: Path, old: int, new: int) -> bytes:
    """The binary with `old` replaced by `new` as a form of every structure_type
    abbreviation: every wanted struct DIE then uses that form."""
    data = binary.read_bytes()
    with ElfFile(binary) as elf:
        abbrev = section_bytes(elf, ".debug_abbrev")
        assert abbrev is not None
        positions = _form_positions(abbrev, TAG_STRUCTURE_TYPE, old)
        assert positions, "no structure_type abbreviation uses the form to replace"
        patched = bytearray(abbrev)
        for pos in positions:
            patched[pos] = new
        return _with_section(elf, data, ".debug_abbrev", bytes(patched))


@pytest.mark.parametrize("version", VERSIONS)
def test_pyelftools_reader_gives_what_the_fast_reader_gives(version: str) -> None:
    with ElfFile(_mini(version)) as elf:
        fast = fast_struct_fields(elf, KEYS)
        slow = pyelftools_struct_fields(elf, KEYS)
        fields, source = struct_fields_with_source(elf, KEYS)
    assert len(fast) >= 30  # the grpc-go client and server fields, at least
    assert slow == fast
    assert (fields, source) == (fast, "fast")


def test_a_form_the_fast_reader_lacks_falls_back_to_pyelftools_with_the_same_offsets() -> None:
    binary = _mini(VERSIONS[-1])
    with ElfFile(binary) as elf:
        expected = fast_struct_fields(elf, KEYS)
    crafted = _with_struct_form(binary, DW_FORM_ADDR, DW_FORM_REF_SUP8)
    with ElfFile("crafted", data=crafted) as elf:
        # The premise: if the fast reader learns this form, pick another one it lacks.
        with pytest.raises(GoBinaryError, match="unsupported form 0x24"):
            fast_struct_fields(elf, KEYS)
        fields, source = struct_fields_with_source(elf, KEYS)
        assert struct_fields(elf, KEYS) == fields
    assert source == "pyelftools"
    assert fields == expected


def test_dwarf_neither_reader_decodes_is_one_error_naming_both() -> None:
    crafted = _with_struct_form(_mini(VERSIONS[-1]), DW_FORM_ADDR, 0x7F)  # no such form
    with (ElfFile("crafted", data=crafted) as elf,
          pytest.raises(GoBinaryError, match=r"unsupported form 0x7f.*pyelftools")):
        struct_fields_with_source(elf, KEYS)


@pytest.mark.parametrize("version", VERSIONS)
def test_absent_dwarf_is_an_error_not_a_fallback(version: str) -> None:
    with ElfFile(_mini(version, ldflags="-s -w")) as elf:
        for read in (struct_fields, struct_fields_with_source, pyelftools_struct_fields):
            with pytest.raises(GoBinaryError, match="no DWARF"):
                read(elf, KEYS)
