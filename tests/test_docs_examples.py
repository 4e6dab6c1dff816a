"""The documentation's examples are real: every code block of docs/*.md is a file of
docs/examples/ shown whole, each example runs here with the command its page shows, and its
output is checked against ground truth (the traced program's own counts) and against the
sample output printed on the page.

Conventions of docs/*.md (enforced below):
- a ```python or ```c block is preceded by `<!-- example: docs/examples/NAME -->` and is
  exactly that file's content, so the page and the code that runs cannot drift;
- each runnable example (docs/examples/*.py) has a ```sh block with the command that runs
  it, and a ```text block of its output preceded by `<!-- output: docs/examples/NAME -->`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
CHECKED_LANGS = {"python", "py", "c"}  # blocks that must be example files
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
MARKER = re.compile(r"<!--\s*(example|output):\s*(\S+)\s*-->\s*\Z")


@dataclass
class Block:
    page: Path
    lang: str
    text: str
    marker: tuple[str, str] | None  # ("example" | "output", path relative to ROOT)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}: ```{self.lang} block starting {self.text[:60]!r}"


def blocks() -> list[Block]:
    out = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        for m in FENCE.finditer(text):
            before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            mk = MARKER.search(before)
            out.append(Block(page, m.group(1), m.group(2),
                             (mk.group(1), mk.group(2)) if mk else None))
    return out


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.is_file() and p.suffix in {".py", ".c",
                                                                                 ".h"})


def test_docs_exist_and_every_code_block_is_an_example_file() -> None:
    assert (DOCS / "libbpf_loader.md").is_file() and (DOCS / "agent.md").is_file()
    shown: set[Path] = set()
    for b in blocks():
        if b.lang in CHECKED_LANGS:
            assert b.marker is not None and b.marker[0] == "example", (
                f"{b.where}: code blocks must be example files that the tests run; put the "
                "code in docs/examples/ and mark the block `<!-- example: PATH -->`")
        if b.marker is None or b.marker[0] != "example":
            continue
        path = ROOT / b.marker[1]
        assert path.parent == EXAMPLES and path.is_file(), f"{b.where}: no {path}"
        assert b.text == path.read_text(), (
            f"{b.where}: differs from {b.marker[1]}; paste the file again (the page shows "
            "it whole)")
        shown.add(path)
    missing = set(example_files()) - shown
    assert not missing, f"example files no page shows: {sorted(map(str, missing))}"


def test_every_runnable_example_is_run_here() -> None:
    runnable = {p.name for p in EXAMPLES.glob("*.py")}
    assert runnable == set(CHECKS), "each docs/examples/*.py needs its check in CHECKS"


# -- running the examples -------------------------------------------------------------------
def doc_command(name: str) -> list[str]:
    """The ```sh line of the docs that runs docs/examples/<name>, as argv (python3 → this
    interpreter); environment assignments before it are applied by run_example."""
    found = [line.strip() for b in blocks() if b.lang == "sh"
             for line in b.text.splitlines() if f"docs/examples/{name}" in line]
    assert len(found) == 1, f"want one ```sh line running docs/examples/{name}, got {found}"
    return shlex.split(found[0])


def run_example(name: str) -> str:
    argv = doc_command(name)
    env = dict(os.environ)
    while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):
        key, _, value = argv.pop(0).partition("=")
        env[key] = str(ROOT) if value == "." else value
    assert argv[0] == "python3", argv
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _shape(line: str) -> str:
    """A line with what varies run to run (numbers, addresses, which method or side) blanked."""
    line = re.sub(r"0x[0-9a-f]+", "0x#", line)
    line = re.sub(r"/demo\.\w+/\w+", "/M", line)
    line = re.sub(r"grpc_(client|server)\b(?= +/M)", "grpc_K", line)
    line = re.sub(r"\d+(\.\d+)?", "#", line)
    return " ".join(line.split())


def check_sample_output(name: str, out: str) -> None:
    """The page's sample output has the shape of a real run: same kinds of lines, both ways."""
    samples = [b.text for b in blocks() if b.marker == ("output", f"docs/examples/{name}")]
    assert len(samples) == 1, f"want one `<!-- output: docs/examples/{name} -->` block"
    shown = {_shape(line) for line in samples[0].splitlines() if line.strip()}
    real = {_shape(line) for line in out.splitlines() if line.strip()}
    assert shown == real, (f"the sample output of {name} on its page no longer looks like "
                           f"its output:\nonly on the page: {sorted(shown - real)}\n"
                           f"only in the run: {sorted(real - shown)}\nrun:\n{out}")


def _go_target(a: int, b: int, c: int, s: str) -> int:
    """tests/go/calltarget's target(), the ground truth of the loader example's results."""
    if a < 0:
        return -1
    if b == 0:
        return a * 2
    if len(s) > 3:
        return a + b + c + len(s)
    return a - b


def check_loader_uprobe(out: str) -> None:
    calls = int(doc_command("loader_uprobe.py")[-1])
    words = ["", "a", "ab", "abc", "abcd", "abcde"]  # calltarget's words
    want_results = sum(_go_target(i, i % 3, 7, words[i % len(words)]) for i in range(calls))
    m = re.search(r"records: (\d+) in (\d+) batches, dropped (\d+)", out)
    assert m and int(m[1]) == 2 * calls and int(m[2]) >= 1 and int(m[3]) == 0, out
    m = re.search(r"entries: (\d+), sum of first arguments (\d+)", out)
    assert m and (int(m[1]), int(m[2])) == (calls, calls * (calls - 1) // 2), out
    m = re.search(r"returns: (\d+), sum of results (-?\d+), (\d+) distinct RETs taken", out)
    assert m and (int(m[1]), int(m[2])) == (calls, want_results) and int(m[3]) >= 3, out


def check_agent_grpc(out: str) -> None:
    per_method = {m[1]: (int(m[2]), int(m[3])) for m in re.finditer(
        r"^  (/demo\.\w+/\w+) +client +(\d+) +server +(\d+)$", out, re.M)}
    spans = re.search(r"spans: (\d+) grpc_client \((\d+) errors\), (\d+) grpc_server, "
                      r"(\d+) unmatched", out)
    registry = re.search(r"registry: rpc_client_duration_seconds_count (\d+), "
                         r"rpc_server_duration_seconds_count (\d+), "
                         r"pyhttp2probe_events_total (\d+)", out)
    program = re.search(r"program: (\d+) calls \((\d+) errors\)", out)
    assert spans and registry and program, out
    total, errors = int(program[1]), int(program[2])
    assert total > 100 and errors > 0, out
    # Every call the program made, and no other, as a client span and a server span...
    assert (int(spans[1]), int(spans[2]), int(spans[3]), int(spans[4])) == (
        total, errors, total, 0), out
    # ...and in the agent's own registry.
    assert (int(registry[1]), int(registry[2])) == (total, total), out
    assert int(registry[3]) > 0, out
    assert set(per_method) == {"/demo.Greeter/SayBye", "/demo.Greeter/SayHello",
                               "/demo.Store/Get", "/demo.Store/List", "/demo.Store/Put"}, out
    assert all(c == s for c, s in per_method.values()), out
    assert sum(c for c, _ in per_method.values()) == total, out
    assert re.search(r'^rpc_client_duration_seconds_count\{.*service_name="grpcdemo".*\} \d+',
                     out, re.M), out


CHECKS: dict[str, Callable[[str], None]] = {
    "loader_uprobe.py": check_loader_uprobe,
    "agent_grpc.py": check_agent_grpc,
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example_runs_and_prints_the_truth(name: str) -> None:
    out = run_example(name)
    CHECKS[name](out)
    check_sample_output(name, out)
