"""What to resolve in a target (a Catalogue), and the names of field keys.

Versions differ: a name absent from a binary is simply reported as absent in the plan,
never an error. Field keys are "pkg/path.Type.field".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class Catalogue:
    """What to resolve in a binary: function symbols, struct fields ("pkg/path.Type.field"),
    and anchors — types with no methods of their own, present in a binary when one of the
    given functions is (every other wanted type counts as present when any of its methods
    is linked, which is how a stripped binary and its DWARF twin agree on which fields
    exist). The agent's catalogue is the union of its probe paths' declarations
    (pyhttp2probe.probes.catalogue)."""

    functions: tuple[str, ...]
    fields: tuple[str, ...]
    anchors: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    variables: tuple[str, ...] = ()  # package-level Go variables (their addresses: .symtab)
    # (caller, callee) pairs of functions (both in `functions`): where the caller calls the
    # callee directly, for probes that must run on that path only (AttachPlan.calls)
    calls: tuple[tuple[str, str], ...] = ()


def call_key(caller: str, callee: str) -> str:
    """The key of AttachPlan.calls for the calls of `callee` made by `caller`."""
    return f"{caller} -> {callee}"


def split_field(key: str) -> tuple[str, str]:
    """("pkg/path.Type", "field") from "pkg/path.Type.field"."""
    type_name, _, fld = key.rpartition(".")
    return type_name, fld


def package_of(key: str) -> str:
    """The Go package path of a field key ("pkg/path" of "pkg/path.Type.field")."""
    type_name, _ = split_field(key)
    slash = type_name.rfind("/")
    dot = type_name.find(".", slash + 1)
    return type_name[:dot]


def function_package(symbol: str) -> str:
    """The Go package path of a function symbol ("pkg/path" of "pkg/path.(*T).m")."""
    slash = symbol.rfind("/")
    dot = symbol.find(".", slash + 1)
    return symbol[:dot]
