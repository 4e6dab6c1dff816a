"""Go build info from .go.buildinfo: Go version, main module, deps (survives stripping)."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from .elf import ElfFile
from .errors import GoBinaryError, NotGoBinaryError, UnsupportedGoVersionError
from .varint import uvarint

MAGIC = b"\xff Go buildinf:"
MAX_STRING = 1 << 20
MIN_MINOR = 17  # register ABI on amd64


@dataclass
class BuildInfo:
    """What `go version -m` shows; `modules` has replacements applied (path -> version)."""

    go_version: str
    main_module: str = ""
    modules: dict[str, str] = field(default_factory=dict)
    replaced: dict[str, str] = field(default_factory=dict)
    build_id: str = ""


def _inline_string(data: bytes, pos: int) -> tuple[str, int]:
    n, pos = uvarint(data, pos, "build info")
    if n > MAX_STRING or pos + n > len(data):
        raise GoBinaryError("bad string in build info")
    return data[pos:pos + n].decode("utf-8", "replace"), pos + n


def _pointer_string(elf: ElfFile, ptr_addr: int) -> str:
    """Pre-1.18 format: a pointer to a Go string header (data pointer, length)."""
    (hdr,) = struct.unpack("<Q", elf.read_vaddr(ptr_addr, 8))
    data_ptr, length = struct.unpack("<QQ", elf.read_vaddr(hdr, 16))
    if length > MAX_STRING:
        raise GoBinaryError(f"{elf.path}: bad string in build info")
    return elf.read_vaddr(data_ptr, length).decode("utf-8", "replace") if length else ""


def go_minor(version: str) -> int | None:
    """17 for "go1.17.3"; None when the version does not parse (devel builds)."""
    m = re.match(r"go1\.(\d+)", version)
    return int(m.group(1)) if m else None


def read_build_id(elf: ElfFile) -> str:
    """Go build id from .note.go.buildid (or the GNU build id), "" when absent."""
    for name, want_type in ((".note.go.buildid", 4), (".note.gnu.build-id", 3)):
        sec = elf.section(name)
        if sec is None or sec.size < 12 or sec.size > 4096:
            continue
        data = elf.section_data(sec)
        namesz, descsz, ntype = struct.unpack_from("<III", data, 0)
        start = 12 + ((namesz + 3) & ~3)
        if ntype != want_type or start + descsz > len(data):
            continue
        desc = data[start:start + descsz]
        return desc.decode("latin-1") if want_type == 4 else desc.hex()
    return ""


def _parse_modinfo(info: BuildInfo, modinfo: str) -> None:
    if len(modinfo) >= 33 and modinfo[-17] == "\n":
        modinfo = modinfo[16:-16]
    last_dep = ""
    for line in modinfo.splitlines():
        parts = line.split("\t")
        if parts[0] == "mod" and len(parts) >= 2:
            info.main_module = parts[1]
        elif parts[0] == "dep" and len(parts) >= 3:
            last_dep = parts[1]
            info.modules[last_dep] = parts[2]
        elif parts[0] == "=>" and last_dep and len(parts) >= 2:
            # A replacement keeps the import path (symbols keep it too); the code is the
            # replacement's, so its version is what decides struct layouts.
            version = parts[2] if len(parts) >= 3 and parts[2] else "(local)"
            info.replaced[last_dep] = parts[1] + (f"@{version}" if len(parts) >= 3 else "")
            info.modules[last_dep] = version


def read_buildinfo(elf: ElfFile) -> BuildInfo:
    """Parse .go.buildinfo; NotGoBinaryError if absent, UnsupportedGoVersionError if < 1.17."""
    sec = elf.section(".go.buildinfo")
    if sec is None:
        raise NotGoBinaryError(f"{elf.path}: not a Go binary (no .go.buildinfo section)")
    if sec.size < 32:
        raise GoBinaryError(f"{elf.path}: .go.buildinfo truncated")
    data = elf.read(sec.offset, min(sec.size, 2 * MAX_STRING + 64))
    if not data.startswith(MAGIC):
        raise GoBinaryError(f"{elf.path}: bad .go.buildinfo magic")
    ptr_size, flags = data[14], data[15]
    if flags & 2:
        version, pos = _inline_string(data, 32)
        modinfo, _ = _inline_string(data, pos)
    else:
        if ptr_size != 8:
            raise GoBinaryError(f"{elf.path}: unsupported pointer size {ptr_size}")
        version = _pointer_string(elf, sec.addr + 16)
        modinfo = _pointer_string(elf, sec.addr + 24)
    if not version.startswith("go") and not version.startswith("devel"):
        raise GoBinaryError(f"{elf.path}: bad Go version {version!r} in build info")
    minor = go_minor(version)
    if minor is not None and minor < MIN_MINOR:
        raise UnsupportedGoVersionError(
            f"{elf.path}: built with {version}; Go >= 1.{MIN_MINOR} (register ABI) is required")
    info = BuildInfo(go_version=version, build_id=read_build_id(elf))
    _parse_modinfo(info, modinfo)
    return info
