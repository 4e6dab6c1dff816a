"""Go binary inspection: build info, symbols, RET offsets, struct offsets -> attach plan.

Entry points:
- build_plan(path, Catalogue) -> AttachPlan: the functions and fields a Catalogue names
  (the agent's is the union of its probe paths'), cached on disk by build id, size, mtime.
- function_offsets(path, symbol) -> FunctionOffsets: entry and RET file offsets of one
  function (.symtab, or .gopclntab when stripped).
- read_buildinfo(ElfFile) -> BuildInfo; struct_fields(ElfFile, keys) -> {key: FieldInfo}.
- arg_registers(kinds): Go amd64 register-ABI registers of each argument.
Every failure on a bad target is a GoBinaryError (subclasses: NotGoBinaryError,
UnsupportedGoVersionError, MissingOffsetError).
"""

from .abi import arg_registers
from .buildinfo import BuildInfo, read_buildinfo
from .catalog import Catalogue
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
    "Catalogue",
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
