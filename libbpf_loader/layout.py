"""Record layouts from the one C header (DESIGN rule 5): cffi cdef → sizes, numpy dtypes.

Two ways to read a header:
- `ffi_from_header(path)`: only the part marked `/* cdef-begin */ … /* cdef-end */`.
- `HeaderLayout(*paths)`: whole cdef-friendly headers (fixed-width __uNN types, integer
  `#define` constants, no bitfields, no includes); constants are substituted into array
  bounds and kept in `.constants`, so the C side and Python share every number too.
Both typedef __u8/__u16/__u32/__u64 (and signed __sN) before the declarations.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cffi

_TYPEDEFS = """
typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32; typedef uint64_t __u64;
typedef int8_t __s8; typedef int16_t __s16; typedef int32_t __s32; typedef int64_t __s64;
"""
_MARKED = re.compile(r"/\*\s*cdef-begin\s*\*/(.*?)/\*\s*cdef-end\s*\*/", re.S)
_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)\s+(0x[0-9a-fA-F]+|-?\d+)\b", re.M)
_PREPROC = re.compile(r"^\s*#.*$", re.M)


def ffi_from_header(path: str | os.PathLike[str]) -> cffi.FFI:
    """An ABI-mode FFI knowing the marked declarations of a header (no compiler needed)."""
    text = Path(path).read_text()
    parts = _MARKED.findall(text)
    if not parts:
        raise ValueError(f"{os.fspath(path)!r} has no /* cdef-begin */ … /* cdef-end */ part")
    ffi = cffi.FFI()
    ffi.cdef(_TYPEDEFS + "\n".join(parts))
    return ffi


def struct_dtype(ffi: cffi.FFI, ctype: str | Any) -> Any:
    """numpy structured dtype with the exact offsets and size cffi computes for `ctype`.

    char arrays become fixed-size bytes ("S<n>", trailing NULs dropped on read), nested
    structs nest, arrays of primitives become sub-arrays.
    """
    import numpy as np

    t = ffi.typeof(ctype) if isinstance(ctype, str) else ctype
    names, formats, offsets = [], [], []
    for name, field in t.fields:
        names.append(name)
        formats.append(_format(ffi, field.type))
        offsets.append(field.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": ffi.sizeof(t)})


def _format(ffi: cffi.FFI, ft: Any) -> Any:
    import numpy as np

    if ft.kind == "primitive":
        return np.dtype(_NUMPY[ft.cname])
    if ft.kind == "array":
        if ft.item.kind == "primitive" and ft.item.cname == "char":
            return np.dtype(f"S{ft.length}")
        return (_format(ffi, ft.item), (ft.length,))
    if ft.kind == "struct":
        return struct_dtype(ffi, ft)
    return (np.void, ffi.sizeof(ft))


class HeaderLayout:
    """cffi view of whole headers: struct types, integer #define constants, numpy dtypes.

    The headers are read in order and declared as one text, so a later header may use an
    earlier one's types and constants.
    """

    def __init__(self, paths: Iterable[str | os.PathLike[str]] = (), text: str = "") -> None:
        text = "\n".join([*(Path(p).read_text() for p in paths), text])
        self.constants: dict[str, int] = {m[1]: int(m[2], 0) for m in _DEFINE.finditer(text)}
        body = _PREPROC.sub("", text)
        if self.constants:  # array bounds use the constants; cdef wants literal numbers
            names = re.compile(r"\b(" + "|".join(map(re.escape, self.constants)) + r")\b")
            body = names.sub(lambda m: str(self.constants[m[1]]), body)
        self.ffi = cffi.FFI()
        self.ffi.cdef(_TYPEDEFS + body)
        self._dtypes: dict[str, Any] = {}

    def prefixed(self, prefix: str) -> dict[str, int]:
        """Constants whose names start with `prefix`, by the rest of the name, lowercased
        ("SPAN_F_" → {"unmatched": 1, …})."""
        return {k[len(prefix):].lower(): v for k, v in self.constants.items()
                if k.startswith(prefix)}

    def sizeof(self, struct: str) -> int:
        return self.ffi.sizeof(f"struct {struct}")

    def new(self, struct: str) -> Any:
        """A zeroed struct owned by Python (cffi cdata)."""
        return self.ffi.new(f"struct {struct} *")

    def to_bytes(self, cdata: Any) -> bytes:
        return bytes(self.ffi.buffer(cdata))

    def dtype(self, struct: str) -> Any:
        """numpy structured dtype of `struct NAME`, cached."""
        dt = self._dtypes.get(struct)
        if dt is None:
            dt = self._dtypes[struct] = struct_dtype(self.ffi, f"struct {struct}")
        return dt


_NUMPY = {
    "uint8_t": "<u1", "uint16_t": "<u2", "uint32_t": "<u4", "uint64_t": "<u8",
    "int8_t": "<i1", "int16_t": "<i2", "int32_t": "<i4", "int64_t": "<i8",
    "char": "<i1", "unsigned char": "<u1", "int": "<i4", "unsigned int": "<u4",
    "long": "<i8", "unsigned long": "<u8", "_Bool": "?",
}
