"""Import-time guards and libbpf's log routing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import libbpf_loader
from libbpf_loader import BpfObject, ObjectOpenError, capture_libbpf_log, set_libbpf_log_level
from libbpf_loader._version import SHIM_VERSION


def test_extension_matches_package_and_libbpf_is_new_enough() -> None:
    assert libbpf_loader._ffi.string(libbpf_loader._lib.lbl_build_version()).decode() == (
        SHIM_VERSION)
    assert libbpf_loader.LIBBPF_VERSION >= (1, 1)


def test_libbpf_messages_reach_python_filtered_by_level(
        tmp_path: Path, bpf_objects: Callable[[str], Path]) -> None:
    good = bpf_objects("calltrace")
    junk = tmp_path / "junk.o"
    junk.write_bytes(b"not an ELF object at all")
    try:
        with capture_libbpf_log() as lines, pytest.raises(ObjectOpenError):
            BpfObject.open(junk)
        assert any("not a proper ELF object" in line for line in lines)
        set_libbpf_log_level("warn")
        with capture_libbpf_log() as lines, pytest.raises(ObjectOpenError):
            BpfObject.open(junk)
        assert lines, "warnings pass the warn filter"
        with capture_libbpf_log() as lines:
            BpfObject.open(good).close()
        assert lines == [], "a clean open says nothing at warn level"
        set_libbpf_log_level("debug")
        with capture_libbpf_log() as lines:
            BpfObject.open(good).close()
        assert lines, "debug messages pass the debug filter"
    finally:
        set_libbpf_log_level("info")
