"""The attach plan: everything the agent needs from a binary, computed once and cached."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .buildinfo import read_buildinfo
from .catalog import Catalogue, call_key, split_field
from .disasm import call_offsets, make_disassembler
from .dwarf import has_dwarf, struct_fields_with_source
from .elf import PF_W, PT_LOAD, SHT_NOBITS, ElfFile
from .errors import GoBinaryError
from .offsets import OffsetsTable, load_table, table_fields
from .symbols import FunctionOffsets, find_functions, offsets_for, present_types

PLAN_FORMAT = 6  # 2: FunctionOffsets.body; 3: dwarf_reader; 4: rodata; 5: variables; 6: calls


@dataclass
class AttachPlan:
    """Offsets for one binary. `functions`/`fields` hold only what this build has."""

    path: str
    go_version: str
    main_module: str
    modules: dict[str, str]
    build_id: str
    functions: dict[str, FunctionOffsets]
    fields: dict[str, int]
    field_types: dict[str, str]
    offsets_source: str  # "dwarf" or "table"
    absent_functions: list[str] = field(default_factory=list)
    absent_fields: list[str] = field(default_factory=list)
    replaced: dict[str, str] = field(default_factory=dict)
    is_pie: bool = False
    dwarf_reader: str = ""  # "fast", or "pyelftools" where the fast reader could not decode
    # .rodata's (file offset, size), (0, 0) when there is none: Go's string literals live
    # there, so a string pointer into it names constant bytes Python can read from the file
    rodata: tuple[int, int] = (0, 0)
    # package-level variables asked for (Catalogue.variables) found in .symtab: name -> vaddr
    variables: dict[str, int] = field(default_factory=dict)
    # call sites asked for (Catalogue.calls) found: call_key(caller, callee) -> the file
    # offsets of the caller's CALL instructions to the callee ([] when it never calls it)
    calls: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The command-line JSON shape (plus the extra keys)."""
        d = dataclasses.asdict(self)
        d["functions"] = {k: {"entry": f.entry, "returns": f.returns, "vaddr": f.vaddr,
                              "size": f.size, "body": f.body}
                          for k, f in self.functions.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, object]) -> AttachPlan:
        """Inverse of to_json (used by the on-disk cache)."""
        d = dict(d)
        funcs = d.pop("functions")
        assert isinstance(funcs, dict)
        ro = d.pop("rodata")
        assert isinstance(ro, list | tuple) and len(ro) == 2
        d["rodata"] = (int(ro[0]), int(ro[1]))  # JSON gives a list
        assert isinstance(d["variables"], dict) and isinstance(d["calls"], dict)
        plan = cls(**d, functions={})  # type: ignore[arg-type]
        plan.functions = {k: FunctionOffsets(**v) for k, v in funcs.items()}
        return plan


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/pyhttp2probe/plans (default ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pyhttp2probe" / "plans"


def _table_stamp() -> str:
    """Size and mtime of the shipped offsets table: a regenerated table replans binaries."""
    from importlib import resources

    try:
        st = os.stat(str(resources.files("pyhttp2probe").joinpath("data/offsets_table.json")))
    except OSError:
        return "no-table"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _want_digest(want: Catalogue) -> str:
    import hashlib

    # The anchors decide which fields a binary has: a changed anchor is a changed plan.
    anchors = sorted(want.anchors.items())
    h = hashlib.sha256(repr((PLAN_FORMAT, want.functions, want.fields, anchors, want.variables,
                             want.calls, _table_stamp())).encode())
    return h.hexdigest()[:12]


def _cache_path(st: os.stat_result, build_id: str, want: str) -> Path:
    import hashlib

    key = hashlib.sha256(f"{build_id}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}".encode())
    return cache_dir() / f"{key.hexdigest()[:24]}-{want}.json"


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as e:
        raise GoBinaryError(f"{path}: cannot read: {e.strerror or e}") from e


def _quick_build_id(path: str) -> str:
    """The Go build id without parsing the whole ELF: it sits in the first 4 KiB."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise GoBinaryError(f"{path}: cannot read: {e.strerror or e}") from e
    i = head.find(b"Go\0\0\x04\0\0\0")
    if i < 8:
        return ""
    n = int.from_bytes(head[i - 8:i - 4], "little")
    return head[i + 8:i + 8 + min(n, 200)].decode("latin-1")


_GO_SECTIONS = (".go.buildinfo", ".gopclntab", ".note.go.buildid")


def looks_like_go(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a Go executable, cheaply (for judging every process of a node):
    the Go build-id note in the first 4 KiB, else a Go section in the section headers.
    False for anything unreadable or not ELF."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if not head.startswith(b"\x7fELF"):
        return False
    if head.find(b"Go\0\0\x04\0\0\0") >= 8:
        return True
    try:
        with ElfFile(path) as elf:
            return any(elf.section(name) is not None for name in _GO_SECTIONS)
    except (GoBinaryError, OSError):
        return False


def build_plan(path: str | os.PathLike[str], want: Catalogue, use_cache: bool = True,
               table: OffsetsTable | None = None, prefer: str = "dwarf") -> AttachPlan:
    """Inspect `path` for what `want` names and return its attach plan (cached by build
    id, size, mtime and inode, and by what was wanted).

    `prefer="table"` forces table offsets even when DWARF exists (used by tests to compare
    both sources). Raises GoBinaryError (or a subclass) for anything unusable.
    """
    path = str(path)
    cpath = None
    if use_cache and prefer == "dwarf" and table is None:  # cached plans use the shipped table
        st = _stat(path)
        cpath = _cache_path(st, _quick_build_id(path), _want_digest(want))
        try:
            cached = AttachPlan.from_json(json.loads(cpath.read_text()))
            cached.path = path  # the same file may be reached by another name
            return cached
        except (OSError, ValueError, TypeError, KeyError, AssertionError):
            pass
    plan = _inspect(path, want, table, prefer)
    if cpath is not None:
        try:
            cpath.parent.mkdir(parents=True, exist_ok=True)
            tmp = cpath.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(plan.to_json()))
            tmp.replace(cpath)
        except OSError:
            pass  # a read-only cache only costs speed
    return plan


def _inspect(path: str, want: Catalogue, table: OffsetsTable | None,
             prefer: str) -> AttachPlan:
    with ElfFile(path) as elf:
        return plan_from_elf(elf, want, table, prefer)


def plan_from_elf(elf: ElfFile, want: Catalogue, table: OffsetsTable | None = None,
                  prefer: str = "dwarf") -> AttachPlan:
    """Compute a plan from an open ElfFile (no cache); what build_plan does on a miss."""
    path = elf.path
    funcs, flds = want.functions, want.fields
    info = read_buildinfo(elf)
    found = find_functions(elf, set(funcs))
    md = make_disassembler()
    functions = {name: offsets_for(elf, *found[name], md) for name in funcs if name in found}
    # Only fields of types this binary links: decided from function names, so a
    # stripped build and its DWARF twin report the same set.
    linked = present_types(elf, {split_field(k)[0] for k in flds}, want.anchors)
    wanted = [k for k in flds if split_field(k)[0] in linked]
    reader = ""
    if prefer == "dwarf" and has_dwarf(elf):
        infos, reader = struct_fields_with_source(elf, wanted)
        source = "dwarf"
    else:
        infos, _ = table_fields(path, info.go_version, info.modules, wanted,
                                table if table is not None else load_table())
        source = "table"
    absent = [k for k in flds if k not in infos]
    return AttachPlan(
        path=path, go_version=info.go_version, main_module=info.main_module,
        modules=info.modules, build_id=info.build_id, functions=functions,
        fields={k: v.offset for k, v in infos.items()},
        field_types={k: v.type_name for k, v in infos.items()},
        offsets_source=source,
        absent_functions=[n for n in funcs if n not in found],
        absent_fields=absent, replaced=info.replaced, is_pie=elf.is_pie, dwarf_reader=reader,
        rodata=rodata_of(elf), variables=elf.object_symbols(set(want.variables)),
        calls=calls_of(elf, functions, want.calls, md))


def calls_of(elf: ElfFile, functions: dict[str, FunctionOffsets],
             pairs: tuple[tuple[str, str], ...], md: object) -> dict[str, list[int]]:
    """call_key -> file offsets of the caller's direct calls of the callee, for each pair
    whose functions are both linked."""
    out = {}
    for caller, callee in pairs:
        c, t = functions.get(caller), functions.get(callee)
        if c is None or t is None or not c.vaddr or not c.size:
            continue
        code = elf.read(c.entry, c.size)
        out[call_key(caller, callee)] = [c.entry + off
                                         for off in call_offsets(code, c.vaddr, t.vaddr, md)]
    return out


def rodata_of(elf: ElfFile) -> tuple[int, int]:
    """(file offset, size) of .rodata when it is file-backed and in a read-only segment (its
    bytes in the process are the file's), else (0, 0)."""
    sec = elf.section(".rodata")
    if sec is None or sec.type == SHT_NOBITS or not sec.size:
        return (0, 0)
    for seg in elf.segments:
        if (seg.type == PT_LOAD and not seg.flags & PF_W and seg.offset <= sec.offset
                and sec.offset + sec.size <= seg.offset + seg.filesz):
            return (sec.offset, sec.size)
    return (0, 0)
