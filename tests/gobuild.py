"""Build the Go programs kept under tests/go with the machine's Go, cached by content.

A program is one source directory (its .go files) plus one module directory holding the
go.mod/go.sum that pin its dependencies; several module directories can share one source
directory, which is how one workload is built against many grpc-go versions. The binary
is cached under ~/.cache/pyhttp2probe/gobin keyed by a hash of every input, so a second
test run costs nothing and a changed source or pin rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

GO_ROOT = Path(__file__).resolve().parent / "go"
CACHE_DIR = Path(os.environ.get("PYHTTP2PROBE_GOBIN_CACHE",
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


def _inputs(spec: GoBuild) -> list[Path]:
    files = sorted(p for p in spec.src_dir.glob("*.go"))
    files += [p for p in (spec.mod_dir / "go.mod", spec.mod_dir / "go.sum") if p.exists()]
    return files


def _key(spec: GoBuild) -> str:
    h = hashlib.sha256()
    h.update(_go_version().encode())
    h.update(repr((spec.ldflags, spec.flags, spec.env)).encode())
    for path in _inputs(spec):
        h.update(path.name.encode())
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
        for path in _inputs(spec):
            shutil.copy2(path, work / path.name)
        cmd = ["go", "build", "-o", str(work / "out"), *spec.flags]
        if spec.ldflags:
            cmd.append(f"-ldflags={spec.ldflags}")
        cmd.append(".")
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly", **dict(spec.env)}
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"go build of {spec} failed:\n{proc.stderr}")
        tmp_out = out.with_suffix(".tmp")
        shutil.move(work / "out", tmp_out)
        tmp_out.rename(out)
    return out
