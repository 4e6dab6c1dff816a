"""Go binary inspection: build info, symbols, RET offsets, struct offsets -> attach plan."""

from .errors import (
    GoBinaryError,
    MissingOffsetError,
    NotGoBinaryError,
    UnsupportedGoVersion,
    UnsupportedGoVersionError,
)
from .symbols import FunctionOffsets, function_offsets

__all__ = [
    "FunctionOffsets",
    "GoBinaryError",
    "MissingOffsetError",
    "NotGoBinaryError",
    "UnsupportedGoVersion",
    "UnsupportedGoVersionError",
    "function_offsets",
]
