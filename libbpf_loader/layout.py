"""Record layouts from the one C header (DESIGN rule 5): cffi cdef → sizes, numpy dtypes.

A header marks its cdef-able part with `/* cdef-begin */ … /* cdef-end */`; that part
uses __u8/__u16/__u32/__u64 (and signed __sN), which are typedef'd here.
"""

from __future__ import annotations

import os
import re
from typing import Any

import cffi

_TYPEDEFS = """
typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32; typedef uint64_t __u64;
typedef int8_t __s8; typedef int16_t __s16; typedef int32_t __s32; typedef int64_t __s64;
"""
_MARKED = re.compile(r"/\*\s*cdef-begin\s*\*/(.*?)/\*\s*cdef-end\s*\*/", re.S)


def ffi_from_header(path: str | os.PathLike[str]) -> cffi.FFI:
    """An ABI-mode FFI knowing the marked declarations of a header (no compiler needed)."""
    text = open(path).read()  # noqa: SIM115 - tiny file, read once
    parts = _MARKED.findall(text)
    if not parts:
        raise ValueError(f"{os.fspath(path)!r} has no /* cdef-begin */ … /* cdef-end */ part")
    ffi = cffi.FFI()
    ffi.cdef(_TYPEDEFS + "\n".join(parts))
    return ffi


def struct_dtype(ffi: cffi.FFI, ctype: str) -> Any:
    """numpy structured dtype with the exact offsets and size cffi computes for `ctype`."""
    import numpy as np

    t = ffi.typeof(ctype)
    names, formats, offsets = [], [], []
    for name, field in t.fields:
        ft = field.type
        if ft.kind == "primitive":
            fmt: Any = np.dtype(_NUMPY[ft.cname])
        elif ft.kind == "array" and ft.item.kind == "primitive":
            fmt = (np.dtype(_NUMPY[ft.item.cname]), ft.length)
        else:
            fmt = (np.void, ffi.sizeof(ft))
        names.append(name)
        formats.append(fmt)
        offsets.append(field.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": ffi.sizeof(t)})


_NUMPY = {
    "uint8_t": "<u1", "uint16_t": "<u2", "uint32_t": "<u4", "uint64_t": "<u8",
    "int8_t": "<i1", "int16_t": "<i2", "int32_t": "<i4", "int64_t": "<i8",
    "char": "<i1", "unsigned char": "<u1", "int": "<i4", "unsigned int": "<u4",
    "long": "<i8", "unsigned long": "<u8", "_Bool": "?",
}
