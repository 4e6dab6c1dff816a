"""Go binary inspection: build info, symbols, RET offsets, struct offsets -> attach plan."""

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
