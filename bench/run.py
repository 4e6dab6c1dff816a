"""Run every benchmark and write BENCHMARKS.md: `python3 bench/run.py` (or `make bench`).

Each `bench/bench_*.py` module exposes `run() -> str`, returning one Markdown section whose
figures were all measured in this run, side by side, so ratios hold on a noisy machine.
`python3 bench/run.py --splice NAME...` runs only those and puts their sections in place of
the sections with the same heading (new ones before the soak), keeping the rest of the file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
SOAK = "## Soak"
ROOT = BENCH_DIR.parent


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    go = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    return (f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} cores ({cpu}), "
            f"{mem_kb // 1024 // 1024} GiB, Python {platform.python_version()}, {go}")


def splice(old: str, sections: list[str]) -> str:
    """`old` with each section in place of the one with the same "## " heading line, or
    inserted before the soak (at the end without one); everything else kept as it was."""
    blocks = re.split(r"(?m)^(?=## )", old)
    for section in sections:
        heading = section.split("\n", 1)[0]
        text = section.rstrip("\n") + "\n\n"
        at = next((i for i, b in enumerate(blocks) if b.split("\n", 1)[0] == heading), None)
        if at is not None:
            blocks[at] = text
        else:
            soak = next((i for i, b in enumerate(blocks) if b.startswith(SOAK)), len(blocks))
            blocks.insert(soak, text)
    return "".join(blocks).rstrip("\n") + "\n"


def stamped(section: str, when: dt.datetime, command: str, where: str) -> str:
    """A spliced section with its own run line under its heading: the file's header dates
    its last full run, not the sections replaced since."""
    heading, _, body = section.partition("\n")
    return (f"{heading}\n\n_Spliced: {when:%Y-%m-%d %H:%M} UTC by `{command}`, on "
            f"{where}._\n{body}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("only", nargs="*", help="bench module names (default: all)")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--splice", action="store_true",
                        help="replace only these benches' sections, keep the rest of the file")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    names = args.only or sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
    sections = []
    command = "python3 bench/run.py" + ("" if not args.only else " " + " ".join(args.only))
    where = machine()
    for name in names:
        print(f"bench: {name}", file=sys.stderr)
        module = importlib.import_module(f"bench.{name}")
        when = dt.datetime.now(dt.UTC)
        section = module.run()
        sections.append(stamped(section, when, command + " --splice", where) if args.splice
                        else section)
    head = (f"# Benchmarks\n\nCommand: `{command}` (also `make bench`)\n\n"
            f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {where}.\n\n"
            "The machine is a shared, nested VM: read the ratios measured side by side in one "
            "run, not lone absolute times.\n")
    out = Path(args.out)
    if args.splice:
        out.write_text(splice(out.read_text() if out.exists() else "", sections))
        print(f"spliced into {args.out}", file=sys.stderr)
        return 0
    # The soak (bench/soak.py, minutes long, run on its own) keeps its section, dated.
    old = out.read_text() if out.exists() else ""
    soak = old[old.find(SOAK):].strip() if SOAK in old else ""
    out.write_text(head + "\n" + "\n\n".join([*sections, *filter(None, [soak])]) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
