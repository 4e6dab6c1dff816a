"""goelf against real Go binaries: grpc-go 1.40 → 1.85, normal, stripped, -trimpath, PIE."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile

from pyhttp2probe.goelf import (
    AttachPlan,
    Catalogue,
    GoBinaryError,
    MissingOffsetError,
    UnsupportedGoVersionError,
    arg_registers,
    build_plan,
    function_offsets,
)
from pyhttp2probe.goelf.elf import ElfFile
from pyhttp2probe.goelf.offsets import OffsetsTable, load_table
from pyhttp2probe.goelf.pclntab import funcname_blob, pclntab_functions
from pyhttp2probe.probes import catalogue
from testkit.gobuild import GoBuild, build

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ["v1.40.0", "v1.58.3", "v1.72.2", "v1.83.2", "v1.85.0"]
NEWEST = VERSIONS[-1]
T = "google.golang.org/grpc/internal/transport"
CAT = catalogue()


def _mini(version: str, stripped: bool = False, flags: tuple[str, ...] = ()) -> Path:
    return build(GoBuild(src="grpcmini", mod=f"grpcmods/{version}",
                         ldflags="-s -w" if stripped else "", flags=flags))


def _semver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.lstrip("v").split("."))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _plan_with_symtab(version: str, flags: tuple[str, ...]
                      ) -> tuple[AttachPlan, bytes, Any, dict[str, Any]]:
    """A build's plan, its bytes, and what pyelftools reads of it: .text and the .symtab
    symbols by name (the independent reader the plan is checked against)."""
    binary = _mini(version, flags=flags)
    plan = build_plan(binary, CAT, use_cache=False)
    with open(binary, "rb") as f:
        elf = ELFFile(f)
        text = elf.get_section_by_name(".text")
        symbols = {s.name: s for s in elf.get_section_by_name(".symtab").iter_symbols()}
    return plan, binary.read_bytes(), text, symbols


VARIANTS = [(v, ()) for v in VERSIONS] + [(NEWEST, ("-trimpath",)),
                                           (NEWEST, ("-buildmode=pie",))]
VARIANT_IDS = [v + "".join(f) for v, f in VARIANTS]


@pytest.mark.parametrize(("version", "flags"), VARIANTS, ids=VARIANT_IDS)
def test_stripped_build_gives_the_same_functions_and_fields(version: str,
                                                            flags: tuple[str, ...]) -> None:
    normal = build_plan(_mini(version, flags=flags), CAT, use_cache=False)
    stripped = build_plan(_mini(version, stripped=True, flags=flags), CAT, use_cache=False)
    assert normal.offsets_source == "dwarf"
    assert stripped.offsets_source == "table"
    assert normal.go_version == stripped.go_version
    assert normal.modules == stripped.modules
    assert normal.modules["google.golang.org/grpc"] == version
    assert {k: (f.entry, f.returns) for k, f in normal.functions.items()} == \
        {k: (f.entry, f.returns) for k, f in stripped.functions.items()}
    assert {k: f.size for k, f in normal.functions.items()} == \
        {k: f.size for k, f in stripped.functions.items()}
    assert normal.fields == stripped.fields
    assert normal.field_types == stripped.field_types
    assert normal.is_pie == ("-buildmode=pie" in flags)


@pytest.mark.parametrize("version", VERSIONS)
def test_table_offsets_equal_dwarf_offsets_field_by_field(version: str) -> None:
    binary = _mini(version)
    dwarf = build_plan(binary, CAT, use_cache=False)
    table = build_plan(binary, CAT, use_cache=False, prefer="table")
    assert table.offsets_source == "table"
    for key, off in dwarf.fields.items():
        assert table.fields.get(key) == off, key
        assert table.field_types.get(key) == dwarf.field_types[key], key
    assert set(table.fields) == set(dwarf.fields)


@pytest.mark.parametrize(("version", "flags"), VARIANTS, ids=VARIANT_IDS)
def test_every_return_offset_holds_a_ret_and_entries_match_symtab(
        version: str, flags: tuple[str, ...]) -> None:
    plan, data, text, symbols = _plan_with_symtab(version, flags)
    for name, fo in plan.functions.items():
        sym = symbols[name]
        # independent translation (pyelftools): symbol value -> .text file offset
        assert fo.entry == text["sh_offset"] + sym["st_value"] - text["sh_addr"], name
        assert fo.vaddr == sym["st_value"] and fo.size == sym["st_size"], name
        assert fo.returns, f"{name} has no RET"
        for r in fo.returns:
            assert fo.entry <= r < fo.entry + fo.size  # `func() {}` is one RET
            assert data[r] in (0xC3, 0xC2), f"{name}: {data[r]:#x} at {r:#x}"


@pytest.mark.parametrize("version", VERSIONS)
def test_functions_and_fields_follow_the_grpc_version(version: str) -> None:
    # the agent's catalogue plus two functions whose presence marks grpc-go's versions
    want = Catalogue((*CAT.functions, f"{T}.(*http2Client).NewStream",
                      f"{T}.(*ClientStream).Close"), CAT.fields, CAT.anchors)
    plan = build_plan(_mini(version, stripped=True), want, use_cache=False)
    v = _semver(version)
    assert f"{T}.(*http2Client).NewStream" in plan.functions
    assert f"{T}.(*http2Server).operateHeaders" in plan.functions
    assert f"{T}.CallHdr.Method" in plan.fields
    assert plan.fields["google.golang.org/grpc/internal/status.Status.s"] == 0
    assert "google.golang.org/genproto/googleapis/rpc/status.Status.Code" in plan.fields
    assert plan.fields["net.TCPAddr.Port"] == 24
    if v >= (1, 69, 0):
        # Stream split into ClientStream/ServerStream; the once-per-stream close moved
        assert f"{T}.(*ClientStream).Close" in plan.functions
        assert f"{T}.ClientStream.Stream" in plan.fields
        assert plan.field_types[f"{T}.ClientStream.Stream"].endswith(f"{T}.Stream")
        assert f"{T}.(*http2Server).writeStatus" in plan.functions
    else:
        assert f"{T}.(*ClientStream).Close" not in plan.functions
        assert f"{T}.(*ClientStream).Close" in plan.absent_functions
        assert f"{T}.Stream.ct" in plan.fields
        assert f"{T}.ClientStream.Stream" in plan.absent_fields
        assert f"{T}.(*http2Server).WriteStatus" in plan.functions
    assert f"{T}.Stream.id" in plan.fields
    assert plan.field_types[f"{T}.Stream.id"] == "uint32"


def test_pclntab_agrees_with_symtab_on_every_go_function() -> None:
    with ElfFile(_mini(NEWEST)) as elf:
        sym = elf.func_symbols()
        pcl = pclntab_functions(elf)
        names = Counter((funcname_blob(elf) or b"").split(b"\0"))
    # names listed twice (an assembly function and its ABI wrapper) are ambiguous by name
    common = [n for n in pcl if n in sym and names[n.encode()] == 1]
    assert len(common) > 5000
    for name in common:
        if not name.startswith(("_cgo", "x_cgo", "go:")):
            assert pcl[name] == sym[name], name


def test_function_offsets_works_on_stripped_and_pie_binaries() -> None:
    name = f"{T}.(*http2Client).NewStream"
    a = function_offsets(_mini(NEWEST), name)
    b = function_offsets(_mini(NEWEST, stripped=True), name)
    assert (a.entry, a.returns, a.size) == (b.entry, b.returns, b.size)
    pie = function_offsets(_mini(NEWEST, flags=("-buildmode=pie",)), name)
    assert pie.returns and pie.size > 0
    with pytest.raises(GoBinaryError, match="not found"):
        function_offsets(_mini(NEWEST), "main.noSuchFunction")


def test_plan_cache_is_fast_and_invalidated_when_the_file_changes(tmp_path: Path) -> None:
    binary = tmp_path / "bin"
    shutil.copy2(_mini(NEWEST), binary)
    cold = build_plan(binary, CAT)
    t0 = time.perf_counter()
    warm = build_plan(binary, CAT)
    assert time.perf_counter() - t0 < 0.05
    assert warm == cold
    shutil.copy2(_mini("v1.58.3"), binary)  # same path, different content
    changed = build_plan(binary, CAT)
    assert changed.modules["google.golang.org/grpc"] == "v1.58.3"
    assert changed.build_id != cold.build_id


def test_plan_cache_is_invalidated_when_the_offsets_table_is_regenerated(
        tmp_path: Path) -> None:
    from importlib import resources

    from pyhttp2probe.goelf.plan import cache_dir

    binary = tmp_path / "bin"
    shutil.copy2(_mini(NEWEST), binary)
    build_plan(binary, CAT)
    assert len(list(cache_dir().glob("*.json"))) == 1
    table = Path(str(resources.files("pyhttp2probe").joinpath("data/offsets_table.json")))
    st = table.stat()
    try:
        os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        build_plan(binary, CAT)  # a new table: planned again, not served from the old entry
        assert len(list(cache_dir().glob("*.json"))) == 2
    finally:
        os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_unknown_version_without_dwarf_names_binary_module_version_and_field() -> None:
    binary = _mini("v1.58.3", stripped=True)
    table = load_table()
    mods = {m: {v: e for v, e in vs.items() if v != "v1.58.3"}
            for m, vs in table.modules.items()}
    with pytest.raises(MissingOffsetError) as err:
        build_plan(binary, CAT, use_cache=False, table=OffsetsTable(modules=mods, std=table.std))
    msg = str(err.value)
    assert str(binary) in msg and "google.golang.org/grpc v1.58.3" in msg
    assert "field google.golang.org/grpc." in msg
    with pytest.raises(MissingOffsetError, match="Go go1"):
        build_plan(binary, CAT, use_cache=False, table=OffsetsTable(modules=table.modules))


def test_go_older_than_1_17_is_rejected_clearly(tmp_path: Path) -> None:
    data = bytearray(_mini(NEWEST, stripped=True).read_bytes())
    with ElfFile(_mini(NEWEST, stripped=True)) as elf:
        sec = elf.section(".go.buildinfo")
        assert sec is not None
        start = sec.offset
    i = data.index(b"go1.", start)
    data[i:i + 6] = b"go1.16"
    old = tmp_path / "old"
    old.write_bytes(bytes(data))
    with pytest.raises(UnsupportedGoVersionError, match=r"go1\.16"):
        build_plan(old, CAT, use_cache=False)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pyhttp2probe", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)


def test_cli_inspect_json_contract() -> None:
    out = _cli("inspect", str(_mini("v1.72.2", stripped=True)), "--json", "--no-cache")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["go_version"].startswith("go1.")
    assert d["modules"]["google.golang.org/grpc"] == "v1.72.2"
    assert d["offsets_source"] == "table"
    fin = d["functions"]["google.golang.org/grpc.(*clientStream).finish"]
    assert isinstance(fin["entry"], int) and all(isinstance(r, int) for r in fin["returns"])
    assert fin["entry"] < fin["body"] < fin["entry"] + fin["size"], "probe past the stack check"
    assert d["fields"][f"{T}.ClientStream.ct"] >= 0
    text = _cli("inspect", str(_mini("v1.72.2")))
    assert text.returncode == 0 and "finish" in text.stdout and "dwarf" in text.stdout


@pytest.mark.parametrize("make", ["missing", "not_elf", "not_go", "truncated"])
def test_cli_bad_input_exits_2_with_one_line(make: str, tmp_path: Path) -> None:
    target = tmp_path / make
    if make == "not_elf":
        target.write_text("hello\n" * 100)
    elif make == "not_go":
        target = Path(sys.executable).resolve()
    elif make == "truncated":
        target.write_bytes(_mini(NEWEST).read_bytes()[:300_000])
    out = _cli("inspect", str(target), "--json")
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_arg_registers_follow_the_go_register_abi() -> None:
    # (*http2Client).NewStream(ctx, callHdr): t=RAX, ctx=RBX+RCX, callHdr=RDI
    assert arg_registers(["ptr", "iface", "ptr"]) == [("RAX",), ("RBX", "RCX"), ("RDI",)]
    assert arg_registers(["slice", "string", "bool"]) == [
        ("RAX", "RBX", "RCX"), ("RDI", "RSI"), ("R8",)]
    # 8 registers used; a slice no longer fits and goes to the stack, the int still fits
    regs = arg_registers(["slice", "slice", "string", "slice", "int"])
    assert regs[3] is None and regs[4] == ("R11",)
    with pytest.raises(ValueError):
        arg_registers(["float128"])


def test_a_catalogue_field_newer_than_the_table_is_an_error_not_absent() -> None:
    binary = _mini("v1.58.3", stripped=True)
    table = load_table()
    key = f"{T}.Stream.id"
    stale = OffsetsTable(modules=table.modules, std=table.std,
                         fields=frozenset(k for k in CAT.fields if k != key))
    with pytest.raises(MissingOffsetError, match="predates"):
        build_plan(binary, CAT, use_cache=False, table=stale)


def test_offsets_table_covers_the_whole_catalogue() -> None:
    """Extending goelf/catalog.py needs `python3 ci/gen_offsets_table.py` (cached: seconds)."""
    table = load_table()
    assert table.fields is not None
    missing = sorted(set(CAT.fields) - table.fields)
    assert not missing, f"regenerate the offsets table for {missing}"
    assert {"v1.40.0", "v1.69.4", "v1.77.0", "v1.82.1", NEWEST} <= set(
        table.modules["google.golang.org/grpc"])


@pytest.mark.parametrize(("version", "flags"), VARIANTS, ids=VARIANT_IDS)
def test_variables_and_rodata_agree_with_pyelftools(version: str, flags: tuple[str, ...]) -> None:
    """The plan's package-level variables (grpc.statusOK) are the .symtab's STT_OBJECT
    values, as pyelftools reads them, and absent when stripped; .rodata is the section's
    file range in both builds."""
    name = "google.golang.org/grpc.statusOK"
    assert name in CAT.variables
    normal = build_plan(_mini(version, flags=flags), CAT, use_cache=False)
    stripped = build_plan(_mini(version, stripped=True, flags=flags), CAT, use_cache=False)
    with open(_mini(version, flags=flags), "rb") as f:
        elf = ELFFile(f)
        (sym,) = elf.get_section_by_name(".symtab").get_symbol_by_name(name)
        ro = elf.get_section_by_name(".rodata")
        assert sym["st_info"]["type"] == "STT_OBJECT"
        assert normal.variables == {name: sym["st_value"]}
        assert normal.rodata == (ro["sh_offset"], ro["sh_size"])
    assert stripped.variables == {}
    assert stripped.rodata[1] > 0


@pytest.mark.parametrize(("version", "flags"), VARIANTS, ids=VARIANT_IDS)
def test_call_sites_are_direct_calls_of_the_callee_and_the_same_stripped(
        version: str, flags: tuple[str, ...]) -> None:
    """Every call site the plan finds (Catalogue.calls) is an E8 CALL whose target is the
    callee's .symtab value (pyelftools), inside the caller; finish() calls the attempt's
    finish exactly once in every version, newClientStreamWithParams its start point once;
    a stripped build (pclntab) finds the same."""
    from pyhttp2probe.goelf.catalog import call_key
    from pyhttp2probe.probes.grpc_client import FN_ATTEMPT_FINISH, FN_END, START_CALLS

    plan, data, text, symbols = _plan_with_symtab(version, flags)
    value = {name: s["st_value"] for name, s in symbols.items()}
    assert len(plan.calls[call_key(FN_END, FN_ATTEMPT_FINISH)]) == 1
    # the start: newClientStreamWithParams calls newAttemptLocked (<= v1.48) or withRetry once
    assert [len(plan.calls[call_key(*c)]) for c in START_CALLS] == (
        [1, 1] if _semver(version) < (1, 49, 0) else [0, 1])
    found = 0
    for caller, callee in CAT.calls:
        sites = plan.calls.get(call_key(caller, callee))
        if sites is None:
            assert caller not in plan.functions or callee not in plan.functions
            continue
        fo = plan.functions[caller]
        for off in sites:
            found += 1
            assert fo.entry <= off < fo.entry + fo.size and data[off] == 0xE8
            vaddr = text["sh_addr"] + off - text["sh_offset"]
            rel = int.from_bytes(data[off + 1:off + 5], "little", signed=True)
            assert vaddr + 5 + rel == value[callee], (caller, callee, hex(off))
    assert found >= 2  # and at least one place finish() runs before a call's first attempt
    stripped = build_plan(_mini(version, stripped=True, flags=flags), CAT, use_cache=False)
    assert {k: len(v) for k, v in stripped.calls.items()} == \
        {k: len(v) for k, v in plan.calls.items()}
