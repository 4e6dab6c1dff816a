"""One exception family for everything that can go wrong reading a target binary."""

from __future__ import annotations


class GoBinaryError(Exception):
    """The file is missing, not ELF, not Go, truncated or otherwise unusable."""


class NotGoBinaryError(GoBinaryError):
    """A valid ELF file that carries no Go build info or pclntab."""


class UnsupportedGoVersionError(GoBinaryError):
    """A Go binary built by a toolchain this agent cannot trace (no register ABI, < 1.17)."""


# Short alias the issue text uses.
UnsupportedGoVersion = UnsupportedGoVersionError


class MissingOffsetError(GoBinaryError):
    """A wanted struct field has no DWARF and no table entry: never guess an offset."""
