"""Build the Go programs kept under tests/go with the machine's Go, cached by content.

A program is one source directory (its .go files) plus one module directory holding the
go.mod/go.sum that pin its dependencies; several module directories can share one source
directory, which is how one workload is built against many grpc-go versions. Modules the
go.mod replaces with a local directory (the shared harness, tests/go/harness) come along:
the build runs in a temporary copy of the tree under tests/go holding the module directory
(with the sources) and each such directory at its real relative place, so the go.mod's
`replace ... => ../../harness` means the same there as in the checkout. The binary is
cached under ~/.cache/pyhttp2probe/gobin keyed by a hash of every input, so a second test
run costs nothing and a changed source, pin or harness file rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

GO_ROOT = Path(__file__).resolve().parent.parent / "tests" / "go"
CACHE_DIR = Path(os.environ.get("TESTKIT_GOBIN_CACHE",
                                Path.home() / ".cache" / "pyhttp2probe" / "gobin"))


@dataclass(frozen=True)
class GoBuild:
    """What to build: sources from `src`, module pins from `mod` (default: `src`)."""

    src: str
    mod: str | None = None
    ldflags: str = ""
    flags: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=())

    @property
    def src_dir(self) -> Path:
        return GO_ROOT / self.src

    @property
    def mod_dir(self) -> Path:
        return GO_ROOT / (self.mod or self.src)


def _go_version() -> str:
    return subprocess.run(["go", "version"], check=True, capture_output=True,
                          text=True).stdout.strip()


# A replacement by a local directory (Go requires its path to start with ./ or ../), in a
# replace line or block.
_LOCAL_REPLACE = re.compile(r"=>\s*(\.\.?/\S*)\s*(?://.*)?$", re.MULTILINE)


def _local_replacements(mod_dir: Path) -> list[Path]:
    """The directories that mod_dir's go.mod replaces modules with, all under GO_ROOT."""
    gomod = mod_dir / "go.mod"
    if not gomod.exists():
        return []
    dirs = []
    for rel in _LOCAL_REPLACE.findall(gomod.read_text()):
        target = (mod_dir / rel).resolve()
        if not target.is_relative_to(GO_ROOT) or not target.is_dir():
            raise ValueError(f"{gomod}: replacement {rel!r} is not a directory under {GO_ROOT}")
        dirs.append(target)
    return dirs


def _module_files(mod_dir: Path) -> list[Path]:
    """The files of the module rooted at mod_dir: nested modules (a go.mod below) excluded."""
    files = []
    for dirpath, dirnames, filenames in os.walk(mod_dir):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not (here / d / "go.mod").exists()]
        files += [here / f for f in filenames]
    return files


def _inputs(spec: GoBuild) -> dict[str, Path]:
    """Every input file by its path in the build tree, which mirrors GO_ROOT."""
    mod_rel = spec.mod_dir.relative_to(GO_ROOT)
    files = {str(mod_rel / p.name): p for p in spec.src_dir.glob("*.go")}
    files.update((str(mod_rel / p.name), p)
                 for p in (spec.mod_dir / "go.mod", spec.mod_dir / "go.sum") if p.exists())
    for repl in _local_replacements(spec.mod_dir):
        files.update((str(p.relative_to(GO_ROOT)), p) for p in _module_files(repl))
    return dict(sorted(files.items()))


def _key(spec: GoBuild) -> str:
    h = hashlib.sha256()
    h.update(_go_version().encode())
    h.update(repr((spec.ldflags, spec.flags, spec.env)).encode())
    for rel, path in _inputs(spec).items():
        h.update(rel.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


def build(spec: GoBuild) -> Path:
    """Return the path of the built binary, building it only when its inputs changed."""
    name = f"{spec.src.replace('/', '_')}-{(spec.mod or '').replace('/', '_')}-{_key(spec)}"
    out = CACHE_DIR / name
    if out.exists():
        return out
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gobuild-") as tmp:
        work = Path(tmp)
        for rel, path in _inputs(spec).items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, work / rel)
        cmd = ["go", "build", "-o", str(work / "out"), *spec.flags]
        if spec.ldflags:
            cmd.append(f"-ldflags={spec.ldflags}")
        cmd.append(".")
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly", **dict(spec.env)}
        proc = subprocess.run(cmd, cwd=work / spec.mod_dir.relative_to(GO_ROOT), env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"go build of {spec} failed:\n{proc.stderr}")
        tmp_out = out.with_suffix(".tmp")
        shutil.move(work / "out", tmp_out)
        tmp_out.rename(out)
    return out
