"""goelf across Go toolchains 1.16 → 1.27: pclntab formats, build info formats, DWARF.

Go 1.17 has pointer-style build info and .zdebug/legacy layouts, 1.18/1.19 the first
funcdata-relative pclntab (magic 0xfffffff0), 1.20+ magic 0xfffffff1, and 1.26 no longer
fills textStart; 1.27 (newer than the installed Go) is covered too. Toolchains come
through the Go module proxy (GOTOOLCHAIN) and are cached.
go1.19.13 is left out: run from the module cache it cannot build anything here
("import of unknown directory"); 1.18 covers the same pclntab format.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pyhttp2probe.goelf import UnsupportedGoVersionError, build_plan, struct_fields
from pyhttp2probe.goelf.buildinfo import read_buildinfo
from pyhttp2probe.goelf.elf import ElfFile
from pyhttp2probe.goelf.pclntab import funcname_blob, pclntab_functions
from pyhttp2probe.goelf.symbols import function_offsets
from pyhttp2probe.probes import catalogue
from testkit.gobuild import GoBuild, build

CAT = catalogue()

TOOLCHAINS = ["go1.17.13", "go1.18.10", "go1.20.14", "go1.21.13", "go1.22.12",
              "go1.23.12", "go1.24.13", "go1.25.14", "local", "go1.27.4"]


def _tiny(toolchain: str, stripped: bool = False) -> Path:
    """Build with that toolchain; one the proxy cannot serve fails the test, not skips it."""
    return build(GoBuild(src="goelf_tiny", ldflags="-s -w" if stripped else "",
                         env=(("GOTOOLCHAIN", toolchain),)))


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_each_go_toolchain_gives_symbols_buildinfo_and_dwarf(toolchain: str) -> None:
    normal, stripped = _tiny(toolchain), _tiny(toolchain, stripped=True)
    with ElfFile(normal) as elf:
        info = read_buildinfo(elf)
        if toolchain != "local":
            assert info.go_version == toolchain
        assert info.main_module == "goelftiny"
        sym = elf.func_symbols()
        pcl = pclntab_functions(elf)
        names = Counter((funcname_blob(elf) or b"").split(b"\0"))
        fields = struct_fields(elf, ["main.point.x", "main.point.y", "main.point.name"])
    # go:* are linker markers (e.g. go:textfipsstart), not functions
    common = [n for n in pcl if n in sym and names[n.encode()] == 1
              and not n.startswith("go:")]
    assert len(common) > 500
    for name in common:
        assert pcl[name] == sym[name], name
    assert {k: (v.offset, v.type_name) for k, v in fields.items()} == {
        "main.point.x": (0, "int"), "main.point.y": (8, "int"),
        "main.point.name": (16, "string")}
    for fn in ("main.main", "main.(*point).String"):
        a, b = function_offsets(normal, fn), function_offsets(stripped, fn)
        assert (a.entry, a.returns, a.size) == (b.entry, b.returns, b.size)
        data = normal.read_bytes()
        assert a.returns and all(data[r] == 0xC3 for r in a.returns)


def test_go_1_16_binaries_are_unsupported() -> None:
    binary = _tiny("go1.16.15")
    with pytest.raises(UnsupportedGoVersionError, match=r"go1\.16"):
        build_plan(binary, CAT, use_cache=False)
