"""Go binary inspection: build info, symbols, RET offsets, struct offsets -> attach plan.

Entry points:
- build_plan(path) -> AttachPlan: everything the probes need, cached on disk by build id,
  size and mtime (what to resolve comes from goelf.catalog).
- function_offsets(path, symbol) -> FunctionOffsets: entry and RET file offsets of one
  function (.symtab, or .gopclntab when stripped).
- read_buildinfo(ElfFile) -> BuildInfo; struct_fields(ElfFile, keys) -> {key: FieldInfo}.
- arg_registers(kinds): Go amd64 register-ABI registers of each argument.
Every failure on a bad target is a GoBinaryError (subclasses: NotGoBinaryError,
UnsupportedGoVersionError, MissingOffsetError).
"""

from .abi import arg_registers
from .buildinfo import BuildInfo, read_buildinfo
from .dwarf import FieldInfo, struct_fields
from .errors import (
    GoBinaryError,
    MissingOffsetError,
    NotGoBinaryError,
    UnsupportedGoVersion,
    UnsupportedGoVersionError,
)
from .plan import AttachPlan, build_plan
from .symbols import FunctionOffsets, function_offsets

__all__ = [
    "AttachPlan",
    "BuildInfo",
    "FieldInfo",
    "FunctionOffsets",
    "GoBinaryError",
    "MissingOffsetError",
    "NotGoBinaryError",
    "UnsupportedGoVersion",
    "UnsupportedGoVersionError",
    "arg_registers",
    "build_plan",
    "function_offsets",
    "read_buildinfo",
    "struct_fields",
]
