"""Hostile input: truncated, bit-flipped and random ELF files end in GoBinaryError only.

Each case runs in memory (ElfFile(name, data=...)) under a wall-clock alarm, so a hang
fails the test instead of stalling it; peak memory is checked over the whole run.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyhttp2probe.goelf import GoBinaryError, build_plan, struct_fields
from pyhttp2probe.goelf.elf import ElfFile
from pyhttp2probe.goelf.plan import plan_from_elf
from pyhttp2probe.probes import catalogue
from testkit.gobuild import GoBuild, build

CAT = catalogue()

CASE_SECONDS = 5


class _Hang(Exception):
    pass


@contextlib.contextmanager
def _time_bound(seconds: float) -> Iterator[None]:
    def on_alarm(_sig: int, _frame: object) -> None:
        raise _Hang(f"case took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _seed(ldflags: str) -> bytes:
    return build(GoBuild(src="goelf_tiny", ldflags=ldflags)).read_bytes()


SEED = _seed("")
SEED_STRIPPED = _seed("-s -w")
# uncompressed DWARF, so mutations reach the DIE decoder instead of failing in zlib
SEED_PLAIN_DWARF = _seed("-compressdwarf=false")
DWARF_KEYS = ["main.point.x", "main.point.name", "runtime.g.goid", "runtime.m.curg"]


def _regions(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges worth mutating: headers and the sections goelf parses."""
    out = [(0, 4096)]
    with ElfFile("seed", data=data) as elf:
        out.append((elf.size - 8192, elf.size))
        for name in (".gopclntab", ".go.buildinfo", ".debug_info", ".debug_abbrev",
                     ".symtab", ".strtab", ".note.go.buildid", ".shstrtab"):
            sec = elf.section(name)
            if sec is not None and sec.size:
                out.append((sec.offset, sec.offset + min(sec.size, 65536)))
    return out


REGIONS = {False: _regions(SEED), True: _regions(SEED_STRIPPED)}


def _run(data: bytes) -> None:
    """Parse and plan; anything but GoBinaryError (or success) fails the test."""
    with _time_bound(CASE_SECONDS):
        try:
            with ElfFile("case", data=data) as elf:
                with contextlib.suppress(GoBinaryError):
                    struct_fields(elf, DWARF_KEYS)
                plan_from_elf(elf, CAT)
        except GoBinaryError:
            pass


MAXRSS_START = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

FUZZ = settings(max_examples=1000, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.booleans(), st.data())
def test_bit_flipped_binaries_fail_cleanly(stripped: bool, data: st.DataObject) -> None:
    buf = bytearray(SEED_STRIPPED if stripped else SEED)
    regions = REGIONS[stripped]
    for _ in range(data.draw(st.integers(1, 16))):
        lo, hi = regions[data.draw(st.integers(0, len(regions) - 1))]
        pos = data.draw(st.integers(lo, hi - 1))
        if data.draw(st.booleans()):
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        else:
            buf[pos] = data.draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, 1]))
    _run(bytes(buf))


@settings(max_examples=600, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_bit_flipped_dwarf_fails_cleanly(data: st.DataObject) -> None:
    buf = bytearray(SEED_PLAIN_DWARF)
    with ElfFile("seed", data=SEED_PLAIN_DWARF) as elf:
        info = elf.section(".debug_info")
        abbrev = elf.section(".debug_abbrev")
        assert info is not None and abbrev is not None
        dwarf_regions = [(info.offset, info.offset + info.size),
                         (abbrev.offset, abbrev.offset + abbrev.size)]
    for _ in range(data.draw(st.integers(1, 8))):
        lo, hi = dwarf_regions[data.draw(st.integers(0, 1))]
        pos = data.draw(st.integers(lo, hi - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    with (_time_bound(CASE_SECONDS), contextlib.suppress(GoBinaryError),
          ElfFile("case", data=bytes(buf)) as elf):
        struct_fields(elf, DWARF_KEYS)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.booleans(), st.floats(0, 1))
def test_truncated_binaries_fail_cleanly(stripped: bool, frac: float) -> None:
    seed = SEED_STRIPPED if stripped else SEED
    _run(seed[: int(len(seed) * frac)])


def _elf_header(phoff: int, shoff: int, phnum: int, shnum: int, shstrndx: int,
                etype: int) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    return ident + struct.pack("<HHIQQQIHHHHHH", etype, 62, 1, 0x401000, phoff, shoff, 0, 64,
                               56, phnum, 64, shnum, shstrndx)


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(st.integers(0, 1 << 20), st.integers(0, 1 << 20), st.integers(0, 0xFFFF),
       st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.sampled_from([2, 3, 1, 4]),
       st.binary(min_size=0, max_size=4096))
def test_random_elf_files_fail_cleanly(phoff: int, shoff: int, phnum: int, shnum: int,
                                       shstrndx: int, etype: int, body: bytes) -> None:
    _run(_elf_header(phoff, shoff, phnum, shnum, shstrndx, etype) + body)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(min_size=0, max_size=2048))
def test_random_bytes_fail_cleanly(blob: bytes) -> None:
    _run(blob)


@pytest.mark.parametrize("cut", [0, 10, 63, 64, 1000, 100_000])
def test_truncated_files_on_disk_raise_one_error_type(cut: int, tmp_path: Path) -> None:
    target = tmp_path / "cut"
    target.write_bytes(SEED[:cut])
    with pytest.raises(GoBinaryError):
        build_plan(target, CAT, use_cache=False)


def test_fuzzing_kept_memory_bounded() -> None:
    """Runs after the property tests in this module: peak RSS grew by < 512 MiB."""
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - MAXRSS_START
    assert grown_kib < 512 * 1024
