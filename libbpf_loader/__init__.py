"""libbpf_loader: a small cffi binding of libbpf (>= 1.1) to open, load and attach BPF
objects and drain ring buffers in batches. Generic: nothing here knows about Go or gRPC.
"""

from __future__ import annotations

from libbpf_loader._version import SHIM_VERSION
from libbpf_loader.errors import (
    AttachError,
    BpfError,
    ClosedError,
    LibbpfVersionError,
    LoadError,
    MapError,
    ObjectOpenError,
)

try:
    from libbpf_loader._libbpf import ffi as _ffi
    from libbpf_loader._libbpf import lib as _lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise LibbpfVersionError(
        f"libbpf_loader's extension is not built or cannot load libbpf ({exc}); run "
        "`pip install -e .` (needs libbpf-dev >= 1.1)") from exc

MIN_LIBBPF = (1, 1)
LIBBPF_VERSION = (int(_lib.libbpf_major_version()), int(_lib.libbpf_minor_version()))
if LIBBPF_VERSION < MIN_LIBBPF:
    raise LibbpfVersionError(f"libbpf {LIBBPF_VERSION[0]}.{LIBBPF_VERSION[1]} is too old: "
                             f"libbpf_loader needs >= {MIN_LIBBPF[0]}.{MIN_LIBBPF[1]}")
_built = _ffi.string(_lib.lbl_build_version()).decode()
if _built != SHIM_VERSION:
    raise LibbpfVersionError(f"libbpf_loader's extension was built from shim version {_built}"
                             f" but the package is {SHIM_VERSION}: rebuild with `pip install "
                             "-e .`")

from libbpf_loader._log import capture_libbpf_log, set_libbpf_log_level  # noqa: E402
from libbpf_loader.layout import HeaderLayout, ffi_from_header, struct_dtype  # noqa: E402
from libbpf_loader.links import Link  # noqa: E402
from libbpf_loader.maps import Map  # noqa: E402
from libbpf_loader.object import BpfObject, Program, bpf_stats_enabled  # noqa: E402
from libbpf_loader.ringbuf import Batch, RecordRingBuffer, RingBuffer  # noqa: E402

# The first word of a packed ring record (bpf_src/stage.h): RingBuffer unpacks it.
PACKED_MAGIC: int = _lib.LBL_PACKED

__all__ = [
    "LIBBPF_VERSION",
    "PACKED_MAGIC",
    "AttachError",
    "Batch",
    "BpfError",
    "BpfObject",
    "ClosedError",
    "HeaderLayout",
    "LibbpfVersionError",
    "Link",
    "LoadError",
    "Map",
    "MapError",
    "ObjectOpenError",
    "Program",
    "RecordRingBuffer",
    "RingBuffer",
    "bpf_stats_enabled",
    "capture_libbpf_log",
    "ffi_from_header",
    "set_libbpf_log_level",
    "struct_dtype",
]
