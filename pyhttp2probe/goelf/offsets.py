"""Field offsets from the shipped table, for binaries without DWARF."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

from .buildinfo import go_minor
from .catalog import package_of
from .dwarf import FieldInfo
from .errors import MissingOffsetError


def module_of(key: str, modules: dict[str, str]) -> str | None:
    """The module (longest path prefix) owning a field key's package; None for std."""
    pkg = package_of(key)
    best = None
    for mod in modules:
        if (pkg == mod or pkg.startswith(mod + "/")) and (best is None or len(mod) > len(best)):
            best = mod
    return best


def std_key(go_version: str) -> str:
    """Table key for Go std structs: the Go minor version ("go1.26")."""
    minor = go_minor(go_version)
    return f"go1.{minor}" if minor is not None else go_version


@dataclass
class OffsetsTable:
    """The parsed offsets_table.json: modules[path][version][key] and std[go1.N][key]."""

    modules: dict[str, dict[str, dict[str, dict[str, object]]]] = field(default_factory=dict)
    std: dict[str, dict[str, dict[str, object]]] = field(default_factory=dict)
    fields: frozenset[str] | None = None  # keys it was generated for (None: any)


def load_table() -> OffsetsTable:
    """Read the table shipped in pyhttp2probe/data (empty when not generated yet)."""
    try:
        text = resources.files("pyhttp2probe").joinpath("data/offsets_table.json").read_text()
    except FileNotFoundError:
        return OffsetsTable()
    raw = json.loads(text)
    covered = raw.get("fields")
    return OffsetsTable(modules=raw.get("modules", {}), std=raw.get("std", {}),
                        fields=frozenset(covered) if covered is not None else None)


def table_fields(path: str, go_version: str, modules: dict[str, str], keys: list[str],
                 table: OffsetsTable) -> tuple[dict[str, FieldInfo], list[str]]:
    """(found fields, absent keys) from the table; MissingOffsetError if a version is unknown.

    A field absent from a known version's entry is absent in that version (normal). A
    module version (or Go minor) the table does not know is an error: never guess.
    """
    found: dict[str, FieldInfo] = {}
    absent: list[str] = []
    for key in keys:
        owner = module_of(key, modules)
        if owner is None:
            if "." in package_of(key).split("/")[0]:
                absent.append(key)  # a third-party module this binary does not link
                continue
            entries = table.std.get(std_key(go_version))
            what = f"Go {go_version}"
        else:
            entries = table.modules.get(owner, {}).get(modules[owner])
            what = f"module {owner} {modules[owner]}"
        if entries is None or (table.fields is not None and key not in table.fields):
            if entries is not None:
                what += " (the table predates this catalogue field)"
            raise MissingOffsetError(
                f"{path}: no DWARF and no offsets table entry for {what} (field {key}); "
                "rebuild the target with DWARF or regenerate the table "
                "(ci/gen_offsets_table.py)")
        val = entries.get(key)
        if val is None:
            absent.append(key)
        else:
            found[key] = FieldInfo(int(val["offset"]), str(val["type"]))  # type: ignore[call-overload]
    return found, absent
