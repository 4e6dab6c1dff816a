"""Compile BPF objects that do not ship (bench/bpf/, tests/bpf/), cached by content.

The product's objects are built by setup.py's build_bpf into the package; these are the
bench's ablation and the loader tests' producers, built on demand with the same clang
flags and headers, so a change to any input gives a new object and a stale one is never
loaded. Used by bench/*.py and tests/conftest.py.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BPF_SRC = ROOT / "bpf_src"
VMLINUX = ROOT / "vmlinux" / "x86"
# setup.py's CLANG_FLAGS, plus its include paths: the headers of bpf_src/ and vmlinux.h.
CLANG_FLAGS = ["-target", "bpf", "-O2", "-g", "-D__TARGET_ARCH_x86", "-Wall", "-Werror",
               f"-I{BPF_SRC}", f"-I{VMLINUX}"]
CACHE = Path.home() / ".cache" / "pyhttp2probe" / "bpfobj"


def _key(src: Path, defines: tuple[str, ...] = ()) -> str:
    """Hash of everything the object depends on: flags, source, every header it may include."""
    h = hashlib.sha256(repr((CLANG_FLAGS, defines)).encode())
    headers = sorted({*src.parent.glob("*.h"), *BPF_SRC.glob("*.h"), VMLINUX / "vmlinux.h"})
    for path in [src, *headers]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:24]


def build_object(src: Path, defines: tuple[str, ...] = ()) -> Path:
    """Compile `src` (a .bpf.c) once per content; returns the cached .bpf.o. `defines`
    ("NAME=VALUE") override a header's #ifndef defaults (a product object built with tiny
    tables, say)."""
    src = Path(src).resolve()
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"{_key(src, defines)}.bpf.o"
    if out.exists():
        return out
    fd, tmp = tempfile.mkstemp(dir=CACHE, suffix=".tmp")
    os.close(fd)
    try:
        proc = subprocess.run(["clang", *CLANG_FLAGS, *(f"-D{d}" for d in defines), "-c",
                               str(src), "-o", tmp],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"clang failed on {src}:\n{proc.stderr}")
        os.replace(tmp, out)  # atomic: a concurrent build of the same key is harmless
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out
