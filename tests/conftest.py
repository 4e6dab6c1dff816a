"""Shared test fixtures: built BPF objects and compiling throwaway BPF C in a test.

The product's objects come from setup.py's build_bpf (pyhttp2probe/bpf/); the loader
tests' own BPF (tests/bpf/*.bpf.c) never ships and is built by testkit/bpfbuild.py into a
content-keyed cache.

Nothing is skipped: these tests need root, BTF and uprobes, and fail loudly without them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.bpfbuild import build_object

ROOT = Path(__file__).resolve().parent.parent
BPF_OUT = ROOT / "pyhttp2probe" / "bpf"
TEST_BPF = ROOT / "tests" / "bpf"
CLANG = ["clang", "-target", "bpf", "-O2", "-g", "-D__TARGET_ARCH_x86",
         f"-I{ROOT / 'bpf_src'}", f"-I{ROOT / 'vmlinux' / 'x86'}"]


@pytest.fixture(scope="session")
def bpf_objects() -> Callable[[str], Path]:
    """Map a name to its object: tests/bpf/<name>.bpf.c ("calltrace") built on demand, else
    the product's pyhttp2probe/bpf/<name>.bpf.o (stale bpf_src/*.bpf.c are built once)."""
    subprocess.run([sys.executable, "setup.py", "-q", "build_bpf"], cwd=ROOT, check=True,
                   capture_output=True)

    def path(name: str) -> Path:
        src = TEST_BPF / f"{name}.bpf.c"
        if src.exists():
            return build_object(src)
        obj = BPF_OUT / f"{name}.bpf.o"
        assert obj.exists(), f"{obj} was not built"
        return obj

    return path


@pytest.fixture
def compile_bpf(tmp_path: Path) -> Callable[[str], Path]:
    """Compile BPF C source text (a test's own, e.g. one the verifier must reject)."""

    def build(source: str, name: str = "test") -> Path:
        src = tmp_path / f"{name}.bpf.c"
        src.write_text(source)
        out = tmp_path / f"{name}.bpf.o"
        proc = subprocess.run([*CLANG, "-c", str(src), "-o", str(out)], capture_output=True,
                              text=True)
        assert proc.returncode == 0, f"clang failed on {src}:\n{proc.stderr}"
        return out

    return build
