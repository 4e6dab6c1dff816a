"""The package as a user gets it: `python -m build` makes an sdist and, from it, a wheel that
installs into a fresh venv (no system site-packages) where the CLI runs and the BPF objects
are found and load.

The build runs in a copy of the inputs only (so it cannot depend on anything else in the
checkout, nor write into it) and is cached under ~/.cache/pyhttp2probe/wheel/<hash of the
inputs, the interpreter and clang>: a run with unchanged inputs skips it. It takes ~25 s
(pip's isolated build environment, clang on every bpf_src/*.bpf.c, the cffi extension).
Dependency wheels come from PyPI once into ~/.cache/pyhttp2probe/wheel/deps and are installed
from there afterwards (pip --no-index), so a warm run costs a few seconds.
"""

from __future__ import annotations

import ast
import email.parser
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "pyhttp2probe" / "wheel"
WHEELHOUSE = CACHE / "deps"
OWN = {"pyhttp2probe", "libbpf_loader"}
# Never in a wheel or sdist: they need the checkout (Go sources, test BPF, the bench).
NOT_SHIPPED = ("tests/", "testkit/", "bench/", "ci/")
# Generated in the checkout by an editable install or build_bpf: the build makes its own.
GENERATED = re.compile(r"(^|/)__pycache__/|\.(pyc|so|o)$|^libbpf_loader/_libbpf\.c$|"
                       r"^pyhttp2probe/bpf/")


# -- building -------------------------------------------------------------------------------
def build_inputs() -> list[Path]:
    """Every file the build reads, relative to ROOT (what MANIFEST.in puts in the sdist)."""
    files = [Path(p) for p in ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md",
                               "vmlinux/x86/vmlinux.h")]
    for top in ("bpf_src", "libbpf_loader", "pyhttp2probe"):
        for path in sorted((ROOT / top).rglob("*")):
            rel = path.relative_to(ROOT)
            if path.is_file() and not GENERATED.search(rel.as_posix()):
                files.append(rel)
    return files


def build_key(inputs: list[Path]) -> str:
    h = hashlib.sha256(sys.version.encode())
    h.update(subprocess.run(["clang", "--version"], capture_output=True, text=True,
                            check=True).stdout.encode())
    for rel in inputs:
        h.update(rel.as_posix().encode() + b"\0" + (ROOT / rel).read_bytes() + b"\0")
    return h.hexdigest()[:20]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"wheel": path, "sdist": path}, built once per set of inputs."""
    inputs = build_inputs()
    key = build_key(inputs)
    out = CACHE / key
    if not out.is_dir():
        src = tmp_path_factory.mktemp("wheel-src")
        for rel in inputs:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
        staging = tmp_path_factory.mktemp("wheel-dist")
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(staging), str(src)],
                              capture_output=True, text=True, timeout=900)
        seconds = time.monotonic() - t0
        assert proc.returncode == 0, f"python -m build failed:\n{proc.stdout}\n{proc.stderr}"
        (staging / "build.json").write_text(json.dumps({"seconds": round(seconds, 1)}))
        print(f"built the sdist and wheel in {seconds:.1f} s")
        CACHE.mkdir(parents=True, exist_ok=True)
        for old in CACHE.iterdir():  # one build is kept, beside the dependency wheels
            if old.is_dir() and old != WHEELHOUSE:
                shutil.rmtree(old, ignore_errors=True)
        tmp = CACHE / f".{key}.{os.getpid()}"
        shutil.copytree(staging, tmp)
        try:
            tmp.rename(out)  # atomic; a concurrent run's identical build may have won
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def source_version() -> str:
    text = (ROOT / "pyhttp2probe" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, re.M).group(1)


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(zf.read(name).decode())


def norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


# -- what is in the wheel and the sdist -----------------------------------------------------
def test_wheel_ships_the_objects_headers_table_and_extension_and_nothing_else(
        dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as zf:
        names = set(zf.namelist())
    objects = {f"pyhttp2probe/bpf/{p.name[:-2]}.o" for p in (ROOT / "bpf_src").glob("*.bpf.c")}
    headers = {f"pyhttp2probe/bpf/{p.name}" for p in (ROOT / "bpf_src").glob("*.h")}
    assert objects and objects <= names, sorted(objects - names)
    assert headers <= names, sorted(headers - names)
    assert "pyhttp2probe/data/offsets_table.json" in names
    assert any(re.fullmatch(r"libbpf_loader/_libbpf\..*\.so", n) for n in names), sorted(names)
    stray = sorted(n for n in names if n.startswith((*NOT_SHIPPED, "bpf_src/", "vmlinux/")))
    assert not stray, f"the wheel must not ship {stray}"
    assert not [n for n in names if n.startswith("pyhttp2probe/bpf/") and n.endswith(".c")]
    assert dists["wheel"].name.endswith("-cp311-abi3-linux_x86_64.whl"), dists["wheel"].name
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == OWN | {f"pyhttp2probe-{source_version()}.dist-info"}, tops


def test_sdist_has_what_the_build_needs_and_no_tests(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"setup.py", "pyproject.toml", "vmlinux/x86/vmlinux.h",
            "libbpf_loader/_cffi_src/build_libbpf.py"} <= names
    assert {f"bpf_src/{p.name}" for p in (ROOT / "bpf_src").iterdir()} <= names
    stray = sorted(n for n in names if n.startswith(NOT_SHIPPED))
    assert not stray, f"the sdist must not ship {stray}"


def _third_party_imports(source: str) -> set[str]:
    """Top-level modules a file imports, except under `except ImportError` guards."""
    found: set[str] = set()

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            catches = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            optional = bool(catches & {"ImportError", "ModuleNotFoundError"})
            for child in node.body:
                visit(child, guarded or optional)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        if not guarded:
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(source), False)
    return found - set(sys.stdlib_module_names) - OWN - {"__future__"}


def test_wheel_metadata_declares_every_dependency_its_code_imports(
        dists: dict[str, Path]) -> None:
    meta = wheel_metadata(dists["wheel"])
    assert meta["Name"] == "pyhttp2probe" and meta["Version"] == source_version()
    assert meta["Requires-Python"] == ">=3.11"
    required = {norm(re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0])
                for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r}
    imported: dict[str, set[str]] = {}
    with zipfile.ZipFile(dists["wheel"]) as zf:
        for name in zf.namelist():
            if name.endswith(".py"):
                for mod in _third_party_imports(zf.read(name).decode()):
                    imported.setdefault(mod, set()).add(name)
        entry_points = next(zf.read(n).decode() for n in zf.namelist()
                            if n.endswith(".dist-info/entry_points.txt"))
    dists_of = importlib.metadata.packages_distributions()
    undeclared = {mod: sorted(files) for mod, files in imported.items()
                  if not {norm(d) for d in dists_of.get(mod, [mod])} & required}
    assert not undeclared, (f"imported but not in setup.py's install_requires: {undeclared} "
                            f"(declared: {sorted(required)})")
    assert re.search(r"^pyhttp2probe = pyhttp2probe\.cli:main$", entry_points, re.M)


# -- a fresh venv ---------------------------------------------------------------------------
def _pip_install(python: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--disable-pip-version-check", "--no-compile", "--no-index", "--find-links",
         str(WHEELHOUSE), str(wheel)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def venv(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new venv (system site-packages off) with the wheel and its dependencies installed.

    The venv is made without pip (this interpreter's pip installs into it: `pip --python`),
    which saves ensurepip's seconds and changes nothing of what is installed.
    """
    path = tmp_path_factory.mktemp("fresh") / "venv"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    proc = _pip_install(python, dists["wheel"])
    if proc.returncode != 0:  # a dependency not fetched yet (first run, or a new one)
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--dest", str(WHEELHOUSE), str(dists["wheel"])],
            capture_output=True, text=True, timeout=900)
        assert got.returncode == 0, f"pip download failed:\n{got.stderr}"
        for own in WHEELHOUSE.glob("pyhttp2probe-*"):
            own.unlink()
        proc = _pip_install(python, dists["wheel"])
    assert proc.returncode == 0, f"pip install of the wheel failed:\n{proc.stderr}"
    print(f"fresh venv with the wheel installed in {time.monotonic() - t0:.1f} s")
    cfg = (path / "pyvenv.cfg").read_text()
    assert re.search(r"^include-system-site-packages = false$", cfg, re.M), cfg
    yield path


def in_venv(venv: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run outside the checkout with an environment that cannot reach the source tree."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE"}}
    env["PYTHONNOUSERSITE"] = "1"
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_cli_runs_from_the_venv(venv: Path, tmp_path: Path) -> None:
    proc = in_venv(venv, str(venv / "bin" / "pyhttp2probe"), "--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"pyhttp2probe {source_version()}"
    proc = in_venv(venv, str(venv / "bin" / "pyhttp2probe"), "run", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--pid" in proc.stdout and "--exe" in proc.stdout and "--listen" in proc.stdout


SNIPPET = """
import json, sys
from pathlib import Path

import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
import libbpf_loader, pyhttp2probe
from libbpf_loader import BpfObject
from pyhttp2probe import Agent
from pyhttp2probe.assets import bpf_dir
from pyhttp2probe.goelf.offsets import load_table
from pyhttp2probe.records import load_layout

objects = {}
for path in sorted(bpf_dir().glob("*.bpf.o")):
    with BpfObject.open(path) as obj:
        objects[path.name] = obj.program_names()
with Agent() as agent:  # loads every probe path's object into the kernel
    loaded = [p.object for p in agent.paths]
print(json.dumps({
    "prefix": sys.prefix, "base_prefix": sys.base_prefix,
    "modules": [pyhttp2probe.__file__, libbpf_loader.__file__],
    "bpf_dir": str(bpf_dir()), "objects": objects, "loaded": loaded,
    "event_types": len(load_layout().prefixed("EV_")),
    "table_modules": len(load_table().modules),
}))
"""


def test_bpf_objects_are_found_and_load_from_the_venv(venv: Path, tmp_path: Path) -> None:
    proc = in_venv(venv, str(venv / "bin" / "python"), "-c", SNIPPET, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    site = Path(got["prefix"])
    assert site == venv and Path(got["base_prefix"]) != venv
    for module in got["modules"]:  # the installed copy, not the checkout
        assert Path(module).is_relative_to(venv) and not Path(module).is_relative_to(ROOT)
    assert Path(got["bpf_dir"]).is_relative_to(venv)
    want = {f"{p.name[:-2]}.o" for p in (ROOT / "bpf_src").glob("*.bpf.c")}
    assert set(got["objects"]) == want and "grpc_client.bpf.o" in want
    assert all(got["objects"].values()), got["objects"]  # each has its programs
    assert set(got["loaded"]) <= want and got["loaded"]
    assert got["event_types"] > 0 and got["table_modules"] > 0
