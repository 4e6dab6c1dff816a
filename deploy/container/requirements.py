"""Print the requirements of pyhttp2probe, one per line: those to build it (pyproject.toml's
[build-system] requires, setup.py's setup_requires) or those to run it (setup.py's
install_requires).

The image build uses it to fetch every dependency in a layer of its own, before the
project's code is copied in: a code change then rebuilds neither that layer nor the
toolchain's. Read from the files themselves (setup.py is parsed, not run), so the
dependency list lives in one place.

Usage: python3 requirements.py build|run SOURCE_DIR
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path


def requirements(what: str, src: Path) -> list[str]:
    out: list[str] = []
    if what == "build":
        with (src / "pyproject.toml").open("rb") as f:
            out += tomllib.load(f)["build-system"]["requires"]
    keys = ("setup_requires",) if what == "build" else ("install_requires",)
    tree = ast.parse((src / "setup.py").read_text(), "setup.py")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for kw in node.keywords:
                if kw.arg in keys:
                    out += ast.literal_eval(kw.value)
    if not out:
        raise SystemExit(f"{src}: no {what} requirements found in pyproject.toml / setup.py")
    return sorted(set(out))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("build", "run"):
        raise SystemExit(__doc__.rsplit("\n\n", 1)[-1].strip())
    print("\n".join(requirements(sys.argv[1], Path(sys.argv[2]))))
