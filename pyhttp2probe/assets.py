"""Where the compiled BPF objects and their headers are: package data, via importlib.resources.

setup.py compiles bpf_src/*.bpf.c and copies bpf_src/*.h into pyhttp2probe/bpf/, so an
installed agent needs neither clang nor the source tree, and Python decodes records from
the very header the objects were built with.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def bpf_dir() -> Path:
    """The package's bpf/ directory (a real directory: libbpf opens objects by path)."""
    return Path(str(resources.files("pyhttp2probe").joinpath("bpf")))


def bpf_asset(name: str) -> Path:
    """Path of one shipped BPF object or header; a clear error when the build skipped it."""
    path = bpf_dir() / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{name} is missing from {path.parent}: the package was installed without its "
            "BPF build (run `python3 setup.py build_bpf` in the source tree, or reinstall)")
    return path
