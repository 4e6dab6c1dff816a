"""Build pyhttp2probe: the cffi extension over libbpf and the CO-RE BPF objects.

The BPF objects are compiled here, not at run time, so a deployed agent needs
neither clang nor kernel headers: only libbpf and a kernel with BTF.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

from setuptools import Command, find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BPF_SRC = ROOT / "bpf_src"
BPF_OUT = ROOT / "pyhttp2probe" / "bpf"
VMLINUX = ROOT / "vmlinux" / "x86"
CLANG_FLAGS = ["-target", "bpf", "-O2", "-g", "-D__TARGET_ARCH_x86", "-Wall", "-Werror"]
# One version, pyhttp2probe.__version__ (what `pyhttp2probe --version` prints), read here
# without importing the package (its imports need the dependencies being installed).
VERSION = re.search(r'^__version__ = "([^"]+)"$',
                    (ROOT / "pyhttp2probe" / "__init__.py").read_text(), re.M).group(1)


class build_bpf(Command):
    """Compile every bpf_src/*.bpf.c into pyhttp2probe/bpf/*.bpf.o when stale.

    Only the product's objects: bench- and test-only BPF lives in bench/bpf/ and tests/bpf/
    and is built on demand by testkit/bpfbuild.py. Outputs whose source is gone are removed,
    so they never ship.
    """

    description = "compile CO-RE BPF objects with clang"
    user_options: ClassVar[list[tuple[str, str, str]]] = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        BPF_OUT.mkdir(exist_ok=True)
        headers = [*BPF_SRC.glob("*.h"), VMLINUX / "vmlinux.h"]
        newest_header = max((h.stat().st_mtime for h in headers), default=0.0)
        # Python decodes records from the same header the BPF side writes them with
        # (DESIGN.md rule 5), so the headers ship beside the objects.
        for header in BPF_SRC.glob("*.h"):
            target = BPF_OUT / header.name
            if not target.exists() or target.read_bytes() != header.read_bytes():
                shutil.copyfile(header, target)
        for stale in [*BPF_OUT.glob("*.h"), *BPF_OUT.glob("*.bpf.o")]:
            src_name = stale.name.removesuffix(".o") + ".c" if stale.suffix == ".o" else stale.name
            if not (BPF_SRC / src_name).exists():
                stale.unlink()
        for src in sorted(BPF_SRC.glob("*.bpf.c")):
            out = BPF_OUT / (src.name[: -len(".c")] + ".o")
            if out.exists() and out.stat().st_mtime >= max(src.stat().st_mtime, newest_header):
                continue
            cmd = ["clang", *CLANG_FLAGS, f"-I{BPF_SRC}", f"-I{VMLINUX}", "-c", str(src),
                   "-o", str(out)]
            self.announce(" ".join(cmd), level=2)
            subprocess.run(cmd, check=True)


class build_py_with_bpf(build_py):
    def run(self) -> None:
        self.run_command("build_bpf")
        super().run()


setup(
    name="pyhttp2probe",
    version=VERSION,
    description="eBPF tracing of Go gRPC and HTTP/2 programs, exported as Prometheus metrics",
    python_requires=">=3.11",
    packages=find_packages(include=["libbpf_loader", "libbpf_loader.*", "pyhttp2probe",
                                    "pyhttp2probe.*"]),
    package_data={
        "pyhttp2probe": ["bpf/*.bpf.o", "bpf/*.h", "data/*.json"],
        "libbpf_loader": ["_cffi_src/*.h", "_cffi_src/*.c"],
    },
    setup_requires=["cffi>=1.15"],
    cffi_modules=["libbpf_loader/_cffi_src/build_libbpf.py:ffi"],
    install_requires=[
        "cffi>=1.15",
        "pyelftools>=0.30",
        "capstone>=5.0",
        "prometheus-client>=0.17",
        "structlog>=23.1",
        "numpy>=1.24",
        "pydantic>=2.5",
        "PyYAML>=6",
        "rich>=13",  # pyhttp2probe top: the live terminal view
        # OTLP span export (pyhttp2probe/otlp.py): the SDK's own OTLP/HTTP protobuf encoder,
        # retry and backoff, rather than hand-built protobuf
        "opentelemetry-sdk>=1.20",
        "opentelemetry-exporter-otlp-proto-http>=1.20",
    ],
    extras_require={
        # build: tests/test_wheel.py builds the wheel as a user would (`python -m build`).
        "test": ["pytest>=7", "hypothesis>=6.80", "ruff>=0.4", "requests>=2.28", "build>=1.0"],
    },
    entry_points={"console_scripts": ["pyhttp2probe = pyhttp2probe.cli:main"]},
    cmdclass={"build_bpf": build_bpf, "build_py": build_py_with_bpf},
    # cffi builds the extension on the stable ABI (_libbpf.abi3.so): one wheel for every
    # CPython >= 3.11 (it links the system libbpf, so it is linux_x86_64, not manylinux).
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
